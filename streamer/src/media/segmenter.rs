//! CMAF fMP4 segmenter for LL-HLS, sans-IO.
//!
//! Contract: [`Segmenter::push`] takes one [`Frame`] and the instant it arrived;
//! [`Segmenter::poll_output`] hands out, in order, the init segment (`ftyp`+`moov`), the parts
//! (`moof`+`mdat`, each self-contained) and segment ends, which the caller writes and feeds to
//! [`crate::playlist::Playlist`]. No clock, no files, no tokio. Memory is bounded: one open
//! part of at most [`MAX_PART_BYTES`] / [`MAX_PART_SAMPLES`], plus the outputs of one push
//! (at most a part, a segment end, an init and another part) if the caller polls after each.
//!
//! Timing rules:
//! - The primary track is the first video track, else the first audio track. Nothing is
//!   emitted before the primary's first keyframe with known params; frames before it are
//!   dropped (their params are remembered).
//! - A part closes when its primary duration, counting the newest frame with the previous
//!   frame interval as its duration, reaches `part_target` (less 1/16 of a frame, so that a
//!   tick of timestamp jitter does not add a whole frame). So it is published on the arrival
//!   of its last frame, and never exceeds `part_target` by more than a frame. A segment starts
//!   on a primary keyframe once the segment is `segment_target` long (same tolerance); that
//!   keyframe closes the open part early.
//! - Sample durations come from the next frame's dts; the last sample of each track in a part
//!   is published before its successor exists and gets the previous interval instead. `tfdt`
//!   is always exact (from dts), so a wrong estimate leaves a gap or overlap of the estimate's
//!   error at the next part, never a drift.
//! - Timeline: the primary's first keyframe is decode time 0 (after a [`Segmenter::flush`]
//!   and restart, the end of the previous run, so time never goes back). Other tracks have no
//!   common clock with it (no RTCP sender reports reach us), so each is anchored by arrival:
//!   its first accepted frame gets the primary's decode time at that instant (the primary's
//!   last frame time plus the wall time since it arrived). After that every track follows its
//!   own dts exactly. Alignment is therefore as good as the arrival jitter between tracks.
//!   Unless [`SegmenterConfig::shared_clock`]: the publisher stamps every track from one clock
//!   (RTMP's milliseconds), so a track is placed by its timestamps, whenever it arrives: its
//!   decode time is the primary's at the same instant of that clock. A frame of another track
//!   stamped before the primary's first keyframe is dropped, as frames before it always are.
//! - Audio in the init: the init is emitted just before the first part is, and holds every
//!   track whose params are known by then; so audio whose first frame arrives before the
//!   first part closes (within ~`part_target` of the keyframe) is in it, and video is never
//!   held back waiting for audio. A track whose params first arrive later, or change, is left
//!   out (its frames dropped) until the next primary keyframe, where the segment is cut early
//!   and a new [`SegmenterOutput::Init`] including it is emitted (the caller starts a
//!   discontinuity). A primary params change on a keyframe does the same at once; on a
//!   non-keyframe, the segment ends there and frames are dropped until the next keyframe.

mod boxes;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mp4_atom::Codec;

use crate::media::{CodecParams, Frame, Pieces, TrackKind, TrackSpec};
use crate::StreamerError;

