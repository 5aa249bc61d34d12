//! Connecting to Postgres the way every slotcast role does.
//!
//! Contract: the pool's connections resolve unqualified read-model names in schema `rm`
//! first, then `public` (the event store and auth tables). A caller waits at most
//! [`ACQUIRE_TIMEOUT`] for a connection; [`is_unavailable`] tells an error of reaching
//! Postgres (down, restarting, unreachable) from one Postgres answered.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

/// How long a caller waits for a pooled connection. While Postgres is down the pool keeps
/// trying to connect for this long, then fails with [`sqlx::Error::PoolTimedOut`]: short
/// enough that a request is answered 503 rather than left hanging, long enough to ride out
/// a busy pool.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pool of `max` connections with the read-model search path.
pub async fn connect(database_url: &str, max: u32) -> crate::Result<PgPool> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
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

/// Whether `err` means Postgres could not be reached or is not taking queries right now (so
/// the same request may succeed later), rather than an answer it gave: no connection could
/// be made or had in time, the connection broke, or the server said it is shutting down,
/// starting up or out of connection slots (SQLSTATE class 08, 57P01–57P03, 53300).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaching_postgres_is_told_from_its_answers() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unavailable(&sqlx::Error::Io(refused)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
