//! The RTSP publish (push ingest) server core, sans-IO: one [`Session`] per TCP connection.
//!
//! Contract: a [`Session`] is a `&mut self` state machine. The async edge that owns the socket
//! feeds it what it read ([`Session::handle_input`]), the UDP datagrams it received on ports it
//! bound for the session ([`Session::handle_udp`]) and the passing of time
//! ([`Session::handle_timeout`] at [`Session::poll_timeout`]); after each call it drains
//! [`Session::poll_output`] until `None`: it writes every [`Output::Send`] to the socket in
//! order, hands [`Output::Publish`] and [`Output::Rtp`] to the media pipeline, and closes the
//! socket at [`Output::Close`] (after writing the `Send`s queued before it). Nothing is queued
//! after a `Close`.
//!
//! The core never awaits, never touches a socket, a clock or a file, and never panics on
//! input: every client mistake becomes an RTSP status (see `session.rs` for the table), and
//! the few things that are not the client's business (admission, port binding) are asked of
//! the [`Host`]. Memory is bounded per session: the input buffer never holds more than
//! [`SessionConfig::max_buffered_bytes`], and the output queue holds only what one call
//! produced if the edge drains it after every call.
//!
//! Only publishers are served (ANNOUNCE / SETUP `mode=record` / RECORD); DESCRIBE and PLAY
//! answer 405.

pub(crate) mod auth;
mod framing;
mod response;
mod sdp;
mod session;
mod transport;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_malformed;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use slotcast_domain::contract::RefusalCode;

use crate::media::TrackSpec;

pub use auth::{Credential, DigestAnswer};

/// Entry points for the fuzz targets in `streamer/fuzz`, compiled only with `--cfg fuzzing`
/// (which `cargo fuzz` sets): they reach the private parsers without making them public, and
/// check the invariants the session relies on.
#[cfg(fuzzing)]
pub mod fuzz {
    use super::framing::{self, Frame, Limits, Parse};

    /// Frames `input` as the session does, frame after frame, until it needs more bytes or
    /// refuses. Every frame found must move forward and stay inside the input.
    pub fn framing(input: &[u8]) {
        let limits = Limits {
            max_header_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024,
            max_buffered_bytes: 256 * 1024,
        };
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            let used = match framing::parse(rest, &limits) {
                Parse::Incomplete | Parse::Invalid(_) => return,
                Parse::Complete(Frame::Skip(n)) => n,
                Parse::Complete(Frame::Interleaved { len, .. }) => 4 + len,
                Parse::Complete(Frame::Request { head_len, body_len }) => {
                    let _ = framing::cseq_in(&rest[..head_len]);
                    head_len + body_len
                }
            };
            assert!(used > 0, "a frame of no bytes: the session would spin");
            assert!(
                used <= rest.len(),
                "a frame past the input: the session would panic"
            );
            at += used;
        }
    }

    /// An ANNOUNCE body as the session reads it.
    pub fn sdp(input: &[u8]) {
        let _ = super::sdp::parse(input);
    }

    /// A SETUP's `Transport` header as the session reads it.
    pub fn transport(input: &[u8]) {
        if let Ok(text) = std::str::from_utf8(input) {
            let _ = super::transport::parse(text);
        }
    }
}
pub use session::Session;

/// Limits and identity of one RTSP connection; the edge builds it from the listener's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Name of the carrier listener this connection came in on (passed to [`Host::admit`]).
    pub carrier: String,
    /// No complete request and no media for this long: the session closes.
    pub timeout: Duration,
    /// Request line plus headers (through the blank line); more answers 431 and closes.
    pub max_header_bytes: usize,
    /// Request body (the SDP of an ANNOUNCE); more answers 413 and closes.
    pub max_body_bytes: usize,
    /// The per-session input buffer: one incomplete request or interleaved frame at most.
    pub max_buffered_bytes: usize,
    /// The nonce of this connection's Digest challenge (random, from the edge); `None` offers
    /// Basic only (the streamer has no secret key to open Digest credentials with). With a
    /// nonce, Digest is offered for reservations where [`Host::offers_digest`].
    pub digest_nonce: Option<String>,
    /// Requests a connection may send before it records: an honest publisher needs about a
    /// dozen (OPTIONS, ANNOUNCE twice for the 401, a SETUP per track, RECORD); one that asks
    /// more is answered 400 and closed, so a stranger cannot keep the streamer answering.
    pub max_requests_before_record: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            carrier: "default".to_owned(),
            timeout: Duration::from_secs(60),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024,
            max_buffered_bytes: 256 * 1024,
            digest_nonce: None,
            max_requests_before_record: 32,
        }
    }
}

