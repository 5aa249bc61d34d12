//! Media types shared by the RTP depacketizer adapter (`retina_adapter`), the frame shaping
//! both ingest modes use (`frames`), the codec configs publishers send outside RTP (`h264`,
//! `aac`, for RTMP), the CMAF segmenter (`segmenter`) and the media path that ties them to the
//! playlist (`crate::media_path`).
//!
//! Contract: plain data, no I/O. Timestamps are in each track's own clock rate (90 kHz for
//! video, the sample rate for AAC), extended to 64 bits so they never wrap.

pub mod aac;
pub mod annex_b;
pub mod frames;
pub mod h264;
pub mod retina_adapter;
pub mod segmenter;

use bytes::Bytes;

/// `ticks` of a `from` Hz clock in ticks of a `to` Hz clock, rounded down (toward minus
/// infinity, so times before an anchor stay before it); 0 on a clock of 0 Hz.
pub fn rescale_wide(ticks: i128, from: u32, to: u32) -> i128 {
    if from == 0 {
        return 0;
    }
    if from == to {
        return ticks;
    }
    (ticks * i128::from(to)).div_euclid(i128::from(from))
}

/// [`rescale_wide`] for 64-bit times, saturated at the ends of `i64`.
pub fn rescale(ticks: i64, from: u32, to: u32) -> i64 {
    let scaled = rescale_wide(i128::from(ticks), from, to);
    i64::try_from(scaled).unwrap_or(if scaled < 0 { i64::MIN } else { i64::MAX })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One track as the publisher's SDP describes it (`m=` line, `a=rtpmap`, `a=fmtp`,
/// `a=control`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSpec {
    pub kind: TrackKind,
    /// The `m=` media name: `video` or `audio`.
    pub media: String,
    /// The rtpmap encoding name as written, e.g. `H264`, `H265`, `MPEG4-GENERIC`.
    pub encoding_name: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters after the payload type, e.g. `packetization-mode=1;...`.
    pub fmtp: Option<String>,
    /// The `a=control` value, e.g. `streamid=0` or `trackID=1`.
    pub control: Option<String>,
}

/// What an init segment needs to describe a track. A change mid-stream starts a new init
/// segment (and a discontinuity in the playlist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecParams {
    /// H.264: the AVCDecoderConfigurationRecord (the body of `avcC`).
    H264 {
        avcc: Bytes,
        width: u16,
        height: u16,
        /// RFC 6381 codec string, e.g. `avc1.64001f`.
        codec: String,
    },
    /// H.265: the HEVCDecoderConfigurationRecord (the body of `hvcC`).
    H265 {
        hvcc: Bytes,
        width: u16,
        height: u16,
        codec: String,
    },
    /// AAC: the AudioSpecificConfig.
    Aac {
        asc: Bytes,
        sample_rate: u32,
        channels: u16,
        /// e.g. `mp4a.40.2`.
        codec: String,
    },
    /// Opus (RFC 7587 over RTP, WebRTC's audio): always 48 kHz on the wire, whatever the
    /// encoder's input rate; the sample entry's `dOps` is made from these.
    Opus {
        /// Output channels: 1 or 2 (WebRTC's SDP always says 2; a mono stream decodes to both).
        channels: u16,
        /// Samples at 48 kHz to drop from the decoder's start (RFC 7845's pre-skip).
        pre_skip: u16,
        /// `opus`.
        codec: String,
    },
}

impl CodecParams {
    pub fn codec(&self) -> &str {
        match self {
            Self::H264 { codec, .. }
            | Self::H265 { codec, .. }
            | Self::Aac { codec, .. }
            | Self::Opus { codec, .. } => codec,
        }
    }
}

/// One access unit (video) or one audio frame, in decode order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index into the session's track list.
    pub track: usize,
    /// Presentation time in the track's clock rate.
    pub pts: i64,
    /// Decode time; equal to `pts` when there are no B-frames (what slotcast asks of
    /// publishers).
    pub dts: i64,
    pub keyframe: bool,
    /// Video: NAL units each prefixed by its 4-byte big-endian length (MP4 sample format).
    /// Audio: one raw AAC frame.
    pub data: Bytes,
    /// Set on a track's first frame and whenever its parameters change.
    pub params: Option<CodecParams>,
}

/// Bytes kept as the pieces they were made of, never joined into one buffer: a part is its
/// `moof` and `mdat` header, then each sample's data as depacketized. Cloning shares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pieces(std::sync::Arc<[Bytes]>);

impl Pieces {
    pub fn new(pieces: Vec<Bytes>) -> Self {
        Self(pieces.into())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Bytes> {
        self.0.iter()
    }

    /// The bytes joined (a copy).
    pub fn concat(&self) -> Vec<u8> {
        self.0.concat()
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Self::new(vec![bytes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescaling_rounds_down_and_saturates() {
        assert_eq!(rescale(90_000, 90_000, 48_000), 48_000);
        assert_eq!(rescale(1, 48_000, 90_000), 1); // 1.875 ticks: down to 1
        assert_eq!(rescale(-1, 48_000, 90_000), -2); // -1.875: down, before the anchor
        assert_eq!(rescale(i64::MAX, 1, 90_000), i64::MAX);
        assert_eq!(rescale(i64::MIN, 1, 90_000), i64::MIN);
        assert_eq!(rescale(1234, 0, 90_000), 0);
        assert_eq!(rescale_wide(-7, 44_100, 44_100), -7);
    }
}
