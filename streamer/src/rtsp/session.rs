//! The per-connection RTSP publish session: requests in, responses and media out.
//!
//! Contract: see the module doc in `mod.rs` for the edge's side. Here, every request gets
//! exactly one response, in order, and nothing else is ever written to the client. The
//! answers, by case:
//!
//! | case | answer | then |
//! | --- | --- | --- |
//! | bytes that are neither `$` framing nor an RTSP request; unparsable request | 400 | Close(Malformed) |
//! | request line + headers over `max_header_bytes` | 431 | Close(Malformed) |
//! | `Content-Length` over `max_body_bytes` (or the buffer) | 413 | Close(Malformed) |
//! | `Content-Length` not a number, or two that disagree | 400 | Close(Malformed) |
//! | interleaved frame longer than the input buffer | none | Close(Malformed) |
//! | missing or non-numeric `CSeq` | 400 | |
//! | RTSP/2.0 | 505 | |
//! | `Session` that is not ours (or before SETUP made one) | 454 | |
//! | DESCRIBE, PLAY, PAUSE, REDIRECT, PLAY_NOTIFY | 405 + `Allow` | |
//! | any other unknown method | 501 | |
//! | ANNOUNCE twice, SETUP before ANNOUNCE or after RECORD, RECORD before SETUP or twice, SETUP of a track twice | 455 | |
//! | path not `/live/<reservation>`, or another reservation than announced, or no such track | 404 | |
//! | ANNOUNCE without a key | 401 + `WWW-Authenticate` (Digest when the config has a nonce, and Basic) | |
//! | ANNOUNCE with a Digest answer that is not to this connection's nonce, not user `slotcast`, not MD5 | 401 + `WWW-Authenticate` | |
//! | admission refused: unknown reservation / bad key / any other code | 404 / 401 + `WWW-Authenticate` / 403, each with `Slotcast-Refusal: <code>` | at RECORD: Close(Refused) |
//! | ANNOUNCE body not `application/sdp`, or no track we can ingest | 415 | |
//! | ANNOUNCE without a body, SDP we cannot read, or more than 8 media sections | 400 | |
//! | the third failed ANNOUNCE on one connection | its answer | Close(Refused) |
//! | a request past `max_requests_before_record` before RECORD | 400 | Close(Refused) |
//! | SETUP of a track we cannot ingest (other codec, not audio/video) | 415 | |
//! | SETUP without a usable `Transport` (multicast, mode=play, odd channels, UDP without client_port, mixed TCP and UDP, channels in use) | 461 | |
//! | SETUP over UDP when the host cannot bind ports | 500 | |
//! | TEARDOWN | 200 | Close(Teardown) |
//!
//! Unsupported tracks are refused at SETUP (415, the reason in the body) rather than set up
//! and silently dropped: a broadcaster learns at once that e.g. Opus audio will not reach
//! viewers, and a client that carries on without the track still goes live. ANNOUNCE is
//! refused (415) only when no track at all can be ingested.
//!
//! Media: RTP in interleaved frames on a set-up track's even channel, or in UDP datagrams
//! for a track set up over UDP, becomes `Output::Rtp` once RECORD was admitted. RTCP, frames
//! before RECORD, frames on channels no track owns and packets that are not RTP version 2
//! are dropped (and counted). Activity (for the timeout) is any complete request or
//! interleaved frame, and any datagram for a set-up track while recording: a client that
//! trickles a header byte by byte does not keep its session alive.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use rtsp_types::{headers, Message, Method, Version};
use slotcast_domain::contract::{RefusalCode, REFUSAL_HEADER};
use tracing::{debug, info, warn};

use super::auth::{self, Credential, Target};
use super::framing::{self, Frame, Invalid, Limits, Parse};
use super::response::{Response, Status};
use super::sdp::{self, SdpError};
use super::transport::{self, Requested};
use super::{Admission, CloseReason, Host, Output, Refusal, SessionConfig, State, Transport};
use crate::media::TrackSpec;

