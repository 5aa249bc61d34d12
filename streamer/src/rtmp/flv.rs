//! FLV tag bodies, as RTMP video and audio messages carry them, into slotcast's [`Frame`]s:
//! H.264 (the AVC sequence header, then NAL units with a composition time) and AAC (the
//! sequence header, then raw frames).
//!
//! Contract: pure and sans-IO; never panics on input. [`parse_video`] and [`parse_audio`]
//! read one tag body; [`FlvFramer`] turns a publisher's tags into frames for the tracks its
//! headers described: timestamps from RTMP's milliseconds (32 bits, wrapping, one clock for
//! both tracks) into 64-bit 90 kHz for video and the sample rate for audio, exact on AAC's
//! frame grid ([`AudioClock`]); a video frame is a keyframe when it holds an IDR slice
//! (whatever the tag's frame type says); parameters ride on a track's first frame and on the
//! first after they change. Enhanced RTMP (HEVC, AV1...) and codecs other than H.264 and
//! AAC are named, not relayed.

use bytes::Bytes;

use crate::media::aac::{parse_asc, AudioClock, AudioConfig};
use crate::media::frames::Codec;
use crate::media::h264::{parse_avcc, to_sample, Avcc};
use crate::media::{CodecParams, Frame, TrackSpec};
use crate::StreamerError;

const CODEC_AVC: u8 = 7;
const SOUND_AAC: u8 = 10;
/// The video tag's frame type for a video info / command frame, which carries no picture.
const FRAME_INFO: u8 = 5;

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("flv: {msg}"))
}

/// What a video tag holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// The AVCDecoderConfigurationRecord.
    AvcHeader(Bytes),
    /// One access unit: NAL units with the record's length size.
    Avc { cts_ms: i32, data: Bytes },
    /// End of sequence, or a video info / command frame: nothing to relay.
    Nothing,
    /// A codec slotcast does not relay, named.
    Unsupported(String),
}

/// What an audio tag holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// The AudioSpecificConfig.
    AacHeader(Bytes),
    /// One raw AAC frame.
    Aac(Bytes),
    Unsupported(String),
}

/// FLV's names for its video codec ids, for refusals.
fn video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263 (FLV1)".into(),
        3 => "Screen Video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 with alpha".into(),
        6 => "Screen Video 2".into(),
        12 => "HEVC (FLV codec id 12)".into(),
        other => format!("FLV video codec id {other}"),
    }
}

/// FLV's names for its sound formats, for refusals.
fn sound_format_name(id: u8) -> String {
    match id {
        0 | 3 => "linear PCM".into(),
        1 => "ADPCM".into(),
        2 | 14 => "MP3".into(),
        4..=6 => "Nellymoser".into(),
        7 | 8 => "G.711".into(),
        9 => "Enhanced RTMP audio".into(),
        11 => "Speex".into(),
        other => format!("FLV sound format {other}"),
    }
}

/// Reads a video tag body.
pub fn parse_video(body: &Bytes) -> Result<VideoTag, StreamerError> {
    let &first = body.first().ok_or_else(|| error("empty video tag"))?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: a FourCC follows the packet type.
        let fourcc = body
            .get(1..5)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_else(|| "?".into());
        return Ok(VideoTag::Unsupported(format!(
            "Enhanced RTMP video ({fourcc})"
        )));
    }
    let (frame_type, codec) = (first >> 4, first & 0x0f);
    if codec != CODEC_AVC {
        return Ok(VideoTag::Unsupported(video_codec_name(codec)));
    }
    if frame_type == FRAME_INFO {
        return Ok(VideoTag::Nothing);
    }
    let header = body
        .get(1..5)
        .ok_or_else(|| error("AVC video tag shorter than its 5-byte header"))?;
    // SI24: sign-extend the 24-bit composition time.
    let cts_ms = i32::from_be_bytes([header[1], header[2], header[3], 0]) >> 8;
    match header[0] {
        0 => Ok(VideoTag::AvcHeader(body.slice(5..))),
        1 => Ok(VideoTag::Avc {
            cts_ms,
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::Nothing),
        other => Err(error(format_args!("AVC packet type {other}"))),
    }
}

