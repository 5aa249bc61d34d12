//! An Opus encoder: Debian's libopus through `opusic-sys`'s declarations, behind a safe API.
//!
//! Contract: [`Encoder::new`] makes a 48 kHz encoder for one or two channels;
//! [`Encoder::encode`] takes exactly one 20 ms frame of interleaved `f32` samples and returns
//! one Opus packet. Every libopus error is a [`StreamerError::Transcode`]; nothing here
//! panics. The encoder is freed on drop. (The `opus` crate wraps the same calls but builds
//! its own libopus with cmake; docs/dependencies.md.)

use std::ffi::c_int;
use std::ptr::NonNull;

use opusic_sys as ffi;

use crate::StreamerError;

/// Opus's one sample rate here: WebRTC's clock for Opus.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Room for one packet: libopus's own ceiling for a 20 ms frame is far below this.
const MAX_PACKET: usize = 4_000;
/// What a browser's stereo Opus decoder is happy with for programme audio.
const BITRATE: c_int = 96_000;

fn error(what: &str, code: c_int) -> StreamerError {
    // SAFETY: opus_strerror returns a pointer to a static, NUL-terminated string for any code.
    let words = unsafe { std::ffi::CStr::from_ptr(ffi::opus_strerror(code)) };
    StreamerError::Transcode(format!("opus: {what}: {}", words.to_string_lossy()))
}

/// One libopus encoder.
#[derive(Debug)]
pub struct Encoder {
    state: NonNull<ffi::OpusEncoder>,
    channels: usize,
    out: Vec<u8>,
}

// SAFETY: the encoder state is owned by this value alone and libopus keeps no thread-local
// state: moving it to another thread is sound (it is not shared, so not `Sync`).
unsafe impl Send for Encoder {}

impl Encoder {
    /// A 48 kHz encoder for `channels` (1 or 2) of general audio.
    pub fn new(channels: u16) -> Result<Self, StreamerError> {
        if !(1..=2).contains(&channels) {
            return Err(StreamerError::Transcode(format!(
                "opus: {channels} channels; only mono and stereo are encoded"
            )));
        }
        let mut code: c_int = 0;
        // SAFETY: valid arguments; libopus writes the result code through the pointer.
        let state = unsafe {
            ffi::opus_encoder_create(
                OPUS_RATE as i32,
                c_int::from(channels),
                ffi::OPUS_APPLICATION_AUDIO,
                &mut code,
            )
        };
        let state = match NonNull::new(state) {
            Some(state) if code == ffi::OPUS_OK => state,
            _ => return Err(error("creating the encoder", code)),
        };
        let encoder = Self {
            state,
            channels: usize::from(channels),
            out: vec![0; MAX_PACKET],
        };
        // SAFETY: a live encoder; OPUS_SET_BITRATE takes one opus_int32.
        let code = unsafe {
            ffi::opus_encoder_ctl(
                encoder.state.as_ptr(),
                ffi::OPUS_SET_BITRATE_REQUEST,
                BITRATE,
            )
        };
        if code != ffi::OPUS_OK {
            return Err(error("setting the bitrate", code));
        }
        Ok(encoder)
    }

    /// One 20 ms frame (interleaved, [`FRAME_SAMPLES`] per channel) as one packet.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<&[u8], StreamerError> {
        if pcm.len() != FRAME_SAMPLES * self.channels {
            return Err(StreamerError::Transcode(format!(
                "opus: {} samples given, a frame is {}",
                pcm.len(),
                FRAME_SAMPLES * self.channels
            )));
        }
        // SAFETY: `pcm` holds FRAME_SAMPLES frames of `channels` samples (checked above);
        // `out` has MAX_PACKET writable bytes, the limit passed.
        let written = unsafe {
            ffi::opus_encode_float(
                self.state.as_ptr(),
                pcm.as_ptr(),
                FRAME_SAMPLES as c_int,
                self.out.as_mut_ptr(),
                MAX_PACKET as i32,
            )
        };
        let len = usize::try_from(written).map_err(|_| error("encoding", written))?;
        Ok(&self.out[..len.min(MAX_PACKET)])
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: made by opus_encoder_create, freed once.
        unsafe { ffi::opus_encoder_destroy(self.state.as_ptr()) }
    }
}
