//! slotcast on a Postgres of the test's own, stopped and started again under booking load:
//! once as an operator restarts it (`pg_ctl stop -m fast`), once as a crash (`-m immediate`,
//! so the start replays the WAL). Every booking answered 201 survives and none is made twice;
//! while Postgres is down the api answers 503 `unavailable` with `Retry-After` (never a hang,
//! never a 500, never a crash), and it books again within 5 s of Postgres's return without
//! being restarted. Slot windows that open and close while it is down are published by the
//! scheduler once it is back, each once, and the api records each in the history once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use support::nats::{jetstream, read_stream, shared_url};
use support::postgres::{PrivatePostgres, Stop};
use support::streaming::{book, register};
use support::{token, ts, Api, Scheduler, TestDb};

/// How long Postgres stays down each time.
const DOWN: StdDuration = StdDuration::from_secs(3);
/// Booking clients running throughout.
const CLIENTS: usize = 6;
/// The servers the load books on (slot windows go to `s0`, which the load leaves alone).
const LOAD_SERVERS: [&str; 3] = ["s1", "s2", "s3"];

/// One answer a booking client got.
#[derive(Clone, Debug)]
struct Answer {
    key: String,
    sent: DateTime<Utc>,
    took_ms: i64,
    status: u16,
    code: String,
    retry_after: Option<String>,
    id: Option<String>,
}

/// A client booking one far-future slot after another, each under an Idempotency-Key of its
/// own; on a 503 it waits `Retry-After` and sends the same key again, as the terminal does.
async fn client(
    api_base: String,
    token: String,
    n: usize,
    next_slot: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(StdDuration::from_secs(30))
        .build()
        .expect("http client");
    let far = Utc::now() + Duration::days(30);
    while !stop.load(Ordering::Relaxed) {
        let slot = next_slot.fetch_add(1, Ordering::Relaxed) as i64;
        let start = far + Duration::minutes(10 * slot);
        let body = json!({
            "server_id": LOAD_SERVERS[n % LOAD_SERVERS.len()],
            "start": ts(start),
            "end": ts(start + Duration::minutes(5)),
        });
        let key = uuid::Uuid::new_v4().to_string();
        // The same key until it is answered other than 503 (bounded: the test stops it).
        for _ in 0..60 {
            let sent = Utc::now();
            let result = http
                .post(format!("{api_base}/v1/reservations"))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            let took_ms = (Utc::now() - sent).num_milliseconds();
            let (status, retry_after, text) = match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (status, retry_after, resp.text().await.unwrap_or_default())
                }
                // No answer at all (a timeout or a reset): recorded as status 0.
                Err(err) => (0, None, err.to_string()),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            answers.lock().expect("answers").push(Answer {
                key: key.clone(),
                sent,
                took_ms,
                status,
                code: v["error"]["code"].as_str().unwrap_or_default().to_string(),
                retry_after: retry_after.clone(),
                id: v["id"].as_str().map(str::to_string),
            });
            if status != 503 || stop.load(Ordering::Relaxed) {
                break;
            }
            let wait: u64 = retry_after.and_then(|s| s.parse().ok()).unwrap_or(1);
            tokio::time::sleep(StdDuration::from_secs(wait.min(5))).await;
        }
    }
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

