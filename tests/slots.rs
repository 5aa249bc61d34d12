//! The slot clock against real NATS JetStream and real Postgres: every boundary lands in the
//! stream exactly once and in order, whatever happens to the schedulers, to NATS, or to the
//! slot; and what the streamer reports comes back into the reservation's history once, and
//! within seconds when the api replica holding it dies.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::nats::{self, read_stream, wait_for_stream, NatsServer, Stored};
use support::{time, token, ts, Api, Scheduler, TestDb};

/// A server whose windows are exactly the booked slots and which takes bookings at once.
fn tight_server(id: &str, capacity: u32) -> Value {
    json!({
        "id": id, "name": id, "capacity": capacity,
        "min_lead_s": 0, "preroll_s": 0, "grace_s": 0,
        "carriers": [{"name": "carrier-a", "ingest_url": "rtsp://127.0.0.2:8554"}]
    })
}

struct Tenant {
    operator: String,
    alice: String,
}

async fn tenant(db: &TestDb) -> Tenant {
    Tenant {
        operator: token(db, "operator", "ops"),
        alice: token(db, "distributor", "alice"),
    }
}

async fn register(api: &Api, t: &Tenant, id: &str, capacity: u32) {
    let (status, body) = api
        .post("/v1/servers", &t.operator, tight_server(id, capacity))
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn book(
    api: &Api,
    t: &Tenant,
    server: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    book_titled(api, t, server, start, end, None).await
}

/// [`book`] with the reservation's title.
async fn book_titled(
    api: &Api,
    t: &Tenant,
    server: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    title: Option<&str>,
) -> String {
    let mut body = json!({"server_id": server, "start": ts(start), "end": ts(end)});
    if let Some(title) = title {
        body["title"] = json!(title);
    }
    let (status, booked) = api.post("/v1/reservations", &t.alice, body).await;
    assert_eq!(status, 201, "{booked}");
    booked["id"].as_str().expect("id").to_string()
}

fn ids(messages: &[Stored]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.message_id.clone().expect("every slot message has an id"))
        .collect()
}

