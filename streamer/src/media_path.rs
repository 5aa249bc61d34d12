//! The one media path: frames in, CMAF parts into the reservation's channel and recording.
//!
//! Contract: a pushed stream (RTP depacketized in `ingest`) and a pulled camera (`camera`)
//! feed the same [`MediaPath`] with the same [`Frame`]s. One `MediaPath` serves one
//! connection: a new connection (a publisher reconnecting, a camera pulled again) makes a new
//! one, whose first init segment becomes a discontinuity in the playlist. Media errors (a
//! corrupt frame, loss) are tolerated up to [`MEDIA_ERRORS_MAX`], then the connection goes.
//! No I/O of its own: the channel is memory, the recording is queued to the disk writer.

use std::sync::Arc;
use std::time::Instant;

use crate::hub::{ChannelHandle, Hub};
use crate::media::segmenter::{Segmenter, SegmenterConfig};
use crate::media::{CodecParams, Frame, TrackSpec};
use crate::StreamerError;

/// Media errors tolerated on one connection before it is dropped.
pub const MEDIA_ERRORS_MAX: u32 = 50;

pub struct MediaPath {
    reservation_id: String,
    segmenter: Segmenter,
    channel: Arc<ChannelHandle>,
    errors: u32,
}

impl MediaPath {
    /// A path for `tracks` (frames name their track by index into it).
    pub fn new(
        hub: &Hub,
        reservation_id: &str,
        tracks: &[TrackSpec],
        channel: Arc<ChannelHandle>,
    ) -> Self {
        let config = SegmenterConfig {
            segment_target: hub.config().segment_target,
            part_target: hub.config().part_target,
        };
        Self {
            reservation_id: reservation_id.to_string(),
            segmenter: Segmenter::new(config, tracks),
            channel,
            errors: 0,
        }
    }

    /// A track's parameters known before its first frame (from an SDP).
    pub fn set_params(&mut self, track: usize, params: CodecParams) {
        if let Err(err) = self.segmenter.set_params(track, params) {
            tracing::info!(reservation = %self.reservation_id, track, %err,
                "SDP parameters not usable; waiting for the media's own");
        }
    }

    /// One frame, which arrived at `now`. An error is the frame's own; pass it through
    /// [`MediaPath::tolerate`].
    pub fn push(&mut self, hub: &Hub, now: Instant, frame: Frame) -> Result<(), StreamerError> {
        hub.metrics().frames.inc();
        self.segmenter.push(now, frame)
    }

    /// Counts a media error; past [`MEDIA_ERRORS_MAX`] of them, returns it.
    pub fn tolerate(&mut self, result: Result<(), StreamerError>) -> Result<(), StreamerError> {
        let Err(err) = result else { return Ok(()) };
        self.errors += 1;
        tracing::debug!(reservation = %self.reservation_id, %err, "media error");
        if self.errors > MEDIA_ERRORS_MAX {
            return Err(err);
        }
        Ok(())
    }

    /// Moves the segmenter's outputs into the channel and the recording.
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
            let mut channel = self.channel.lock();
            for output in outputs {
                if let Some(a) = channel.apply(output, at, &mut writes) {
                    announced.push(a);
                }
            }
            if let Err(lost) = hub.write(&self.reservation_id, writes) {
                channel.disk_lost(&lost);
            }
            channel.version()
        };
        self.channel.notify(version);
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