/// Sample data one part may hold; a frame that would exceed it closes the part first.
pub const MAX_PART_BYTES: usize = 8 << 20;
/// Samples (all tracks) one part may hold; reaching it closes the part. Far above what a
/// 200 ms part holds at any sane frame rate, it only bounds a stalled primary track (audio
/// keeps coming while video does not, so nothing else closes the part).
pub const MAX_PART_SAMPLES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub segment_target: Duration,
    pub part_target: Duration,
    /// Every track's timestamps come from one clock (each in its own rate): tracks are
    /// aligned by them, not by arrival. True for RTMP; false for RTP, whose tracks each start
    /// at a random timestamp.
    pub shared_clock: bool,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            segment_target: Duration::from_secs(1),
            part_target: Duration::from_millis(200),
            shared_clock: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmenterOutput {
    /// ftyp+moov for all tracks that have params. Emitted before the first part, and again
    /// when a track's params change or a track joins late (the caller then starts a
    /// discontinuity), and on the first part after a [`Segmenter::flush`].
    Init {
        data: Bytes,
        /// RFC 6381 codecs of the init's tracks, e.g. `avc1.64001f,mp4a.40.2`.
        codecs: String,
        resolution: Option<(u16, u16)>,
    },
    /// One LL-HLS part: a self-contained moof+mdat (every track's samples for that time
    /// span), as its header and the samples' own buffers. The segment file is the
    /// concatenation of its parts (no `styp`).
    Part {
        data: Pieces,
        duration: Duration,
        /// Starts with a video keyframe (always true when the primary track is audio).
        independent: bool,
        /// `now` of the earliest frame it holds.
        first_arrival: Instant,
        starts_segment: bool,
    },
    /// The segment holding the parts since the last SegmentEnd is complete.
    SegmentEnd,
}

struct Track {
    kind: TrackKind,
    /// The track's clock rate; 0 (a bad SDP) makes the track unusable.
    timescale: u32,
    /// The latest params seen and their validated sample entry.
    params: Option<(CodecParams, Codec)>,
    /// `(dts, decode time)`: maps this track's dts onto the output timeline.
    anchor: Option<(i64, i64)>,
    /// Decode time and arrival of the last accepted frame.
    last: Option<(i64, Instant)>,
    /// A frame of this track was dropped since the last accepted one: the next interval spans
    /// a gap and is no estimate of a frame's duration.
    gap: bool,
    /// The last frame interval, in ticks: the duration estimate for a part's last sample.
    interval: Option<i64>,
    /// Decode time just past the last sample emitted.
    end: i64,
}

impl Track {
    fn current_params(&self) -> Option<&CodecParams> {
        self.params.as_ref().map(|(p, _)| p)
    }

    /// Duration of a sample whose successor has not arrived.
    fn estimate(&self) -> i64 {
        self.interval
            .unwrap_or(match (self.kind, self.current_params()) {
                // An Opus frame is WebRTC's 20 ms: 960 at 48 kHz.
                (TrackKind::Audio, Some(CodecParams::Opus { .. })) => 960,
                // An AAC frame is 1024 samples; the timescale is the sample rate.
                (TrackKind::Audio, _) => 1024,
                // Only for a track's very first frame: a guess of 30 fps.
                (TrackKind::Video, _) => i64::from(self.timescale / 30).max(1),
            })
    }
}

struct Sample {
    decode_time: i64,
    /// Known once the track's next frame arrived.
    duration: Option<i64>,
    cts: i32,
    sync: bool,
    data: Bytes,
    arrival: Instant,
}

/// The part being built.
struct OpenPart {
    /// Per track index.
    samples: Vec<Vec<Sample>>,
    bytes: usize,
    count: usize,
}

