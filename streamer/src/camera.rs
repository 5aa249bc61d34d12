//! The camera edge: pulls a reservation's camera with retina's client while its window is
//! open, into the same media path a publisher feeds.
//!
//! Contract: one task per pulled camera, started and stopped by the hub as
//! [`crate::control::Control`] decides; it hangs up (TEARDOWN) when its [`PullHandle`]
//! stops (window closed, cancelled, shutdown) and never ends on its own before that. Each
//! attempt is DESCRIBE, SETUP of the H.264/H.265 video and AAC audio streams (TCP interleaved
//! by default, UDP if the booking asked), PLAY; its frames go through
//! [`crate::media::frames::Framer`] into a fresh [`MediaPath`], so a camera that comes back
//! after a drop starts a discontinuity, exactly as a publisher that reconnects. Every attempt
//! is reported: `failed` with the camera's reason, `connected` with the codecs,
//! `disconnected` with why. Between failures it waits with [`Backoff`] (a refused login waits
//! longer), so a wrong password is no retry storm. The camera's login comes opened from the
//! gate and goes only to retina; reports and logs name the camera by host and path alone.
//!
//! Where a camera may be: its host is resolved once per attempt, and every address it
//! resolves to must be allowed ([`allowed`]): with `SLOTCAST_CAMERA_NETWORKS` unset, public
//! addresses only (loopback, private, link-local, shared and other special ranges refused);
//! set, only the networks it lists. retina is then given the checked address itself, so the
//! name is not looked up again between the check and the connection. A failure lands in the
//! history as one of a few fixed phrases ([`Why`]), never the error's own text: whoever books
//! a camera URL cannot read what the streamer's network holds through the history (a closed
//! port and a silent one read alike). The log, which is the operator's, keeps the detail.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::net::lookup_host;

use futures_util::{FutureExt as _, StreamExt};
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use slotcast_domain::contract::{CameraTransport, IngestKind};

use crate::control::PullReport;
use crate::gates::Camera;
use crate::hub::{Hub, PullHandle};
use crate::media::frames::{codec_names, Codec, Framer};
use crate::media::{TrackKind, TrackSpec};
use crate::media_path::{Clocks, MediaPath};

/// How long DESCRIBE, SETUP and PLAY may each take.
const STEP_WAIT: Duration = Duration::from_secs(10);
/// A camera that sends no frame for this long is dropped and pulled again.
const STALL_WAIT: Duration = Duration::from_secs(10);
/// A connection that held this long resets the backoff.
const HELD: Duration = Duration::from_secs(10);

/// Waits between attempts: `first`, doubling up to `max`; a refused login starts at
/// [`Backoff::REFUSED`], since retrying it sooner cannot help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const REFUSED: Duration = Duration::from_secs(5);

    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait after a failure (`refused`: the camera refused the login).
    pub fn after_failure(&mut self, refused: bool) -> Duration {
        let wait = if refused {
            self.next.max(Self::REFUSED).min(self.max)
        } else {
            self.next
        };
        self.next = (wait * 2).min(self.max);
        wait
    }

    /// A connection held: the next failure waits the shortest again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// What a pull did, for the history: `camera` is the camera's `host:port`.
fn report_pull(
    hub: &Hub,
    reservation_id: &str,
    kind: IngestKind,
    camera: &str,
    codec: Option<String>,
    reason: Option<String>,
) {
    let what = PullReport {
        kind,
        camera: camera.to_string(),
        codec,
        reason,
    };
    hub.report_pull(reservation_id, what);
}

/// [`guarded_pull`] as the hub starts it ([`crate::hub::Puller`]).
pub fn start_pull(
    hub: Hub,
    reservation_id: String,
    camera: Camera,
    handle: PullHandle,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
    Box::pin(guarded_pull(hub, reservation_id, camera, handle))
}

