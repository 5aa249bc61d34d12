//! retina's frames into slotcast's [`Frame`]s: the one place both ingest modes shape media,
//! whether retina depacketized a publisher's RTP (`retina_adapter`) or pulled a camera with
//! its client (`camera`).
//!
//! Contract: pure, and only retina's public API (`CodecItem`, `ParametersRef`). A [`Framer`]
//! serves one track: it stamps frames with the track index, `pts` = retina's elapsed time in
//! the track's clock rate and `dts = pts` (no B-frames), and puts the track's parameters on
//! the first frame and on every frame after which they change. A video frame that arrives
//! before any parameters cannot be described and is dropped (counted). Video `data` is what
//! retina's `FrameFormat::MP4` gives (4-byte NAL lengths, parameter sets only in the `avcC` /
//! `hvcC` record); audio `data` is one raw AAC access unit.

use bytes::Bytes;
use retina::codec::{CodecItem, ParametersRef};

use super::{CodecParams, Frame, TrackKind, TrackSpec};
use crate::StreamerError;

/// The codecs slotcast relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Aac,
}

impl Codec {
    /// From an SDP `m=` kind and rtpmap encoding name (any case), e.g. `video` + `H264`.
    pub fn of(kind: TrackKind, encoding_name: &str) -> Option<Self> {
        match (kind, encoding_name.to_ascii_uppercase().as_str()) {
            (TrackKind::Video, "H264") => Some(Self::H264),
            (TrackKind::Video, "H265") => Some(Self::H265),
            (TrackKind::Audio, "MPEG4-GENERIC") => Some(Self::Aac),
            _ => None,
        }
    }

    /// retina's lower-case media and encoding names.
    pub const fn retina_names(self) -> (&'static str, &'static str) {
        match self {
            Self::H264 => ("video", "h264"),
            Self::H265 => ("video", "h265"),
            Self::Aac => ("audio", "mpeg4-generic"),
        }
    }

    /// A track of this codec for a publisher that sends no SDP (RTMP), described as an SDP
    /// would: the encoding name [`codec_names`] reads, at `clock_rate`.
    pub fn track_spec(self, clock_rate: u32, channels: Option<u16>) -> TrackSpec {
        let (kind, media, encoding_name) = match self {
            Self::H264 => (TrackKind::Video, "video", "H264"),
            Self::H265 => (TrackKind::Video, "video", "H265"),
            Self::Aac => (TrackKind::Audio, "audio", "MPEG4-GENERIC"),
        };
        TrackSpec {
            kind,
            media: media.to_owned(),
            encoding_name: encoding_name.to_owned(),
            payload_type: 0,
            clock_rate,
            channels,
            fmtp: None,
            control: None,
        }
    }

    /// The short name reports use (`h264`, `h265`, `aac`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H265 => "h265",
            Self::Aac => "aac",
        }
    }
}

/// The codecs of `tracks` as reports name them, each once, in track order: `h264,aac`
/// (an encoding slotcast does not relay is named in lower case as the SDP has it).
pub fn codec_names(tracks: &[TrackSpec]) -> String {
    let mut names: Vec<String> = Vec::new();
    for t in tracks {
        let name = Codec::of(t.kind, &t.encoding_name).map_or_else(
            || t.encoding_name.to_ascii_lowercase(),
            |c| c.name().to_string(),
        );
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(",")
}

/// Shapes one track's retina output into [`Frame`]s. See the module docs.
#[derive(Debug)]
pub struct Framer {
    track: usize,
    codec: Codec,
    /// The parameters last put on a frame.
    sent_params: Option<CodecParams>,
    dropped_frames: u64,
}

fn error(track: usize, msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("track {track}: {msg}"))
}

impl Framer {
    pub fn new(track: usize, codec: Codec) -> Self {
        Self {
            track,
            codec,
            sent_params: None,
            dropped_frames: 0,
        }
    }

    /// One item from retina, with the track's parameters as retina has them after it. `None`
    /// for an item that is no frame of ours (a frame dropped for want of parameters).
    pub fn frame(
        &mut self,
        item: CodecItem,
        parameters: Option<ParametersRef<'_>>,
    ) -> Result<Option<Frame>, StreamerError> {
        let (pts, keyframe, new_params, data) = match item {
            CodecItem::VideoFrame(f) => (
                f.timestamp().elapsed(),
                f.is_random_access_point(),
                f.has_new_parameters(),
                Bytes::from(f.into_data()),
            ),
            CodecItem::AudioFrame(f) => (
                f.timestamp().elapsed(),
                true,
                false,
                Bytes::copy_from_slice(f.data()),
            ),
            other => {
                return Err(error(
                    self.track,
                    format_args!("retina produced an unexpected item {other:?}"),
                ))
            }
        };
        let params = if self.sent_params.is_none() || new_params {
            parameters
                .map(|p| params_of(self.track, self.codec, p))
                .transpose()?
                .filter(|p| self.sent_params.as_ref() != Some(p))
        } else {
            None
        };
        if self.sent_params.is_none() && params.is_none() {
            self.dropped_frames += 1;
            tracing::debug!(
                track = self.track,
                pts,
                "frame before any parameters; dropped"
            );
            return Ok(None);
        }
        if let Some(p) = &params {
            self.sent_params = Some(p.clone());
        }
        Ok(Some(Frame {
            track: self.track,
            pts,
            dts: pts,
            keyframe,
            data,
            params,
        }))
    }

    /// The track's parameters as retina has them, in slotcast's form.
    pub fn params(&self, parameters: Option<ParametersRef<'_>>) -> Option<CodecParams> {
        parameters.and_then(|p| params_of(self.track, self.codec, p).ok())
    }

    /// Video frames dropped because no parameters were known yet.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }
}

/// retina's parameters for a `codec` track as [`CodecParams`].
fn params_of(
    track: usize,
    codec: Codec,
    parameters: ParametersRef<'_>,
) -> Result<CodecParams, StreamerError> {
    match (codec, parameters) {
        (Codec::H264 | Codec::H265, ParametersRef::Video(v)) => {
            let (w, h) = v.pixel_dimensions();
            let (Ok(width), Ok(height)) = (u16::try_from(w), u16::try_from(h)) else {
                return Err(error(track, format_args!("picture size {w}x{h} too large")));
            };
            let record = Bytes::copy_from_slice(v.extra_data());
            // Both records start with configurationVersion = 1; anything else means retina's
            // frame format is not the MP4 one slotcast asks for.
            if record.first() != Some(&1) {
                return Err(error(
                    track,
                    "video extra data is not a decoder configuration record",
                ));
            }
            let codec_string = v.rfc6381_codec().to_owned();
            Ok(if codec == Codec::H264 {
                CodecParams::H264 {
                    avcc: record,
                    width,
                    height,
                    codec: codec_string,
                }
            } else {
                CodecParams::H265 {
                    hvcc: record,
                    width,
                    height,
                    codec: codec_string,
                }
            })
        }
        (Codec::Aac, ParametersRef::Audio(a)) => Ok(CodecParams::Aac {
            asc: Bytes::copy_from_slice(a.extra_data()),
            sample_rate: a.clock_rate(),
            channels: a.channels().get(),
            codec: a
                .rfc6381_codec()
                .ok_or_else(|| error(track, "AAC parameters without a codec string"))?
                .to_owned(),
        }),
        (codec, other) => Err(error(
            track,
            format_args!("retina gave {other:?} for {codec:?}"),
        )),
    }
}
