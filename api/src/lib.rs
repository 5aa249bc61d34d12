//! slotcast's REST API: booking over HTTP, the NTP-disciplined server clock, auth, and the
//! event-store wiring.
//!
//! Contract: [`serve`] owns everything it starts (clock sync, catch-up projector, HTTP) and
//! stops all of it when the shutdown token is cancelled. Errors map to HTTP only in
//! [`error`].

pub mod anchors;
pub mod auth;
pub mod clock;
pub mod clock_select;
pub mod config;
pub mod consumers;
pub mod database;
pub mod error;
pub mod idempotency;
mod metrics;
pub mod routes;
pub mod state;
pub mod store;
pub mod token_cache;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
pub use error::ApiError;

use slotcast_scheduler::Scheduler;

use crate::clock::ServerClock;
use crate::state::AppState;
use crate::store::ScheduleStore;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Db(#[from] slotcast_readmodel::Error),
    #[error("{0}")]
    Nats(#[from] slotcast_nats::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
}

/// Builds the state (pool, migrations, clock) the api runs on.
pub async fn state(config: ApiConfig) -> Result<AppState, ServeError> {
    slotcast_readmodel::db::migrate(&config.database_url).await?;
    let pool = slotcast_readmodel::db::connect(&config.database_url, config.db_connections).await?;
    let database = Arc::new(database::Database::default());
    Ok(AppState {
        store: Arc::new(ScheduleStore::new(
            pool.clone(),
            config.store(),
            database.clone(),
        )),
        database,
        inflight: Default::default(),
        clock: ServerClock::new(config.clock.clone()),
        tokens: Default::default(),
        metrics: Default::default(),
        health: Default::default(),
        config: Arc::new(config),
        pool,
    })
}

/// Runs the api until `shutdown`; `on_listen` is told the bound address (useful with port 0).
pub async fn serve(
    config: ApiConfig,
    shutdown: CancellationToken,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = config.addr;
    let state = state(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::Http)?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(state.clock.clone().run(shutdown.clone()));
    tasks.spawn(database::watch(
        state.pool.clone(),
        state.database.clone(),
        shutdown.clone(),
    ));
    if let Some(interval) = state.config.catch_up_interval {
        tasks.spawn(slotcast_readmodel::run_catch_up(
            state.pool.clone(),
            interval,
            shutdown.clone(),
        ));
    }
    tasks.spawn(expire_idempotency(state.clone(), shutdown.clone()));
    tasks.spawn(auth::watch_revocations(
        state.pool.clone(),
        state.tokens.clone(),
        shutdown.clone(),
    ));
    let nats = match state.config.nats.clone() {
        Some(nats_config) => Some(slotcast_nats::connect(nats_config, "slotcast-api").await?),
        None => None,
    };
    tasks.spawn(anchors::run(
        state.pool.clone(),
        nats.clone(),
        state.config.audit_anchor_interval,
        shutdown.clone(),
    ));
    if let Some(nats) = nats {
        tasks.spawn(consumers::run(
            state.clone(),
            nats.clone(),
            shutdown.clone(),
        ));
        if let Some(config) = state.config.scheduler.clone() {
            let scheduler = Scheduler::new(
                state.pool.clone(),
                nats,
                Arc::new(state.clock.clone()),
                config,
                state.health.clone(),
            );
            tasks.spawn(scheduler.run(shutdown.clone()));
        }
    }
    on_listen(bound);
    let limits = state.config.http.clone();
    let app = routes::router(state.clone());
    let result = slotcast_http::serve(listener, app, limits, None, shutdown.clone(), move || {
        state.metrics.turned_away()
    })
    .await
    .map_err(ServeError::Http);
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    result
}

/// `slotcast server scheduler` on its own: the server clock, the outbox and NATS, and
/// optionally `/healthz` and `/readyz` on `ops_addr`.
#[derive(Clone, Debug)]
pub struct SchedulerRoleConfig {
    pub database_url: String,
    pub clock: clock::ClockConfig,
    pub nats: slotcast_nats::NatsConfig,
    pub scheduler: slotcast_scheduler::SchedulerConfig,
    pub ops_addr: Option<SocketAddr>,
}

/// Runs a scheduler replica until `shutdown`; `on_listen` is told the ops address, if any.
pub async fn run_scheduler(
    config: SchedulerRoleConfig,
    shutdown: CancellationToken,
    on_listen: impl FnOnce(Option<SocketAddr>),
) -> Result<(), ServeError> {
    slotcast_readmodel::db::migrate(&config.database_url).await?;
    let pool = slotcast_readmodel::db::connect(&config.database_url, 4).await?;
    let clock = ServerClock::new(config.clock.clone());
    let health = slotcast_nats::Health::default();
    let nats = slotcast_nats::connect(config.nats.clone(), "slotcast-scheduler").await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(clock.clone().run(shutdown.clone()));
    let scheduler = Scheduler::new(
        pool,
        nats,
        Arc::new(clock.clone()),
        config.scheduler.clone(),
        health.clone(),
    );
    tasks.spawn(scheduler.run(shutdown.clone()));
    let result = match config.ops_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            on_listen(Some(listener.local_addr().map_err(ServeError::Http)?));
            let app = routes::scheduler_ops(clock, health);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
                .map_err(ServeError::Http)
        }
        None => {
            on_listen(None);
            shutdown.cancelled().await;
            Ok(())
        }
    };
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    result
}

async fn expire_idempotency(state: AppState, shutdown: CancellationToken) {
    let ttl = state.config.idempotency_ttl;
    loop {
        if let Err(err) = idempotency::expire(&state.pool, ttl).await {
            tracing::warn!(%err, "could not expire idempotency keys");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// `serve` must be spawnable (the cli runs it on a tokio task).
    #[test]
    fn serve_future_is_send() {
        let fut = serve(
            ApiConfig::new(String::new()),
            CancellationToken::new(),
            |_| {},
        );
        assert_send(&fut);
    }
}
