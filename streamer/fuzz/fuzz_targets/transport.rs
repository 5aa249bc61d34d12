//! A SETUP's `Transport` header over arbitrary text: parsed or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcast_streamer::rtsp::fuzz::transport(data);
});