impl OpenPart {
    fn new(tracks: usize) -> Self {
        Self {
            samples: (0..tracks).map(|_| Vec::new()).collect(),
            bytes: 0,
            count: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, track: usize, sample: Sample) {
        self.bytes += sample.data.len();
        self.count += 1;
        self.samples[track].push(sample);
    }

    fn drop_track(&mut self, track: usize) {
        for s in self.samples[track].drain(..) {
            self.bytes -= s.data.len();
            self.count -= 1;
        }
    }

    fn take(&mut self) -> Vec<Vec<Sample>> {
        self.bytes = 0;
        self.count = 0;
        let n = self.samples.len();
        std::mem::replace(&mut self.samples, (0..n).map(|_| Vec::new()).collect())
    }
}

pub struct Segmenter {
    config: SegmenterConfig,
    tracks: Vec<Track>,
    primary: Option<usize>,
    /// Past the primary's first keyframe (and not flushed since).
    running: bool,
    /// The params (and sample entry) of the current init, per track (`None`: not in it).
    init: Vec<Option<(CodecParams, Codec)>>,
    init_sent: bool,
    /// A track's params differ from the init: cut at the next primary keyframe.
    init_stale: bool,
    part: OpenPart,
    segment_open: bool,
    /// Decode time of the current segment's first primary frame.
    segment_start: Option<i64>,
    /// The last `mfhd` sequence number used.
    sequence: u32,
    /// Where the next run's timeline starts (the end of the previous run).
    origin: Duration,
    out: VecDeque<SegmenterOutput>,
}

impl Segmenter {
    /// Track indices in [`Frame::track`] refer to `tracks`; each track's timescale is its
    /// clock rate.
    pub fn new(config: SegmenterConfig, tracks: &[TrackSpec]) -> Self {
        let primary = tracks
            .iter()
            .position(|t| t.kind == TrackKind::Video)
            .or_else(|| tracks.iter().position(|t| t.kind == TrackKind::Audio));
        Self {
            config,
            tracks: tracks
                .iter()
                .map(|t| Track {
                    kind: t.kind,
                    timescale: t.clock_rate,
                    params: None,
                    anchor: None,
                    last: None,
                    gap: false,
                    interval: None,
                    end: 0,
                })
                .collect(),
            primary,
            running: false,
            init: vec![None; tracks.len()],
            init_sent: false,
            init_stale: false,
            part: OpenPart::new(tracks.len()),
            segment_open: false,
            segment_start: None,
            sequence: 0,
            origin: Duration::ZERO,
            out: VecDeque::new(),
        }
    }

    /// A track's parameters known before its first frame (from the publisher's SDP), so the
    /// first init describes it even if its media starts a little after the video: a player
    /// then never sees the track count change mid-stream. Frames carrying other parameters
    /// later still switch to a new init as usual.
    pub fn set_params(&mut self, track: usize, params: CodecParams) -> Result<(), StreamerError> {
        let Some(t) = self.tracks.get_mut(track) else {
            return Err(StreamerError::Mux(format!(
                "params for unknown track {track}"
            )));
        };
        if self.running || t.current_params() == Some(&params) {
            return Ok(());
        }
        let entry = boxes::sample_entry(&params)?;
        t.params = Some((params, entry));
        Ok(())
    }

