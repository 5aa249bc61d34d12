//! Connecting to Postgres the way every slotcast role does.
//!
//! Contract: the pool's connections resolve unqualified read-model names in schema `rm`
//! first, then `public` (the event store and auth tables).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

/// A pool of `max` connections with the read-model search path.
pub async fn connect(database_url: &str, max: u32) -> crate::Result<PgPool> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET search_path TO rm, public").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies every pending migration, on a connection of its own with the default search path
/// (so sqlx's bookkeeping table stays in `public`, never in `rm`).
pub async fn migrate(database_url: &str) -> crate::Result<()> {
    let options: PgConnectOptions = database_url.parse()?;
    // A one-connection pool rather than a bare connection: `Migrator::run(&mut PgConnection)`
    // makes the caller's future non-`Send` (a higher-ranked lifetime limit of sqlx 0.8).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    crate::MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}
