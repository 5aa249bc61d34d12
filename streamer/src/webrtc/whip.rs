//! WHIP (RFC 9725) as the streamer takes it: the request checks, the answer, and the media a
//! publisher sends, as frames for the media path.
//!
//! Contract: sans-IO and never panics on input. [`read_head`] decides on a request from its
//! method, path and headers alone, before any body is read: a `POST /whip/<reservation_id>`
//! with `Authorization: Bearer <stream_key>` and an SDP offer of at most [`OFFER_MAX`] bytes,
//! or a `DELETE` of a session's resource; anything else is an [`Answer`] (401 asking for the
//! bearer, 405 for trickle's `PATCH` and other methods, 413, 415, 404), which names no refusal
//! code: those come from the gate ([`refused`]). [`answer`] makes the SDP answer with a
//! peer's `Rtc` (ICE-lite, H.264 and Opus only) and says which tracks the publisher sends.
//! [`Ingest`] turns each frame str0m depacketized into a [`Frame`] of the track it belongs to
//! (H.264 through [`AnnexB`], Opus as it is), on each track's RTP clock, holds the audio for
//! the first keyframe (bounded: [`AUDIO_HOLD`], 25 frames), and tells when to ask the
//! publisher for a keyframe ([`KeyframeAsk`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use slotcast_domain::contract::REFUSAL_HEADER;
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};

use super::peer::Peer;
use crate::media::annex_b::AnnexB;
use crate::media::frames::Codec;
use crate::media::{CodecParams, Frame, TrackKind, TrackSpec};
use crate::rtsp::auth::{valid_reservation_id, MAX_KEY_LEN};
use crate::rtsp::Refusal;
use crate::StreamerError;

/// The largest SDP offer read (a browser's, with every codec it has, is about 6 KiB).
pub const OFFER_MAX: usize = 64 * 1024;
/// The path every WHIP resource is under.
pub const PREFIX: &str = "/whip/";
/// How often a keyframe is asked for while none comes (after the start, or a loss).
pub const KEYFRAME_ASK_EVERY: Duration = Duration::from_secs(1);
/// WebRTC's Opus: 48 kHz on the wire, two channels in the SDP.
const OPUS_RATE: u32 = 48_000;
/// H.264 on RTP: a 90 kHz clock.
const VIDEO_RATE: u32 = 90_000;

/// An answer that is not the SDP answer: a status, its headers, and words for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// The refusal metric's reason when this answer turns a publisher away; `None` for the
    /// answers that ask for something (the bearer) or are no WHIP request at all.
    pub counted: Option<&'static str>,
}

impl Answer {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            counted: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn counted(mut self, reason: &'static str) -> Self {
        self.counted = Some(reason);
        self
    }
}

/// What a request asks, once its head is read.
#[derive(Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `POST /whip/<reservation_id>`: publish, with this key; the offer (the body) is next.
    Publish {
        reservation_id: &'a str,
        key: &'a str,
    },
    /// `DELETE /whip/<reservation_id>/<session>`: the publisher is done.
    End {
        reservation_id: &'a str,
        session: &'a str,
    },
    /// `OPTIONS`: what the resource allows (no ICE servers are offered).
    Options { allow: &'static str },
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Publish { reservation_id, .. } => f
                .debug_struct("Publish")
                .field("reservation_id", reservation_id)
                .field("key", &"(hidden)")
                .finish(),
            Self::End {
                reservation_id,
                session,
            } => f
                .debug_struct("End")
                .field("reservation_id", reservation_id)
                .field("session", session)
                .finish(),
            Self::Options { allow } => f.debug_struct("Options").field("allow", allow).finish(),
        }
    }
}

/// A session's name in its resource's path: 32 lower-case hex digits (128 random bits).
pub fn valid_session(session: &str) -> bool {
    session.len() == 32
        && session
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The reservation (and session) a path names, if it is a WHIP path.
fn route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(PREFIX)?;
    match rest.split_once('/') {
        None => valid_reservation_id(rest).then_some((rest, None)),
        Some((id, session)) => {
            (valid_reservation_id(id) && valid_session(session)).then_some((id, Some(session)))
        }
    }
}

const ALLOW_RESOURCE: &str = "OPTIONS, POST";
const ALLOW_SESSION: &str = "DELETE, OPTIONS";

