//! The muxer's packets, checked by hand and by ffmpeg reading them back.

use super::*;
use std::process::Command;

#[test]
fn the_tables_crc_is_mpeg2s() {
    // The CRC-32/MPEG-2 check value.
    assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
}

#[test]
fn a_timestamp_is_written_in_pes_form() {
    let mut out = Vec::new();
    timestamp(&mut out, 0x2, 0x1_2345_6789);
    // 33 bits in 3 + 15 + 15, each group followed by a marker bit.
    let t = (u64::from(out[0] >> 1 & 0x07) << 30)
        | (u64::from(u16::from_be_bytes([out[1], out[2]]) >> 1) << 15)
        | u64::from(u16::from_be_bytes([out[3], out[4]]) >> 1);
    assert_eq!((out[0] >> 4, t), (0x2, 0x1_2345_6789));
}

#[test]
fn every_size_of_payload_fills_whole_packets() {
    for len in [0, 1, 170, 175, 176, 177, 182, 183, 184, 185, 368, 1000] {
        for (pcr, random_access) in [(None, false), (Some(90_000), true), (None, true)] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            let mut cc = 0;
            packetize(&mut out, 0x100, &mut cc, &data, pcr, random_access);
            assert_eq!(out.len() % PACKET, 0, "{len} {pcr:?}");
            // The payloads, after each adaptation field, are the data again.
            let mut back = Vec::new();
            for p in out.chunks(PACKET) {
                assert_eq!(p[0], 0x47);
                let start = match p[3] >> 4 & 0x03 {
                    0b01 => 4,
                    0b11 => 5 + usize::from(p[4]),
                    other => panic!("adaptation field control {other}"),
                };
                back.extend_from_slice(&p[start..]);
            }
            assert_eq!(back, data, "{len} {pcr:?} {random_access}");
        }
    }
}

/// A 2 s clip (H.264 without B-frames, AAC), sent through the muxer into a file.
fn muxed_clip(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let clip = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t", "2", "-c:v", "libx264", "-bf", "0", "-g", "25", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac"])
        .arg(&clip)
        .status()
        .expect("ffmpeg runs (scripts/services installs it)");
    assert!(made.success());
    let mut source = super::super::open_file(&clip, false).unwrap();
    let mut mux = TsMuxer::new(&source.tracks).unwrap();
    let mut ts = Vec::new();
    let mut video = 0;
    while let Some(frame) = source.frames.blocking_recv() {
        let frame = frame.unwrap();
        if matches!(source.tracks[frame.track], Codec::H264 { .. }) {
            video += 1;
        }
        ts.extend(mux.frame(&frame));
    }
    let path = dir.join("clip.ts");
    std::fs::write(&path, ts).unwrap();
    (path, video)
}

#[test]
fn ffmpeg_reads_back_every_frame_of_both_tracks_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ts, video) = muxed_clip(dir.path());
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args(["stream=codec_name,nb_read_frames", "-of", "csv=p=0"])
        .arg(&ts)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&probe.stdout).to_string();
    let errors = String::from_utf8_lossy(&probe.stderr).to_string();
    assert!(errors.trim().is_empty(), "ffprobe: {errors}");
    // Each stream is listed under its program too: the same lines again.
    let mut streams: Vec<&str> = shown.lines().filter(|l| !l.trim().is_empty()).collect();
    streams.dedup();
    streams.truncate(2);
    assert_eq!(streams[0], format!("h264,{video}"), "{shown}");
    assert!(streams[1].starts_with("aac,"), "{shown}");
    let decoded = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&ts)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decoded.stderr).to_string();
    assert!(
        decoded.status.success() && errors.trim().is_empty(),
        "{errors}"
    );
}

#[test]
fn aac_that_adts_cannot_describe_is_refused() {
    let he_aac = Codec::Aac {
        config: vec![0x2b, 0x92, 0x08, 0x00],
        sample_rate: 24_000,
        channels: 2,
    };
    assert!(TsMuxer::new(&[he_aac]).is_err());
    let lc = Codec::Aac {
        config: vec![0x11, 0x90],
        sample_rate: 48_000,
        channels: 2,
    };
    assert_eq!(adts_fixed(&[0x11, 0x90]).unwrap(), [0xff, 0xf1, 0x4c, 0x80]);
    assert!(TsMuxer::new(&[lc]).is_ok());
}