/// `GET /readyz` of the api: its status.
async fn ready(api: &Api) -> u16 {
    api.http
        .get(api.url("/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Books on `s0` every 100 ms until one is answered 201; returns how long that took.
async fn first_booking(api: &Api, alice: &str, limit: StdDuration) -> StdDuration {
    let began = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let start = Utc::now() + Duration::days(60) + Duration::minutes(10 * tries);
        let body =
            json!({"server_id": "s0", "start": ts(start), "end": ts(start + Duration::minutes(5))});
        let (status, answer) = api.post("/v1/reservations", alice, body).await;
        if status == 201 {
            return began.elapsed();
        }
        assert_eq!(status, 503, "while Postgres comes back: {answer}");
        assert!(
            began.elapsed() < limit,
            "the api did not book again within {limit:?} of Postgres's return: {answer}"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

/// One outage: what the test saw of it.
struct Outage {
    how: Stop,
    down: DateTime<Utc>,
    back: DateTime<Utc>,
    refused_ms_max: i64,
    refused: usize,
    ready_while_down: u16,
    rebooked_after: StdDuration,
}

/// Stops Postgres `how`, checks what the api answers while it is down, starts it again and
/// waits for the api to book.
async fn outage(pg: &Arc<PrivatePostgres>, api: &Api, alice: &str, how: Stop) -> Outage {
    let stopping = pg.clone();
    tokio::task::spawn_blocking(move || stopping.stop(how))
        .await
        .expect("stop Postgres");
    let down = Utc::now();
    // While it is down: a read and a booking, each answered 503 with Retry-After.
    let mut refused = 0;
    let mut refused_ms_max = 0;
    let until = Instant::now() + DOWN;
    while Instant::now() < until {
        for (method, path, body) in [
            ("GET", "/v1/servers/s0/schedule", None),
            (
                "POST",
                "/v1/reservations",
                Some(json!({"server_id": "s0",
                    "start": ts(Utc::now() + Duration::days(90)),
                    "end": ts(Utc::now() + Duration::days(90) + Duration::minutes(5))})),
            ),
        ] {
            let sent = Instant::now();
            let mut req = api
                .http
                .request(method.parse().expect("method"), api.url(path))
                .bearer_auth(alice);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.expect("an answer while Postgres is down");
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").cloned();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status, 503,
                "{method} {path} while Postgres is down: {body}"
            );
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            assert!(retry_after.is_some(), "503 without Retry-After: {body}");
            refused += 1;
            refused_ms_max = refused_ms_max.max(sent.elapsed().as_millis() as i64);
        }
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    let ready_while_down = ready(api).await;
    let starting = pg.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start Postgres");
    let back = Utc::now();
    let rebooked_after = first_booking(api, alice, StdDuration::from_secs(5)).await;
    Outage {
        how,
        down,
        back,
        refused_ms_max,
        refused,
        ready_while_down,
        rebooked_after,
    }
}

/// The api's history of a reservation (its events).
async fn history(api: &Api, token: &str, id: &str) -> Vec<Value> {
    let (status, h) = api
        .get(&format!("/v1/reservations/{id}/history"), token)
        .await;
    assert_eq!(status, 200, "{h}");
    h["events"].as_array().cloned().unwrap_or_default()
}

fn count(events: &[Value], ty: &str) -> usize {
    events.iter().filter(|e| e["type"] == ty).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_postgres_loses_no_booking_and_the_api_serves_again() {
    let started = Instant::now();
    let pg = Arc::new(PrivatePostgres::start());
    let db = TestDb::on(&pg.url()).await;
    let api = Api::start(&db, &[]);
    let scheduler = Scheduler::start(&db, &[]);
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    for server in ["s0"].iter().chain(LOAD_SERVERS.iter()) {
        register(&api, &operator, server, &["carrier-a"]).await;
    }

    // Slot windows on s0 around each outage: one across its start, one inside it, one
    // across its end. Whole milliseconds, as the API keeps them.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let outages = [
        (Stop::Fast, now + Duration::seconds(4)),
        (Stop::Immediate, now + Duration::seconds(14)),
    ];
    let mut windows: Vec<(String, String)> = Vec::new(); // (label, reservation id)
    for (i, (_, at)) in outages.iter().enumerate() {
        let ms = |ms: i64| *at + Duration::milliseconds(ms);
        for (label, start, end) in [
            ("across-start", ms(-1500), ms(1000)),
            ("inside", ms(500), ms(2000)),
            ("across-end", ms(1500), ms(7000)),
        ] {
            let (id, _key) = book(&api, &alice, "s0", start, end).await;
            windows.push((format!("{label}-{i}"), id));
        }
    }

    // The load, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let next_slot = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                api.base.clone(),
                alice.clone(),
                n,
                next_slot.clone(),
                stop.clone(),
                answers.clone(),
            ))
        })
        .collect();

    let mut seen = Vec::new();
    for (how, at) in outages {
        sleep_until(at).await;
        seen.push(outage(&pg, &api, &alice, how).await);
    }
    // A little more load on the Postgres that came back, then the clients stop.
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(StdDuration::from_secs(60), c)
            .await
            .expect("the clients stop")
            .expect("a client");
    }
    let answers = answers.lock().expect("answers").clone();

    // Only 201 and 503 `unavailable` with Retry-After; every request answered.
    for a in &answers {
        match a.status {
            201 => assert!(a.id.is_some(), "201 without an id: {a:?}"),
            503 => {
                assert_eq!(a.code, "unavailable", "{a:?}");
                assert!(a.retry_after.is_some(), "503 without Retry-After: {a:?}");
            }
            _ => panic!("a booking answered neither 201 nor 503: {a:?}"),
        }
    }

    // Every 201 survives: in the history and in the read model, one reservation per key.
    let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.status == 201) {
        by_key
            .entry(&a.key)
            .or_default()
            .insert(a.id.as_deref().unwrap_or_default());
    }
    for (key, ids) in &by_key {
        assert_eq!(ids.len(), 1, "key {key} answered with several ids: {ids:?}");
    }
    let booked: BTreeSet<&str> = by_key.values().flatten().copied().collect();
    for id in &booked {
        let (status, r) = api.get(&format!("/v1/reservations/{id}"), &alice).await;
        assert_eq!(status, 200, "{id}, answered 201, is gone: {r}");
    }
    let stored = db
        .count(
            "SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted' \
             AND aggregate_id IN ('s1', 's2', 's3')",
        )
        .await;
    let keys = answers
        .iter()
        .map(|a| a.key.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    assert!(
        stored as usize >= booked.len() && stored as usize <= keys,
        "{stored} bookings stored for {} answered 201 and {keys} keys sent",
        booked.len()
    );

    // The scheduler carried on: every window's boundaries published once, after the
    // outages where they fell in one, and the api recorded each once.
    let js = jetstream(&shared_url()).await;
    let deadline = Instant::now() + StdDuration::from_secs(40);
    let mut histories = BTreeMap::new();
    for (label, id) in &windows {
        loop {
            let events = history(&api, &alice, id).await;
            if count(&events, "WindowClosed") >= 1 {
                histories.insert(label.clone(), events);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label} ({id}): never closed in the history: {events:?}"
            );
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    }
    let messages = read_stream(&js, &db.slots_stream()).await;
    let ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.message_id.as_deref())
        .filter(|id| !id.ends_with(":scheduled:1"))
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a boundary published twice: {ids:?}"
    );
    for (label, id) in &windows {
        for kind in ["opened", "closed"] {
            assert!(
                unique.contains(format!("{id}:{kind}:1").as_str()),
                "{label}: {kind} never published"
            );
        }
        let events = &histories[label];
        assert_eq!(count(events, "WindowOpened"), 1, "{label}: {events:?}");
        assert_eq!(count(events, "WindowClosed"), 1, "{label}: {events:?}");
    }
    let (status, body) = scheduler.readyz().await;
    assert_eq!(status, 200, "the scheduler is ready again: {body}");
    assert_eq!(ready(&api).await, 200, "the api is ready again");

    // What was seen, for the log.
    let lateness: Vec<String> = messages
        .iter()
        .filter(|m| m.payload["kind"] == "opened" || m.payload["kind"] == "closed")
        .map(|m| format!("{:.0}", m.payload["late_ms"].as_f64().unwrap_or(f64::NAN)))
        .collect();
    for o in &seen {
        let during: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.sent >= o.down && a.sent < o.back)
            .collect();
        eprintln!(
            "{:?} stop: down {} ms; {} probes answered 503 (slowest {} ms), readyz {}; the \
             load sent {} requests meanwhile, all 503 (slowest {} ms); booked again {} ms after \
             Postgres was back",
            o.how,
            (o.back - o.down).num_milliseconds(),
            o.refused,
            o.refused_ms_max,
            o.ready_while_down,
            during.len(),
            during.iter().map(|a| a.took_ms).max().unwrap_or(0),
            o.rebooked_after.as_millis(),
        );
        assert_eq!(o.ready_while_down, 503, "readyz while Postgres is down");
        assert!(during.iter().all(|a| a.status == 503), "{during:?}");
    }
    eprintln!(
        "{} bookings answered 201 ({} keys sent, {} stored), {} answers 503; slot boundaries \
         published late by (ms): {}; the test took {:.1} s",
        booked.len(),
        keys,
        stored,
        answers.iter().filter(|a| a.status == 503).count(),
        lateness.join(" "),
        started.elapsed().as_secs_f64()
    );
    drop(scheduler);
    drop(api);
    drop(db);
}
