//! The terminal's clock against the server's, from request/answer timestamps (NTP's
//! on-wire arithmetic, RFC 5905 section 8).
//!
//! Contract: pure. A [`Sample`] is one exchange: t1 / t4 on the terminal's clock when the
//! request left and the answer arrived, t2 / t3 on the server's clock when it received the
//! request and sent the answer. Offset θ = ((t2 − t1) + (t3 − t4)) / 2 is what to add to the
//! terminal's clock to read the server's; delay δ = (t4 − t1) − (t3 − t2) is the round trip
//! spent on the network, and θ is off by at most δ / 2. Of several samples the one with the
//! lowest delay is kept.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// One request/answer exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub t1: DateTime<Utc>,
    pub t2: DateTime<Utc>,
    pub t3: DateTime<Utc>,
    pub t4: DateTime<Utc>,
}

/// The terminal's clock against the server's, as measured at `measured_at` (terminal clock).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offset {
    /// Add to the terminal's clock to read the server's, in ms: positive when the terminal
    /// is behind.
    pub offset_ms: f64,
    /// The round trip of the sample it came from, in ms; the offset is good to ± half of it.
    pub delay_ms: f64,
    pub measured_at: DateTime<Utc>,
}

fn ms(d: Duration) -> f64 {
    d.num_microseconds()
        .map_or(d.num_milliseconds() as f64, |us| us as f64 / 1000.0)
}

impl Sample {
    pub fn offset_ms(&self) -> f64 {
        (ms(self.t2 - self.t1) + ms(self.t3 - self.t4)) / 2.0
    }

    /// Never negative: a server that claims to have spent longer than the round trip is
    /// taken to have spent all of it.
    pub fn delay_ms(&self) -> f64 {
        (ms(self.t4 - self.t1) - ms(self.t3 - self.t2)).max(0.0)
    }

    pub fn offset(&self) -> Offset {
        Offset {
            offset_ms: self.offset_ms(),
            delay_ms: self.delay_ms(),
            measured_at: self.t4,
        }
    }
}

/// The lowest-delay sample's offset; `None` for no samples.
pub fn best(samples: &[Sample]) -> Option<Offset> {
    samples
        .iter()
        .min_by(|a, b| a.delay_ms().total_cmp(&b.delay_ms()))
        .map(Sample::offset)
}

impl Offset {
    /// The server's time when the terminal's clock reads `local`.
    pub fn server_time(&self, local: DateTime<Utc>) -> DateTime<Utc> {
        local + Duration::microseconds((self.offset_ms * 1000.0).round() as i64)
    }

    /// The terminal's clock reading at which the server's clock reads `server`.
    pub fn local_time(&self, server: DateTime<Utc>) -> DateTime<Utc> {
        server - Duration::microseconds((self.offset_ms * 1000.0).round() as i64)
    }

    /// "Your clock is 1.832 s behind the server (±4 ms)".
    pub fn describe(&self) -> String {
        self.sentence(None)
    }

    /// [`Offset::describe`] with `note` beside the uncertainty, as a whole sentence:
    /// "Your clock is 1.832 s behind the server (±4 ms; measured just now)."
    pub fn describe_with(&self, note: &str) -> String {
        format!("{}.", self.sentence(Some(note)))
    }

    fn sentence(&self, note: Option<&str>) -> String {
        let mut uncertainty = format!("±{}", human_ms(self.delay_ms / 2.0));
        if let Some(note) = note {
            uncertainty.push_str("; ");
            uncertainty.push_str(note);
        }
        let size = self.offset_ms.abs();
        if size < (self.delay_ms / 2.0).max(0.5) {
            return format!("Your clock agrees with the server ({uncertainty})");
        }
        let side = if self.offset_ms > 0.0 {
            "behind"
        } else {
            "ahead of"
        };
        format!(
            "Your clock is {} {side} the server ({uncertainty})",
            human_ms(size)
        )
    }
}

/// `4 ms`, `0.4 ms`, `1.832 s`, `2 min 5.0 s`.
pub fn human_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else {
        let minutes = (ms / 60_000.0).floor();
        format!(
            "{minutes:.0} min {:.1} s",
            (ms - minutes * 60_000.0) / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_terminal_behind_by_1832_ms_over_a_symmetric_8_ms_round_trip() {
        // Terminal sends at its 0; 4 ms later the server (1832 ms ahead) receives it at 1836,
        // answers 1 ms later, and the answer lands 4 ms after that, at terminal 9.
        let s = Sample {
            t1: t(0),
            t2: t(1836),
            t3: t(1837),
            t4: t(9),
        };
        assert_eq!(s.offset_ms(), 1832.0);
        assert_eq!(s.delay_ms(), 8.0);
        assert_eq!(
            s.offset().describe(),
            "Your clock is 1.832 s behind the server (±4 ms)"
        );
        assert_eq!(s.offset().server_time(t(100)), t(1932));
        assert_eq!(s.offset().local_time(t(1932)), t(100));
    }

    #[test]
    fn the_lowest_delay_sample_wins_and_asymmetry_is_bounded_by_half_the_delay() {
        let slow = Sample {
            t1: t(0),
            t2: t(-450),
            t3: t(-450),
            t4: t(100),
        };
        let fast = Sample {
            t1: t(0),
            t2: t(-498),
            t3: t(-498),
            t4: t(4),
        };
        let best = best(&[slow, fast]).unwrap();
        assert_eq!(best.offset_ms, -500.0);
        assert_eq!(best.delay_ms, 4.0);
        assert_eq!(
            best.describe(),
            "Your clock is 500 ms ahead of the server (±2 ms)"
        );
        assert!(super::best(&[]).is_none());
    }

    #[test]
    fn an_offset_within_the_uncertainty_is_agreement() {
        let s = Sample {
            t1: t(0),
            t2: t(3),
            t3: t(3),
            t4: t(8),
        };
        assert_eq!(
            s.offset().describe(),
            "Your clock agrees with the server (±4 ms)"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_ms(0.42), "0.4 ms");
        assert_eq!(human_ms(12.4), "12 ms");
        assert_eq!(human_ms(1832.0), "1.832 s");
        assert_eq!(human_ms(125_000.0), "2 min 5.0 s");
    }
}
