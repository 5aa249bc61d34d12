//! Executing `ServerSchedule` commands against the postgres-es event store.
//!
//! Contract: decisions are serial per server and never wait across servers. Within this
//! process a per-server async mutex orders the commands; across processes the event store's
//! sequence is the optimistic lock, and a lost race reloads and decides again (bounded, with
//! jitter). The aggregate stays cached between commands and is refreshed only with events
//! newer than it has (`get_last_events`), so a command costs one insert, not a replay. Plain
//! event-store mode: no snapshots, so each event is applied exactly once (DESIGN.md's
//! cqrs-es pitfall). After a commit the read model is updated inline unless configured off;
//! the catch-up projector covers a crash between the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use serde_json::json;
use slotcast_domain::{Command, ScheduleEvent, ServerSchedule, ServerSettings};
use sqlx::PgPool;

use crate::error::ApiError;

/// Tries before a command gives up on a server other processes keep writing to.
const ATTEMPTS: u32 = 12;

/// The outcome of a command: its events and the server's settings at decision time.
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

struct Cached {
    state: ServerSchedule,
    sequence: usize,
    /// False until loaded from the store once.
    loaded: bool,
}

type Entry = Arc<tokio::sync::Mutex<Cached>>;

pub struct ScheduleStore {
    repo: PostgresEventRepository,
    pool: PgPool,
    inline_projection: bool,
    cache: Mutex<HashMap<String, Entry>>,
    conflicts: std::sync::atomic::AtomicU64,
}

impl ScheduleStore {
    pub fn new(pool: PgPool, inline_projection: bool) -> Self {
        Self {
            repo: PostgresEventRepository::new(pool.clone()),
            pool,
            inline_projection,
            cache: Mutex::new(HashMap::new()),
            conflicts: Default::default(),
        }
    }

    /// Optimistic-lock conflicts seen so far (another process wrote first).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn entry(&self, server_id: &str) -> Entry {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(server_id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Cached {
                    state: ServerSchedule::default(),
                    sequence: 0,
                    loaded: false,
                }))
            })
            .clone()
    }

    fn forget(&self, server_id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(server_id);
    }

    /// Decides `command` on `server_id`'s schedule and commits the resulting events.
    pub async fn execute(
        &self,
        server_id: &str,
        command: Command,
        context: &Context,
    ) -> Result<Decided, ApiError> {
        let entry = self.entry(server_id);
        let mut cached = entry.lock().await;
        let mut attempt = 0;
        let (events, settings, first_sequence) = loop {
            attempt += 1;
            if !cached.loaded {
                self.refresh(server_id, &mut cached).await?;
            }
            // `decide` is `handle` without the sink's apply: the cached state changes only once
            // the events are committed, and needs no copy to stay clean if they are not.
            let event = match cached.state.decide(command.clone()) {
                Ok(event) => event,
                Err(err) => {
                    let unknown = cached.state.settings().is_none();
                    drop(cached);
                    if unknown {
                        // Keep no cache entry for ids that are not servers.
                        self.forget(server_id);
                    }
                    return Err(err.into());
                }
            };
            let events = vec![event];
            let serialized = self.serialize(server_id, cached.sequence, &events, context)?;
            match self.repo.persist::<ServerSchedule>(&serialized, None).await {
                Ok(()) => {
                    for event in &events {
                        cached.state.apply(event.clone());
                    }
                    let first_sequence = cached.sequence + 1;
                    cached.sequence += events.len();
                    break (events, cached.state.settings().cloned(), first_sequence);
                }
                Err(PersistenceError::OptimisticLockError) if attempt < ATTEMPTS => {
                    self.conflicts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let jitter = rand::rng().random_range(0..(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    self.refresh(server_id, &mut cached).await?;
                }
                Err(PersistenceError::OptimisticLockError) => return Err(ApiError::Busy),
                Err(err) => {
                    // The outcome is unknown (e.g. the connection dropped at commit): reload
                    // before the next command rather than trust the cache.
                    cached.loaded = false;
                    return Err(ApiError::internal(err));
                }
            }
        };
        drop(cached);
        if self.inline_projection {
            let committed = slotcast_projections::Committed {
                first_sequence: first_sequence as i64,
                events: &events,
            };
            let projected =
                slotcast_projections::project_stream(&self.pool, server_id, Some(committed)).await;
            if let Err(err) = projected {
                // Committed is committed: the catch-up projector will bring the read model in.
                tracing::warn!(%err, server_id, "inline projection failed");
            }
        }
        Ok(Decided { events, settings })
    }

    /// Applies the events committed since the cached sequence.
    async fn refresh(&self, server_id: &str, cached: &mut Cached) -> Result<(), ApiError> {
        let newer = self
            .repo
            .get_last_events::<ServerSchedule>(server_id, cached.sequence)
            .await
            .map_err(ApiError::internal)?;
        for event in newer {
            let sequence = event.sequence;
            let decoded: ScheduleEvent =
                serde_json::from_value(event.payload).map_err(ApiError::internal)?;
            cached.state.apply(decoded);
            cached.sequence = sequence;
        }
        cached.loaded = true;
        Ok(())
    }

    fn serialize(
        &self,
        server_id: &str,
        after: usize,
        events: &[ScheduleEvent],
        context: &Context,
    ) -> Result<Vec<SerializedEvent>, ApiError> {
        events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let payload = serde_json::to_value(event).map_err(ApiError::internal)?;
                let metadata = json!({
                    "actor": context.actor,
                    "request_id": context.request_id,
                    "recorded_at": slotcast_domain::time::rfc3339_us(&context.recorded_at),
                    "reservation_id": event.reservation_id(),
                });
                Ok(SerializedEvent::new(
                    server_id.to_string(),
                    after + i + 1,
                    ServerSchedule::TYPE.to_string(),
                    event.event_type(),
                    event.event_version(),
                    payload,
                    metadata,
                ))
            })
            .collect()
    }
}
