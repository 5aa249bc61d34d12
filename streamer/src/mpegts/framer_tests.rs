//! The framer on what ffmpeg sends (`-f mpegts`), through the demultiplexer.

use super::super::demux::{tests::ffmpeg_ts, TsDemux};
use super::*;
use bytes::Bytes;

#[test]
fn ffmpegs_stream_becomes_described_tracks_and_frames_on_their_clocks() {
    described_on_their_clocks(&["-bf", "0"]);
    // As OBS's x264 sends by default, and as the test publishers do (ultrafast, zerolatency).
    described_on_their_clocks(&["-profile:v", "high", "-bf", "2"]);
    described_on_their_clocks(&["-preset", "ultrafast", "-tune", "zerolatency"]);
}

fn described_on_their_clocks(x264: &[&str]) {
    let ts = ffmpeg_ts(x264);
    let mut demux = TsDemux::new();
    demux.push(&ts).unwrap();
    let mut framer = TsFramer::new(demux.streams());
    let mut frames = Vec::new();
    while let Some(unit) = demux.pop() {
        let track = demux
            .streams()
            .iter()
            .position(|k| *k == unit.kind)
            .unwrap();
        frames.extend(framer.frames(track, &unit).unwrap());
    }
    let tracks = framer.tracks().expect("both tracks described");
    assert_eq!(
        tracks
            .iter()
            .map(|t| (t.encoding_name.as_str(), t.clock_rate, t.channels))
            .collect::<Vec<_>>(),
        [("H264", 90_000, None), ("MPEG4-GENERIC", 48_000, Some(1))]
    );

    let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 0).collect();
    let audio: Vec<&Frame> = frames.iter().filter(|f| f.track == 1).collect();
    assert_eq!(video.len(), 49);
    assert!(video[0].keyframe, "the stream starts at a keyframe");
    match &video[0].params {
        Some(CodecParams::H264 { width, height, .. }) => assert_eq!((*width, *height), (320, 240)),
        other => panic!("the first frame describes the track: {other:?}"),
    }
    assert!(video[1..].iter().all(|f| f.params.is_none()), "said once");
    // A keyframe a second (-g 25), each with an IDR slice.
    let keyframes: Vec<usize> = (0..video.len()).filter(|&i| video[i].keyframe).collect();
    assert_eq!(keyframes, [0, 25]);
    // Samples are 4-byte-length NAL units, none a parameter set or a delimiter.
    for f in &video {
        let mut at = 0;
        while at < f.data.len() {
            let len = u32::from_be_bytes(f.data[at..at + 4].try_into().unwrap()) as usize;
            assert!(![7, 8, 9].contains(&(f.data[at + 4] & 0x1f)));
            at += 4 + len;
        }
        assert_eq!(at, f.data.len());
    }
    // AAC frames one after another on the 48 kHz clock, exactly.
    assert!(audio.len() > 80, "{} audio frames in 2 s", audio.len());
    assert!(matches!(
        audio[0].params,
        Some(CodecParams::Aac {
            sample_rate: 48_000,
            ..
        })
    ));
    for pair in audio.windows(2) {
        assert_eq!(pair[1].pts - pair[0].pts, 1024);
    }
}

#[test]
fn aac_outside_adts_and_frames_past_their_packet_are_errors() {
    let mut framer = TsFramer::new(&[Kind::Aac]);
    let unit = |data: &'static [u8]| Unit {
        kind: Kind::Aac,
        pts: 0,
        dts: 0,
        data: Bytes::from_static(data),
    };
    assert!(framer.frames(0, &unit(&[1, 2, 3, 4, 5, 6, 7, 8])).is_err());
    // An ADTS header saying 100 bytes, in 9.
    assert!(framer
        .frames(0, &unit(&[0xff, 0xf1, 0x4c, 0x80, 0x0c, 0x9f, 0xfc, 0, 0]))
        .is_err());
}
