//! WHEP's audio against a real encoder and a real decoder: ffmpeg encodes a 1 kHz tone as
//! AAC-LC (ADTS), the test feeds its frames to `AacToOpus` as the live tap would, and
//! libopus decodes the Opus packets back. The tone must come out a 1 kHz tone, loud, in
//! 20 ms packets stamped on the 48 kHz clock from the first frame's time, at 44.1 kHz
//! (resampled) and at 48 kHz (not), stereo and mono; a jump in the input's times restarts
//! the output's.
//!
//! Needs `ffmpeg` on the PATH; without it the test fails, it does not skip.

mod common;

use std::ffi::c_int;

use bytes::Bytes;
use common::{generate, Scratch};
use slotcast_streamer::media::CodecParams;
use slotcast_streamer::whep::transcode::{AacToOpus, OpusPacket};

/// The AudioSpecificConfig and the raw frames of an ADTS stream.
fn adts_frames(adts: &[u8]) -> (Bytes, u32, u16, Vec<Vec<u8>>) {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let mut frames = Vec::new();
    let mut asc = None;
    let mut at = 0;
    while at + 7 <= adts.len() {
        let h = &adts[at..at + 7];
        assert_eq!(
            (h[0], h[1] & 0xf0),
            (0xff, 0xf0),
            "an ADTS sync word at {at}"
        );
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let object_type = (h[2] >> 6) + 1;
        let rate_index = (h[2] >> 2) & 0x0f;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        asc.get_or_insert((object_type, rate_index, channels));
        frames.push(adts[at + header_len..at + len].to_vec());
        at += len;
    }
    let (ot, ri, ch) = asc.expect("at least one frame");
    let config = (u16::from(ot) << 11) | (u16::from(ri) << 7) | (u16::from(ch) << 3);
    (
        Bytes::copy_from_slice(&config.to_be_bytes()),
        RATES[usize::from(ri)],
        u16::from(ch),
        frames,
    )
}

/// ffmpeg's AAC of two seconds of a 1 kHz tone.
fn tone(rate: u32, channels: u16) -> (CodecParams, Vec<Vec<u8>>) {
    let scratch = Scratch::new("whep-audio");
    let source = format!("sine=frequency=1000:sample_rate={rate}");
    let (rate_s, channels_s) = (rate.to_string(), channels.to_string());
    generate(
        &scratch.0,
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &source,
            "-t",
            "2",
            "-ac",
            &channels_s,
            "-ar",
            &rate_s,
            "-c:a",
            "aac",
            "-f",
            "adts",
            "out.aac",
        ],
    );
    let adts = std::fs::read(scratch.0.join("out.aac")).expect("read the AAC");
    let (asc, sample_rate, got_channels, frames) = adts_frames(&adts);
    assert_eq!((sample_rate, got_channels), (rate, channels));
    let params = CodecParams::Aac {
        asc,
        sample_rate,
        channels,
        codec: "mp4a.40.2".into(),
    };
    (params, frames)
}

/// The packets, decoded by libopus: interleaved samples at 48 kHz.
fn decode(packets: &[OpusPacket], channels: u16) -> Vec<f32> {
    use opusic_sys as ffi;
    let mut code: c_int = 0;
    // SAFETY: valid arguments; the decoder is destroyed below.
    let decoder = unsafe { ffi::opus_decoder_create(48_000, c_int::from(channels), &mut code) };
    assert!(
        code == ffi::OPUS_OK && !decoder.is_null(),
        "a libopus decoder"
    );
    let mut out = Vec::new();
    let mut buf = vec![0f32; 5_760 * usize::from(channels)];
    for p in packets {
        // SAFETY: `buf` holds 5760 frames, the most one packet decodes to.
        let n = unsafe {
            ffi::opus_decode_float(
                decoder,
                p.data.as_ptr(),
                p.data.len() as i32,
                buf.as_mut_ptr(),
                5_760,
                0,
            )
        };
        assert_eq!(n, 960, "every packet is 20 ms");
        out.extend_from_slice(&buf[..960 * usize::from(channels)]);
    }
    // SAFETY: made above, freed once.
    unsafe { ffi::opus_decoder_destroy(decoder) };
    out
}

/// The tone's Opus packets, and how many 20 ms its AAC frames hold.
fn transcode(rate: u32, channels: u16, start: i64) -> (Vec<OpusPacket>, usize) {
    let (params, frames) = tone(rate, channels);
    let twenties = frames.len() * 1024 * 50 / rate as usize;
    let mut transcoder = AacToOpus::new(&params).expect("AAC-LC is taken");
    let mut packets = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        transcoder
            .push(start + 1024 * i as i64, frame, &mut packets)
            .expect("ffmpeg's frames transcode");
    }
    (packets, twenties)
}

fn check_tone(rate: u32, channels: u16) {
    // The input starts at 10 s on its own clock.
    let start = 10 * i64::from(rate);
    let (packets, twenties) = transcode(rate, channels, start);
    // One packet for every 20 ms in, less what is still buffered.
    assert!(
        (twenties - 2..=twenties).contains(&packets.len()),
        "{} packets for {twenties} times 20 ms",
        packets.len()
    );
    let first = packets[0].pts;
    assert!(
        (480_000 - 2_400..=480_000).contains(&first),
        "the first packet at 10 s on the 48 kHz clock (less the resampler's delay), not {first}"
    );
    for pair in packets.windows(2) {
        assert_eq!(pair[1].pts - pair[0].pts, 960, "20 ms apart");
    }
    let pcm = decode(&packets, channels);
    // The middle second of the first channel: 1 kHz crosses zero 2000 times a second.
    let left: Vec<f32> = pcm.iter().step_by(usize::from(channels)).copied().collect();
    let middle = &left[24_000..72_000];
    let crossings = middle
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    assert!(
        (1_960..=2_040).contains(&crossings),
        "{crossings} zero crossings in a second: not a 1 kHz tone"
    );
    let rms = (middle.iter().map(|s| s * s).sum::<f32>() / middle.len() as f32).sqrt();
    // ffmpeg's sine source is at 1/8 of full scale: RMS 0.088.
    assert!(
        (0.06..0.12).contains(&rms),
        "RMS {rms}: the tone lost its level"
    );
}

#[test]
fn a_tone_in_aac_at_44_1_khz_stereo_comes_out_the_same_tone_in_opus() {
    check_tone(44_100, 2);
}

#[test]
fn a_tone_in_aac_at_48_khz_mono_comes_out_the_same_tone_in_opus() {
    check_tone(48_000, 1);
}

#[test]
fn a_jump_in_the_input_restarts_the_output_at_the_new_time() {
    let (params, frames) = tone(48_000, 2);
    let mut transcoder = AacToOpus::new(&params).unwrap();
    let mut packets = Vec::new();
    for (i, frame) in frames[..20].iter().enumerate() {
        transcoder
            .push(1024 * i as i64, frame, &mut packets)
            .unwrap();
    }
    let before = packets.len();
    // The publisher comes back a minute later on its own clock.
    transcoder
        .push(60 * 48_000, &frames[20], &mut packets)
        .unwrap();
    transcoder
        .push(60 * 48_000 + 1024, &frames[21], &mut packets)
        .unwrap();
    let after = &packets[before..];
    assert!(!after.is_empty());
    assert_eq!(after[0].pts, 60 * 48_000, "restarted at the new time");
}
