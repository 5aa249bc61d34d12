//! Parts (b) and (c) of `slotcast-bench booking`: one server whose schedule grows, and
//! clients that hang up right after sending. Prints figures, asserts none.
//!
//! Contract: runs against the api child of [`crate::booking`] through its REST API only (part
//! c counts what was booked as an operator lists it), on server ids of its own
//! (`bench-busy-*`, `bench-hang-*`), so it never sees the other parts' slots. Every request has
//! a timeout and every wait a bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::client::{Api, SLOT};
use crate::load::closed_loop;
use crate::load::Figures;

/// The targets the issue sets: the rate with the fullest schedule against the empty one...
pub const BUSY_TARGET: f64 = 0.8;

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
    /// How the stuck keys' retries ended, as `count× what` (still in flight at the bound, a
    /// refusal, a 201 without a stream key...).
    pub stuck_samples: Vec<String>,
    /// The bound after which a key still unanswered counts as stuck.
    pub stuck_after_s: u64,
    pub met: bool,
}

/// Untimed bookings before the first level, so that it does not pay alone for what the first
/// bookings of a run pay (connections, prepared statements on each of the api's pooled
/// connections, a cold cache) while later levels find it done by their fill.
const WARM_UP_PER_CLIENT: usize = 8;

/// One server per level (capacity 1), filled with `level` future slots without timing, then
/// `bookings` more on it measured in a closed loop of `clients`. A server of its own takes the
/// warm-up first.
pub async fn busy(
    api: &Api,
    levels: &[usize],
    bookings: usize,
    clients: usize,
    timeout: Duration,
    cap: Duration,
    base: DateTime<Utc>,
) -> Result<Busy> {
    let warm = "bench-busy-warm-up".to_string();
    api.register(std::slice::from_ref(&warm), 1, timeout)
        .await?;
    let warm_bodies = Arc::new(one_server(&warm, clients * WARM_UP_PER_CLIENT, base));
    let warmed = closed_loop(clients, warm_bodies.len(), timeout, cap, {
        let (api, bodies) = (api.clone(), warm_bodies.clone());
        move |i| {
            let (api, bodies) = (api.clone(), bodies.clone());
            async move { api.book_body(&bodies[i]).await }
        }
    })
    .await;
    if warmed.errors > 0 {
        eprintln!(
            "slotcast-bench: warm-up: {} of {} bookings failed: {}",
            warmed.errors,
            warmed.sent,
            warmed.error_samples.join("; ")
        );
    }
    let mut out = Vec::new();
    for (index, &level) in levels.iter().enumerate() {
        // The position too, so a level listed twice gets a fresh server of its own.
        let server = format!("bench-busy-{index}-{level}");
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

/// One booking to hang up on and retry: its key and its body, sent alike both times.
struct HangUp {
    key: String,
    body: String,
}

/// What one answer to a retry comes to.
#[derive(Debug, PartialEq)]
enum Answer {
    /// 201 with the reservation id and its stream key: the client can stream.
    Booked(String),
    /// 409 `idempotency_key_in_flight`: the first request still holds the key; ask again.
    InFlight,
    /// 503: ask again after this many seconds.
    Unavailable(u64),
    /// Any other answer is final (a 201 without an id or stream key among them): described
    /// so alike endings group.
    Final(String),
}

/// Reads one answer to a booking; `body` may be anything, it is never trusted to be JSON.
fn read_answer(status: u16, body: &[u8]) -> Answer {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = json["error"]["code"].as_str();
    match status {
        201 => match (json["id"].as_str(), json["setting"]["stream_key"].as_str()) {
            (Some(id), Some(_)) if !id.is_empty() => Answer::Booked(id.to_string()),
            _ => Answer::Final("HTTP 201 without an id and stream key".to_string()),
        },
        409 if code == Some("idempotency_key_in_flight") => Answer::InFlight,
        503 => Answer::Unavailable(json["error"]["retry_after_s"].as_u64().unwrap_or(1)),
        _ => Answer::Final(format!(
            "HTTP {status} {}",
            code.unwrap_or("(no error code)")
        )),
    }
}

/// What the retries of one key came to.
#[derive(Debug, Default)]
struct RetryOutcome {
    /// The reservation id of a 201 with a stream key; `None` counts the key as stuck.
    id: Option<String>,
    /// Why there is no id: the last answer, or that the bound came first.
    ended: Option<String>,
    in_flight: usize,
    unavailable: usize,
}

/// The three counts of part (c), from what the clients got and what the database holds.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    stuck: usize,
    lost: usize,
    duplicates: usize,
}

/// `booked` is one `(reservation id, window)` per accepted reservation, where a window
/// (server and start) stands for one key: every key books a window of its own, so a second
/// reservation of a window is the same key booked twice.
fn tally(outcomes: &[RetryOutcome], booked: &[(String, String)]) -> Tally {
    let answered: BTreeSet<&str> = outcomes.iter().filter_map(|o| o.id.as_deref()).collect();
    let mut per_window: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, window) in booked {
        *per_window.entry(window.as_str()).or_default() += 1;
    }
    Tally {
        stuck: outcomes.iter().filter(|o| o.id.is_none()).count(),
        lost: booked
            .iter()
            .filter(|(id, _)| !answered.contains(id.as_str()))
            .count(),
        duplicates: per_window.values().map(|n| n.saturating_sub(1)).sum(),
    }
}

