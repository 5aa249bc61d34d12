//! The one media path: frames in, CMAF parts into the reservation's playout and recording.
//!
//! Contract: a pushed stream (RTP depacketized in `ingest`) and a pulled camera (`camera`)
//! feed the same [`MediaPath`] with the same [`Frame`]s. One `MediaPath` serves one
//! connection: a new connection (a publisher reconnecting, a camera pulled again) makes a new
//! one, whose first init segment becomes a discontinuity in the playlist. Media errors (a
//! corrupt frame, loss) are tolerated up to [`MEDIA_ERRORS_MAX`], then the connection goes.
//! A video stream must send a keyframe at least every [`KEYFRAME_WAIT`] and
//! [`KEYFRAME_BYTES`] (a segment is cut only on one, so without them a playout's memory
//! grows): past either, [`StreamerError::NoKeyframe`], which is never tolerated. The watch
//! starts with the first frame of the video track, so a stream whose video was left out
//! (audio only) is not held to it.
//! No I/O of its own: the playout is memory, the recording is queued to the disk writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::{Hub, PlayoutHandle};
use crate::live_tap::TapFeed;
use crate::media::segmenter::{Segmenter, SegmenterConfig};
use crate::media::{CodecParams, Frame, TrackKind, TrackSpec};
use crate::StreamerError;

/// Media errors tolerated on one connection before it is dropped.
pub const MEDIA_ERRORS_MAX: u32 = 50;
/// The longest a video stream may go without a keyframe (common encoders send one every
/// 2–8 s).
pub const KEYFRAME_WAIT: Duration = Duration::from_secs(10);
/// The most a stream may send, every track counted, between two video keyframes.
pub const KEYFRAME_BYTES: usize = 16 << 20;

/// Time and bytes since the video track's last keyframe.
#[derive(Debug)]
struct KeyframeWatch {
    /// The first video track; `None`: nothing to watch.
    video: Option<usize>,
    /// Since the last keyframe, or the first video frame; `None` until that frame.
    since: Option<Instant>,
    bytes: usize,
}

impl KeyframeWatch {
    fn new(tracks: &[TrackSpec]) -> Self {
        Self {
            video: tracks.iter().position(|t| t.kind == TrackKind::Video),
            since: None,
            bytes: 0,
        }
    }

    fn observe(&mut self, now: Instant, frame: &Frame) -> Result<(), StreamerError> {
        let is_video = Some(frame.track) == self.video;
        if is_video && frame.keyframe {
            self.since = Some(now);
            self.bytes = 0;
            return Ok(());
        }
        let since = match self.since {
            Some(since) => since,
            None if is_video => *self.since.insert(now),
            None => return Ok(()),
        };
        self.bytes = self.bytes.saturating_add(frame.data.len());
        let waited = now.saturating_duration_since(since);
        if waited > KEYFRAME_WAIT || self.bytes > KEYFRAME_BYTES {
            return Err(StreamerError::NoKeyframe {
                seconds: waited.as_secs(),
                bytes: self.bytes,
            });
        }
        Ok(())
    }
}

/// How a stream's tracks keep time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clocks {
    /// Each track on a clock of its own (RTP: each starts at a random timestamp): tracks are
    /// aligned by arrival.
    PerTrack,
    /// Every track stamped from one clock (RTMP): tracks are aligned by their timestamps
    /// ([`SegmenterConfig::shared_clock`]).
    Shared,
}

/// Media paths made by this process: each one's connection number on the live tap.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub struct MediaPath {
    reservation_id: String,
    segmenter: Segmenter,
    playout: Arc<PlayoutHandle>,
    errors: u32,
    keyframes: KeyframeWatch,
    tap: TapFeed,
}

impl MediaPath {
    /// A path for `tracks` (frames name their track by index into it).
    pub fn new(
        hub: &Hub,
        reservation_id: &str,
        tracks: &[TrackSpec],
        clocks: Clocks,
        playout: Arc<PlayoutHandle>,
    ) -> Self {
        let config = SegmenterConfig {
            segment_target: hub.config().segment_target,
            part_target: hub.config().part_target,
            shared_clock: clocks == Clocks::Shared,
        };
        Self {
            reservation_id: reservation_id.to_string(),
            segmenter: Segmenter::new(config, tracks),
            playout,
            errors: 0,
            keyframes: KeyframeWatch::new(tracks),
            tap: TapFeed::new(CONNECTIONS.fetch_add(1, Ordering::Relaxed), tracks),
        }
    }

    /// A track's parameters known before its first frame (from an SDP).
    pub fn set_params(&mut self, track: usize, params: CodecParams) {
        self.tap.set_params(track, &params);
        if let Err(err) = self.segmenter.set_params(track, params) {
            tracing::info!(reservation = %self.reservation_id, track, %err,
                "SDP parameters not usable; waiting for the media's own");
        }
    }

