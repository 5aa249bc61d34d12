//! How the api reads what comes over the wire: the JSON body and query string extractors,
//! and input times. The bodies themselves are `slotcast-wire`'s, re-exported here.
//!
//! Contract: bodies are parsed with the path of any bad field, so a 422 names it; a query
//! string that does not parse is a JSON 400; input times must carry a zone and are
//! truncated to milliseconds, except `as_of`, which keeps the microseconds events are
//! recorded with, and is a 400 when it is not a time or is still to come.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
pub use slotcast_wire::*;

use crate::error::ApiError;
use crate::state::AppState;

/// Parses an input time: RFC 3339 with a zone, to UTC, truncated to milliseconds.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_rfc3339_ms(text).ok_or_else(|| ApiError::invalid(field, TIME_FORMAT))
}

/// Reads an `as_of` parameter: RFC 3339 with a zone, to UTC, to the microsecond (the
/// precision of an event's `recorded_at`, so an instant stamped between two events falls
/// between them). One after `now`, the server clock when the request arrived, is refused: the
/// events up to it are not all known yet, and an answer as of an instant must never change.
pub fn parse_as_of(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .and_then(|t| DateTime::from_timestamp_micros(t.timestamp_micros()))
        .ok_or_else(|| ApiError::BadRequest(format!("as_of {TIME_FORMAT}")))?;
    if at > now {
        return Err(ApiError::BadRequest(format!(
            "as_of must not be after the server's now ({}): what slotcast will know then is not \
             known yet",
            slotcast_domain::time::rfc3339_us(&now)
        )));
    }
    Ok(at)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn refusal(text: &str, now: DateTime<Utc>) -> String {
        match parse_as_of(text, now) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn as_of_keeps_microseconds_and_refuses_what_is_not_a_past_time() {
        let now = t("2030-01-01T12:00:00.000500Z");
        assert_eq!(
            parse_as_of("2030-01-01T21:00:00.000123999+09:00", now).unwrap(),
            t("2030-01-01T12:00:00.000123Z")
        );
        assert_eq!(parse_as_of("2030-01-01T12:00:00.0005Z", now).unwrap(), now);
        assert_eq!(
            refusal("2030-01-01T12:00:00", now),
            format!("as_of {TIME_FORMAT}")
        );
        assert_eq!(refusal("yesterday", now), format!("as_of {TIME_FORMAT}"));
        assert_eq!(
            refusal("2030-01-01T12:00:00.000501Z", now),
            "as_of must not be after the server's now (2030-01-01T12:00:00.000500Z): what \
             slotcast will know then is not known yet"
        );
    }
}
