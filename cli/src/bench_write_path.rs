//! Parts (b) and (c) of `slotcast bench booking`: one server whose schedule grows, and clients
//! that hang up right after sending. Prints figures, asserts none.
//!
//! Contract: runs against the in-process api and the throwaway database of
//! [`crate::bench`], on server ids of its own (`bench-busy-*`, `bench-hang-*`), so it never
//! sees the other parts' slots. Every request has a timeout and every wait a bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::bench::{Api, Figures, SLOT};
use crate::bench_load::closed_loop;

/// The targets the issue sets: the rate with the fullest schedule against the empty one...
pub const BUSY_TARGET: f64 = 0.8;

/// How long a retry of a hung-up booking keeps trying before its key counts as stuck.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Pause between a hang-up and its first retry: the retry must not wait for the first.
const RETRY_AFTER_HANG_UP: Duration = Duration::from_millis(50);

/// (b): the booking rate on one server at each schedule size.
#[derive(Debug, Serialize)]
pub struct BusyLevel {
    /// Future slots the server held when the measured bookings began.
    pub future_slots: usize,
    pub figures: Figures,
}

#[derive(Debug, Serialize)]
pub struct Busy {
    pub levels: Vec<BusyLevel>,
    /// Rate at the largest schedule ÷ rate at the smallest.
    pub ratio: Option<f64>,
    pub target: f64,
    pub met: Option<bool>,
}

/// (c): what clients that hung up came to.
#[derive(Debug, Default, Serialize)]
pub struct HangUps {
    pub bookings: usize,
    /// Keys whose retries never got a 201 within the bound.
    pub stuck: usize,
    /// Reservations booked whose id no client got back (their stream key is lost).
    pub lost: usize,
    /// Reservations beyond one per key (the same window booked twice).
    pub duplicates: usize,
    /// Retries answered `409 idempotency_key_in_flight` (each one, counted per answer).
    pub in_flight_answers: usize,
    /// Retries answered 503 (and retried after `Retry-After`).
    pub unavailable_answers: usize,
    pub met: bool,
}

/// One server per level (capacity 1), filled with `level` future slots without timing, then
/// `bookings` more on it measured in a closed loop of `clients`.
pub async fn busy(
    api: &Api,
    levels: &[usize],
    bookings: usize,
    clients: usize,
    timeout: Duration,
    cap: Duration,
    base: DateTime<Utc>,
) -> Result<Busy> {
    let mut out = Vec::new();
    for &level in levels {
        let server = format!("bench-busy-{level}");
        api.register(std::slice::from_ref(&server), 1, timeout)
            .await?;
        let bodies = Arc::new(one_server(&server, level + bookings, base));
        if level > 0 {
            let fill = closed_loop(clients, level, timeout, Duration::from_secs(3600), {
                let (api, bodies) = (api.clone(), bodies.clone());
                move |i| {
                    let (api, bodies) = (api.clone(), bodies.clone());
                    async move { api.book_body(&bodies[i]).await }
                }
            })
            .await;
            anyhow::ensure!(
                fill.ok == level,
                "filled {} of {level} slots on {server}: {}",
                fill.ok,
                fill.error_samples.join("; ")
            );
        }
        let figures = closed_loop(clients, bookings, timeout, cap, {
            let (api, bodies) = (api.clone(), bodies.clone());
            move |i| {
                let (api, bodies) = (api.clone(), bodies.clone());
                async move { api.book_body(&bodies[level + i]).await }
            }
        })
        .await;
        out.push(BusyLevel {
            future_slots: level,
            figures,
        });
    }
    let ratio = match (out.first(), out.last()) {
        (Some(empty), Some(full)) if out.len() > 1 && empty.figures.rate > 0.0 => {
            Some(full.figures.rate / empty.figures.rate)
        }
        _ => None,
    };
    Ok(Busy {
        levels: out,
        ratio,
        target: BUSY_TARGET,
        met: ratio.map(|r| r >= BUSY_TARGET),
    })
}

