//! An AMF0 message through the session's nesting check and then, if it passes, `rml_amf0`'s
//! decoder: whatever the check lets through must decode without overflowing the stack (an
//! abort this target would report), and the check itself never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The decoder's own panics (caught, as the session catches them) unwind; a stack overflow
    // is no panic: it aborts, and this target reports it.
    slotcast_streamer::rtmp::fuzz::let_rml_panics_unwind();
    slotcast_streamer::rtmp::fuzz::amf(data);
});
