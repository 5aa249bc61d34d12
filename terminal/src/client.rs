//! The REST API as the terminal calls it.
//!
//! Contract: one [`Client`] per command run; every call is bounded in time. Request bodies
//! are `slotcast-wire`'s request types, and answers are read into its answer types
//! ([`Answer::read`], [`Reply`]); an answer that does not read is a [`TerminalError::Answer`]
//! naming the field, never a panic. Each answer keeps the JSON as the API sent it, which is
//! what `--json` prints. Error answers become [`TerminalError`]s carrying the API's own
//! message. [`Client::time`] stamps the request's departure and the answer's arrival on the
//! terminal's clock, for [`crate::clock::Sample`]. [`as_of`] adds the instant a read is
//! asked "as of" to its path.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slotcast_wire::{ErrorBody, ServerTime};

use crate::clock::{self, Offset, Sample};
use crate::TerminalError;

const TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    api: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An answer: its status and its body as sent (JSON, or the start of the text when it is not
/// JSON), with the request it answers, for errors.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    request: String,
}

/// A successful answer read as `T`, with the JSON it was read from.
pub struct Reply<T> {
    pub value: T,
    pub json: Value,
    request: String,
}

impl<T> Reply<T> {
    /// The error for a field the answer lacks that this use of it needs.
    pub fn missing(&self, field: &str) -> TerminalError {
        missing(&self.request, field)
    }
}

fn missing(request: &str, field: &str) -> TerminalError {
    TerminalError::Answer {
        request: request.to_string(),
        field: field.to_string(),
        message: "is missing".to_string(),
    }
}

impl Answer {
    /// The body read as `T`; a body that does not fit names the field.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, TerminalError> {
        read_as(&self.body).map_err(|(field, message)| TerminalError::Answer {
            request: self.request.clone(),
            field,
            message,
        })
    }

    /// The error for a field the answer lacks that this use of it needs.
    pub fn missing(&self, field: &str) -> TerminalError {
        missing(&self.request, field)
    }

    /// The body as the API's error body, if it is one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        ErrorBody::deserialize(&self.body).ok()
    }

    fn into_reply<T: DeserializeOwned>(self) -> Result<Reply<T>, TerminalError> {
        let value = self.read()?;
        Ok(Reply {
            value,
            json: self.body,
            request: self.request,
        })
    }
}

/// `T` from a JSON value, or the path of the field that does not fit and why.
pub(crate) fn read_as<T: DeserializeOwned>(body: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let absent = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'));
        match (path.as_str(), absent) {
            (".", Some(field)) => (field.to_string(), "is missing".to_string()),
            (_, Some(field)) => (format!("{path}.{field}"), "is missing".to_string()),
            (".", None) => ("the body".to_string(), message),
            (_, None) => (path, message),
        }
    })
}

impl Client {
    pub fn new(api: &str, token: Option<&str>) -> Result<Self, TerminalError> {
        let api = api.trim_end_matches('/').to_string();
        if !(api.starts_with("http://") || api.starts_with("https://")) {
            return Err(TerminalError::Usage(format!(
                "--api {api}: expected http://host:port or https://host"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("slotcast-terminal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TerminalError::Local(format!("HTTP client: {e}")))?;
        Ok(Self {
            api,
            token: token.map(str::to_string),
            http,
        })
    }

    pub fn api(&self) -> &str {
        &self.api
    }

    /// Sends a request; `Ok` for any answer the API gave (the caller looks at the status).
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, TerminalError> {
        let request_line = format!("{method} {path}");
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes).chars().take(300).collect())
            })
        };
        Ok(Answer {
            status,
            body,
            request: request_line,
        })
    }

