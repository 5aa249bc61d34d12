//! The async edge of `slotcast live`: does what the publishing policy (`policy`) decides,
//! with the socket, the clock and the timers. It waits as told, connects to the carrier it is
//! told, runs the RTSP dialogue (`session`) or the RTMP one (`rtmp`), or sends MPEG-TS over
//! SRT (`ts`), by the URL's scheme; paces the frames, and tells the policy each outcome:
//! live, refused (status, the refusal code, the words), unreachable, dropped, the end of the
//! source, a shutdown.
//!
//! Contract: [`publish`] owns the socket and the timers and nothing else; what to do, when,
//! and when to stop is the policy's. What happens is told through the `on_event` callback as
//! it happens, and the end as a [`Summary`] (a clean stop: window closed, clip ended,
//! shutdown) or an error (the server refused for a reason retrying cannot fix, or the source
//! failed). Every wait is bounded: connecting [`CONNECT_WAIT`], the dialogue
//! [`DIALOGUE_WAIT`], a write [`WRITE_WAIT`]. Times go to the policy on the server's clock:
//! this terminal's, corrected by the plan's offset.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::policy::{Action, Ended, Event, Input, Plan, Policy, Tally, Target};
use super::rtmp::{self, RtmpDialogue};
use super::rtp::Packetizer;
use super::session::{Dialogue, State};
use super::ts::{TsMuxer, PACKET};
use super::{sdp, Codec, Frame, Source};
use crate::TerminalError;
use slotcast_domain::contract::RefusalCode;

pub const CONNECT_WAIT: Duration = Duration::from_secs(3);
pub const DIALOGUE_WAIT: Duration = Duration::from_secs(5);
pub const WRITE_WAIT: Duration = Duration::from_secs(5);
/// How long a source may take to give its first frame.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(15);
/// RTP packet size on the wire (fits an Ethernet MTU with IP and TCP headers).
const MAX_PACKET: usize = 1400;
/// The furthest a wait reaches (a window is never this long).
const LONGEST_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

impl Plan {
    /// The server's time now, by this terminal's clock corrected with the offset.
    pub fn server_now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        self.offset.map_or(now, |o| o.server_time(now))
    }

    /// The local instant at which the server's clock reads `at`.
    fn instant_of(&self, at: DateTime<Utc>) -> Instant {
        let ahead = (at - self.server_now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + ahead.min(LONGEST_WAIT)
    }
}

/// The end of a `live` run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub ended: Ended,
    /// Bytes written to the server (RTSP and media).
    pub bytes: u64,
    pub frames: u64,
    pub packets: u64,
    /// Connections made after the first one went live.
    pub reconnects: u32,
    /// Carriers that went live, in order (repeats collapsed).
    pub carriers: Vec<String>,
    /// Time spent live.
    pub live_for: Duration,
    /// Frames that could not be packetized (a broken NAL length, an oversized AAC frame),
    /// left out.
    pub skipped: u64,
}

/// One live connection.
struct Conn {
    /// The TCP connection of RTSP and RTMP (SRT has its own, inside its `Wire`).
    stream: Option<TcpStream>,
    dialogue: Wire,
    since: Instant,
}

/// The publishing dialogue of a connection, by the protocol its URL names.
enum Wire {
    // Boxed, all: rml_rtmp's session is large and the RTSP dialogue is not small.
    Rtsp(Box<Dialogue>),
    Rtmp(Box<RtmpDialogue>),
    Srt(Box<SrtLink>),
}

/// An SRT connection: frames go out as MPEG-TS, seven packets a message.
struct SrtLink {
    socket: slotcast_srt::Socket,
    mux: TsMuxer,
}

/// SRT's receiver delay the terminal proposes (libsrt's default for live mode).
const SRT_LATENCY: Duration = Duration::from_millis(120);
/// How often an SRT connection, which the server never writes to, is checked for being up.
const SRT_CHECK: Duration = Duration::from_millis(250);

