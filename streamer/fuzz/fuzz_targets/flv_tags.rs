//! FLV tags as an RTMP publisher sends them, arbitrary: the first tag of each kind that is a
//! sequence header describes the tracks (as the probe does), the rest go through the framer.
//! Input: records of a kind byte (bit 0: video), a 32-bit timestamp, a 16-bit length and the
//! body. Frames are what the segmenter takes: video as 4-byte-length NAL units covering the
//! sample exactly, audio a non-empty raw frame, the parameters on each track's first frame.
#![no_main]

use bytes::Bytes;
use slotcast_streamer::rtmp::flv::{parse_audio, parse_video, AudioTag, FlvFramer, VideoTag};

fn tags(mut data: &[u8]) -> Vec<(bool, u32, Bytes)> {
    let mut out = Vec::new();
    while data.len() >= 7 {
        let video = data[0] & 1 == 1;
        let ts = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let len = usize::from(u16::from_be_bytes([data[5], data[6]]));
        let end = (7 + len).min(data.len());
        out.push((video, ts, Bytes::copy_from_slice(&data[7..end])));
        data = &data[end..];
    }
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let tags = tags(data);
    let avcc = tags
        .iter()
        .find_map(|(video, _, body)| match parse_video(body) {
            Ok(VideoTag::AvcHeader(record)) if *video => Some(record),
            _ => None,
        });
    let asc = tags
        .iter()
        .find_map(|(video, _, body)| match parse_audio(body) {
            Ok(AudioTag::AacHeader(asc)) if !*video => Some(asc),
            _ => None,
        });
    let Ok(mut framer) = FlvFramer::new(avcc.as_ref(), asc.as_ref()) else {
        return;
    };
    let (specs, params) = framer.tracks();
    assert_eq!(specs.len(), params.len());
    let mut seen = vec![false; specs.len()];
    for (video, ts, body) in tags {
        let framed = if video {
            framer.video(ts, &body)
        } else {
            framer.audio(ts, &body)
        };
        let Ok(Some(frame)) = framed else { continue };
        assert!(frame.track < specs.len());
        assert!(frame.params.is_some() || seen[frame.track], "params first");
        seen[frame.track] = true;
        assert!(!frame.data.is_empty());
        if specs[frame.track].clock_rate == 90_000 {
            let mut at = 0;
            while at < frame.data.len() {
                let len = frame.data.get(at..at + 4).expect("a whole length");
                at += 4 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            }
            assert_eq!(at, frame.data.len(), "NAL lengths cover the sample exactly");
        }
    }
});