    /// One frame, in decode order per track, with the instant it arrived. An error refuses
    /// that frame only (unknown track, bad params, dts not increasing, oversized); the
    /// segmenter carries on with the next.
    pub fn push(&mut self, now: Instant, frame: Frame) -> Result<(), StreamerError> {
        let idx = frame.track;
        let Some(track) = self.tracks.get_mut(idx) else {
            return Err(StreamerError::Mux(format!("frame for unknown track {idx}")));
        };
        if track.timescale == 0 {
            return Err(StreamerError::Mux(format!("track {idx} has clock rate 0")));
        }
        if frame.data.len() > MAX_PART_BYTES {
            return Err(StreamerError::Mux(format!(
                "track {idx}: frame of {} bytes exceeds the part limit of {MAX_PART_BYTES}",
                frame.data.len()
            )));
        }
        let offset = frame.pts.checked_sub(frame.dts).unwrap_or(i64::MAX);
        let cts = i32::try_from(offset).map_err(|_| {
            StreamerError::Mux(format!(
                "track {idx}: pts {} too far from dts {}",
                frame.pts, frame.dts
            ))
        })?;
        if let Some(params) = frame.params {
            if track.current_params() != Some(&params) {
                let entry = boxes::sample_entry(&params)?;
                track.params = Some((params, entry));
            }
        }
        let is_primary = self.primary == Some(idx);
        let sync = frame.keyframe || track.kind == TrackKind::Audio;

        if !self.running {
            if !(is_primary && sync && track.params.is_some()) {
                track.gap = true;
                return Ok(());
            }
            self.start(idx, frame.dts);
        }

        // Is the frame described by the init?
        let track = &self.tracks[idx];
        if self.init_params(idx) != track.current_params() {
            if !self.init_sent && self.init[idx].is_none() {
                // Joins before the init is out: it will be in it.
                self.init[idx] = track.params.clone();
            } else if is_primary && !sync {
                // New primary params on a frame that cannot start a segment.
                let closed = self.close_part();
                self.end_segment();
                self.running = false;
                self.tracks[idx].gap = true;
                return closed;
            } else {
                self.init_stale = true;
                if !is_primary {
                    self.tracks[idx].gap = true;
                    return Ok(());
                }
            }
        }
        if self.init[idx].is_none() {
            self.tracks[idx].gap = true;
            return Ok(());
        }

        let decode_time = match self.tracks[idx].anchor {
            // Out of range only for absurd timestamps; caught as "does not follow" below.
            Some((dts0, t0)) => frame
                .dts
                .checked_sub(dts0)
                .and_then(|d| d.checked_add(t0))
                .unwrap_or(-1),
            None => {
                let t0 = match self.shared_anchor(idx, frame.dts) {
                    Some(t0) => t0,
                    None => self.primary_clock(now, self.tracks[idx].timescale),
                };
                self.tracks[idx].anchor = Some((frame.dts, t0));
                t0
            }
        };
        if !is_primary && self.before_start(idx, decode_time) {
            // Stamped before the primary's first keyframe: like every frame before it.
            self.tracks[idx].gap = true;
            return Ok(());
        }
        let track = &mut self.tracks[idx];
        let previous = track.last.map(|(t, _)| t);
        if decode_time < 0 || previous.is_some_and(|p| decode_time <= p) {
            track.gap = true;
            return Err(StreamerError::Mux(format!(
                "track {idx}: dts {} does not follow the previous frame's",
                frame.dts
            )));
        }
        let interval = previous.map(|p| decode_time - p);
        if let (Some(interval), false) = (interval, track.gap) {
            track.interval = Some(interval);
        }
        track.gap = false;
        track.last = Some((decode_time, now));
        if let (Some(prev), Some(interval)) = (self.part.samples[idx].last_mut(), interval) {
            prev.duration = Some(interval);
        }

        // A part that cannot be written is lost, but the frame that closed it is kept: the
        // error is reported after it is in.
        let mut written = Ok(());
        if is_primary && sync {
            let due = match self.segment_start {
                None => false,
                Some(start) => {
                    let target = self.ticks(idx, self.config.segment_target);
                    self.init_stale || decode_time - start >= target - self.slack(idx)
                }
            };
            if due {
                written = self.cut();
            }
            if self.segment_start.is_none() {
                self.segment_start = Some(decode_time);
            }
        }

        if self.part.count + 1 > MAX_PART_SAMPLES
            || self.part.bytes + frame.data.len() > MAX_PART_BYTES
        {
            written = written.and(self.close_part());
        }
        self.part.push(
            idx,
            Sample {
                decode_time,
                duration: None,
                cts,
                sync,
                data: frame.data,
                arrival: now,
            },
        );

        if is_primary {
            if let (Some(first), Some(estimate)) = (
                self.part.samples[idx].first().map(|s| s.decode_time),
                self.tracks[idx].interval,
            ) {
                let target = self.ticks(idx, self.config.part_target);
                if (decode_time - first).saturating_add(estimate) >= target - self.slack(idx) {
                    written = written.and(self.close_part());
                }
            }
        }
        written
    }

    /// End of stream (publisher left, window closed): emit the pending part and end the
    /// segment. The segmenter may be fed again afterwards: it waits for a keyframe, emits a
    /// new init (the caller starts a discontinuity) and continues the timeline from where
    /// this run ended. `now` is not needed: everything pending is emitted as it is.
    pub fn flush(&mut self, _now: Instant) {
        if self.running {
            if let Err(err) = self.close_part() {
                tracing::warn!(%err, "segmenter: the last part could not be written");
            }
            self.end_segment();
        }
        self.running = false;
        self.part = OpenPart::new(self.tracks.len());
        self.origin = self
            .tracks
            .iter()
            .filter(|t| t.timescale > 0)
            .map(|t| ticks_to_duration(t.end, t.timescale))
            .max()
            .unwrap_or(self.origin);
        for track in &mut self.tracks {
            track.anchor = None;
            track.last = None;
            track.interval = None;
            track.gap = false;
        }
    }

    pub fn poll_output(&mut self) -> Option<SegmenterOutput> {
        self.out.pop_front()
    }

