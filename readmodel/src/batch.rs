//! Projecting a group commit inside the writer's own transaction: the events of many
//! aggregates, just inserted by the caller, into the read model and the slot outbox, so that
//! events, rows and outbox commit together or not at all.
//!
//! Contract: the caller has begun the transaction, taken the read model's shared lock and
//! inserted the events. A stream made only of bookings (accepted or refused) is written in
//! bulk: one statement for the whole batch, whatever its size, which locks every such
//! aggregate's cursor rows (`rm.streams`, then `slot_cursor`, in aggregate-id order, the order
//! catch-up locks them in) and writes only where the cursors stand right before the stream.
//! Any other stream (a cancel, a server change, a read model that lags because events were
//! written some other way) goes through the per-event path
//! ([`crate::project::project_stream_in`]), which reads what it needs from the store. Either
//! way the cursors end at the stream's last sequence, so the catch-up projector and a rebuild
//! skip what was projected here and stay idempotent.

use chrono::{DateTime, Utc};
use slotcast_domain::contract::{IngestMode, SlotKind};
use slotcast_domain::{ReservationStatus, ScheduleEvent, ServerSettings};
use sqlx::PgConnection;

pub use crate::project::READ_MODEL_LOCK;
use crate::project::{project_stream_in, Committed};
use crate::Result;
use slotcast_scheduler::outbox::{plan_for, Basis, CHANNEL};

/// One aggregate's events in a batch: `events[i]` has sequence `first_sequence + i`.
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    pub aggregate_id: &'a str,
    pub first_sequence: i64,
    pub events: &'a [ScheduleEvent],
    /// The server's settings the events were decided under (its carriers go into the slot
    /// outbox). A stream that changes them is projected event by event instead.
    pub settings: Option<&'a ServerSettings>,
}

/// What [`project_batch`] did, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Projected {
    /// Streams written in bulk.
    pub bulk: usize,
    /// Streams projected event by event.
    pub one_by_one: usize,
}

