//! The api's typed configuration, parsed once by the cli (TOML file, then `SLOTCAST_*`
//! environment) and passed down; nothing below reads the environment.

use std::net::SocketAddr;
use std::time::Duration;

use slotcast_nats::NatsConfig;
use slotcast_scheduler::SchedulerConfig;

use crate::clock::ClockConfig;
use crate::store::StoreConfig;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where the REST API listens (`SLOTCAST_API_ADDR`, default 127.0.0.1:8080).
    pub addr: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// Connections in the pool.
    pub db_connections: u32,
    /// The NTP servers and resync policy of the server clock.
    pub clock: ClockConfig,
    /// Project each group's events into the read model in the transaction that commits them
    /// (on by default). Off, the read model is fed by the catch-up projector alone.
    pub inline_projection: bool,
    /// Booking write path: lanes, group size and wait (see `store::StoreConfig`).
    pub booking_lanes: usize,
    pub booking_batch_max: usize,
    pub booking_batch_wait: Duration,
    /// How often the catch-up projector looks for events inline dispatch missed; `None`
    /// disables it.
    pub catch_up_interval: Option<Duration>,
    /// How often each server's event-chain head is anchored (`audit_anchors` and NATS);
    /// at most a minute.
    pub audit_anchor_interval: Duration,
    /// Largest request body accepted.
    pub body_limit: usize,
    /// What the API port allows each client (timeouts, connections).
    pub http: slotcast_http::Limits,
    /// How long an Idempotency-Key's first answer is kept.
    pub idempotency_ttl: Duration,
    /// NATS, for recording the ingest and slot streams in the history; `None` runs without.
    pub nats: Option<NatsConfig>,
    /// Run the slot scheduler in this process too (`slotcast server all`).
    pub scheduler: Option<SchedulerConfig>,
    /// `SLOTCAST_SECRET_KEY`: seals each stream key's Digest credential for the streamer.
    /// `None`: publishers use `?key=` or Basic auth only.
    pub secret_key: Option<slotcast_domain::secret::SecretKey>,
}

impl ApiConfig {
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:8080";

    pub fn new(database_url: String) -> Self {
        Self {
            addr: Self::DEFAULT_ADDR
                .parse()
                .expect("the default address is a valid socket address"),
            database_url,
            db_connections: 16,
            clock: ClockConfig::default(),
            inline_projection: true,
            booking_lanes: StoreConfig::default().lanes,
            booking_batch_max: StoreConfig::default().batch_max,
            booking_batch_wait: StoreConfig::default().batch_wait,
            catch_up_interval: Some(Duration::from_millis(500)),
            audit_anchor_interval: Duration::from_secs(30),
            body_limit: 64 * 1024,
            http: slotcast_http::Limits::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            nats: Some(NatsConfig::default()),
            scheduler: None,
            secret_key: None,
        }
    }
}

impl ApiConfig {
    /// The store's part of the configuration.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            lanes: self.booking_lanes,
            batch_max: self.booking_batch_max,
            batch_wait: self.booking_batch_wait,
            inline_projection: self.inline_projection,
        }
    }
}
