//! Opus in the segmenter's fMP4 (the `Opus` sample entry with its `dOps`) against a real
//! decoder: ffmpeg's libopus encodes 2 s of a tone (stereo, 20 ms frames, as WebRTC's Opus
//! is sent), the test takes the packets out of the Ogg pages and pushes them through the
//! segmenter as the WHIP edge does (one packet a frame, stamped at 48 kHz), writes the
//! segments with a VOD playlist, and ffmpeg must decode every packet without a word, ffprobe
//! seeing Opus at 48 kHz in two channels.
//!
//! Needs `ffmpeg` and `ffprobe` (with libopus) on the PATH; without them the test fails, it
//! does not skip.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{generate, write_hls, Scratch};
use slotcast_streamer::media::segmenter::{Segmenter, SegmenterConfig};
use slotcast_streamer::media::{CodecParams, Frame, TrackKind, TrackSpec};

/// The packets of an Ogg stream (RFC 3533): each page's segment table cut into packets, a
/// packet continued across pages joined.
fn ogg_packets(mut ogg: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut open = Vec::new();
    while !ogg.is_empty() {
        assert_eq!(&ogg[..4], b"OggS", "an Ogg page");
        let count = usize::from(ogg[26]);
        let table = &ogg[27..27 + count];
        let mut body = &ogg[27 + count..];
        for &lacing in table {
            let len = usize::from(lacing);
            open.extend_from_slice(&body[..len]);
            body = &body[len..];
            if lacing < 255 {
                packets.push(std::mem::take(&mut open));
            }
        }
        let page = 27 + count + table.iter().map(|&l| usize::from(l)).sum::<usize>();
        ogg = &ogg[page..];
    }
    packets
}

#[test]
fn ffmpeg_decodes_every_opus_packet_of_the_segmenters_fmp4() {
    let scratch = Scratch::new("opus-ffmpeg");
    let dir = &scratch.0;
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
            "libopus",
            "-frame_duration",
            "20",
            "out.opus",
        ],
    );
    let ogg = std::fs::read(dir.join("out.opus")).expect("read the Ogg");
    let packets = ogg_packets(&ogg);
    assert!(packets[0].starts_with(b"OpusHead") && packets[1].starts_with(b"OpusTags"));
    let audio = &packets[2..];
    assert!(audio.len() >= 99, "{} packets", audio.len());

    let track = TrackSpec {
        kind: TrackKind::Audio,
        media: "audio".into(),
        encoding_name: "OPUS".into(),
        payload_type: 111,
        clock_rate: 48_000,
        channels: Some(2),
        fmtp: None,
        control: None,
    };
    let params = CodecParams::Opus {
        channels: 2,
        pre_skip: 0,
        codec: "opus".into(),
    };
    let mut seg = Segmenter::new(SegmenterConfig::default(), &[track]);
    let mut outputs = Vec::new();
    let t0 = Instant::now();
    for (i, packet) in audio.iter().enumerate() {
        // A random RTP start, as a publisher's is; 960 samples a packet.
        let ts = 1_234_567 + 960 * i as i64;
        let frame = Frame {
            track: 0,
            pts: ts,
            dts: ts,
            keyframe: true,
            data: Bytes::copy_from_slice(packet),
            params: (i == 0).then(|| params.clone()),
        };
        seg.push(t0 + Duration::from_millis(20 * i as u64), frame)
            .expect("an Opus frame");
        outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    }
    seg.flush(t0 + Duration::from_secs(3));
    outputs.extend(std::iter::from_fn(|| seg.poll_output()));
    let written = write_hls(dir, &outputs);
    assert_eq!(written.inits, ["opus"], "the playlist's CODECS");
    assert!(written.segments >= 2, "{}", written.playlist);

    let probe = Command::new("ffprobe")
        .current_dir(dir)
        .args(["-v", "error", "-show_entries"])
        .args(["stream=codec_name,sample_rate,channels", "-of", "csv=p=0"])
        .arg("init.mp4")
        .output()
        .expect("ffprobe (with ffmpeg) on the PATH");
    let described = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(described.trim(), "opus,48000,2", "ffprobe: {described}");

    let out = common::ffmpeg(
        dir,
        &["-v", "error", "-i", "index.m3u8", "-f", "framemd5", "-"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg complained: {stderr}");
    let decoded = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count();
    assert_eq!(decoded, audio.len(), "every packet decoded");
}
