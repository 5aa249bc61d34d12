//! The booking write path end to end: a client that hangs up, an api killed in the
//! middle of a busy minute, two api processes on one database, and a database written by the
//! code before group commit. Real Postgres, the built `slotcast server api`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::Connection;
use support::{dump_read_model, server_body, slotcast, token, ts, Api, TestDb};
use tokio::io::AsyncWriteExt;

/// How long a client keeps retrying a booking that is answered 503 `unavailable` (or not at
/// all): as long as a real client with a deadline would, far longer than a decision takes.
const RETRY_FOR: StdDuration = StdDuration::from_secs(30);

/// One booking as a client sends it: its Idempotency-Key and its exact body.
#[derive(Clone)]
struct Request {
    key: String,
    body: String,
}

impl Request {
    fn new(server: &str, start: DateTime<Utc>, minutes: i64) -> Self {
        let body = json!({"server_id": server, "start": ts(start), "end": ts(start + Duration::minutes(minutes))});
        Self {
            key: uuid::Uuid::new_v4().to_string(),
            body: body.to_string(),
        }
    }
}

/// Sends `request` once; `None` when no answer came (connection refused, reset, timed out).
async fn send(api: &Api, token: &str, request: &Request) -> Option<(u16, Value)> {
    let resp = api
        .http
        .post(api.url("/v1/reservations"))
        .bearer_auth(token)
        .header("Idempotency-Key", &request.key)
        .header("content-type", "application/json")
        .body(request.body.clone())
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// Sends `request` until it gets a final answer (anything but 503 or no answer), within
/// [`RETRY_FOR`]; honours `retry_after_s`.
async fn book_until_answered(api: &Api, token: &str, request: &Request) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    loop {
        let answer = send(api, token, request).await;
        let pause = match &answer {
            Some((503, body)) => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                StdDuration::from_secs(body["error"]["retry_after_s"].as_u64().unwrap_or(1))
            }
            None => StdDuration::from_millis(200),
            Some(done) => return done.clone(),
        };
        assert!(
            tokio::time::Instant::now() + pause < deadline,
            "no final answer within {RETRY_FOR:?}: last {answer:?}"
        );
        tokio::time::sleep(pause).await;
    }
}

/// Writes `request` on a fresh connection and hangs up at once, as a client that gave up (or
/// a proxy that cut it) would: the api reads the whole request, the client reads nothing.
async fn send_and_hang_up(api: &Api, token: &str, request: &Request) {
    let mut stream = write_raw(api, token, request).await;
    stream.flush().await.expect("flush");
    drop(stream);
}

/// Writes `request` as HTTP/1.1 on a connection of its own and hands the connection back
/// unread.
async fn write_raw(api: &Api, token: &str, request: &Request) -> tokio::net::TcpStream {
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let raw = format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        request.key,
        request.body.len(),
        request.body
    );
    stream.write_all(raw.as_bytes()).await.expect("write");
    stream
}

async fn register(api: &Api, operator: &str, id: &str, capacity: u32) {
    let (status, body) = api
        .post("/v1/servers", operator, server_body(id, capacity))
        .await;
    assert_eq!(status, 201, "register {id}: {body}");
}