/// [`pull`], with a panic inside it (a bug, in slotcast or retina) reported as `failed` and
/// logged; the pull then waits out its window instead of being started again.
pub async fn guarded_pull(hub: Hub, reservation_id: String, camera: Camera, handle: PullHandle) {
    let addr = Shown::of(&camera.url).addr;
    let pulled = std::panic::AssertUnwindSafe(pull(
        hub.clone(),
        reservation_id.clone(),
        camera,
        handle.clone(),
    ))
    .catch_unwind()
    .await;
    if pulled.is_err() {
        tracing::error!(reservation = %reservation_id, "the camera pull panicked");
        let why = "internal error in the camera pull (see the streamer's log)".to_string();
        report_pull(
            &hub,
            &reservation_id,
            IngestKind::Failed,
            &addr,
            None,
            Some(why),
        );
        handle.stop.cancelled().await;
        hub.pull_ended(&reservation_id);
    }
}

/// Pulls `camera` for `reservation_id` until `handle` stops.
pub async fn pull(hub: Hub, reservation_id: String, camera: Camera, handle: PullHandle) {
    let shown = Shown::of(&camera.url);
    let id = reservation_id.as_str();
    tracing::info!(reservation = id, camera = %shown.url, transport = camera.transport.as_str(),
        "pulling the camera");
    let login = match camera.login.clone() {
        Ok(login) => login.map(|l| Credentials {
            username: l.username,
            password: l.password,
        }),
        Err(why) => {
            // Nothing a retry could mend: said once, then wait for the window to end.
            tracing::error!(reservation = id, camera = %shown.url, "{why}");
            report_pull(&hub, id, IngestKind::Failed, &shown.addr, None, Some(why));
            handle.stop.cancelled().await;
            hub.pull_ended(id);
            return;
        }
    };
    let networks = &hub.config().camera_networks;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let attempt = tokio::select! {
            () = handle.stop.cancelled() => break,
            attempt = connect(&camera, login.clone(), &shown, networks) => attempt,
        };
        let refused = match attempt {
            Err(failure) => {
                tracing::info!(reservation = id, camera = %shown.url, detail = %failure.detail,
                    "camera pull failed");
                let why = failure.why.phrase().to_string();
                report_pull(&hub, id, IngestKind::Failed, &shown.addr, None, Some(why));
                failure.refused
            }
            Ok(playing) => {
                let codecs = playing.codecs();
                tracing::info!(reservation = id, camera = %shown.url, codecs, "camera live");
                let live = Live::report(&hub, id, &shown.addr, codecs);
                let (why, flowed) = relay(&hub, id, playing, &handle, &shown).await;
                let why = handle
                    .reason()
                    .map_or_else(|| why.phrase().to_string(), str::to_string);
                tracing::info!(reservation = id, camera = %shown.url, %why, "camera disconnected");
                live.end(why);
                if handle.stop.is_cancelled() {
                    break;
                }
                // Only media that flowed counts: a camera that answers PLAY and then sends
                // nothing keeps backing off.
                if flowed >= HELD {
                    backoff.reset();
                }
                false
            }
        };
        let wait = backoff.after_failure(refused);
        tokio::select! {
            () = handle.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    hub.pull_ended(id);
}

/// A camera reported `connected`: reported `disconnected` when it ends, even by a panic
/// (so the history and the sessions gauge never keep a camera that is gone).
struct Live<'a> {
    hub: &'a Hub,
    reservation_id: &'a str,
    addr: &'a str,
    why: Option<String>,
}

impl<'a> Live<'a> {
    fn report(hub: &'a Hub, reservation_id: &'a str, addr: &'a str, codecs: String) -> Self {
        report_pull(
            hub,
            reservation_id,
            IngestKind::Connected,
            addr,
            Some(codecs),
            None,
        );
        Self {
            hub,
            reservation_id,
            addr,
            why: None,
        }
    }

    fn end(mut self, why: String) {
        self.why = Some(why);
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        let why = self
            .why
            .take()
            .unwrap_or_else(|| "internal error in the camera pull".to_string());
        report_pull(
            self.hub,
            self.reservation_id,
            IngestKind::Disconnected,
            self.addr,
            None,
            Some(why),
        );
    }
}

