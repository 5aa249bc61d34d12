//! RTSP framing over arbitrary bytes: every frame moves forward and stays inside the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcast_streamer::rtsp::fuzz::framing(data);
});
