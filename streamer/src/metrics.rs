//! The streamer's Prometheus metrics (`/metrics` on the viewer address).
//!
//! Contract: counters and gauges are atomics, cheap to touch per packet; the registry is
//! encoded on scrape only. Viewer counts are computed at scrape time from the hub.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed word of the code's, never text a peer sent.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabel {
    /// `key` (`?key=` or Basic) or `digest`.
    pub auth: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Publisher connections open (RTSP and RTMP).
    pub connections: Gauge,
    /// Publishers recording now.
    pub sessions: Gauge,
    pub ingest_bytes: Counter,
    pub frames: Counter,
    pub parts: Counter,
    /// Publishers refused or dropped, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// Publishers that went live, by how they authenticated.
    pub publishers: Family<AuthLabel, Counter>,
    /// Distinct viewer addresses that fetched a playlist in the last few seconds.
    pub viewers: Gauge,
    /// From the arrival of a part's first frame to the part being in the playlist.
    pub part_latency: Histogram,
    /// WHEP sessions open.
    pub realtime_viewers: Gauge,
    /// WHEP relays running: streams shaped (and their AAC made Opus) once for their viewers.
    pub realtime_relays: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("slotcast_streamer");
        let connections = Gauge::default();
        let sessions = Gauge::default();
        let ingest_bytes = Counter::default();
        let frames = Counter::default();
        let parts = Counter::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let publishers = Family::<AuthLabel, Counter>::default();
        let viewers = Gauge::default();
        let realtime_viewers = Gauge::default();
        let realtime_relays = Gauge::default();
        // 5 ms steps up to 500 ms, then coarser: the latency target is part + 50 ms.
        let buckets = (1..=100)
            .map(|i| f64::from(i) * 0.005)
            .chain([0.75, 1.0, 2.0, 5.0]);
        let part_latency = Histogram::new(buckets);
        registry.register(
            "connections",
            "Publisher connections open (RTSP and RTMP)",
            connections.clone(),
        );
        registry.register("sessions", "Publishers recording now", sessions.clone());
        registry.register(
            "ingest_bytes",
            "Bytes received from publishers",
            ingest_bytes.clone(),
        );
        registry.register("frames", "Frames depacketized", frames.clone());
        registry.register("parts", "LL-HLS parts announced", parts.clone());
        registry.register(
            "refusals",
            "Publishers refused or dropped",
            refusals.clone(),
        );
        registry.register(
            "publishers",
            "Publishers that went live, by how they authenticated",
            publishers.clone(),
        );
        registry.register(
            "viewers",
            "Viewer addresses that fetched a playlist in the last 10 s",
            viewers.clone(),
        );
        registry.register(
            "part_latency_seconds",
            "From a part's first frame arriving to the part being announced",
            part_latency.clone(),
        );
        registry.register(
            "realtime_viewers",
            "WHEP sessions open (real-time viewers)",
            realtime_viewers.clone(),
        );
        registry.register(
            "realtime_relays",
            "WHEP relays running: streams shaped for real time once, however many watch",
            realtime_relays.clone(),
        );
        Self {
            registry,
            connections,
            sessions,
            ingest_bytes,
            frames,
            parts,
            refusals,
            publishers,
            viewers,
            part_latency,
            realtime_viewers,
            realtime_relays,
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