/// The camera as reports and logs show it: never its query (some cameras take credentials
/// there) and never user info (a booking cannot hold any).
struct Shown {
    /// `scheme://host:port/path`.
    url: String,
    /// `host:port`, the port defaulting to RTSP's 554.
    addr: String,
}

impl Shown {
    fn of(url: &str) -> Self {
        match url::Url::parse(url) {
            Ok(mut parsed) => {
                parsed.set_query(None);
                parsed.set_fragment(None);
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
                let host = parsed.host_str().unwrap_or_default().to_string();
                let port = parsed.port().unwrap_or(554);
                Self {
                    url: parsed.to_string(),
                    addr: format!("{host}:{port}"),
                }
            }
            Err(_) => Self {
                url: "(an unreadable camera URL)".into(),
                addr: String::new(),
            },
        }
    }
}

/// Why a pull failed or ended, as the history says it: a few fixed phrases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    BadUrl,
    Unresolved,
    NotAllowed,
    Unreachable,
    LoginRefused,
    NoSuchStream,
    NoCodec,
    StreamFailed,
    Silent,
    Ended,
    NoKeyframe,
    ShuttingDown,
}

impl Why {
    pub const fn phrase(self) -> &'static str {
        match self {
            Self::BadUrl => "the camera URL does not parse",
            Self::Unresolved => "the camera's host does not resolve",
            Self::NotAllowed => {
                "the camera's address is not in the networks cameras may be pulled from"
            }
            Self::Unreachable => "the camera could not be reached",
            Self::LoginRefused => "the camera refused the login",
            Self::NoSuchStream => "the camera has no such stream",
            Self::NoCodec => "the camera offers no H.264, H.265 or AAC stream",
            Self::StreamFailed => "the camera's stream failed",
            Self::Silent => "the camera sent nothing for 10 s",
            Self::Ended => "the camera ended the stream",
            Self::NoKeyframe => "no_keyframe: the camera sent no video keyframe for 10 s or 16 MiB",
            Self::ShuttingDown => "the streamer is shutting down",
        }
    }
}

/// An attempt that did not get to PLAY: what the history says, and the detail for the log.
struct Failure {
    why: Why,
    detail: String,
    /// Retrying soon cannot help (a refused login, an address not allowed).
    refused: bool,
}

impl Failure {
    fn new(step: &str, err: &retina::Error) -> Self {
        let text = first_line(err);
        let why = if text.contains("401") {
            Why::LoginRefused
        } else if text.contains("404") {
            Why::NoSuchStream
        } else if step == "DESCRIBE" {
            // Refused, reset, unroutable, or not RTSP at all: alike in the history.
            Why::Unreachable
        } else {
            Why::StreamFailed
        };
        Self {
            why,
            detail: format!("{step}: {text}"),
            refused: why == Why::LoginRefused,
        }
    }

    fn timeout(step: &str) -> Self {
        Self {
            why: Why::Unreachable,
            detail: format!("{step}: no answer from the camera in {STEP_WAIT:?}"),
            refused: false,
        }
    }

    fn of(why: Why, detail: impl Into<String>) -> Self {
        Self {
            why,
            detail: detail.into(),
            refused: false,
        }
    }
}

/// A playing camera: its demuxed session and, for each relayed stream, its track.
struct Playing {
    demuxed: Demuxed,
    /// `(retina stream index, codec)`, in track order.
    streams: Vec<(usize, Codec)>,
    tracks: Vec<TrackSpec>,
}

impl Playing {
    fn codecs(&self) -> String {
        codec_names(&self.tracks)
    }
}

async fn step<T>(
    name: &str,
    fut: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(STEP_WAIT, fut).await {
        Err(_) => Err(Failure::timeout(name)),
        Ok(Err(e)) => Err(Failure::new(name, &e)),
        Ok(Ok(t)) => Ok(t),
    }
}

