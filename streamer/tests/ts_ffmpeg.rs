//! The SRT path's MPEG-TS framing against a real encoder: ffmpeg writes 2 s of H.264 and AAC
//! as MPEG-TS (what it sends over SRT, packet for packet), the test takes it apart with
//! `TsDemux`, frames it with `TsFramer` as the SRT edge does, pushes the frames through the
//! segmenter on a shared clock in simulated arrival order, writes the segments with a VOD
//! playlist and has ffmpeg decode every frame. Without B-frames, with two (OBS's x264
//! default), and as the tests' live publishers encode (ultrafast, zerolatency: sliced).
//!
//! Needs `ffmpeg` (with libx264) on the PATH; without it the test fails, it does not skip.

mod common;

use std::time::{Duration, Instant};

use common::{decode, generate, write_hls, Scratch};
use slotcast_streamer::media::segmenter::{Segmenter, SegmenterConfig};
use slotcast_streamer::mpegts::demux::{TsDemux, PACKET};
use slotcast_streamer::mpegts::framer::TsFramer;

/// ffmpeg's MPEG-TS with these x264 options, framed, segmented and decoded back: (video pts
/// decoded, audio frames decoded).
fn round_trip(x264: &[&str]) -> (Vec<i64>, usize) {
    let scratch = Scratch::new("ts-ffmpeg");
    let dir = &scratch.0;
    let mut args = vec![
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
    ];
    args.extend_from_slice(x264);
    args.extend_from_slice(&["-c:a", "aac", "-ac", "2", "-f", "mpegts", "out.ts"]);
    generate(dir, &args);
    let ts = std::fs::read(dir.join("out.ts")).expect("read the TS");

    let mut demux = TsDemux::new();
    let mut framer: Option<TsFramer> = None;
    let mut seg: Option<Segmenter> = None;
    let mut held = Vec::new();
    let mut outputs = Vec::new();
    let t0 = Instant::now();
    let mut last = t0;
    // Seven packets a message, as SRT carries them.
    for message in ts.chunks(7 * PACKET) {
        demux.push(message).expect("ffmpeg's own TS");
        while let Some(unit) = demux.pop() {
            let streams = demux.streams().to_vec();
            let framer = framer.get_or_insert_with(|| TsFramer::new(&streams));
            let track = streams.iter().position(|k| *k == unit.kind).unwrap();
            held.extend(framer.frames(track, &unit).expect("frames"));
            if seg.is_none() {
                if let Some(specs) = framer.tracks() {
                    let config = SegmenterConfig {
                        shared_clock: true,
                        ..SegmenterConfig::default()
                    };
                    let mut made = Segmenter::new(config, &specs);
                    // Every track described before the first frame, as the SRT edge does.
                    for (track, params) in framer.params().unwrap().into_iter().enumerate() {
                        made.set_params(track, params).expect("params");
                    }
                    seg = Some(made);
                }
            }
            let Some(seg) = seg.as_mut() else { continue };
            for frame in held.drain(..) {
                last = t0 + Duration::from_millis(u64::try_from(unit.dts / 90).unwrap_or(0));
                seg.push(last, frame)
                    .expect("the segmenter takes every frame");
                outputs.extend(std::iter::from_fn(|| seg.poll_output()));
            }
        }
    }
    let mut seg = seg.expect("tracks described");
    seg.flush(last);
    outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    let written = write_hls(dir, &outputs);
    assert_eq!(
        written.inits.len(),
        1,
        "{:?} {}",
        written.inits,
        written.playlist
    );
    decode(dir)
}

#[test]
fn ffmpeg_ts_is_framed_segmented_and_decodes_whole() {
    for x264 in [
        &["-bf", "0"][..],
        &["-profile:v", "high", "-bf", "2"],
        &[
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
        ],
    ] {
        let (video, audio) = round_trip(x264);
        // The last video PES has no successor to end it: 49 of 50.
        assert!(
            video.len() >= 49,
            "{x264:?}: {} video frames decoded",
            video.len()
        );
        let mut presented = video.clone();
        presented.sort_unstable();
        presented.dedup();
        assert_eq!(presented.len(), video.len(), "{x264:?}: {video:?}");
        assert!(audio >= 90, "{x264:?}: {audio} audio frames decoded");
    }
}
