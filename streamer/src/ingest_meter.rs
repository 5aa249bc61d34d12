//! What one playout has received: its frames, and its ingest bitrate over the last few
//! seconds, for `/hls/<id>/status.json` (the watch page and the console poll it).
//!
//! Contract: sans-IO, monotonic instants passed in. A frame costs a few additions into a
//! fixed ring of one-second buckets; reading the bitrate sums the ring. Bytes are the media's
//! own (the frames as the media path takes them), not the transport's headers.

use std::time::{Duration, Instant};

/// The bitrate is what arrived over this many seconds, the current one included.
pub const WINDOW_S: u64 = 5;

/// One bucket per second of the window.
const BUCKETS: usize = WINDOW_S as usize;

#[derive(Debug)]
pub struct IngestMeter {
    /// Buckets count whole seconds from here.
    origin: Instant,
    frames: u64,
    /// The first frame's arrival: a window that starts before it is measured from it.
    first: Option<Instant>,
    /// `(second since origin, bytes in it)`, at that second modulo [`BUCKETS`].
    buckets: [(u64, u64); BUCKETS],
}

impl IngestMeter {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            frames: 0,
            first: None,
            buckets: [(0, 0); BUCKETS],
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    /// A frame of `bytes` arrived at `now`.
    pub fn record(&mut self, now: Instant, bytes: usize) {
        self.frames += 1;
        self.first.get_or_insert(now);
        let second = self.second(now);
        let bucket = &mut self.buckets[(second % WINDOW_S) as usize];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 = bucket.1.saturating_add(bytes as u64);
    }

    /// Frames received so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bits per second over the last [`WINDOW_S`] seconds up to `now` (from the first frame,
    /// if that came later; never over less than a second, so the first frames do not read
    /// as a burst). 0 before any frame and once they stop for the window.
    pub fn bitrate_bps(&self, now: Instant) -> u64 {
        let Some(first) = self.first else { return 0 };
        let second = self.second(now);
        let oldest = second.saturating_sub(WINDOW_S - 1);
        let bytes: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| (oldest..=second).contains(s))
            .map(|(_, b)| *b)
            .sum();
        let from = (self.origin + Duration::from_secs(oldest)).max(first);
        let span = now
            .saturating_duration_since(from)
            .max(Duration::from_secs(1));
        let bits = u128::from(bytes) * 8 * 1_000_000_000;
        u64::try_from(bits / span.as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn nothing_received_is_zero() {
        let t0 = Instant::now();
        let meter = IngestMeter::new(t0);
        assert_eq!((meter.frames(), meter.bitrate_bps(at(t0, 3_000))), (0, 0));
    }

    #[test]
    fn a_steady_stream_reads_as_its_rate() {
        let t0 = Instant::now();
        let mut meter = IngestMeter::new(t0);
        // 2 Mbit/s: 25 frames a second of 10,000 bytes, for a minute.
        for i in 0..1_500 {
            meter.record(at(t0, i * 40), 10_000);
        }
        assert_eq!(meter.frames(), 1_500);
        for now in [59_960, 59_999, 60_000, 60_020] {
            let bps = meter.bitrate_bps(at(t0, now));
            assert!(
                (1_900_000..=2_100_000).contains(&bps),
                "{bps} bit/s at {now} ms"
            );
        }
    }

    #[test]
    fn the_first_second_is_not_a_burst_and_a_short_stream_is_measured_from_its_start() {
        let t0 = Instant::now();
        let mut meter = IngestMeter::new(t0);
        // One 50 kB keyframe 10 ms after the playout began: 400 kbit over at least a second.
        meter.record(at(t0, 10), 50_000);
        assert_eq!(meter.bitrate_bps(at(t0, 20)), 400_000);
        // 1 Mbit/s for two seconds, starting at 3 s: measured over those two seconds, not five.
        let mut meter = IngestMeter::new(t0);
        for i in 0..50 {
            meter.record(at(t0, 3_000 + i * 40), 5_000);
        }
        let bps = meter.bitrate_bps(at(t0, 5_000));
        assert_eq!(bps, 1_000_000);
    }

    #[test]
    fn a_stream_that_stops_falls_to_zero_within_the_window() {
        let t0 = Instant::now();
        let mut meter = IngestMeter::new(t0);
        for i in 0..250 {
            meter.record(at(t0, i * 40), 10_000);
        }
        // Ten seconds of 2 Mbit/s, then silence: half the window still holds some of it...
        let half = meter.bitrate_bps(at(t0, 12_500));
        assert!((700_000..=1_300_000).contains(&half), "{half}");
        // ...and a window later none of it.
        assert_eq!(meter.bitrate_bps(at(t0, 10_000 + WINDOW_S * 1_000)), 0);
        assert_eq!(meter.frames(), 250, "the frames stay counted");
        // It picks up again; a bucket left from ten seconds before is not counted.
        meter.record(at(t0, 20_100), 1_000);
        let bps = meter.bitrate_bps(at(t0, 20_500));
        assert_eq!(bps, 8_000 * 1_000 / 4_500, "1 kB over the 4.5 s since 16 s");
    }
}