/// Each of `reservations` has exactly `opened:1` then `closed:1` in the stream, after at most
/// one `scheduled:1`, and nothing else is there; every message went out at or after its due
/// time.
fn assert_each_boundary_once_in_order(messages: &[Stored], reservations: &[String]) {
    let got = ids(messages);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicated message ids in {got:?}");
    let expected: BTreeSet<String> = reservations
        .iter()
        .flat_map(|r| [format!("{r}:opened:1"), format!("{r}:closed:1")])
        .collect();
    let got_set: BTreeSet<String> = got
        .iter()
        .filter(|id| !id.ends_with(":scheduled:1"))
        .cloned()
        .collect();
    let missing: Vec<_> = expected.difference(&got_set).collect();
    let extra: Vec<_> = got_set.difference(&expected).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(extra.is_empty(), "unexpected {extra:?}");
    let mut opened_at: BTreeMap<&str, u64> = BTreeMap::new();
    for m in messages {
        let p = &m.payload;
        let r = p["reservation_id"].as_str().expect("reservation_id");
        match p["kind"].as_str() {
            Some("scheduled") => assert!(
                !opened_at.contains_key(r) && reservations.iter().any(|x| x == r),
                "{r}: scheduled after opened, or for a reservation not booked here"
            ),
            Some("opened") => {
                opened_at.insert(r, m.sequence);
            }
            Some("closed") => assert!(
                opened_at.contains_key(r),
                "{r}: closed before opened (stream sequence {})",
                m.sequence
            ),
            other => panic!("unexpected kind {other:?}"),
        }
        assert!(
            time(&p["published_at"]) >= time(&p["due_at"]),
            "{} went out early: {p}",
            m.sequence
        );
        assert!(p["late_ms"].as_f64().expect("late_ms") >= 0.0);
        assert_eq!(p["schema"], 1);
        assert_eq!(p["ingest"]["mode"], "push");
        assert_eq!(p["stream_key_hash"].as_str().map(str::len), Some(64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_replicas_publish_200_slots_exactly_once_in_order() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    let api = Api::start(&db, &[]);
    let replicas = [Scheduler::start(&db, &[]), Scheduler::start(&db, &[])];
    let servers = ["s1", "s2", "s3", "s4"];
    for s in servers {
        register(&api, &t, s, 50).await;
    }
    let base = Utc::now() + Duration::seconds(5);
    let mut reservations = Vec::new();
    for i in 0..200i64 {
        let start = base + Duration::milliseconds(i * 25);
        let end = start + Duration::milliseconds(1000 + (i % 5) * 200);
        reservations.push(book(&api, &t, servers[i as usize % 4], start, end).await);
    }
    let js = nats::jetstream(&nats::shared_url()).await;
    let stream = db.slots_stream();
    wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(60),
        "400 boundaries",
        |m| boundaries(m) >= 400,
    )
    .await;
    // Give a late duplicate every chance to show up.
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let messages = read_stream(&js, &stream).await;
    assert_each_boundary_once_in_order(&messages, &reservations);
    assert_eq!(
        db.count("SELECT count(*) FROM slot_boundaries WHERE published_at IS NULL")
            .await,
        0
    );
    let by_replica = db
        .json("SELECT json_object_agg(published_by, n) FROM (SELECT published_by, count(*) n FROM slot_boundaries GROUP BY 1) x")
        .await;
    eprintln!("boundaries published per replica: {by_replica}");
    drop(replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scheduler_publishes_what_came_due_when_it_is_back() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    let api = Api::start(&db, &[]);
    register(&api, &t, "s1", 30).await;
    let first = Scheduler::start(&db, &[]);
    let base = Utc::now() + Duration::seconds(3);
    let mut reservations = Vec::new();
    for i in 0..30i64 {
        let start = base + Duration::milliseconds(i * 100);
        reservations.push(book(&api, &t, "s1", start, start + Duration::milliseconds(500)).await);
    }
    let last_close = base + Duration::milliseconds(29 * 100 + 500);
    let js = nats::jetstream(&nats::shared_url()).await;
    let stream = db.slots_stream();
    wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(30),
        "the first boundaries",
        |m| boundaries(m) >= 4,
    )
    .await;
    first.kill();
    let killed_at = Utc::now();
    // Stay down until every window has wholly passed.
    let down = (last_close - Utc::now()).to_std().unwrap_or_default() + StdDuration::from_secs(1);
    tokio::time::sleep(down).await;
    let back_at = Utc::now();
    let _second = Scheduler::start(&db, &[]);
    wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(30),
        "all 60 boundaries",
        |m| boundaries(m) >= 60,
    )
    .await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let messages = read_stream(&js, &stream).await;
    assert!(boundaries(&messages) >= 60);
    assert_each_boundary_once_in_order(&messages, &reservations);
    let mut late = 0;
    for m in &messages {
        let p = &m.payload;
        let due = time(&p["due_at"]);
        if due > killed_at + Duration::milliseconds(200) && due < back_at {
            // Came due while no scheduler ran: it says how late it is.
            let late_ms = p["late_ms"].as_f64().unwrap();
            let expected = (time(&p["published_at"]) - due).num_milliseconds() as f64;
            assert!(late_ms >= 500.0, "{p}");
            assert!((late_ms - expected).abs() < 2.0, "{p}");
            late += 1;
        }
    }
    assert!(
        late >= 20,
        "only {late} boundaries came due during the outage"
    );
}

/// Window boundaries (`opened`, `closed`) among `messages`.
fn boundaries(messages: &[Stored]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m.payload["kind"].as_str(), Some("opened" | "closed")))
        .count()
}

/// `POST /v1/reservations/{id}/{what}` as alice, which must succeed.
async fn act(api: &Api, t: &Tenant, id: &str, what: &str, body: Value) {
    let (status, answer) = api
        .post(&format!("/v1/reservations/{id}/{what}"), &t.alice, body)
        .await;
    assert_eq!(status, 200, "{what} {id}: {answer}");
}

/// The stream's messages for one reservation, as `kind:revision`, without the `scheduled:1` of
/// the booking: whether it went out before a quick change dropped it is a race.
fn story(messages: &[Stored], reservation: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.payload["reservation_id"] == reservation)
        .filter(|m| !(m.payload["kind"] == "scheduled" && m.payload["revision"] == 1))
        .map(|m| {
            format!(
                "{}:{}",
                m.payload["kind"].as_str().unwrap(),
                m.payload["revision"]
            )
        })
        .collect()
}

