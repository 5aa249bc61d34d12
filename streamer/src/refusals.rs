//! Refused publish attempts, rolled up per reservation so strangers cannot write the history.
//!
//! Contract: [`Rollup::record`] counts a refusal by its fixed reason; [`Rollup::due`] hands
//! out, per reservation, the counts gathered since its last report, at most once per
//! `period` (the first refusal after a quiet period goes out at the next call, so a
//! broadcaster with a wrong key sees it at once). Counts are never dropped: what is not yet
//! due waits, and adds up. Reservations with nothing pending and no report within the
//! period are forgotten, so the map holds only reservations refused lately (and the caller
//! records only reservations this server knows). Pure: time is passed in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One report of kind `refused`: the reservation and its counts per reason.
pub type Due = (String, BTreeMap<String, u64>);

#[derive(Debug)]
pub struct Rollup {
    period: Duration,
    by_reservation: HashMap<String, Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    counts: BTreeMap<&'static str, u64>,
    /// When its last report went out.
    last_sent: Option<Instant>,
}

impl Rollup {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            by_reservation: HashMap::new(),
        }
    }

    pub fn record(&mut self, reservation_id: &str, reason: &'static str) {
        let pending = match self.by_reservation.get_mut(reservation_id) {
            Some(pending) => pending,
            None => self
                .by_reservation
                .entry(reservation_id.to_string())
                .or_default(),
        };
        *pending.counts.entry(reason).or_default() += 1;
    }

    /// The reports due at `now`, each reservation's counts taken (and its clock restarted).
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let period = self.period;
        let mut out = Vec::new();
        self.by_reservation.retain(|id, pending| {
            let quiet = pending
                .last_sent
                .is_none_or(|at| now.saturating_duration_since(at) >= period);
            if !pending.counts.is_empty() && quiet {
                let counts = std::mem::take(&mut pending.counts)
                    .into_iter()
                    .map(|(reason, n)| (reason.to_string(), n))
                    .collect();
                out.push((id.clone(), counts));
                pending.last_sent = Some(now);
                return true;
            }
            // Forget what has nothing to say and could report again at once anyway.
            !(pending.counts.is_empty() && quiet)
        });
        out.sort();
        out
    }

    /// Reservations held (pending counts, or reported within the period).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_reservation.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    #[test]
    fn three_hundred_wrong_keys_in_a_minute_are_two_reports() {
        let mut rollup = Rollup::new(Duration::from_secs(60));
        let t0 = Instant::now();
        rollup.record("r1", "bad_key");
        // The first goes out at once.
        assert_eq!(rollup.due(t0), [("r1".into(), counts(&[("bad_key", 1)]))]);
        let mut reports = 1;
        for i in 1..300u64 {
            rollup.record("r1", if i % 100 == 0 { "not_open" } else { "bad_key" });
            let now = t0 + Duration::from_millis(i * 150);
            reports += rollup.due(now).len();
        }
        // 45 s in: nothing more yet; at a minute, the rest in one report.
        assert_eq!(reports, 1);
        let rest = rollup.due(t0 + Duration::from_secs(60));
        assert_eq!(
            rest,
            [("r1".into(), counts(&[("bad_key", 297), ("not_open", 2)]))]
        );
    }

    #[test]
    fn reservations_roll_up_apart_and_quiet_ones_are_forgotten() {
        let mut rollup = Rollup::new(Duration::from_secs(60));
        let t0 = Instant::now();
        rollup.record("r1", "bad_key");
        rollup.record("r2", "busy");
        rollup.record("r2", "busy");
        assert_eq!(
            rollup.due(t0),
            [
                ("r1".into(), counts(&[("bad_key", 1)])),
                ("r2".into(), counts(&[("busy", 2)]))
            ]
        );
        assert_eq!(rollup.len(), 2, "remembered for the period");
        assert!(rollup.due(t0 + Duration::from_secs(30)).is_empty());
        assert!(rollup.due(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(rollup.len(), 0, "nothing pending and the period over");
        // A refusal after the quiet period goes out at once again.
        rollup.record("r1", "bad_key");
        assert_eq!(
            rollup.due(t0 + Duration::from_secs(61)).len(),
            1,
            "after a quiet minute, at once"
        );
    }
}
