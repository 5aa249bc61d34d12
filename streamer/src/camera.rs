//! The camera edge: pulls a reservation's camera with retina's client while its window is
//! open, into the same media path a publisher feeds.
//!
//! Contract: one task per pulled camera, started and stopped by the hub
//! ([`crate::hub::Hub::reconcile_pulls`]); it hangs up (TEARDOWN) when its [`PullHandle`]
//! stops (window closed, cancelled, shutdown) and never ends on its own before that. Each
//! attempt is DESCRIBE, SETUP of the H.264/H.265 video and AAC audio streams (TCP interleaved
//! by default, UDP if the booking asked), PLAY; its frames go through
//! [`crate::media::frames::Framer`] into a fresh [`MediaPath`], so a camera that comes back
//! after a drop starts a discontinuity, exactly as a publisher that reconnects. Every attempt
//! is reported: `failed` with the camera's reason, `connected` with the codecs,
//! `disconnected` with why. Between failures it waits with [`Backoff`] (a refused login waits
//! longer), so a wrong password is no retry storm. The camera's login comes opened from the
//! gate and goes only to retina; reports and logs name the camera by host and path alone.

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

use crate::gates::Camera;
use crate::hub::{Hub, PullHandle};
use crate::media::frames::{codec_names, Codec, Framer};
use crate::media::{TrackKind, TrackSpec};
use crate::media_path::MediaPath;

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
        hub.report_pull(&reservation_id, IngestKind::Failed, &addr, None, Some(why));
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
            hub.report_pull(id, IngestKind::Failed, &shown.addr, None, Some(why));
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
                tracing::info!(reservation = id, camera = %shown.url, why = %failure.why,
                    "camera pull failed");
                hub.report_pull(id, IngestKind::Failed, &shown.addr, None, Some(failure.why));
                failure.refused
            }
            Ok(playing) => {
                let codecs = playing.codecs();
                tracing::info!(reservation = id, camera = %shown.url, codecs, "camera live");
                let live = Live::report(&hub, id, &shown.addr, codecs);
                let (why, flowed) = relay(&hub, id, playing, &handle, &shown).await;
                let why = handle.reason().unwrap_or(why);
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
        hub.report_pull(
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
        self.hub.report_pull(
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

/// An attempt that did not get to PLAY.
struct Failure {
    why: String,
    /// The camera refused the login (401).
    refused: bool,
}

impl Failure {
    fn new(step: &str, err: &retina::Error) -> Self {
        let text = first_line(err);
        let refused = text.contains("401");
        let why = if refused {
            format!("{step}: the camera refused the login ({text})")
        } else {
            format!("{step}: {text}")
        };
        Self { why, refused }
    }

    fn timeout(step: &str) -> Self {
        Self {
            why: format!("{step}: no answer from the camera in {STEP_WAIT:?}"),
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

/// With `SLOTCAST_CAMERA_NETWORKS` set, every address the camera's host resolves to must be
/// in one of those networks: a booking cannot make the streamer probe other hosts.
async fn check_networks(url: &url::Url, networks: &[IpNet]) -> Result<(), Failure> {
    if networks.is_empty() {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port().unwrap_or(554);
    let addrs: Vec<IpAddr> = match tokio::time::timeout(STEP_WAIT, lookup_host((host, port))).await
    {
        Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            return Err(Failure {
                why: format!("the camera's host {host} does not resolve: {e}"),
                refused: false,
            })
        }
        Err(_) => return Err(Failure::timeout("resolving the camera's host")),
    };
    match outside(networks, &addrs) {
        None => Ok(()),
        Some(addr) => Err(Failure {
            why: format!(
                "the camera's address {addr} is outside the networks cameras may be pulled from \
                 (SLOTCAST_CAMERA_NETWORKS)"
            ),
            // Retrying cannot help until the operator changes the setting.
            refused: true,
        }),
    }
}

/// The first of `addrs` in none of `networks` (none at all counts as outside).
fn outside(networks: &[IpNet], addrs: &[IpAddr]) -> Option<String> {
    if addrs.is_empty() {
        return Some("(no address)".into());
    }
    addrs
        .iter()
        .find(|a| !networks.iter().any(|n| n.contains(*a)))
        .map(ToString::to_string)
}

/// DESCRIBE, SETUP and PLAY.
async fn connect(
    camera: &Camera,
    login: Option<Credentials>,
    shown: &Shown,
    networks: &[IpNet],
) -> Result<Playing, Failure> {
    let url = url::Url::parse(&camera.url).map_err(|e| Failure {
        why: format!("the camera URL does not parse: {e}"),
        refused: false,
    })?;
    check_networks(&url, networks).await?;
    let options = SessionOptions::default()
        .creds(login)
        .user_agent(concat!("slotcast-streamer/", env!("CARGO_PKG_VERSION")).to_string());
    let mut session = step("DESCRIBE", Session::describe(url, options)).await?;
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
        return Err(Failure {
            why: format!(
                "the camera {} offers {}; slotcast relays H.264 or H.265 video and AAC audio",
                shown.url,
                offered.join(", ")
            ),
            refused: false,
        });
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
) -> (String, Duration) {
    let mut path = MediaPath::new(
        hub,
        reservation_id,
        &playing.tracks,
        hub.channel(reservation_id),
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
            () = handle.stop.cancelled() => break "the streamer is shutting down".to_string(),
            item = tokio::time::timeout(STALL_WAIT, playing.demuxed.next()) => item,
        };
        let item = match item {
            Err(_) => break format!("the camera sent nothing for {STALL_WAIT:?}"),
            Ok(None) => break format!("the camera {} ended the stream", shown.url),
            Ok(Some(Err(e))) => break format!("the camera {}: {}", shown.url, first_line(&e)),
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
            break format!("media: {err}");
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
        assert_eq!(outside(&nets, &[ip("10.20.3.4"), ip("127.0.0.2")]), None);
        assert_eq!(outside(&nets, &[ip("::1")]), None);
        assert_eq!(
            outside(&nets, &[ip("10.20.3.4"), ip("10.21.0.1")]),
            Some("10.21.0.1".into())
        );
        assert_eq!(outside(&nets, &[ip("127.0.0.1")]), Some("127.0.0.1".into()));
        assert!(outside(&nets, &[]).is_some());
        assert!(crate::config::parse_networks("10.0.0.0/33").is_err());
        assert!(crate::config::parse_networks("cam.local").is_err());
        assert_eq!(crate::config::parse_networks(" , ").unwrap(), vec![]);
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
