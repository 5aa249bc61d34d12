//! `slotcast admin rebuild`: replay every event into a fresh copy of the read model and swap
//! it in.
//!
//! Contract: the live copy keeps serving (and being projected) while the new one is built in
//! schema `rm_next`; the swap renames schemas in one transaction under the read model's
//! exclusive advisory lock, after a last catch-up, so no projector writes across the swap.
//! Events that commit after that are picked up by the per-aggregate sequence guard (inline)
//! or by the catch-up checkpoint the new copy carries.
//!
//! The copy is built in bulk: every event committed when the build starts is read in one
//! ordered stream (`COPY … TO STDOUT` in one repeatable-read snapshot, by aggregate and
//! sequence), each aggregate is folded in memory (`fold.rs`) and its rows go to the tables by
//! `COPY … FROM STDIN` on a second connection, while the next aggregates are read. The tables
//! get their keys and indexes (the live copy's, by name) once loaded. The copy's checkpoint is
//! the newest event in global order that the snapshot holds among transactions older than
//! every one then running, so catch-up goes on from there exactly as if it had read them all
//! itself; what was folded beyond it is skipped by `rm.streams`. A stream whose slot outbox
//! cursor (`public.slot_cursor`) lags goes through the per-event projector for the outbox, as
//! catch-up would. Only `rm_next` and, for such a stream, the outbox are written before the
//! swap; the build's connections commit asynchronously (a crash loses only `rm_next`, which
//! the next rebuild drops), the catch-ups and the swap synchronously.

use std::time::{Duration, Instant};

use cqrs_es::Aggregate;
use futures_util::StreamExt;
use slotcast_domain::{versions, ScheduleEvent, ServerSchedule};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, watch};

use crate::copy_binary::{CopyIn, CopyOut};
use crate::fold::{Rows, StreamFold};
use crate::project::{catch_up_in, project_stream_in, READ_MODEL_LOCK};
use crate::{Error, Result};

/// Read-model tables, in creation order.
const TABLES: [&str; 5] = [
    "streams",
    "checkpoint",
    "servers",
    "reservations",
    "schedule",
];

/// Events per catch-up transaction.
const BATCH: i64 = 5000;
/// A table's rows are sent as one `COPY` once they reach this many bytes.
const COPY_BYTES: usize = 8 << 20;
/// Finished aggregates in flight between the reader and the writer.
const IN_FLIGHT: usize = 16;
/// Progress is published every this many events.
const PROGRESS_EVERY: u64 = 4096;

#[derive(Clone, Copy, Debug)]
pub struct RebuildReport {
    pub events: u64,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where a rebuild stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Creating `rm_next` and taking the snapshot.
    Starting,
    /// Reading and folding the events; `events` counts them.
    Loading,
    /// Creating the copy's keys and indexes.
    Indexing,
    /// Projecting what committed during the build (and lagging outbox cursors).
    CatchingUp,
    /// The last catch-up and the swap, under the exclusive lock.
    Swapping,
}

/// What a rebuild has done so far, published as it goes.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub stage: Stage,
    /// Events projected so far.
    pub events: u64,
    /// Events the store held when the build started (an estimate: the span of their global
    /// positions), for an ETA.
    pub expected: u64,
    pub elapsed: Duration,
}

