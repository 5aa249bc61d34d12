//! `rebuild` gives, row for row, the read model and slot outbox that the incremental
//! projectors give: on a store holding every kind of event, projected as the api's writer
//! projects it; and on a store whose projection lags (events written some other way), as
//! catch-up would have brought it up.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::{json, Value};
use slotcast_domain::contract::{
    CameraSource, CameraTransport, IngestKind, IngestMessage, IngestMode, IngestProtocol, SlotKind,
    SlotMessage, StreamCursor,
};
use slotcast_domain::{
    Actor, Carrier, Command, CommandKind, Role, ScheduleEvent, ServerPatch, ServerSchedule,
    ServerSettings, ServerSpec,
};
use slotcast_readmodel::{catch_up, project_batch, rebuild, Progress, Stage, Stream};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::watch;

/// A database of the test's own, migrated; dropped (forcibly) with the guard.
struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    async fn new() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!("slotcast_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("these tests need Postgres at {admin_url}: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let (base, query) = admin_url.split_at(admin_url.find('?').unwrap_or(admin_url.len()));
        let slash = base.rfind('/').expect("DATABASE_URL names a database");
        let url = format!("{}/{name}{query}", &base[..slash]);
        slotcast_readmodel::db::migrate(&url)
            .await
            .expect("migrate");
        Self {
            name,
            url,
            admin_url,
        }
    }

    async fn pool(&self) -> PgPool {
        slotcast_readmodel::db::connect(&self.url, 4)
            .await
            .expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// One decision: the event at `sequence` of `server`, and the settings it was decided under.
struct Decided {
    server: String,
    sequence: i64,
    event: ScheduleEvent,
    settings: Option<ServerSettings>,
}

/// The servers' aggregates, and every decision in the order it was committed, in groups (one
/// transaction each, as the api's writer commits them).
#[derive(Default)]
struct History {
    aggregates: BTreeMap<String, (ServerSchedule, i64)>,
    groups: Vec<Vec<Decided>>,
    nats_seq: u64,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()
}

fn person(role: Role, name: &str) -> Actor {
    Actor {
        role,
        name: name.into(),
    }
}

impl History {
    /// Decides `kind` on `server` and adds it to the open group; refused commands (errors)
    /// record nothing.
    fn decide(&mut self, server: &str, now: DateTime<Utc>, actor: Actor, kind: CommandKind) {
        let (aggregate, sequence) = self.aggregates.entry(server.to_string()).or_default();
        let Ok(event) = aggregate.decide(Command { now, actor, kind }) else {
            return;
        };
        aggregate.apply(event.clone());
        *sequence += 1;
        let decided = Decided {
            server: server.to_string(),
            sequence: *sequence,
            event,
            settings: aggregate.settings().cloned(),
        };
        match self.groups.last_mut() {
            Some(group) => group.push(decided),
            None => self.groups.push(vec![decided]),
        }
    }

    /// Closes the open group.
    fn commit(&mut self) {
        self.groups.push(Vec::new());
    }

    fn cursor(&mut self) -> StreamCursor {
        self.nats_seq += 1;
        StreamCursor {
            epoch_ms: 1,
            sequence: self.nats_seq,
        }
    }

    fn events(&self) -> impl Iterator<Item = &Decided> {
        self.groups.iter().flatten()
    }

    /// Accepted reservations so far, with their server and latest window.
    fn accepted(&self) -> Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> {
        let mut slots: BTreeMap<String, (String, DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
        for d in self.events() {
            match &d.event {
                ScheduleEvent::ReservationAccepted {
                    reservation_id,
                    opens_at,
                    closes_at,
                    ..
                }
                | ScheduleEvent::ReservationRescheduled {
                    reservation_id,
                    opens_at,
                    closes_at,
                    ..
                } => {
                    slots.insert(
                        reservation_id.clone(),
                        (d.server.clone(), *opens_at, *closes_at),
                    );
                }
                ScheduleEvent::ReservationCancelled { reservation_id, .. } => {
                    slots.remove(reservation_id);
                }
                _ => {}
            }
        }
        let mut list: Vec<_> = slots
            .into_iter()
            .map(|(id, (server, opens, closes))| (id, server, opens, closes))
            .collect();
        list.sort_by_key(|(id, _, opens, _)| (*opens, id.clone()));
        list
    }

    fn window(&mut self, server: &str, id: &str, kind: SlotKind, due: DateTime<Utc>) {
        let message = SlotMessage {
            schema: 1,
            kind,
            reservation_id: id.into(),
            server_id: server.into(),
            revision: 1,
            opens_at: due,
            closes_at: due,
            start: due,
            end: due,
            stream_key_hash: "k".into(),
            stream_key_digest: None,
            ingest: IngestMode::Push { carriers: vec![] },
            title: None,
            due_at: due,
            published_at: due + Duration::milliseconds(2),
            late_ms: 2.0,
        };
        let cursor = self.cursor();
        let kind = CommandKind::RecordWindow { message, cursor };
        self.decide(
            server,
            due + Duration::milliseconds(5),
            person(Role::Service, "slotcast"),
            kind,
        );
    }

    fn ingest(&mut self, server: &str, id: &str, kind: IngestKind, at: DateTime<Utc>) {
        let report = IngestMessage {
            schema: 1,
            kind,
            reservation_id: id.into(),
            server_id: server.into(),
            at,
            carrier: (kind != IngestKind::Refused).then(|| "carrier-a".into()),
            remote_addr: Some("10.0.0.9:40000".into()),
            codec: Some("h264".into()),
            reason: (kind == IngestKind::Failed).then(|| "reset".into()),
            refusals: (kind == IngestKind::Refused)
                .then(|| BTreeMap::from([("bad_key".to_string(), 3)])),
            protocol: (kind != IngestKind::Refused).then_some(IngestProtocol::Rtmp),
        };
        let cursor = self.cursor();
        let kind = CommandKind::RecordIngest { report, cursor };
        self.decide(server, at, person(Role::Service, "slotcast"), kind);
    }
}

fn carriers(n: usize) -> Vec<Carrier> {
    (0..n)
        .map(|i| {
            Carrier::rtsp(
                format!("carrier-{}", (b'a' + i as u8) as char),
                format!("rtsp://127.0.0.{}:8554", i + 2),
            )
        })
        .collect()
}

/// Three servers' histories with every kind of event: bookings accepted and refused (some
/// pulling a camera), a server update between bookings, reschedules accepted and refused,
/// key rotations and cancels before and inside the window, windows opened and closed, ingest
/// connected, refused, disconnected and failed, and a connect recorded after the close.
fn history() -> History {
    let mut h = History::default();
    let ops = person(Role::Operator, "ops");
    let (alice, bob) = (
        person(Role::Distributor, "alice"),
        person(Role::Distributor, "bob"),
    );
    let t = t0();
    for (server, capacity) in [("s1", 1), ("s2", 2), ("s3", 1)] {
        let spec = ServerSpec {
            id: server.into(),
            name: format!("server {server}"),
            capacity: Some(capacity),
            carriers: carriers(2),
            // Two servers say where they serve viewers; a change takes one away again.
            viewer_url: (server != "s3").then(|| format!("http://{server}.example:8888")),
            ..ServerSpec::default()
        };
        h.decide(server, t, ops.clone(), CommandKind::RegisterServer(spec));
    }
    h.commit();
    for i in 0..24i64 {
        let server = ["s1", "s2", "s3"][(i % 3) as usize];
        let start = t + Duration::hours(1) + Duration::minutes(20 * (i / 3));
        let source = (i % 5 == 0).then(|| CameraSource {
            url: format!("rtsp://camera-{i}.example/live"),
            transport: if i % 2 == 0 {
                CameraTransport::Tcp
            } else {
                CameraTransport::Udp
            },
            credentials: (i % 10 == 0).then(|| "abcdef".into()),
        });
        let kind = CommandKind::RequestReservation {
            reservation_id: format!("r{i:02}"),
            start,
            end: start + Duration::minutes(30),
            title: (i % 7 != 0).then(|| format!("show {i}")),
            stream_key_hash: format!("key-{i}"),
            stream_key_digest: (i % 2 == 0).then(|| format!("digest-{i}")),
            source,
        };
        let who = if i % 2 == 0 {
            alice.clone()
        } else {
            bob.clone()
        };
        h.decide(server, t + Duration::minutes(1), who, kind);
        if i % 4 == 3 {
            h.commit();
        }
    }
    h.commit();
    let patch = ServerPatch {
        name: Some("renamed".into()),
        carriers: Some(carriers(3)),
        viewer_url: Some(None),
        ..ServerPatch::default()
    };
    h.decide(
        "s2",
        t + Duration::minutes(2),
        ops.clone(),
        CommandKind::UpdateServer(patch),
    );
    h.commit();
    for i in 24..27i64 {
        let start = t + Duration::hours(5) + Duration::minutes(40 * (i - 24));
        let kind = CommandKind::RequestReservation {
            reservation_id: format!("r{i:02}"),
            start,
            end: start + Duration::minutes(30),
            title: None,
            stream_key_hash: format!("key-{i}"),
            stream_key_digest: None,
            source: None,
        };
        h.decide("s2", t + Duration::minutes(3), alice.clone(), kind);
    }
    h.commit();
    // A move into a full window is refused.
    for (id, hour) in [("r90", 12), ("r91", 13)] {
        let start = t + Duration::hours(hour);
        let kind = CommandKind::RequestReservation {
            reservation_id: id.into(),
            start,
            end: start + Duration::minutes(30),
            title: None,
            stream_key_hash: format!("key-{id}"),
            stream_key_digest: None,
            source: None,
        };
        h.decide("s1", t + Duration::minutes(3), bob.clone(), kind);
    }
    let kind = CommandKind::RescheduleReservation {
        reservation_id: "r91".into(),
        start: t + Duration::hours(12) + Duration::minutes(10),
        end: t + Duration::hours(12) + Duration::minutes(40),
    };
    h.decide("s1", t + Duration::minutes(3), bob.clone(), kind);
    h.commit();
    // Before any window opens: reschedules, rotations, cancels.
    let accepted = h.accepted();
    let now = t + Duration::minutes(4);
    for (k, (id, server, _, _)) in accepted.iter().enumerate().take(8) {
        let actor = if id[1..].parse::<u32>().unwrap_or(0) % 2 == 0 {
            alice.clone()
        } else {
            bob.clone()
        };
        let kind = match k {
            0 | 1 => CommandKind::RescheduleReservation {
                reservation_id: id.clone(),
                start: t + Duration::hours(9) + Duration::minutes(k as i64 * 10),
                end: t + Duration::hours(9) + Duration::minutes(k as i64 * 10 + 30),
            },
            2 | 3 => CommandKind::RotateStreamKey {
                reservation_id: id.clone(),
                stream_key_hash: format!("rotated-{id}"),
                stream_key_digest: None,
            },
            4 => CommandKind::CancelReservation {
                reservation_id: id.clone(),
            },
            _ => continue,
        };
        h.decide(server, now, actor, kind);
        h.commit();
    }
    // Windows open; the streamer reports; changes inside open windows; windows close.
    let mut now = t + Duration::minutes(50);
    for step in 0..16 {
        now += Duration::minutes(20);
        for (k, (id, server, opens, closes)) in h.accepted().into_iter().enumerate() {
            let n = id[1..].parse::<u32>().unwrap_or(0);
            let owner = if n % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            if opens <= now && opens > now - Duration::minutes(20) {
                h.window(&server, &id, SlotKind::Opened, opens);
                match n % 4 {
                    0 => h.ingest(
                        &server,
                        &id,
                        IngestKind::Connected,
                        opens + Duration::seconds(20),
                    ),
                    1 => h.ingest(
                        &server,
                        &id,
                        IngestKind::Refused,
                        opens + Duration::seconds(5),
                    ),
                    _ => {}
                }
                match (step + k) % 5 {
                    0 => h.decide(
                        &server,
                        opens + Duration::seconds(40),
                        owner,
                        CommandKind::CancelReservation {
                            reservation_id: id.clone(),
                        },
                    ),
                    1 => h.decide(
                        &server,
                        opens + Duration::seconds(40),
                        owner,
                        CommandKind::RescheduleReservation {
                            reservation_id: id.clone(),
                            start: opens + Duration::seconds(30),
                            end: closes + Duration::minutes(5),
                        },
                    ),
                    2 => h.decide(
                        &server,
                        opens + Duration::seconds(40),
                        owner,
                        CommandKind::RotateStreamKey {
                            reservation_id: id.clone(),
                            stream_key_hash: format!("inside-{id}"),
                            stream_key_digest: Some("d".into()),
                        },
                    ),
                    _ => {}
                }
                h.commit();
            }
            if closes <= now && closes > now - Duration::minutes(20) {
                if n % 4 == 0 {
                    let kind = if n % 8 == 0 {
                        IngestKind::Disconnected
                    } else {
                        IngestKind::Failed
                    };
                    h.ingest(&server, &id, kind, closes - Duration::seconds(1));
                }
                h.window(&server, &id, SlotKind::Closed, closes);
                if n % 4 == 2 {
                    // Recorded after the close: the two feeds are consumed independently.
                    h.ingest(
                        &server,
                        &id,
                        IngestKind::Connected,
                        closes + Duration::seconds(1),
                    );
                }
                h.commit();
            }
        }
    }
    h.groups.retain(|g| !g.is_empty());
    h
}

/// Commits one group: its events (as the api's store inserts them) and, when `project`, their
/// projection in the same transaction.
async fn write(pool: &PgPool, group: &[Decided], project: bool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(slotcast_readmodel::READ_MODEL_LOCK)
        .execute(&mut *tx)
        .await
        .expect("share the read model");
    for d in group {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, prev_hash, hash) \
             SELECT $1, $2, $3, $4, $5, p, m, prev, \
                 slotcast_event_hash(prev, $2, $3, $4, $5, p::text, m::text) \
             FROM (SELECT $6::jsonb::json AS p, $7::jsonb::json AS m, coalesce( \
                 (SELECT hash FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
                  AND sequence = $3 - 1), decode(repeat('00', 32), 'hex')) AS prev) AS r",
        )
        .bind(ServerSchedule::TYPE)
        .bind(&d.server)
        .bind(d.sequence)
        .bind(d.event.event_type())
        .bind(d.event.event_version())
        .bind(serde_json::to_value(&d.event).expect("serialize"))
        .bind(json!({"reservation_id": d.event.reservation_id()}))
        .execute(&mut *tx)
        .await
        .expect("insert an event");
    }
    if project {
        let mut by_server: Vec<(&str, i64, Vec<ScheduleEvent>, Option<&ServerSettings>)> =
            Vec::new();
        for d in group {
            match by_server.iter_mut().find(|s| s.0 == d.server) {
                Some(s) => {
                    s.2.push(d.event.clone());
                    s.3 = d.settings.as_ref();
                }
                None => by_server.push((
                    &d.server,
                    d.sequence,
                    vec![d.event.clone()],
                    d.settings.as_ref(),
                )),
            }
        }
        let streams: Vec<Stream<'_>> = by_server
            .iter()
            .map(|(id, first, events, settings)| Stream {
                aggregate_id: id,
                first_sequence: *first,
                events,
                settings: *settings,
            })
            .collect();
        project_batch(&mut tx, &streams).await.expect("project");
    }
    tx.commit().await.expect("commit");
}