/// Decides on a request from its head: `method`, `path` (without the query), and the
/// `Authorization`, `Content-Type` and `Content-Length` headers as sent (`None`: absent).
pub fn read_head<'a>(
    method: &str,
    path: &'a str,
    authorization: Option<&'a str>,
    content_type: Option<&str>,
    content_length: Option<u64>,
) -> Result<Request<'a>, Answer> {
    let Some((reservation_id, session)) = route(path) else {
        return Err(Answer::new(
            404,
            "not found: publish by WHIP to /whip/<reservation_id>",
        ));
    };
    let allow = if session.is_some() {
        ALLOW_SESSION
    } else {
        ALLOW_RESOURCE
    };
    match (method, session) {
        ("OPTIONS", _) => return Ok(Request::Options { allow }),
        ("DELETE", Some(session)) => {
            return Ok(Request::End {
                reservation_id,
                session,
            })
        }
        ("POST", None) => {}
        ("PATCH", _) => {
            // RFC 9725 lets a server take no trickled candidates: the offer must hold them.
            return Err(Answer::new(
                405,
                "trickle ICE is not supported: send the offer once ICE gathering is complete",
            )
            .header("Allow", allow));
        }
        (other, _) => {
            return Err(
                Answer::new(405, format!("{other} is not allowed here")).header("Allow", allow)
            )
        }
    }
    let key = bearer(authorization).ok_or_else(|| {
        Answer::new(
            401,
            "the stream key is the bearer token: Authorization: Bearer <stream_key>",
        )
        .header("WWW-Authenticate", "Bearer")
    })?;
    if !content_type.is_some_and(is_sdp) {
        return Err(Answer::new(415, "the offer must be application/sdp")
            .header("Accept-Post", "application/sdp")
            .counted("malformed"));
    }
    if content_length.is_some_and(|n| n > OFFER_MAX as u64) {
        return Err(offer_too_large());
    }
    Ok(Request::Publish {
        reservation_id,
        key,
    })
}

/// The answer to an offer over [`OFFER_MAX`].
pub fn offer_too_large() -> Answer {
    Answer::new(413, format!("the offer is over {OFFER_MAX} bytes")).counted("malformed")
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case), if that is what
/// the header holds.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let ok = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= MAX_KEY_LEN
        && token.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(token)
}

/// `application/sdp`, parameters allowed, in any case.
fn is_sdp(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/sdp")
}

/// The gate refused the publisher: the refusal's status, its code in the `Slotcast-Refusal`
/// header, `<code>: <words>` as the body (as RTSP answers, docs/publishing.md).
pub fn refused(refusal: &Refusal) -> Answer {
    let answer = Answer::new(refusal.code.status(), refusal.coded())
        .header(REFUSAL_HEADER, refusal.code.as_str());
    if refusal.code.status() == 401 {
        answer.header("WWW-Authenticate", "Bearer error=\"invalid_token\"")
    } else {
        answer
    }
}

/// An offer the streamer cannot take (not SDP, or nothing in it slotcast relays).
fn unsupported(why: impl std::fmt::Display) -> Answer {
    Answer::new(400, format!("unsupported: {why}")).counted("unsupported_codec")
}

/// The longest wait between two STUN retransmissions str0m's ICE counts with: an ICE-lite
/// peer holds its pair this long times a few (about 55 s) without a binding request. A
/// browser asks every 5 s (consent freshness); libnice, with binding requests as keepalives,
/// every 25 s; the streamer's own silence timeout drops a peer that sends nothing at all.
pub const STUN_RTO_MAX: Duration = Duration::from_secs(10);

/// The `Rtc` configuration of a WHIP peer: ICE-lite (the streamer answers, never checks),
/// H.264 and Opus only (str0m picks the H.264 profile the offer prefers among its own).
pub fn rtc_config(crypto: &super::Crypto) -> str0m::RtcConfig {
    let mut config = crypto
        .rtc_config()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false);
    config.set_max_stun_rto(STUN_RTO_MAX);
    config
}

/// What the publisher's offer sends, as the answer took it: one video and one audio
/// m-line at most (others are left unused), in the order of the offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    pub sdp: String,
    pub media: Vec<(Mid, MediaKind)>,
}