    /// The primary's first keyframe (or first after a flush or a primary params change).
    fn start(&mut self, primary: usize, dts: i64) {
        self.running = true;
        self.init = self.tracks.iter().map(|t| t.params.clone()).collect();
        self.init_sent = false;
        self.init_stale = false;
        self.segment_start = None;
        let origin = duration_to_ticks(self.origin, self.tracks[primary].timescale);
        let track = &mut self.tracks[primary];
        if track.anchor.is_none() {
            track.anchor = Some((dts, origin));
        }
    }

    fn init_params(&self, track: usize) -> Option<&CodecParams> {
        self.init[track].as_ref().map(|(p, _)| p)
    }

    /// On a shared clock, the decode time of track `idx`'s frame stamped `dts`: the primary's
    /// decode time at the same instant of the publisher's clock. `None` when the clock is not
    /// shared (or the primary has not started).
    fn shared_anchor(&self, idx: usize, dts: i64) -> Option<i64> {
        if !self.config.shared_clock {
            return None;
        }
        let primary = &self.tracks[self.primary?];
        let (primary_dts, primary_t0) = primary.anchor?;
        let offset = super::rescale_wide(
            i128::from(primary_t0) - i128::from(primary_dts),
            primary.timescale,
            self.tracks[idx].timescale,
        );
        i64::try_from(i128::from(dts) + offset).ok()
    }

    /// Whether `decode_time` (in track `idx`'s timescale) is before the primary's start in
    /// this run, on a shared clock.
    fn before_start(&self, idx: usize, decode_time: i64) -> bool {
        let Some(primary) = self.primary.filter(|_| self.config.shared_clock) else {
            return false;
        };
        let Some((_, start)) = self.tracks[primary].anchor else {
            return false;
        };
        let start = super::rescale_wide(
            i128::from(start),
            self.tracks[primary].timescale,
            self.tracks[idx].timescale,
        );
        i128::from(decode_time) < start
    }

    /// The primary's decode time at `now`, in `timescale`: where a track joining now starts.
    fn primary_clock(&self, now: Instant, timescale: u32) -> i64 {
        let Some((t, at)) = self.primary.and_then(|p| self.tracks[p].last) else {
            return 0;
        };
        let primary_scale = self.primary.map_or(1, |p| self.tracks[p].timescale);
        let nanos = i128::from(t) * 1_000_000_000 / i128::from(primary_scale)
            + now.saturating_duration_since(at).as_nanos() as i128;
        i64::try_from(nanos * i128::from(timescale) / 1_000_000_000).unwrap_or(i64::MAX)
    }

    fn ticks(&self, track: usize, d: Duration) -> i64 {
        duration_to_ticks(d, self.tracks[track].timescale)
    }

    /// Timestamp jitter tolerated when comparing durations with a target.
    fn slack(&self, track: usize) -> i64 {
        self.tracks[track].interval.unwrap_or(0) / 16
    }

    /// A primary keyframe starts a new segment: close the open part if it holds primary
    /// frames (otherwise its other-track samples open the new segment), end the segment and,
    /// if a track's params changed, switch to a new init.
    fn cut(&mut self) -> Result<(), StreamerError> {
        let closed = match self.primary {
            Some(p) if !self.part.samples[p].is_empty() => self.close_part(),
            _ => Ok(()),
        };
        self.end_segment();
        if self.init_stale {
            for (t, track) in self.tracks.iter().enumerate() {
                if self.init_params(t) != track.current_params() {
                    self.part.drop_track(t);
                }
            }
            self.init = self.tracks.iter().map(|t| t.params.clone()).collect();
            self.init_sent = false;
            self.init_stale = false;
        }
        self.segment_start = None;
        closed
    }

    fn end_segment(&mut self) {
        if self.segment_open {
            self.segment_open = false;
            self.out.push_back(SegmenterOutput::SegmentEnd);
        }
    }

