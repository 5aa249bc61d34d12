//! Projecting `ServerSchedule` events into the read model.
//!
//! Contract: `project_stream` brings one aggregate's rows up to its latest committed event;
//! `catch_up` walks the global order from its checkpoint and does the same for every aggregate
//! it meets, storing the checkpoint in the same transaction. Each transaction first takes the
//! read model's shared advisory lock, so `rebuild` can swap copies under the exclusive one.
//! The scheduler's slot-boundary outbox (`slotcast_scheduler::outbox`) is projected in the same transaction, behind its own
//! cursor (`public.slot_cursor`), so whichever path gets to an event first writes both.
//! Locks: per aggregate its `rm.streams` row, then its `slot_cursor` row (`FOR UPDATE`);
//! catch-up locks the checkpoint row first and then aggregates in id order, so two projectors
//! never wait on each other in a cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use slotcast_domain::contract::IngestKind;
use slotcast_domain::versions;
use slotcast_domain::{ReservationStatus, ScheduleEvent, ServerSchedule, ServerSettings};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The advisory lock key guarding which copy of the read model is live.
pub const READ_MODEL_LOCK: i64 = 0x736c_6f74_7263_6d31; // "slotrcm1"

/// Events of one aggregate that the caller has just committed: `events[i]` has sequence
/// `first_sequence + i`. Handing them over saves reading back what was just written.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    pub first_sequence: i64,
    pub events: &'a [ScheduleEvent],
}

/// Brings `aggregate_id`'s read-model rows up to date. Returns how many events it applied
/// (0 when another path got there first). `committed`, when given, is used as is if it comes
/// right after what is projected; otherwise the events are read from the store.
pub async fn project_stream(
    pool: &PgPool,
    aggregate_id: &str,
    committed: Option<Committed<'_>>,
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    share_read_model(&mut tx).await?;
    let applied = project_stream_in(&mut tx, aggregate_id, committed).await?;
    tx.commit().await?;
    Ok(applied)
}

pub(crate) async fn share_read_model(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(READ_MODEL_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// The body of [`project_stream`], inside the caller's transaction.
pub(crate) async fn project_stream_in(
    conn: &mut PgConnection,
    aggregate_id: &str,
    committed: Option<Committed<'_>>,
) -> Result<u64> {
    // Creates both cursor rows on first sight and locks them either way, in one round trip;
    // `slot` reads from `rm`, so the read model's row is always locked first.
    let (last, slot_last): (i64, i64) = sqlx::query_as(
        "WITH rm AS ( \
             INSERT INTO streams (aggregate_id, last_sequence) VALUES ($1, 0) \
             ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = streams.last_sequence \
             RETURNING last_sequence), \
         slot AS ( \
             INSERT INTO public.slot_cursor (aggregate_id, last_sequence) \
             SELECT $1, 0 FROM rm \
             ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = slot_cursor.last_sequence \
             RETURNING last_sequence) \
         SELECT rm.last_sequence, slot.last_sequence FROM rm, slot",
    )
    .bind(aggregate_id)
    .fetch_one(&mut *conn)
    .await?;
    let from = last.min(slot_last);
    let loaded;
    let pending: Vec<(i64, &ScheduleEvent)> = match committed {
        Some(c) if c.first_sequence == from + 1 => {
            (c.first_sequence..).zip(c.events.iter()).collect()
        }
        _ => {
            loaded = load_after(conn, aggregate_id, from).await?;
            loaded
                .iter()
                .map(|(sequence, event)| (*sequence, event))
                .collect()
        }
    };
    let Some(&(newest, _)) = pending.last() else {
        return Ok(0);
    };
    let mut applied = 0;
    for (sequence, event) in &pending {
        if *sequence > last {
            apply(conn, aggregate_id, event).await?;
            applied += 1;
        }
        if *sequence > slot_last {
            slotcast_scheduler::outbox::apply(conn, aggregate_id, event).await?;
        }
    }
    sqlx::query(
        "WITH rm AS (UPDATE streams SET last_sequence = greatest(last_sequence, $2) \
                     WHERE aggregate_id = $1) \
         UPDATE public.slot_cursor SET last_sequence = greatest(last_sequence, $2) \
         WHERE aggregate_id = $1",
    )
    .bind(aggregate_id)
    .bind(newest)
    .execute(&mut *conn)
    .await?;
    Ok(applied)
}

/// `aggregate_id`'s committed events after sequence `last`, in order.
async fn load_after(
    conn: &mut PgConnection,
    aggregate_id: &str,
    last: i64,
) -> Result<Vec<(i64, ScheduleEvent)>> {
    let rows = sqlx::query(
        "SELECT sequence, event_type, event_version, payload FROM public.events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
    )
    .bind(ServerSchedule::TYPE)
    .bind(aggregate_id)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let sequence: i64 = row.try_get("sequence")?;
            let event_type: String = row.try_get("event_type")?;
            let event_version: String = row.try_get("event_version")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            let event =
                versions::decode(&event_type, &event_version, payload).map_err(|source| {
                    Error::Decode {
                        aggregate_id: aggregate_id.to_string(),
                        sequence,
                        source,
                    }
                })?;
            Ok((sequence, event))
        })
        .collect()
}

