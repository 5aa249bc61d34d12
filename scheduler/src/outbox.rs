//! The slot-boundary projection: `ServerSchedule` events into `public.slot_boundaries`, the
//! scheduler's outbox.
//!
//! Contract: called by `project` inside the projecting transaction, once per event (guarded by
//! `slot_cursor`). An accepted reservation gets `scheduled` (due at once, so the streamer
//! knows the slot ahead), `opened` (due at `opens_at`) and `closed` (due at `closes_at`),
//! revision 1. Any later change (reschedule, key rotation, cancel) takes the reservation's
//! rows `FOR UPDATE` (so it waits for a scheduler publishing one of them), drops the
//! unpublished ones and writes the next revision's:
//! - window not yet open: a fresh `scheduled` + `opened` + `closed` (`cancelled` at once, for
//!   a cancel);
//! - window open: `changed` (or `cancelled`) due at once, then `opened` again if the new
//!   window starts later, and the new `closed`.
//!
//! `scheduled` is left out when the window is already open at the decision (`opened` is then
//! due at once anyway).
//!
//! "Open" means an `opened` was published, or was due by the change: a publish whose outcome
//! is unknown (ack lost, replica killed before marking it) may have reached consumers, and
//! a `changed` or `cancelled` they did not need does no harm, while a missing one would leave
//! a gate open.
//!
//! Once `closed` or `cancelled` has gone out, nothing more is written. Every write notifies
//! [`CHANNEL`] at commit, which wakes the schedulers.

use chrono::{DateTime, Utc};
use slotcast_domain::contract::{IngestMode, SlotKind};
use slotcast_domain::ScheduleEvent;
use sqlx::{PgConnection, Row};

use crate::{Error, Result};

/// The Postgres notification channel the schedulers listen on.
pub const CHANNEL: &str = "slotcast_slot_boundaries";

/// A slot as one revision describes it.
#[derive(Clone, Debug)]
pub struct Basis {
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub stream_key_hash: String,
    pub stream_key_digest: Option<String>,
    pub ingest: serde_json::Value,
    /// The reservation's title, for its viewers.
    pub title: Option<String>,
}

enum Change {
    Window {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    },
    Key {
        hash: String,
        digest: Option<String>,
    },
    Cancel,
}

/// The outbox rows `event` asks for.
pub async fn apply(conn: &mut PgConnection, server_id: &str, event: &ScheduleEvent) -> Result<()> {
    match event {
        ScheduleEvent::ReservationAccepted {
            at,
            reservation_id,
            start,
            end,
            opens_at,
            closes_at,
            stream_key_hash,
            stream_key_digest,
            source,
            title,
            ..
        } => {
            let ingest = match source {
                Some(camera) => IngestMode::Pull(camera.clone()),
                None => IngestMode::Push {
                    carriers: server_carriers(conn, server_id).await?,
                },
            };
            let basis = Basis {
                opens_at: *opens_at,
                closes_at: *closes_at,
                start: *start,
                end: *end,
                stream_key_hash: stream_key_hash.clone(),
                stream_key_digest: stream_key_digest.clone(),
                ingest: ingest_json(&ingest),
                title: title.clone(),
            };
            let plan = plan_for(&basis, *at, false);
            insert(conn, server_id, reservation_id, 1, &basis, &plan).await
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
            let change = Change::Window {
                start: *start,
                end: *end,
                opens_at: *opens_at,
                closes_at: *closes_at,
            };
            revise(conn, server_id, reservation_id, *at, change).await
        }
        ScheduleEvent::StreamKeyRotated {
            at,
            reservation_id,
            stream_key_hash,
            stream_key_digest,
        } => {
            let change = Change::Key {
                hash: stream_key_hash.clone(),
                digest: stream_key_digest.clone(),
            };
            revise(conn, server_id, reservation_id, *at, change).await
        }
        ScheduleEvent::ReservationCancelled {
            at, reservation_id, ..
        } => revise(conn, server_id, reservation_id, *at, Change::Cancel).await,
        ScheduleEvent::ServerRegistered { .. }
        | ScheduleEvent::ServerUpdated { .. }
        | ScheduleEvent::ReservationRejected { .. }
        | ScheduleEvent::RescheduleRejected { .. }
        | ScheduleEvent::IngestReported { .. }
        | ScheduleEvent::WindowOpened { .. }
        | ScheduleEvent::WindowClosed { .. } => Ok(()),
    }
}

