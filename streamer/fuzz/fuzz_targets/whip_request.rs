//! WHIP request heads, arbitrary: the method, path, `Authorization`, `Content-Type` and
//! `Content-Length` (fields split at NUL bytes) read as a publish, an end, an OPTIONS or an
//! answer, never a panic; a publish names a valid reservation id and a bounded printable key,
//! and an answer is a 4xx that carries no refusal code (those are the gate's).
#![no_main]

use slotcast_streamer::webrtc::whip::{read_head, Request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\0');
    let method = fields.next().unwrap_or_default();
    let path = fields.next().unwrap_or_default();
    let authorization = fields.next().filter(|v| !v.is_empty());
    let content_type = fields.next().filter(|v| !v.is_empty());
    let length = fields.next().and_then(|v| v.parse().ok());
    match read_head(method, path, authorization, content_type, length) {
        Ok(Request::Publish {
            reservation_id,
            key,
        }) => {
            assert!((1..=64).contains(&reservation_id.len()));
            assert!(!key.is_empty() && key.len() <= 256);
            assert!(key.bytes().all(|b| b.is_ascii_graphic()));
            assert!(format!("{:?}", Request::Publish { reservation_id, key }).contains("hidden"));
        }
        Ok(Request::End { session, .. }) => assert_eq!(session.len(), 32),
        Ok(Request::Options { .. }) => {}
        Err(answer) => {
            assert!((400..500).contains(&answer.status), "{answer:?}");
            assert!(!answer.headers.iter().any(|(h, _)| *h == "Slotcast-Refusal"));
        }
    }
});
