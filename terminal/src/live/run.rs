//! The async edge of `slotcast live`: waits for the window on the corrected clock, connects
//! to the carrier, runs the RTSP dialogue over the socket, paces the frames, reconnects after
//! a drop, falls back to the next carrier when asked, and stops at the window's close or on
//! shutdown.
//!
//! Contract: [`publish`] owns the socket and the timers and nothing else; what happens is
//! told through the `on_event` callback as it happens, and the end as a [`Summary`] (a
//! clean stop: window closed, clip ended, shutdown) or an error (the server refused for a
//! reason retrying cannot fix, or the source failed). Every wait is bounded: connecting
//! [`CONNECT_WAIT`], the dialogue [`DIALOGUE_WAIT`], a write [`WRITE_WAIT`]; retries back off
//! up to [`MAX_BACKOFF`] and never outlive the window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::rtp::Packetizer;
use super::session::{Dialogue, State};
use super::{sdp, Codec, Frame, Source};
use crate::clock::Offset;
use crate::TerminalError;

pub const CONNECT_WAIT: Duration = Duration::from_secs(3);
pub const DIALOGUE_WAIT: Duration = Duration::from_secs(5);
pub const WRITE_WAIT: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After `opens_at`, how long a "not open yet" or "unknown" answer is taken for a streamer
/// that has not yet heard of the opening (and retried quickly).
const OPENING_GRACE: Duration = Duration::from_secs(5);
/// The quick retry while the gate is opening.
const OPENING_RETRY: Duration = Duration::from_millis(10);
/// How long a connection must have lasted for the next drop to be retried at once.
const LASTING: Duration = Duration::from_secs(10);
/// How long a source may take to give its first frame.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(15);
/// A drop this close to the end is the window closing.
const CLOSING_MARGIN: Duration = Duration::from_secs(1);
/// RTP packet size on the wire (fits an Ethernet MTU with IP and TCP headers).
const MAX_PACKET: usize = 1400;

/// One carrier's publish URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub carrier: String,
    pub url: String,
}

/// What to publish to, and when.
#[derive(Clone)]
pub struct Plan {
    /// The preset carrier first; with fallback, the others after it.
    pub targets: Vec<Target>,
    pub fallback: bool,
    pub key: String,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    /// This terminal's clock against the server's; `None`: taken as agreeing.
    pub offset: Option<Offset>,
}

/// Everything but the stream key.
impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("targets", &self.targets)
            .field("fallback", &self.fallback)
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The server's time now, by this terminal's clock corrected with the offset.
    pub fn server_now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        self.offset.map_or(now, |o| o.server_time(now))
    }

    /// The local instant at which the server's clock reads `at`.
    fn instant_of(&self, at: DateTime<Utc>) -> Instant {
        let ahead = (at - self.server_now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + ahead
    }
}

/// What is happening, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Before the window: time left (once a second, on whole seconds left).
    Waiting {
        left: Duration,
    },
    Connecting {
        carrier: String,
        url: String,
    },
    /// RECORD accepted; `at` is the server time by the corrected clock.
    Live {
        carrier: String,
        at: DateTime<Utc>,
    },
    /// The carrier could not be reached; `next` is the carrier tried next, if any.
    Unreachable {
        carrier: String,
        why: String,
        next: Option<String>,
    },
    /// The server said no, and it is worth asking again in `retry_in`.
    Refused {
        carrier: String,
        status: u16,
        reason: String,
        retry_in: Duration,
    },
    /// The connection broke while live.
    Dropped {
        carrier: String,
        why: String,
    },
}

/// Why a `live` run stopped (without an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ended {
    #[default]
    WindowClosed,
    /// The clip (without `--loop`) or the camera's stream came to its end.
    SourceEnded,
    /// Ctrl-C or SIGTERM.
    Stopped,
    StoppedBeforeOpening,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WindowClosed => "the window closed",
            Self::SourceEnded => "the input ended",
            Self::Stopped => "stopped on request (Ctrl-C or SIGTERM)",
            Self::StoppedBeforeOpening => "stopped before the window opened",
        })
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
    stream: TcpStream,
    dialogue: Dialogue,
    carrier: String,
    since: Instant,
}

/// Why a connection attempt did not go live.
enum Miss {
    Unreachable(String),
    Refused { status: u16, reason: String },
    Failed(String),
}