/// Runs catch-up until its checkpoint is the newest event; returns the events it applied.
/// Catch-up reads only among transactions older than every one running in the cluster (other
/// tests' included), so it may need a few rounds; bounded by a deadline.
async fn settle(pool: &PgPool) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut applied = 0;
    loop {
        applied += catch_up(pool, 100).await.expect("catch up").applied;
        let behind: bool = sqlx::query_scalar(
            "SELECT (SELECT position FROM rm.checkpoint) < (SELECT max(position) FROM events)",
        )
        .fetch_one(pool)
        .await
        .expect("checkpoint");
        if !behind {
            return applied;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "catch-up reached the newest event within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn rebuild_now(pool: &PgPool) -> u64 {
    let (progress, _) = watch::channel(Progress {
        stage: Stage::Starting,
        events: 0,
        expected: 0,
        elapsed: std::time::Duration::ZERO,
    });
    rebuild(pool, &progress).await.expect("rebuild").events
}

/// Every read-model table and the slot outbox, each row as JSON in key order (the outbox
/// without `seq`, its rows in `seq` order per reservation). The checkpoint shows its position,
/// and whether its txid is that event's.
async fn dump(pool: &PgPool) -> BTreeMap<&'static str, Value> {
    let tables = [
        ("servers", "SELECT * FROM rm.servers ORDER BY id"),
        ("reservations", "SELECT * FROM rm.reservations ORDER BY id"),
        (
            "schedule",
            "SELECT * FROM rm.schedule ORDER BY server_id, reservation_id",
        ),
        ("streams", "SELECT * FROM rm.streams ORDER BY aggregate_id"),
        (
            "checkpoint",
            "SELECT c.name, c.position, c.txid = e.txid AS txid_of_that_event \
             FROM rm.checkpoint c LEFT JOIN events e USING (position) ORDER BY name",
        ),
        (
            "slot_cursor",
            "SELECT * FROM slot_cursor ORDER BY aggregate_id",
        ),
        (
            "slot_boundaries",
            "SELECT reservation_id, kind, revision, server_id, due_at, opens_at, closes_at, \
                 start_at, end_at, stream_key_hash, ingest, stream_key_digest, title, \
                 published_at, late_ms, published_by \
             FROM slot_boundaries ORDER BY reservation_id, seq",
        ),
        (
            "indexes",
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'rm' \
             ORDER BY tablename, indexname",
        ),
    ];
    let mut out = BTreeMap::new();
    for (name, sql) in tables {
        let sql = format!("SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t");
        let rows: Value = sqlx::query_scalar(&sql).fetch_one(pool).await.expect(name);
        out.insert(name, rows);
    }
    out
}

