//! Queries over the read model, for the api; and the event-store reads behind answers "as
//! of" a past instant ([`as_of`]).
//!
//! Contract: read-only; SQL lives here and nowhere else in the read path. Time ranges are
//! half-open `[from, to)` against the slot, so a slot is listed when any part of it falls in
//! the range. Events read here are decoded through `slotcast_domain::versions::decode`, like
//! every other reader of the event store.

pub mod as_of;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use slotcast_domain::{versions, ReservationStatus, ScheduleEvent, ServerSchedule};
use sqlx::{PgPool, Row};

use crate::{Error, Result};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ServerRow {
    pub id: String,
    pub name: String,
    pub capacity: i32,
    pub min_lead_s: i64,
    pub max_duration_s: i64,
    pub horizon_s: i64,
    pub preroll_s: i64,
    pub grace_s: i64,
    pub carriers: Value,
    pub viewer_url: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReservationRow {
    pub id: String,
    pub server_id: String,
    pub owner: String,
    pub title: Option<String>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "String")]
    pub status: ReservationStatus,
    pub reason: Option<String>,
    pub stream_key_hash: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ingest: Option<String>,
    pub ingest_carrier: Option<String>,
    pub ingest_at: Option<DateTime<Utc>>,
    pub ingested: bool,
    pub camera_url: Option<String>,
    pub camera_transport: Option<String>,
    pub camera_login: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub sequence: i64,
    pub event_type: String,
    pub payload: Value,
    pub metadata: Value,
}

const SERVER_COLUMNS: &str = "id, name, capacity, min_lead_s, max_duration_s, horizon_s, \
    preroll_s, grace_s, carriers, viewer_url, registered_at, updated_at";

pub async fn servers(pool: &PgPool) -> Result<Vec<ServerRow>> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY id");
    Ok(sqlx::query_as(&sql).fetch_all(pool).await?)
}

/// Every server's `viewer_url`, once each, in order: the origins the console may show.
pub async fn viewer_origins(pool: &PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT viewer_url FROM servers WHERE viewer_url IS NOT NULL ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

pub async fn server(pool: &PgPool, id: &str) -> Result<Option<ServerRow>> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM servers WHERE id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?)
}

pub async fn reservation(pool: &PgPool, id: &str) -> Result<Option<ReservationRow>> {
    Ok(sqlx::query_as("SELECT * FROM reservations WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Which reservations to list.
#[derive(Clone, Debug, Default)]
pub struct ReservationFilter {
    /// Only this tenant's (a distributor's view); `None` lists everyone's (an operator's).
    pub owner: Option<String>,
    pub server_id: Option<String>,
    pub status: Option<ReservationStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub async fn reservations(pool: &PgPool, f: &ReservationFilter) -> Result<Vec<ReservationRow>> {
    Ok(sqlx::query_as(
        "SELECT * FROM reservations \
         WHERE ($1::text IS NULL OR owner = $1) \
           AND ($2::text IS NULL OR server_id = $2) \
           AND ($3::text IS NULL OR status = $3) \
           AND ($4::timestamptz IS NULL OR end_at > $4) \
           AND ($5::timestamptz IS NULL OR start_at < $5) \
         ORDER BY start_at, id LIMIT $6",
    )
    .bind(&f.owner)
    .bind(&f.server_id)
    .bind(f.status.map(ReservationStatus::as_str))
    .bind(f.from)
    .bind(f.to)
    .bind(f.limit)
    .fetch_all(pool)
    .await?)
}

/// A server's held slots in start order, with their reservations.
pub async fn schedule(
    pool: &PgPool,
    server_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<ReservationRow>> {
    Ok(sqlx::query_as(
        "SELECT r.* FROM schedule s JOIN reservations r ON r.id = s.reservation_id \
         WHERE s.server_id = $1 \
           AND ($2::timestamptz IS NULL OR s.end_at > $2) \
           AND ($3::timestamptz IS NULL OR s.start_at < $3) \
         ORDER BY s.start_at, s.reservation_id LIMIT $4",
    )
    .bind(server_id)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

const OLDEST_FIRST: &str =
    "SELECT sequence, event_type, payload::jsonb AS payload, metadata::jsonb AS metadata \
     FROM public.events WHERE reservation_id = $1 AND sequence > $2 AND sequence < $3 \
     ORDER BY sequence LIMIT $4";
const NEWEST_FIRST: &str =
    "SELECT sequence, event_type, payload::jsonb AS payload, metadata::jsonb AS metadata \
     FROM public.events WHERE reservation_id = $1 AND sequence > $2 AND sequence < $3 \
     ORDER BY sequence DESC LIMIT $4";

/// Where a page of a history starts: after a sequence (oldest first) or before one (newest
/// first). A reservation's events all live in its server's stream, so its sequences are
/// unique within its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    After(i64),
    Before(i64),
    /// After the first, before the second, oldest first.
    Between(i64, i64),
}

/// Up to `limit` events about one reservation from `page` on, straight from the event store.
pub async fn history(
    pool: &PgPool,
    reservation_id: &str,
    page: Page,
    limit: i64,
) -> Result<Vec<HistoryRow>> {
    let (sql, after, before) = match page {
        Page::After(seq) => (OLDEST_FIRST, seq, i64::MAX),
        Page::Between(after, before) => (OLDEST_FIRST, after, before),
        Page::Before(seq) => (NEWEST_FIRST, -1, seq),
    };
    Ok(sqlx::query_as(sql)
        .bind(reservation_id)
        .bind(after)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// The server whose events name `reservation_id` (by the `reservation_id` column the event
/// store derives from each event's metadata), if any does.
pub async fn server_of_reservation(pool: &PgPool, reservation_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT aggregate_id FROM public.events WHERE reservation_id = $1 LIMIT 1",
    )
    .bind(reservation_id)
    .fetch_optional(pool)
    .await?)
}

/// `server_id`'s events that slotcast knew at `at`, decoded, oldest first: an event is known
/// from the time it records (`metadata->>'recorded_at'`, the server clock when its request
/// arrived), and never before an event ahead of it in the server's sequence. So the answer is
/// always a prefix of the stream, a state the server really went through, even where two
/// decisions were recorded in one order and sequenced in the other. An event without a
/// `recorded_at` (slotcast writes one on every event) cannot be dated and counts as unknown.
pub async fn events_known_at(
    pool: &PgPool,
    server_id: &str,
    at: DateTime<Utc>,
) -> Result<Vec<ScheduleEvent>> {
    let rows = sqlx::query(
        "SELECT sequence, event_type, event_version, payload FROM public.events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND sequence < coalesce( \
               (SELECT min(sequence) FROM public.events \
                WHERE aggregate_type = $1 AND aggregate_id = $2 \
                  AND coalesce((metadata ->> 'recorded_at')::timestamptz > $3, true)), \
               9223372036854775807) \
         ORDER BY sequence",
    )
    .bind(ServerSchedule::TYPE)
    .bind(server_id)
    .bind(at)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let sequence: i64 = row.try_get("sequence")?;
            let event_type: String = row.try_get("event_type")?;
            let event_version: String = row.try_get("event_version")?;
            let payload: Value = row.try_get("payload")?;
            versions::decode(&event_type, &event_version, payload).map_err(|source| Error::Decode {
                aggregate_id: server_id.to_string(),
                sequence,
                source,
            })
        })
        .collect()
}
