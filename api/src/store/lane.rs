//! One lane of the store: gathers the commands that arrived together, decides them in order on
//! its cached aggregates, and commits them as one group. A group that loses a race is decided
//! again; one that fails for another reason is split, each command decided and committed
//! alone, so a command the database refuses fails only itself.
//!
//! Contract: the lane is the only owner of its cache, so no lock guards it. A decision is
//! applied to the cached aggregate as soon as it is made (the next command in the group sees
//! it); if the group does not commit, every server it touched is reloaded from the store before
//! it is decided on again. Each command gets exactly one reply; a command whose caller has
//! gone is still decided and committed. When Postgres cannot be reached (or a commit's
//! connection broke) the lane marks the database down and answers 503 at once, without the
//! retries and splitting meant for a command the database refused, and so does every group
//! it takes while the database is down (`crate::database`).
//!
//! Connection: the lane keeps the pooled connection its groups commit on for as long as
//! commands keep coming, and hands it back once its queue is empty. sqlx pings a connection
//! when it is taken from the pool and again when it is given back; one ping per busy stretch
//! instead of two per group saves a round trip in every group's path and two wake-ups of a
//! Postgres backend. A connection whose group failed for any reason but a lost race is closed,
//! not kept, so the next group starts on a fresh (pinged) one.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{PersistedEventRepository, PersistenceError};
use cqrs_es::Aggregate;
use futures_util::FutureExt;
use postgres_es::PostgresEventRepository;
use rand::Rng;
use slotcast_domain::audit::{Hash, Metadata, StoredRow, GENESIS};
use slotcast_domain::{ScheduleEvent, ServerSchedule, ServerSettings};
use slotcast_readmodel::Stream;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::mpsc;

use super::sql::{self, Fail, Race, Settled};
use super::{Decided, Job, Reply, Stats, StoreConfig};
use crate::database::Database;
use crate::error::ApiError;
use crate::idempotency::Sealed;

/// Tries before a group gives up on servers other processes keep writing to.
const ATTEMPTS: u32 = 12;
/// Tries of a command whose commit fails for a reason other than a lost race.
const FAILURES: u32 = 3;

struct Cached {
    state: ServerSchedule,
    sequence: usize,
    /// The hash of the event at `sequence` (the next event's `prev_hash`).
    head: Hash,
    /// False until loaded from the store, and again after a group that touched it failed.
    loaded: bool,
}

pub(super) struct Lane {
    rx: mpsc::Receiver<Job>,
    pool: PgPool,
    repo: PostgresEventRepository,
    config: StoreConfig,
    stats: Arc<Stats>,
    database: Arc<Database>,
    cache: HashMap<String, Cached>,
    /// The connection groups commit on while the queue keeps the lane busy.
    conn: Option<PoolConnection<Postgres>>,
}

/// A decision of this attempt, not yet committed.
struct Staged {
    decided: Decided,
    /// Its events as they will be stored, hashed and chained.
    rows: Vec<StoredRow>,
    answer: Option<(u16, serde_json::Value)>,
    sealed: Option<Sealed>,
    sequence: usize,
}

enum Outcome {
    /// Refused before any event (invalid, not found, forbidden, …): nothing to commit.
    Error(ApiError),
    Staged(Box<Staged>),
}

impl Lane {
    pub(super) fn new(
        rx: mpsc::Receiver<Job>,
        pool: PgPool,
        config: StoreConfig,
        stats: Arc<Stats>,
        database: Arc<Database>,
    ) -> Self {
        Self {
            rx,
            repo: PostgresEventRepository::new(pool.clone()),
            pool,
            config,
            stats,
            database,
            cache: HashMap::new(),
            conn: None,
        }
    }