/// The server's carrier names as the read model has them: `rm` is projected before the slot
/// boundaries in the same transaction, so it already holds this server's registration.
async fn server_carriers(conn: &mut PgConnection, server_id: &str) -> Result<Vec<String>> {
    let carriers: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT carriers FROM rm.servers WHERE id = $1")
            .bind(server_id)
            .fetch_optional(&mut *conn)
            .await?;
    let carriers: Vec<slotcast_domain::Carrier> = match carriers {
        Some(value) => serde_json::from_value(value).map_err(|source| Error::Decode {
            what: format!("rm.servers.carriers of {server_id}"),
            source,
        })?,
        None => Vec::new(),
    };
    Ok(carriers.into_iter().map(|c| c.name).collect())
}

fn ingest_json(mode: &IngestMode) -> serde_json::Value {
    serde_json::to_value(mode).unwrap_or(serde_json::Value::Null)
}

/// Writes `plan` (kinds with their due times, in publication order) as `revision`.
async fn insert(
    conn: &mut PgConnection,
    server_id: &str,
    reservation_id: &str,
    revision: i32,
    basis: &Basis,
    plan: &[(SlotKind, DateTime<Utc>)],
) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = plan.iter().map(|(k, _)| k.as_str()).collect();
    let dues: Vec<DateTime<Utc>> = plan.iter().map(|(_, d)| *d).collect();
    sqlx::query(
        "WITH ins AS ( \
             INSERT INTO public.slot_boundaries (reservation_id, kind, revision, server_id, \
                 due_at, opens_at, closes_at, start_at, end_at, stream_key_hash, ingest, \
                 stream_key_digest, title) \
             SELECT $1, p.kind, $3, $4, p.due, $5, $6, $7, $8, $9, $10, $13, $14 \
             FROM unnest($2::text[], $11::timestamptz[]) WITH ORDINALITY AS p(kind, due, n) \
             ORDER BY p.n \
             ON CONFLICT DO NOTHING) \
         SELECT pg_notify($12, '')",
    )
    .bind(reservation_id)
    .bind(&kinds)
    .bind(revision)
    .bind(server_id)
    .bind(basis.opens_at)
    .bind(basis.closes_at)
    .bind(basis.start)
    .bind(basis.end)
    .bind(&basis.stream_key_hash)
    .bind(&basis.ingest)
    .bind(&dues)
    .bind(CHANNEL)
    .bind(&basis.stream_key_digest)
    .bind(&basis.title)
    .execute(conn)
    .await?;
    Ok(())
}