impl Wire {
    fn state(&self) -> &State {
        match self {
            Self::Rtsp(d) => d.state(),
            Self::Rtmp(d) => d.state(),
            // Connected is publishing: SRT has no dialogue after its handshake.
            Self::Srt(_) => &State::Recording,
        }
    }

    fn take_output(&mut self) -> Vec<u8> {
        match self {
            Self::Rtsp(d) => d.take_output(),
            Self::Rtmp(d) => d.take_output(),
            Self::Srt(_) => Vec::new(),
        }
    }

    fn handle_input(&mut self, bytes: &[u8], now: std::time::Instant) {
        match self {
            Self::Rtsp(d) => d.handle_input(bytes, now),
            Self::Rtmp(d) => d.handle_input(bytes),
            Self::Srt(_) => {}
        }
    }

    /// When the RTSP keep-alive is due (RTMP and SRT need none).
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        match self {
            Self::Rtsp(d) => d.poll_timeout(),
            Self::Rtmp(_) | Self::Srt(_) => None,
        }
    }

    fn handle_timeout(&mut self, now: std::time::Instant) {
        if let Self::Rtsp(d) = self {
            d.handle_timeout(now);
        }
    }

    fn teardown(&mut self) {
        match self {
            Self::Rtsp(d) => d.teardown(),
            Self::Rtmp(d) => d.teardown(),
            // Closing the socket is the end.
            Self::Srt(_) => {}
        }
    }
}

struct Publisher {
    reservation_id: String,
    key: String,
    tracks: Vec<Codec>,
    sdp: String,
    packetizers: Vec<Packetizer>,
    has_video: bool,
    /// The media counts; the rest of the summary is the policy's tally.
    summary: Summary,
    /// Once live: a keyframe must come before anything else is sent on this connection.
    need_keyframe: bool,
}

