//! The RTMP core's FLV framing against a real encoder: ffmpeg writes 2 s of H.264 and AAC as
//! FLV (what it sends over RTMP, tag for tag), the test reads the tags and hands their bodies
//! to `FlvFramer` as the session does, pushes the frames through the segmenter on a shared
//! clock in simulated arrival order, writes the segments with a VOD playlist and has ffmpeg
//! decode every frame. Once without B-frames, once with two (OBS's x264 default has them).
//!
//! Needs `ffmpeg` (with libx264) on the PATH; without it the test fails, it does not skip.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{decode, generate, write_hls, Scratch};
use slotcast_streamer::media::segmenter::{Segmenter, SegmenterConfig};
use slotcast_streamer::rtmp::flv::{parse_audio, parse_video, AudioTag, FlvFramer, VideoTag};

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;

/// An FLV file's audio and video tags: (tag type, timestamp in ms, body).
fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Bytes)> {
    assert_eq!(&file[..3], b"FLV", "not an FLV file");
    let header = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    // After the header, the first PreviousTagSize (0).
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let kind = file[at];
        let size = u32::from_be_bytes([0, file[at + 1], file[at + 2], file[at + 3]]) as usize;
        // 24 bits, then the upper 8 bits.
        let ts = u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
        let body = Bytes::copy_from_slice(&file[at + 11..at + 11 + size]);
        if kind == AUDIO || kind == VIDEO {
            tags.push((kind, ts, body));
        }
        at += 11 + size + 4;
    }
    tags
}

/// ffmpeg's FLV of the test pattern (with `bframes` B-frames) and a tone, through the
/// framer and the segmenter, decoded back: (video pts decoded, audio frames decoded, video
/// frames whose pts was not their dts).
fn round_trip(bframes: &str) -> (Vec<i64>, usize, usize) {
    let scratch = Scratch::new("flv-ffmpeg");
    let dir = &scratch.0;
    generate(
        dir,
        &[
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
            "-profile:v",
            "high",
            "-bf",
            bframes,
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-f",
            "flv",
            "out.flv",
        ],
    );
    let tags = flv_tags(&std::fs::read(dir.join("out.flv")).expect("read the FLV"));
    // The sequence headers, as the session's probe finds them.
    let avcc = tags
        .iter()
        .find_map(|(kind, _, body)| match parse_video(body) {
            Ok(VideoTag::AvcHeader(record)) if *kind == VIDEO => Some(record),
            _ => None,
        });
    let asc = tags
        .iter()
        .find_map(|(kind, _, body)| match parse_audio(body) {
            Ok(AudioTag::AacHeader(asc)) if *kind == AUDIO => Some(asc),
            _ => None,
        });
    let mut framer = FlvFramer::new(avcc.as_ref(), asc.as_ref()).expect("the headers");
    let (specs, params) = framer.tracks();
    assert_eq!(specs.len(), 2, "video and audio");
    let config = SegmenterConfig {
        shared_clock: true,
        ..SegmenterConfig::default()
    };
    let mut seg = Segmenter::new(config, &specs);
    for (track, params) in params.into_iter().enumerate() {
        seg.set_params(track, params).expect("params");
    }

    // Tags in file order (as ffmpeg sends them), each arriving at its timestamp.
    let t0 = Instant::now();
    let mut outputs = Vec::new();
    let (mut keyframes, mut reordered, mut last_dts) = (0, 0, None);
    let mut last = t0;
    for (kind, ts, body) in tags {
        let framed = if kind == VIDEO {
            framer.video(ts, &body)
        } else {
            framer.audio(ts, &body)
        };
        let Some(frame) = framed.expect("a tag ffmpeg wrote") else {
            continue;
        };
        if frame.track == 0 {
            keyframes += usize::from(frame.keyframe);
            reordered += usize::from(frame.pts != frame.dts);
            assert!(last_dts < Some(frame.dts), "video dts strictly increasing");
            last_dts = Some(frame.dts);
        }
        last = t0 + Duration::from_millis(u64::from(ts));
        seg.push(last, frame)
            .expect("the segmenter takes every frame");
        outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    }
    seg.flush(last);
    outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    assert_eq!(keyframes, 2, "a keyframe a second, each an IDR");

    let written = write_hls(dir, &outputs);
    assert_eq!(written.inits.len(), 1, "{}", written.playlist);
    assert!(
        written.inits[0].ends_with(",mp4a.40.2"),
        "{:?}",
        written.inits
    );
    assert_eq!(written.segments, 2, "{}", written.playlist);
    let (video, audio) = decode(dir);
    (video, audio, reordered)
}

#[test]
fn ffmpeg_flv_without_b_frames_is_framed_segmented_and_decodes_whole() {
    let (video, audio, reordered) = round_trip("0");
    assert_eq!(reordered, 0);
    assert_eq!(video.len(), 50, "video frames decoded");
    assert!(video.windows(2).all(|w| w[1] > w[0]), "{video:?}");
    assert!(audio >= 90, "{audio} audio frames decoded");
}

#[test]
fn ffmpeg_flv_with_b_frames_keeps_their_composition_times() {
    let (video, audio, reordered) = round_trip("2");
    assert!(
        reordered > 20,
        "only {reordered} frames reordered: no B-frames?"
    );
    assert_eq!(video.len(), 50, "video frames decoded");
    // Decoded in decode order, presented in their own: every pts once, 40 ms apart.
    let mut presented = video.clone();
    presented.sort_unstable();
    presented.dedup();
    assert_eq!(presented.len(), 50, "{video:?}");
    let steps: Vec<i64> = presented.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.iter().all(|s| *s == steps[0]),
        "pts not evenly spaced: {presented:?}"
    );
    assert!(audio >= 90, "{audio} audio frames decoded");
}
