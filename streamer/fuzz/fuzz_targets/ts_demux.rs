//! MPEG-TS as an SRT caller could send it, arbitrary (cut into 188-byte packets with the sync
//! byte set, so the tables and PES paths are reached): taken apart and framed as the SRT edge
//! does, or refused, never a panic; units stay within their bounds.
#![no_main]

use slotcast_streamer::mpegts::demux::{TsDemux, MAX_PES, PACKET};
use slotcast_streamer::mpegts::framer::TsFramer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut demux = TsDemux::new();
    let mut framer: Option<TsFramer> = None;
    for chunk in data.chunks(PACKET) {
        let mut packet = [0xffu8; PACKET];
        packet[..chunk.len()].copy_from_slice(chunk);
        packet[0] = 0x47;
        if demux.push(&packet).is_err() {
            return;
        }
        while let Some(unit) = demux.pop() {
            assert!(unit.data.len() <= MAX_PES);
            let streams = demux.streams().to_vec();
            let framer = framer.get_or_insert_with(|| TsFramer::new(&streams));
            let Some(track) = streams.iter().position(|k| *k == unit.kind) else {
                continue;
            };
            if let Ok(frames) = framer.frames(track, &unit) {
                for frame in frames {
                    assert_eq!(frame.track, track);
                }
            }
            let _ = framer.tracks();
        }
    }
});
