//! What a WHIP publisher's peer hands on, arbitrary: each input is cut into frames (at each
//! 0xff 0xff pair) given alternately to the video track (H.264, Annex B) and the audio track
//! (Opus) on clocks of arbitrary rates; framing is an error or frames, never a panic, and
//! what goes out is of the track given, or audio held for the first keyframe (bounded).
#![no_main]

use slotcast_streamer::webrtc::whip::Ingest;
use str0m::media::{MediaKind, Mid};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (video, audio) = (Mid::from("0"), Mid::from("1"));
    let mut ingest = Ingest::new(&[(video, MediaKind::Video), (audio, MediaKind::Audio)]);
    let mut time = 0u64;
    let t0 = std::time::Instant::now();
    for (n, piece) in data.split(|b| *b == 0xff).enumerate() {
        let (mid, track) = if n % 2 == 0 { (video, 0) } else { (audio, 1) };
        let rate = u32::from(piece.first().copied().unwrap_or(0)) * 1000;
        time = time.wrapping_add(u64::from(piece.len() as u32) << (n % 40));
        let arrival = t0 + std::time::Duration::from_millis(n as u64 * 7);
        if let Ok(frames) = ingest.frame(arrival, mid, time, rate, n % 3 != 0, piece) {
            // A frame of the track given, or held audio going out after the first keyframe.
            assert!(frames.iter().all(|(_, f)| f.track == track || f.track == 1));
            assert!(frames.len() <= 26);
        }
    }
});