/// What the core asks of the world around it.
pub trait Host {
    /// May a publisher publish to this reservation with this credential on this carrier, now?
    /// Asked at ANNOUNCE and again at RECORD (time passes between them).
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal>;
    /// Can this reservation's key be checked by Digest (the host holds its HA1)? Digest is
    /// offered only then, so a client that prefers it is never sent down a path that fails.
    fn offers_digest(&mut self, reservation_id: &str) -> bool;
    /// Bind an RTP/RTCP UDP port pair for `track` on the listener's address; returns the
    /// (rtp, rtcp) ports. The error text is logged, never sent to the client.
    fn bind_udp(&mut self, track: usize) -> Result<(u16, u16), String>;
}

/// One admission question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission<'a> {
    pub carrier: &'a str,
    pub reservation_id: &'a str,
    pub credential: &'a Credential,
}

/// Why the host will not admit a publisher: its code, which decides the answer (404 for
/// `unknown`, 401 with `WWW-Authenticate` for `bad_key`, 403 for the rest) and goes with it
/// in the [`slotcast_domain::contract::REFUSAL_HEADER`] header; and the reason shown to the
/// publisher (in the reason phrase and the body), which must say nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// `<code>: <reason>`, for a protocol with no header to put the code in (RTMP's
    /// `onStatus` description).
    pub fn coded(&self) -> String {
        format!("{}: {}", self.code.as_str(), self.reason)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// How media reaches the server; one per session (every SETUP uses the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Interleaved in the RTSP TCP connection (`$` frames).
    Tcp,
    /// On UDP port pairs the edge bound through [`Host::bind_udp`].
    Udp,
}

/// The life of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Init,
    /// ANNOUNCE admitted and its SDP understood.
    Announced,
    /// At least one track SETUP.
    Ready,
    /// RECORD admitted: media flows.
    Recording,
    /// A `Close` is queued; input is ignored from now on.
    Closed,
}

/// What the edge must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the TCP socket (responses).
    Send(Bytes),
    /// RECORD succeeded: the publisher is live. Track indices everywhere are positions in
    /// `tracks`, the full list of audio/video sections the ANNOUNCE described; only the tracks
    /// in [`Session::setup_tracks`] carry media.
    Publish {
        reservation_id: String,
        tracks: Vec<TrackSpec>,
        transport: Transport,
    },
    /// One RTP packet (not RTCP) for a track, from an interleaved frame or a UDP datagram.
    /// Only the fixed RTP header has been checked (length, version 2).
    Rtp { track: usize, packet: Bytes },
    /// Close the socket after writing any `Send` queued before this.
    Close(CloseReason),
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The publisher sent TEARDOWN.
    Teardown,
    /// No request and no media for [`SessionConfig::timeout`].
    Timeout,
    /// Bytes that are not RTSP, or over a limit.
    Malformed(String),
    /// Admission refused at RECORD (RTMP: at publish), or too many failed ANNOUNCEs.
    Refused(String),
    /// The edge saw the peer close the connection.
    PeerClosed,
    /// The edge ended it (window closed, reservation cancelled, shutdown, ...).
    Ended(String),
    /// The edge ended it: the video went too long without a keyframe
    /// (`crate::media_path::KEYFRAME_WAIT`, `KEYFRAME_BYTES`).
    NoKeyframe,
    /// An RTMP publisher said it is done (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublished,
    /// An RTMP publisher sent media slotcast does not relay (the words say what).
    Unsupported(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Teardown => f.write_str("publisher sent TEARDOWN"),
            Self::Timeout => f.write_str("session timed out"),
            Self::Malformed(why) => write!(f, "malformed input: {why}"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::PeerClosed => f.write_str("peer closed the connection"),
            Self::Ended(why) => write!(f, "ended: {why}"),
            Self::Unpublished => f.write_str("publisher stopped publishing"),
            Self::Unsupported(why) => write!(f, "unsupported: {why}"),
            Self::NoKeyframe => f.write_str(
                "no_keyframe: no video keyframe for 10 s or 16 MiB (send one every 2 to 8 s)",
            ),
        }
    }
}