/// Rebuilds the read model; `progress` gets the state of the build as it goes (nobody need
/// be listening).
pub async fn rebuild(pool: &PgPool, progress: &watch::Sender<Progress>) -> Result<RebuildReport> {
    let started = Instant::now();
    let report = |stage, events, expected| {
        tracing::debug!(
            ?stage,
            events,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuild"
        );
        progress.send_replace(Progress {
            stage,
            events,
            expected,
            elapsed: started.elapsed(),
        });
    };
    report(Stage::Starting, 0, 0);
    // A connection of its own: its search_path points at the copy being built, so it must
    // never go back to the pool.
    let mut conn = pool.acquire().await?.detach();
    conn.execute("SET synchronous_commit = off").await?;
    let indexes = create_tables(&mut conn).await?;

    let mut reader = pool.acquire().await?.detach();
    let snapshot = Snapshot::take(&mut reader).await?;
    report(Stage::Loading, 0, snapshot.expected);
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let writer = tokio::spawn(write_rows(conn, rx));
    let read = read_events(&mut reader, tx, |events| {
        progress.send_replace(Progress {
            stage: Stage::Loading,
            events,
            expected: snapshot.expected,
            elapsed: started.elapsed(),
        });
    })
    .await;
    // The writer ends once the reader has dropped its side, whatever the reader's outcome.
    let written = writer
        .await
        .map_err(|err| Error::Corrupt(format!("the rebuild's writer task failed: {err}")))?;
    let (mut conn, streams) = written?;
    let mut events = read?;
    reader.execute("COMMIT").await?;
    reader.close().await?;
    tracing::debug!(events, streams, "events folded into rm_next");

    report(Stage::Indexing, events, snapshot.expected);
    for statement in &indexes {
        conn.execute(statement.as_str()).await?;
    }
    sqlx::query(
        "INSERT INTO rm_next.checkpoint (name, txid, position) \
         VALUES ('catch_up', $1::text::xid8, $2)",
    )
    .bind(&snapshot.checkpoint.0)
    .bind(snapshot.checkpoint.1)
    .execute(&mut conn)
    .await?;
    conn.execute(
        "ANALYZE rm_next.servers, rm_next.reservations, rm_next.schedule, rm_next.streams; \
         SET synchronous_commit TO DEFAULT; \
         SET search_path TO rm_next, public",
    )
    .await?;

    report(Stage::CatchingUp, events, snapshot.expected);
    outbox_catch_up(&mut conn).await?;
    loop {
        let mut tx = conn.begin().await?;
        let done = catch_up_in(&mut tx, BATCH).await?;
        tx.commit().await?;
        events += done.applied;
        if done.seen == 0 {
            break;
        }
    }
    report(Stage::Swapping, events, snapshot.expected);
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(READ_MODEL_LOCK)
        .execute(&mut *tx)
        .await?;
    loop {
        let done = catch_up_in(&mut tx, BATCH).await?;
        events += done.applied;
        if done.seen == 0 {
            break;
        }
    }
    tx.execute(
        "ALTER SCHEMA rm RENAME TO rm_old; \
         ALTER SCHEMA rm_next RENAME TO rm; \
         DROP SCHEMA rm_old CASCADE",
    )
    .await?;
    tx.commit().await?;
    conn.close().await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuild swapped in"
    );
    Ok(RebuildReport {
        events,
        elapsed: started.elapsed(),
    })
}

/// Creates `rm_next` with the live tables' columns, defaults and checks, but without their
/// keys and indexes; returns the statements that add those (with the live names) once the
/// rows are in.
async fn create_tables(conn: &mut PgConnection) -> Result<Vec<String>> {
    conn.execute("DROP SCHEMA IF EXISTS rm_next CASCADE; CREATE SCHEMA rm_next")
        .await?;
    for table in TABLES {
        conn.execute(
            format!(
                "CREATE TABLE rm_next.{table} (LIKE rm.{table} INCLUDING ALL EXCLUDING INDEXES)"
            )
            .as_str(),
        )
        .await?;
    }
    // Keys first (a constraint and its index), then the other indexes.
    let rows = sqlx::query(
        "SELECT t.relname AS tab, i.relname AS idx, c.conname, \
                pg_get_constraintdef(c.oid) AS condef, pg_get_indexdef(i.oid) AS idxdef \
         FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = t.oid \
         WHERE n.nspname = 'rm' AND t.relname = ANY($1) \
         ORDER BY c.conname IS NULL, t.relname, i.relname",
    )
    .bind(&TABLES[..])
    .fetch_all(&mut *conn)
    .await?;
    let mut statements = Vec::with_capacity(rows.len());
    for row in rows {
        let table: String = row.try_get("tab")?;
        let index: String = row.try_get("idx")?;
        let constraint: Option<String> = row.try_get("conname")?;
        let statement = match constraint {
            Some(name) => {
                let definition: String = row.try_get("condef")?;
                format!(
                    "ALTER TABLE rm_next.{} ADD CONSTRAINT {} {definition}",
                    quote_ident(&table),
                    quote_ident(&name)
                )
            }
            None => {
                let definition: String = row.try_get("idxdef")?;
                let live = format!(" ON rm.{} ", quote_ident(&table));
                if !definition.contains(&live) {
                    return Err(Error::Corrupt(format!(
                        "index {index} reads {definition:?}, which names its table otherwise"
                    )));
                }
                definition.replacen(&live, &format!(" ON rm_next.{} ", quote_ident(&table)), 1)
            }
        };
        statements.push(statement);
    }
    Ok(statements)
}

/// An identifier as Postgres prints it: bare when it is plain lower case, quoted otherwise.
fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The snapshot the bulk load reads in, open on the reader's connection.
struct Snapshot {
    /// The newest `(txid, position)` among the events of transactions older than every one
    /// running at the snapshot; `("0", 0)` when there is none.
    checkpoint: (String, i64),
    expected: u64,
}

impl Snapshot {
    async fn take(conn: &mut PgConnection) -> Result<Self> {
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let checkpoint: Option<(String, i64)> = sqlx::query_as(
            "SELECT e.txid::text, e.position FROM public.events e \
             WHERE e.aggregate_type = $1 AND e.txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY e.txid DESC, e.position DESC LIMIT 1",
        )
        .bind(ServerSchedule::TYPE)
        .fetch_optional(&mut *conn)
        .await?;
        let expected: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(position) - min(position) + 1, 0) FROM public.events",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Self {
            checkpoint: checkpoint.unwrap_or_else(|| ("0".to_string(), 0)),
            expected: u64::try_from(expected).unwrap_or(0),
        })
    }
}