/// `count× what` for each distinct way the stuck keys ended, most frequent first.
fn stuck_samples(outcomes: &[RetryOutcome]) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.id.is_none()) {
        *counts
            .entry(o.ended.as_deref().unwrap_or("no answer"))
            .or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .into_iter()
        .map(|(what, n)| format!("{n}× {what}"))
        .collect()
}

/// `count` bookings, each with an Idempotency-Key, written on a raw connection that is closed
/// right after; then each retried with the same key (without waiting for the first) until a
/// final answer or `stuck_after`. `clients` at a time, so they arrive together. Servers have
/// room for every booking, so a key booked twice shows as a second reservation of its window.
/// `inline_projection` says whether the api writes its read model with each booking (else the
/// catch-up projector brings it, and the count waits for it).
pub async fn hang_ups(
    api: &Api,
    count: usize,
    clients: usize,
    timeout: Duration,
    stuck_after: Duration,
    inline_projection: bool,
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
                let outcome = retry(&api, job, timeout, stuck_after).await;
                if let Err(err) = hung_up {
                    eprintln!("slotcast-bench: a hang-up: {err:#}");
                }
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        outcomes.extend(done.context("a client task failed")?);
    }
    let answered: BTreeSet<&str> = outcomes.iter().filter_map(|o| o.id.as_deref()).collect();
    let booked = booked(api, &servers, inline_projection, &answered)
        .await
        .context("cannot list the reservations booked")?;
    let Tally {
        stuck,
        lost,
        duplicates,
    } = tally(&outcomes, &booked);
    Ok(HangUps {
        bookings: count,
        stuck,
        lost,
        duplicates,
        in_flight_answers: outcomes.iter().map(|o| o.in_flight).sum(),
        unavailable_answers: outcomes.iter().map(|o| o.unavailable).sum(),
        stuck_samples: stuck_samples(&outcomes),
        stuck_after_s: stuck_after.as_secs(),
        met: stuck == 0 && lost == 0 && duplicates == 0,
    })
}

/// Reservations asked for per page of `GET /v1/reservations` (the api's most).
const PAGE: usize = 5000;
/// How long the read model may take to show every booking.
const READ_MODEL_LIMIT: Duration = Duration::from_secs(30);