/// `count` booking bodies on `server`, its slots end to end from `base`.
fn one_server(server: &str, count: usize, base: DateTime<Utc>) -> Vec<String> {
    (0..count)
        .map(|i| {
            let start = base + SLOT * i32::try_from(i).unwrap_or(i32::MAX);
            body(server, start, start + SLOT)
        })
        .collect()
}

fn body(server: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    serde_json::json!({
        "server_id": server,
        "start": start.to_rfc3339_opts(SecondsFormat::Secs, true),
        "end": end.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
    .to_string()
}

/// One hung-up booking and what its retries got.
struct HangUp {
    key: String,
    body: String,
}

#[derive(Default)]
struct RetryOutcome {
    id: Option<String>,
    in_flight: usize,
    unavailable: usize,
}

/// `count` bookings, each with an Idempotency-Key, written on a raw connection that is closed
/// right after; then each retried with the same key (without waiting for the first) until a
/// final answer or [`RETRY_FOR`]. `clients` at a time. Servers have room for every booking,
/// so a key booked twice shows as a second reservation of its window.
pub async fn hang_ups(
    api: &Api,
    pool: &PgPool,
    count: usize,
    clients: usize,
    timeout: Duration,
    base: DateTime<Utc>,
) -> Result<HangUps> {
    let servers: Vec<String> = (0..10).map(|i| format!("bench-hang-{i}")).collect();
    api.register(&servers, 1_000, timeout).await?;
    let work: Vec<HangUp> = (0..count)
        .map(|i| {
            let start = base + TimeDelta::hours(i64::try_from(i).unwrap_or(i64::MAX));
            HangUp {
                key: uuid::Uuid::new_v4().to_string(),
                body: body(&servers[i % servers.len()], start, start + SLOT),
            }
        })
        .collect();
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(count) {
        let (api, work, next) = (api.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = work.get(i) else { break };
                let hung_up = hang_up(&api, job).await;
                tokio::time::sleep(RETRY_AFTER_HANG_UP).await;
                let mut outcome = retry(&api, job, timeout).await;
                if let Err(err) = hung_up {
                    tracing::warn!("{err:#}");
                }
                outcome.id = outcome.id.filter(|id| !id.is_empty());
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        outcomes.extend(done.context("a client task failed")?);
    }
    let answered: BTreeSet<String> = outcomes.iter().filter_map(|o| o.id.clone()).collect();
    let booked: Vec<(String, String)> = sqlx::query_as(
        "SELECT reservation_id, payload -> 'ReservationAccepted' ->> 'start' FROM events \
         WHERE event_type = 'ReservationAccepted' AND aggregate_id LIKE 'bench-hang-%'",
    )
    .fetch_all(pool)
    .await?;
    let mut per_window: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, start) in &booked {
        *per_window.entry(start.as_str()).or_default() += 1;
    }
    let mut figures = HangUps {
        bookings: count,
        stuck: outcomes.iter().filter(|o| o.id.is_none()).count(),
        lost: booked
            .iter()
            .filter(|(id, _)| !answered.contains(id))
            .count(),
        duplicates: per_window.values().map(|n| n.saturating_sub(1)).sum(),
        in_flight_answers: outcomes.iter().map(|o| o.in_flight).sum(),
        unavailable_answers: outcomes.iter().map(|o| o.unavailable).sum(),
        met: false,
    };
    figures.met = figures.stuck == 0 && figures.lost == 0 && figures.duplicates == 0;
    Ok(figures)
}

/// Writes the booking on a fresh connection and closes it at once, reading nothing.
async fn hang_up(api: &Api, job: &HangUp) -> Result<()> {
    let addr = api.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        api.distributor,
        job.key,
        job.body.len(),
        job.body
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// Retries `job` until 201 (its reservation id), any other final answer, or the bound.
async fn retry(api: &Api, job: &HangUp, timeout: Duration) -> RetryOutcome {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut outcome = RetryOutcome::default();
    while tokio::time::Instant::now() < deadline {
        let sent = api
            .http
            .post(format!("{}/v1/reservations", api.base))
            .bearer_auth(&api.distributor)
            .header("Idempotency-Key", &job.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(job.body.clone())
            .send()
            .await;
        let Ok(response) = sent else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match (status, answer["error"]["code"].as_str()) {
            (201, _) => {
                let has_key = answer["setting"]["stream_key"].is_string();
                outcome.id = has_key.then(|| answer["id"].as_str().unwrap_or("").to_string());
                return outcome;
            }
            (409, Some("idempotency_key_in_flight")) => {
                outcome.in_flight += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (503, _) => {
                outcome.unavailable += 1;
                let after = answer["error"]["retry_after_s"].as_u64().unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(after)).await;
            }
            _ => return outcome,
        }
    }
    outcome
}

/// The text of parts (b) and (c).
pub fn text(busy: Option<&Busy>, hang: Option<&HangUps>) -> String {
    let mut out = String::new();
    if let Some(b) = busy {
        out.push_str(
            "\none server, its schedule growing (capacity 1, 10-minute slots end to end):\n",
        );
        out.push_str("future slots | accepted/s |      p50 |      p99\n------------ | ---------- | -------- | --------\n");
        for l in &b.levels {
            out.push_str(&format!(
                "{:>12} | {:>10.1} | {:>5.1} ms | {:>5.1} ms{}\n",
                l.future_slots,
                l.figures.rate,
                l.figures.p50_ms,
                l.figures.p99_ms,
                if l.figures.errors > 0 {
                    format!(
                        "  ({} errors: {})",
                        l.figures.errors,
                        l.figures.error_samples.join("; ")
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    if let Some(h) = hang {
        out.push_str(&format!(
            "\nclients that hang up: {} bookings written and hung up on, each retried with its key \
             {} ms later: {} stuck, {} lost stream keys, {} duplicates ({} answers 'in flight', \
             {} answers 503)\n",
            h.bookings,
            RETRY_AFTER_HANG_UP.as_millis(),
            h.stuck,
            h.lost,
            h.duplicates,
            h.in_flight_answers,
            h.unavailable_answers
        ));
    }
    out
}

/// The target lines of parts (b) and (c).
pub fn targets(
    busy: Option<&Busy>,
    hang: Option<&HangUps>,
    met: fn(Option<bool>) -> &'static str,
) -> String {
    let mut out = String::new();
    if let Some(b) = busy {
        let (first, last) = (b.levels.first(), b.levels.last());
        out.push_str(&format!(
            "target: one server, rate at {} future slots >= {:.0}% of the rate at {}: {} ({})\n",
            last.map_or(0, |l| l.future_slots),
            b.target * 100.0,
            first.map_or(0, |l| l.future_slots),
            b.ratio
                .map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0)),
            met(b.met),
        ));
    }
    if let Some(h) = hang {
        out.push_str(&format!(
            "target: clients that hang up: 0 stuck, 0 lost, 0 duplicates: {}/{}/{} ({})\n",
            h.stuck,
            h.lost,
            h.duplicates,
            met(Some(h.met)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_servers_slots_follow_each_other() {
        let base = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let bodies = one_server("s", 3, base);
        let parsed: Vec<Value> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(parsed[0]["start"], "2030-01-01T00:00:00Z");
        assert_eq!(parsed[0]["end"], parsed[1]["start"]);
        assert_eq!(parsed[2]["end"], "2030-01-01T00:30:00Z");
        assert!(parsed.iter().all(|p| p["server_id"] == "s"));
    }

    #[test]
    fn the_targets_say_met_only_when_every_count_is_zero() {
        let mut h = HangUps {
            bookings: 200,
            ..Default::default()
        };
        h.met = true;
        let met = |v: Option<bool>| if v == Some(true) { "met" } else { "NOT met" };
        assert!(targets(None, Some(&h), met).contains("0/0/0 (met)"));
        h.lost = 3;
        h.met = false;
        assert!(targets(None, Some(&h), met).contains("0/3/0 (NOT met)"));
    }
}