struct Publisher {
    plan: Plan,
    tracks: Vec<Codec>,
    sdp: String,
    packetizers: Vec<Packetizer>,
    has_video: bool,
    summary: Summary,
    /// Index into the plan's targets of the carrier to try next.
    target: usize,
    backoff: Duration,
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
    if plan.targets.is_empty() {
        return Err(TerminalError::Usage("no carrier to connect over".into()));
    }
    if plan.server_now() >= plan.closes_at {
        return Err(TerminalError::Live(format!(
            "the window closed at {}",
            crate::view::utc(plan.closes_at)
        )));
    }
    let random: Vec<[u32; 3]> = (0..source.tracks.len()).map(|_| rand::random()).collect();
    let mut p = Publisher {
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
        plan,
        summary: Summary::default(),
        target: 0,
        backoff: Duration::ZERO,
        need_keyframe: true,
    };

    // The first frame tells a live source (no due times: a camera) from a clip.
    let first = tokio::select! {
        () = shutdown.cancelled() => return Ok(p.end(Ended::StoppedBeforeOpening)),
        first = timeout(FIRST_FRAME_WAIT, source.frames.recv()) => first,
    };
    let mut pending: Option<Frame> = match first {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(why))) => return Err(TerminalError::Live(why)),
        Ok(None) => return Err(TerminalError::Live("the input has no frames".into())),
        Err(_) => {
            return Err(TerminalError::Live(format!(
                "the input gave no frame in {} s",
                FIRST_FRAME_WAIT.as_secs()
            )))
        }
    };
    let live_source = pending.as_ref().is_some_and(|f| f.due.is_none());

    // Before the window: a countdown, on the corrected clock. A live source is drained
    // meanwhile, so the camera session stays polled (and alive) and nothing stale is sent.
    let opens = p.plan.instant_of(p.plan.opens_at);
    loop {
        let left = opens.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        on_event(Event::Waiting { left });
        // Tick on whole seconds left.
        let step = Duration::from_nanos(u64::from(left.subsec_nanos()));
        let step = if step.is_zero() {
            Duration::from_secs(1)
        } else {
            step
        };
        let tick = Instant::now() + step.min(left);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(p.end(Ended::StoppedBeforeOpening)),
                () = sleep_until(tick) => break,
                item = source.frames.recv(), if live_source => match item {
                    Some(Ok(_)) => pending = None,
                    Some(Err(why)) => return Err(TerminalError::Live(why)),
                    None => return Err(TerminalError::Live("the input ended before the window opened".into())),
                },
            }
        }
    }

    let closes = p.plan.instant_of(p.plan.closes_at);
    let mut conn: Option<Conn> = None;
    let mut retry_at = Instant::now();
    // Frames are paced from the moment the first connection went live.
    let mut origin: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let frames_flow = conn.is_some() || origin.is_some() || live_source;
        let keep_alive = conn
            .as_ref()
            .and_then(|c| c.dialogue.poll_timeout())
            .map(Instant::from_std);
        tokio::select! {
            () = shutdown.cancelled() => {
                p.hang_up(conn.take()).await;
                return Ok(p.end(Ended::Stopped));
            }
            () = sleep_until(closes) => {
                p.hang_up(conn.take()).await;
                return Ok(p.end(Ended::WindowClosed));
            }
            () = sleep_until(retry_at), if conn.is_none() => {
                match p.attempt(on_event).await {
                    Ok(c) => {
                        origin.get_or_insert(c.since);
                        conn = Some(c);
                    }
                    Err(next) => retry_at = next?,
                }
            }
            frame = next_frame(&mut source, &mut pending, origin), if frames_flow => {
                match frame {
                    None => {
                        p.hang_up(conn.take()).await;
                        return Ok(p.end(Ended::SourceEnded));
                    }
                    Some(Err(why)) => {
                        p.hang_up(conn.take()).await;
                        return Err(TerminalError::Live(why));
                    }
                    Some(Ok(frame)) => {
                        if let Some(c) = conn.as_mut() {
                            if let Err(why) = p.send(c, &frame).await {
                                retry_at = p.dropped(conn.take(), why, on_event);
                            }
                        }
                    }
                }
            }
            read = read_some(&mut conn, &mut buf) => {
                let Some(c) = conn.as_mut() else { continue };
                let why = match read {
                    Ok(0) => Some("the server closed the connection".to_string()),
                    Ok(n) => {
                        c.dialogue.handle_input(&buf[..n], Instant::now().into_std());
                        match c.dialogue.state().clone() {
                            State::Recording => p.flush(c).await.err(),
                            State::Refused { status, reason } => Some(format!("{status} {reason}")),
                            State::Failed(why) => Some(why),
                            State::Starting | State::Closed => None,
                        }
                    }
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = why {
                    retry_at = p.dropped(conn.take(), why, on_event);
                }
            }
            () = sleep_until(keep_alive.unwrap_or(closes)), if keep_alive.is_some() => {
                if let Some(c) = conn.as_mut() {
                    c.dialogue.handle_timeout(Instant::now().into_std());
                    if let Err(why) = p.flush(c).await {
                        retry_at = p.dropped(conn.take(), why, on_event);
                    }
                }
            }
        }
        if p.near_close() && conn.is_none() && origin.is_some() {
            // Dropped at the very end: the streamer closed the window.
            return Ok(p.end(Ended::WindowClosed));
        }
    }
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