    /// One frame, which arrived at `now`. An error is the frame's own; pass it through
    /// [`MediaPath::tolerate`].
    pub fn push(&mut self, hub: &Hub, now: Instant, frame: Frame) -> Result<(), StreamerError> {
        hub.metrics().frames.inc();
        self.playout.received(now, frame.data.len());
        self.keyframes.observe(now, &frame)?;
        self.tap.offer(self.playout.tap(), &frame);
        self.segmenter.push(now, frame)
    }

    /// Counts a media error; past [`MEDIA_ERRORS_MAX`] of them, returns it.
    pub fn tolerate(&mut self, result: Result<(), StreamerError>) -> Result<(), StreamerError> {
        let Err(err) = result else { return Ok(()) };
        if matches!(err, StreamerError::NoKeyframe { .. }) {
            return Err(err);
        }
        self.errors += 1;
        tracing::debug!(reservation = %self.reservation_id, %err, "media error");
        if self.errors > MEDIA_ERRORS_MAX {
            return Err(err);
        }
        Ok(())
    }

    /// Moves the segmenter's outputs into the playout and the recording.
    pub fn drain(&mut self, hub: &Hub) {
        let mut outputs = Vec::new();
        while let Some(output) = self.segmenter.poll_output() {
            outputs.push(output);
        }
        if outputs.is_empty() {
            return;
        }
        let at = hub.now();
        let mut writes = Vec::new();
        let mut announced = Vec::new();
        let version = {
            let mut playout = self.playout.lock();
            for output in outputs {
                if let Some(a) = playout.apply(output, at, &mut writes) {
                    announced.push(a);
                }
            }
            if let Err(lost) = hub.write(&self.reservation_id, writes) {
                playout.disk_lost(&lost);
            }
            playout.version()
        };
        self.playout.notify(version);
        let done = Instant::now();
        for a in announced {
            hub.metrics().parts.inc();
            hub.metrics().part_latency.observe(
                done.saturating_duration_since(a.first_arrival)
                    .as_secs_f64(),
            );
        }
    }

    /// The connection ended: what is buffered goes out as a last part.
    pub fn finish(&mut self, hub: &Hub) {
        self.segmenter.flush(Instant::now());
        self.drain(hub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn track(kind: TrackKind) -> TrackSpec {
        TrackSpec {
            kind,
            media: String::new(),
            encoding_name: String::new(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: None,
            fmtp: None,
            control: None,
        }
    }

    fn frame(track: usize, keyframe: bool, len: usize) -> Frame {
        Frame {
            track,
            pts: 0,
            dts: 0,
            keyframe,
            data: Bytes::from(vec![0u8; len]),
            params: None,
        }
    }

    #[test]
    fn a_video_stream_without_keyframes_for_ten_seconds_is_stopped() {
        let mut watch = KeyframeWatch::new(&[track(TrackKind::Video), track(TrackKind::Audio)]);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Audio before any video starts nothing.
        watch.observe(at(0), &frame(1, true, 100)).unwrap();
        watch.observe(at(20_000), &frame(1, true, 100)).unwrap();
        // The first video frame starts the clock, keyframe or not.
        watch.observe(at(20_000), &frame(0, false, 100)).unwrap();
        watch.observe(at(30_000), &frame(0, false, 100)).unwrap();
        let err = watch.observe(at(30_001), &frame(1, true, 100)).unwrap_err();
        assert!(err.to_string().starts_with("no_keyframe"), "{err}");
        // A keyframe every 8 s is fine for a minute.
        let mut watch = KeyframeWatch::new(&[track(TrackKind::Video)]);
        for ms in (0..60_000).step_by(40) {
            let key = ms % 8_000 == 0;
            watch.observe(at(ms), &frame(0, key, 5_000)).unwrap();
        }
    }

    #[test]
    fn sixteen_mebibytes_without_a_keyframe_is_too_much() {
        let mut watch = KeyframeWatch::new(&[track(TrackKind::Video), track(TrackKind::Audio)]);
        let t0 = Instant::now();
        watch.observe(t0, &frame(0, true, 1_000)).unwrap();
        let mut sent = 0;
        let err = loop {
            // Audio counts too.
            match watch.observe(t0, &frame(sent % 2, false, 1 << 20)) {
                Ok(()) => sent += 1,
                Err(err) => break err,
            }
        };
        assert_eq!(sent, 16, "16 MiB pass, the next byte does not");
        assert!(matches!(err, StreamerError::NoKeyframe { bytes, .. } if bytes > KEYFRAME_BYTES));
    }

    #[test]
    fn an_audio_only_stream_is_not_held_to_keyframes() {
        let mut watch = KeyframeWatch::new(&[track(TrackKind::Audio)]);
        let t0 = Instant::now();
        for s in 0..100 {
            watch
                .observe(t0 + Duration::from_secs(s), &frame(0, false, 1 << 20))
                .unwrap();
        }
    }
}
