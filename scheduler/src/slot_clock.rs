//! The slot clock: publishes each due slot boundary to JetStream, once, on the server clock.
//!
//! Contract: a [`Scheduler`] claims due rows of `public.slot_boundaries` with
//! `FOR UPDATE SKIP LOCKED` (so replicas share the work without waiting on each other),
//! publishes them with message id `<reservation>:<kind>:<revision>` (so JetStream stores a
//! boundary once even if a replica dies between publish and commit), and marks them published
//! in the same transaction. Within a reservation, a row is claimable only when no earlier row
//! of it is still unpublished: consumers see `opened` before `closed`, whatever the replicas
//! do. It sleeps until the next due time by the server clock, woken early by the projector's
//! notification; NATS or database trouble is retried with backoff and reported in [`Health`],
//! and a boundary stays in the outbox until JetStream has acknowledged it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use slotcast_domain::contract::{self, IngestMode, SlotKind, SlotMessage};
use slotcast_domain::signing;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use slotcast_nats::{Backoff, Health, Nats};

use crate::{outbox, Error, Result};

/// The clock boundaries are timed by: the api's NTP-disciplined server clock in production.
use slotcast_domain::time::Clock;

/// The `Health` component name the scheduler reports under.
pub const COMPONENT: &str = "scheduler";

/// How often the loop looks whether NATS is back while it is not connected.
const NATS_RECHECK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Recorded with each row this replica publishes (`published_by`).
    pub replica: String,
    /// Rows claimed per transaction.
    pub batch: i64,
    /// Longest sleep without looking at the outbox, in case a notification was missed.
    pub idle_poll: Duration,
    /// Pause while a due row is held by another replica (it is publishing it).
    pub held_elsewhere: Duration,
}

impl SchedulerConfig {
    pub fn new(replica: String) -> Self {
        Self {
            replica,
            batch: 256,
            idle_poll: Duration::from_secs(1),
            held_elsewhere: Duration::from_millis(10),
        }
    }
}

/// This replica's running totals, shown in its `/readyz` detail.
#[derive(Debug, Default)]
struct SchedulerStats {
    published: AtomicU64,
    failed: AtomicU64,
}

pub struct Scheduler {
    pool: PgPool,
    nats: Nats,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    health: Health,
    stats: SchedulerStats,
}

/// What one pass over the outbox did.
enum Pass {
    /// Published this many; look again at once.
    Published(usize),
    /// Nothing claimable now; the earliest unpublished boundary is due then.
    Idle(Option<DateTime<Utc>>),
}

/// A claimed outbox row.
struct Due {
    reservation_id: String,
    kind: SlotKind,
    revision: i32,
    server_id: String,
    due_at: DateTime<Utc>,
    opens_at: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    stream_key_hash: String,
    stream_key_digest: Option<String>,
    ingest: IngestMode,
    title: Option<String>,
}

impl Scheduler {
    /// A replica publishing through `nats`, timed by `clock`, reporting to `health`.
    pub fn new(
        pool: PgPool,
        nats: Nats,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
        health: Health,
    ) -> Self {
        Self {
            pool,
            nats,
            clock,
            config,
            health,
            stats: SchedulerStats::default(),
        }
    }