/// Projects `streams` (at most one per aggregate) in the caller's transaction, which must
/// hold the read model's shared lock ([`READ_MODEL_LOCK`], taken with the events' insert so it
/// costs no round trip of its own).
pub async fn project_batch(conn: &mut PgConnection, streams: &[Stream<'_>]) -> Result<Projected> {
    let mut ordered: Vec<&Stream<'_>> = streams.iter().filter(|s| !s.events.is_empty()).collect();
    ordered.sort_unstable_by_key(|s| s.aggregate_id);
    let mut bulk = Bulk::default();
    let mut one_by_one: Vec<&Stream<'_>> = Vec::new();
    for stream in ordered {
        match stream.settings {
            Some(settings) if stream.events.iter().all(is_booking) => bulk.add(stream, settings),
            _ => one_by_one.push(stream),
        }
    }
    let mut done = Projected {
        bulk: bulk.c_id.len(),
        one_by_one: one_by_one.len(),
    };
    // A stream whose cursors did not stand right before it (its read model lags: events
    // written some other way) was left out of the bulk write: project it from the store.
    for aggregate_id in bulk.write(conn).await? {
        done.bulk -= 1;
        done.one_by_one += 1;
        project_stream_in(conn, &aggregate_id, None).await?;
    }
    for stream in one_by_one {
        let committed = Committed {
            first_sequence: stream.first_sequence,
            events: stream.events,
        };
        project_stream_in(conn, stream.aggregate_id, Some(committed)).await?;
    }
    Ok(done)
}

fn is_booking(event: &ScheduleEvent) -> bool {
    matches!(
        event,
        ScheduleEvent::ReservationAccepted { .. } | ScheduleEvent::ReservationRejected { .. }
    )
}

/// The rows of every bulk stream, column by column (`unnest` takes one array per column).
#[derive(Default)]
struct Bulk {
    // rm.reservations
    id: Vec<String>,
    server: Vec<String>,
    owner: Vec<String>,
    title: Vec<Option<String>>,
    start: Vec<DateTime<Utc>>,
    end: Vec<DateTime<Utc>>,
    opens: Vec<Option<DateTime<Utc>>>,
    closes: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    key_hash: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
    camera_url: Vec<Option<String>>,
    camera_transport: Vec<Option<&'static str>>,
    camera_login: Vec<bool>,
    // slot_boundaries, one row per planned message
    b_reservation: Vec<String>,
    b_kind: Vec<&'static str>,
    b_server: Vec<String>,
    b_due: Vec<DateTime<Utc>>,
    b_opens: Vec<DateTime<Utc>>,
    b_closes: Vec<DateTime<Utc>>,
    b_start: Vec<DateTime<Utc>>,
    b_end: Vec<DateTime<Utc>>,
    b_key_hash: Vec<String>,
    b_ingest: Vec<serde_json::Value>,
    b_digest: Vec<Option<String>>,
    b_title: Vec<Option<String>>,
    // the cursors: where they must stand, and where they go
    c_id: Vec<String>,
    c_before: Vec<i64>,
    c_last: Vec<i64>,
}

impl Bulk {
    fn add(&mut self, stream: &Stream<'_>, settings: &ServerSettings) {
        let server_id = stream.aggregate_id;
        for event in stream.events {
            match event {
                ScheduleEvent::ReservationAccepted {
                    at,
                    reservation_id,
                    owner,
                    title,
                    start,
                    end,
                    opens_at,
                    closes_at,
                    stream_key_hash,
                    stream_key_digest,
                    source,
                } => {
                    self.reservation(server_id, reservation_id, owner, title, *start, *end, *at);
                    self.opens.push(Some(*opens_at));
                    self.closes.push(Some(*closes_at));
                    self.status.push(ReservationStatus::Accepted.as_str());
                    self.reason.push(None);
                    self.key_hash.push(Some(stream_key_hash.clone()));
                    self.camera_url.push(source.as_ref().map(|c| c.url.clone()));
                    self.camera_transport
                        .push(source.as_ref().map(|c| c.transport.as_str()));
                    self.camera_login
                        .push(source.as_ref().is_some_and(|c| c.credentials.is_some()));
                    let ingest = match source {
                        Some(camera) => IngestMode::Pull(camera.clone()),
                        None => IngestMode::Push {
                            carriers: settings.carriers.iter().map(|c| c.name.clone()).collect(),
                        },
                    };
                    let basis = Basis {
                        opens_at: *opens_at,
                        closes_at: *closes_at,
                        start: *start,
                        end: *end,
                        stream_key_hash: stream_key_hash.clone(),
                        stream_key_digest: stream_key_digest.clone(),
                        ingest: serde_json::to_value(&ingest).unwrap_or(serde_json::Value::Null),
                        title: title.clone(),
                    };
                    for (kind, due) in plan_for(&basis, *at, false) {
                        self.boundary(server_id, reservation_id, kind, due, &basis);
                    }
                }
                ScheduleEvent::ReservationRejected {
                    at,
                    reservation_id,
                    owner,
                    title,
                    start,
                    end,
                    reason,
                    ..
                } => {
                    self.reservation(server_id, reservation_id, owner, title, *start, *end, *at);
                    self.opens.push(None);
                    self.closes.push(None);
                    self.status.push(ReservationStatus::Rejected.as_str());
                    self.reason.push(Some(reason.explain()));
                    self.key_hash.push(None);
                    self.camera_url.push(None);
                    self.camera_transport.push(None);
                    self.camera_login.push(false);
                }
                // `project_batch` sends every other stream down the per-event path.
                _ => {}
            }
        }
        self.c_id.push(server_id.to_string());
        self.c_before.push(stream.first_sequence - 1);
        self.c_last
            .push(stream.first_sequence + stream.events.len() as i64 - 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn reservation(
        &mut self,
        server_id: &str,
        reservation_id: &str,
        owner: &str,
        title: &Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        at: DateTime<Utc>,
    ) {
        self.id.push(reservation_id.to_string());
        self.server.push(server_id.to_string());
        self.owner.push(owner.to_string());
        self.title.push(title.clone());
        self.start.push(start);
        self.end.push(end);
        self.at.push(at);
    }

    fn boundary(
        &mut self,
        server_id: &str,
        reservation_id: &str,
        kind: SlotKind,
        due: DateTime<Utc>,
        basis: &Basis,
    ) {
        self.b_reservation.push(reservation_id.to_string());
        self.b_kind.push(kind.as_str());
        self.b_server.push(server_id.to_string());
        self.b_due.push(due);
        self.b_opens.push(basis.opens_at);
        self.b_closes.push(basis.closes_at);
        self.b_start.push(basis.start);
        self.b_end.push(basis.end);
        self.b_key_hash.push(basis.stream_key_hash.clone());
        self.b_ingest.push(basis.ingest.clone());
        self.b_digest.push(basis.stream_key_digest.clone());
        self.b_title.push(basis.title.clone());
    }

    /// Everything in one statement: both cursors of every stream (locked in aggregate-id
    /// order, and moved on only where they stood right before the stream), the reservations and
    /// the schedule where `rm.streams` moved on, the outbox (in publication order, so `seq`
    /// follows it) where `slot_cursor` did, and one wake-up for the schedulers. Returns the
    /// aggregates whose cursors did not stand where they should.
    async fn write(self, conn: &mut PgConnection) -> Result<Vec<String>> {
        if self.c_id.is_empty() {
            return Ok(Vec::new());
        }
        let lagging: Vec<Option<String>> = sqlx::query_scalar(
            "WITH input AS ( \
                 SELECT * FROM unnest($27::text[], $28::bigint[], $29::bigint[]) \
                     WITH ORDINALITY AS i(id, before, last, n)), \
             rm AS ( \
                 INSERT INTO streams AS c (aggregate_id, last_sequence) \
                 SELECT id, CASE WHEN before = 0 THEN last ELSE 0 END FROM input ORDER BY n \
                 ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = ( \
                     SELECT CASE WHEN c.last_sequence = i.before THEN i.last \
                                 ELSE c.last_sequence END \
                     FROM input i WHERE i.id = c.aggregate_id) \
                 RETURNING aggregate_id, last_sequence), \
             slot AS ( \
                 INSERT INTO public.slot_cursor AS c (aggregate_id, last_sequence) \
                 SELECT i.id, CASE WHEN i.before = 0 THEN i.last ELSE 0 END \
                 FROM input i JOIN rm ON rm.aggregate_id = i.id ORDER BY i.n \
                 ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = ( \
                     SELECT CASE WHEN c.last_sequence = i.before THEN i.last \
                                 ELSE c.last_sequence END \
                     FROM input i WHERE i.id = c.aggregate_id) \
                 RETURNING aggregate_id, last_sequence), \
             rm_on AS (SELECT i.id FROM input i JOIN rm \
                       ON rm.aggregate_id = i.id AND rm.last_sequence = i.last), \
             slot_on AS (SELECT i.id FROM input i JOIN slot \
                         ON slot.aggregate_id = i.id AND slot.last_sequence = i.last), \
             r AS ( \
                 INSERT INTO reservations (id, server_id, owner, title, start_at, end_at, \
                     opens_at, closes_at, status, reason, stream_key_hash, requested_at, \
                     updated_at, camera_url, camera_transport, camera_login) \
                 SELECT id, server_id, owner, title, start_at, end_at, opens_at, closes_at, \
                     status, reason, key_hash, at, at, camera_url, camera_transport, login \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], \
                     $8::timestamptz[], $9::text[], $10::text[], $11::text[], \
                     $12::timestamptz[], $13::text[], $14::text[], $15::bool[]) \
                     AS u(id, server_id, owner, title, start_at, end_at, opens_at, closes_at, \
                          status, reason, key_hash, at, camera_url, camera_transport, login) \
                 WHERE server_id IN (SELECT id FROM rm_on)), \
             s AS ( \
                 INSERT INTO schedule (server_id, reservation_id, start_at, end_at) \
                 SELECT server_id, id, start_at, end_at \
                 FROM unnest($2::text[], $1::text[], $5::timestamptz[], $6::timestamptz[], \
                     $9::text[]) AS u(server_id, id, start_at, end_at, status) \
                 WHERE status = $31 AND server_id IN (SELECT id FROM rm_on)), \
             b AS ( \
                 INSERT INTO public.slot_boundaries (reservation_id, kind, revision, \
                     server_id, due_at, opens_at, closes_at, start_at, end_at, \
                     stream_key_hash, ingest, stream_key_digest, title) \
                 SELECT reservation_id, kind, 1, server_id, due_at, opens_at, closes_at, \
                     start_at, end_at, key_hash, ingest, digest, title \
                 FROM unnest($16::text[], $17::text[], $18::text[], $19::timestamptz[], \
                     $20::timestamptz[], $21::timestamptz[], $22::timestamptz[], \
                     $23::timestamptz[], $24::text[], $25::jsonb[], $26::text[], $32::text[]) \
                     WITH ORDINALITY AS u(reservation_id, kind, server_id, due_at, opens_at, \
                         closes_at, start_at, end_at, key_hash, ingest, digest, title, n) \
                 WHERE server_id IN (SELECT id FROM slot_on) \
                 ORDER BY n \
                 RETURNING 1), \
             woken AS (SELECT pg_notify($30, '') FROM (SELECT 1 FROM b LIMIT 1) AS any_b) \
             SELECT lag.id FROM (SELECT count(*) FROM woken) AS w \
             LEFT JOIN (SELECT id FROM input \
                        WHERE id NOT IN (SELECT id FROM rm_on) \
                           OR id NOT IN (SELECT id FROM slot_on)) AS lag \
             ON true",
        )
        .bind(&self.id)
        .bind(&self.server)
        .bind(&self.owner)
        .bind(&self.title)
        .bind(&self.start)
        .bind(&self.end)
        .bind(&self.opens)
        .bind(&self.closes)
        .bind(&self.status)
        .bind(&self.reason)
        .bind(&self.key_hash)
        .bind(&self.at)
        .bind(&self.camera_url)
        .bind(&self.camera_transport)
        .bind(&self.camera_login)
        .bind(&self.b_reservation)
        .bind(&self.b_kind)
        .bind(&self.b_server)
        .bind(&self.b_due)
        .bind(&self.b_opens)
        .bind(&self.b_closes)
        .bind(&self.b_start)
        .bind(&self.b_end)
        .bind(&self.b_key_hash)
        .bind(&self.b_ingest)
        .bind(&self.b_digest)
        .bind(&self.c_id)
        .bind(&self.c_before)
        .bind(&self.c_last)
        .bind(CHANNEL)
        .bind(ReservationStatus::Accepted.as_str())
        .bind(&self.b_title)
        .fetch_all(conn)
        .await?;
        Ok(lagging.into_iter().flatten().collect())
    }
}
