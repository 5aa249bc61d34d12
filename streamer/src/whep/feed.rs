//! What a real-time viewer is sent: the live tap's frames as WebRTC samples.
//!
//! Contract: [`Feed::push`] takes the tap's frames in order and returns the samples to write:
//! H.264 as Annex B access units, starting at a keyframe (each keyframe led by the stream's
//! SPS and PPS, which RTMP and SRT publishers keep out of band), and audio as Opus packets
//! (a WHIP publisher's as they came, AAC transcoded into 20 ms ones, [`super::transcode`]). Times are continuous for the viewer: a
//! publisher reconnecting (a new connection on the tap) carries on one frame after the last
//! sample, not from its own zero. Video that is not H.264 is not sent (browsers' WebRTC has
//! no H.265 to count on); audio that cannot be transcoded is dropped, once logged. Losing
//! frames ([`Feed::lost`]) means waiting for the next keyframe. Pure: no I/O.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::opus::OPUS_RATE;
use super::transcode::{AacToOpus, OpusPacket};
use crate::live_tap::LiveFrame;
use crate::media::{h264, rescale, CodecParams, TrackKind};

/// The RTP clock of H.264 in WebRTC.
pub const VIDEO_RATE: u32 = 90_000;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// One sample for the viewer's peer connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub kind: TrackKind,
    /// On the track's WebRTC clock: 90 kHz video, 48 kHz Opus.
    pub time: i64,
    /// Video a decoder can start at (led by its parameter sets); every audio packet is.
    pub keyframe: bool,
    pub data: Bytes,
}

/// Keeps one track's times continuous across the publisher's connections.
#[derive(Debug, Default)]
struct Timeline {
    connection: Option<u64>,
    /// Added to the tap's times (after rescaling).
    offset: i64,
    /// The last time given out.
    last: Option<i64>,
}

impl Timeline {
    /// `time` of `connection` on the viewer's clock; `step` is a frame's length there.
    fn map(&mut self, connection: u64, time: i64, step: i64) -> i64 {
        if self.connection != Some(connection) {
            self.connection = Some(connection);
            // The first connection keeps its own times, but never below zero (RTP time is
            // unsigned); a later one carries on from the last.
            self.offset = self.last.map_or((-time).max(0), |last| last + step - time);
        }
        let mapped = time + self.offset;
        self.last = Some(mapped);
        mapped
    }
}

/// An audio route: Opus passed through, AAC transcoded, or what could not be.
enum Audio {
    Unset,
    /// WebRTC's own audio (a WHIP publisher's): sent as it came.
    Opus(Arc<CodecParams>),
    Aac {
        params: Arc<CodecParams>,
        transcoder: Box<AacToOpus>,
    },
    /// The parameters it could not take (retried when they change).
    Refused(Arc<CodecParams>),
}

/// One viewer's feed.
pub struct Feed {
    /// Waiting for a keyframe before sending video.
    video_waits: bool,
    video_time: Timeline,
    audio_time: Timeline,
    audio: Audio,
    opus: Vec<OpusPacket>,
    reservation_id: String,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("reservation_id", &self.reservation_id)
            .field("video_waits", &self.video_waits)
            .finish_non_exhaustive()
    }
}

impl Feed {
    pub fn new(reservation_id: &str) -> Self {
        Self {
            video_waits: true,
            video_time: Timeline::default(),
            audio_time: Timeline::default(),
            audio: Audio::Unset,
            opus: Vec::new(),
            reservation_id: reservation_id.to_string(),
        }
    }

    /// Frames were lost (the viewer fell behind): video waits for the next keyframe.
    pub fn lost(&mut self) {
        self.video_waits = true;
    }

    /// The samples `frame` makes, appended to `out`.
    pub fn push(&mut self, frame: &LiveFrame, out: &mut Vec<Sample>) {
        match frame.kind {
            TrackKind::Video => self.video(frame, out),
            TrackKind::Audio => self.audio(frame, out),
        }
    }

