//! Projecting a group commit inside the writer's own transaction: the events of many
//! aggregates, just inserted by the caller, into the read model and the slot outbox, so that
//! events, rows and outbox commit together or not at all.
//!
//! Contract: the caller has begun the transaction and inserted the events; [`project_batch`]
//! takes the read model's shared lock, then every touched aggregate's cursor rows (`rm.streams`
//! and then `slot_cursor`, each in aggregate-id order, the order catch-up locks them in, so the
//! two never wait on each other in a cycle). A stream made only of bookings (accepted or
//! refused) whose cursors stand right before it is written in bulk: one statement for the
//! whole batch, whatever its size. Any other stream (a cancel, a server change, a read model
//! that lags because events were written some other way) goes through the per-event path
//! ([`crate::project::project_stream_in`]), which reads what it needs from the store. Either
//! way the cursors end at the stream's last sequence, so the catch-up projector and a rebuild
//! skip what was projected here and stay idempotent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use slotcast_domain::contract::{IngestMode, SlotKind};
use slotcast_domain::{ScheduleEvent, ServerSettings};
use sqlx::PgConnection;

use crate::project::{project_stream_in, share_read_model, Committed};
use crate::slots::{plan_for, Basis, CHANNEL};
use crate::Result;

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

/// Projects `streams` (at most one per aggregate) in the caller's transaction.
pub async fn project_batch(conn: &mut PgConnection, streams: &[Stream<'_>]) -> Result<Projected> {
    share_read_model(conn).await?;
    let mut ordered: Vec<&Stream<'_>> = streams.iter().filter(|s| !s.events.is_empty()).collect();
    ordered.sort_unstable_by_key(|s| s.aggregate_id);
    let ids: Vec<&str> = ordered.iter().map(|s| s.aggregate_id).collect();
    let cursors: Vec<(String, i64, i64)> = sqlx::query_as(
        "WITH rm AS ( \
             INSERT INTO streams (aggregate_id, last_sequence) \
             SELECT id, 0 FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) ORDER BY n \
             ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = streams.last_sequence \
             RETURNING aggregate_id, last_sequence), \
         slot AS ( \
             INSERT INTO public.slot_cursor (aggregate_id, last_sequence) \
             SELECT aggregate_id, 0 FROM rm ORDER BY aggregate_id \
             ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = slot_cursor.last_sequence \
             RETURNING aggregate_id, last_sequence) \
         SELECT rm.aggregate_id, rm.last_sequence, slot.last_sequence \
         FROM rm JOIN slot USING (aggregate_id)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let cursors: BTreeMap<String, (i64, i64)> = cursors
        .into_iter()
        .map(|(id, rm, slot)| (id, (rm, slot)))
        .collect();
    let mut bulk = Bulk::default();
    let mut done = Projected::default();
    for stream in ordered {
        let before = stream.first_sequence - 1;
        let caught_up = cursors.get(stream.aggregate_id) == Some(&(before, before));
        match stream.settings {
            Some(settings) if caught_up && stream.events.iter().all(is_booking) => {
                bulk.add(stream, settings);
                done.bulk += 1;
            }
            _ => {
                let committed = Committed {
                    first_sequence: stream.first_sequence,
                    events: stream.events,
                };
                project_stream_in(conn, stream.aggregate_id, Some(committed)).await?;
                done.one_by_one += 1;
            }
        }
    }
    bulk.write(conn).await?;
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
    // the cursors' new positions
    c_id: Vec<String>,
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
                    self.status.push("accepted");
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
                    self.status.push("rejected");
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
    }

    /// Everything in one statement: the reservations, the schedule, the outbox (in
    /// publication order, so `seq` follows it), both cursors, and one wake-up for the
    /// schedulers.
    async fn write(self, conn: &mut PgConnection) -> Result<()> {
        if self.c_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH r AS ( \
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
                          status, reason, key_hash, at, camera_url, camera_transport, login)), \
             s AS ( \
                 INSERT INTO schedule (server_id, reservation_id, start_at, end_at) \
                 SELECT server_id, id, start_at, end_at \
                 FROM unnest($2::text[], $1::text[], $5::timestamptz[], $6::timestamptz[], \
                     $9::text[]) AS u(server_id, id, start_at, end_at, status) \
                 WHERE status = 'accepted'), \
             b AS ( \
                 INSERT INTO public.slot_boundaries (reservation_id, kind, revision, \
                     server_id, due_at, opens_at, closes_at, start_at, end_at, \
                     stream_key_hash, ingest, stream_key_digest) \
                 SELECT reservation_id, kind, 1, server_id, due_at, opens_at, closes_at, \
                     start_at, end_at, key_hash, ingest, digest \
                 FROM unnest($16::text[], $17::text[], $18::text[], $19::timestamptz[], \
                     $20::timestamptz[], $21::timestamptz[], $22::timestamptz[], \
                     $23::timestamptz[], $24::text[], $25::jsonb[], $26::text[]) \
                     WITH ORDINALITY AS u(reservation_id, kind, server_id, due_at, opens_at, \
                         closes_at, start_at, end_at, key_hash, ingest, digest, n) \
                 ORDER BY n \
                 RETURNING 1), \
             c AS ( \
                 UPDATE streams SET last_sequence = u.last \
                 FROM unnest($27::text[], $28::bigint[]) AS u(id, last) \
                 WHERE aggregate_id = u.id), \
             d AS ( \
                 UPDATE public.slot_cursor SET last_sequence = u.last \
                 FROM unnest($27::text[], $28::bigint[]) AS u(id, last) \
                 WHERE aggregate_id = u.id) \
             SELECT pg_notify($29, '') WHERE EXISTS (SELECT 1 FROM b)",
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
        .bind(&self.c_last)
        .bind(CHANNEL)
        .execute(conn)
        .await?;
        Ok(())
    }
}
