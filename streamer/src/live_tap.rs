//! The live tap: a playout's frames as the publisher sends them, for viewers who take the
//! stream as it comes (WHEP, `crate::whep`) rather than as parts.
//!
//! Contract: the media path ([`crate::media_path::MediaPath`]) hands every frame of its first
//! video track and its first audio track to the reservation's [`LiveTap`], each with the
//! parameters that describe it, so a viewer joining mid-stream needs nothing else. The tap is
//! a bounded broadcast: a viewer who falls behind loses frames and is told how many
//! ([`broadcast::error::RecvError::Lagged`]); the publisher never waits for a viewer. While
//! nobody listens a frame costs one atomic load.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::media::{CodecParams, Frame, TrackKind, TrackSpec};

/// Frames a viewer may fall behind by before it loses some: about four seconds of 30 fps
/// video with its audio.
pub const TAP_FRAMES: usize = 256;

/// One frame on the tap.
#[derive(Debug)]
pub struct LiveFrame {
    pub kind: TrackKind,
    /// Which connection of the playout sent it: a publisher reconnecting (a new media path)
    /// starts its timestamps afresh.
    pub connection: u64,
    /// The track's clock: `pts` and `dts` count in it.
    pub clock_rate: u32,
    pub pts: i64,
    pub dts: i64,
    pub keyframe: bool,
    /// As the segmenter takes it: length-prefixed NAL units (video), one raw frame (audio).
    pub data: Bytes,
    /// What describes the track now (shared by every frame until it changes).
    pub params: Arc<CodecParams>,
}

/// A playout's tap. Cheap to share; one per playout.
#[derive(Debug)]
pub struct LiveTap {
    sender: broadcast::Sender<Arc<LiveFrame>>,
}

impl Default for LiveTap {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(TAP_FRAMES).0,
        }
    }
}

impl LiveTap {
    /// Frames from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveFrame>> {
        self.sender.subscribe()
    }

    /// Viewers listening now.
    pub fn viewers(&self) -> usize {
        self.sender.receiver_count()
    }

    fn send(&self, frame: LiveFrame) {
        // No receiver is not an error: nobody watches in real time.
        let _ = self.sender.send(Arc::new(frame));
    }
}

/// One tapped track of a media path: what it is and what describes it so far.
#[derive(Debug)]
struct Tapped {
    kind: TrackKind,
    clock_rate: u32,
    params: Option<Arc<CodecParams>>,
}

/// The media path's side of the tap: which of its tracks are tapped, and their parameters.
#[derive(Debug)]
pub struct TapFeed {
    connection: u64,
    /// Indexed by track; `None` for tracks not tapped.
    tracks: Vec<Option<Tapped>>,
}

impl TapFeed {
    /// For a connection's `tracks`: the first video and the first audio track are tapped.
    pub fn new(connection: u64, tracks: &[TrackSpec]) -> Self {
        let first = |kind| tracks.iter().position(|t| t.kind == kind);
        let tapped = [first(TrackKind::Video), first(TrackKind::Audio)];
        let tracks = tracks
            .iter()
            .enumerate()
            .map(|(idx, t)| {
                tapped.contains(&Some(idx)).then(|| Tapped {
                    kind: t.kind,
                    clock_rate: t.clock_rate,
                    params: None,
                })
            })
            .collect();
        Self { connection, tracks }
    }

    /// A track's parameters known before its first frame.
    pub fn set_params(&mut self, track: usize, params: &CodecParams) {
        if let Some(Some(t)) = self.tracks.get_mut(track) {
            t.params = Some(Arc::new(params.clone()));
        }
    }

    /// Hands `frame` to the tap's viewers, if there are any. A frame whose track has not been
    /// described yet is not: a viewer could not decode it.
    pub fn offer(&mut self, tap: &LiveTap, frame: &Frame) {
        let Some(Some(t)) = self.tracks.get_mut(frame.track) else {
            return;
        };
        if let Some(params) = &frame.params {
            if t.params.as_deref() != Some(params) {
                t.params = Some(Arc::new(params.clone()));
            }
        }
        let Some(params) = &t.params else { return };
        if tap.viewers() == 0 {
            return;
        }
        tap.send(LiveFrame {
            kind: t.kind,
            connection: self.connection,
            clock_rate: t.clock_rate,
            pts: frame.pts,
            dts: frame.dts,
            keyframe: frame.keyframe,
            data: frame.data.clone(),
            params: params.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: TrackKind, clock_rate: u32) -> TrackSpec {
        TrackSpec {
            kind,
            media: String::new(),
            encoding_name: String::new(),
            payload_type: 96,
            clock_rate,
            channels: None,
            fmtp: None,
            control: None,
        }
    }

    fn aac() -> CodecParams {
        CodecParams::Aac {
            asc: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44_100,
            channels: 2,
            codec: "mp4a.40.2".into(),
        }
    }

    fn frame(track: usize, pts: i64, params: Option<CodecParams>) -> Frame {
        Frame {
            track,
            pts,
            dts: pts,
            keyframe: true,
            data: Bytes::from_static(b"x"),
            params,
        }
    }

    #[test]
    fn viewers_get_the_first_video_and_audio_tracks_each_with_what_describes_it() {
        let tap = LiveTap::default();
        let tracks = [
            spec(TrackKind::Audio, 44_100),
            spec(TrackKind::Audio, 48_000),
            spec(TrackKind::Video, 90_000),
        ];
        let mut feed = TapFeed::new(7, &tracks);
        // Nobody listens: nothing is kept, but the parameters are noted.
        feed.offer(&tap, &frame(0, 0, Some(aac())));
        let mut viewer = tap.subscribe();
        // The audio track's later frames carry no parameters; the tap adds them.
        feed.offer(&tap, &frame(0, 1024, None));
        // The second audio track is not tapped; the video is not described yet.
        feed.offer(&tap, &frame(1, 0, Some(aac())));
        feed.offer(&tap, &frame(2, 0, None));
        let got = viewer.try_recv().unwrap();
        assert_eq!(
            (got.kind, got.connection, got.clock_rate, got.pts),
            (TrackKind::Audio, 7, 44_100, 1024)
        );
        assert_eq!(*got.params, aac());
        assert!(viewer.try_recv().is_err(), "nothing else was sent");
        // Parameters from the SDP describe the video before its first frame.
        feed.set_params(2, &aac());
        feed.offer(&tap, &frame(2, 3000, None));
        assert_eq!(viewer.try_recv().unwrap().kind, TrackKind::Video);
    }

    #[test]
    fn a_viewer_that_falls_behind_is_told_how_much_it_lost() {
        let tap = LiveTap::default();
        let mut feed = TapFeed::new(1, &[spec(TrackKind::Audio, 48_000)]);
        let mut viewer = tap.subscribe();
        for i in 0..TAP_FRAMES as i64 + 10 {
            feed.offer(&tap, &frame(0, i, Some(aac())));
        }
        assert!(matches!(
            viewer.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert_eq!(viewer.try_recv().unwrap().pts, 10);
    }
}