/// Reads an audio tag body.
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, StreamerError> {
    let &first = body.first().ok_or_else(|| error("empty audio tag"))?;
    let format = first >> 4;
    if format != SOUND_AAC {
        return Ok(AudioTag::Unsupported(sound_format_name(format)));
    }
    match body.get(1) {
        Some(0) => Ok(AudioTag::AacHeader(body.slice(2..))),
        Some(1) if body.len() > 2 => Ok(AudioTag::Aac(body.slice(2..))),
        Some(1) => Err(error("empty AAC frame")),
        Some(other) => Err(error(format_args!("AAC packet type {other}"))),
        None => Err(error("AAC audio tag shorter than its 2-byte header")),
    }
}

/// RTMP's 32-bit millisecond timestamps, unwrapped to 64 bits on one clock for all tracks:
/// each tag moves it by the signed 32-bit difference from the tag before.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<(u32, i64)>,
}

impl Unwrap {
    fn ms(&mut self, raw: u32) -> i64 {
        let value = match self.last {
            // The difference as a signed 32-bit value: a wrap forward, or a step back.
            Some((last, value)) => value + i64::from(raw.wrapping_sub(last) as i32),
            None => i64::from(raw),
        };
        self.last = Some((raw, value));
        value
    }
}

#[derive(Debug)]
struct VideoTrack {
    index: usize,
    avcc: Avcc,
    /// The record changed (or came first) since the last frame: the next carries it.
    send_params: bool,
}

#[derive(Debug)]
struct AudioTrack {
    index: usize,
    config: AudioConfig,
    clock: AudioClock,
    send_params: bool,
}

/// One publisher's tags into frames; see the module docs.
#[derive(Debug)]
pub struct FlvFramer {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    clock: Unwrap,
}

impl FlvFramer {
    /// A framer for the tracks the publisher's headers describe: video (its `avcC`) first,
    /// then audio (its AudioSpecificConfig). At least one.
    pub fn new(avcc: Option<&Bytes>, asc: Option<&Bytes>) -> Result<Self, StreamerError> {
        let video = avcc.map(|record| parse_avcc(record)).transpose()?;
        let audio = asc.map(|asc| parse_asc(asc)).transpose()?;
        if video.is_none() && audio.is_none() {
            return Err(error("no track"));
        }
        let video = video.map(|avcc| VideoTrack {
            index: 0,
            avcc,
            send_params: true,
        });
        let audio_index = usize::from(video.is_some());
        Ok(Self {
            video,
            audio: audio.map(|config| AudioTrack {
                index: audio_index,
                clock: AudioClock::new(config.frame_len),
                config,
                send_params: true,
            }),
            clock: Unwrap::default(),
        })
    }

    /// The tracks, in index order, and their parameters.
    pub fn tracks(&self) -> (Vec<TrackSpec>, Vec<CodecParams>) {
        let mut specs = Vec::new();
        let mut params = Vec::new();
        if let Some(video) = &self.video {
            specs.push(Codec::H264.track_spec(90_000, None));
            params.push(video.avcc.params.clone());
        }
        if let Some(audio) = &self.audio {
            let config = &audio.config;
            specs.push(Codec::Aac.track_spec(config.sample_rate, Some(config.channels)));
            params.push(config.params());
        }
        (specs, params)
    }

    /// A video tag stamped `ts_ms`: a frame, nothing (a header, an end, video not
    /// published), or an error that is this tag's alone.
    pub fn video(&mut self, ts_ms: u32, body: &Bytes) -> Result<Option<Frame>, StreamerError> {
        let ms = self.clock.ms(ts_ms);
        let Some(track) = self.video.as_mut() else {
            return Ok(None);
        };
        match parse_video(body)? {
            VideoTag::AvcHeader(record) => {
                let avcc = parse_avcc(&record)?;
                if avcc != track.avcc {
                    track.avcc = avcc;
                    track.send_params = true;
                }
                Ok(None)
            }
            VideoTag::Avc { cts_ms, data } => {
                let (data, keyframe) = to_sample(data, track.avcc.length_size)?;
                let dts = ms * 90;
                let params =
                    std::mem::take(&mut track.send_params).then(|| track.avcc.params.clone());
                Ok(Some(Frame {
                    track: track.index,
                    pts: dts + i64::from(cts_ms) * 90,
                    dts,
                    keyframe,
                    data,
                    params,
                }))
            }
            VideoTag::Nothing => Ok(None),
            VideoTag::Unsupported(what) => Err(error(format_args!("video switched to {what}"))),
        }
    }