/// Checks that every reservation in `ids` is whole: its event, its read-model row and schedule
/// row, its slot outbox rows; and that the read model holds nothing without its event.
async fn assert_whole(db: &TestDb, ids: &BTreeSet<String>) {
    let list: Vec<&String> = ids.iter().collect();
    let ids_json = serde_json::to_string(&list).unwrap();
    let count = |sql: String| async move { db.count(&sql).await };
    let n = ids.len() as i64;
    let within = format!("(SELECT jsonb_array_elements_text('{ids_json}'::jsonb))");
    assert_eq!(
        count(format!("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted' AND reservation_id IN {within}")).await,
        n,
        "every answered booking has its event"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM rm.reservations WHERE status = 'accepted' AND id IN {within}"
        ))
        .await,
        n,
        "… its read-model row"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM rm.schedule WHERE reservation_id IN {within}"
        ))
        .await,
        n,
        "… its place in the schedule"
    );
    assert_eq!(
        count(format!("SELECT count(DISTINCT reservation_id) FROM slot_boundaries WHERE kind = 'closed' AND reservation_id IN {within}")).await,
        n,
        "… and its slot boundaries in the outbox"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM rm.reservations r WHERE NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.reservation_id = r.id)"
        )
        .await,
        0,
        "nothing is in the read model without its event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_gets_its_booking_on_retry_and_nothing_is_booked_twice() {
    const BOOKINGS: usize = 100;
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    for s in ["s1", "s2", "s3", "s4"] {
        register(&api, &operator, s, 1).await;
    }
    let base = Utc::now() + Duration::hours(1);
    let requests: Vec<Request> = (0..BOOKINGS)
        .map(|i| {
            Request::new(
                ["s1", "s2", "s3", "s4"][i % 4],
                base + Duration::hours(i as i64),
                30,
            )
        })
        .collect();
    // All written at once, each on a connection closed right after; whether the api got to
    // read each request before its connection closed is up to the timing, so a retry either
    // finds the booking it made or makes it now.
    let hung_up: Vec<_> = requests
        .iter()
        .map(|r| send_and_hang_up(&api, &alice, r))
        .collect();
    futures_util::future::join_all(hung_up).await;
    // Each retried without waiting: never 'in flight', always the booking with its key.
    let retries: Vec<_> = requests
        .iter()
        .map(|r| book_until_answered(&api, &alice, r))
        .collect();
    let answers = futures_util::future::join_all(retries).await;
    let mut ids = BTreeSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 201, "every retry gets the booking: {body}");
        assert_eq!(
            body["setting"]["stream_key"].as_str().map(str::len),
            Some(32),
            "{body}"
        );
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), BOOKINGS, "one reservation per key");
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted'")
            .await,
        BOOKINGS as i64,
        "nothing booked twice"
    );
    assert_whole(&db, &ids).await;
    // A later retry replays the same answer: the stream key is never lost.
    let (status, again) = send(&api, &alice, &requests[7]).await.expect("answer");
    assert_eq!(status, 201);
    assert_eq!(again["setting"], answers[7].1["setting"]);
}

