//! What goes over the wire: request bodies, answers, and the JSON body extractor.
//!
//! Contract: every time is RFC 3339 UTC with millisecond precision (the server clock's own
//! stamps with microseconds); input times must carry a zone and are truncated to
//! milliseconds. Bodies are parsed with the path of any bad field, so a 422 names it.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use chrono::{DateTime, Timelike, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use slotcast_domain::time::{serde_ms, serde_us};
use slotcast_domain::Window;
use utoipa::ToSchema;

use crate::clock::{ClockSource, NtpInfo, SyncState};
use crate::error::ApiError;
use crate::state::AppState;

const TIME_FORMAT: &str = "must be an RFC 3339 time with a zone, e.g. 2030-01-01T12:00:00Z";

/// RFC 3339 with a zone, to UTC, truncated to milliseconds. (Not `duration_trunc`: it goes
/// through nanosecond timestamps and fails after 2262.)
fn rfc3339_utc_ms(text: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
}

/// Parses an input time: RFC 3339 with a zone, to UTC, truncated to milliseconds.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    rfc3339_utc_ms(text).ok_or_else(|| ApiError::invalid(field, TIME_FORMAT))
}

/// An input time; see [`parse_time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct WireTime(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        rfc3339_utc_ms(&text)
            .map(WireTime)
            .ok_or_else(|| serde::de::Error::custom(TIME_FORMAT))
    }
}

/// A JSON body: parsed with field paths in errors; the raw bytes are kept for hashing.
pub struct Body<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.body_limit;
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

/// A query string, parsed as axum's `Query` does; a string that does not parse (a parameter
/// given twice, say) is a JSON 400 like every other error, not axum's plain text.
pub struct QueryOf<T>(pub T);

impl<T: DeserializeOwned + Send> axum::extract::FromRequestParts<AppState> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Self(q))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest(format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let field = if path == "." {
                missing.to_string()
            } else {
                format!("{path}.{missing}")
            };
            return ApiError::invalid(&field, "is required");
        }
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::invalid(&field, message)
    })
}

/// `server_time` in every booking answer and the whole of `GET /v1/time`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServerTime {
    /// When the server received the request (server clock).
    #[serde(serialize_with = "serde_us::serialize")]
    pub t_receive: DateTime<Utc>,
    /// When the server sent this answer (server clock).
    #[serde(serialize_with = "serde_us::serialize")]
    pub t_transmit: DateTime<Utc>,
    /// The server clock now (equal to `t_transmit`).
    #[serde(serialize_with = "serde_us::serialize")]
    pub now: DateTime<Utc>,
    pub source: ClockSource,
    pub state: SyncState,
    pub ntp: Option<NtpInfo>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CarrierDto {
    pub name: String,
    pub ingest_url: String,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CarrierInput {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// `rtsp://host[:port][/path]` on the dedicated ingest network.
    #[schema(
        pattern = "^rtsps?://[^/?# \\x00-\\x1f\\x7f-\\x9f]+(/[^?# \\x00-\\x1f\\x7f-\\x9f]*[^/?# \\x00-\\x1f\\x7f-\\x9f])?$",
        max_length = 200
    )]
    pub ingest_url: String,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServer {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// 1 to 200 characters, no control characters.
    #[schema(
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    pub name: String,
    /// Slots that may overlap at any instant (default 1).
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[schema(minimum = 1, maximum = 10000)]
    pub capacity: Option<u32>,
    /// Earliest a slot may start, in seconds after the server's now (default 30).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 604800)]
    pub min_lead_s: Option<u64>,
    /// Longest slot (default 43200 = 12 h).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 1, maximum = 604800)]
    pub max_duration_s: Option<u64>,
    /// Latest a slot may start, in seconds after now (default 7776000 = 90 days).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 60, maximum = 158112000)]
    pub horizon_s: Option<u64>,
    /// Ingest opens this long before the slot (default 30).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 3600)]
    pub preroll_s: Option<u64>,
    /// Ingest stays open this long after the slot (default 10).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 3600)]
    pub grace_s: Option<u64>,
    #[schema(min_items = 1, max_items = 16)]
    pub carriers: Vec<CarrierInput>,
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchServer {
    #[schema(
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        max_length = 200
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[schema(minimum = 1, maximum = 10000)]
    pub capacity: Option<u32>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 604800)]
    pub min_lead_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 1, maximum = 604800)]
    pub max_duration_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 60, maximum = 158112000)]
    pub horizon_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 3600)]
    pub preroll_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 0, maximum = 3600)]
    pub grace_s: Option<u64>,
    #[schema(min_items = 1, max_items = 16)]
    pub carriers: Option<Vec<CarrierInput>>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServerDto {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub min_lead_s: u64,
    pub max_duration_s: u64,
    pub horizon_s: u64,
    pub preroll_s: u64,
    pub grace_s: u64,
    pub carriers: Vec<CarrierDto>,
    #[serde(
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    pub server_id: String,
    pub start: WireTime,
    pub end: WireTime,
    pub title: Option<String>,
    /// A camera for the streamer to pull over the dedicated network, instead of a publisher.
    pub source: Option<SourceRequest>,
}

/// The camera a booking names. The login is sealed at once and never shown again.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// `rtsp://host[:port]/path`, without user info.
    pub pull_url: String,
    pub username: Option<String>,
    #[schema(value_type = Option<String>)]
    pub password: Option<Concealed>,
    /// `tcp` (the default) or `udp`.
    pub transport: Option<String>,
}

/// A secret from a request: readable by the code that seals it, never by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Concealed(pub String);

impl std::fmt::Debug for Concealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Concealed(…)")
    }
}

