//! AAC in, Opus out: a publisher's audio made playable by WebRTC, in-process.
//!
//! Contract: [`AacToOpus`] takes the raw AAC-LC frames of one track (mono or stereo, any
//! sample rate), in order with their timestamps, and gives back 20 ms Opus packets stamped on
//! the 48 kHz clock, the first at the first frame's time. Decoding is symphonia's, resampling
//! rubato's (skipped at 48 kHz), encoding libopus's ([`super::opus`]). A jump in the input's
//! timestamps (a gap, a publisher's restart) drops what is buffered and starts again from
//! the new time, so the output never drifts from the input. HE-AAC (SBR, PS) and more than two
//! channels are refused by [`AacToOpus::new`]: symphonia decodes AAC-LC only. Pure: no I/O.

use bytes::Bytes;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration as Ticks, Timestamp};

use super::opus::{Encoder, FRAME_SAMPLES, OPUS_RATE};
use crate::media::rescale;
use crate::media::CodecParams;
use crate::StreamerError;

/// Samples per channel in one AAC-LC frame.
const AAC_FRAME: usize = 1024;

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Transcode(format!("aac: {msg}"))
}

/// One Opus packet and its time on the 48 kHz clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusPacket {
    pub pts: i64,
    pub data: Bytes,
}

/// One AAC track's transcoder.
pub struct AacToOpus {
    decoder: AacDecoder,
    /// `None` at 48 kHz.
    resampler: Option<Fft<f32>>,
    encoder: Encoder,
    rate: u32,
    channels: usize,
    /// Decoded, interleaved, at the input rate (reused).
    decoded: Vec<f32>,
    /// Resampled output (reused).
    resampled: Vec<f32>,
    /// 48 kHz interleaved samples waiting to fill a 20 ms frame.
    pcm: Vec<f32>,
    /// The input timestamp expected next (input clock); `None` before the first frame.
    expected: Option<i64>,
    /// The 48 kHz time of the first sample in `pcm`.
    next_pts: i64,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// For the track `params` describe; an error says why it cannot be transcoded.
    pub fn new(params: &CodecParams) -> Result<Self, StreamerError> {
        let CodecParams::Aac {
            asc,
            sample_rate,
            channels,
            ..
        } = params
        else {
            return Err(error(format_args!("{} is not AAC", params.codec())));
        };
        let mut codec = AudioCodecParameters::new();
        codec
            .for_codec(CODEC_ID_AAC)
            .with_extra_data(asc.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&codec, &AudioDecoderOptions::default())
            .map_err(|e| error(format_args!("cannot decode this stream ({e})")))?;
        let encoder = Encoder::new(*channels)?;
        let channels = usize::from(*channels);
        let resampler = (*sample_rate != OPUS_RATE)
            .then(|| {
                Fft::<f32>::new(
                    *sample_rate as usize,
                    OPUS_RATE as usize,
                    AAC_FRAME,
                    channels,
                    FixedSync::Input,
                )
                .map_err(|e| error(format_args!("resampling {sample_rate} Hz: {e}")))
            })
            .transpose()?;
        Ok(Self {
            decoder,
            resampler,
            encoder,
            rate: *sample_rate,
            channels,
            decoded: Vec::with_capacity(AAC_FRAME * channels),
            resampled: Vec::new(),
            pcm: Vec::with_capacity(2 * FRAME_SAMPLES * channels),
            expected: None,
            next_pts: 0,
        })
    }

    /// One AAC frame at `pts` (the track's clock, its sample rate); the Opus packets it
    /// completes are appended to `out`.
    pub fn push(
        &mut self,
        pts: i64,
        frame: &[u8],
        out: &mut Vec<OpusPacket>,
    ) -> Result<(), StreamerError> {
        let frame_ticks = AAC_FRAME as i64;
        if self.expected.is_none_or(|e| (pts - e).abs() > frame_ticks) {
            // The first frame, or a jump: start again from here.
            self.pcm.clear();
            self.next_pts = rescale(pts, self.rate, OPUS_RATE);
            if let Some(resampler) = &mut self.resampler {
                resampler.reset();
                // The resampler's delay: its first output is that much before the input.
                self.next_pts -= resampler.output_delay() as i64;
            }
        }
        self.expected = Some(pts + frame_ticks);
        let packet = PacketRef::new(0, Timestamp::new(pts), Ticks::from(AAC_FRAME as u64), frame);
        let decoded = self
            .decoder
            .decode_ref(&packet)
            .map_err(|e| error(format_args!("a frame did not decode ({e})")))?;
        self.decoded.clear();
        decoded.copy_to_vec_interleaved(&mut self.decoded);
        let frames = self.decoded.len() / self.channels;
        match &mut self.resampler {
            None => self.pcm.extend_from_slice(&self.decoded),
            Some(resampler) => {
                if frames != resampler.input_frames_next() {
                    return Err(error(format_args!("a frame of {frames} samples")));
                }
                self.resampled
                    .resize(resampler.output_frames_max() * self.channels, 0.0);
                let input = InterleavedSlice::new(&self.decoded, self.channels, frames)
                    .map_err(|e| error(format_args!("resampling: {e}")))?;
                let capacity = self.resampled.len() / self.channels;
                let mut output =
                    InterleavedSlice::new_mut(&mut self.resampled, self.channels, capacity)
                        .map_err(|e| error(format_args!("resampling: {e}")))?;
                let (_, written) = resampler
                    .process_into_buffer(&input, &mut output, None)
                    .map_err(|e| error(format_args!("resampling: {e}")))?;
                self.pcm
                    .extend_from_slice(&self.resampled[..written * self.channels]);
            }
        }
        let frame_len = FRAME_SAMPLES * self.channels;
        let mut used = 0;
        while self.pcm.len() - used >= frame_len {
            let data = self.encoder.encode(&self.pcm[used..used + frame_len])?;
            out.push(OpusPacket {
                pts: self.next_pts,
                data: Bytes::copy_from_slice(data),
            });
            self.next_pts += FRAME_SAMPLES as i64;
            used += frame_len;
        }
        self.pcm.drain(..used);
        Ok(())
    }
}
