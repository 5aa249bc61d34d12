//! The REST API as the terminal calls it.
//!
//! Contract: one [`Client`] per command run; every call is bounded in time; answers come back
//! as JSON values (the commands pick the fields they show, and `--json` prints them as the
//! API sent them). Error answers become [`TerminalError`]s carrying the API's own message.
//! [`Client::time`] stamps the request's departure and the answer's arrival on the terminal's
//! clock, for [`crate::clock::Sample`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::clock::{self, Offset, Sample};
use crate::TerminalError;

const TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    api: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An answer: its status and body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
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
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, TerminalError> {
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
        Ok(Answer { status, body })
    }

    /// Like [`Client::send`], but any error status is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, TerminalError> {
        let answer = self.send(method, path, body, None).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(error_of(&answer))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, TerminalError> {
        self.call(Method::GET, path, None).await
    }

    /// `GET /v1/time` with the terminal's clock read around it.
    pub async fn time(&self) -> Result<(Sample, Value), TerminalError> {
        let t1 = Utc::now();
        let answer = self.send(Method::GET, "/v1/time", None, None).await?;
        let t4 = Utc::now();
        if !answer.status.is_success() {
            return Err(error_of(&answer));
        }
        let stamp = |field: &str| -> Result<DateTime<Utc>, TerminalError> {
            time_of(&answer.body[field])
                .ok_or_else(|| TerminalError::Local(format!("/v1/time answered without {field}")))
        };
        let sample = Sample {
            t1,
            t2: stamp("t_receive")?,
            t3: stamp("t_transmit")?,
            t4,
        };
        Ok((sample, answer.body))
    }

    /// Samples `GET /v1/time` up to `samples` times and keeps the lowest-delay sample, with
    /// the last answer. A failure after the first sample ends the sampling early; a failure
    /// before it is the error.
    pub async fn measure(&self, samples: u32) -> Result<(Offset, Value, usize), TerminalError> {
        let mut taken = Vec::new();
        let mut last = Value::Null;
        for _ in 0..samples {
            match self.time().await {
                Ok((sample, body)) => {
                    taken.push(sample);
                    last = body;
                }
                Err(e) if taken.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let offset = clock::best(&taken)
            .ok_or_else(|| TerminalError::Usage("at least one sample is needed".into()))?;
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

/// An RFC 3339 time in an answer, as UTC.
pub fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The error an unsuccessful answer means.
pub fn error_of(answer: &Answer) -> TerminalError {
    let status = answer.status.as_u16();
    let error = &answer.body["error"];
    let message = error["message"]
        .as_str()
        .map(str::to_string)
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
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message,
        },
    }
}
