//! Executing `ServerSchedule` commands: one transaction per group of decisions.
//!
//! Contract: every command goes to a *lane*, a task that owns the cached aggregates of the
//! servers hashed to it (so decisions are serial per server and servers on other lanes never
//! wait for each other). A lane takes the commands that arrived together (at most
//! `batch_max`, waiting at most `batch_wait` for more), decides each on the state that
//! includes the earlier ones, and commits the whole group in one transaction: the events, the
//! read-model rows, the slot outbox rows, the stored idempotency answers and the NOTIFY
//! (`sql`). A refusal or an invalid command in a group fails nothing else. Once a command is
//! queued it runs to its end whatever its caller does (a dropped connection drops only the
//! wait for the answer).
//!
//! Across processes the event store's `(aggregate_type, aggregate_id, sequence)` primary key
//! is the optimistic lock, and the idempotency table's key the guard against deciding one key
//! twice: a group that loses either race rolls back whole, reloads the servers it touched and
//! decides again (bounded, with jitter). A commit whose outcome is unknown (the connection
//! dropped at `COMMIT`) is settled by asking Postgres, never by guessing: once its transaction
//! id is no longer in progress, by whether one of its event rows is there with its hash (an id
//! alone can be handed out again after a crash); only if that cannot be learnt either is the
//! answer 503 `unavailable`, and a retry then finds the truth in the database.
//!
//! Plain event-store mode: no snapshots, so each event is applied exactly once (cqrs-es 0.5
//! applies events twice in snapshot mode). postgres-es loads an aggregate's events; the writes
//! are ours, because its `persist` commits on its own transaction and could not take the read
//! model, the outbox and the idempotency answer with it.

mod lane;
mod sql;

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use slotcast_domain::{Command, ScheduleEvent, ServerSettings};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::database::Database;
use crate::error::ApiError;
use crate::idempotency;

/// The outcome of a command: its events and the server's settings after them.
#[derive(Clone, Debug)]
pub struct Decided {
    pub events: Vec<ScheduleEvent>,
    pub settings: Option<ServerSettings>,
}

/// Where and why a command was executed, recorded as event metadata.
#[derive(Clone, Debug)]
pub struct Context {
    pub actor: String,
    pub request_id: String,
    pub recorded_at: DateTime<Utc>,
}

/// The answer a command's caller will get, built from its decision before the commit so that
/// it can be stored (sealed) in the same transaction.
/// It may run more than once: a group that loses a race is decided again.
pub type AnswerFn =
    Box<dyn Fn(&Decided) -> Result<(u16, serde_json::Value), ApiError> + Send + Sync + 'static>;

/// A command whose answer is stored under an Idempotency-Key.
pub struct Once {
    pub key: idempotency::Key,
    pub answer: AnswerFn,
}

/// What a command with an Idempotency-Key came to.
pub enum Answered {
    /// Decided and committed now, with the answer stored.
    Fresh(Decided, u16, serde_json::Value),
    /// Another process committed this key first: its stored answer.
    Replay(u16, serde_json::Value),
}

/// How the store batches; `ApiConfig` carries it.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Lanes (concurrent committers); each server always goes to the same one.
    pub lanes: usize,
    /// The most decisions in one transaction.
    pub batch_max: usize,
    /// How long a lane waits for more decisions once it has one (zero: it takes what has
    /// arrived while the last group was committing, which is the group commit).
    pub batch_wait: Duration,
    /// Project into the read model in the same transaction (on by default). Off, the read
    /// model is fed by the catch-up projector alone.
    pub inline_projection: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            lanes: 2,
            batch_max: 128,
            batch_wait: Duration::ZERO,
            inline_projection: true,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct Stats {
    /// Optimistic-lock conflicts (another process wrote a server or a key first).
    pub conflicts: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Decisions committed (events written).
    pub decisions: AtomicU64,
}

struct Job {
    server_id: String,
    command: Command,
    context: Context,
    once: Option<Once>,
    reply: oneshot::Sender<Result<Reply, ApiError>>,
}

enum Reply {
    Decided(Decided, Option<(u16, serde_json::Value)>),
    Replay(u16, serde_json::Value),
}

/// Commands in, decisions out; cheap to share.
pub struct ScheduleStore {
    lanes: Vec<mpsc::Sender<Job>>,
    stats: Arc<Stats>,
}

/// Commands queued per lane before a caller waits to queue (the bound on memory).
const QUEUE: usize = 1024;

impl ScheduleStore {
    /// Starts the lanes on the current runtime; they stop once the store is dropped and
    /// what was queued is decided.
    pub fn new(pool: PgPool, config: StoreConfig, database: Arc<Database>) -> Self {
        let stats = Arc::new(Stats::default());
        let lanes = (0..config.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let lane = lane::Lane::new(
                    rx,
                    pool.clone(),
                    config.clone(),
                    stats.clone(),
                    database.clone(),
                );
                tokio::spawn(lane.run());
                tx
            })
            .collect();
        Self { lanes, stats }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn lane(&self, server_id: &str) -> &mpsc::Sender<Job> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        server_id.hash(&mut hasher);
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
    }

    async fn submit(
        &self,
        server_id: &str,
        command: Command,
        context: &Context,
        once: Option<Once>,
    ) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            server_id: server_id.to_string(),
            command,
            context: context.clone(),
            once,
            reply,
        };
        self.lane(server_id)
            .send(job)
            .await
            .map_err(|_| ApiError::unavailable("the api is shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::unavailable("the decision was interrupted; retry"))?
    }

    /// Decides `command` on `server_id`'s schedule and commits the resulting events.
    pub async fn execute(
        &self,
        server_id: &str,
        command: Command,
        context: &Context,
    ) -> Result<Decided, ApiError> {
        match self.submit(server_id, command, context, None).await? {
            Reply::Decided(decided, _) => Ok(decided),
            Reply::Replay(..) => Err(ApiError::internal(std::io::Error::other(
                "a command without an Idempotency-Key was answered as a replay",
            ))),
        }
    }

    /// [`execute`](Self::execute), storing the answer `once` builds under its key in the same
    /// transaction.
    pub async fn execute_once(
        &self,
        server_id: &str,
        command: Command,
        context: &Context,
        once: Once,
    ) -> Result<Answered, ApiError> {
        match self.submit(server_id, command, context, Some(once)).await? {
            Reply::Decided(decided, Some((status, body))) => {
                Ok(Answered::Fresh(decided, status, body))
            }
            Reply::Decided(_, None) => Err(ApiError::internal(std::io::Error::other(
                "a decision with an Idempotency-Key came back without its answer",
            ))),
            Reply::Replay(status, body) => Ok(Answered::Replay(status, body)),
        }
    }
}
