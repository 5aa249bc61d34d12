//! The read model fed from the event store, and the database every role connects to.
//!
//! Contract: every row here is derived from events only. Three paths write it and all three
//! are idempotent through `rm.streams.last_sequence` (per aggregate): the api's writer
//! (`project_batch`, inside the very transaction that inserts the events), the catch-up
//! projector (`catch_up`, by global order, for events written any other way) and `rebuild` (a
//! fresh copy, swapped in). Read-model SQL uses unqualified table names; the connection's
//! `search_path` (`rm, public` from [`db::connect`]) decides which copy they hit.

mod batch;
pub mod copy_binary;
pub mod db;
mod fold;
mod project;
pub mod read;
mod rebuild;

pub use batch::{project_batch, Projected, Stream, READ_MODEL_LOCK};
pub use project::{catch_up, project_stream, run_catch_up, CatchUp, Committed};
pub use rebuild::{rebuild, Progress, RebuildReport, Stage};

/// The numbered migrations in `migrations/`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("slot outbox: {0}")]
    Outbox(#[from] slotcast_scheduler::Error),
    #[error("unexpected data: {0}")]
    Corrupt(String),
    #[error("event {aggregate_id}#{sequence} does not decode: {source}")]
    Decode {
        aggregate_id: String,
        sequence: i64,
        source: slotcast_domain::versions::DecodeError,
    },
}

impl Error {
    /// Whether Postgres could not be reached (see [`db::is_unavailable`]): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Db(err) | Self::Outbox(slotcast_scheduler::Error::Db(err)) => {
                db::is_unavailable(err)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
