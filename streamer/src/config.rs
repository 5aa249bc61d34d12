//! The streamer's typed configuration, parsed once at start (by the cli) and passed down.
//!
//! Contract: no environment reads here; [`parse_listeners`] turns the
//! `SLOTCAST_INGEST_LISTENERS` (and `SLOTCAST_RTMP_LISTENERS`, `SLOTCAST_SRT_LISTENERS`,
//! `SLOTCAST_WHIP_LISTENERS`) text into listeners and says exactly what is wrong with it;
//! [`parse_networks`] does the same for `SLOTCAST_CAMERA_NETWORKS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Result, StreamerError};

/// `10.20.0.0/16,192.168.7.5` (a bare address is a /32 or /128) into networks; `any` is
/// every address, private ones included (`0.0.0.0/0,::/0`).
pub fn parse_networks(text: &str) -> Result<Vec<ipnet::IpNet>> {
    if text.trim() == "any" {
        return parse_networks("0.0.0.0/0,::/0");
    }
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    StreamerError::Config(format!(
                        "camera network {item:?} is neither an address nor a CIDR network \
                         (e.g. 10.20.0.0/16)"
                    ))
                })
        })
        .collect()
}

/// One ingest listener (RTSP, RTMP, SRT or WHIP) on the dedicated network, named after the carrier it
/// serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub carrier: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct StreamerConfig {
    /// The registered server this streamer is (`SLOTCAST_SERVER_ID`).
    pub server_id: String,
    /// RTSP listeners, one per carrier (`SLOTCAST_INGEST_LISTENERS`).
    pub listeners: Vec<Listener>,
    /// RTMP listeners, one per carrier (`SLOTCAST_RTMP_LISTENERS`); none by default.
    pub rtmp_listeners: Vec<Listener>,
    /// SRT listeners (UDP), one per carrier (`SLOTCAST_SRT_LISTENERS`); none by default.
    pub srt_listeners: Vec<Listener>,
    /// WHIP listeners (HTTP), one per carrier (`SLOTCAST_WHIP_LISTENERS`); none by default.
    /// Each publisher's WebRTC peer gets a UDP port of its own on the address the publisher
    /// reached the listener on.
    pub whip_listeners: Vec<Listener>,
    /// SRT's receiver delay (TSBPD) for each caller (`SLOTCAST_SRT_LATENCY_MS`): what it
    /// may take to resend a lost packet, and what it adds to the glass-to-glass time.
    pub srt_latency: Duration,
    /// Viewer side: HLS, the watch page, WHEP's offers, metrics (`SLOTCAST_HLS_ADDR`).
    pub hls_addr: SocketAddr,
    /// The address real-time viewers (WHEP) reach the streamer's UDP on, each session on a
    /// port of its own (`SLOTCAST_WHEP_IP`); unset: `hls_addr`'s, unless that is unspecified
    /// (`0.0.0.0`), when real time is off ([`StreamerConfig::whep_address`]).
    pub whep_ip: Option<std::net::IpAddr>,
    /// Real-time viewers at most, all reservations together (`SLOTCAST_WHEP_VIEWERS`): each
    /// costs a UDP socket, a task and, for AAC, an Opus encoder.
    pub whep_viewers: usize,
    /// Where recordings are written (`<dir>/<reservation_id>/`); by default `recordings`
    /// under the state directory.
    pub recordings_dir: PathBuf,
    /// How long a recording stays watchable after its slot ended.
    pub retention: Duration,
    /// The player's hls.js; by default [`StreamerConfig::default_hls_js`].
    pub hls_js: PathBuf,
    /// Target segment duration; segments are cut on the first keyframe past it.
    pub segment_target: Duration,
    /// Target LL-HLS part duration.
    pub part_target: Duration,
    /// A publisher silent (no request, no media) this long is disconnected.
    pub session_timeout: Duration,
    /// How often a publisher's socket is read once media flows. Connections are read on one
    /// grid of this period, up to 64 per thread wake: a shorter period adds less latency
    /// (at most one period before a frame is handled), a longer one costs less CPU.
    pub ingest_poll: Duration,
    /// Connections that have not reached RECORD, per source address (an IPv6 source by its
    /// /64) at most (`SLOTCAST_INGEST_MAX_UNAUTH_PER_ADDR`).
    pub max_unauth_per_addr: usize,
    /// Connections that have not reached RECORD, in all (`SLOTCAST_INGEST_MAX_UNAUTH`); see
    /// [`crate::ingest_limits`] for who gives up a place when all are taken.
    pub max_unauth: usize,
    /// A connection that has not reached RECORD this long after it was accepted is closed,
    /// whatever it sends meanwhile (`SLOTCAST_INGEST_RECORD_DEADLINE_S`).
    pub record_deadline: Duration,
    /// `SLOTCAST_SECRET_KEY`, the api's: opens the sealed Digest credential in slot messages.
    /// `None`: publishers authenticate with `?key=` or Basic only.
    pub secret_key: Option<slotcast_domain::secret::SecretKey>,
    /// What the viewer port allows each client (timeouts, connections).
    pub http: slotcast_http::Limits,
    /// Caches in front of the viewer port whose `X-Forwarded-For` names the viewer
    /// (`SLOTCAST_HLS_TRUSTED_PROXIES`); empty: the TCP peer is the viewer.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// Networks cameras may be pulled from (`SLOTCAST_CAMERA_NETWORKS`); empty: public
    /// addresses only (`crate::camera::allowed`). A camera's host is resolved and every
    /// address checked before each attempt, and the checked address is the one connected to.
    pub camera_networks: Vec<ipnet::IpNet>,
}

