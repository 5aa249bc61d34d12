//! An AMF0 message through the session's nesting check and then, if it passes, `rml_amf0`'s
//! decoder: whatever the check lets through must decode without overflowing the stack (an
//! abort this target would report), and the check itself never panics.
#![no_main]

use std::sync::Once;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The decoder's own panics (caught, as the session catches them) are let unwind; a stack
    // overflow is no panic: it aborts, and this target reports it.
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !slotcast_streamer::rtmp::fuzz::inside_rml() {
                abort(info);
            }
        }));
    });
    slotcast_streamer::rtmp::fuzz::amf(data);
});
