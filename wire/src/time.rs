//! Input times: RFC 3339 with a zone, taken as UTC and truncated to milliseconds.

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use slotcast_domain::time::rfc3339_ms;

/// What an input time must look like, for error messages.
pub const TIME_FORMAT: &str = "must be an RFC 3339 time with a zone, e.g. 2030-01-01T12:00:00Z";

/// RFC 3339 with a zone, to UTC, truncated to milliseconds; `None` if it is not one. (Not
/// `duration_trunc`: it goes through nanosecond timestamps and fails after 2262.)
pub fn parse_rfc3339_ms(text: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
}

/// An input time; see [`parse_rfc3339_ms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, format = DateTime)
)]
pub struct WireTime(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339_ms(&text)
            .map(WireTime)
            .ok_or_else(|| serde::de::Error::custom(TIME_FORMAT))
    }
}

impl Serialize for WireTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339_ms(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_times_need_a_zone_and_keep_milliseconds() {
        let t = |s: &str| serde_json::from_str::<WireTime>(s).map_err(|e| e.to_string());
        let noon = t(r#""2030-01-01T21:00:00.123456+09:00""#).unwrap();
        assert_eq!(
            serde_json::to_string(&noon).unwrap(),
            r#""2030-01-01T12:00:00.123Z""#
        );
        assert!(t(r#""2030-01-01T12:00:00""#)
            .unwrap_err()
            .contains("with a zone"));
        assert!(t(r#""tomorrow""#).is_err());
    }
}