impl StreamerConfig {
    pub const DEFAULT_HLS_ADDR: &'static str = "127.0.0.1:8888";
    /// An eighth of the default part: a frame waits at most that long before it is handled.
    /// 20 ms cost a fifth more CPU at 10 streams for 5 ms less latency (docs/perf-log.md, Run 8).
    pub const DEFAULT_INGEST_POLL: Duration = Duration::from_millis(25);
    /// The longest poll period allowed: a tenth of a second is already half a part.
    pub const MAX_INGEST_POLL: Duration = Duration::from_millis(100);

    /// Where `npm ci --prefix web` (run by `scripts/services`) put hls.js in the source tree
    /// this streamer was built from: an absolute path, fixed at build time, so it does not
    /// depend on the directory the server is started in. An installed streamer is told its
    /// own (`SLOTCAST_HLS_JS`).
    pub fn default_hls_js() -> PathBuf {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let source_tree = crate_dir.parent().unwrap_or(crate_dir);
        source_tree.join("web/node_modules/hls.js/dist/hls.min.js")
    }

    /// Defaults that run on one machine, keeping recordings in `recordings_dir`.
    pub fn new(
        server_id: impl Into<String>,
        listeners: Vec<Listener>,
        recordings_dir: PathBuf,
    ) -> Self {
        Self {
            server_id: server_id.into(),
            listeners,
            rtmp_listeners: Vec::new(),
            srt_listeners: Vec::new(),
            whip_listeners: Vec::new(),
            srt_latency: Duration::from_millis(120),
            hls_addr: Self::DEFAULT_HLS_ADDR
                .parse()
                .expect("the default HLS address is a literal socket address"),
            whep_ip: None,
            whep_viewers: 200,
            recordings_dir,
            retention: Duration::from_secs(7 * 24 * 3600),
            hls_js: Self::default_hls_js(),
            segment_target: Duration::from_secs(1),
            part_target: Duration::from_millis(200),
            session_timeout: Duration::from_secs(60),
            ingest_poll: Self::DEFAULT_INGEST_POLL,
            max_unauth_per_addr: 8,
            max_unauth: 256,
            record_deadline: Duration::from_secs(10),
            secret_key: None,
            camera_networks: Vec::new(),
            http: slotcast_http::Limits::default(),
            trusted_proxies: crate::forwarded::TrustedProxies::default(),
        }
    }

    /// Where WHEP sessions bind their UDP sockets; `None`: real time is off.
    pub fn whep_address(&self) -> Option<std::net::IpAddr> {
        self.whep_ip
            .or(Some(self.hls_addr.ip()))
            .filter(|ip| !ip.is_unspecified())
    }