/// What one catch-up batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read from the global order in this batch.
    pub seen: u64,
    /// Events applied (the rest had been applied inline already).
    pub applied: u64,
}

/// Reads up to `batch` events past the checkpoint, among finished transactions only, projects
/// every aggregate they touch and moves the checkpoint, all in one transaction.
pub async fn catch_up(pool: &PgPool, batch: i64) -> Result<CatchUp> {
    let mut tx = pool.begin().await?;
    share_read_model(&mut tx).await?;
    let done = catch_up_in(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(done)
}

pub(crate) async fn catch_up_in(conn: &mut PgConnection, batch: i64) -> Result<CatchUp> {
    let checkpoint = sqlx::query(
        "SELECT txid::text AS txid, position FROM checkpoint WHERE name = 'catch_up' FOR UPDATE",
    )
    .fetch_one(&mut *conn)
    .await?;
    let txid: String = checkpoint.try_get("txid")?;
    let position: i64 = checkpoint.try_get("position")?;
    // `ORDER BY` names the table's columns, not the text output column `txid`: a bare name
    // there means the output column, and text order is not transaction order ("1000" sorts
    // before "999"), which would move the checkpoint past events not yet read.
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.sequence, e.txid::text AS txid, e.position \
         FROM public.events e \
         WHERE e.aggregate_type = $1 \
           AND (e.txid, e.position) > ($2::text::xid8, $3) \
           AND e.txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY e.txid, e.position LIMIT $4",
    )
    .bind(ServerSchedule::TYPE)
    .bind(&txid)
    .bind(position)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last() else {
        return Ok(CatchUp::default());
    };
    let last_txid: String = last.try_get("txid")?;
    let last_position: i64 = last.try_get("position")?;
    // The newest sequence this batch saw per aggregate.
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let entry = newest.entry(id).or_insert(sequence);
        *entry = (*entry).max(sequence);
    }
    // Usually the inline projector got there first: skip those aggregates without locking
    // them, so catch-up never makes a booking's inline projection wait.
    let ids: Vec<String> = newest.keys().cloned().collect();
    let projected: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.aggregate_id, least(s.last_sequence, coalesce(c.last_sequence, 0)) \
         FROM streams s LEFT JOIN public.slot_cursor c USING (aggregate_id) \
         WHERE s.aggregate_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (id, last) in projected {
        if newest.get(&id).is_some_and(|n| *n <= last) {
            newest.remove(&id);
        }
    }
    let mut applied = 0;
    for aggregate_id in newest.keys() {
        applied += project_stream_in(conn, aggregate_id, None).await?;
    }
    sqlx::query(
        "UPDATE checkpoint SET txid = $1::text::xid8, position = $2 WHERE name = 'catch_up'",
    )
    .bind(&last_txid)
    .bind(last_position)
    .execute(&mut *conn)
    .await?;
    Ok(CatchUp {
        seen: rows.len() as u64,
        applied,
    })
}