/// Resolves the camera's host and checks every address it gives ([`allowed`]): the
/// addresses to connect to, in the resolver's order.
async fn checked_addresses(url: &url::Url, networks: &[IpNet]) -> Result<Vec<IpAddr>, Failure> {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port().unwrap_or(554);
    let addrs: Vec<IpAddr> = match tokio::time::timeout(STEP_WAIT, lookup_host((host, port))).await
    {
        Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            return Err(Failure::of(
                Why::Unresolved,
                format!("the camera's host {host} does not resolve: {e}"),
            ))
        }
        Err(_) => return Err(Failure::timeout("resolving the camera's host")),
    };
    match addrs.iter().find(|a| !allowed(networks, **a)) {
        Some(addr) => Err(Failure {
            why: Why::NotAllowed,
            detail: format!(
                "the camera's address {addr} is not allowed (SLOTCAST_CAMERA_NETWORKS: {})",
                if networks.is_empty() {
                    "unset, public addresses only".to_string()
                } else {
                    networks
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
            // Retrying cannot help until the operator changes the setting.
            refused: true,
        }),
        None if addrs.is_empty() => Err(Failure::of(
            Why::Unresolved,
            format!("{host} has no address"),
        )),
        None => Ok(addrs),
    }
}

/// May a camera be pulled from `addr`? With `networks` listed, only from inside them; with
/// none, only from a public address.
pub fn allowed(networks: &[IpNet], addr: IpAddr) -> bool {
    if networks.is_empty() {
        is_public(addr)
    } else {
        networks.iter().any(|n| n.contains(&addr))
    }
}

/// Not loopback, private, link-local, shared (CGNAT), multicast, broadcast, unspecified,
/// documentation or otherwise reserved; an IPv4-mapped or -compatible IPv6 address is judged
/// as the IPv4 address it holds.
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10, shared
                || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24, protocol assignments
                || (a == 198 && (18..20).contains(&b)) // 198.18.0.0/15, benchmarking
                || a >= 240) // reserved, and 255.255.255.255
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // ::a.b.c.d (deprecated IPv4-compatible; :: and ::1 are caught below as well).
            if segments[..6] == [0; 6] {
                return segments[6] != 0
                    && is_public(IpAddr::V4(
                        v6.to_ipv4().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    ));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (segments[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
                || (segments[0] & 0xffc0) == 0xfec0 // fec0::/10, old site-local
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
                || (segments[0] == 0x0064 && segments[1] == 0xff9b) // NAT64, an IPv4 inside
                || segments[0] == 0x0100 && segments[1..4] == [0; 3]) // discard-only
        }
    }
}

