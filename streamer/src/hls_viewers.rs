//! Who watches by HLS: the distinct viewer addresses that fetched a reservation's playlist in
//! the last [`WINDOW`], per reservation (for its `status.json`) and in all (for the viewers
//! gauge).
//!
//! Contract: sans-IO, monotonic instants passed in; the hub holds it under a leaf lock.
//! Noting a fetch is a map lookup and insert. A reservation's count is worked out at most
//! once per [`COUNT_FRESH`] (every watch page asks for it every 2 s, so with many viewers
//! counting on every ask would cost the square of the audience); between two counts, an
//! address new to the reservation adds one at once, and those gone quiet drop out at the next
//! count. At most `max` addresses are kept in all: a flood of addresses cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A viewer counts for this long after its last playlist fetch.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How long a reservation's count is reused before it is worked out again.
pub const COUNT_FRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Audience {
    /// Each address's last fetch.
    seen: HashMap<IpAddr, Instant>,
    /// The last count and when it was made.
    counted: Option<(Instant, usize)>,
}

#[derive(Debug)]
pub struct HlsViewers {
    by_reservation: HashMap<String, Audience>,
    /// Addresses held in all reservations.
    held: usize,
    max: usize,
}

impl HlsViewers {
    pub fn new(max: usize) -> Self {
        Self {
            by_reservation: HashMap::new(),
            held: 0,
            max,
        }
    }

    /// `ip` fetched `reservation_id`'s playlist at `now`. Not noted when `max` addresses
    /// are held and none has gone quiet.
    pub fn saw(&mut self, reservation_id: &str, ip: IpAddr, now: Instant) {
        let known = self
            .by_reservation
            .get(reservation_id)
            .is_some_and(|a| a.seen.contains_key(&ip));
        if !known && self.held >= self.max {
            self.prune(now);
            if self.held >= self.max {
                return;
            }
        }
        let audience = match self.by_reservation.get_mut(reservation_id) {
            Some(audience) => audience,
            None => self
                .by_reservation
                .entry(reservation_id.to_string())
                .or_default(),
        };
        if audience.seen.insert(ip, now).is_none() {
            self.held += 1;
            if let Some((_, count)) = &mut audience.counted {
                *count += 1;
            }
        }
    }

    /// Distinct addresses that fetched `reservation_id`'s playlist in the last [`WINDOW`]
    /// before `now` (as of the last count, at most [`COUNT_FRESH`] old).
    pub fn count(&mut self, reservation_id: &str, now: Instant) -> usize {
        let Some(audience) = self.by_reservation.get_mut(reservation_id) else {
            return 0;
        };
        if let Some((at, count)) = audience.counted {
            if now.saturating_duration_since(at) < COUNT_FRESH {
                return count;
            }
        }
        let before = audience.seen.len();
        audience
            .seen
            .retain(|_, last| now.saturating_duration_since(*last) < WINDOW);
        let count = audience.seen.len();
        self.held -= before - count;
        if count == 0 {
            self.by_reservation.remove(reservation_id);
        } else {
            audience.counted = Some((now, count));
        }
        count
    }

    /// Distinct (reservation, address) pairs in the last [`WINDOW`] before `now`, every
    /// reservation counted afresh.
    pub fn count_all(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.held
    }

    /// Drops the addresses gone quiet by `now`, and the counts they were part of.
    fn prune(&mut self, now: Instant) {
        let mut held = 0;
        self.by_reservation.retain(|_, audience| {
            audience
                .seen
                .retain(|_, last| now.saturating_duration_since(*last) < WINDOW);
            audience.counted = Some((now, audience.seen.len()));
            held += audience.seen.len();
            !audience.seen.is_empty()
        });
        self.held = held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn each_address_counts_once_per_reservation_while_it_keeps_fetching() {
        let t0 = Instant::now();
        let mut v = HlsViewers::new(100);
        for ms in (0..5_000).step_by(200) {
            v.saw("a", ip(1), at(t0, ms));
            v.saw("a", ip(2), at(t0, ms));
            v.saw("b", ip(1), at(t0, ms));
        }
        assert_eq!(v.count("a", at(t0, 5_000)), 2);
        assert_eq!(v.count("b", at(t0, 5_000)), 1);
        assert_eq!(v.count("c", at(t0, 5_000)), 0);
        assert_eq!(v.count_all(at(t0, 5_000)), 3);
    }

    #[test]
    fn a_new_address_counts_at_once_and_a_quiet_one_drops_out_at_the_next_count() {
        let t0 = Instant::now();
        let mut v = HlsViewers::new(100);
        v.saw("a", ip(1), at(t0, 0));
        assert_eq!(v.count("a", at(t0, 100)), 1);
        // Within COUNT_FRESH of that count: a new address adds one without a recount.
        v.saw("a", ip(2), at(t0, 200));
        assert_eq!(v.count("a", at(t0, 300)), 2);
        // ip(1) fetched last at 0: gone quiet at 10 s, seen so at the first count after.
        v.saw("a", ip(2), at(t0, 9_900));
        assert_eq!(v.count("a", at(t0, 10_050)), 1);
        // Everyone quiet: nothing is held for the reservation.
        assert_eq!(v.count("a", at(t0, 20_000)), 0);
        assert_eq!(v.count_all(at(t0, 20_000)), 0);
        assert!(v.by_reservation.is_empty());
    }

    #[test]
    fn at_most_max_addresses_are_held_and_quiet_ones_make_room() {
        let t0 = Instant::now();
        let mut v = HlsViewers::new(3);
        for n in 0..10 {
            v.saw("a", ip(n), at(t0, 0));
        }
        assert_eq!(
            v.count("a", at(t0, 0)),
            3,
            "the flood beyond max is not noted"
        );
        // A known address keeps being noted.
        v.saw("a", ip(0), at(t0, 9_000));
        // Once the others are quiet, a new one takes a place.
        v.saw("b", ip(200), at(t0, 12_000));
        assert_eq!(v.count("b", at(t0, 12_000)), 1);
        assert_eq!(v.count_all(at(t0, 12_000)), 2);
    }
}
