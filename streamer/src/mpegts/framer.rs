//! MPEG-TS units into the streamer's frames: H.264 from Annex B (its parameter sets read
//! into a decoder configuration record) and AAC from ADTS (its header read into an
//! AudioSpecificConfig), each on its track's own clock.
//!
//! Contract: pure, and never panics on input. Tracks are the demultiplexer's streams in its
//! order; [`TsFramer::tracks`] describes them once every one has its parameters (a video
//! frame before the first SPS and PPS, or audio before the first ADTS header, is dropped:
//! nothing can describe it). A frame carries `params` on its track's first frame and
//! whenever they change. Video samples get 4-byte NAL lengths, without parameter sets or
//! delimiters (`crate::media::annex_b`); a keyframe is an access unit with an IDR slice. Audio
//! frames of one PES follow each other on the sample clock ([`AudioClock`]).

use super::demux::{Kind, Unit, CLOCK_RATE};
use crate::media::aac::{self, AudioClock, AudioConfig};
use crate::media::annex_b::AnnexB;
use crate::media::frames::Codec;
use crate::media::{CodecParams, Frame, TrackSpec};
use crate::StreamerError;

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("mpeg-ts: {msg}"))
}

/// One stream's state.
enum Track {
    Video(AnnexB),
    Audio {
        config: Option<AudioConfig>,
        clock: Option<AudioClock>,
        announce: bool,
    },
}

pub struct TsFramer {
    tracks: Vec<Track>,
}

impl TsFramer {
    /// A framer for the demultiplexer's `streams`, in its order.
    pub fn new(streams: &[Kind]) -> Self {
        let tracks = streams
            .iter()
            .map(|kind| match kind {
                Kind::H264 => Track::Video(AnnexB::new()),
                Kind::Aac => Track::Audio {
                    config: None,
                    clock: None,
                    announce: false,
                },
            })
            .collect();
        Self { tracks }
    }

    /// The tracks, once each has its parameters: what the media path is made with.
    pub fn tracks(&self) -> Option<Vec<TrackSpec>> {
        self.tracks
            .iter()
            .map(|t| match t {
                Track::Video(video) => video
                    .params()
                    .map(|_| Codec::H264.track_spec(CLOCK_RATE, None)),
                Track::Audio { config, .. } => config
                    .as_ref()
                    .map(|c| Codec::Aac.track_spec(c.sample_rate, Some(c.channels))),
            })
            .collect()
    }

    /// Each track's parameters, once every one has them: what the segmenter is given before
    /// the first frame, so that its first init segment describes every track.
    pub fn params(&self) -> Option<Vec<CodecParams>> {
        self.tracks
            .iter()
            .map(|t| match t {
                Track::Video(video) => video.params().cloned(),
                Track::Audio { config, .. } => config.as_ref().map(AudioConfig::params),
            })
            .collect()
    }

    /// The frames of `unit`, which came from the demultiplexer's stream `track`.
    pub fn frames(&mut self, track: usize, unit: &Unit) -> Result<Vec<Frame>, StreamerError> {
        match self.tracks.get_mut(track) {
            Some(Track::Video(video)) => video
                .frame(track, &unit.data, unit.pts, unit.dts)
                .map(|f| f.into_iter().collect()),
            Some(Track::Audio {
                config,
                clock,
                announce,
            }) => audio(track, unit, config, clock, announce),
            None => Ok(Vec::new()),
        }
    }
}

/// One ADTS header: the AudioSpecificConfig it implies, its own length, the frame's length.
fn adts(data: &[u8]) -> Result<(Vec<u8>, usize, usize), StreamerError> {
    if data.len() < 7 || data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
        return Err(error("AAC that is not in ADTS frames"));
    }
    let header = if data[1] & 0x01 == 1 { 7 } else { 9 };
    let object_type = (data[2] >> 6) + 1;
    let rate_index = (data[2] >> 2) & 0x0f;
    let channels = ((data[2] & 0x01) << 2) | (data[3] >> 6);
    let frame = (usize::from(data[3] & 0x03) << 11)
        | (usize::from(data[4]) << 3)
        | usize::from(data[5] >> 5);
    if frame <= header || frame > data.len() {
        return Err(error("an ADTS frame runs past its PES packet"));
    }
    let asc = vec![
        (object_type << 3) | (rate_index >> 1),
        ((rate_index & 1) << 7) | (channels << 3),
    ];
    Ok((asc, header, frame))
}

fn audio(
    track: usize,
    unit: &Unit,
    config: &mut Option<AudioConfig>,
    clock: &mut Option<AudioClock>,
    announce: &mut bool,
) -> Result<Vec<Frame>, StreamerError> {
    let mut frames = Vec::new();
    let mut rest = &unit.data[..];
    let mut index = 0i64;
    while !rest.is_empty() {
        let (asc, header, len) = adts(rest)?;
        if config.as_ref().map(|c| &c.asc[..]) != Some(&asc[..]) {
            let parsed = aac::parse_asc(&asc)?;
            *clock = Some(AudioClock::new(parsed.frame_len));
            *config = Some(parsed);
            *announce = true;
        }
        let (Some(c), Some(clock)) = (config.as_ref(), clock.as_mut()) else {
            break;
        };
        // The PES's time on the sample clock, then one frame after another.
        let rate = i64::from(c.sample_rate);
        let at = unit.pts * rate / i64::from(CLOCK_RATE) + index * i64::from(c.frame_len);
        let ts = clock.stamp(at);
        frames.push(Frame {
            track,
            pts: ts,
            dts: ts,
            keyframe: true,
            data: unit.data.slice_ref(&rest[header..len]),
            params: std::mem::take(announce).then(|| c.params()),
        });
        rest = &rest[len..];
        index += 1;
    }
    Ok(frames)
}

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