    pub(super) async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut jobs = vec![first];
            self.gather(&mut jobs).await;
            // A panic is a bug, but it must not take the lane's servers down with it: the
            // group's callers hear 503 (their reply senders are dropped), and the cache, which
            // may hold a half-applied group, is dropped and reloaded from the store.
            let processed = AssertUnwindSafe(self.process(jobs)).catch_unwind().await;
            if processed.is_err() {
                tracing::error!("a lane failed on a group; its cache is reloaded");
                self.cache.clear();
                self.close_connection();
            }
            if self.rx.is_empty() {
                // Idle: the connection goes back to the pool (pinged there), so a lane never
                // sits on one, nor starts after a quiet spell on one Postgres may have dropped.
                self.conn = None;
            }
        }
    }

    /// Adds what has arrived meanwhile, up to `batch_max`, waiting at most `batch_wait`.
    async fn gather(&mut self, jobs: &mut Vec<Job>) {
        let deadline = tokio::time::Instant::now() + self.config.batch_wait;
        while jobs.len() < self.config.batch_max.max(1) {
            match self.rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Empty) if !self.config.batch_wait.is_zero() => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
    }

    async fn process(&mut self, jobs: Vec<Job>) {
        if self.database.is_down() {
            fail_with(jobs, ApiError::database_unavailable);
            return;
        }
        if let Some(jobs) = self.group(jobs).await {
            // The group failed for a reason of its own, not a lost race: each command again
            // alone, in order, so that one the database refuses fails alone.
            for job in jobs {
                if self.database.is_down() {
                    fail_with(vec![job], ApiError::database_unavailable);
                } else if let Some(left) = self.group(vec![job]).await {
                    fail(left, "the database failed the commit; retry");
                }
            }
        }
        // Keep no cache entry for ids that are not servers.
        self.cache
            .retain(|_, c| !c.loaded || c.state.settings().is_some());
    }

    /// Decides and commits `jobs` as one group, retrying lost races (bounded). Returns the jobs
    /// when a group of several failed to commit for another reason, for the caller to split.
    async fn group(&mut self, mut jobs: Vec<Job>) -> Option<Vec<Job>> {
        let mut attempt = 0;
        let mut failures = 0;
        while !jobs.is_empty() {
            attempt += 1;
            jobs = self.load(jobs).await;
            let (waiting, outcomes) = self.decide(jobs);
            jobs = waiting;
            let touched: HashSet<String> = jobs
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Staged(_)))
                .map(|(job, _)| job.server_id.clone())
                .collect();
            if touched.is_empty() {
                finish(jobs, outcomes);
                break;
            }
            let failure = self.commit(&jobs, &outcomes).await;
            let Err(failure) = failure else {
                finish(jobs, outcomes);
                break;
            };
            for server_id in &touched {
                if let Some(cached) = self.cache.get_mut(server_id) {
                    cached.loaded = false;
                }
            }
            match failure {
                Fail::Lost(race) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    if race == Race::Idempotency {
                        jobs = self.answer_stored(jobs).await;
                    }
                }
                Fail::NotCommitted(err) if postgres_unreachable(&*err) => {
                    tracing::warn!(%err, "a commit failed: the database is unavailable");
                    self.database.mark_down();
                    fail_with(jobs, ApiError::database_unavailable);
                    break;
                }
                Fail::NotCommitted(err) if jobs.len() > 1 => {
                    tracing::warn!(%err, "a group commit failed; deciding its commands one by one");
                    return Some(jobs);
                }
                Fail::NotCommitted(err) => {
                    tracing::warn!(%err, attempt, "a commit failed");
                    failures += 1;
                    if failures >= FAILURES {
                        // The lane's other servers wait while this one is retried: give up
                        // soon, the client retries after `Retry-After`.
                        fail(jobs, "the database failed the commit; retry");
                        break;
                    }
                }
                Fail::Unknown { txid, error } => {
                    tracing::warn!(%error, txid, "a group commit went unanswered; asking Postgres");
                    if slotcast_readmodel::db::is_unavailable(&error) {
                        // New requests are answered 503 meanwhile, not queued behind this.
                        self.database.mark_down();
                    }
                    let probe = outcomes.iter().find_map(|o| match o {
                        Outcome::Staged(staged) => staged.rows.first(),
                        Outcome::Error(_) => None,
                    });
                    let settled = match probe {
                        Some(probe) => sql::settle(&self.pool, &txid, probe).await,
                        // Nothing was written (cannot happen: only staged groups commit).
                        None => Settled::Aborted,
                    };
                    match settled {
                        Settled::Committed => {
                            self.count(&outcomes);
                            finish(jobs, outcomes);
                            break;
                        }
                        Settled::Aborted => {}
                        Settled::Unknown => {
                            fail_with(jobs, ApiError::database_unavailable);
                            break;
                        }
                    }
                }
            }
            if attempt >= ATTEMPTS {
                fail(jobs, "the event store is busy; retry");
                break;
            }
            let jitter = rand::rng().random_range(0..(2u64 << attempt.min(6)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        None
    }

    /// Makes sure every server of `jobs` is loaded; the jobs of a server that cannot be loaded
    /// are answered 503 and left out.
    async fn load(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let mut unloaded: Vec<String> = Vec::new();
        for job in &jobs {
            let loaded = self.cache.get(&job.server_id).is_some_and(|c| c.loaded);
            if !loaded && !unloaded.contains(&job.server_id) {
                unloaded.push(job.server_id.clone());
            }
        }
        let mut broken = HashSet::new();
        for server_id in unloaded {
            match self.reload(&server_id).await {
                Ok(cached) => {
                    self.cache.insert(server_id, cached);
                }
                Err(err) => {
                    tracing::warn!(%err, server_id, "cannot load a server's events");
                    if matches!(err, ApiError::DatabaseUnavailable(_)) {
                        self.database.mark_down();
                    }
                    broken.insert(server_id);
                }
            }
        }
        if broken.is_empty() {
            return jobs;
        }
        let (lost, kept): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| broken.contains(&job.server_id));
        if self.database.is_down() {
            fail_with(lost, ApiError::database_unavailable);
        } else {
            fail(lost, "the event store cannot be read right now; retry");
        }
        kept
    }

    /// Every event of `server_id`, through postgres-es.
    async fn reload(&self, server_id: &str) -> Result<Cached, ApiError> {
        let events = self
            .repo
            .get_last_events::<ServerSchedule>(server_id, 0)
            .await
            .map_err(|err| match &err {
                PersistenceError::ConnectionError(cause)
                | PersistenceError::UnknownError(cause)
                    if postgres_unreachable(&**cause) =>
                {
                    ApiError::database_unavailable()
                }
                _ => ApiError::internal(err),
            })?;
        let mut cached = Cached {
            state: ServerSchedule::default(),
            sequence: 0,
            head: GENESIS,
            loaded: true,
        };
        for event in events {
            let decoded: ScheduleEvent = slotcast_domain::versions::decode(
                &event.event_type,
                &event.event_version,
                event.payload,
            )
            .map_err(ApiError::internal)?;
            cached.state.apply(decoded);
            cached.sequence = event.sequence;
        }
        if cached.sequence > 0 {
            cached.head = sql::hash_at(&self.pool, server_id, cached.sequence as i64).await?;
        }
        Ok(cached)
    }

    /// Decides each job in order, applying each decision to the cache at once. Errors that
    /// cannot depend on an uncommitted decision of this group (none staged before them on
    /// their server) are answered now; the rest wait for the commit with their outcome.
    fn decide(&mut self, jobs: Vec<Job>) -> (Vec<Job>, Vec<Outcome>) {
        let mut waiting = Vec::with_capacity(jobs.len());
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut staged_on: HashSet<String> = HashSet::new();
        for mut job in jobs {
            let cached = self
                .cache
                .get_mut(&job.server_id)
                .expect("load() left only jobs whose server is loaded");
            let event = match cached.state.decide(job.command.clone()) {
                Ok(event) => event,
                Err(err) => {
                    if staged_on.contains(&job.server_id) {
                        waiting.push(job);
                        outcomes.push(Outcome::Error(err.into()));
                    } else {
                        let _ = job.reply.send(Err(err.into()));
                    }
                    continue;
                }
            };
            let decided = Decided {
                settings: settings_after(&cached.state, &event),
                events: vec![event],
            };
            let (answer, sealed) = match job.once.as_mut() {
                None => (None, None),
                Some(once) => match (once.answer)(&decided)
                    .and_then(|(status, body)| Ok((once.key.seal(status, &body)?, status, body)))
                {
                    Ok((sealed, status, body)) => (Some((status, body)), Some(sealed)),
                    Err(err) => {
                        // Nothing applied yet: this one fails alone.
                        let _ = job.reply.send(Err(err));
                        continue;
                    }
                },
            };
            let (rows, head) = match seal(&job, cached, &decided.events) {
                Ok(sealed) => sealed,
                Err(err) => {
                    let _ = job.reply.send(Err(ApiError::internal(err)));
                    continue;
                }
            };
            for event in &decided.events {
                cached.state.apply(event.clone());
            }
            cached.sequence += decided.events.len();
            cached.head = head;
            staged_on.insert(job.server_id.clone());
            outcomes.push(Outcome::Staged(Box::new(Staged {
                sequence: cached.sequence,
                rows,
                decided,
                answer,
                sealed,
            })));
            waiting.push(job);
        }
        (waiting, outcomes)
    }

    /// The group's one transaction.
    async fn commit(&mut self, jobs: &[Job], outcomes: &[Outcome]) -> Result<(), Fail> {
        let mut rows: Vec<&StoredRow> = Vec::with_capacity(jobs.len());
        let mut by_server: Vec<(&str, Vec<ScheduleEvent>, i64, Option<&ServerSettings>)> =
            Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut answers = Vec::new();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            let Outcome::Staged(staged) = outcome else {
                continue;
            };
            let first = staged.sequence + 1 - staged.decided.events.len();
            rows.extend(&staged.rows);
            let at = *index.entry(job.server_id.as_str()).or_insert_with(|| {
                by_server.push((job.server_id.as_str(), Vec::new(), first as i64, None));
                by_server.len() - 1
            });
            by_server[at]
                .1
                .extend(staged.decided.events.iter().cloned());
            by_server[at].3 = staged.decided.settings.as_ref();
            if let Some(sealed) = &staged.sealed {
                answers.push(sealed);
            }
        }
        let streams: Vec<Stream<'_>> = by_server
            .iter()
            .map(|(id, events, first, settings)| Stream {
                aggregate_id: id,
                first_sequence: *first,
                events,
                settings: *settings,
            })
            .collect();
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self
                .conn
                .insert(self.pool.acquire().await.map_err(sql::classify)?),
        };
        let committed = sql::commit(
            conn,
            &rows,
            &streams,
            &answers,
            self.config.inline_projection,
        )
        .await;
        match committed {
            Ok(()) => {}
            // Rolled back cleanly: the connection is as good as before.
            Err(Fail::Lost(_)) => return committed,
            Err(_) => {
                self.close_connection();
                return committed;
            }
        }
        self.count(outcomes);
        Ok(())
    }

    /// Closes the held connection instead of giving it back: after a failure its state is
    /// not known.
    fn close_connection(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }

    fn count(&self, outcomes: &[Outcome]) {
        let decisions = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Staged(_)))
            .count();
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decisions
            .fetch_add(decisions as u64, Ordering::Relaxed);
    }

    /// After losing a race on an Idempotency-Key: answers the jobs whose key another process
    /// has committed with that answer; the rest are decided again.
    async fn answer_stored(&self, jobs: Vec<Job>) -> Vec<Job> {
        let mut kept = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Some(once) = &job.once else {
                kept.push(job);
                continue;
            };
            match once.key.lookup(&self.pool).await {
                Ok(Some((status, body))) => {
                    let _ = job.reply.send(Ok(Reply::Replay(status, body)));
                }
                Ok(None) => kept.push(job),
                Err(err) => {
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        kept
    }
}

/// The server's settings once `event` is applied (what `Decided` reports), without applying
/// it: the answer is built before the decision touches the cache.
fn settings_after(state: &ServerSchedule, event: &ScheduleEvent) -> Option<ServerSettings> {
    match event {
        ScheduleEvent::ServerRegistered { settings, .. }
        | ScheduleEvent::ServerUpdated { settings, .. } => Some(settings.clone()),
        _ => state.settings().cloned(),
    }
}

/// `events`, decided for `job` right after what `cached` holds, as rows: each with the
/// metadata slotcast records (who, which request, when, and the command, so an audit can
/// decide it again), hashed and chained from the cached head; and the new head.
fn seal(
    job: &Job,
    cached: &Cached,
    events: &[ScheduleEvent],
) -> Result<(Vec<StoredRow>, Hash), serde_json::Error> {
    let mut head = cached.head;
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let metadata = Metadata {
            actor: job.context.actor.clone(),
            request_id: job.context.request_id.clone(),
            recorded_at: slotcast_domain::time::rfc3339_us(&job.context.recorded_at),
            reservation_id: event.reservation_id().map(str::to_string),
            command: Some(job.command.clone()),
        };
        let sequence = (cached.sequence + 1 + i) as i64;
        rows.push(StoredRow::seal(
            &job.server_id,
            sequence,
            event,
            &metadata,
            &mut head,
        )?);
    }
    Ok((rows, head))
}

/// Answers every job with its outcome (the group committed).
fn finish(jobs: Vec<Job>, outcomes: Vec<Outcome>) {
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let reply = match outcome {
            Outcome::Error(err) => Err(err),
            Outcome::Staged(staged) => Ok(Reply::Decided(staged.decided, staged.answer)),
        };
        let _ = job.reply.send(reply);
    }
}

/// Answers every job 503 `unavailable`.
fn fail(jobs: Vec<Job>, message: &'static str) {
    fail_with(jobs, || ApiError::unavailable(message));
}

/// Answers every job with `error()`.
fn fail_with(jobs: Vec<Job>, error: impl Fn() -> ApiError) {
    for job in jobs {
        let _ = job.reply.send(Err(error()));
    }
}

/// Whether `err` is sqlx's word that Postgres could not be reached.
fn postgres_unreachable(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<sqlx::Error>()
        .is_some_and(slotcast_readmodel::db::is_unavailable)
}