/// The booking's commit is held up by a lock the test takes, so the client can hang up while
/// its booking is certainly being decided, and retry while it still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_whose_client_hung_up_mid_decision_commits_and_its_retry_waits_for_it() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    register(&api, &operator, "s1", 1).await;
    let request = Request::new("s1", Utc::now() + Duration::hours(1), 30);
    let mut blocker = db.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE events IN SHARE MODE")
        .execute(&mut blocker)
        .await
        .expect("hold the events table");
    // The request, on a connection kept open until the api is writing its events.
    let first = write_raw(&api, &alice, &request).await;
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%INSERT INTO events%' \
                   AND datname = current_database()";
    while db.count(waiting).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the booking never reached its commit"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    // The client gives up and retries at once, while the first is still being decided (the
    // lock is let go a moment later, the proof is in what the retry gets).
    drop(first);
    let let_go = async {
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .expect("let go");
    };
    let (answer, ()) = tokio::join!(send(&api, &alice, &request), let_go);
    let (status, answer) = answer.expect("an answer");
    assert_eq!(
        status, 201,
        "the retry waits for the first decision: {answer}"
    );
    assert_eq!(
        answer["setting"]["stream_key"].as_str().map(str::len),
        Some(32)
    );
    let booked: Value = db
        .json(
            "SELECT json_agg(reservation_id) FROM events WHERE event_type = 'ReservationAccepted'",
        )
        .await;
    assert_eq!(
        booked,
        json!([answer["id"]]),
        "one booking, the one the retry was given"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_32_clients_book_loses_no_answered_booking() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let servers: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    for s in &servers {
        register(&api, &operator, s, 1).await;
    }
    let base = Utc::now() + Duration::hours(1);
    // 32 clients, each with its own run of windows; every request is kept with its answer.
    let requests: Vec<Vec<Request>> = (0..32)
        .map(|c| {
            (0..400)
                .map(|n| {
                    let slot = c * 400 + n;
                    let server = &servers[slot as usize % servers.len()];
                    Request::new(server, base + Duration::minutes(10 * slot), 10)
                })
                .collect()
        })
        .collect();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(
        BTreeMap::<String, (Request, Value)>::new(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = requests
        .iter()
        .cloned()
        .map(|mine| {
            let (http, url, alice) = (api.http.clone(), api.url("/v1/reservations"), alice.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                for request in mine {
                    if stop.is_cancelled() {
                        break;
                    }
                    let sent = http
                        .post(&url)
                        .bearer_auth(&alice)
                        .header("Idempotency-Key", &request.key)
                        .header("content-type", "application/json")
                        .body(request.body.clone())
                        .send()
                        .await;
                    let Ok(resp) = sent else { break };
                    if resp.status().as_u16() != 201 {
                        break;
                    }
                    let Ok(body) = resp.json::<Value>().await else {
                        break;
                    };
                    answered
                        .lock()
                        .unwrap()
                        .insert(request.key.clone(), (request, body));
                }
            })
        })
        .collect();
    // Kill it mid-stream, once a good number of bookings have been answered.
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    while answered.lock().unwrap().len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clients book too slowly"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    api.kill();
    stop.cancel();
    futures_util::future::join_all(clients).await;
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    eprintln!("{} bookings answered before the kill", answered.len());

    let api = Api::start(&db, &[]);
    let ids: BTreeSet<String> = answered
        .values()
        .map(|(_, body)| body["id"].as_str().unwrap().to_string())
        .collect();
    assert_whole(&db, &ids).await;
    // A retry of an answered request gets the same answer.
    for (request, body) in answered.values().step_by(37) {
        let (status, again) = book_until_answered(&api, &alice, request).await;
        assert_eq!(status, 201);
        assert_eq!(again["id"], body["id"]);
        assert_eq!(
            again["setting"]["stream_key"],
            body["setting"]["stream_key"]
        );
    }
    // The requests in flight at the kill: a retry gets their booking if it committed, or a
    // fresh decision; either way one reservation per key.
    let mut keys_booked = answered.len();
    for mine in &requests {
        let unanswered = mine.iter().find(|r| !answered.contains_key(&r.key));
        if let Some(request) = unanswered {
            let (status, body) = book_until_answered(&api, &alice, request).await;
            assert_eq!(status, 201, "{body}");
            keys_booked += 1;
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted'")
            .await,
        keys_booked as i64,
        "one reservation per key that was ever answered 201"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_on_one_database_accept_exactly_capacity() {
    for capacity in [1u32, 3] {
        let db = TestDb::new().await;
        let operator = token(&db, "operator", "ops");
        let alice = token(&db, "distributor", "alice");
        let apis = [Api::start(&db, &[]), Api::start(&db, &[])];
        register(&apis[0], &operator, "shared", capacity).await;
        let base = Utc::now() + Duration::hours(2);
        let requests: Vec<_> = (0..200)
            .map(|i| {
                let api = &apis[i % 2];
                let request = Request::new("shared", base + Duration::seconds(i as i64), 30);
                let alice = alice.clone();
                async move { book_until_answered(api, &alice, &request).await }
            })
            .collect();
        let answers = futures_util::future::join_all(requests).await;
        let accepted = answers.iter().filter(|(s, _)| *s == 201).count();
        for (status, body) in &answers {
            assert!(
                *status == 201 || (*status == 409 && body["reason"] == "capacity_exceeded"),
                "{status}: {body}"
            );
        }
        assert_eq!(
            accepted, capacity as usize,
            "capacity {capacity}: exactly that many accepted"
        );
        assert_eq!(
            db.count("SELECT count(*) FROM rm.schedule WHERE server_id = 'shared'")
                .await,
            capacity as i64
        );
        assert_eq!(
            db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted'")
                .await,
            capacity as i64
        );
        assert_eq!(
            db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationRejected'")
                .await,
            200 - capacity as i64
        );
    }
}

/// The database refuses every event of one server (as it would refuse a write it cannot take),
/// while bookings on another server arrive in the same moment, on the same lane, so that the
/// two share groups: the refused ones are answered 503 with when to retry, nothing of them is
/// written, and the others are booked as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_database_refuses_fails_only_its_own_bookings() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[("SLOTCAST_BOOKING_LANES", "1")]);
    register(&api, &operator, "fine", 100).await;
    register(&api, &operator, "broken", 100).await;
    let mut conn = db.connect().await;
    sqlx::raw_sql(
        "ALTER TABLE events ADD CONSTRAINT refuse_broken \
         CHECK (aggregate_id <> 'broken' OR sequence < 2) NOT VALID",
    )
    .execute(&mut conn)
    .await
    .expect("refuse the broken server's events");
    let base = Utc::now() + Duration::hours(1);
    let bookings: Vec<_> = (0..20)
        .map(|i| {
            let server = if i % 2 == 0 { "fine" } else { "broken" };
            let body = json!({"server_id": server, "start": ts(base + Duration::hours(i)), "end": ts(base + Duration::hours(i) + Duration::minutes(30))});
            let request = api.http.post(api.url("/v1/reservations")).bearer_auth(&alice).json(&body);
            async move {
                let resp = request.send().await.expect("answer");
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let status = resp.status().as_u16();
                (server, status, retry_after, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        })
        .collect();
    for (server, status, retry_after, body) in futures_util::future::join_all(bookings).await {
        if server == "fine" {
            assert_eq!(status, 201, "{body}");
        } else {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable");
            let seconds = body["error"]["retry_after_s"]
                .as_u64()
                .expect("retry_after_s");
            assert!(seconds >= 1);
            assert_eq!(retry_after, Some(seconds), "the header says the same");
        }
    }
    let count = |sql: &'static str| db.count(sql);
    assert_eq!(count("SELECT count(*) FROM events WHERE aggregate_id = 'fine' AND event_type = 'ReservationAccepted'").await, 10);
    assert_eq!(
        count("SELECT count(*) FROM rm.reservations WHERE server_id = 'fine'").await,
        10
    );
    assert_eq!(
        count("SELECT count(*) FROM events WHERE aggregate_id = 'broken'").await,
        1,
        "its registration only"
    );
    assert_eq!(
        count("SELECT count(*) FROM rm.reservations WHERE server_id = 'broken'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM slot_boundaries WHERE server_id = 'broken'").await,
        0
    );
}

/// The reservations the fixture holds, with their status.
const FIXTURE: [(&str, &str); 5] = [
    ("01a2448d-575f-768a-ba67-59d089864866", "accepted"),
    ("01a2448d-5769-752d-aeb6-16a151e70854", "accepted"),
    ("01a2448d-5772-7762-8055-b09d573a9c6f", "rejected"),
    ("01a2448d-5779-721a-9345-3d0ce6adf16f", "cancelled"),
    ("01a2448d-5781-71cc-9193-5a6b3d178145", "accepted"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_before_group_commit_loads_projects_and_rebuilds() {
    let db = TestDb::new().await;
    db.load_before_issue17().await;
    let mut conn = db.connect().await;
    // Its one stored answer would have expired by its age (24 h): as if written just now.
    sqlx::query("UPDATE public.idempotency SET created_at = now()")
        .execute(&mut conn)
        .await
        .expect("refresh the stored answer");
    conn.close().await.expect("close");

    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    assert_eq!(
        db.count("SELECT count(*) FROM idempotency WHERE key_hash = 'stuck-claim-from-old-code'")
            .await,
        0,
        "migration 0008 removed the claim the old code left behind"
    );
    let (status, list) = api.get("/v1/reservations", &operator).await;
    assert_eq!(status, 200);
    let listed: BTreeMap<String, String> = list["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (id, status) in FIXTURE {
        assert_eq!(listed.get(id).map(String::as_str), Some(status), "{id}");
    }
    let (_, moved) = api
        .get(&format!("/v1/reservations/{}", FIXTURE[4].0), &operator)
        .await;
    assert_eq!(moved["start"], "2031-03-04T10:00:00.000Z");

    // The old key's retry, byte for byte as first sent: the old answer, stream key included.
    let request = Request {
        key: "fixture-key-1".into(),
        body: r#"{"server_id":"legacy-1","start":"2031-03-01T10:00:00Z","end":"2031-03-01T11:00:00Z","title":"kept"}"#.into(),
    };
    let (status, replay) = send(&api, &alice, &request).await.expect("answer");
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["id"], FIXTURE[0].0);
    assert_eq!(
        replay["setting"]["stream_key"],
        "b726fa4a766baa8f35c377793c7d37aa"
    );

    // The aggregate loaded from the old events knows its slots (capacity 2, both taken).
    let book =
        |start: &str, end: &str| json!({"server_id": "legacy-1", "start": start, "end": end});
    let (status, refused) = api
        .post(
            "/v1/reservations",
            &alice,
            book("2031-03-01T10:40:00Z", "2031-03-01T10:50:00Z"),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["conflicts"].as_array().map(Vec::len), Some(2));
    let (status, fresh) = api
        .post(
            "/v1/reservations",
            &alice,
            book("2031-03-05T10:00:00Z", "2031-03-05T11:00:00Z"),
        )
        .await;
    assert_eq!(status, 201, "{fresh}");
    let (status, cancelled) = api
        .post(
            &format!("/v1/reservations/{}/cancel", FIXTURE[1].0),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    // New events follow the old ones in each stream, and a rebuild from all of them gives the
    // read model the api keeps.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (SELECT aggregate_id, sequence, row_number() OVER \
                  (PARTITION BY aggregate_id ORDER BY sequence) AS n FROM events) e \
                  WHERE sequence <> n"
        )
        .await,
        0,
        "no gap in any stream"
    );
    let before = dump_read_model(&db).await;
    let (code, out, err) = slotcast(&db, &["admin", "rebuild"]);
    assert_eq!(code, 0, "rebuild: {out} {err}");
    assert_eq!(dump_read_model(&db).await, before);
}