/// Reads from the connection, if there is one (else waits forever).
async fn read_some(conn: &mut Option<Conn>, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(c) => c.stream.read(buf).await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    fn end(&mut self, why: Ended) -> Summary {
        let mut summary = std::mem::take(&mut self.summary);
        summary.ended = why;
        summary
    }

    fn near_close(&self) -> bool {
        self.plan.server_now() + chrono::Duration::from_std(CLOSING_MARGIN).unwrap_or_default()
            >= self.plan.closes_at
    }

    /// One connection attempt to the current target: a live connection, or when to try again
    /// (an error if trying again cannot help).
    async fn attempt(
        &mut self,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Conn, Result<Instant, TerminalError>> {
        let target = self.plan.targets[self.target].clone();
        on_event(Event::Connecting {
            carrier: target.carrier.clone(),
            url: target.url.clone(),
        });
        let miss = match self.connect(&target).await {
            Ok(conn) => {
                self.need_keyframe = self.has_video;
                if !self.summary.carriers.is_empty() {
                    self.summary.reconnects += 1;
                }
                if self.summary.carriers.last() != Some(&target.carrier) {
                    self.summary.carriers.push(target.carrier.clone());
                }
                on_event(Event::Live {
                    carrier: target.carrier,
                    at: self.plan.server_now(),
                });
                return Ok(conn);
            }
            Err(miss) => miss,
        };
        let since_open = (self.plan.server_now() - self.plan.opens_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let opening = since_open < OPENING_GRACE;
        match miss {
            Miss::Unreachable(_) | Miss::Failed(_) => {
                let next = (self.plan.fallback && self.plan.targets.len() > 1)
                    .then(|| (self.target + 1) % self.plan.targets.len());
                let next_carrier = next.map(|n| self.plan.targets[n].carrier.clone());
                on_event(match miss {
                    Miss::Unreachable(why) => Event::Unreachable {
                        carrier: target.carrier,
                        why,
                        next: next_carrier,
                    },
                    Miss::Failed(why) | Miss::Refused { reason: why, .. } => Event::Dropped {
                        carrier: target.carrier,
                        why,
                    },
                });
                match next {
                    // The next carrier at once, until every one was tried this round.
                    Some(n) if n != 0 => {
                        self.target = n;
                        Err(Ok(Instant::now()))
                    }
                    Some(n) => {
                        self.target = n;
                        Err(Ok(self.back_off()))
                    }
                    None => Err(Ok(self.back_off())),
                }
            }
            Miss::Refused { status, reason } => {
                let not_yet = reason.contains("opens at") || status == 404;
                let wait = if status == 401 {
                    return Err(Err(TerminalError::Live(format!(
                        "the server refused the stream key ({status} {reason}); if it was \
                         rotated elsewhere, `slotcast show ID` fetches the new setting"
                    ))));
                } else if not_yet && opening {
                    // The streamer has not heard of the opening yet: ask again soon.
                    let wait = OPENING_RETRY.max(self.backoff);
                    self.backoff = (wait * 2).min(Duration::from_millis(500));
                    wait
                } else if reason.contains("another publisher") || not_yet || status >= 500 {
                    self.back_off().saturating_duration_since(Instant::now())
                } else if self.near_close() {
                    return Err(Ok(Instant::now() + CLOSING_MARGIN));
                } else {
                    return Err(Err(TerminalError::Live(format!(
                        "{} refused: {status} {reason}",
                        target.carrier
                    ))));
                };
                on_event(Event::Refused {
                    carrier: target.carrier,
                    status,
                    reason,
                    retry_in: wait,
                });
                Err(Ok(Instant::now() + wait))
            }
        }
    }

    /// The next retry time: 0.5 s, 1 s, 2 s, … up to [`MAX_BACKOFF`].
    fn back_off(&mut self) -> Instant {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(500), MAX_BACKOFF);
        Instant::now() + self.backoff
    }

    async fn connect(&mut self, target: &Target) -> Result<Conn, Miss> {
        let addr = url::Url::parse(&target.url)
            .ok()
            .filter(|u| u.scheme() == "rtsp")
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(554))))
            .ok_or_else(|| Miss::Failed(format!("{} is not an rtsp:// URL", target.url)))?;
        let stream = match timeout(CONNECT_WAIT, TcpStream::connect(&addr)).await {
            Err(_) => {
                return Err(Miss::Unreachable(format!(
                    "no answer from {addr} in {CONNECT_WAIT:?}"
                )))
            }
            Ok(Err(e)) => return Err(Miss::Unreachable(format!("{addr}: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let dialogue = Dialogue::new(
            &target.url,
            &self.plan.key,
            self.sdp.clone(),
            self.tracks.len(),
        );
        let mut conn = Conn {
            stream,
            dialogue,
            carrier: target.carrier.clone(),
            since: Instant::now(),
        };
        let handshake = async {
            let mut buf = vec![0u8; 8192];
            loop {
                self.flush(&mut conn).await.map_err(Miss::Failed)?;
                match conn.dialogue.state() {
                    State::Recording => return Ok(()),
                    State::Refused { status, reason } => {
                        return Err(Miss::Refused {
                            status: *status,
                            reason: reason.clone(),
                        })
                    }
                    State::Failed(why) => return Err(Miss::Failed(why.clone())),
                    State::Starting | State::Closed => {}
                }
                let n = conn
                    .stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| Miss::Failed(e.to_string()))?;
                if n == 0 {
                    return Err(Miss::Failed("the server closed the connection".into()));
                }
                conn.dialogue
                    .handle_input(&buf[..n], Instant::now().into_std());
            }
        };
        match timeout(DIALOGUE_WAIT, handshake).await {
            Err(_) => Err(Miss::Failed(format!("no RECORD within {DIALOGUE_WAIT:?}"))),
            Ok(Err(miss)) => Err(miss),
            Ok(Ok(())) => {
                conn.since = Instant::now();
                Ok(conn)
            }
        }
    }

    /// Writes what the dialogue has queued.
    async fn flush(&mut self, conn: &mut Conn) -> Result<(), String> {
        let out = conn.dialogue.take_output();
        if out.is_empty() {
            return Ok(());
        }
        match timeout(WRITE_WAIT, conn.stream.write_all(&out)).await {
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
        conn.dialogue.send_rtp(frame.track, &packets);
        self.flush(conn).await
    }

    /// The connection broke: say so, count the time live, and retry at once.
    fn dropped(
        &mut self,
        conn: Option<Conn>,
        why: String,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Instant {
        if let Some(conn) = conn {
            let lasted = conn.since.elapsed();
            self.summary.live_for += lasted;
            if lasted >= LASTING {
                // A connection that held: the first retry after its drop is immediate.
                self.backoff = Duration::ZERO;
            }
            if !self.near_close() {
                on_event(Event::Dropped {
                    carrier: conn.carrier,
                    why,
                });
            }
        }
        if self.backoff.is_zero() {
            self.backoff = Duration::from_millis(250);
            Instant::now()
        } else {
            // One that keeps dropping soon after connecting is retried ever more slowly.
            self.back_off()
        }
    }

    /// TEARDOWN (best effort, briefly) and close.
    async fn hang_up(&mut self, conn: Option<Conn>) {
        if let Some(mut conn) = conn {
            self.summary.live_for += conn.since.elapsed();
            conn.dialogue.teardown();
            let _ = timeout(Duration::from_secs(1), self.flush(&mut conn)).await;
            let _ = timeout(Duration::from_secs(1), conn.stream.shutdown()).await;
        }
    }
}
