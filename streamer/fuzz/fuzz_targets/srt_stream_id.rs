//! SRT stream ids, arbitrary: read as `#!::r=<reservation_id>,k=<stream_key>` or refused with
//! words, never a panic; what is read is a valid reservation id and a bounded key, and the
//! refusal never holds the key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match slotcast_streamer::mpegts::stream_id::parse(text) {
        Ok(named) => {
            assert!((1..=64).contains(&named.reservation_id.len()));
            assert!(named
                .reservation_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            assert!(!named.key.is_empty() && named.key.len() <= 256);
        }
        Err(words) => assert!(words.starts_with("the stream id must be")),
    }
});