    /// Emit the open part (preceded by the init if it is not out yet). On error the part's
    /// samples are dropped.
    fn close_part(&mut self) -> Result<(), StreamerError> {
        if self.part.is_empty() {
            return Ok(());
        }
        let samples = self.part.take();
        let init = if self.init_sent {
            None
        } else {
            Some(self.build_init()?)
        };

        let Some(first_arrival) = samples.iter().flatten().map(|s| s.arrival).min() else {
            return Ok(());
        };
        let mut runs = Vec::new();
        let mut ends = Vec::new();
        let mut duration = None;
        let mut longest = Duration::ZERO;
        let mut independent = self
            .primary
            .is_some_and(|p| self.tracks[p].kind == TrackKind::Audio);
        for (t, track_samples) in samples.iter().enumerate() {
            let Some(first) = track_samples.first() else {
                continue;
            };
            let track = &self.tracks[t];
            let mut total = 0i64;
            let mut frag = Vec::with_capacity(track_samples.len());
            for s in track_samples {
                let d = s.duration.unwrap_or_else(|| track.estimate());
                total = total.saturating_add(d);
                frag.push(boxes::FragSample {
                    duration: u32::try_from(d).map_err(|_| {
                        StreamerError::Mux(format!("track {t}: sample duration {d} out of range"))
                    })?,
                    flags: if s.sync {
                        boxes::SYNC_SAMPLE_FLAGS
                    } else {
                        boxes::NON_SYNC_SAMPLE_FLAGS
                    },
                    cts: s.cts,
                    data: &s.data,
                });
            }
            let span = ticks_to_duration(total, track.timescale);
            longest = longest.max(span);
            if self.primary == Some(t) {
                duration = Some(span);
                if track.kind == TrackKind::Video {
                    independent = first.sync;
                }
            }
            ends.push((t, first.decode_time.saturating_add(total)));
            runs.push(boxes::FragTrack {
                track_id: track_id(t),
                // Never negative: checked on push.
                base_decode_time: u64::try_from(first.decode_time).unwrap_or(0),
                samples: frag,
            });
        }
        self.sequence = self.sequence.wrapping_add(1);
        let data = boxes::fragment(self.sequence, &runs)?;

        if let Some(init) = init {
            self.out.push_back(init);
            self.init_sent = true;
        }
        for (t, end) in ends {
            self.tracks[t].end = end;
        }
        let starts_segment = !self.segment_open;
        self.segment_open = true;
        self.out.push_back(SegmenterOutput::Part {
            data,
            // A part without primary samples (a stalled primary, or the tail at a flush)
            // lasts as long as its longest track.
            duration: duration.unwrap_or(longest),
            independent,
            first_arrival,
            starts_segment,
        });
        Ok(())
    }

    fn build_init(&self) -> Result<SegmenterOutput, StreamerError> {
        let mut tracks = Vec::new();
        for (t, in_init) in self.init.iter().enumerate() {
            let Some((params, entry)) = in_init else {
                continue;
            };
            tracks.push(boxes::InitTrack {
                track_id: track_id(t),
                kind: self.tracks[t].kind,
                timescale: self.tracks[t].timescale,
                params,
                entry,
            });
        }
        let data = boxes::init_segment(&tracks)?;
        let codecs = tracks
            .iter()
            .map(|t| t.params.codec())
            .collect::<Vec<_>>()
            .join(",");
        let resolution = self.primary.and_then(|p| match self.init_params(p) {
            Some(CodecParams::H264 { width, height, .. })
            | Some(CodecParams::H265 { width, height, .. }) => Some((*width, *height)),
            _ => None,
        });
        Ok(SegmenterOutput::Init {
            data,
            codecs,
            resolution,
        })
    }
}

/// Track ids are the track's index + 1, stable across inits.
fn track_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

fn duration_to_ticks(d: Duration, timescale: u32) -> i64 {
    i64::try_from(d.as_nanos() * u128::from(timescale) / 1_000_000_000).unwrap_or(i64::MAX)
}

/// `ticks` at `from` ticks a second, at `to` ticks a second (rounded down).
fn ticks_to_duration(ticks: i64, timescale: u32) -> Duration {
    if timescale == 0 || ticks <= 0 {
        return Duration::ZERO;
    }
    let nanos = i128::from(ticks) * 1_000_000_000 / i128::from(timescale);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
