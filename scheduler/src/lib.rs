//! The slot clock and its outbox: slot boundaries planned from the schedule's events, then
//! published to JetStream on the server clock.
//!
//! Contract: [`outbox`] is written by the read-model projector, inside the transaction that
//! projects each event, so a boundary exists exactly when its event committed; the
//! [`Scheduler`] reads the outbox and publishes what is due, once, whatever the replicas do.
//! The NATS link itself is `slotcast_nats`'s.

pub mod outbox;
mod slot_clock;

pub use slot_clock::{Scheduler, SchedulerConfig, COMPONENT};

/// What can go wrong planning or publishing slot boundaries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("nats: {0}")]
    Nats(#[from] slotcast_nats::Error),
    #[error("nats: publish {id}: {source}")]
    Publish {
        id: String,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("nats: no ack for {id}: {source}")]
    NoAck {
        id: String,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("nats: JetStream did not answer within {0:?}")]
    AckTimeout(std::time::Duration),
    #[error("{what}: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("unexpected data: {0}")]
    Corrupt(String),
}

impl Error {
    /// Whether NATS (not the database) failed: the stream may have gone.
    pub fn is_nats(&self) -> bool {
        matches!(
            self,
            Self::Nats(_) | Self::Publish { .. } | Self::NoAck { .. } | Self::AckTimeout(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