/// The camera a reservation pulls, as shown: never its login.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SourceDto {
    pub pull_url: String,
    /// `tcp` or `udp`.
    pub transport: String,
    /// Whether a login is stored for the camera (it is never shown).
    pub login: bool,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    pub start: WireTime,
    pub end: WireTime,
}

/// Where to connect on one carrier: `ingest_url` + `/live/<reservation_id>`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CarrierUrl {
    pub carrier: String,
    pub url: String,
}

/// The reservation's setting info: what the terminal stores to go live. Its `Debug` hides
/// the stream key.
#[derive(Clone, Serialize, ToSchema)]
pub struct Setting {
    /// 128-bit random, shown only here (on acceptance and rotation); the server keeps a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub opens_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub closes_at: DateTime<Utc>,
    pub carriers: Vec<CarrierUrl>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("stream_key", &self.stream_key.as_ref().map(|_| "(hidden)"))
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("carriers", &self.carriers)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    /// Always `accepted`.
    pub status: &'static str,
    pub server_id: String,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    pub title: Option<String>,
    /// The camera the streamer pulls, for a pull reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto>,
    pub setting: Setting,
    pub server_time: ServerTime,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WindowDto {
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
}

impl From<&Window> for WindowDto {
    fn from(w: &Window) -> Self {
        Self {
            start: w.start,
            end: w.end,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Rejected {
    /// The id the refused request was recorded under (its history is auditable).
    pub id: String,
    /// Always `rejected`.
    pub status: &'static str,
    /// Machine-readable: `capacity_exceeded`.
    pub reason: String,
    pub message: String,
    /// Accepted slots overlapping the requested window.
    pub conflicts: Vec<WindowDto>,
    /// Up to 3 nearest free windows of the same length.
    pub suggestions: Vec<WindowDto>,
    pub server_time: ServerTime,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReservationDto {
    pub id: String,
    /// `accepted` → `live` (a publisher connected) → `ended` (the window closed after ingest)
    /// or `missed` (it closed without any); or `rejected`, `cancelled`.
    pub status: String,
    pub server_id: String,
    pub owner: String,
    pub title: Option<String>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    /// Present for accepted reservations; the stream key is never repeated here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<Setting>,
    /// The camera the streamer pulls, for a pull reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The streamer's last report, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestDto>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IngestDto {
    /// `connected`, `disconnected` or `failed`.
    pub state: String,
    /// The carrier the publisher came in on.
    pub carrier: Option<String>,
    /// When the api recorded the report (server clock).
    #[serde(serialize_with = "serde_ms::serialize")]
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReservationList {
    pub reservations: Vec<ReservationDto>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<ServerDto>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScheduleSlot {
    pub reservation_id: String,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    pub status: String,
    /// Only for the reservation's owner or an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Only for the reservation's owner or an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Schedule {
    pub server_id: String,
    pub slots: Vec<ScheduleSlot>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub sequence: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub recorded_at: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

/// A page of a reservation's history.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct History {
    pub reservation_id: String,
    /// Oldest first (a page asked `after`, or by default), newest first (`before`).
    pub events: Vec<HistoryEntry>,
    /// The query for the next page in the same direction; `null` on the last page.
    pub next: Option<HistoryCursor>,
}

/// Where the next page starts: pass it back as the query (`?after=12` or `?before=3`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoryCursor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    pub id: String,
    pub setting: Setting,
    pub server_time: ServerTime,
}

/// Whole numbers as JSON Schema counts them: `67687` and `67687.0` alike (a client that
/// writes every number as a float is within the document); `1.5` is refused.
mod whole {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Deserialize;

    struct Whole(u64);

    impl<'de> Deserialize<'de> for Whole {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Seen;
            impl Visitor<'_> for Seen {
                type Value = Whole;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a whole number of at least 0")
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                    Ok(Whole(v))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                    u64::try_from(v)
                        .map(Whole)
                        .map_err(|_| E::custom("must be at least 0"))
                }

                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                    // Exact in f64 up to 2^53; the limits on every such field are far below.
                    if v.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&v) {
                        Ok(Whole(v as u64))
                    } else {
                        Err(E::custom("must be a whole number of at least 0"))
                    }
                }
            }
            d.deserialize_any(Seen)
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        opt_u64(d)?
            .map(|v| u32::try_from(v).map_err(|_| de::Error::custom("is too large")))
            .transpose()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "opt_u32")]
            n: Option<u32>,
        }

        fn n(json: &str) -> Result<Option<u32>, String> {
            serde_json::from_str::<T>(json)
                .map(|t| t.n)
                .map_err(|e| e.to_string())
        }

        #[test]
        fn whole_numbers_are_taken_written_either_way_and_fractions_are_not() {
            assert_eq!(n(r#"{"n": 67687}"#), Ok(Some(67687)));
            assert_eq!(n(r#"{"n": 67687.0}"#), Ok(Some(67687)));
            assert_eq!(n(r#"{"n": null}"#), Ok(None));
            assert_eq!(n(r#"{}"#), Ok(None));
            assert!(n(r#"{"n": 1.5}"#).unwrap_err().contains("whole number"));
            assert!(n(r#"{"n": -1}"#).unwrap_err().contains("at least 0"));
            assert!(n(r#"{"n": 5000000000}"#).unwrap_err().contains("too large"));
            assert!(n(r#"{"n": "7"}"#).is_err());
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn the_debug_of_a_setting_hides_its_stream_key() {
        let setting = Setting {
            stream_key: Some("0123456789abcdef0123456789abcdef".into()),
            opens_at: Utc::now(),
            closes_at: Utc::now(),
            carriers: vec![],
        };
        let shown = format!("{setting:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("hidden"), "{shown}");
    }
}
