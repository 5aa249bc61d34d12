//! `slotcast admin rebuild`: replay every event into a fresh copy of the read model and swap
//! it in.
//!
//! Contract: the live copy keeps serving (and being projected) while the new one is built in
//! schema `rm_next`; the swap renames schemas in one transaction under the read model's
//! exclusive advisory lock, after a last catch-up, so no projector writes across the swap.
//! Events that commit after that are picked up by the per-aggregate sequence guard (inline)
//! or by the catch-up checkpoint the new copy carries.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgPool};

use crate::project::{catch_up_in, READ_MODEL_LOCK};
use crate::Result;

/// Read-model tables, in creation order.
const TABLES: [&str; 5] = [
    "streams",
    "checkpoint",
    "servers",
    "reservations",
    "schedule",
];

const BATCH: i64 = 5000;

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

pub async fn rebuild(pool: &PgPool) -> Result<RebuildReport> {
    let started = Instant::now();
    // A connection of its own: its search_path points at the copy being built, so it must
    // never go back to the pool.
    let mut conn = pool.acquire().await?.detach();
    conn.execute("DROP SCHEMA IF EXISTS rm_next CASCADE; CREATE SCHEMA rm_next")
        .await?;
    for table in TABLES {
        conn.execute(
            format!("CREATE TABLE rm_next.{table} (LIKE rm.{table} INCLUDING ALL)").as_str(),
        )
        .await?;
    }
    conn.execute(
        "INSERT INTO rm_next.checkpoint (name, txid, position) VALUES ('catch_up', '0', 0); \
         SET search_path TO rm_next, public",
    )
    .await?;
    let mut events = 0;
    loop {
        let mut tx = conn.begin().await?;
        let done = catch_up_in(&mut tx, BATCH).await?;
        tx.commit().await?;
        events += done.applied;
        if done.seen == 0 {
            break;
        }
    }
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
    Ok(RebuildReport {
        events,
        elapsed: started.elapsed(),
    })
}
