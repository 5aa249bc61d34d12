//! The RTMP publish server core, sans-IO: one [`Session`] per TCP connection, for encoders
//! that publish by RTMP (OBS: server `rtmp://host:port/live`, stream key
//! `<reservation-id>?key=<stream-key>`; ffmpeg: `-f flv
//! rtmp://host:port/live/<reservation-id>?key=<stream-key>`).
//!
//! Contract: a [`Session`] is a `&mut self` state machine, driven as the RTSP one is
//! (`crate::rtsp`): the edge feeds it what it read ([`Session::handle_input`]) and the
//! passing of time ([`Session::handle_timeout`] at [`Session::poll_timeout`]), then drains
//! [`Session::poll_output`]: it writes every [`Output::Send`] in order, starts the media path
//! at [`Output::Publish`], pushes each [`Output::Frame`] into it (and counts each
//! [`Output::BadMedia`] as a media error), and closes the socket at [`Output::Close`] after
//! writing what was queued before it. Nothing is queued after a `Close`.
//!
//! What is ours and what is `rml_rtmp`'s: the crate does the handshake, the chunk streams and
//! AMF0 encoding, behind one guarded adapter (`rml.rs`, every call on bytes in `catch_unwind`, AMF0
//! bounded by `amf.rs` before it is decoded). The session's course (connect, createStream,
//! publish, admission through the [`Host`], the probe for codecs, the cut-off), the stream
//! name (`stream_key.rs`) and FLV tags into frames (`flv.rs`) are ours.
//!
//! Before the host admits a publish, a connection costs little and not for long: at most
//! [`RtmpConfig::max_bytes_before_publish`] bytes and [`RtmpConfig::max_messages_before_publish`]
//! messages, past which it is closed (an honest exchange is about 5 KiB and 10 messages); the
//! edge adds the per-address limits and the record deadline that RTSP has. A refusal goes back
//! as `onStatus` (`level` `error`, `NetStream.Publish.Denied`, description
//! `<refusal code>: <reason>` in the words RTSP uses), then the connection closes.

mod amf;
pub mod flv;
mod probe;
mod rml;
mod session;
pub mod stream_key;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;

use crate::media::{CodecParams, Frame, TrackSpec};
use crate::StreamerError;

pub use crate::rtsp::{Admission, CloseReason, Credential, Refusal};
pub use session::Session;

/// Limits and identity of one RTMP connection; the edge builds it from the listener's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtmpConfig {
    /// Name of the carrier listener this connection came in on (passed to [`Host::admit`]).
    pub carrier: String,
    /// No message for this long: the session closes.
    pub timeout: Duration,
    /// Bytes a connection may send before its publish is admitted.
    pub max_bytes_before_publish: usize,
    /// Messages (commands, data, control) a connection may send before its publish is
    /// admitted.
    pub max_messages_before_publish: u32,
    /// After the publish is admitted, how long to wait for the codecs' sequence headers before
    /// going live with what has come.
    pub probe_wait: Duration,
    /// Media held while waiting for them, at most.
    pub probe_bytes: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            carrier: "default".to_owned(),
            timeout: Duration::from_secs(60),
            max_bytes_before_publish: 64 << 10,
            max_messages_before_publish: 32,
            probe_wait: Duration::from_secs(2),
            probe_bytes: 4 << 20,
        }
    }
}

/// What the core asks of the world around it.
pub trait Host {
    /// May a publisher publish to this reservation with this key on this carrier, now?
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal>;
}

/// The life of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// C0/C1/C2.
    Handshake,
    /// Waiting for `connect`.
    Connecting,
    /// Connected to `live`: `createStream`, then `publish`.
    Connected,
    /// Publish admitted: holding media until the codecs are known.
    Probing,
    /// [`Output::Publish`] is out: media flows.
    Live,
    /// A `Close` is queued; input is ignored from now on.
    Closed,
}

/// What the edge must do next.
#[derive(Debug)]
pub enum Output {
    /// Bytes to write to the TCP socket.
    Send(Bytes),
    /// The publisher is live with these tracks (frames name them by index) and parameters.
    Publish {
        reservation_id: String,
        tracks: Vec<TrackSpec>,
        params: Vec<CodecParams>,
    },
    Frame(Frame),
    /// A tag that could not become a frame: a media error of this connection.
    BadMedia(StreamerError),
    /// Close the socket after writing any `Send` queued before this.
    Close(CloseReason),
}

/// Entry points for the fuzz targets in `streamer/fuzz`, compiled only with `--cfg fuzzing`.
#[cfg(fuzzing)]
pub mod fuzz {
    /// An AMF0 message through the nesting check, then (if it passes) the crate's decoder, as
    /// the session does.
    pub fn amf(input: &[u8]) {
        if super::amf::check(input).is_ok() {
            let _ = super::rml::guarded(|| {
                rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(input))
            });
        }
    }

    /// libfuzzer-sys's panic hook aborts on any panic, caught or not. This one lets a panic
    /// inside a call into `rml_rtmp` unwind (the session catches it: a known failing of the
    /// crate, docs/dependencies.md) and hands any other to it. Call it at each input (it
    /// installs itself once).
    pub fn let_rml_panics_unwind() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let abort = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !super::rml::GUARDED.with(|g| g.get()) {
                    abort(info);
                }
            }));
        });
    }
}