/// Answers `offer` with `peer`'s `Rtc` (made with [`rtc_config`]) at `now`.
pub fn answer(
    peer: &mut Peer<impl super::peer::Datagrams>,
    offer: &str,
    now: Instant,
) -> Result<Offered, Answer> {
    let offer = SdpOffer::from_sdp_string(offer)
        .map_err(|e| Answer::new(400, format!("the offer is not SDP: {e}")).counted("malformed"))?;
    let answer = peer
        .rtc()
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| unsupported(format_args!("the offer cannot be answered: {e}")))?;
    peer.drain(now)
        .map_err(|e| unsupported(format_args!("the offer cannot be answered: {e}")))?;
    let sdp = answer.to_sdp_string();
    // str0m tells the media an offer added only once DTLS is up; the answer names them.
    let mut media = Vec::new();
    for mid in mids(&sdp) {
        let Some(m) = peer.rtc().media(mid) else {
            continue;
        };
        // An m-line whose codecs are none of ours is answered, but carries nothing.
        let usable = !m.remote_pts().is_empty() && !m.disabled();
        let kind = m.kind();
        let taken = media.iter().any(|(_, k)| *k == kind);
        if usable && !taken && matches!(kind, MediaKind::Video | MediaKind::Audio) {
            media.push((mid, kind));
        }
    }
    if !media.iter().any(|(_, kind)| *kind == MediaKind::Video) {
        return Err(unsupported(
            "the offer sends no H.264 video (packetization-mode 1); send H.264, with Opus audio",
        ));
    }
    Ok(Offered { sdp, media })
}

/// The mids of an SDP's m-lines, in order (`a=mid:` lines).
fn mids(sdp: &str) -> impl Iterator<Item = Mid> + '_ {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
}

/// The tracks of what `media` sends, in its order: H.264 at 90 kHz, Opus at 48 kHz.
pub fn tracks(media: &[(Mid, MediaKind)]) -> Vec<TrackSpec> {
    media
        .iter()
        .map(|(_, kind)| match kind {
            MediaKind::Video => Codec::H264.track_spec(VIDEO_RATE, None),
            MediaKind::Audio => TrackSpec {
                kind: TrackKind::Audio,
                media: "audio".into(),
                encoding_name: "OPUS".into(),
                payload_type: 0,
                clock_rate: OPUS_RATE,
                channels: Some(2),
                fmtp: None,
                control: None,
            },
        })
        .collect()
}

/// Opus as WebRTC sends it, described: two channels, nothing to skip (the streamer joins an
/// encoder's stream part-way: no priming samples come first).
pub fn opus_params() -> CodecParams {
    CodecParams::Opus {
        channels: 2,
        pre_skip: 0,
        codec: "opus".into(),
    }
}

/// One track's shaping.
enum Shape {
    Video(AnnexB),
    Audio,
}

/// How long audio that came before the first keyframe is held for it, at most.
pub const AUDIO_HOLD: Duration = Duration::from_millis(500);
/// Audio frames held for the first keyframe, at most (25 of 20 ms).
const AUDIO_HELD_MAX: usize = 25;

/// A publisher's media, frame by frame, as the media path takes it.
///
/// The media path places a track that joins the video by its arrival (each RTP track has a
/// clock of its own), so the first audio frame must be the one that arrived with the first
/// keyframe: a keyframe is tens of packets and is handed on whole only after its last, while
/// the audio that came meanwhile was handed on at once. So audio is held until the first
/// keyframe (for at most [`AUDIO_HOLD`]), and what arrived after that keyframe's first packet
/// follows it.
pub struct Ingest {
    mids: Vec<Mid>,
    shapes: Vec<Shape>,
    keyframes: KeyframeAsk,
    /// A keyframe has gone out.
    started: bool,
    held: std::collections::VecDeque<(Instant, Frame)>,
    /// Opus's description went out on a frame.
    described: bool,
}

impl Ingest {
    /// For what the offer sends (`Offered::media`): track `i` is `media[i]`.
    pub fn new(media: &[(Mid, MediaKind)]) -> Self {
        Self {
            mids: media.iter().map(|(mid, _)| *mid).collect(),
            shapes: media
                .iter()
                .map(|(_, kind)| match kind {
                    MediaKind::Video => Shape::Video(AnnexB::new()),
                    MediaKind::Audio => Shape::Audio,
                })
                .collect(),
            keyframes: KeyframeAsk::default(),
            started: false,
            held: std::collections::VecDeque::new(),
            described: false,
        }
    }

    /// The video track's mid (where a keyframe is asked for).
    pub fn video_mid(&self) -> Option<Mid> {
        self.shapes
            .iter()
            .position(|s| matches!(s, Shape::Video(_)))
            .map(|t| self.mids[t])
    }