/// DESCRIBE, SETUP and PLAY.
async fn connect(
    camera: &Camera,
    login: Option<Credentials>,
    shown: &Shown,
    networks: &[IpNet],
) -> Result<Playing, Failure> {
    let mut url = url::Url::parse(&camera.url)
        .map_err(|e| Failure::of(Why::BadUrl, format!("the camera URL does not parse: {e}")))?;
    let addrs = checked_addresses(&url, networks).await?;
    let options = || {
        SessionOptions::default()
            .creds(login.clone())
            .user_agent(concat!("slotcast-streamer/", env!("CARGO_PKG_VERSION")).to_string())
    };
    // Each checked address in turn, by address, not the name: retina would look it up again.
    let mut described = None;
    for (i, addr) in addrs.iter().enumerate() {
        url.set_ip_host(*addr)
            .map_err(|()| Failure::of(Why::BadUrl, "the camera URL takes no address"))?;
        match step("DESCRIBE", Session::describe(url.clone(), options())).await {
            Err(failure) if failure.why == Why::Unreachable && i + 1 < addrs.len() => {
                tracing::debug!(camera = %shown.url, %addr, detail = %failure.detail,
                    "trying the camera's next address");
            }
            done => {
                described = Some(done);
                break;
            }
        }
    }
    let Some(described) = described else {
        return Err(Failure::of(Why::Unreachable, "no address to try"));
    };
    let mut session = described?;
    let mut streams = Vec::new();
    let mut tracks = Vec::new();
    for (i, s) in session.streams().iter().enumerate() {
        let kind = match s.media() {
            "video" => TrackKind::Video,
            "audio" => TrackKind::Audio,
            _ => continue,
        };
        let Some(codec) = Codec::of(kind, s.encoding_name()) else {
            continue;
        };
        // One track of each kind: the segmenter cuts on the first video track's keyframes.
        if tracks.iter().any(|t: &TrackSpec| t.kind == kind) {
            continue;
        }
        streams.push((i, codec));
        tracks.push(TrackSpec {
            kind,
            media: s.media().to_string(),
            encoding_name: s.encoding_name().to_string(),
            payload_type: s.rtp_payload_type(),
            clock_rate: s.clock_rate_hz(),
            channels: s.channels().map(|c| c.get()),
            fmtp: None,
            control: s.control().map(|c| c.to_string()),
        });
    }
    if streams.is_empty() {
        let offered: Vec<String> = session
            .streams()
            .iter()
            .map(|s| format!("{} {}", s.media(), s.encoding_name()))
            .collect();
        return Err(Failure::of(
            Why::NoCodec,
            format!(
                "the camera {} offers {}; slotcast relays H.264 or H.265 video and AAC audio",
                shown.url,
                offered.join(", ")
            ),
        ));
    }
    for &(i, _) in &streams {
        let transport = match camera.transport {
            CameraTransport::Tcp => Transport::Tcp(Default::default()),
            CameraTransport::Udp => Transport::Udp(Default::default()),
        };
        // Length-prefixed NAL units with the parameter sets in the decoder record, as the
        // push path has them.
        let options = SetupOptions::default()
            .transport(transport)
            .frame_format(FrameFormat::MP4);
        step("SETUP", session.setup(i, options)).await?;
    }
    let playing = step("PLAY", session.play(PlayOptions::default())).await?;
    let demuxed = playing.demuxed().map_err(|e| Failure::new("PLAY", &e))?;
    Ok(Playing {
        demuxed,
        streams,
        tracks,
    })
}