/// Reads every event of the snapshot by aggregate and sequence, folds each aggregate and
/// sends its rows to the writer. Returns the number of events.
async fn read_events(
    conn: &mut PgConnection,
    rows: mpsc::Sender<(String, i64, Rows)>,
    progress: impl Fn(u64),
) -> Result<u64> {
    // COPY takes no parameters: the aggregate type is a constant of ours, quoted anyway.
    let statement = format!(
        "COPY (SELECT aggregate_id, sequence, event_type, event_version, payload \
               FROM public.events WHERE aggregate_type = '{}' \
               ORDER BY aggregate_id, sequence) TO STDOUT (FORMAT binary)",
        ServerSchedule::TYPE.replace('\'', "''")
    );
    let mut stream = conn.copy_out_raw(&statement).await?;
    let mut out = CopyOut::new(5);
    let mut fold: Option<StreamFold> = None;
    let mut events = 0u64;
    let mut next_report = PROGRESS_EVERY;
    let writer_gone = || Error::Corrupt("the rebuild's writer stopped early".into());
    while let Some(chunk) = stream.next().await {
        out.push(&chunk?);
        while let Some(tuple) = out
            .next_tuple()
            .map_err(|err| Error::Corrupt(err.to_string()))?
        {
            let [Some(id), Some(sequence), Some(event_type), Some(version), Some(payload)] =
                tuple[..]
            else {
                return Err(Error::Corrupt("an event with a NULL column".into()));
            };
            let id = text(id, "aggregate_id")?;
            let sequence =
                i64::from_be_bytes(sequence.try_into().map_err(|_| {
                    Error::Corrupt("an event sequence that is not a bigint".into())
                })?);
            let event = decode(
                id,
                sequence,
                text(event_type, "event_type")?,
                text(version, "event_version")?,
                payload,
            )?;
            if fold.as_ref().is_none_or(|f| f.server_id() != id) {
                if let Some(done) = fold.replace(StreamFold::new(id)) {
                    let item = (
                        done.server_id().to_string(),
                        done.last_sequence(),
                        done.finish(),
                    );
                    rows.send(item).await.map_err(|_| writer_gone())?;
                }
            }
            if let Some(f) = fold.as_mut() {
                f.apply(sequence, &event).map_err(|dup| {
                    Error::Corrupt(format!(
                        "reservation {} is recorded twice in {id} (again at sequence {})",
                        dup.reservation_id, dup.sequence
                    ))
                })?;
            }
            events += 1;
            if events >= next_report {
                progress(events);
                next_report += PROGRESS_EVERY;
            }
        }
    }
    out.finish()
        .map_err(|err| Error::Corrupt(err.to_string()))?;
    if let Some(done) = fold {
        let item = (
            done.server_id().to_string(),
            done.last_sequence(),
            done.finish(),
        );
        rows.send(item).await.map_err(|_| writer_gone())?;
    }
    progress(events);
    Ok(events)
}

fn text<'a>(bytes: &'a [u8], column: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .map_err(|_| Error::Corrupt(format!("an event's {column} is not UTF-8")))
}

/// A stored event, as [`versions::decode_text`] reads it (straight from its text when it is at
/// today's version).
fn decode(
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &[u8],
) -> Result<ScheduleEvent> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Error::Corrupt(format!("{aggregate_id}#{sequence}: payload is not UTF-8")))?;
    versions::decode_text(event_type, event_version, text).map_err(|source| Error::Decode {
        aggregate_id: aggregate_id.to_string(),
        sequence,
        source,
    })
}

/// Writes what the reader sends into `rm_next`'s tables, one `COPY` per table each time its
/// rows reach [`COPY_BYTES`]. Returns the connection and the number of streams.
async fn write_rows(
    mut conn: PgConnection,
    mut rx: mpsc::Receiver<(String, i64, Rows)>,
) -> Result<(PgConnection, u64)> {
    let mut tables = Tables::default();
    let mut streams = 0;
    while let Some((aggregate_id, last_sequence, rows)) = rx.recv().await {
        streams += 1;
        tables.add(&aggregate_id, last_sequence, &rows);
        for table in tables.full() {
            table.flush(&mut conn).await?;
        }
    }
    for table in tables.all() {
        table.flush(&mut conn).await?;
    }
    Ok((conn, streams))
}

/// One table's pending rows.
struct Table {
    copy: &'static str,
    rows: CopyIn,
}

impl Table {
    fn new(copy: &'static str) -> Self {
        Self {
            copy,
            rows: CopyIn::new(),
        }
    }