const PUBLIC: &str = "OPTIONS, ANNOUNCE, SETUP, RECORD, GET_PARAMETER, SET_PARAMETER, TEARDOWN";
/// ANNOUNCEs refused on one connection before it is closed: room for the 401 dance (one
/// refusal) and a typo, not for guessing keys.
const MAX_FAILED_ANNOUNCES: u32 = 3;
const RTP_HEADER_LEN: usize = 12;

/// How one track's media arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrackSetup {
    Tcp { channels: (u8, u8) },
    Udp { client: (u16, u16) },
}

/// What happens after a response is queued.
enum Then {
    Nothing,
    Close(CloseReason),
    Publish,
}

struct Reply {
    response: Response,
    then: Then,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self {
            response,
            then: Then::Nothing,
        }
    }
}

fn error(status: Status, reason: impl Into<String>) -> Reply {
    Response::new(status).reason(reason).into()
}

/// The announced stream.
#[derive(Debug)]
struct Announced {
    reservation_id: String,
    /// The admitted credential, asked about again at RECORD.
    credential: Credential,
    tracks: Vec<TrackSpec>,
    /// Per track: the control as a SETUP target shows it.
    controls: Vec<Option<String>>,
    /// Per track: why we cannot ingest it.
    unsupported: Vec<Option<String>>,
    /// Per track: how its media arrives, once SETUP.
    setups: Vec<Option<TrackSetup>>,
    /// Sections that are not tracks: what they are, and their control as SETUP shows it.
    others: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    limits: Limits,
    state: State,
    input: BytesMut,
    outputs: VecDeque<Output>,
    last_activity: Instant,
    /// Made up front, shown from the first SETUP on (`session_open`).
    session_id: String,
    session_open: bool,
    announced: Option<Announced>,
    transport: Option<Transport>,
    failed_announces: u32,
    /// Complete requests before RECORD.
    requests_before_record: u32,
    dropped: u64,
}

