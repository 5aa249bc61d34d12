//! RTMP publishing names (`<reservation-id>?key=<stream-key>`), arbitrary: read or refused
//! with words, never a panic; what is read is a valid reservation id and a bounded key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = slotcast_streamer::rtmp::stream_key::parse(text) {
        assert!((1..=64).contains(&name.reservation_id.len()));
        assert!(name
            .reservation_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        assert!(name.key.is_none_or(|k| k.len() <= 256));
    }
});
