//! Log lines that a stranger can cause, at most one per period per kind.
//!
//! Contract: [`Hush::allow`] says whether a line of a kind may be written now, and how many
//! of that kind were held back since the last one written, so the line can say so. Pure but
//! for a mutex: the caller passes the time. The kinds are the caller's fixed strings, so the
//! map stays as small as the code that uses it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Hush {
    period: Duration,
    kinds: Mutex<HashMap<&'static str, Kind>>,
}

#[derive(Debug)]
struct Kind {
    last: Instant,
    held_back: u64,
}

impl Hush {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last line)` when a line of `kind` may be written at `now`.
    pub fn allow(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        match kinds.get_mut(kind) {
            Some(k) if now.saturating_duration_since(k.last) < self.period => {
                k.held_back += 1;
                None
            }
            Some(k) => {
                let held_back = std::mem::take(&mut k.held_back);
                k.last = now;
                Some(held_back)
            }
            None => {
                kinds.insert(
                    kind,
                    Kind {
                        last: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_per_kind_and_the_next_says_how_many_were_held_back() {
        let hush = Hush::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(hush.allow("a", t0), Some(0));
        assert_eq!(hush.allow("b", t0), Some(0), "kinds are apart");
        for s in 1..10 {
            assert_eq!(hush.allow("a", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(hush.allow("a", t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(hush.allow("a", t0 + Duration::from_secs(11)), None);
        assert_eq!(hush.allow("a", t0 + Duration::from_secs(25)), Some(1));
    }
}
