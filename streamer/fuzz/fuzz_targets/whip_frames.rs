//! What a WHIP publisher's peer hands on, arbitrary: each input is cut into frames (at each
//! 0xff 0xff pair) given alternately to the video track (H.264, Annex B) and the audio track
//! (Opus) on clocks of arbitrary rates; framing is an error or a frame, never a panic, and a
//! frame is of the track it was given to.
#![no_main]

use slotcast_streamer::webrtc::whip::Ingest;
use str0m::media::{MediaKind, Mid};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (video, audio) = (Mid::from("0"), Mid::from("1"));
    let mut ingest = Ingest::new(&[(video, MediaKind::Video), (audio, MediaKind::Audio)]);
    let mut time = 0u64;
    for (n, piece) in data.split(|b| *b == 0xff).enumerate() {
        let (mid, track) = if n % 2 == 0 { (video, 0) } else { (audio, 1) };
        let rate = u32::from(piece.first().copied().unwrap_or(0)) * 1000;
        time = time.wrapping_add(u64::from(piece.len() as u32) << (n % 40));
        if let Ok(Some(frame)) = ingest.frame(mid, time, rate, n % 3 != 0, piece) {
            assert_eq!(frame.track, track);
        }
    }
});
