//! Whether Postgres is answering, as this api last saw it: while it is not, the requests that
//! need it are answered 503 `unavailable` (with `Retry-After`) at once, instead of each one
//! waiting out the pool, and the api serves again as soon as Postgres does, without a restart.
//!
//! Contract: whatever finds Postgres unreachable marks it down: a request answered
//! [`ApiError::DatabaseUnavailable`] (the [`DatabaseDown`] mark on its response, seen by
//! [`gate`]) or a store lane whose commit broke. While it is down, [`watch`] asks Postgres
//! every [`PROBE_EVERY`] and marks it up at the first answer. Nothing is queued meanwhile:
//! what was refused is the client's to retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, DatabaseDown};
use crate::state::AppState;

/// How often Postgres is asked again while it is down.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Up or down; shared by the gate, the store's lanes and the watcher.
#[derive(Debug, Default)]
pub struct Database {
    down: AtomicBool,
    changed: Notify,
}

impl Database {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Postgres could not be reached: answer 503 until [`watch`] hears from it again.
    pub fn mark_down(&self) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!("the database is unavailable; answering 503 until it is back");
            self.changed.notify_one();
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("the database answers again");
        }
    }
}

/// Middleware for the routes that need Postgres: 503 at once while it is down; marks it down
/// when a response says it could not be reached.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.database.is_down() {
        return ApiError::database_unavailable().into_response();
    }
    let response = next.run(req).await;
    if response.extensions().get::<DatabaseDown>().is_some() {
        state.database.mark_down();
    }
    response
}

/// Waits for `database` to be marked down, then probes `pool` until Postgres answers; again,
/// until `shutdown`.
pub async fn watch(pool: PgPool, database: Arc<Database>, shutdown: CancellationToken) {
    loop {
        while !database.is_down() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = database.changed.notified() => {}
            }
        }
        while database.is_down() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
            let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool);
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                database.mark_up();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marked_down_once_and_woken_once() {
        let database = Database::default();
        assert!(!database.is_down());
        database.mark_down();
        database.mark_down();
        assert!(database.is_down());
        // The first mark left one wake-up for the watcher.
        tokio::time::timeout(Duration::from_secs(1), database.changed.notified())
            .await
            .expect("the watcher is woken");
        database.mark_up();
        assert!(!database.is_down());
    }
}