/// Publishes `source` by `plan` until the window closes, the source ends or `shutdown`.
pub async fn publish(
    plan: Plan,
    mut source: Source,
    on_event: &mut (dyn FnMut(Event) + Send),
    shutdown: CancellationToken,
) -> Result<Summary, TerminalError> {
    let mut policy = Policy::new(&plan, plan.server_now())?;
    let random: Vec<[u32; 3]> = (0..source.tracks.len()).map(|_| rand::random()).collect();
    let mut p = Publisher {
        reservation_id: plan.reservation_id.clone(),
        key: plan.key.clone(),
        sdp: sdp::describe(&source.tracks),
        packetizers: source
            .tracks
            .iter()
            .zip(random)
            .enumerate()
            .map(|(i, (c, r))| Packetizer::new(c.clone(), sdp::payload_type(i), MAX_PACKET, r))
            .collect(),
        has_video: source
            .tracks
            .iter()
            .any(|c| matches!(c, Codec::H264 { .. })),
        tracks: source.tracks.clone(),
        summary: Summary::default(),
        need_keyframe: true,
    };

    // The first frame tells a live source (no due times: a camera) from a clip.
    let mut pending: Option<Frame> = None;
    tokio::select! {
        () = shutdown.cancelled() => policy.handle(plan.server_now(), Input::Shutdown),
        first = timeout(FIRST_FRAME_WAIT, source.frames.recv()) => match first {
            Ok(Some(Ok(frame))) => pending = Some(frame),
            Ok(Some(Err(why))) => return Err(TerminalError::Live(why)),
            Ok(None) => return Err(TerminalError::Live("the input has no frames".into())),
            Err(_) => {
                return Err(TerminalError::Live(format!(
                    "the input gave no frame in {} s",
                    FIRST_FRAME_WAIT.as_secs()
                )))
            }
        },
    }
    let live_source = pending.as_ref().is_some_and(|f| f.due.is_none());

    let mut conn: Option<Conn> = None;
    // Frames are paced from the moment the first connection went live.
    let mut origin: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wake = loop {
            match policy.poll(plan.server_now()) {
                Action::Report(event) => on_event(event),
                Action::Wait { until } => break plan.instant_of(until),
                Action::Connect(target) => {
                    let outcome = match p.connect(&target).await {
                        Ok(c) => {
                            p.need_keyframe = p.has_video;
                            origin.get_or_insert(c.since);
                            conn = Some(c);
                            Input::Live
                        }
                        Err(miss) => miss,
                    };
                    policy.handle(plan.server_now(), outcome);
                }
                Action::Stop(ended) => {
                    p.hang_up(conn.take()).await;
                    return Ok(p.end(ended, policy.tally()));
                }
                Action::Fail(why) => {
                    p.hang_up(conn.take()).await;
                    return Err(TerminalError::Live(why));
                }
            }
        };
        // A live source (a camera) is drained even while not connected, so its session stays
        // polled (and alive) and nothing stale is sent; a clip flows once it was first live.
        let frames_flow = conn.is_some() || origin.is_some() || live_source;
        let keep_alive = conn
            .as_ref()
            .and_then(|c| c.dialogue.poll_timeout())
            .map(Instant::from_std);
        let input = tokio::select! {
            () = shutdown.cancelled() => Some(Input::Shutdown),
            () = sleep_until(wake) => None,
            frame = next_frame(&mut source, &mut pending, origin), if frames_flow => match frame {
                None => Some(Input::SourceEnded),
                Some(Err(why)) => Some(Input::SourceFailed(why)),
                Some(Ok(frame)) => match conn.as_mut() {
                    Some(c) => p.send(c, &frame).await.err(),
                    None => None,
                }
                .map(|why| dropped(&mut conn, why)),
            },
            read = read_some(&mut conn, &mut buf) => {
                let why = match (read, conn.as_mut()) {
                    (_, None) => None,
                    (Ok(0), Some(_)) => Some("the server closed the connection".to_string()),
                    (Ok(n), Some(c)) => {
                        c.dialogue.handle_input(&buf[..n], Instant::now().into_std());
                        match c.dialogue.state().clone() {
                            State::Recording => p.flush(c).await.err(),
                            State::Refused { status, reason, .. } => {
                                Some(format!("{status} {reason}"))
                            }
                            State::Failed(why) => Some(why),
                            State::Starting | State::Closed => None,
                        }
                    }
                    (Err(e), Some(_)) => Some(e.to_string()),
                };
                why.map(|why| dropped(&mut conn, why))
            }
            () = sleep_until(keep_alive.unwrap_or(wake)), if keep_alive.is_some() => {
                match conn.as_mut() {
                    Some(c) => {
                        c.dialogue.handle_timeout(Instant::now().into_std());
                        p.flush(c).await.err()
                    }
                    None => None,
                }
                .map(|why| dropped(&mut conn, why))
            }
        };
        if let Some(input) = input {
            policy.handle(plan.server_now(), input);
        }
    }
}

/// The connection broke: it is closed, and the policy told why.
fn dropped(conn: &mut Option<Conn>, why: String) -> Input {
    *conn = None;
    Input::Dropped(why)
}

/// The next frame, at its due time (at once for a live source). Cancel-safe: a frame that
/// is waiting for its time stays in `pending`.
async fn next_frame(
    source: &mut Source,
    pending: &mut Option<Frame>,
    origin: Option<Instant>,
) -> Option<Result<Frame, String>> {
    if pending.is_none() {
        match source.frames.recv().await? {
            Ok(frame) => *pending = Some(frame),
            Err(why) => return Some(Err(why)),
        }
    }
    if let (Some(due), Some(origin)) = (pending.as_ref().and_then(|f| f.due), origin) {
        sleep_until(origin + due).await;
    }
    pending.take().map(Ok)
}