    /// Runs until `shutdown`. Never returns an error: every failure is retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.pool.clone(), wake.clone(), shutdown.clone()));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut stream_ready = false;
        let url = self.nats.config.shown_url();
        self.health.set(COMPONENT, false, "starting");
        while !shutdown.is_cancelled() {
            let wait = if !self.nats.connected() {
                self.health.set(
                    COMPONENT,
                    false,
                    format!("NATS unreachable at {url}; boundaries are kept and retried"),
                );
                // The client reconnects on its own; this only looks again. A fixed short
                // period, not the backoff: every boundary written meanwhile wakes this loop,
                // and a backoff doubled by those wakes would sleep seconds past the reconnect.
                NATS_RECHECK
            } else if !stream_ready {
                match self.nats.ensure_slots_stream().await {
                    Ok(_) => {
                        stream_ready = true;
                        continue;
                    }
                    Err(err) => {
                        self.health.set(COMPONENT, false, err.to_string());
                        backoff.next_delay()
                    }
                }
            } else {
                match self.pass().await {
                    Ok(Pass::Published(n)) => {
                        backoff.reset();
                        self.report_ok();
                        tracing::debug!(n, "published slot boundaries");
                        continue;
                    }
                    Ok(Pass::Idle(next)) => {
                        backoff.reset();
                        self.report_ok();
                        self.idle_wait(next)
                    }
                    Err(err) => {
                        tracing::warn!(%err, "slot boundaries not published; retrying");
                        self.health.set(COMPONENT, false, err.to_string());
                        if err.is_nats() {
                            // The stream may have gone: make sure of it again.
                            stream_ready = false;
                        }
                        backoff.next_delay()
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
            }
        }
        listener.abort();
    }

    fn report_ok(&self) {
        let published = self.stats.published.load(Ordering::Relaxed);
        let failed = self.stats.failed.load(Ordering::Relaxed);
        let stream = self.nats.config.names.slots_stream();
        self.health.set(
            COMPONENT,
            true,
            format!(
                "publishing to {stream} ({published} sent by this replica, {failed} failed passes)"
            ),
        );
    }

    /// How long to sleep when nothing is claimable.
    fn idle_wait(&self, next: Option<DateTime<Utc>>) -> Duration {
        let Some(next) = next else {
            return self.config.idle_poll;
        };
        let until = next - self.clock.now();
        match until.to_std() {
            // Due already, yet not claimable: another replica holds it right now.
            Err(_) => self.config.held_elsewhere,
            Ok(d) if d.is_zero() => self.config.held_elsewhere,
            Ok(d) => d.min(self.config.idle_poll),
        }
    }

    /// Claims what is due, publishes it, marks what JetStream acknowledged.
    async fn pass(&self) -> Result<Pass> {
        let mut tx = self.pool.begin().await?;
        let now = self.clock.now();
        let due = claim(&mut tx, now, self.config.batch).await?;
        if due.is_empty() {
            let next: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT min(due_at) FROM public.slot_boundaries WHERE published_at IS NULL",
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            return Ok(Pass::Idle(next));
        }
        // The rows stay locked until the commit: bound the wait for JetStream, so a stalled
        // NATS holds them (and any reschedule or cancel waiting on them) for about one ack
        // timeout, not one per row.
        let limit = self.nats.config.ack_timeout * 2;
        let (acked, failure) = match tokio::time::timeout(limit, self.publish(due)).await {
            Ok(done) => done,
            Err(_) => (Vec::new(), Some(Error::AckTimeout(limit))),
        };
        mark(&mut tx, &acked, &self.config.replica).await?;
        tx.commit().await?;
        self.stats
            .published
            .fetch_add(acked.len() as u64, Ordering::Relaxed);
        if let Some(err) = failure {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
        Ok(Pass::Published(acked.len()))
    }

    /// Publishes `due` (all sends first, then every acknowledgement at once); returns what
    /// JetStream acknowledged and the first failure, if any.
    async fn publish(&self, due: Vec<Due>) -> (Vec<(Due, DateTime<Utc>, f64)>, Option<Error>) {
        let names = &self.nats.config.names;
        let mut sent = Vec::with_capacity(due.len());
        let mut failure = None;
        for row in due {
            let published_at = self.clock.now();
            let late_ms = (published_at - row.due_at)
                .num_microseconds()
                .map_or(f64::MAX, |us| us as f64 / 1000.0);
            let message = SlotMessage {
                schema: contract::SCHEMA,
                kind: row.kind,
                reservation_id: row.reservation_id.clone(),
                server_id: row.server_id.clone(),
                revision: row.revision as u32,
                opens_at: row.opens_at,
                closes_at: row.closes_at,
                start: row.start,
                end: row.end,
                stream_key_hash: row.stream_key_hash.clone(),
                stream_key_digest: row.stream_key_digest.clone(),
                ingest: row.ingest.clone(),
                title: row.title.clone(),
                due_at: row.due_at,
                published_at,
                late_ms,
            };
            let id = contract::slot_message_id(&row.reservation_id, row.kind, message.revision);
            let payload = match serde_json::to_vec(&message) {
                Ok(p) => p,
                Err(source) => {
                    failure = Some(Error::Decode {
                        what: format!("slot message {id}"),
                        source,
                    });
                    break;
                }
            };
            let subject = names.slot_subject(&row.server_id, &row.reservation_id);
            let mut publish = PublishMessage::build().message_id(&id);
            if let Some(signer) = &self.nats.config.signer {
                publish = publish.header(signing::HEADER, signer.sign(&subject, &payload));
            }
            let publish = publish.payload(payload.into());
            match self.nats.jetstream.send_publish(subject, publish).await {
                Ok(ack) => sent.push((id, row, published_at, late_ms, ack)),
                Err(source) => {
                    failure = Some(Error::Publish { id, source });
                    break;
                }
            }
        }
        let answers = futures_util::future::join_all(
            sent.into_iter()
                .map(|(id, row, at, late, ack)| async move { (id, row, at, late, ack.await) }),
        )
        .await;
        let mut acked = Vec::with_capacity(answers.len());
        for (id, row, published_at, late_ms, answer) in answers {
            match answer {
                Ok(_) => acked.push((row, published_at, late_ms)),
                Err(source) => {
                    failure.get_or_insert(Error::NoAck { id, source });
                }
            }
        }
        (acked, failure)
    }
}

/// The due rows this replica may publish now: due by `now`, not held by another replica, and
/// first among their reservation's unpublished rows.
async fn claim(conn: &mut PgConnection, now: DateTime<Utc>, batch: i64) -> Result<Vec<Due>> {
    let rows = sqlx::query(
        "SELECT b.reservation_id, b.kind, b.revision, b.server_id, b.due_at, b.opens_at, \
                b.closes_at, b.start_at, b.end_at, b.stream_key_hash, b.stream_key_digest, \
                b.ingest, b.title \
         FROM public.slot_boundaries b \
         WHERE b.published_at IS NULL AND b.due_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM public.slot_boundaries e \
                           WHERE e.reservation_id = b.reservation_id \
                             AND e.published_at IS NULL AND e.seq < b.seq) \
         ORDER BY b.due_at, b.seq LIMIT $2 \
         FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(now)
    .bind(batch)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let ingest: serde_json::Value = row.try_get("ingest")?;
            Ok(Due {
                reservation_id: row.try_get("reservation_id")?,
                kind: kind
                    .parse::<SlotKind>()
                    .ok()
                    .ok_or_else(|| Error::Corrupt(format!("slot boundary kind {kind}")))?,
                revision: row.try_get("revision")?,
                server_id: row.try_get("server_id")?,
                due_at: row.try_get("due_at")?,
                opens_at: row.try_get("opens_at")?,
                closes_at: row.try_get("closes_at")?,
                start: row.try_get("start_at")?,
                end: row.try_get("end_at")?,
                stream_key_hash: row.try_get("stream_key_hash")?,
                stream_key_digest: row.try_get("stream_key_digest")?,
                ingest: serde_json::from_value(ingest).map_err(|source| Error::Decode {
                    what: "slot ingest mode".into(),
                    source,
                })?,
                title: row.try_get("title")?,
            })
        })
        .collect()
}

async fn mark(
    conn: &mut PgConnection,
    acked: &[(Due, DateTime<Utc>, f64)],
    replica: &str,
) -> Result<()> {
    if acked.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = acked
        .iter()
        .map(|(d, ..)| d.reservation_id.as_str())
        .collect();
    let kinds: Vec<&str> = acked.iter().map(|(d, ..)| d.kind.as_str()).collect();
    let revisions: Vec<i32> = acked.iter().map(|(d, ..)| d.revision).collect();
    let at: Vec<DateTime<Utc>> = acked.iter().map(|(_, p, _)| *p).collect();
    let late: Vec<f64> = acked.iter().map(|(.., l)| *l).collect();
    sqlx::query(
        "UPDATE public.slot_boundaries b \
         SET published_at = u.at, late_ms = u.late, published_by = $6 \
         FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::float8[]) \
              AS u(reservation_id, kind, revision, at, late) \
         WHERE (b.reservation_id, b.kind, b.revision) = (u.reservation_id, u.kind, u.revision)",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&revisions)
    .bind(&at)
    .bind(&late)
    .bind(replica)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forwards the projector's notifications to `wake`; reconnects on its own after a drop
/// (sqlx's listener does), and gives up only at shutdown. Without it the scheduler still
/// polls every `idle_poll`.
async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for slot boundaries; polling");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(outbox::CHANNEL).await {
            tracing::warn!(%err, "cannot listen for slot boundaries; polling");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        backoff.reset();
        // Anything may have been written while not listening.
        wake.notify_one();
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(err) => {
                    tracing::warn!(%err, "slot boundary notifications lost; reconnecting");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}