    pub fn validate(&self) -> Result<()> {
        if self.server_id.is_empty() {
            return Err(StreamerError::Config("server id is empty".into()));
        }
        if self.listeners.is_empty()
            && self.rtmp_listeners.is_empty()
            && self.srt_listeners.is_empty()
            && self.whip_listeners.is_empty()
        {
            return Err(StreamerError::Config("no ingest listeners".into()));
        }
        if self.part_target.is_zero() || self.segment_target < self.part_target {
            return Err(StreamerError::Config(
                "part target must be positive and at most the segment target".into(),
            ));
        }
        if self.max_unauth_per_addr == 0 || self.max_unauth == 0 {
            return Err(StreamerError::Config(
                "the limits on connections before RECORD must be at least 1".into(),
            ));
        }
        if self.record_deadline.is_zero() {
            return Err(StreamerError::Config(
                "the deadline to reach RECORD must be at least 1 s".into(),
            ));
        }
        if self.ingest_poll.is_zero() || self.ingest_poll > Self::MAX_INGEST_POLL {
            return Err(StreamerError::Config(format!(
                "ingest poll period must be 1 to {} ms",
                Self::MAX_INGEST_POLL.as_millis()
            )));
        }
        Ok(())
    }
}

/// `carrier-a=127.0.0.2:8554,carrier-b=127.0.0.3:8554`.
pub fn parse_listeners(text: &str) -> Result<Vec<Listener>> {
    let mut listeners: Vec<Listener> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (carrier, addr) = item.split_once('=').ok_or_else(|| {
            StreamerError::Config(format!(
                "ingest listener {item:?}: expected carrier=host:port"
            ))
        })?;
        let carrier = carrier.trim();
        let token_ok = !carrier.is_empty()
            && carrier.len() <= 64
            && carrier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !token_ok {
            return Err(StreamerError::Config(format!(
                "ingest listener {item:?}: the carrier name must be 1-64 letters, digits, - or _"
            )));
        }
        let addr: SocketAddr = addr.trim().parse().map_err(|_| {
            StreamerError::Config(format!(
                "ingest listener {item:?}: {addr:?} is not an ip:port address"
            ))
        })?;
        if listeners.iter().any(|l| l.carrier == carrier) {
            return Err(StreamerError::Config(format!(
                "ingest listener {item:?}: carrier {carrier} is listed twice"
            )));
        }
        listeners.push(Listener {
            carrier: carrier.to_string(),
            addr,
        });
    }
    if listeners.is_empty() {
        return Err(StreamerError::Config("no ingest listeners given".into()));
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_poll_period_is_bounded() {
        let listener = Listener {
            carrier: "a".into(),
            addr: "127.0.0.1:8554".parse().unwrap(),
        };
        let mut config =
            StreamerConfig::new("srv", vec![listener], "/var/lib/slotcast/recordings".into());
        assert_eq!(config.ingest_poll, Duration::from_millis(25));
        config.validate().unwrap();
        for (ms, ok) in [(0, false), (1, true), (100, true), (101, false)] {
            config.ingest_poll = Duration::from_millis(ms);
            let result = config.validate();
            assert_eq!(result.is_ok(), ok, "{ms} ms: {result:?}");
            if let Err(err) = result {
                assert!(err.to_string().contains("1 to 100 ms"), "{err}");
            }
        }
    }

    #[test]
    fn listeners_parse_and_errors_say_what_is_wrong() {
        let l = parse_listeners("carrier-a=127.0.0.2:8554, carrier-b=127.0.0.3:8554").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].carrier, "carrier-b");
        assert_eq!(l[1].addr, "127.0.0.3:8554".parse().unwrap());
        for (bad, says) in [
            ("", "no ingest listeners"),
            ("127.0.0.1:8554", "expected carrier=host:port"),
            ("a b=127.0.0.1:1", "carrier name"),
            ("a=localhost:1", "not an ip:port"),
            ("a=127.0.0.1:1,a=127.0.0.1:2", "listed twice"),
        ] {
            let err = parse_listeners(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
