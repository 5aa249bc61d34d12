//! The segmenter against a real decoder: ffmpeg encodes 2 s of H.264 (25 fps, a keyframe
//! every second, no B-frames) and AAC; the test splits them into frames itself (Annex B →
//! length-prefixed access units, SPS/PPS → avcC; ADTS → raw AAC frames + AudioSpecificConfig),
//! pushes them through the segmenter in simulated arrival order, writes the init and segments
//! with a minimal VOD playlist, and has ffmpeg decode `index.m3u8`.
//!
//! Needs `ffmpeg` (with libx264) on the PATH; without it the test fails, it does not skip.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{decode, generate, write_hls, Scratch};
use slotcast_streamer::media::segmenter::{Segmenter, SegmenterConfig};
use slotcast_streamer::media::{CodecParams, Frame, TrackKind, TrackSpec};

/// Annex B byte stream → NAL units (without start codes).
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
        // A 4-byte start code's leading zero belongs to no NAL unit.
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(&stream[start..end]);
        }
    }
    nals
}

struct AccessUnit {
    keyframe: bool,
    /// Length-prefixed NAL units, parameter sets and delimiters left out (they go in avcC).
    data: Vec<u8>,
}

/// Groups NAL units into access units: one starts at a non-VCL unit (SEI, SPS, PPS, AUD)
/// or at a slice with `first_mb_in_slice == 0` once the current one holds a slice.
fn access_units<'a>(nals: &[&'a [u8]]) -> (Vec<AccessUnit>, Option<&'a [u8]>, Option<&'a [u8]>) {
    let (mut sps, mut pps) = (None, None);
    let mut units = Vec::new();
    let mut current = AccessUnit {
        keyframe: false,
        data: Vec::new(),
    };
    let mut has_slice = false;
    for nal in nals {
        let kind = nal[0] & 0x1f;
        let vcl = kind == 1 || kind == 5;
        let first_slice = vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (!vcl || first_slice) {
            units.push(std::mem::replace(
                &mut current,
                AccessUnit {
                    keyframe: false,
                    data: Vec::new(),
                },
            ));
            has_slice = false;
        }
        match kind {
            7 => sps = sps.or(Some(*nal)),
            8 => pps = pps.or(Some(*nal)),
            9 => {}
            _ => {
                current
                    .data
                    .extend_from_slice(&(nal.len() as u32).to_be_bytes());
                current.data.extend_from_slice(nal);
            }
        }
        if vcl {
            has_slice = true;
            current.keyframe |= kind == 5;
        }
    }
    if has_slice {
        units.push(current);
    }
    (units, sps, pps)
}

fn avcc(sps: &[u8], pps: &[u8]) -> Bytes {
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    v.extend_from_slice(pps);
    v.into()
}

/// ADTS stream → (raw AAC frames, AudioSpecificConfig).
fn adts_frames(stream: &[u8]) -> (Vec<Bytes>, [u8; 2]) {
    let mut frames = Vec::new();
    let mut asc = [0; 2];
    let mut i = 0;
    while i + 7 <= stream.len() {
        let h = &stream[i..i + 7];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync at {i}");
        let header_len = if h[1] & 0x01 == 1 { 7 } else { 9 };
        let object_type = (h[2] >> 6) + 1;
        let freq_index = (h[2] >> 2) & 0x0f;
        let channels = ((h[2] & 0x01) << 2) | (h[3] >> 6);
        let frame_len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        asc = [
            (object_type << 3) | (freq_index >> 1),
            ((freq_index & 1) << 7) | (channels << 3),
        ];
        frames.push(Bytes::copy_from_slice(
            &stream[i + header_len..i + frame_len],
        ));
        i += frame_len;
    }
    (frames, asc)
}