/// A change to an accepted reservation at `at`: see the module contract.
async fn revise(
    conn: &mut PgConnection,
    server_id: &str,
    reservation_id: &str,
    at: DateTime<Utc>,
    change: Change,
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT kind, revision, published_at IS NOT NULL AS published, due_at <= $2 AS due, \
                opens_at, closes_at, start_at, end_at, stream_key_hash, stream_key_digest, \
                ingest, title \
         FROM public.slot_boundaries WHERE reservation_id = $1 ORDER BY seq FOR UPDATE",
    )
    .bind(reservation_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let Some(latest) = rows.last() else {
        // Nothing was ever planned (e.g. cancelled before it opened: rows removed).
        return Ok(());
    };
    let mut revision = 0;
    let mut opened = false;
    let mut known = false;
    let mut ended = false;
    for row in &rows {
        revision = revision.max(row.try_get::<i32, _>("revision")?);
        let published: bool = row.try_get("published")?;
        let due: bool = row.try_get("due")?;
        let kind: String = row.try_get("kind")?;
        known |= published || due;
        match kind.parse::<SlotKind>().ok() {
            Some(SlotKind::Opened) if published || due => opened = true,
            Some(k) if k.ends_the_slot() && published => ended = true,
            Some(_) => {}
            None => return Err(Error::Corrupt(format!("slot boundary kind {kind}"))),
        }
    }
    if ended {
        return Ok(());
    }
    let mut basis = Basis {
        opens_at: latest.try_get("opens_at")?,
        closes_at: latest.try_get("closes_at")?,
        start: latest.try_get("start_at")?,
        end: latest.try_get("end_at")?,
        stream_key_hash: latest.try_get("stream_key_hash")?,
        stream_key_digest: latest.try_get("stream_key_digest")?,
        ingest: latest.try_get("ingest")?,
        title: latest.try_get("title")?,
    };
    sqlx::query(
        "DELETE FROM public.slot_boundaries WHERE reservation_id = $1 AND published_at IS NULL",
    )
    .bind(reservation_id)
    .execute(&mut *conn)
    .await?;
    let plan = match change {
        // Consumers may have heard of the slot (`scheduled`, `opened`): tell them it is off.
        Change::Cancel if known => vec![(SlotKind::Cancelled, at)],
        Change::Cancel => Vec::new(),
        Change::Window {
            start,
            end,
            opens_at,
            closes_at,
        } => {
            basis.start = start;
            basis.end = end;
            basis.opens_at = opens_at;
            basis.closes_at = closes_at;
            plan_for(&basis, at, opened)
        }
        Change::Key { hash, digest } => {
            basis.stream_key_hash = hash;
            basis.stream_key_digest = digest;
            plan_for(&basis, at, opened)
        }
    };
    insert(conn, server_id, reservation_id, revision + 1, &basis, &plan).await
}

/// The messages a new or changed slot needs, given whether consumers have seen it open.
pub fn plan_for(basis: &Basis, at: DateTime<Utc>, opened: bool) -> Vec<(SlotKind, DateTime<Utc>)> {
    let mut plan = Vec::with_capacity(3);
    if opened {
        plan.push((SlotKind::Changed, at));
    } else if basis.opens_at > at {
        plan.push((SlotKind::Scheduled, at));
    }
    if !opened || basis.opens_at > at {
        plan.push((SlotKind::Opened, basis.opens_at.max(at)));
    }
    plan.push((SlotKind::Closed, basis.closes_at.max(at)));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_900_000_000 + s, 0).unwrap()
    }

    fn basis(opens: i64, closes: i64) -> Basis {
        Basis {
            opens_at: t(opens),
            closes_at: t(closes),
            start: t(opens),
            end: t(closes),
            stream_key_hash: "k".into(),
            stream_key_digest: None,
            ingest: serde_json::Value::Null,
            title: None,
        }
    }

    fn kinds(plan: &[(SlotKind, DateTime<Utc>)]) -> Vec<&'static str> {
        plan.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn a_booking_or_a_change_before_the_window_opened_plans_a_fresh_window() {
        let plan = plan_for(&basis(100, 200), t(10), false);
        assert_eq!(kinds(&plan), ["scheduled", "opened", "closed"]);
        assert_eq!(plan[0].1, t(10));
        assert_eq!(plan[1].1, t(100));
    }

    #[test]
    fn a_change_inside_the_window_says_changed_at_once() {
        let plan = plan_for(&basis(0, 300), t(50), true);
        assert_eq!(kinds(&plan), ["changed", "closed"]);
        assert_eq!(plan[0].1, t(50));
        assert_eq!(plan[1].1, t(300));
    }

    #[test]
    fn an_open_window_moved_later_closes_now_and_reopens_then() {
        let plan = plan_for(&basis(100, 300), t(50), true);
        assert_eq!(kinds(&plan), ["changed", "opened", "closed"]);
        assert_eq!(plan[1].1, t(100));
    }

    #[test]
    fn a_window_already_due_is_due_at_the_decision() {
        let plan = plan_for(&basis(0, 300), t(50), false);
        assert_eq!(plan[0], (SlotKind::Opened, t(50)));
    }
}