/// Runs catch-up every `interval` (and straight again while batches come back full) until
/// `shutdown`. Errors are logged and retried at the next tick: a projector never stops.
pub async fn run_catch_up(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    const BATCH: i64 = 1000;
    loop {
        let pause = match catch_up(&pool, BATCH).await {
            Ok(done) if done.seen as i64 == BATCH => Duration::ZERO,
            Ok(done) => {
                if done.applied > 0 {
                    // Usually a race won against an inline projection still in flight; a
                    // failed inline projection has logged a warning of its own.
                    tracing::debug!(
                        applied = done.applied,
                        "catch-up applied events before inline dispatch did"
                    );
                }
                interval
            }
            Err(err) => {
                tracing::warn!(%err, "catch-up failed; retrying");
                interval
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn carriers_json(settings: &ServerSettings) -> serde_json::Value {
    serde_json::to_value(&settings.carriers).unwrap_or(serde_json::Value::Null)
}

async fn upsert_server(
    conn: &mut PgConnection,
    settings: &ServerSettings,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO servers (id, name, capacity, min_lead_s, max_duration_s, horizon_s, \
                              preroll_s, grace_s, carriers, registered_at, updated_at, \
                              viewer_url) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET name = $2, capacity = $3, min_lead_s = $4, \
            max_duration_s = $5, horizon_s = $6, preroll_s = $7, grace_s = $8, carriers = $9, \
            updated_at = $10, viewer_url = $11",
    )
    .bind(&settings.id)
    .bind(&settings.name)
    .bind(settings.capacity as i32)
    .bind(settings.min_lead_s as i64)
    .bind(settings.max_duration_s as i64)
    .bind(settings.horizon_s as i64)
    .bind(settings.preroll_s as i64)
    .bind(settings.grace_s as i64)
    .bind(carriers_json(settings))
    .bind(at)
    .bind(&settings.viewer_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// One event's effect on the read model.
async fn apply(conn: &mut PgConnection, server_id: &str, event: &ScheduleEvent) -> Result<()> {
    match event {
        ScheduleEvent::ServerRegistered { at, settings }
        | ScheduleEvent::ServerUpdated { at, settings } => {
            upsert_server(conn, settings, *at).await?;
        }
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
            source,
            ..
        } => {
            sqlx::query(
                "INSERT INTO reservations (id, server_id, owner, title, start_at, end_at, \
                     opens_at, closes_at, status, stream_key_hash, requested_at, updated_at, \
                     camera_url, camera_transport, camera_login) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $14, $9, $10, $10, $11, $12, \
                     $13)",
            )
            .bind(reservation_id)
            .bind(server_id)
            .bind(owner)
            .bind(title)
            .bind(start)
            .bind(end)
            .bind(opens_at)
            .bind(closes_at)
            .bind(stream_key_hash)
            .bind(at)
            .bind(source.as_ref().map(|c| c.url.as_str()))
            .bind(source.as_ref().map(|c| c.transport.as_str()))
            .bind(source.as_ref().is_some_and(|c| c.credentials.is_some()))
            .bind(ReservationStatus::Accepted.as_str())
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO schedule (server_id, reservation_id, start_at, end_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(server_id)
            .bind(reservation_id)
            .bind(start)
            .bind(end)
            .execute(&mut *conn)
            .await?;
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
            sqlx::query(
                "INSERT INTO reservations (id, server_id, owner, title, start_at, end_at, \
                     status, reason, requested_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $9, $7, $8, $8)",
            )
            .bind(reservation_id)
            .bind(server_id)
            .bind(owner)
            .bind(title)
            .bind(start)
            .bind(end)
            .bind(reason.explain())
            .bind(at)
            .bind(ReservationStatus::Rejected.as_str())
            .execute(conn)
            .await?;
        }
        ScheduleEvent::ReservationCancelled {
            at, reservation_id, ..
        } => {
            sqlx::query("UPDATE reservations SET status = $3, updated_at = $2 WHERE id = $1")
                .bind(reservation_id)
                .bind(at)
                .bind(ReservationStatus::Cancelled.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM schedule WHERE server_id = $1 AND reservation_id = $2")
                .bind(server_id)
                .bind(reservation_id)
                .execute(&mut *conn)
                .await?;
        }
        ScheduleEvent::ReservationRescheduled {
            at,
            reservation_id,
            start,
            end,
            opens_at,
            closes_at,
            ..
        } => {
            sqlx::query(
                "UPDATE reservations SET start_at = $2, end_at = $3, opens_at = $4, \
                     closes_at = $5, updated_at = $6 WHERE id = $1",
            )
            .bind(reservation_id)
            .bind(start)
            .bind(end)
            .bind(opens_at)
            .bind(closes_at)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE schedule SET start_at = $3, end_at = $4 \
                 WHERE server_id = $1 AND reservation_id = $2",
            )
            .bind(server_id)
            .bind(reservation_id)
            .bind(start)
            .bind(end)
            .execute(&mut *conn)
            .await?;
        }
        // A refused reschedule changes nothing; the history shows it.
        ScheduleEvent::RescheduleRejected { .. } => {}
        // Refusals of strangers change nothing about the reservation's own publisher.
        ScheduleEvent::IngestReported {
            kind: IngestKind::Refused,
            ..
        } => {}
        ScheduleEvent::IngestReported {
            at,
            reservation_id,
            kind,
            carrier,
            ..
        } => {
            // Connected makes it live; a connect recorded after the window's close (the two
            // feeds are consumed independently) still turns `missed` into `ended`.
            let connected = *kind == IngestKind::Connected;
            // Statuses are bound, never written in the SQL: $7 → $8 is accepted → live, $9 →
            // $10 is missed → ended.
            sqlx::query(
                "UPDATE reservations SET ingest = $2, ingest_carrier = coalesce($3, ingest_carrier), \
                     ingest_at = $4, ingested = ingested OR $5, updated_at = $4, \
                     status = CASE WHEN NOT $5 THEN status \
                                   WHEN status = $7 THEN $8 \
                                   WHEN status = $9 THEN $10 \
                                   ELSE status END \
                 WHERE id = $1 AND server_id = $6",
            )
            .bind(reservation_id)
            .bind(kind.as_str())
            .bind(carrier)
            .bind(at)
            .bind(connected)
            .bind(server_id)
            .bind(ReservationStatus::Accepted.as_str())
            .bind(ReservationStatus::Live.as_str())
            .bind(ReservationStatus::Missed.as_str())
            .bind(ReservationStatus::Ended.as_str())
            .execute(conn)
            .await?;
        }
        // The window opening changes no status: `live` waits for a publisher.
        ScheduleEvent::WindowOpened { .. } => {}
        ScheduleEvent::WindowClosed {
            at, reservation_id, ..
        } => {
            // Accepted or live ($4, $5) becomes ended ($6) after ingest, else missed ($7).
            sqlx::query(
                "UPDATE reservations SET updated_at = $2, \
                     status = CASE WHEN status IN ($4, $5) \
                                   THEN CASE WHEN ingested THEN $6 ELSE $7 END \
                                   ELSE status END \
                 WHERE id = $1 AND server_id = $3",
            )
            .bind(reservation_id)
            .bind(at)
            .bind(server_id)
            .bind(ReservationStatus::Accepted.as_str())
            .bind(ReservationStatus::Live.as_str())
            .bind(ReservationStatus::Ended.as_str())
            .bind(ReservationStatus::Missed.as_str())
            .execute(conn)
            .await?;
        }
        ScheduleEvent::StreamKeyRotated {
            at,
            reservation_id,
            stream_key_hash,
            ..
        } => {
            sqlx::query(
                "UPDATE reservations SET stream_key_hash = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(reservation_id)
            .bind(stream_key_hash)
            .bind(at)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}