/// Frames from the camera into a fresh media path until it stops, stalls or is stopped;
/// returns why, and for how long media flowed (first frame to last).
async fn relay(
    hub: &Hub,
    reservation_id: &str,
    mut playing: Playing,
    handle: &PullHandle,
    shown: &Shown,
) -> (Why, Duration) {
    let mut path = MediaPath::new(
        hub,
        reservation_id,
        &playing.tracks,
        Clocks::PerTrack,
        hub.playout(reservation_id),
    );
    let mut framers: Vec<Framer> = Vec::new();
    for (track, &(stream, codec)) in playing.streams.iter().enumerate() {
        let framer = Framer::new(track, codec);
        if let Some(params) = framer.params(playing.demuxed.streams()[stream].parameters()) {
            path.set_params(track, params);
        }
        framers.push(framer);
    }
    let mut flow: Option<(Instant, Instant)> = None;
    let why = loop {
        let item = tokio::select! {
            // The hub says why (window closed, cancelled); otherwise it is the shutdown.
            () = handle.stop.cancelled() => break Why::ShuttingDown,
            item = tokio::time::timeout(STALL_WAIT, playing.demuxed.next()) => item,
        };
        let item = match item {
            Err(_) => break Why::Silent,
            Ok(None) => break Why::Ended,
            Ok(Some(Err(e))) => {
                tracing::info!(reservation = reservation_id, camera = %shown.url,
                    detail = %first_line(&e), "the camera's stream failed");
                break Why::StreamFailed;
            }
            Ok(Some(Ok(item))) => item,
        };
        let stream = match &item {
            CodecItem::VideoFrame(f) => f.stream_id(),
            CodecItem::AudioFrame(f) => f.stream_id(),
            // Sender reports and message frames carry no media of ours.
            _ => continue,
        };
        let Some(track) = playing.streams.iter().position(|&(s, _)| s == stream) else {
            continue;
        };
        let parameters = playing.demuxed.streams()[stream].parameters();
        let framed = framers[track].frame(item, parameters);
        let pushed = match framed {
            Ok(Some(frame)) => path.push(hub, Instant::now(), frame),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(err) = path.tolerate(pushed) {
            tracing::info!(reservation = reservation_id, camera = %shown.url, %err,
                "the camera's media could not be relayed");
            break match err {
                crate::StreamerError::NoKeyframe { .. } => Why::NoKeyframe,
                _ => Why::StreamFailed,
            };
        }
        path.drain(hub);
        let now = Instant::now();
        flow = Some((flow.map_or(now, |(first, _)| first), now));
    };
    path.finish(hub);
    (
        why,
        flow.map_or(Duration::ZERO, |(first, last)| last - first),
    )
}

/// retina's error, first line only (its later lines repeat the connection context).
fn first_line(e: &retina::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_a_refused_login_waits_longer() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30));
        let waits: Vec<u64> = (0..7).map(|_| b.after_failure(false).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.after_failure(false), s(1));
        b.reset();
        let refused: Vec<u64> = (0..4).map(|_| b.after_failure(true).as_secs()).collect();
        assert_eq!(refused, [5, 10, 20, 30]);
    }

    #[test]
    fn only_addresses_inside_the_camera_networks_pass() {
        let nets = crate::config::parse_networks("10.20.0.0/16, 127.0.0.2, ::1").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (addr, ok) in [
            ("10.20.3.4", true),
            ("127.0.0.2", true),
            ("::1", true),
            ("10.21.0.1", false),
            ("127.0.0.1", false),
            // Listed networks only: a public address outside them is refused too.
            ("8.8.8.8", false),
        ] {
            assert_eq!(allowed(&nets, ip(addr)), ok, "{addr}");
        }
        assert!(crate::config::parse_networks("10.0.0.0/33").is_err());
        assert!(crate::config::parse_networks("cam.local").is_err());
        assert_eq!(crate::config::parse_networks(" , ").unwrap(), vec![]);
    }

    #[test]
    fn with_no_networks_listed_only_public_addresses_pass() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(allowed(&[], ip(public)), "{public}");
        }
        for special in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!allowed(&[], ip(special)), "{special} was allowed");
        }
    }

    #[test]
    fn the_history_gets_fixed_phrases_that_name_no_address_or_port() {
        for why in [
            Why::BadUrl,
            Why::Unresolved,
            Why::NotAllowed,
            Why::Unreachable,
            Why::LoginRefused,
            Why::NoSuchStream,
            Why::NoCodec,
            Why::StreamFailed,
            Why::Silent,
            Why::Ended,
            Why::NoKeyframe,
            Why::ShuttingDown,
        ] {
            let phrase = why.phrase();
            assert!(!phrase
                .chars()
                .any(|c| c == ':' && !phrase.starts_with("no_keyframe")));
            assert!(
                !phrase.contains("127.") && !phrase.contains("554"),
                "{phrase}"
            );
        }
        // Refused and silent ports read alike: both are "could not be reached".
        assert_eq!(Failure::timeout("DESCRIBE").why, Why::Unreachable);
    }

    #[test]
    fn a_camera_is_shown_without_query_or_login() {
        let shown = Shown::of("rtsp://cam.example:8554/live/1?token=abc");
        assert_eq!(shown.url, "rtsp://cam.example:8554/live/1");
        assert_eq!(shown.addr, "cam.example:8554");
        let shown = Shown::of("rtsp://10.0.0.9/stream");
        assert_eq!(shown.addr, "10.0.0.9:554");
        assert!(!Shown::of("rtsp://u:p@h/x").url.contains("p@"));
    }
}