fn assert_same(want: &BTreeMap<&str, Value>, got: &BTreeMap<&str, Value>) {
    for (table, rows) in want {
        assert_eq!(Some(rows), got.get(table), "table {table} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_the_tables_the_writer_and_catch_up_gave() {
    let h = history();
    let mut types: Vec<String> = h.events().map(|d| d.event.event_type()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types.len(),
        11,
        "every kind of event is in the store: {types:?}"
    );
    let db = TestDb::new().await;
    let pool = db.pool().await;
    for group in &h.groups {
        write(&pool, group, true).await;
    }
    settle(&pool).await;
    let live = dump(&pool).await;
    assert!(
        live["reservations"].as_array().map_or(0, Vec::len) >= 27
            && live["slot_boundaries"].as_array().map_or(0, Vec::len) > 40,
        "the scenario books and announces: {live:?}"
    );
    let viewer_urls: Vec<&Value> = live["servers"]
        .as_array()
        .map(|rows| rows.iter().map(|r| &r["viewer_url"]).collect())
        .unwrap_or_default();
    assert_eq!(
        viewer_urls,
        [&json!("http://s1.example:8888"), &Value::Null, &Value::Null],
        "s1 keeps its viewer address, s2's was taken away, s3 never had one"
    );
    // Every boundary carries its reservation's title, through reschedules and rotations too.
    let (titled, astray): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE b.title IS NOT NULL), \
                count(*) FILTER (WHERE b.title IS DISTINCT FROM r.title) \
         FROM slot_boundaries b JOIN rm.reservations r ON r.id = b.reservation_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(titled > 0, "no boundary with a title");
    assert_eq!(
        astray, 0,
        "boundaries whose title is not their reservation's"
    );

    let events = rebuild_now(&pool).await;
    assert_eq!(events as usize, h.events().count());
    assert_eq!(settle(&pool).await, 0, "the rebuilt copy holds every event");
    assert_same(&live, &dump(&pool).await);
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('rm_next', 'rm_old')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);

    // The writer goes on projecting into the copy swapped in.
    let mut h = h;
    h.groups.clear();
    let start = t0() + Duration::days(3);
    let kind = CommandKind::RequestReservation {
        reservation_id: "after".into(),
        start,
        end: start + Duration::minutes(30),
        title: None,
        stream_key_hash: "k".into(),
        stream_key_digest: None,
        source: None,
    };
    h.decide(
        "s3",
        t0() + Duration::days(2),
        person(Role::Distributor, "alice"),
        kind,
    );
    write(&pool, &h.groups[0], true).await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM rm.reservations WHERE id = 'after'")
            .fetch_one(&pool)
            .await
            .expect("the new booking is in the read model");
    assert_eq!(status, "accepted");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_a_lagging_projection_gives_what_catch_up_would() {
    let h = history();
    // Everything after the first third is written without its projection, as an api with
    // inline projection off (or one that crashed after commit) leaves it.
    let projected = h.groups.len() / 3;
    let lagging = TestDb::new().await;
    let lagging_pool = lagging.pool().await;
    let reference = TestDb::new().await;
    let reference_pool = reference.pool().await;
    for (i, group) in h.groups.iter().enumerate() {
        write(&lagging_pool, group, i < projected).await;
        write(&reference_pool, group, true).await;
    }
    settle(&reference_pool).await;
    let want = dump(&reference_pool).await;

    let events = rebuild_now(&lagging_pool).await;
    assert_eq!(events as usize, h.events().count());
    assert_eq!(
        settle(&lagging_pool).await,
        0,
        "the rebuilt copy holds every event"
    );
    let got = dump(&lagging_pool).await;
    assert_same(&want, &got);
    lagging_pool.close().await;
    reference_pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_rebuild_follow_transaction_order_across_a_digit_boundary() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let now: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&pool)
        .await
        .unwrap();
    // A power of ten well below every transaction still running: 998, 999, 1000, 1001 sort
    // the other way round as text.
    let mut k = 1i64;
    while k * 10 <= now / 2 {
        k *= 10;
    }
    assert!(
        k >= 10,
        "the cluster has run at least 20 transactions ({now})"
    );
    let ops = person(Role::Operator, "ops");
    for (i, txid) in [k - 2, k - 1, k, k + 1].into_iter().enumerate() {
        let server = format!("s{i}");
        let spec = ServerSpec {
            id: server.clone(),
            name: server.clone(),
            carriers: carriers(1),
            ..ServerSpec::default()
        };
        let command = Command {
            now: t0(),
            actor: ops.clone(),
            kind: CommandKind::RegisterServer(spec),
        };
        let event = ServerSchedule::default().decide(command).unwrap();
        // The transaction id the column's default records, given as a value.
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, txid, prev_hash, hash) \
             SELECT $1, $2, 1, $3, $4, p, '{}', $6::text::xid8, g, \
                 slotcast_event_hash(g, $2, 1, $3, $4, p::text, '{}') \
             FROM (SELECT $5::jsonb::json AS p, decode(repeat('00', 32), 'hex') AS g) AS r",
        )
        .bind(ServerSchedule::TYPE)
        .bind(&server)
        .bind(event.event_type())
        .bind(event.event_version())
        .bind(serde_json::to_value(&event).unwrap())
        .bind(txid.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    for _ in 0..10 {
        if catch_up(&pool, 1).await.expect("catch up").seen == 0 {
            break;
        }
    }
    let servers: i64 = sqlx::query_scalar("SELECT count(*) FROM rm.servers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        servers, 4,
        "catch-up, one event at a time, reached every server"
    );
    rebuild_now(&pool).await;
    let checkpoint: String = sqlx::query_scalar("SELECT txid::text FROM rm.checkpoint")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(checkpoint, (k + 1).to_string(), "the newest transaction's");
    pool.close().await;
}