/// Reads from the connection, if there is one (else waits forever). An SRT connection is
/// never written to by the server: it answers 0 (closed) once it is down.
async fn read_some(conn: &mut Option<Conn>, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(Conn {
            stream: Some(stream),
            ..
        }) => stream.read(buf).await,
        Some(Conn {
            dialogue: Wire::Srt(link),
            ..
        }) => loop {
            tokio::time::sleep(SRT_CHECK).await;
            if !link.socket.is_connected() {
                return Ok(0);
            }
        },
        _ => std::future::pending().await,
    }
}

impl Publisher {
    fn end(&mut self, ended: Ended, tally: &Tally) -> Summary {
        Summary {
            ended,
            reconnects: tally.reconnects,
            carriers: tally.carriers.clone(),
            live_for: tally.live_for,
            ..std::mem::take(&mut self.summary)
        }
    }

    /// Connects to `target` and runs the dialogue to RECORD: a live connection, or how the
    /// attempt failed.
    async fn connect(&mut self, target: &Target) -> Result<Conn, Input> {
        if target.url.starts_with("srt://") {
            return self.connect_srt(target).await;
        }
        let dialogue = if target.url.starts_with("rtmp://") {
            RtmpDialogue::new(&target.url, &self.key, self.tracks.clone())
                .map(|d| Wire::Rtmp(Box::new(d)))
                .map_err(Input::Failed)?
        } else {
            Wire::Rtsp(Box::new(Dialogue::new(
                &target.url,
                &self.key,
                self.sdp.clone(),
                self.tracks.len(),
            )))
        };
        let addr = match &dialogue {
            Wire::Rtmp(_) => rtmp::address(&target.url).map(|(addr, _)| addr).ok(),
            Wire::Rtsp(_) => url::Url::parse(&target.url)
                .ok()
                .filter(|u| u.scheme() == "rtsp")
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(554)))),
            Wire::Srt(_) => None,
        }
        .ok_or_else(|| Input::Failed(format!("{} is not an rtsp:// or rtmp:// URL", target.url)))?;
        let stream = match timeout(CONNECT_WAIT, TcpStream::connect(&addr)).await {
            Err(_) => {
                return Err(Input::Unreachable(format!(
                    "no answer from {addr} in {CONNECT_WAIT:?}"
                )))
            }
            Ok(Err(e)) => return Err(Input::Unreachable(format!("{addr}: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream: Some(stream),
            dialogue,
            since: Instant::now(),
        };
        let handshake = async {
            let mut buf = vec![0u8; 8192];
            loop {
                self.flush(&mut conn).await.map_err(Input::Failed)?;
                match conn.dialogue.state() {
                    State::Recording => return Ok(()),
                    State::Refused {
                        status,
                        code,
                        reason,
                    } => {
                        return Err(Input::Refused {
                            status: *status,
                            code: *code,
                            reason: reason.clone(),
                        })
                    }
                    State::Failed(why) => return Err(Input::Failed(why.clone())),
                    State::Starting | State::Closed => {}
                }
                let Some(stream) = conn.stream.as_mut() else {
                    return Err(Input::Failed("no connection".into()));
                };
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| Input::Failed(e.to_string()))?;
                if n == 0 {
                    return Err(Input::Failed("the server closed the connection".into()));
                }
                conn.dialogue
                    .handle_input(&buf[..n], Instant::now().into_std());
            }
        };
        match timeout(DIALOGUE_WAIT, handshake).await {
            Err(_) => Err(Input::Failed(format!(
                "not publishing within {DIALOGUE_WAIT:?}"
            ))),
            Ok(Err(miss)) => Err(miss),
            Ok(Ok(())) => {
                conn.since = Instant::now();
                Ok(conn)
            }
        }
    }

    /// Calls the SRT listener of `target` (`srt://host:port`) with the reservation and key in
    /// the stream id: a live connection, or how the attempt failed (a refusal by its code).
    async fn connect_srt(&mut self, target: &Target) -> Result<Conn, Input> {
        let host_port = target.url.trim_start_matches("srt://").to_string();
        let addr = match tokio::net::lookup_host(&host_port)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(addr)) => addr,
            _ => return Err(Input::Unreachable(format!("{host_port}: no such address"))),
        };
        let mux = TsMuxer::new(&self.tracks).map_err(Input::Failed)?;
        let stream_id = format!("#!::r={},k={}", self.reservation_id, self.key);
        let called = tokio::task::spawn_blocking(move || {
            slotcast_srt::connect(addr, &stream_id, SRT_LATENCY, CONNECT_WAIT)
        })
        .await;
        match called {
            Ok(Ok(socket)) => Ok(Conn {
                stream: None,
                dialogue: Wire::Srt(Box::new(SrtLink { socket, mux })),
                since: Instant::now(),
            }),
            Ok(Err(slotcast_srt::SrtError::Rejected(code))) if code >= 1000 => {
                let refusal = RefusalCode::from_srt_reject(code);
                Err(Input::Refused {
                    // SRT's predefined codes are 1000 + an HTTP-like status.
                    status: u16::try_from(code - 1000).unwrap_or(400),
                    code: refusal,
                    reason: match refusal {
                        Some(r) => format!("refused: {r} (SRT reject code {code})"),
                        None => format!("refused with SRT reject code {code}"),
                    },
                })
            }
            Ok(Err(e)) => Err(Input::Unreachable(format!("{addr}: {e}"))),
            Err(e) => Err(Input::Failed(e.to_string())),
        }
    }

    /// Writes what the dialogue has queued.
    async fn flush(&mut self, conn: &mut Conn) -> Result<(), String> {
        let out = conn.dialogue.take_output();
        if out.is_empty() {
            return Ok(());
        }
        let Some(stream) = conn.stream.as_mut() else {
            return Ok(());
        };
        match timeout(WRITE_WAIT, stream.write_all(&out)).await {
            Err(_) => Err(format!("the server took no data for {WRITE_WAIT:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(())) => {
                self.summary.bytes += out.len() as u64;
                Ok(())
            }
        }
    }

    /// Packetizes and writes one frame (after the first keyframe of this connection).
    async fn send(&mut self, conn: &mut Conn, frame: &Frame) -> Result<(), String> {
        if self.need_keyframe {
            let video = matches!(self.tracks.get(frame.track), Some(Codec::H264 { .. }));
            if !(video && frame.keyframe) {
                return Ok(());
            }
            self.need_keyframe = false;
        }
        if let Wire::Srt(link) = &mut conn.dialogue {
            let packets = link.mux.frame(frame);
            for message in packets.chunks(7 * PACKET) {
                link.socket.send(message).map_err(|e| e.to_string())?;
            }
            self.summary.frames += 1;
            self.summary.bytes += packets.len() as u64;
            return Ok(());
        }
        if let Wire::Rtmp(d) = &mut conn.dialogue {
            // One FLV tag per frame, chunked by the session.
            self.summary.frames += 1;
            d.send_frame(frame);
            return self.flush(conn).await;
        }
        let Some(packetizer) = self.packetizers.get_mut(frame.track) else {
            return Ok(());
        };
        let Ok(packets) = packetizer.packetize(frame.timestamp, frame.keyframe, &frame.data) else {
            // A frame that cannot be sent is left out; the stream goes on.
            self.summary.skipped += 1;
            return Ok(());
        };
        self.summary.packets += packets.len() as u64;
        self.summary.frames += 1;
        if let Wire::Rtsp(d) = &mut conn.dialogue {
            d.send_rtp(frame.track, &packets);
        }
        self.flush(conn).await
    }

    /// TEARDOWN (best effort, briefly) and close.
    async fn hang_up(&mut self, conn: Option<Conn>) {
        if let Some(mut conn) = conn {
            conn.dialogue.teardown();
            let _ = timeout(Duration::from_secs(1), self.flush(&mut conn)).await;
            if let Some(stream) = conn.stream.as_mut() {
                let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
            }
        }
    }
}