    /// One frame str0m depacketized on `mid`, whose first packet arrived at `arrival`,
    /// stamped `rtp_time` (its RTP timestamp extended to 64 bits) ticks of `rate` a second
    /// (str0m's clock for the codec: put on the track's own if they differ); `contiguous`: no
    /// packet was lost since the last. The frames ready for the media path, each with its
    /// arrival: none for a frame of no track of ours, one that cannot be described yet, or
    /// audio held for the first keyframe; that keyframe and the audio held for it together.
    pub fn frame(
        &mut self,
        arrival: Instant,
        mid: Mid,
        rtp_time: u64,
        rate: u32,
        contiguous: bool,
        data: &[u8],
    ) -> Result<Vec<(Instant, Frame)>, StreamerError> {
        let Some(track) = self.mids.iter().position(|m| *m == mid) else {
            return Ok(Vec::new());
        };
        let own = match self.shapes[track] {
            Shape::Video(_) => VIDEO_RATE,
            Shape::Audio => OPUS_RATE,
        };
        let ticks = match rate {
            0 => None,
            rate if rate == own => Some(i128::from(rtp_time)),
            rate => Some(i128::from(rtp_time) * i128::from(own) / i128::from(rate)),
        };
        let time = ticks
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| StreamerError::Depacketize(format!("RTP time {rtp_time}/{rate}")))?;
        match &mut self.shapes[track] {
            Shape::Video(video) => {
                let Some(frame) = video.frame(track, data, time, time)? else {
                    self.keyframes.saw_video(false, contiguous);
                    return Ok(Vec::new());
                };
                self.keyframes.saw_video(frame.keyframe, contiguous);
                let starts = frame.keyframe && !std::mem::replace(&mut self.started, true);
                let mut out = vec![(arrival, frame)];
                if starts {
                    let held: Vec<_> = self.held.drain(..).collect();
                    for (at, frame) in held.into_iter().filter(|(at, _)| *at >= arrival) {
                        out.push((at, self.describe(frame)));
                    }
                }
                Ok(out)
            }
            Shape::Audio => {
                let frame = Frame {
                    track,
                    pts: time,
                    dts: time,
                    keyframe: true,
                    data: Bytes::copy_from_slice(data),
                    params: None,
                };
                if self.started {
                    return Ok(vec![(arrival, self.describe(frame))]);
                }
                while self.held.len() >= AUDIO_HELD_MAX
                    || self
                        .held
                        .front()
                        .is_some_and(|(at, _)| arrival.saturating_duration_since(*at) > AUDIO_HOLD)
                {
                    self.held.pop_front();
                }
                self.held.push_back((arrival, frame));
                Ok(Vec::new())
            }
        }
    }

    /// Opus's description on the first audio frame that goes out.
    fn describe(&mut self, mut frame: Frame) -> Frame {
        if !std::mem::replace(&mut self.described, true) {
            frame.params = Some(opus_params());
        }
        frame
    }

    /// Whether to ask the publisher for a keyframe at `now` (then asked: the next ask waits
    /// [`KEYFRAME_ASK_EVERY`]).
    pub fn ask_keyframe(&mut self, now: Instant) -> bool {
        self.keyframes.due(now)
    }
}

/// When the publisher is asked for a keyframe (PLI): from the start until the first comes,
/// and after a loss until the next comes, at most every [`KEYFRAME_ASK_EVERY`]. Pure: time is
/// passed in.
#[derive(Debug)]
pub struct KeyframeAsk {
    /// A keyframe is wanted: none since the start, or a loss since the last.
    wanted: bool,
    last_ask: Option<Instant>,
}

impl Default for KeyframeAsk {
    fn default() -> Self {
        Self {
            wanted: true,
            last_ask: None,
        }
    }
}

impl KeyframeAsk {
    /// A video frame arrived: a keyframe, or after a loss (`!contiguous`: what follows cannot
    /// be decoded until the next keyframe).
    pub fn saw_video(&mut self, keyframe: bool, contiguous: bool) {
        if keyframe {
            self.wanted = false;
        } else if !contiguous && !self.wanted {
            self.wanted = true;
            // Ask at once after a loss, whenever the last ask was.
            self.last_ask = None;
        }
    }

    /// Whether to ask now; if so, the ask is counted as made.
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self.wanted
            && self
                .last_ask
                .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_ASK_EVERY);
        if due {
            self.last_ask = Some(now);
        }
        due
    }
}

#[cfg(test)]
#[path = "whip_tests.rs"]
mod tests;