    /// An audio tag stamped `ts_ms`; as [`FlvFramer::video`].
    pub fn audio(&mut self, ts_ms: u32, body: &Bytes) -> Result<Option<Frame>, StreamerError> {
        let ms = self.clock.ms(ts_ms);
        let Some(track) = self.audio.as_mut() else {
            return Ok(None);
        };
        match parse_audio(body)? {
            AudioTag::AacHeader(asc) => {
                let config = parse_asc(&asc)?;
                if config.sample_rate != track.config.sample_rate {
                    return Err(error(format_args!(
                        "the audio sample rate changed from {} to {} Hz mid-stream",
                        track.config.sample_rate, config.sample_rate
                    )));
                }
                if config != track.config {
                    track.clock = AudioClock::new(config.frame_len);
                    track.config = config;
                    track.send_params = true;
                }
                Ok(None)
            }
            AudioTag::Aac(data) => {
                let rate = i128::from(track.config.sample_rate);
                let ticks = i64::try_from(i128::from(ms) * rate / 1000)
                    .map_err(|_| error("audio timestamp out of range"))?;
                let ts = track.clock.stamp(ticks);
                let params = std::mem::take(&mut track.send_params).then(|| track.config.params());
                Ok(Some(Frame {
                    track: track.index,
                    pts: ts,
                    dts: ts,
                    keyframe: true,
                    data,
                    params,
                }))
            }
            AudioTag::Unsupported(what) => Err(error(format_args!("audio switched to {what}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::{avcc, PPS, SPS};
    use crate::media::TrackKind;

    /// AAC-LC, 48 kHz, stereo.
    const ASC: &[u8] = &[0x11, 0x90];

    fn video_tag(key: bool, packet_type: u8, cts: i32, payload: &[u8]) -> Bytes {
        let mut tag = vec![if key { 0x17 } else { 0x27 }, packet_type];
        tag.extend_from_slice(&cts.to_be_bytes()[1..]);
        tag.extend_from_slice(payload);
        tag.into()
    }

    fn audio_tag(packet_type: u8, payload: &[u8]) -> Bytes {
        let mut tag = vec![0xaf, packet_type];
        tag.extend_from_slice(payload);
        tag.into()
    }

    #[test]
    fn tags_are_read_and_other_codecs_named() {
        let header = video_tag(true, 0, 0, &[1, 2, 3]);
        assert_eq!(
            parse_video(&header).unwrap(),
            VideoTag::AvcHeader(Bytes::from_static(&[1, 2, 3]))
        );
        // A negative composition time (SI24) survives.
        let frame = video_tag(false, 1, -40, &[0, 0, 0, 1, 0x41]);
        assert!(matches!(
            parse_video(&frame).unwrap(),
            VideoTag::Avc { cts_ms: -40, .. }
        ));
        assert_eq!(
            parse_video(&video_tag(true, 2, 0, &[])).unwrap(),
            VideoTag::Nothing
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x57, 0])).unwrap(),
            VideoTag::Nothing
        );
        for (tag, says) in [
            (&[0x12, 0][..], "Sorenson"),
            (&[0x1c, 0][..], "HEVC"),
            (
                &[0x90, b'h', b'v', b'c', b'1'][..],
                "Enhanced RTMP video (hvc1)",
            ),
        ] {
            let parsed = parse_video(&Bytes::copy_from_slice(tag)).unwrap();
            assert!(
                matches!(&parsed, VideoTag::Unsupported(w) if w.contains(says)),
                "{parsed:?}"
            );
        }
        assert_eq!(
            parse_audio(&audio_tag(0, ASC)).unwrap(),
            AudioTag::AacHeader(Bytes::from_static(ASC))
        );
        assert_eq!(
            parse_audio(&audio_tag(1, &[0x21])).unwrap(),
            AudioTag::Aac(Bytes::from_static(&[0x21]))
        );
        let mp3 = parse_audio(&Bytes::from_static(&[0x2f, 0xff])).unwrap();
        assert_eq!(mp3, AudioTag::Unsupported("MP3".into()));
    }

    #[test]
    fn malformed_tags_say_what_is_wrong() {
        for (tag, says) in [
            (&[][..], "empty video tag"),
            (&[0x17, 1, 0][..], "shorter than its 5-byte header"),
            (&[0x17, 3, 0, 0, 0][..], "AVC packet type 3"),
        ] {
            let err = parse_video(&Bytes::copy_from_slice(tag)).unwrap_err();
            assert!(err.to_string().contains(says), "{tag:02x?}: {err}");
        }
        for (tag, says) in [
            (&[][..], "empty audio tag"),
            (&[0xaf][..], "shorter than its 2-byte header"),
            (&[0xaf, 1][..], "empty AAC frame"),
            (&[0xaf, 7, 1][..], "AAC packet type 7"),
        ] {
            let err = parse_audio(&Bytes::copy_from_slice(tag)).unwrap_err();
            assert!(err.to_string().contains(says), "{tag:02x?}: {err}");
        }
    }

    #[test]
    fn tags_become_frames_on_one_clock_with_params_first() {
        let record = Bytes::from(avcc(3, SPS, PPS));
        let mut framer = FlvFramer::new(Some(&record), Some(&Bytes::from_static(ASC))).unwrap();
        let (specs, params) = framer.tracks();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].kind, specs[0].clock_rate),
            (TrackKind::Video, 90_000)
        );
        assert_eq!(
            (specs[1].kind, specs[1].clock_rate),
            (TrackKind::Audio, 48_000)
        );
        assert_eq!(params[1].codec(), "mp4a.40.2");

