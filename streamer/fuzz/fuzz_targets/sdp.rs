//! An ANNOUNCE body (SDP) over arbitrary bytes: parsed or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcast_streamer::rtsp::fuzz::sdp(data);
});