    async fn flush(&mut self, conn: &mut PgConnection) -> Result<()> {
        if self.rows.rows() == 0 {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, CopyIn::new());
        let mut copy = conn.copy_in_raw(self.copy).await?;
        copy.send(rows.finish()).await?;
        copy.finish().await?;
        Ok(())
    }
}

struct Tables {
    streams: Table,
    servers: Table,
    reservations: Table,
    schedule: Table,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            streams: Table::new(
                "COPY rm_next.streams (aggregate_id, last_sequence) FROM STDIN (FORMAT binary)",
            ),
            servers: Table::new(
                "COPY rm_next.servers (id, name, capacity, min_lead_s, max_duration_s, \
                 horizon_s, preroll_s, grace_s, carriers, registered_at, updated_at, \
                 viewer_url) FROM STDIN (FORMAT binary)",
            ),
            reservations: Table::new(
                "COPY rm_next.reservations (id, server_id, owner, title, start_at, end_at, \
                 opens_at, closes_at, status, reason, stream_key_hash, requested_at, \
                 updated_at, ingest, ingest_carrier, ingest_at, ingested, camera_url, \
                 camera_transport, camera_login) FROM STDIN (FORMAT binary)",
            ),
            schedule: Table::new(
                "COPY rm_next.schedule (server_id, reservation_id, start_at, end_at) \
                 FROM STDIN (FORMAT binary)",
            ),
        }
    }
}

impl Tables {
    fn all(&mut self) -> [&mut Table; 4] {
        [
            &mut self.streams,
            &mut self.servers,
            &mut self.reservations,
            &mut self.schedule,
        ]
    }

    fn full(&mut self) -> impl Iterator<Item = &mut Table> {
        self.all()
            .into_iter()
            .filter(|t| t.rows.len() >= COPY_BYTES)
    }

    /// One stream's rows, encoded as the per-event SQL binds them (`project.rs`).
    fn add(&mut self, aggregate_id: &str, last_sequence: i64, rows: &Rows) {
        self.streams
            .rows
            .row(2)
            .text(aggregate_id)
            .int8(last_sequence);
        for server in &rows.servers {
            let s = &server.settings;
            let carriers = serde_json::to_string(&s.carriers).unwrap_or_else(|_| "null".into());
            self.servers
                .rows
                .row(12)
                .text(&s.id)
                .text(&s.name)
                .int4(s.capacity as i32)
                .int8(s.min_lead_s as i64)
                .int8(s.max_duration_s as i64)
                .int8(s.horizon_s as i64)
                .int8(s.preroll_s as i64)
                .int8(s.grace_s as i64)
                .jsonb(&carriers)
                .timestamptz(server.registered_at)
                .timestamptz(server.updated_at)
                .opt_text(s.viewer_url.as_deref());
        }
        for r in &rows.reservations {
            self.reservations
                .rows
                .row(20)
                .text(&r.id)
                .text(&r.server_id)
                .text(&r.owner)
                .opt_text(r.title.as_deref())
                .timestamptz(r.start_at)
                .timestamptz(r.end_at)
                .opt_timestamptz(r.opens_at)
                .opt_timestamptz(r.closes_at)
                .text(r.status.as_str())
                .opt_text(r.reason)
                .opt_text(r.stream_key_hash.as_deref())
                .timestamptz(r.requested_at)
                .timestamptz(r.updated_at)
                .opt_text(r.ingest.map(|k| k.as_str()))
                .opt_text(r.ingest_carrier.as_deref())
                .opt_timestamptz(r.ingest_at)
                .bool(r.ingested)
                .opt_text(r.camera_url.as_deref())
                .opt_text(r.camera_transport)
                .bool(r.camera_login);
        }
        for s in &rows.schedule {
            self.schedule
                .rows
                .row(4)
                .text(&s.server_id)
                .text(&s.reservation_id)
                .timestamptz(s.start_at)
                .timestamptz(s.end_at);
        }
    }
}

/// Streams whose slot outbox cursor is behind what the copy holds (or missing): their outbox
/// is brought up by the per-event projector, as catch-up would have, one transaction each.
/// Needs the connection's search_path on `rm_next`.
async fn outbox_catch_up(conn: &mut PgConnection) -> Result<()> {
    let lagging: Vec<String> = sqlx::query_scalar(
        "SELECT s.aggregate_id FROM rm_next.streams s \
         LEFT JOIN public.slot_cursor c USING (aggregate_id) \
         WHERE c.last_sequence IS NULL OR c.last_sequence < s.last_sequence \
         ORDER BY s.aggregate_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for aggregate_id in lagging {
        let mut tx = conn.begin().await?;
        project_stream_in(&mut tx, &aggregate_id, None).await?;
        tx.commit().await?;
    }
    Ok(())
}