    fn video(&mut self, frame: &LiveFrame, out: &mut Vec<Sample>) {
        let CodecParams::H264 { avcc, .. } = &*frame.params else {
            return;
        };
        if self.video_waits && !frame.keyframe {
            return;
        }
        let sets = if frame.keyframe {
            match h264::parameter_sets(avcc) {
                Ok(sets) => sets,
                Err(err) => {
                    tracing::debug!(reservation = %self.reservation_id, %err, "no parameter sets");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let Some(data) = annex_b(&sets, &frame.data) else {
            tracing::debug!(reservation = %self.reservation_id, "a malformed access unit");
            self.video_waits = true;
            return;
        };
        self.video_waits = false;
        let time = rescale(frame.pts, frame.clock_rate, VIDEO_RATE);
        let step = i64::from(VIDEO_RATE / 30);
        out.push(Sample {
            kind: TrackKind::Video,
            time: self.video_time.map(frame.connection, time, step),
            keyframe: frame.keyframe,
            data,
        });
    }

    /// How audio described by `params` reaches the viewer.
    fn route(reservation_id: &str, params: &Arc<CodecParams>) -> Audio {
        if let CodecParams::Opus { .. } = **params {
            return Audio::Opus(params.clone());
        }
        match AacToOpus::new(params) {
            Ok(t) => Audio::Aac {
                params: params.clone(),
                transcoder: Box::new(t),
            },
            Err(err) => {
                tracing::info!(reservation = %reservation_id, %err,
                    "real-time viewers get no audio");
                Audio::Refused(params.clone())
            }
        }
    }

    fn audio(&mut self, frame: &LiveFrame, out: &mut Vec<Sample>) {
        let current = match &self.audio {
            Audio::Opus(params) | Audio::Aac { params, .. } | Audio::Refused(params) => {
                Some(params)
            }
            Audio::Unset => None,
        };
        if current != Some(&frame.params) {
            self.audio = Self::route(&self.reservation_id, &frame.params);
        }
        let transcoder = match &mut self.audio {
            Audio::Aac { transcoder, .. } => transcoder,
            Audio::Opus(_) => {
                let time = rescale(frame.pts, frame.clock_rate, OPUS_RATE);
                out.push(Sample {
                    kind: TrackKind::Audio,
                    time: self.audio_time.map(frame.connection, time, 960),
                    keyframe: true,
                    data: frame.data.clone(),
                });
                return;
            }
            Audio::Unset | Audio::Refused(_) => return,
        };
        self.opus.clear();
        if let Err(err) = transcoder.push(frame.pts, &frame.data, &mut self.opus) {
            tracing::debug!(reservation = %self.reservation_id, %err, "an audio frame lost");
            return;
        }
        for packet in self.opus.drain(..) {
            out.push(Sample {
                kind: TrackKind::Audio,
                time: self.audio_time.map(frame.connection, packet.pts, 960),
                keyframe: true,
                data: packet.data,
            });
        }
    }
}

/// An MP4 sample (4-byte lengths) as an Annex B access unit, led by `sets`; `None` when a
/// length runs past the end.
fn annex_b(sets: &[&[u8]], sample: &[u8]) -> Option<Bytes> {
    let extra: usize = sets.iter().map(|s| s.len() + START_CODE.len()).sum();
    let mut out = BytesMut::with_capacity(sample.len() + extra);
    for set in sets {
        out.put_slice(&START_CODE);
        out.put_slice(set);
    }
    let mut rest = sample;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let nal = tail.get(..len)?;
        out.put_slice(&START_CODE);
        out.put_slice(nal);
        rest = &tail[len..];
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::{avcc, PPS, SPS};

    fn h264() -> Arc<CodecParams> {
        Arc::new(h264::parse_avcc(&avcc(3, SPS, PPS)).unwrap().params)
    }

    fn video(connection: u64, pts: i64, keyframe: bool, params: &Arc<CodecParams>) -> LiveFrame {
        // One slice NAL unit of three bytes, with its 4-byte length.
        LiveFrame {
            kind: TrackKind::Video,
            connection,
            clock_rate: 90_000,
            pts,
            dts: pts,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 3, 0x65, 0xaa, 0xbb]),
            params: params.clone(),
        }
    }

    #[test]
    fn video_starts_at_a_keyframe_led_by_its_parameter_sets_in_annex_b() {
        let params = h264();
        let mut feed = Feed::new("r");
        let mut out = Vec::new();
        feed.push(&video(1, 0, false, &params), &mut out);
        assert!(out.is_empty(), "nothing before a keyframe");
        feed.push(&video(1, 3000, true, &params), &mut out);
        feed.push(&video(1, 6000, false, &params), &mut out);
        let mut key = vec![0, 0, 0, 1];
        key.extend_from_slice(SPS);
        key.extend_from_slice(&[0, 0, 0, 1]);
        key.extend_from_slice(PPS);
        key.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xaa, 0xbb]);
        assert_eq!(out[0].data, key);
        assert_eq!(&out[1].data[..], &[0, 0, 0, 1, 0x65, 0xaa, 0xbb]);
        assert_eq!((out[0].time, out[1].time), (3000, 6000));
        // Frames lost: the next non-keyframe is not sent.
        feed.lost();
        out.clear();
        feed.push(&video(1, 9000, false, &params), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_publisher_reconnecting_carries_on_one_frame_after_the_last_sample() {
        let params = h264();
        let mut feed = Feed::new("r");
        let mut out = Vec::new();
        feed.push(&video(1, 90_000, true, &params), &mut out);
        // The new connection starts from its own zero.
        feed.push(&video(2, 0, true, &params), &mut out);
        feed.push(&video(2, 3000, false, &params), &mut out);
        let times: Vec<i64> = out.iter().map(|s| s.time).collect();
        assert_eq!(times, [90_000, 93_000, 96_000]);
    }

    #[test]
    fn opus_from_a_whip_publisher_is_passed_through_on_the_48_khz_clock() {
        let opus = Arc::new(CodecParams::Opus {
            channels: 2,
            pre_skip: 312,
            codec: "opus".into(),
        });
        let mut feed = Feed::new("r");
        let mut out = Vec::new();
        for pts in [0, 960, 1920] {
            let frame = LiveFrame {
                kind: TrackKind::Audio,
                connection: 1,
                clock_rate: 48_000,
                pts,
                dts: pts,
                keyframe: true,
                data: Bytes::from_static(b"an opus packet"),
                params: opus.clone(),
            };
            feed.push(&frame, &mut out);
        }
        let times: Vec<i64> = out.iter().map(|s| s.time).collect();
        assert_eq!(times, [0, 960, 1920]);
        assert!(out.iter().all(|s| &s.data[..] == b"an opus packet"));
    }

    #[test]
    fn video_that_is_not_h264_and_broken_access_units_are_not_sent() {
        let mut feed = Feed::new("r");
        let mut out = Vec::new();
        let h265 = Arc::new(CodecParams::H265 {
            hvcc: Bytes::new(),
            width: 16,
            height: 16,
            codec: "hvc1".into(),
        });
        feed.push(&video(1, 0, true, &h265), &mut out);
        let mut broken = video(1, 0, true, &h264());
        broken.data = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
        feed.push(&broken, &mut out);
        assert!(out.is_empty());
    }
}
