//! The one cheap-clone application state every handler gets through axum's `State`.

use std::sync::Arc;

use slotcast_nats::Health;
use sqlx::PgPool;

use crate::clock::ServerClock;
use crate::config::ApiConfig;
use crate::database::Database;
use crate::idempotency::Inflight;
use crate::metrics::Metrics;
use crate::store::ScheduleStore;
use crate::token_cache::TokenCache;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub pool: PgPool,
    pub store: Arc<ScheduleStore>,
    /// Whether Postgres answers (503 at once while it does not).
    pub database: Arc<Database>,
    /// The Idempotency-Keys this process is deciding.
    pub inflight: Arc<Inflight>,
    pub clock: ServerClock,
    pub tokens: Arc<TokenCache>,
    pub metrics: Arc<Metrics>,
    /// What this process's NATS-facing parts (consumers, scheduler) report.
    pub health: Health,
}
