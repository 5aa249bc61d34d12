//! Many streamers, many replicas: three `slotcast server streamer` processes (one per server,
//! each with its own ingest listener and HLS address), two `server api` and two `server
//! scheduler` processes on one Postgres and one NATS. Bookings flow through both apis while
//! one of them is killed (SIGKILL); windows open and close on every server while the
//! scheduler publishing them is killed (SIGKILL). Every booking answered 201 is whole and
//! single, every boundary is stored once and recorded once, and on every server ffmpeg
//! publishes into its slot, a viewer reads it back, and the slot closes. The figures are
//! printed.
//!
//! What "loses nothing" rests on, and so what is asserted:
//! - an api answers 201 only after the booking's events, read-model rows, slot outbox rows
//!   and idempotency answer committed in one transaction (api/src/store/mod.rs); a client
//!   whose request was in flight at the kill sends it again, with its Idempotency-Key, to
//!   the other api, and gets the booking if it committed, or a fresh decision;
//! - schedulers claim due outbox rows `FOR UPDATE SKIP LOCKED` and mark them in the
//!   claiming transaction (scheduler/src/slot_clock.rs): a replica killed between publish
//!   and commit leaves its rows to the other, which publishes them again with the same
//!   `Nats-Msg-Id`, and JetStream drops the copy. Delivery to JetStream is thus at least
//!   once, and storage exactly once: the assertions are on the stream as stored;
//! - the apis share one durable consumer per stream, one message in flight
//!   (api/src/consumers.rs): a message the killed api held unacknowledged is delivered again
//!   after the consumer's short ack wait, and the aggregate records a message once. (In about
//!   half the runs api-a dies holding a `scheduled` message: the history then waits that
//!   ack wait.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use support::nats::{self, read_stream};
use support::streaming::{
    announce, ffmpeg_publish, ffmpeg_read_frames, find_key, get_text, ingest_reports, publish_url,
    register, secret_key, segments, streamer_env, wait_for_text, wait_gate_open, StreamerProcess,
};
use support::{time, token, ts, Api, Scheduler, TestDb};

/// The servers, each with the loopback address of its streamer's ingest listener.
const SERVERS: [(&str, &str); 3] = [
    ("s1", "127.0.0.2"),
    ("s2", "127.0.0.3"),
    ("s3", "127.0.0.4"),
];
/// Short windows per server besides the one that is published into: across the servers a
/// boundary comes due every 100 ms or so for about ten seconds.
const SHORT_PER_SERVER: i64 = 14;
/// From the first booking to the first window: the bookings are all answered well before.
const LEAD_MS: i64 = 6000;
/// The window published into on each server, from `base`.
const MEDIA_MS: (i64, i64) = (1000, 11_000);
/// The booking clients: half start on each api, each sends its requests one at a time.
const CLIENTS: usize = 4;
/// api-a is killed once it has answered this many bookings.
const KILL_API_AFTER: usize = 4;
/// The publishing scheduler is killed once this many window boundaries went out.
const KILL_SCHEDULER_AFTER: i64 = 30;
/// How long the history may lag behind the last close: a message the killed api held is
/// delivered again after the consumer's ack wait (`ACK_WAIT`, 5 s, api/src/consumers.rs).
const HISTORY_LIMIT: StdDuration = StdDuration::from_secs(20);

/// One booking as a client sends it.
#[derive(Clone, Debug)]
struct Planned {
    server: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    media: bool,
    key: String,
}

impl Planned {
    fn body(&self) -> Value {
        json!({"server_id": self.server, "start": ts(self.start), "end": ts(self.end)})
    }
}

/// The 201 a planned booking got.
#[derive(Clone, Debug)]
struct Answered {
    plan: usize,
    /// Which api answered: 0 (api-a, killed) or 1 (api-b).
    api: usize,
    /// Which api its client sent to first.
    first: usize,
    /// Whether it was sent again to the other api after the first failed with no answer.
    failed_over: bool,
    id: String,
    stream_key: String,
}