/// Every accepted reservation on `servers` as `(reservation id, window)`, as an operator
/// lists them. The list is the api's read model, so it is read until it holds every id in
/// `answered` (each was committed before its 201); under the inline projection that is at
/// once. Without it, the catch-up projector brings them, and the list is read again each
/// second until two reads also agree (a booking nobody got back may come after the others).
async fn booked(
    api: &Api,
    servers: &[String],
    inline_projection: bool,
    answered: &BTreeSet<&str>,
) -> Result<Vec<(String, String)>> {
    let deadline = Instant::now() + READ_MODEL_LIMIT;
    let mut previous: Option<Vec<(String, String)>> = None;
    loop {
        let listed = list_accepted(api, servers).await?;
        let ids: BTreeSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        let unlisted = answered.difference(&ids).count();
        if unlisted == 0 && (inline_projection || previous.as_ref() == Some(&listed)) {
            return Ok(listed);
        }
        if Instant::now() >= deadline {
            let what = if unlisted > 0 {
                format!("does not list {unlisted} reservations its clients were answered")
            } else {
                "is still changing".to_string()
            };
            bail!(
                "after {} s, the api's reservation list {what}",
                READ_MODEL_LIMIT.as_secs()
            );
        }
        previous = Some(listed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// [`booked`] as the list reads now: each server's accepted reservations, a page at a time in
/// start order, each page from the start of the last one's last (so none sharing that start is
/// skipped; repeats are counted once by id).
async fn list_accepted(api: &Api, servers: &[String]) -> Result<Vec<(String, String)>> {
    let mut all = Vec::new();
    for server in servers {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut from: Option<String> = None;
        loop {
            let mut request = api
                .http
                .get(format!("{}/v1/reservations", api.base))
                .bearer_auth(&api.operator)
                .query(&[
                    ("server_id", server.as_str()),
                    ("status", "accepted"),
                    ("limit", &PAGE.to_string()),
                ]);
            if let Some(from) = &from {
                request = request.query(&[("from", from)]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            let rows = page_rows(&page).context("an unexpected reservation list")?;
            let before = seen.len();
            for (id, start) in &rows {
                seen.insert(id.clone(), format!("{server} {start}"));
            }
            if rows.len() < PAGE {
                break;
            }
            ensure!(
                seen.len() > before,
                "{server} has over {PAGE} reservations at one instant; cannot page past them"
            );
            from = rows.last().map(|(_, start)| start.clone());
        }
        all.extend(seen);
    }
    Ok(all)
}

/// `(id, start)` of each reservation of a `GET /v1/reservations` answer, in its order.
fn page_rows(page: &Value) -> Option<Vec<(String, String)>> {
    page["reservations"]
        .as_array()?
        .iter()
        .map(|r| {
            Some((
                r["id"].as_str()?.to_string(),
                r["start"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The booking as a client writes it by hand: HTTP/1.1, its length stated, nothing after.
fn raw_request(host: &str, token: &str, key: &str, body: &str) -> String {
    format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n\
         {body}",
        body.len()
    )
}

/// Writes the booking on a fresh connection and closes it at once, reading nothing: a client
/// that gave up.
async fn hang_up(api: &Api, job: &HangUp) -> Result<()> {
    let addr = api.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = raw_request(addr, &api.distributor, &job.key, &job.body);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// Retries `job` until 201 (its reservation id), any other final answer, or `stuck_after`.
async fn retry(api: &Api, job: &HangUp, timeout: Duration, stuck_after: Duration) -> RetryOutcome {
    let deadline = tokio::time::Instant::now() + stuck_after;
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
        let answered = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => Ok(read_answer(status, &body)),
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        // Pauses never run past the bound: the key is judged at `deadline`, not later.
        let pause = |wanted: Duration| {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wanted))
        };
        match answered {
            Ok(Answer::Booked(id)) => {
                outcome.id = Some(id);
                outcome.ended = None;
                return outcome;
            }
            Ok(Answer::InFlight) => {
                outcome.in_flight += 1;
                outcome.ended = Some(format!(
                    "still 'in flight' after {} s",
                    stuck_after.as_secs()
                ));
                pause(Duration::from_millis(200)).await;
            }
            Ok(Answer::Unavailable(after_s)) => {
                outcome.unavailable += 1;
                outcome.ended = Some(format!("still 503 after {} s", stuck_after.as_secs()));
                pause(Duration::from_secs(after_s.max(1))).await;
            }
            Ok(Answer::Final(what)) => {
                outcome.ended = Some(what);
                return outcome;
            }
            Err(err) => {
                outcome.ended = Some(format!(
                    "no answer by {} s (last: {})",
                    stuck_after.as_secs(),
                    if err.is_timeout() {
                        "timed out".to_string()
                    } else {
                        err.without_url().to_string()
                    }
                ));
                pause(Duration::from_millis(100)).await;
            }
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
             {} ms later until a final answer or {} s: {} stuck, {} lost stream keys, {} \
             duplicates ({} answers 'in flight', {} answers 503)\n",
            h.bookings,
            RETRY_AFTER_HANG_UP.as_millis(),
            h.stuck_after_s,
            h.stuck,
            h.lost,
            h.duplicates,
            h.in_flight_answers,
            h.unavailable_answers
        ));
        for sample in &h.stuck_samples {
            out.push_str(&format!("  stuck: {sample}\n"));
        }
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

    #[test]
    fn answers_are_read_by_status_and_error_code() {
        let booked = br#"{"id":"r-1","setting":{"stream_key":"k"},"server_time":"x"}"#;
        let cases: [(u16, &[u8], Answer); 9] = [
            (201, booked, Answer::Booked("r-1".to_string())),
            (
                201,
                br#"{"id":"r-1"}"#,
                Answer::Final("HTTP 201 without an id and stream key".to_string()),
            ),
            (
                201,
                br#"{"id":"","setting":{"stream_key":"k"}}"#,
                Answer::Final("HTTP 201 without an id and stream key".to_string()),
            ),
            (
                409,
                br#"{"error":{"code":"idempotency_key_in_flight","message":"m"}}"#,
                Answer::InFlight,
            ),
            (
                409,
                br#"{"error":{"code":"conflict","message":"m"}}"#,
                Answer::Final("HTTP 409 conflict".to_string()),
            ),
            (
                503,
                br#"{"error":{"code":"unavailable","message":"m","retry_after_s":3}}"#,
                Answer::Unavailable(3),
            ),
            (503, b"", Answer::Unavailable(1)),
            (
                500,
                b"<html>oops</html>",
                Answer::Final("HTTP 500 (no error code)".to_string()),
            ),
            (
                422,
                br#"{"error":{"code":"invalid"}}"#,
                Answer::Final("HTTP 422 invalid".to_string()),
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                read_answer(status, body),
                want,
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn got(id: Option<&str>, ended: Option<&str>) -> RetryOutcome {
        RetryOutcome {
            id: id.map(str::to_string),
            ended: ended.map(str::to_string),
            ..Default::default()
        }
    }

    fn row(id: &str, window: &str) -> (String, String) {
        (id.to_string(), window.to_string())
    }

    #[test]
    fn every_key_answered_and_booked_once_counts_nothing() {
        let outcomes = [got(Some("a"), None), got(Some("b"), None)];
        let booked = [row("a", "s 10:00"), row("b", "s 11:00")];
        assert_eq!(tally(&outcomes, &booked), Tally::default());
    }

    #[test]
    fn a_booking_nobody_got_back_is_lost_and_its_key_stuck() {
        // The hung-up request booked "a"; its retry never got it back.
        let outcomes = [
            got(None, Some("still 'in flight' after 10 s")),
            got(Some("b"), None),
        ];
        let booked = [row("a", "s 10:00"), row("b", "s 11:00")];
        let want = Tally {
            stuck: 1,
            lost: 1,
            duplicates: 0,
        };
        assert_eq!(tally(&outcomes, &booked), want);
    }

    #[test]
    fn a_window_booked_twice_is_a_duplicate_and_the_unanswered_one_lost() {
        // The hung-up request booked "a1", its retry booked "a2" for the same key's window.
        let outcomes = [got(Some("a2"), None)];
        let booked = [row("a1", "s 10:00"), row("a2", "s 10:00")];
        let want = Tally {
            stuck: 0,
            lost: 1,
            duplicates: 1,
        };
        assert_eq!(tally(&outcomes, &booked), want);
    }

    #[test]
    fn a_key_refused_and_never_booked_is_stuck_but_nothing_is_lost() {
        let outcomes = [got(None, Some("HTTP 409 conflict"))];
        let want = Tally {
            stuck: 1,
            lost: 0,
            duplicates: 0,
        };
        assert_eq!(tally(&outcomes, &[]), want);
    }

    #[test]
    fn stuck_keys_are_grouped_by_how_they_ended_most_first() {
        let outcomes = [
            got(None, Some("HTTP 409 conflict")),
            got(Some("a"), None),
            got(None, Some("still 'in flight' after 10 s")),
            got(None, Some("still 'in flight' after 10 s")),
            got(None, None),
        ];
        assert_eq!(
            stuck_samples(&outcomes),
            [
                "2× still 'in flight' after 10 s",
                "1× HTTP 409 conflict",
                "1× no answer"
            ]
        );
    }

    #[test]
    fn a_reservation_list_reads_as_ids_and_starts_in_order() {
        let page = serde_json::json!({"reservations": [
            {"id": "r-2", "server_id": "s", "start": "2030-01-01T01:00:00.000Z", "status": "accepted"},
            {"id": "r-1", "server_id": "s", "start": "2030-01-01T00:00:00.000Z", "status": "accepted"},
        ]});
        assert_eq!(
            page_rows(&page).unwrap(),
            [
                ("r-2".to_string(), "2030-01-01T01:00:00.000Z".to_string()),
                ("r-1".to_string(), "2030-01-01T00:00:00.000Z".to_string()),
            ]
        );
        assert_eq!(
            page_rows(&serde_json::json!({"reservations": []})),
            Some(vec![])
        );
        assert_eq!(
            page_rows(&serde_json::json!({"reservations": [{"id": "r"}]})),
            None
        );
        assert_eq!(page_rows(&serde_json::json!({"error": {}})), None);
    }

    #[test]
    fn the_hand_written_request_states_its_length_and_key() {
        let body = r#"{"server_id":"s","start":"é"}"#;
        let request = raw_request("127.0.0.1:9", "tok", "key-1", body);
        let (head, sent) = request.split_once("\r\n\r\n").unwrap();
        assert_eq!(sent, body);
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "POST /v1/reservations HTTP/1.1");
        assert!(lines.contains(&"Host: 127.0.0.1:9"));
        assert!(lines.contains(&"Authorization: Bearer tok"));
        assert!(lines.contains(&"Idempotency-Key: key-1"));
        // Bytes, not characters: "é" is two.
        assert!(lines.contains(&format!("Content-Length: {}", body.chars().count() + 1).as_str()));
        // Every line ends CRLF, none with a bare LF.
        assert!(!head.replace("\r\n", "").contains('\n'));
    }
}
