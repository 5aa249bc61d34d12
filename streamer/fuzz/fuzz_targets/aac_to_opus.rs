//! WHEP's audio transcoder fed what a publisher controls: an AudioSpecificConfig and AAC
//! frames, arbitrary. A config is refused with words or taken; every frame transcodes or is
//! refused with words, never a panic (symphonia decodes publisher bytes); the Opus packets
//! that come out are 20 ms apart.
#![no_main]

use slotcast_streamer::media::aac::parse_asc;
use slotcast_streamer::whep::transcode::AacToOpus;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&asc_len, rest)) = data.split_first() else {
        return;
    };
    let asc_len = usize::from(asc_len % 6);
    if rest.len() < asc_len {
        return;
    }
    let (asc, mut rest) = rest.split_at(asc_len);
    let Ok(config) = parse_asc(asc) else { return };
    let Ok(mut transcoder) = AacToOpus::new(&config.params()) else {
        return;
    };
    let mut out = Vec::new();
    let mut pts = 0i64;
    // Frames, each after a one-byte length.
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        out.clear();
        if transcoder.push(pts, frame, &mut out).is_ok() {
            for pair in out.windows(2) {
                assert_eq!(pair[1].pts - pair[0].pts, 960);
            }
        }
        pts += 1024;
    }
});