/// The windows: on each server one to publish into and [`SHORT_PER_SERVER`] short ones,
/// staggered across servers; in order of start.
fn plan(base: DateTime<Utc>) -> Vec<Planned> {
    let ms = |n: i64| base + Duration::milliseconds(n);
    let mut planned = Vec::new();
    for (i, &(server, _)) in SERVERS.iter().enumerate() {
        planned.push(Planned {
            server,
            start: ms(MEDIA_MS.0),
            end: ms(MEDIA_MS.1),
            media: true,
            key: uuid::Uuid::new_v4().to_string(),
        });
        for j in 0..SHORT_PER_SERVER {
            let start = ms(500 + 600 * j + 200 * i as i64);
            planned.push(Planned {
                server,
                start,
                end: start + Duration::milliseconds(1200),
                media: false,
                key: uuid::Uuid::new_v4().to_string(),
            });
        }
    }
    planned.sort_by_key(|p| p.start);
    planned
}

/// Sends one booking; `None` when no answer came (refused, reset, timed out).
async fn send(http: &reqwest::Client, url: &str, token: &str, p: &Planned) -> Option<(u16, Value)> {
    let resp = http
        .post(format!("{url}/v1/reservations"))
        .bearer_auth(token)
        .header("Idempotency-Key", &p.key)
        .json(&p.body())
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

/// A client booking `mine` one at a time, first through `urls[first]`. A request with no
/// answer goes again, with the same Idempotency-Key, to the other api, which this client
/// uses from then on; a 503 `unavailable` is sent again after its `retry_after_s`.
async fn client(
    http: reqwest::Client,
    urls: [String; 2],
    token: String,
    mine: Vec<(usize, Planned)>,
    first: usize,
    answered: Arc<Mutex<Vec<Answered>>>,
) -> Result<(), String> {
    let mut api = first;
    for (plan, p) in mine {
        let deadline = Instant::now() + StdDuration::from_secs(20);
        let mut failed_over = false;
        loop {
            let pause = match send(&http, &urls[api], &token, &p).await {
                Some((201, body)) => {
                    let id = body["id"].as_str().ok_or(format!("no id: {body}"))?;
                    let stream_key = find_key(&body).ok_or(format!("no stream key: {body}"))?;
                    answered.lock().expect("answers").push(Answered {
                        plan,
                        api,
                        first,
                        failed_over,
                        id: id.to_string(),
                        stream_key,
                    });
                    break;
                }
                Some((503, body)) if body["error"]["code"] == "unavailable" => {
                    StdDuration::from_secs(body["error"]["retry_after_s"].as_u64().unwrap_or(1))
                }
                Some((status, body)) => return Err(format!("{p:?}: {status} {body}")),
                None => {
                    api = 1 - api;
                    failed_over = true;
                    StdDuration::from_millis(50)
                }
            };
            if Instant::now() + pause > deadline {
                return Err(format!("{p:?}: no answer within 20 s"));
            }
            tokio::time::sleep(pause).await;
        }
        // A client's pace: bookings go on arriving for a second or two.
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    Ok(())
}

/// One server's window published into: when the gate let a publisher in, the frames a viewer
/// decoded live, and when the publisher was cut off.
struct Played {
    server: &'static str,
    admitted_ms: i64,
    frames: usize,
    cut_off_ms: i64,
    segments: usize,
}

/// On one server: ffmpeg publishes into the window from its opening, a viewer reads the live
/// playlist back, the publisher is cut off at the close, the recording ends and a late
/// publisher hears that the window has closed.
async fn play(
    server: &'static str,
    rtsp: SocketAddr,
    hls: &str,
    slot: &Planned,
    answer: &Answered,
) -> Played {
    let (id, key) = (answer.id.clone(), answer.stream_key.clone());
    let admitted = tokio::task::spawn_blocking(move || {
        wait_gate_open(rtsp, &id, &key);
        Utc::now()
    })
    .await
    .expect("the gate opens");
    let id = answer.id.as_str();
    // Longer than the window: the streamer cuts it off at the close.
    let publisher = ffmpeg_publish(&publish_url(rtsp, id, &answer.stream_key), "tcp", 60);
    let playlist = format!("{hls}/hls/{id}/index.m3u8");
    wait_for_text(
        &playlist,
        "three segments",
        StdDuration::from_secs(20),
        |p| segments(p) >= 3,
    )
    .await;
    let url = playlist.clone();
    let (frames, errors) = tokio::task::spawn_blocking(move || ffmpeg_read_frames(&url, 3))
        .await
        .expect("the viewer");
    assert!(
        frames >= 50,
        "{server}: the viewer decoded {frames} frames live: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "{server}: the viewer said {errors}"
    );
    let limit = (slot.end - Utc::now()).to_std().unwrap_or_default() + StdDuration::from_secs(8);
    let (publisher, exited) = tokio::task::spawn_blocking(move || {
        let mut publisher = publisher;
        let exited = publisher.wait(limit);
        (publisher, exited)
    })
    .await
    .expect("the publisher");
    let cut_off = Utc::now();
    assert!(
        exited.is_some(),
        "{server}: the publisher was not cut off at the close: {}",
        publisher.describe()
    );
    let ended = wait_for_text(
        &playlist,
        "EXT-X-ENDLIST",
        StdDuration::from_secs(15),
        |p| p.contains("#EXT-X-ENDLIST"),
    )
    .await;
    let (_, status) = get_text(&format!("{hls}/hls/{id}/status.json")).await;
    assert!(status.contains("\"ended\""), "{server}: {status}");
    let (id, key) = (answer.id.clone(), answer.stream_key.clone());
    let (code, reason) = tokio::task::spawn_blocking(move || announce(rtsp, &id, &key))
        .await
        .expect("a late publisher");
    assert_eq!(code, 403, "{server}: a publisher after the close: {reason}");
    assert!(reason.contains("closed"), "{server}: {reason}");
    Played {
        server,
        admitted_ms: (admitted - slot.start).num_milliseconds(),
        frames,
        cut_off_ms: (cut_off - slot.end).num_milliseconds(),
        segments: segments(&ended),
    }
}

/// Waits until [`KILL_SCHEDULER_AFTER`] window boundaries went out, then kills the replica
/// that published the latest, just as the next boundary comes due (so that now and then it
/// dies between publishing and marking); returns its name, the survivor's name, the survivor,
/// and when the victim was dead.
async fn kill_the_publishing_scheduler(
    db: &TestDb,
    mut replicas: BTreeMap<String, Scheduler>,
) -> (String, String, Scheduler, DateTime<Utc>) {
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        let published = db
            .count(
                "SELECT count(*) FROM slot_boundaries \
                 WHERE kind IN ('opened', 'closed') AND published_at IS NOT NULL",
            )
            .await;
        if published >= KILL_SCHEDULER_AFTER {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {published} window boundaries went out within 30 s"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    let latest = db
        .json(
            "SELECT to_jsonb(published_by) FROM slot_boundaries WHERE published_at IS NOT NULL \
             ORDER BY published_at DESC LIMIT 1",
        )
        .await;
    let victim = latest.as_str().expect("a replica").to_string();
    let next = db
        .json(
            "SELECT to_jsonb(min(due_at)) FROM slot_boundaries \
             WHERE published_at IS NULL AND due_at > now()",
        )
        .await;
    if !next.is_null() {
        // Aiming, not waiting for an outcome: a publish goes out a few ms after it is due.
        let at = time(&next) + Duration::milliseconds(3);
        if let Ok(wait) = (at - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
    }
    replicas
        .remove(&victim)
        .unwrap_or_else(|| panic!("{victim} is none of ours"))
        .kill();
    let killed = Utc::now();
    let (name, survivor) = replicas.pop_first().expect("the other replica");
    (victim, name, survivor, killed)
}

/// Per reservation and event type, how many events the store holds.
async fn event_counts(db: &TestDb) -> BTreeMap<String, u64> {
    let v = db
        .json(
            "SELECT coalesce(json_object_agg(k, n), '{}') FROM (SELECT reservation_id || ' ' || \
             event_type AS k, count(*) AS n FROM events WHERE reservation_id IS NOT NULL \
             GROUP BY 1) x",
        )
        .await;
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// p50 and max of `values` (milliseconds).
fn p50_max(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[values.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_streamers_two_apis_two_schedulers_and_a_kill_of_each_lose_nothing() {
    let started = Instant::now();
    let db = TestDb::new().await;
    let secret = secret_key();
    let key_env = ("SLOTCAST_SECRET_KEY", secret.as_str());
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api_a = Api::start(&db, &[key_env]);
    let api_b = Api::start(&db, &[key_env]);
    let mut replicas = BTreeMap::new();
    for name in ["scheduler-a", "scheduler-b"] {
        let env = [key_env, ("SLOTCAST_SCHEDULER_REPLICA", name)];
        replicas.insert(name.to_string(), Scheduler::start(&db, &env));
    }
    let recordings: Vec<tempfile::TempDir> = SERVERS
        .iter()
        .map(|_| tempfile::tempdir().expect("recordings"))
        .collect();
    let streamers: Vec<StreamerProcess> = SERVERS
        .iter()
        .zip(&recordings)
        .map(|((server, ip), dir)| {
            let mut env = streamer_env(server, &format!("carrier-a={ip}:0"), dir.path());
            for (k, v) in env.iter_mut() {
                if k == "SLOTCAST_SECRET_KEY" {
                    v.clone_from(&secret);
                }
            }
            StreamerProcess::start(&db, &env)
        })
        .collect();
    for (i, (server, _)) in SERVERS.iter().enumerate() {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        register(api, &operator, server, &["carrier-a"]).await;
    }
    let up = started.elapsed();

    // Bookings through both apis; api-a is killed while they flow.
    // Whole milliseconds, as the API keeps them.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let base = now + Duration::milliseconds(LEAD_MS);
    let planned = plan(base);
    let http = reqwest::Client::builder()
        .timeout(StdDuration::from_secs(10))
        .build()
        .expect("http client");
    let urls = [api_a.base.clone(), api_b.base.clone()];
    let answered = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mine: Vec<(usize, Planned)> = planned
                .iter()
                .cloned()
                .enumerate()
                .skip(c)
                .step_by(CLIENTS)
                .collect();
            tokio::spawn(client(
                http.clone(),
                urls.clone(),
                alice.clone(),
                mine,
                c % 2,
                answered.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + StdDuration::from_secs(20);
    let by_a = || {
        answered
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| a.api == 0)
            .count()
    };
    while by_a() < KILL_API_AFTER {
        assert!(
            Instant::now() < deadline,
            "api-a answered {} bookings",
            by_a()
        );
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let answered_at_kill = answered.lock().expect("answers").len();
    api_a.kill();
    for c in futures_util::future::join_all(clients).await {
        c.expect("a client").expect("a booking answered");
    }
    let booked_by = Utc::now();
    let answered = std::mem::take(&mut *answered.lock().expect("answers"));
    assert!(
        booked_by < base,
        "the bookings took {} ms, past the first window",
        (booked_by - now).num_milliseconds()
    );

    // Every planned booking was answered once; each answer is whole and single.
    let mut by_plan: BTreeMap<usize, &Answered> = BTreeMap::new();
    for a in &answered {
        assert!(by_plan.insert(a.plan, a).is_none(), "{a:?} answered twice");
    }
    assert_eq!(by_plan.len(), planned.len());
    let ids: BTreeSet<String> = answered.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), planned.len(), "distinct reservations");
    let accepted = db
        .json(
            "SELECT coalesce(json_agg(reservation_id), '[]') FROM events \
             WHERE event_type = 'ReservationAccepted'",
        )
        .await;
    let accepted: Vec<String> = serde_json::from_value(accepted).expect("ids");
    assert_eq!(
        accepted.len(),
        planned.len(),
        "one booking per key: {accepted:?}"
    );
    assert_eq!(accepted.iter().cloned().collect::<BTreeSet<_>>(), ids);
    for (table, column) in [("rm.reservations", "id"), ("rm.schedule", "reservation_id")] {
        let rows = db
            .json(&format!(
                "SELECT coalesce(json_agg({column}), '[]') FROM {table}"
            ))
            .await;
        let rows: Vec<String> = serde_json::from_value(rows).expect("ids");
        assert_eq!(rows.len(), ids.len(), "{table}: {rows:?}");
        assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), ids, "{table}");
    }
    let outbox = db
        .count("SELECT count(*) FROM slot_boundaries WHERE revision = 1")
        .await;
    assert_eq!(
        outbox,
        3 * planned.len() as i64,
        "scheduled, opened, closed each"
    );
    let failed_over = answered.iter().filter(|a| a.failed_over).count();
    let a_clients_on_b = answered
        .iter()
        .filter(|a| a.api == 1 && a.first == 0)
        .count();
    assert!(
        a_clients_on_b > 0,
        "the bookings had all been answered before api-a was killed"
    );

    // The windows open and close on every server while the publishing scheduler is killed.
    let media: Vec<_> = SERVERS
        .iter()
        .zip(&streamers)
        .map(|((server, _), streamer)| {
            let plan = planned
                .iter()
                .position(|p| p.media && p.server == *server)
                .expect("a window to publish into");
            (*server, streamer, &planned[plan], by_plan[&plan])
        })
        .collect();
    let played = futures_util::future::join_all(media.iter().map(|(server, s, slot, answer)| {
        play(
            server,
            s.endpoints.ingest["carrier-a"],
            &s.endpoints.hls,
            slot,
            answer,
        )
    }));
    let (played, (victim, survivor_name, survivor, killed)) =
        tokio::join!(played, kill_the_publishing_scheduler(&db, replicas));

    // The outbox is all marked: no scheduler publishes anything more, so the stream is whole.
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        let left = db
            .count("SELECT count(*) FROM slot_boundaries WHERE published_at IS NULL")
            .await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} boundaries never went out"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let js = nats::jetstream(&nats::shared_url()).await;
    let stored = read_stream(&js, &db.slots_stream()).await;
    let message_ids: Vec<&str> = stored
        .iter()
        .map(|m| {
            m.message_id
                .as_deref()
                .expect("every slot message has an id")
        })
        .collect();
    let unique: BTreeSet<&str> = message_ids.iter().copied().collect();
    assert_eq!(unique.len(), message_ids.len(), "a boundary stored twice");
    for id in &ids {
        let story: Vec<String> = stored
            .iter()
            .filter(|m| m.payload["reservation_id"] == id.as_str())
            .map(|m| {
                format!(
                    "{}:{}",
                    m.payload["kind"].as_str().unwrap_or("?"),
                    m.payload["revision"]
                )
            })
            .collect();
        assert_eq!(story, ["scheduled:1", "opened:1", "closed:1"], "{id}");
    }
    assert_eq!(stored.len(), 3 * ids.len(), "nothing else in the stream");
    for m in &stored {
        let p = &m.payload;
        assert!(time(&p["published_at"]) >= time(&p["due_at"]), "early: {p}");
        let server = SERVERS.iter().position(|(s, _)| p["server_id"] == *s);
        assert!(server.is_some(), "{p}");
    }
    // After the kill only the survivor published; the victim had published before it.
    let marks = db
        .json(
            "SELECT json_agg(json_build_array(reservation_id || ':' || kind || ':' || revision, \
             published_by, due_at, published_at)) FROM slot_boundaries",
        )
        .await;
    let marks: Vec<(String, String, String, String)> =
        serde_json::from_value(marks).expect("outbox marks");
    let published_by = |due_after: bool| -> BTreeMap<&str, usize> {
        let mut n = BTreeMap::new();
        for (_, by, due, _) in &marks {
            if (time(&json!(due)) > killed) == due_after {
                *n.entry(by.as_str()).or_default() += 1;
            }
        }
        n
    };
    let before = published_by(false);
    let after = published_by(true);
    assert!(before.contains_key(victim.as_str()), "{before:?}");
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        [survivor_name.as_str()],
        "boundaries due after the kill"
    );
    // A boundary the victim published but did not mark was published again by the
    // survivor: JetStream kept the first copy (its `published_at` differs from the mark).
    let stored_at: BTreeMap<&str, DateTime<Utc>> = stored
        .iter()
        .map(|m| {
            (
                m.message_id.as_deref().unwrap_or_default(),
                time(&m.payload["published_at"]),
            )
        })
        .collect();
    let deduped = marks
        .iter()
        .filter(|(id, _, _, at)| {
            stored_at
                .get(id.as_str())
                .is_none_or(|stored| (*stored - time(&json!(at))).abs() > Duration::milliseconds(1))
        })
        .count();

    // The apis recorded every window once, and each publisher's reports; the statuses follow.
    let deadline = Instant::now() + HISTORY_LIMIT;
    let media_ids: BTreeSet<&str> = media.iter().map(|(.., a)| a.id.as_str()).collect();
    let history_started = Instant::now();
    loop {
        let counts = event_counts(&db).await;
        let n = |id: &str, ty: &str| counts.get(&format!("{id} {ty}")).copied().unwrap_or(0);
        let mut missing = Vec::new();
        for id in &ids {
            let reports = if media_ids.contains(id.as_str()) {
                2
            } else {
                0
            };
            if n(id, "WindowClosed") == 0 || (n(id, "IngestReported") as usize) < reports {
                missing.push(id.as_str());
            }
        }
        if missing.is_empty() {
            for id in &ids {
                assert_eq!(n(id, "ReservationAccepted"), 1, "{id}");
                assert_eq!(n(id, "WindowOpened"), 1, "{id}");
                assert_eq!(n(id, "WindowClosed"), 1, "{id}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history lacks windows or reports of {missing:?} after {HISTORY_LIMIT:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    let history_lag = history_started.elapsed();
    for id in &media_ids {
        let kinds: Vec<String> = ingest_reports(&db, id)
            .await
            .iter()
            .filter_map(|r| r["kind"].as_str().map(str::to_string))
            .filter(|k| k != "refused")
            .collect();
        assert_eq!(kinds, ["connected", "disconnected"], "{id}");
    }
    let statuses = db
        .json("SELECT json_object_agg(id, status) FROM rm.reservations")
        .await;
    for id in &ids {
        let want = if media_ids.contains(id.as_str()) {
            "ended"
        } else {
            "missed"
        };
        assert_eq!(statuses[id], want, "{id}");
    }
    let (status, shown) = api_b
        .get(&format!("/v1/reservations/{}", media[0].3.id), &alice)
        .await;
    assert_eq!(
        (status, &shown["status"]),
        (200, &json!("ended")),
        "{shown}"
    );

    // The figures.
    let mut late: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for m in stored.iter().filter(|m| m.payload["kind"] != "scheduled") {
        let due = time(&m.payload["due_at"]);
        let phase = if due <= killed {
            "before the kill"
        } else {
            "after the kill"
        };
        late.entry(phase)
            .or_default()
            .push(m.payload["late_ms"].as_f64().unwrap_or(f64::NAN));
    }
    let per_api = |api: usize| answered.iter().filter(|a| a.api == api).count();
    eprintln!(
        "bookings: {} answered, {} by api-a (killed after {answered_at_kill} answers in all), \
         {} by api-b; {failed_over} sent again to api-b after api-a died with them in flight",
        answered.len(),
        per_api(0),
        per_api(1)
    );
    eprintln!(
        "boundaries: {} stored once each; {victim} killed at {} ms from the first window; \
         boundaries due before it (scheduled included) published by {before:?}, after it by \
         {after:?}; {deduped} published again by {} and dropped by JetStream as duplicates",
        stored.len(),
        (killed - base).num_milliseconds(),
        survivor_name,
    );
    for (phase, values) in &mut late {
        let (p50, max) = p50_max(values);
        eprintln!(
            "window boundaries due {phase}: {} published, late p50 {p50:.1} ms, max {max:.1} ms",
            values.len()
        );
    }
    for p in &played {
        eprintln!(
            "{}: publisher let in {} ms after the opening, viewer decoded {} frames live, \
             publisher cut off {} ms after the close, {} segments recorded",
            p.server, p.admitted_ms, p.frames, p.cut_off_ms, p.segments
        );
    }
    eprintln!(
        "processes up in {:.1} s; the history complete {} ms after the last close was seen; \
         the test took {:.1} s",
        up.as_secs_f64(),
        history_lag.as_millis(),
        started.elapsed().as_secs_f64()
    );
    drop(survivor);
    drop(streamers);
    drop(api_b);
}
