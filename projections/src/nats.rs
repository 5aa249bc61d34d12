//! Connecting to NATS and making sure the JetStream streams of the contract exist.
//!
//! Contract: [`connect`] never fails on an unreachable server: the client keeps retrying in
//! the background (so a role can start before NATS does), and its state is readable through
//! [`Nats::connected`]. Stream settings live here and only here; `ensure_*` create the stream
//! or update it to these settings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use serde::Serialize;
use slotcast_domain::contract::Names;

use crate::{Error, Result};

/// How slotcast reaches NATS.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject and stream names (`SLOTCAST_NATS_PREFIX`, default `slotcast`).
    pub names: Names,
    /// How long JetStream remembers slot message ids: a boundary published twice within it
    /// (two replicas, or a crash between publish and commit) is stored once.
    pub slots_duplicate_window: Duration,
    /// How long messages stay in the streams.
    pub max_age: Duration,
    /// How long a publish waits for JetStream's acknowledgement.
    pub ack_timeout: Duration,
}

impl NatsConfig {
    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    pub fn new(url: String) -> Self {
        Self {
            url,
            names: Names::default(),
            slots_duplicate_window: Duration::from_secs(3600),
            max_age: Duration::from_secs(30 * 86_400),
            ack_timeout: Duration::from_secs(2),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self::new(Self::DEFAULT_URL.to_string())
    }
}

/// A connected (or connecting) client with its JetStream context.
#[derive(Clone, Debug)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: Arc<NatsConfig>,
}

/// Connects in the background: returns at once, even when NATS is down.
pub async fn connect(config: NatsConfig, name: &str) -> Result<Nats> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        // Back off to 2 s at most: an outage ends with a quick reconnect.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6) as u64).min(2000))
        })
        .connect(config.url.as_str())
        .await
        .map_err(|e| Error::Nats(format!("cannot connect to {}: {e}", config.url)))?;
    let mut jetstream = jetstream::new(client.clone());
    jetstream.set_timeout(config.ack_timeout);
    Ok(Nats {
        client,
        jetstream,
        config: Arc::new(config),
    })
}

impl Nats {
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// `SLOTCAST_SLOTS`: every boundary, deduplicated by message id.
    pub async fn ensure_slots_stream(&self) -> Result<stream::Info> {
        let names = &self.config.names;
        self.ensure(stream::Config {
            name: names.slots_stream(),
            description: Some(
                "slotcast slot boundaries: opened, closed, changed, cancelled".into(),
            ),
            subjects: vec![names.slot_subjects()],
            storage: stream::StorageType::File,
            max_age: self.config.max_age,
            duplicate_window: self.config.slots_duplicate_window,
            ..Default::default()
        })
        .await
    }

    /// `SLOTCAST_INGEST`: what streamers report about publishers and pulls.
    pub async fn ensure_ingest_stream(&self) -> Result<stream::Info> {
        let names = &self.config.names;
        self.ensure(stream::Config {
            name: names.ingest_stream(),
            description: Some("slotcast ingest reports: connected, disconnected, failed".into()),
            subjects: vec![names.ingest_subjects()],
            storage: stream::StorageType::File,
            max_age: self.config.max_age,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
    }

    async fn ensure(&self, config: stream::Config) -> Result<stream::Info> {
        let name = config.name.clone();
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map_err(|e| Error::Nats(format!("stream {name}: {e}")))
    }
}

/// One component's view of its NATS link, for `/readyz`.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentHealth {
    pub ok: bool,
    pub detail: String,
    pub since: DateTime<Utc>,
}

/// What the NATS-facing components of this process report. Cheap to clone; a std mutex,
/// since nothing awaits while holding it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<&'static str, ComponentHealth>>>,
}

impl Health {
    /// Records `name`'s state; `since` moves only when `ok` flips.
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(name) {
            Some(c) if c.ok == ok => c.detail = detail,
            _ => {
                map.insert(
                    name,
                    ComponentHealth {
                        ok,
                        detail,
                        since: Utc::now(),
                    },
                );
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, ComponentHealth> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `name` is registered and fine.
    pub fn is_ok(&self, name: &str) -> Option<bool> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|c| c.ok)
    }
}

/// Exponential backoff with a cap, for retry loops.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max,
        }
    }

    /// The delay before the next try, doubling up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn health_keeps_since_while_the_state_holds() {
        let h = Health::default();
        assert_eq!(h.is_ok("scheduler"), None);
        h.set("scheduler", false, "nats down");
        let since = h.snapshot()["scheduler"].since;
        h.set("scheduler", false, "still down");
        assert_eq!(h.snapshot()["scheduler"].since, since);
        assert_eq!(h.snapshot()["scheduler"].detail, "still down");
        h.set("scheduler", true, "publishing");
        assert_eq!(h.is_ok("scheduler"), Some(true));
    }
}