impl Session {
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let limits = Limits {
            max_header_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
            // Framing needs room for at least one byte to decide anything.
            max_buffered_bytes: config.max_buffered_bytes.max(1),
        };
        Self {
            config,
            limits,
            state: State::Init,
            input: BytesMut::new(),
            outputs: VecDeque::new(),
            last_activity: now,
            session_id: format!("{:016x}", rand::random::<u64>()),
            session_open: false,
            announced: None,
            transport: None,
            failed_announces: 0,
            requests_before_record: 0,
            dropped: 0,
        }
    }

    /// Bytes read from the TCP connection.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8], host: &mut dyn Host) {
        let mut rest = bytes;
        // Take the input in pieces that fit the buffer: framing decides every full buffer.
        while self.state != State::Closed && !rest.is_empty() {
            let room = self
                .limits
                .max_buffered_bytes
                .saturating_sub(self.input.len());
            if room == 0 {
                self.close(CloseReason::Malformed("input buffer full".to_owned()));
                return;
            }
            let take = room.min(rest.len());
            self.input.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.process(now, host);
        }
    }

    /// A datagram the edge received on a UDP port pair it bound for `track` (rtcp = odd port).
    pub fn handle_udp(&mut self, now: Instant, track: usize, rtcp: bool, datagram: &[u8]) {
        if self.state != State::Recording {
            return;
        }
        if !matches!(self.setup_of(track), Some(TrackSetup::Udp { .. })) {
            self.dropped += 1;
            return;
        }
        self.last_activity = now;
        if !rtcp {
            self.emit_rtp(track, Bytes::copy_from_slice(datagram));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.close(CloseReason::Timeout);
        }
    }

    /// When to call [`Session::handle_timeout`]; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        self.last_activity.checked_add(self.config.timeout)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The edge ends the session (window closed, reservation cancelled, shutdown, peer gone):
    /// queue `Close`. Idempotent.
    pub fn close(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        info!(
            reservation = self.reservation_id().unwrap_or("-"),
            %reason,
            dropped = self.dropped,
            "RTSP session closed"
        );
        self.state = State::Closed;
        self.input = BytesMut::new();
        self.outputs.push_back(Output::Close(reason));
    }

    /// The reservation of an admitted ANNOUNCE.
    pub fn reservation_id(&self) -> Option<&str> {
        self.announced.as_ref().map(|a| a.reservation_id.as_str())
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The RTSP session id, once a SETUP made the session.
    pub fn session_id(&self) -> Option<&str> {
        self.session_open.then_some(self.session_id.as_str())
    }

    /// The tracks that were SETUP, in index order: the only ones that will carry media.
    pub fn setup_tracks(&self) -> Vec<usize> {
        self.announced.as_ref().map_or_else(Vec::new, |a| {
            (0..a.setups.len())
                .filter(|&i| a.setups[i].is_some())
                .collect()
        })
    }

    /// The publisher's (rtp, rtcp) ports for a track set up over UDP, so the edge can drop
    /// datagrams from elsewhere.
    pub fn udp_client_ports(&self, track: usize) -> Option<(u16, u16)> {
        match self.setup_of(track)? {
            TrackSetup::Udp { client } => Some(client),
            TrackSetup::Tcp { .. } => None,
        }
    }

    /// Packets and frames dropped so far (before RECORD, unknown channel, not RTP, ...).
    pub fn dropped_packets(&self) -> u64 {
        self.dropped
    }

    #[cfg(test)]
    pub(super) fn with_session_id(mut self, id: &str) -> Self {
        self.session_id = id.to_owned();
        self
    }

    fn setup_of(&self, track: usize) -> Option<TrackSetup> {
        *self.announced.as_ref()?.setups.get(track)?
    }

    fn process(&mut self, now: Instant, host: &mut dyn Host) {
        while self.state != State::Closed {
            match framing::parse(&self.input, &self.limits) {
                Parse::Incomplete => return,
                Parse::Complete(Frame::Skip(n)) => self.input.advance(n),
                Parse::Complete(Frame::Interleaved { channel, len }) => {
                    let mut frame = self.input.split_to(4 + len);
                    frame.advance(4);
                    self.last_activity = now;
                    self.on_interleaved(channel, frame.freeze());
                }
                Parse::Complete(Frame::Request { head_len, body_len }) => {
                    let raw = self.input.split_to(head_len + body_len);
                    self.last_activity = now;
                    self.on_request(&raw, head_len, host);
                }
                Parse::Invalid(invalid) => return self.on_invalid(invalid),
            }
        }
    }

    fn on_invalid(&mut self, invalid: Invalid) {
        let (status, why) = match invalid {
            // No request line, so no request to answer by its CSeq.
            Invalid::NotRtsp(why) => {
                let why = why.to_owned();
                self.respond(None, Response::new(Status::BadRequest).reason(why.clone()));
                return self.close(CloseReason::Malformed(why));
            }
            Invalid::FrameTooLarge(len) => {
                let why = format!("interleaved frame of {len} bytes over the input buffer");
                return self.close(CloseReason::Malformed(why));
            }
            Invalid::HeaderTooLarge => (
                Status::HeaderFieldsTooLarge,
                format!(
                    "request line and headers over {} bytes",
                    self.limits
                        .max_header_bytes
                        .min(self.limits.max_buffered_bytes)
                ),
            ),
            Invalid::BodyTooLarge(len) => (
                Status::PayloadTooLarge,
                format!(
                    "body of {len} bytes over the limit of {} bytes",
                    self.limits.max_body_bytes
                ),
            ),
            Invalid::BadContentLength => (Status::BadRequest, "bad Content-Length".to_owned()),
        };
        // Echo the CSeq if the head got that far: looking only at the head, and only within
        // the header limit, so the answer does not depend on how the input was split.
        let window = &self.input[..self.input.len().min(self.limits.max_header_bytes)];
        let head = window
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(window, |at| &window[..at + 4]);
        let cseq = framing::cseq_in(head);
        self.respond(cseq, Response::new(status).reason(why.clone()));
        self.close(CloseReason::Malformed(why));
    }

    fn on_request(&mut self, raw: &[u8], head_len: usize, host: &mut dyn Host) {
        if self.state != State::Recording {
            self.requests_before_record += 1;
            let max = self.config.max_requests_before_record;
            if self.requests_before_record > max {
                let why = format!("more than {max} requests before RECORD");
                let cseq = framing::cseq_in(&raw[..head_len]);
                self.respond(cseq, Response::new(Status::BadRequest).reason(why.clone()));
                return self.close(CloseReason::Refused(why));
            }
        }
        let request = match Message::<Vec<u8>>::parse(raw) {
            Ok((Message::Request(request), used)) if used == raw.len() => request,
            _ => {
                let why = "unparsable RTSP request";
                let cseq = framing::cseq_in(&raw[..head_len]);
                self.respond(cseq, Response::new(Status::BadRequest).reason(why));
                return self.close(CloseReason::Malformed(why.to_owned()));
            }
        };
        let cseq = request
            .header(&headers::CSEQ)
            .and_then(|v| v.as_str().trim().parse::<u32>().ok());
        let Some(cseq) = cseq else {
            let reply = Response::new(Status::BadRequest).reason("missing or bad CSeq");
            return self.respond(None, reply);
        };
        let reply = self.dispatch(&request, host);
        if reply.response.status() != Status::Ok {
            debug!(
                method = <&str>::from(request.method()),
                status = reply.response.status().code(),
                "RTSP request refused"
            );
        }
        self.respond(Some(cseq), reply.response);
        match reply.then {
            Then::Nothing => {}
            Then::Close(reason) => self.close(reason),
            Then::Publish => {
                if let (Some(announced), Some(transport)) = (&self.announced, self.transport) {
                    self.outputs.push_back(Output::Publish {
                        reservation_id: announced.reservation_id.clone(),
                        tracks: announced.tracks.clone(),
                        transport,
                    });
                }
            }
        }
    }

    fn dispatch(&mut self, request: &rtsp_types::Request<Vec<u8>>, host: &mut dyn Host) -> Reply {
        if request.version() != Version::V1_0 {
            return error(Status::VersionNotSupported, "this server speaks RTSP/1.0");
        }
        if let Some(value) = request.header(&headers::SESSION) {
            let id = value.as_str().split(';').next().unwrap_or_default().trim();
            if !self.session_open || id != self.session_id {
                return error(
                    Status::SessionNotFound,
                    "no such session on this connection",
                );
            }
        }
        match request.method() {
            Method::Options => Response::new(Status::Ok).header("Public", PUBLIC).into(),
            Method::Announce => self.announce(request, host),
            Method::Setup => self.setup(request, host),
            Method::Record => self.record(request, host),
            Method::GetParameter | Method::SetParameter => Response::new(Status::Ok).into(),
            Method::Teardown => Reply {
                response: Response::new(Status::Ok),
                then: Then::Close(CloseReason::Teardown),
            },
            Method::Extension(_) => error(Status::NotImplemented, "unknown method"),
            Method::Describe
            | Method::Play
            | Method::Pause
            | Method::Redirect
            | Method::PlayNotify => Response::new(Status::MethodNotAllowed)
                .header("Allow", PUBLIC)
                .reason("this server takes publishers only: ANNOUNCE, SETUP, RECORD")
                .into(),
        }
    }

    fn announce(&mut self, request: &rtsp_types::Request<Vec<u8>>, host: &mut dyn Host) -> Reply {
        if self.state != State::Init {
            return error(Status::MethodNotValidInThisState, "already announced");
        }
        let target = match target_of(request) {
            Ok(target) if target.control.is_empty() => target,
            Ok(_) => {
                return self
                    .failed_announce(error(Status::NotFound, "ANNOUNCE the stream's base URL"))
            }
            Err(why) => return self.failed_announce(error(Status::NotFound, why)),
        };
        let digest =
            self.config.digest_nonce.is_some() && host.offers_digest(&target.reservation_id);
        let credential = match self.credential(request, &target, digest) {
            Ok(credential) => credential,
            Err(why) => {
                let response = Response::new(Status::Unauthorized).reason(why);
                let reply = self.challenge(response, digest);
                return self.failed_announce(reply.into());
            }
        };
        if let Err(refusal) = self.admit(&target.reservation_id, &credential, host) {
            return self.failed_announce(self.refused(&refusal, digest).into());
        }
        if let Some(content_type) = request.header(&headers::CONTENT_TYPE) {
            let mime = content_type.as_str().split(';').next().unwrap_or_default();
            if !mime.trim().eq_ignore_ascii_case("application/sdp") {
                let reply = error(
                    Status::UnsupportedMediaType,
                    "ANNOUNCE takes application/sdp",
                );
                return self.failed_announce(reply);
            }
        }
        if request.body().is_empty() {
            return self.failed_announce(error(Status::BadRequest, "ANNOUNCE needs an SDP body"));
        }
        let description = match sdp::parse(request.body()) {
            Ok(description) => description,
            Err(SdpError::Malformed(why)) => {
                return self.failed_announce(error(Status::BadRequest, why))
            }
            Err(SdpError::NothingSupported(why)) => {
                return self.failed_announce(error(Status::UnsupportedMediaType, why))
            }
        };
        let tracks = description.tracks;
        info!(
            reservation = %target.reservation_id,
            carrier = %self.config.carrier,
            tracks = ?tracks.iter().map(|t| t.encoding_name.as_str()).collect::<Vec<_>>(),
            "RTSP ANNOUNCE admitted"
        );
        self.announced = Some(Announced {
            reservation_id: target.reservation_id,
            credential,
            controls: tracks
                .iter()
                .map(|t| t.control.as_deref().and_then(auth::control_of))
                .collect(),
            unsupported: tracks.iter().map(sdp::unsupported).collect(),
            setups: vec![None; tracks.len()],
            others: description
                .others
                .into_iter()
                .map(|(what, control)| (what, control.as_deref().and_then(auth::control_of)))
                .collect(),
            tracks,
        });
        self.state = State::Announced;
        Response::new(Status::Ok).into()
    }

    fn failed_announce(&mut self, mut reply: Reply) -> Reply {
        self.failed_announces += 1;
        if self.failed_announces >= MAX_FAILED_ANNOUNCES {
            reply.then = Then::Close(CloseReason::Refused(format!(
                "{MAX_FAILED_ANNOUNCES} failed ANNOUNCE attempts"
            )));
        }
        reply
    }

    /// The credential an ANNOUNCE offers: `?key=`, then `Authorization` (Basic, or Digest
    /// answering this connection's nonce). `Err`: why there is none we can use.
    fn credential(
        &self,
        request: &rtsp_types::Request<Vec<u8>>,
        target: &Target,
        digest: bool,
    ) -> Result<Credential, &'static str> {
        if let Some(key) = &target.key {
            return Ok(Credential::Key(key.clone()));
        }
        const NONE: &str = "stream key required: ?key=<key> in the URL, or as the password";
        let Some(header) = request.header(&headers::AUTHORIZATION) else {
            return Err(NONE);
        };
        if let Some(password) = auth::basic_password(header.as_str()) {
            return Ok(Credential::Key(password));
        }
        let Some(nonce) = self.config.digest_nonce.as_ref().filter(|_| digest) else {
            return Err(NONE);
        };
        match auth::digest_answer(header.as_str(), request.method().into(), nonce)? {
            Some(answer) => Ok(Credential::Digest(answer)),
            None => Err(NONE),
        }
    }

    /// `response` with this server's `WWW-Authenticate` challenges: Digest first if `digest`.
    fn challenge(&self, response: Response, digest: bool) -> Response {
        let response = match self.config.digest_nonce.as_ref().filter(|_| digest) {
            Some(nonce) => response.header("WWW-Authenticate", auth::digest_challenge(nonce)),
            None => response,
        };
        response.header("WWW-Authenticate", auth::BASIC_CHALLENGE)
    }

    fn refused(&self, refusal: &Refusal, digest: bool) -> Response {
        let status = match refusal.code.status() {
            404 => Status::NotFound,
            401 => Status::Unauthorized,
            _ => Status::Forbidden,
        };
        let response = Response::new(status)
            .header(REFUSAL_HEADER, refusal.code.as_str())
            .reason(refusal.reason.clone());
        if status == Status::Unauthorized {
            self.challenge(response, digest)
        } else {
            response
        }
    }

    fn admit(
        &self,
        reservation_id: &str,
        credential: &Credential,
        host: &mut dyn Host,
    ) -> Result<(), Refusal> {
        let oversized = match credential {
            Credential::Key(key) => key.len() > auth::MAX_KEY_LEN,
            Credential::Digest(answer) => {
                answer.uri.len() + answer.response.len() > auth::MAX_KEY_LEN * 8
            }
        };
        if oversized {
            return Err(Refusal::new(RefusalCode::BadKey, "wrong stream key"));
        }
        host.admit(&Admission {
            carrier: &self.config.carrier,
            reservation_id,
            credential,
        })
    }

    fn setup(&mut self, request: &rtsp_types::Request<Vec<u8>>, host: &mut dyn Host) -> Reply {
        let Some(announced) = self.announced.as_mut() else {
            return error(
                Status::MethodNotValidInThisState,
                "ANNOUNCE comes before SETUP",
            );
        };
        if self.state == State::Recording {
            return error(Status::MethodNotValidInThisState, "already recording");
        }
        let target = match target_of(request) {
            Ok(target) if target.reservation_id == announced.reservation_id => target,
            Ok(_) => return error(Status::NotFound, "SETUP for another reservation"),
            Err(why) => return error(Status::NotFound, why),
        };
        let wanted = Some(target.control.as_str());
        let track = announced
            .controls
            .iter()
            .position(|c| c.as_deref() == wanted)
            .or_else(|| {
                // A lone track may have no control of its own (the base URL stands for it).
                let lone = announced.tracks.len() == 1 && announced.others.is_empty();
                (target.control.is_empty() && lone).then_some(0)
            });
        let Some(track) = track else {
            return match announced
                .others
                .iter()
                .find(|(_, c)| c.as_deref() == wanted)
            {
                Some((what, _)) => error(
                    Status::UnsupportedMediaType,
                    format!("{what} tracks are not supported"),
                ),
                None => error(Status::NotFound, "no such track in the announced SDP"),
            };
        };
        if let Some(why) = &announced.unsupported[track] {
            return error(Status::UnsupportedMediaType, why.clone());
        }
        if announced.setups[track].is_some() {
            return error(Status::MethodNotValidInThisState, "track already set up");
        }
        let Some(header) = request.header(&headers::TRANSPORT) else {
            return error(Status::UnsupportedTransport, "Transport header required");
        };
        let mut why_not = None;
        for alternative in transport::parse(header.as_str()) {
            let (setup, answer) = match alternative {
                Err(why) => {
                    why_not.get_or_insert(why);
                    continue;
                }
                Ok(_) if self.transport.is_some_and(|t| t != kind(&alternative)) => {
                    why_not.get_or_insert("every track must use the same transport".to_owned());
                    continue;
                }
                Ok(Requested::Tcp { interleaved }) => {
                    let in_use = |(rtp, rtcp): (u8, u8)| {
                        announced.setups.iter().flatten().any(|s| match *s {
                            TrackSetup::Tcp { channels: (a, b) } => {
                                a == rtp || a == rtcp || b == rtp || b == rtcp
                            }
                            TrackSetup::Udp { .. } => false,
                        })
                    };
                    let channels = match interleaved {
                        Some(channels) if !in_use(channels) => channels,
                        Some((a, b)) => {
                            why_not.get_or_insert(format!("interleaved={a}-{b} is in use"));
                            continue;
                        }
                        None => match (0..=127u8)
                            .map(|n| (2 * n, 2 * n + 1))
                            .find(|&c| !in_use(c))
                        {
                            Some(channels) => channels,
                            None => {
                                why_not.get_or_insert("no free interleaved channels".to_owned());
                                continue;
                            }
                        },
                    };
                    (
                        TrackSetup::Tcp { channels },
                        transport::answer_tcp(channels),
                    )
                }
                Ok(Requested::Udp { client_ports, spec }) => match host.bind_udp(track) {
                    Ok(server) => (
                        TrackSetup::Udp {
                            client: client_ports,
                        },
                        transport::answer_udp(spec, client_ports, server),
                    ),
                    Err(e) => {
                        warn!(track, error = %e, "RTSP SETUP: binding UDP ports failed");
                        return error(
                            Status::InternalServerError,
                            "could not bind UDP ports; try RTSP over TCP",
                        );
                    }
                },
            };
            announced.setups[track] = Some(setup);
            self.transport = Some(match setup {
                TrackSetup::Tcp { .. } => Transport::Tcp,
                TrackSetup::Udp { .. } => Transport::Udp,
            });
            self.session_open = true;
            self.state = State::Ready;
            return Response::new(Status::Ok).header("Transport", answer).into();
        }
        error(
            Status::UnsupportedTransport,
            why_not.unwrap_or_else(|| "no transport offered".to_owned()),
        )
    }

    fn record(&mut self, request: &rtsp_types::Request<Vec<u8>>, host: &mut dyn Host) -> Reply {
        let announced = match (&self.announced, self.state) {
            (Some(announced), State::Ready) => announced,
            (_, State::Recording) => {
                return error(Status::MethodNotValidInThisState, "already recording")
            }
            _ => {
                return error(
                    Status::MethodNotValidInThisState,
                    "SETUP comes before RECORD",
                )
            }
        };
        match target_of(request) {
            Ok(target) if target.reservation_id == announced.reservation_id => {}
            Ok(_) => return error(Status::NotFound, "RECORD for another reservation"),
            Err(why) => return error(Status::NotFound, why),
        }
        if let Err(refusal) = self.admit(&announced.reservation_id, &announced.credential, host) {
            return Reply {
                response: self.refused(&refusal, false),
                then: Then::Close(CloseReason::Refused(refusal.to_string())),
            };
        }
        info!(
            reservation = %announced.reservation_id,
            transport = ?self.transport,
            tracks = ?self.setup_tracks(),
            "RTSP RECORD: publisher live"
        );
        self.state = State::Recording;
        Reply {
            response: Response::new(Status::Ok),
            then: Then::Publish,
        }
    }

    fn on_interleaved(&mut self, channel: u8, payload: Bytes) {
        if self.state != State::Recording {
            self.dropped += 1;
            return;
        }
        let owner = self.announced.as_ref().and_then(|a| {
            a.setups
                .iter()
                .enumerate()
                .find_map(|(track, setup)| match *setup {
                    Some(TrackSetup::Tcp { channels: (rtp, _) }) if rtp == channel => {
                        Some((track, false))
                    }
                    Some(TrackSetup::Tcp {
                        channels: (_, rtcp),
                    }) if rtcp == channel => Some((track, true)),
                    _ => None,
                })
        });
        match owner {
            Some((track, false)) => self.emit_rtp(track, payload),
            // RTCP sender reports: the depacketizer works from RTP timestamps alone.
            Some((_, true)) => {}
            None => self.dropped += 1,
        }
    }

    fn emit_rtp(&mut self, track: usize, packet: Bytes) {
        if packet.len() < RTP_HEADER_LEN || packet[0] >> 6 != 2 {
            self.dropped += 1;
            return;
        }
        self.outputs.push_back(Output::Rtp { track, packet });
    }

    fn respond(&mut self, cseq: Option<u32>, response: Response) {
        let timeout = self.config.timeout.as_secs().max(1);
        let session = self
            .session_open
            .then_some((self.session_id.as_str(), timeout));
        let bytes = response.encode(cseq, session);
        self.outputs.push_back(Output::Send(bytes));
    }
}

fn kind(requested: &Result<Requested, String>) -> Transport {
    match requested {
        Ok(Requested::Udp { .. }) => Transport::Udp,
        _ => Transport::Tcp,
    }
}

fn target_of(request: &rtsp_types::Request<Vec<u8>>) -> Result<Target, &'static str> {
    let url = request.request_uri().ok_or("request URI required")?;
    auth::target(url)
}