fn spec(kind: TrackKind, clock_rate: u32) -> TrackSpec {
    TrackSpec {
        kind,
        media: if kind == TrackKind::Video {
            "video"
        } else {
            "audio"
        }
        .into(),
        encoding_name: if kind == TrackKind::Video {
            "H264"
        } else {
            "MPEG4-GENERIC"
        }
        .into(),
        payload_type: 96,
        clock_rate,
        channels: (kind == TrackKind::Audio).then_some(2),
        fmtp: None,
        control: None,
    }
}

#[test]
fn ffmpeg_decodes_what_the_segmenter_writes() {
    let scratch = Scratch::new("segmenter-ffmpeg");
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
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-bf",
            "0",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "h264",
            "video.h264",
        ],
    );
    generate(
        dir,
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "2",
            "-ac",
            "2",
            "-c:a",
            "aac",
            "-f",
            "adts",
            "audio.aac",
        ],
    );
    let h264 = std::fs::read(dir.join("video.h264")).expect("read video");
    let nals = nal_units(&h264);
    let (units, sps, pps) = access_units(&nals);
    let (sps, pps) = (sps.expect("an SPS"), pps.expect("a PPS"));
    assert_eq!(units.len(), 50, "2 s at 25 fps");
    assert_eq!(units.iter().filter(|u| u.keyframe).count(), 2);
    let aac = std::fs::read(dir.join("audio.aac")).expect("read audio");
    let (audio, asc) = adts_frames(&aac);
    assert!(audio.len() > 90, "{} AAC frames", audio.len());

    let video_params = CodecParams::H264 {
        avcc: avcc(sps, pps),
        width: 160,
        height: 120,
        codec: format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]),
    };
    let audio_params = CodecParams::Aac {
        asc: Bytes::copy_from_slice(&asc),
        sample_rate: 48_000,
        channels: 2,
        codec: format!("mp4a.40.{}", asc[0] >> 3),
    };
    let mut seg = Segmenter::new(
        SegmenterConfig::default(),
        &[
            spec(TrackKind::Video, 90_000),
            spec(TrackKind::Audio, 48_000),
        ],
    );

    // Frames in arrival order: video i at 40 ms × i, audio j at 1024 / 48 kHz × j, with
    // unrelated RTP timestamp bases.
    let t0 = Instant::now();
    let video_at = |i: usize| Duration::from_millis(40 * i as u64);
    let audio_at = |j: usize| Duration::from_micros(j as u64 * 1024 * 1_000_000 / 48_000);
    let mut frames = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let dts = 123_456 + i as i64 * 3600;
        frames.push((
            video_at(i),
            Frame {
                track: 0,
                pts: dts,
                dts,
                keyframe: unit.keyframe,
                data: Bytes::from(unit.data.clone()),
                params: (i == 0).then(|| video_params.clone()),
            },
        ));
    }
    for (j, data) in audio.iter().enumerate() {
        let dts = 987_654 + j as i64 * 1024;
        frames.push((
            audio_at(j),
            Frame {
                track: 1,
                pts: dts,
                dts,
                keyframe: false,
                data: data.clone(),
                params: (j == 0).then(|| audio_params.clone()),
            },
        ));
    }
    frames.sort_by_key(|(at, f)| (*at, f.track));

    let mut outputs = Vec::new();
    let mut last = t0;
    for (at, frame) in frames {
        last = t0 + at;
        seg.push(last, frame).expect("push");
        outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    }
    seg.flush(last);
    outputs.extend(std::iter::from_fn(|| seg.poll_output()));

    let written = write_hls(dir, &outputs);
    let codecs = format!("avc1.{:02x}{:02x}{:02x},mp4a.40.2", sps[1], sps[2], sps[3]);
    assert_eq!(written.inits, [codecs]);
    assert_eq!(written.segments, 2, "{}", written.playlist);
    assert_eq!(written.unfinished, 0, "flush ended the last segment");

    let (video, audio_frames) = decode(dir);
    assert_eq!(video.len(), 50, "video frames decoded");
    assert!(
        video.windows(2).all(|w| w[1] > w[0]),
        "video pts strictly increasing: {video:?}"
    );
    assert!(audio_frames >= 90, "{audio_frames} audio frames decoded");
}
