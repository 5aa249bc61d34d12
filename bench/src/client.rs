//! The api as the benchmarks' clients see it: its REST API with an operator's and a
//! distributor's token, and what a booking is.
//!
//! Contract: every call goes through HTTP only; an answer other than the one expected is an
//! [`Outcome`] error that groups alike failures (by the error's code and message, not ids).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::TimeDelta;

use crate::load::{closed_loop, Outcome};

/// Length of each booked slot; a server's slots are laid end to end from a day ahead.
pub(crate) const SLOT: TimeDelta = TimeDelta::minutes(10);
/// The servers' booking horizon, so long runs on one server stay bookable (4 years).
pub(crate) const HORIZON_S: u64 = 4 * 365 * 86_400;

/// The api as its clients see it.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) operator: String,
    pub(crate) distributor: String,
}

impl Api {
    /// Books with `body` as sent; anything but 201 is an error.
    pub(crate) async fn book_body(&self, body: &str) -> Outcome {
        let request = self
            .http
            .post(format!("{}/v1/reservations", self.base))
            .bearer_auth(&self.distributor)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        expect(request, reqwest::StatusCode::CREATED).await
    }

    /// Registers `ids` (one carrier, default lead time) with `capacity`, a few at a time.
    pub(crate) async fn register(
        &self,
        ids: &[String],
        capacity: u32,
        timeout: Duration,
    ) -> Result<()> {
        let clients = 8;
        let ids = Arc::new(ids.to_vec());
        let api = self.clone();
        let count = ids.len();
        let figures = closed_loop(
            clients,
            count,
            timeout,
            Duration::from_secs(300),
            move |i| {
                let (api, ids) = (api.clone(), ids.clone());
                async move {
                    let body = serde_json::json!({
                        "id": ids[i],
                        "name": format!("bench server {}", ids[i]),
                        "capacity": capacity,
                        "horizon_s": HORIZON_S,
                        "carriers": [{"name": "carrier-a", "ingest_url": "rtsp://127.0.0.2:8554"}],
                    });
                    let request = api
                        .http
                        .post(format!("{}/v1/servers", api.base))
                        .bearer_auth(&api.operator)
                        .json(&body);
                    expect(request, reqwest::StatusCode::CREATED).await
                }
            },
        )
        .await;
        if figures.ok != count {
            bail!(
                "registered {} of {count} servers: {}",
                figures.ok,
                figures.error_samples.join("; ")
            );
        }
        Ok(())
    }

    /// A few authenticated reads from every client, so connections (HTTP and the api's pool)
    /// are open and the token is cached before timing.
    pub(crate) async fn warm_up(&self, clients: usize, timeout: Duration) {
        let api = self.clone();
        closed_loop(clients, clients * 4, timeout, timeout, move |_| {
            let api = api.clone();
            async move {
                let request = api
                    .http
                    .get(format!("{}/v1/servers", api.base))
                    .bearer_auth(&api.distributor);
                expect(request, reqwest::StatusCode::OK).await
            }
        })
        .await;
    }
}

/// Sends `request` and reads the whole answer; anything but `status` is an error.
pub(crate) async fn expect(
    request: reqwest::RequestBuilder,
    status: reqwest::StatusCode,
) -> Outcome {
    let response = request.send().await.map_err(describe_http)?;
    let got = response.status();
    let body = response.bytes().await.map_err(describe_http)?;
    if got == status {
        return Ok(());
    }
    // Group by the error's code and message, not its ids.
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(&json, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let what = match (
        field(&["error", "code"]),
        field(&["error", "message"]),
        field(&["reason"]),
    ) {
        (Some(code), Some(message), _) => format!("{code}: {message}"),
        (_, _, Some(reason)) => format!("refused: {reason}"),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    Err(format!("HTTP {}: {what}", got.as_u16()))
}

fn describe_http(err: reqwest::Error) -> String {
    if err.is_timeout() {
        "HTTP request timed out".to_string()
    } else if err.is_connect() {
        "cannot connect to the api".to_string()
    } else {
        format!("HTTP: {err}")
    }
}