    /// Like [`Client::send`], but any error status is an error, and the answer is read as
    /// `T`.
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Reply<T>, TerminalError> {
        let answer = self.send(method, path, body, None).await?;
        if answer.status.is_success() {
            answer.into_reply()
        } else {
            Err(error_of(&answer))
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, TerminalError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `GET /v1/time` with the terminal's clock read around it.
    pub async fn time(&self) -> Result<(Sample, Reply<ServerTime>), TerminalError> {
        let t1 = Utc::now();
        let answer = self
            .send(Method::GET, "/v1/time", None::<&()>, None)
            .await?;
        let t4 = Utc::now();
        if !answer.status.is_success() {
            return Err(error_of(&answer));
        }
        let reply: Reply<ServerTime> = answer.into_reply()?;
        let sample = Sample {
            t1,
            t2: reply.value.t_receive,
            t3: reply.value.t_transmit,
            t4,
        };
        Ok((sample, reply))
    }

    /// Samples `GET /v1/time` up to `samples` times and keeps the lowest-delay sample, with
    /// the last answer. A failure after the first sample ends the sampling early; a failure
    /// before it is the error.
    pub async fn measure(
        &self,
        samples: u32,
    ) -> Result<(Offset, Reply<ServerTime>, usize), TerminalError> {
        let mut taken = Vec::new();
        let mut last = None;
        for _ in 0..samples {
            match self.time().await {
                Ok((sample, reply)) => {
                    taken.push(sample);
                    last = Some(reply);
                }
                Err(e) if taken.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let (Some(offset), Some(last)) = (clock::best(&taken), last) else {
            return Err(TerminalError::Usage("at least one sample is needed".into()));
        };
        Ok((offset, last, taken.len()))
    }

    fn unreachable(&self, err: &reqwest::Error) -> TerminalError {
        let why = if err.is_timeout() {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else if err.is_connect() {
            "connection refused or no route".to_string()
        } else {
            err.to_string()
        };
        TerminalError::Unreachable {
            api: self.api.clone(),
            why,
        }
    }
}

/// `path` asked as slotcast knew it at `at` (`?as_of=`, to the microsecond, as events are
/// recorded), or as it stands with `None`.
pub fn as_of(path: &str, at: Option<DateTime<Utc>>) -> String {
    match at {
        None => path.to_string(),
        Some(at) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            // UTC with `Z`: nothing in it needs escaping in a query.
            format!(
                "{path}{sep}as_of={}",
                at.to_rfc3339_opts(SecondsFormat::Micros, true)
            )
        }
    }
}

/// The error an unsuccessful answer means.
pub fn error_of(answer: &Answer) -> TerminalError {
    let status = answer.status.as_u16();
    let error = answer.error_body().map(|b| b.error);
    let message = error
        .as_ref()
        .map(|e| e.message.clone())
        .or_else(|| answer.body.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            answer
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
        });
    match answer.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => TerminalError::Auth { status, message },
        _ => TerminalError::Api {
            status,
            code: error.map_or_else(|| "error".to_string(), |e| e.code),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use slotcast_wire::ReservationDto;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body,
            request: "GET /v1/reservations/r-1".into(),
        }
    }

    fn shown() -> Value {
        json!({
            "id": "r-1", "status": "accepted", "server_id": "srv", "owner": "alice",
            "title": null, "start": "2030-01-01T12:00:00.000Z", "end": "2030-01-01T12:30:00.000Z",
            "setting": {"opens_at": "2030-01-01T11:59:30.000Z",
                        "closes_at": "2030-01-01T12:30:10.000Z", "carriers": []},
            "requested_at": "2030-01-01T10:00:00.000Z", "updated_at": "2030-01-01T10:00:00.000Z"
        })
    }

    #[test]
    fn an_answer_reads_typed_and_one_that_does_not_fit_names_its_field() {
        let read = answer(200, shown()).read::<ReservationDto>().unwrap();
        assert_eq!(read.status, slotcast_wire::ReservationStatus::Accepted);

        let mut body = shown();
        body["setting"].as_object_mut().unwrap().remove("opens_at");
        let err = answer(200, body).read::<ReservationDto>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the API's answer to GET /v1/reservations/r-1 does not read: setting.opens_at: \
             is missing"
        );
        assert_eq!(err.exit_code(), 1);

        let mut body = shown();
        body["status"] = json!("paused");
        let err = answer(200, body).read::<ReservationDto>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(": status: "), "{text}");
        assert!(text.contains("paused"), "{text}");

        let err = answer(200, json!("not json"))
            .read::<ReservationDto>()
            .unwrap_err();
        assert!(err.to_string().contains(": the body: "), "{err}");
    }

    #[test]
    fn a_read_as_of_an_instant_carries_it_to_the_microsecond() {
        let at = DateTime::parse_from_rfc3339("2030-01-01T21:00:00.123456789+09:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(as_of("/v1/reservations/r-1", None), "/v1/reservations/r-1");
        assert_eq!(
            as_of("/v1/reservations/r-1", Some(at)),
            "/v1/reservations/r-1?as_of=2030-01-01T12:00:00.123456Z"
        );
        assert_eq!(
            as_of("/v1/servers/s1/schedule?from=a&to=b", Some(at)),
            "/v1/servers/s1/schedule?from=a&to=b&as_of=2030-01-01T12:00:00.123456Z"
        );
    }

    #[test]
    fn an_error_answer_carries_the_apis_code_and_message() {
        let body = json!({"error": {"code": "reservation_not_active", "message": "ended"}});
        match error_of(&answer(409, body)) {
            TerminalError::Api {
                status,
                code,
                message,
            } => assert_eq!(
                (status, code.as_str(), message.as_str()),
                (409, "reservation_not_active", "ended")
            ),
            other => panic!("{other:?}"),
        }
        match error_of(&answer(502, json!("Bad Gateway from the proxy"))) {
            TerminalError::Api { code, message, .. } => {
                assert_eq!(
                    (code.as_str(), message.as_str()),
                    ("error", "Bad Gateway from the proxy")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error_of(&answer(401, Value::Null)),
            TerminalError::Auth { status: 401, .. }
        ));
    }
}