/// The payloads of one reservation's messages of one kind.
fn by_kind(messages: &[Stored], reservation: &str, kind: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.payload["reservation_id"] == reservation && m.payload["kind"] == kind)
        .map(|m| m.payload.clone())
        .collect()
}

async fn wait_opened(js: &async_nats::jetstream::Context, stream: &str, id: &str) {
    let want = format!("{id}:opened:1");
    wait_for_stream(js, stream, StdDuration::from_secs(20), "opened", |m| {
        m.iter()
            .any(|m| m.message_id.as_deref() == Some(want.as_str()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_and_cancel_before_and_inside_the_window_tell_the_right_story() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    // The api with the scheduler inside: `slotcast server all`.
    let api = Api::start_role(&db, "all", &[]);
    register(&api, &t, "s1", 10).await;
    let js = nats::jetstream(&nats::shared_url()).await;
    let stream = db.slots_stream();
    // Whole milliseconds, as the API keeps them.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let s = |secs: i64| now + Duration::seconds(secs);
    let moved_early = book(&api, &t, "s1", s(30), s(90)).await;
    let cancelled_early = book(&api, &t, "s1", s(30), s(90)).await;
    let shortened = book(&api, &t, "s1", s(2), s(60)).await;
    let cancelled_live = book(&api, &t, "s1", s(2), s(60)).await;
    // Two with a title, which every message of theirs carries (a streamer shows it).
    const TITLE: &str = "Evening show — ライブ";
    let rotated = book_titled(&api, &t, "s1", s(2), s(60), Some(TITLE)).await;
    let moved_later = book_titled(&api, &t, "s1", s(2), s(60), Some(TITLE)).await;

    // Before the window: `scheduled` only, and nothing for the old window afterwards.
    let window = |from: i64, to: i64| json!({"start": ts(s(from)), "end": ts(s(to))});
    act(&api, &t, &moved_early, "reschedule", window(4, 6)).await;
    act(&api, &t, &cancelled_early, "cancel", json!({})).await;

    // Inside the window.
    for id in [&shortened, &cancelled_live, &rotated, &moved_later] {
        wait_opened(&js, &stream, id).await;
    }
    act(&api, &t, &shortened, "reschedule", window(2, 6)).await;
    act(&api, &t, &cancelled_live, "cancel", json!({})).await;
    act(&api, &t, &rotated, "rotate-key", json!({})).await;
    act(&api, &t, &moved_later, "reschedule", window(8, 10)).await;

    let wait_for = [
        format!("{moved_early}:closed:2"),
        format!("{shortened}:closed:2"),
        format!("{moved_later}:closed:2"),
        format!("{cancelled_live}:cancelled:2"),
        format!("{rotated}:changed:2"),
    ];
    let messages = wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(30),
        "the last boundaries",
        |m| {
            let have: BTreeSet<&str> = m.iter().filter_map(|m| m.message_id.as_deref()).collect();
            wait_for.iter().all(|w| have.contains(w.as_str()))
        },
    )
    .await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let messages = {
        let again = read_stream(&js, &stream).await;
        assert!(again.len() >= messages.len());
        again
    };
    assert_eq!(
        story(&messages, &moved_early),
        ["scheduled:2", "opened:2", "closed:2"],
        "no stale opened"
    );
    // The streamer may have heard `scheduled`: it hears that the slot is off.
    assert_eq!(story(&messages, &cancelled_early), ["cancelled:2"]);
    // A booking ahead of its window is announced at once, so a streamer can tell an early
    // publisher when it opens.
    let booked = by_kind(&messages, &cancelled_early, "scheduled");
    assert!(booked.is_empty() || booked[0]["late_ms"].as_f64().unwrap() < 1000.0);
    assert_eq!(
        story(&messages, &shortened),
        ["opened:1", "changed:2", "closed:2"]
    );
    assert_eq!(
        story(&messages, &cancelled_live),
        ["opened:1", "cancelled:2"]
    );
    assert_eq!(story(&messages, &rotated), ["opened:1", "changed:2"]);
    assert_eq!(
        story(&messages, &moved_later),
        ["opened:1", "changed:2", "opened:2", "closed:2"]
    );
    let by_id = |id: &str, kind: &str| -> Value {
        let m = messages
            .iter()
            .find(|m| m.message_id.as_deref() == Some(&format!("{id}:{kind}")))
            .unwrap_or_else(|| panic!("no {id}:{kind}"));
        m.payload.clone()
    };
    // Changed and cancelled go out at once; changed carries the new window and key.
    let changed = by_id(&shortened, "changed:2");
    assert!(changed["late_ms"].as_f64().unwrap() < 1000.0, "{changed}");
    assert_eq!(time(&changed["closes_at"]), s(6));
    let rotated_msg = by_id(&rotated, "changed:2");
    let hash_before = by_id(&rotated, "opened:1")["stream_key_hash"].clone();
    assert_ne!(rotated_msg["stream_key_hash"], hash_before);
    assert_eq!(time(&by_id(&moved_later, "opened:2")["due_at"]), s(8));
    for m in &messages {
        let id = m.payload["reservation_id"].as_str().unwrap_or_default();
        let want = if id == rotated || id == moved_later {
            json!(TITLE)
        } else {
            Value::Null
        };
        assert_eq!(
            m.payload.get("title").unwrap_or(&Value::Null),
            &want,
            "{}",
            m.payload
        );
    }

    // The history has the window as delivered; without ingest the slot is missed.
    wait_until("WindowClosed recorded", || async {
        history_types(&api, &t, &shortened)
            .await
            .contains(&"WindowClosed".to_string())
    })
    .await;
    assert_eq!(
        history_types(&api, &t, &shortened).await,
        [
            "ReservationAccepted",
            "WindowOpened",
            "ReservationRescheduled",
            "WindowClosed"
        ]
    );
    let (_, shown) = api
        .get(&format!("/v1/reservations/{shortened}"), &t.alice)
        .await;
    assert_eq!(shown["status"], "missed");
    let (_, shown) = api
        .get(&format!("/v1/reservations/{cancelled_live}"), &t.alice)
        .await;
    assert_eq!(shown["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_loses_no_boundary() {
    let mut server = NatsServer::start();
    let url = server.url();
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    let env = [("NATS_URL", url.as_str())];
    let api = Api::start(&db, &env);
    register(&api, &t, "s1", 20).await;
    let scheduler = Scheduler::start(&db, &env);
    let base = Utc::now() + Duration::seconds(3);
    let mut reservations = Vec::new();
    for i in 0..20i64 {
        let start = base + Duration::milliseconds(i * 200);
        reservations.push(book(&api, &t, "s1", start, start + Duration::milliseconds(300)).await);
    }
    let js = nats::jetstream(&url).await;
    let stream = db.slots_stream();
    wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(30),
        "the first boundaries",
        |m| boundaries(m) >= 2,
    )
    .await;
    server.stop();
    // The scheduler says so. A publish in flight when NATS went may fail first ("no ack …
    // timed out"); the next pass finds the client disconnected and says NATS is unreachable.
    let mut said = None;
    for _ in 0..100 {
        let (status, body) = scheduler.readyz().await;
        if status == 503 {
            let unreachable = body["nats"]["scheduler"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unreachable"));
            said = Some(body);
            if unreachable {
                break;
            }
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let said = said.expect("/readyz turned 503 within 10 s of NATS going away");
    let detail = said["nats"]["scheduler"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("unreachable"), "{said}");
    // Boundaries come due while NATS is down.
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    assert!(
        db.count(
            "SELECT count(*) FROM slot_boundaries WHERE published_at IS NULL AND due_at < now()"
        )
        .await
            > 0,
        "some boundaries came due during the outage"
    );
    server.resume();
    let js = nats::jetstream(&url).await;
    wait_for_stream(
        &js,
        &stream,
        StdDuration::from_secs(60),
        "all 40 boundaries",
        |m| boundaries(m) >= 40,
    )
    .await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_each_boundary_once_in_order(&read_stream(&js, &stream).await, &reservations);
    let mut ready = false;
    for _ in 0..100 {
        if scheduler.readyz().await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(ready, "/readyz back to 200 once NATS is back");
}

async fn history_types(api: &Api, t: &Tenant, id: &str) -> Vec<String> {
    let (status, h) = api
        .get(&format!("/v1/reservations/{id}/history"), &t.alice)
        .await;
    assert_eq!(status, 200, "{h}");
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("{what}: not within 20 s");
}

/// `server all` with `s1` and one booking on it from 2 s to `end_s` s from now, once its
/// window has opened: the api, the reservation id, and JetStream.
async fn open_slot(
    db: &TestDb,
    t: &Tenant,
    end_s: i64,
) -> (Api, String, async_nats::jetstream::Context) {
    let api = Api::start_role(db, "all", &[]);
    register(&api, t, "s1", 1).await;
    let now = Utc::now();
    let start = now + Duration::seconds(2);
    let id = book(&api, t, "s1", start, now + Duration::seconds(end_s)).await;
    let js = nats::jetstream(&nats::shared_url()).await;
    wait_opened(&js, &db.slots_stream(), &id).await;
    (api, id, js)
}

/// A report of the streamer on `s1` about `id`, as it publishes it.
fn ingest_report(id: &str, kind: &str, reason: Option<&str>) -> Value {
    json!({
        "schema": 1, "kind": kind, "reservation_id": id, "server_id": "s1",
        "at": ts(Utc::now()), "carrier": "carrier-a", "remote_addr": "127.0.0.2:40000",
        "codec": "h264,aac", "reason": reason
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_are_recorded_once_even_when_redelivered() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    let (api, id, js) = open_slot(&db, &t, 6).await;

    let subject = format!("{}.ingest.s1.{id}", db.nats_prefix);
    let report = |kind: &str, reason: Option<&str>| ingest_report(&id, kind, reason);
    js.publish(
        subject.clone(),
        report("connected", None).to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    wait_until("live", || async {
        let (_, r) = api.get(&format!("/v1/reservations/{id}"), &t.alice).await;
        r["status"] == "live"
    })
    .await;
    let (_, shown) = api.get(&format!("/v1/reservations/{id}"), &t.alice).await;
    assert_eq!(shown["ingest"]["state"], "connected");
    assert_eq!(shown["ingest"]["carrier"], "carrier-a");

    // The api loses its place in the stream: a fresh consumer redelivers everything.
    assert_eq!(api.stop(), Some(0));
    let stream = js
        .get_stream(db.ingest_stream())
        .await
        .expect("ingest stream");
    stream
        .delete_consumer("slotcast-api")
        .await
        .expect("delete the api's consumer");
    let api = Api::start_role(&db, "all", &[]);
    js.publish(
        subject,
        report("disconnected", Some("publisher closed"))
            .to_string()
            .into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    // One at a time, in order: once the second is recorded, the first was seen again.
    wait_until("disconnected recorded", || async {
        history_types(&api, &t, &id)
            .await
            .iter()
            .filter(|t| *t == "IngestReported")
            .count()
            >= 2
    })
    .await;
    let (_, h) = api
        .get(&format!("/v1/reservations/{id}/history"), &t.alice)
        .await;
    let ingest: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "IngestReported")
        .collect();
    assert_eq!(ingest.len(), 2, "{h}");
    assert_eq!(ingest[0]["data"]["kind"], "connected");
    assert_eq!(ingest[1]["data"]["kind"], "disconnected");
    assert_eq!(ingest[1]["data"]["reason"], "publisher closed");
    assert_eq!(ingest[0]["actor"], "service:ingest-consumer");

    // The window closes after ingest: ended.
    wait_until("ended", || async {
        let (_, r) = api.get(&format!("/v1/reservations/{id}"), &t.alice).await;
        r["status"] == "ended"
    })
    .await;
}

/// The ack wait of the api's shared consumer on `stream` (api/src/consumers.rs), once it
/// exists.
async fn api_ack_wait(js: &async_nats::jetstream::Context, stream: &str) -> Option<StdDuration> {
    let stream = js.get_stream(stream).await.ok()?;
    let mut consumer: PullConsumer = stream.get_consumer("slotcast-api").await.ok()?;
    Some(consumer.info().await.ok()?.config.ack_wait)
}

/// An api replica that dies holding the one message in flight (the test takes it from the
/// shared consumer and never acknowledges it) stalls the feed for one short ack wait: the
/// next replica records it within seconds, not after the 30 s an older api's consumer had,
/// which a newer api brings down to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_by_a_replica_that_died_is_recorded_by_another_within_seconds() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    let (api, id, js) = open_slot(&db, &t, 60).await;
    let ingest = db.ingest_stream();
    wait_until("the api's consumer", || async {
        api_ack_wait(&js, &ingest).await.is_some()
    })
    .await;
    assert_eq!(api.stop(), Some(0));

    // The consumer as an older api left it; a newer one brings its ack wait down.
    let stream = js.get_stream(&ingest).await.expect("ingest stream");
    let mut old: consumer::Config = stream
        .get_consumer::<consumer::Config>("slotcast-api")
        .await
        .expect("the api's consumer")
        .cached_info()
        .config
        .clone();
    old.ack_wait = StdDuration::from_secs(30);
    stream.create_consumer(old).await.expect("the old ack wait");
    let api = Api::start_role(&db, "all", &[]);
    wait_until("the ack wait brought down", || async {
        api_ack_wait(&js, &ingest)
            .await
            .is_some_and(|wait| wait < StdDuration::from_secs(30))
    })
    .await;
    assert_eq!(api.stop(), Some(0));
    let ack_wait = api_ack_wait(&js, &ingest)
        .await
        .expect("the api's consumer");

    // A replica takes the report and dies before acknowledging it.
    let subject = format!("{}.ingest.s1.{id}", db.nats_prefix);
    let report = ingest_report(&id, "connected", None);
    js.publish(subject, report.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let dying: PullConsumer = stream
        .get_consumer("slotcast-api")
        .await
        .expect("the api's consumer");
    let mut batch = dying
        .fetch()
        .max_messages(1)
        .expires(StdDuration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let held = batch.next().await.expect("a message").expect("the report");
    let taken = std::time::Instant::now();
    drop(held);
    drop(batch);

    // The next replica records it once its ack wait has passed.
    let api = Api::start_role(&db, "all", &[]);
    let deadline = taken + StdDuration::from_secs(20);
    while !history_types(&api, &t, &id)
        .await
        .contains(&"IngestReported".to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the held report was not recorded within 20 s (ack wait {ack_wait:?})"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    eprintln!(
        "the report a dead replica held was recorded {} ms after it was taken (ack wait {ack_wait:?})",
        taken.elapsed().as_millis()
    );
    let types = history_types(&api, &t, &id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "IngestReported").count(),
        1,
        "{types:?}"
    );
    let (_, shown) = api.get(&format!("/v1/reservations/{id}"), &t.alice).await;
    assert_eq!(shown["status"], "live", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_the_opening_was_due_is_announced_even_if_opened_never_went_out() {
    let db = TestDb::new().await;
    let t = tenant(&db).await;
    // No scheduler yet: the opening comes due but nobody sends it (as after a lost ack).
    let api = Api::start(&db, &[]);
    register(&api, &t, "s1", 2).await;
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let cancelled = book(
        &api,
        &t,
        "s1",
        now + Duration::seconds(1),
        now + Duration::seconds(60),
    )
    .await;
    let moved = book(
        &api,
        &t,
        "s1",
        now + Duration::seconds(1),
        now + Duration::seconds(60),
    )
    .await;
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    act(&api, &t, &cancelled, "cancel", json!({})).await;
    let end = now + Duration::seconds(4);
    act(
        &api,
        &t,
        &moved,
        "reschedule",
        json!({"start": ts(now + Duration::seconds(1)), "end": ts(end)}),
    )
    .await;
    let _scheduler = Scheduler::start(&db, &[]);
    let js = nats::jetstream(&nats::shared_url()).await;
    let want = format!("{moved}:closed:2");
    let messages = wait_for_stream(
        &js,
        &db.slots_stream(),
        StdDuration::from_secs(20),
        "closed:2",
        |m| {
            m.iter()
                .any(|m| m.message_id.as_deref() == Some(want.as_str()))
        },
    )
    .await;
    assert_eq!(story(&messages, &cancelled), ["cancelled:2"]);
    assert_eq!(story(&messages, &moved), ["changed:2", "closed:2"]);
}
