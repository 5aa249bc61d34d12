//! Time conventions shared by every crate: RFC 3339 UTC with millisecond precision on the
//! wire, and the NTP-style offset / delay arithmetic the terminal uses against the server.
//!
//! Contract: pure; callers pass every instant in.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// RFC 3339, UTC, milliseconds: `2030-01-01T12:00:00.000Z`.
pub fn rfc3339_ms(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339, UTC, microseconds; for the server clock's own stamps.
pub fn rfc3339_us(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `serialize_with` helpers for chrono times on the wire.
pub mod serde_ms {
    use super::*;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339_ms(t))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&rfc3339_ms(t)),
                None => s.serialize_none(),
            }
        }
    }
}

/// `serialize_with` helper for microsecond stamps.
pub mod serde_us {
    use super::*;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339_us(t))
    }
}

/// One exchange with the server, NTP style: `t1` request sent and `t4` reply received on the
/// terminal's clock, `t2` request received and `t3` reply sent on the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub t1: DateTime<Utc>,
    pub t2: DateTime<Utc>,
    pub t3: DateTime<Utc>,
    pub t4: DateTime<Utc>,
}

impl Exchange {
    /// θ = ((t2 − t1) + (t3 − t4)) / 2: add it to the terminal's clock to get the server's.
    pub fn offset(&self) -> Duration {
        ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2
    }

    /// δ = (t4 − t1) − (t3 − t2): the round trip, less the server's own time.
    pub fn delay(&self) -> Duration {
        (self.t4 - self.t1) - (self.t3 - self.t2)
    }
}

/// The server clock, as the parts that time slots see it: the api's NTP-disciplined clock in
/// production, a fixed or shifted clock in tests. Scheduler, streamer gates and
/// `EXT-X-PROGRAM-DATE-TIME` all read this one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        let base = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let ms = Duration::milliseconds;
        // Terminal 1.5 s behind, 10 ms each way, 2 ms on the server.
        let ex = Exchange {
            t1: base,
            t2: base + ms(1500 + 10),
            t3: base + ms(1500 + 12),
            t4: base + ms(22),
        };
        assert_eq!(ex.offset(), ms(1500));
        assert_eq!(ex.delay(), ms(20));
    }

    #[test]
    fn wire_format_is_utc_with_milliseconds() {
        let t = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(rfc3339_ms(&t), "2030-01-01T12:00:00.000Z");
        assert_eq!(rfc3339_us(&t), "2030-01-01T12:00:00.000000Z");
    }
}
