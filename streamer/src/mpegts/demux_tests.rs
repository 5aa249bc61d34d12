//! The demultiplexer on what ffmpeg sends over SRT (`-f mpegts`), and on what it must survive.

use super::*;
use std::process::Command;

/// 2 s of 25 fps H.264 (with B-frames, as OBS's x264 sends by default) and AAC, as MPEG-TS.
pub(crate) fn ffmpeg_ts(extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.ts");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(extra)
        .args(["-f", "mpegts"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/services installs it)");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn demux_all(ts: &[u8]) -> (Vec<Unit>, Vec<Kind>) {
    let mut demux = TsDemux::new();
    let mut units = Vec::new();
    // As SRT carries it: seven packets a message.
    for message in ts.chunks(7 * PACKET) {
        demux.push(message).unwrap();
        units.extend(std::iter::from_fn(|| demux.pop()));
    }
    (units, demux.streams().to_vec())
}

#[test]
fn ffmpegs_h264_and_aac_come_out_as_whole_units_with_their_timestamps() {
    let (units, streams) = demux_all(&ffmpeg_ts(&["-bf", "2"]));
    assert_eq!(streams, [Kind::H264, Kind::Aac]);
    let video: Vec<&Unit> = units.iter().filter(|u| u.kind == Kind::H264).collect();
    let audio: Vec<&Unit> = units.iter().filter(|u| u.kind == Kind::Aac).collect();
    // 50 frames; the last one's PES is unbounded, so it completes only with a next one.
    assert_eq!(video.len(), 49, "video units");
    for u in &video {
        assert!(u.data.starts_with(&[0, 0, 0, 1]) || u.data.starts_with(&[0, 0, 1]));
    }
    // Decode times go forward one frame (3600 ticks) at a time; B-frames are shown later.
    for pair in video.windows(2) {
        assert_eq!(pair[1].dts - pair[0].dts, 3600);
    }
    assert!(video.iter().all(|u| u.pts >= u.dts));
    assert!(
        video.iter().any(|u| u.pts > u.dts),
        "no B-frame reordering seen"
    );
    // ffmpeg packs several ADTS frames into one PES; every one starts with the ADTS sync.
    assert!(!audio.is_empty());
    for u in &audio {
        assert_eq!((u.data[0], u.data[1] & 0xf0), (0xff, 0xf0));
        assert_eq!(u.pts, u.dts);
    }
    // Audio PES have a known length: each is complete at its last byte, the last one too.
    let adts_frames: usize = audio.iter().map(|u| adts_count(&u.data)).sum();
    assert!(
        adts_frames >= 94,
        "{adts_frames} AAC frames of 2 s at 48 kHz"
    );
}

/// ADTS frames in `data`, by their headers' lengths.
fn adts_count(data: &[u8]) -> usize {
    let mut rest = data;
    let mut n = 0;
    while rest.len() >= 7 {
        let len = (usize::from(rest[3] & 0x03) << 11)
            | (usize::from(rest[4]) << 3)
            | usize::from(rest[5] >> 5);
        assert!(len >= 7 && len <= rest.len(), "a broken ADTS frame");
        rest = &rest[len..];
        n += 1;
    }
    n
}

#[test]
fn pes_headers_give_their_timestamps_and_payload() {
    // PTS 1 s and DTS 44768 ticks (flags 0b11), 10 bytes of header data, a known length
    // of 13 + 4.
    let pes = [
        0, 0, 1, 0xe0, 0, 17, 0x80, 0xc0, 10, 0x31, 0, 0x05, 0xbf, 0x21, 0x11, 0, 0x03, 0x5d, 0xc1,
        9, 9, 9, 9,
    ];
    let (pts, dts, start, payload) = pes_header(&pes).unwrap();
    assert_eq!((pts, dts, start, payload), (90_000, 44_768, 19, Some(4)));
    // No timestamps, or not a PES: none.
    assert_eq!(pes_header(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x00, 0]), None);
    assert_eq!(pes_header(&[0, 0, 2, 0xe0, 0, 0, 0x80, 0x80, 0]), None);
}

#[test]
fn timestamps_that_wrap_at_33_bits_keep_going_forward() {
    let mut es = Elementary::new(Kind::H264);
    let top = (1u64 << 33) - 3600;
    assert_eq!(es.unwrap(top), top as i64);
    assert_eq!(es.unwrap(0), 1 << 33);
    assert_eq!(es.unwrap(3600), (1 << 33) + 3600);
    // A step back (a B-frame's PTS would be, but DTS never): taken as such, not as a wrap.
    assert_eq!(es.unwrap(0), 1 << 33);
}

#[test]
fn input_that_is_not_transport_stream_packets_ends_it() {
    let mut demux = TsDemux::new();
    assert_eq!(demux.push(&[0x47; 100]), Err(TsError::NotPackets));
    // Once failed, it stays failed.
    assert_eq!(demux.push(&[0x47; PACKET]), Err(TsError::NotPackets));
    let mut demux = TsDemux::new();
    let mut not_sync = vec![0x47; PACKET];
    not_sync.extend([0x46; PACKET]);
    assert_eq!(demux.push(&not_sync), Err(TsError::NotPackets));
}

#[test]
fn noise_in_well_formed_packets_is_survived() {
    // Packets with the sync byte and anything after it: no panic, nothing grows unbounded.
    let mut demux = TsDemux::new();
    let mut state = 0x2545_f491_u32;
    for _ in 0..2_000 {
        let mut packet = [0u8; PACKET];
        for b in packet.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *b = state as u8;
        }
        packet[0] = 0x47;
        // Now and then the PAT's PID, so tables are parsed too.
        if state.is_multiple_of(7) {
            packet[1] = 0x40;
            packet[2] = 0;
        }
        if demux.push(&packet).is_err() {
            break;
        }
        while demux.pop().is_some() {}
    }
}
