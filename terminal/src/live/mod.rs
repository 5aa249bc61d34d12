//! Going live: publishing a clip or a camera to the reserved server by RTSP (ANNOUNCE, SETUP
//! over TCP interleaved, RECORD), by RTMP (`publish`, FLV tags) or by SRT (MPEG-TS), inside
//! the reservation's window.
//!
//! Contract: the media come from a [`Source`] (an MP4 file in `mp4`, or a camera pulled with
//! retina in `camera`) as [`Frame`]s of known `Track`s; the pure cores turn them into RTP
//! packets (`rtp`), describe them as SDP (`sdp`), speak the RTSP publishing dialogue
//! (`session`, sans-IO) or the RTMP one (`rtmp` over `flv` tags, sans-IO), or mux them as
//! MPEG-TS for SRT (`ts`) and decide when to connect, where, how long to back off and when to
//! stop (`policy`, sans-IO); `run` is the one async edge that owns the socket, the clock and
//! the timers, and does what the policy decides. Frames are the one seam: a file and a
//! camera go down the same path.

mod camera;
mod flv;
mod mp4;
mod policy;
mod rtmp;
mod rtp;
mod run;
mod sdp;
mod session;
mod ts;

use std::time::Duration;

use bytes::Bytes;

pub use camera::open_camera;
pub use mp4::{open_file, Clip};
pub use policy::{Ended, Event, Plan, Target};
pub use run::{publish, Summary};

/// How the terminal publishes: RTSP (every carrier takes it), or RTMP or SRT where the
/// carrier has their address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Rtsp,
    Rtmp,
    Srt,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rtsp => "RTSP",
            Self::Rtmp => "RTMP",
            Self::Srt => "SRT",
        }
    }

    /// Where to publish by this protocol on `carrier`, if the carrier takes it.
    pub fn address(self, carrier: &slotcast_wire::CarrierUrl) -> Option<&str> {
        match self {
            Self::Rtsp => Some(carrier.url.as_str()),
            Self::Rtmp => carrier.urls.rtmp.as_deref(),
            Self::Srt => carrier.urls.srt.as_deref(),
        }
    }
}

/// A codec the publisher can packetize, with what a receiver needs to decode it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264; frames are length-prefixed NAL units (`length_size` bytes each, AVCC style).
    H264 {
        sps: Vec<u8>,
        pps: Vec<u8>,
        length_size: u8,
    },
    /// AAC; frames are raw access units. `config` is the AudioSpecificConfig.
    Aac {
        config: Vec<u8>,
        sample_rate: u32,
        channels: u16,
    },
}

impl Codec {
    /// The RTP clock rate.
    pub fn clock_rate(&self) -> u32 {
        match self {
            Self::H264 { .. } => 90_000,
            Self::Aac { sample_rate, .. } => *sample_rate,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::H264 { .. } => "H.264",
            Self::Aac { .. } => "AAC",
        }
    }
}

/// One frame of one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index into the source's tracks.
    pub track: usize,
    /// Presentation time in the codec's RTP clock ([`Codec::clock_rate`]) since the source began.
    pub timestamp: i64,
    /// Decode time in the same clock: before `timestamp` for a frame that comes before others
    /// it is shown after (B-frames); equal to it where the source does not say.
    pub decoded: i64,
    /// When to send it, counted from the source's start; `None` for a live source (at once).
    pub due: Option<Duration>,
    /// A video frame a decoder can start at (IDR); every audio frame is one.
    pub keyframe: bool,
    pub data: Bytes,
}

/// What to publish: its tracks, then its frames in sending order through a bounded channel.
/// The producer (a blocking file reader or a camera task) stops when the receiver is dropped.
pub struct Source {
    pub tracks: Vec<Codec>,
    pub frames: tokio::sync::mpsc::Receiver<Result<Frame, String>>,
    /// What it is, for people: "clip.mp4 (H.264 1280x720 + AAC 48 kHz, 10.0 s, looped)".
    pub describe: String,
}