        // The headers again change nothing.
        assert_eq!(
            framer.video(0, &video_tag(true, 0, 0, &record)).unwrap(),
            None
        );
        assert_eq!(framer.audio(0, &audio_tag(0, ASC)).unwrap(), None);
        // An IDR with its SPS in band: a keyframe, the SPS dropped, the params on it.
        let idr = [0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 2, 0x65, 0x88];
        let frame = framer
            .video(1000, &video_tag(true, 1, 80, &idr))
            .unwrap()
            .unwrap();
        assert_eq!((frame.track, frame.dts, frame.pts), (0, 90_000, 97_200));
        assert!(frame.keyframe);
        assert_eq!(&frame.data[..], &[0, 0, 0, 2, 0x65, 0x88]);
        assert!(frame.params.is_some());
        // A frame the tag calls a keyframe without an IDR is not one; params only once.
        let p = [0, 0, 0, 2, 0x41, 0x9a];
        let frame = framer
            .video(1040, &video_tag(true, 1, 0, &p))
            .unwrap()
            .unwrap();
        assert!(!frame.keyframe && frame.params.is_none());
        // Audio at 1021 ms on the same clock: 49 008 at 48 kHz, then on the frame grid.
        let frame = framer.audio(1021, &audio_tag(1, &[0x21])).unwrap().unwrap();
        assert_eq!((frame.track, frame.dts), (1, 49_008));
        assert!(frame.params.is_some());
        let next = framer.audio(1042, &audio_tag(1, &[0x21])).unwrap().unwrap();
        assert_eq!(next.dts, 49_008 + 1024);
    }

    #[test]
    fn timestamps_unwrap_past_32_bits_on_both_tracks() {
        let record = Bytes::from(avcc(3, SPS, PPS));
        let mut framer = FlvFramer::new(Some(&record), Some(&Bytes::from_static(ASC))).unwrap();
        let p = [0, 0, 0, 2, 0x41, 0x9a];
        let before = u32::MAX - 20;
        let frame = framer
            .video(before, &video_tag(false, 1, 0, &p))
            .unwrap()
            .unwrap();
        assert_eq!(frame.dts, i64::from(before) * 90);
        // 40 ms later, past the wrap.
        let frame = framer
            .video(19, &video_tag(false, 1, 0, &p))
            .unwrap()
            .unwrap();
        assert_eq!(frame.dts, (i64::from(u32::MAX) + 20) * 90);
        // Audio stamped a little earlier than the last video still lands after the wrap.
        let frame = framer.audio(10, &audio_tag(1, &[0x21])).unwrap().unwrap();
        assert_eq!(frame.dts, (i64::from(u32::MAX) + 11) * 48);
    }

    #[test]
    fn a_changed_audio_rate_is_an_error_and_untracked_media_is_dropped() {
        let mut framer = FlvFramer::new(None, Some(&Bytes::from_static(ASC))).unwrap();
        assert_eq!(framer.tracks().0.len(), 1);
        // No video track: its tags are dropped.
        let p = [0, 0, 0, 2, 0x41, 0x9a];
        assert_eq!(framer.video(0, &video_tag(false, 1, 0, &p)).unwrap(), None);
        let err = framer.audio(0, &audio_tag(0, &[0x12, 0x10])).unwrap_err();
        assert!(err.to_string().contains("from 48000 to 44100 Hz"), "{err}");
        assert!(FlvFramer::new(None, None).is_err());
    }
}
