//! Prometheus metrics for the api, in a registry of its own (no global recorder), rendered by
//! `GET /metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::clock::{ClockStatus, SyncState};
use crate::store::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// One of [`METHODS`], else `other`: a client cannot add label values.
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The methods counted by name; any other is `other`.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fn method_label(method: &str) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Histogram,
    decisions: Family<OutcomeLabels, Counter>,
    conflicts: Gauge<u64, AtomicU64>,
    commits: Gauge<u64, AtomicU64>,
    committed_decisions: Gauge<u64, AtomicU64>,
    ntp_synced: Gauge,
    ntp_offset_seconds: Gauge<f64, AtomicU64>,
    turned_away: Counter,
    nats_refused: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("slotcast");
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let decisions = Family::<OutcomeLabels, Counter>::default();
        let conflicts = Gauge::<u64, AtomicU64>::default();
        let commits = Gauge::<u64, AtomicU64>::default();
        let committed_decisions = Gauge::<u64, AtomicU64>::default();
        let ntp_synced = Gauge::default();
        let ntp_offset_seconds = Gauge::<f64, AtomicU64>::default();
        let turned_away = Counter::default();
        let nats_refused = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "nats_messages_refused",
            "NATS messages dropped unrecorded: unsigned or badly signed (with SLOTCAST_SECRET_KEY)",
            nats_refused.clone(),
        );
        registry.register(
            "http_connections_turned_away",
            "Connections closed at once because the connection cap was reached",
            turned_away.clone(),
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            latency.clone(),
        );
        registry.register(
            "booking_decisions",
            "Booking and reschedule decisions by outcome",
            decisions.clone(),
        );
        registry.register(
            "event_store_conflicts",
            "Optimistic-lock conflicts (another process wrote the same server or key first)",
            conflicts.clone(),
        );
        registry.register(
            "event_store_commits",
            "Group commits: transactions that wrote decisions (events)",
            commits.clone(),
        );
        registry.register(
            "event_store_committed_decisions",
            "Decisions written by those commits (divided by the commits: the mean group size)",
            committed_decisions.clone(),
        );
        registry.register(
            "ntp_synced",
            "1 when the server clock is synced to NTP, 0 when stale or unsynced",
            ntp_synced.clone(),
        );
        registry.register(
            "ntp_offset_seconds",
            "Offset applied to the system clock from the last good NTP sync",
            ntp_offset_seconds.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            decisions,
            conflicts,
            commits,
            committed_decisions,
            ntp_synced,
            ntp_offset_seconds,
            turned_away,
            nats_refused,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method_label(method),
                status,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn decision(&self, outcome: &'static str) {
        self.decisions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A NATS message dropped: `unsigned` or `bad_signature`.
    pub fn nats_refused(&self, outcome: &'static str) {
        self.nats_refused
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A connection closed at once: the connection cap was reached.
    pub fn turned_away(&self) {
        self.turned_away.inc();
    }

    /// The exposition text, with the gauges read at this moment.
    pub fn render(&self, clock: &ClockStatus, store: &Stats) -> String {
        self.conflicts.set(store.conflicts.load(Ordering::Relaxed));
        self.commits.set(store.commits.load(Ordering::Relaxed));
        self.committed_decisions
            .set(store.decisions.load(Ordering::Relaxed));
        self.ntp_synced
            .set(i64::from(clock.state == SyncState::Synced));
        self.ntp_offset_seconds
            .set(clock.ntp.as_ref().map_or(0.0, |n| n.offset_ms / 1000.0));
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%err, "metrics did not encode");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_fixed_set_are_counted_as_other() {
        let metrics = Metrics::default();
        for method in ["GET", "BREW", "get", "X-ANYTHING-A-CLIENT-SENDS"] {
            metrics.observe_request(method, 200, Duration::from_millis(1));
        }
        let clock = crate::clock::ServerClock::new(Default::default()).status();
        let text = metrics.render(&clock, &Default::default());
        assert!(text.contains(r#"method="GET""#), "{text}");
        assert!(text.contains(r#"method="other",status="200"} 3"#), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }
}
