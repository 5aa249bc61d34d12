//! AAC as publishers send it outside RTP (RTMP's FLV tags): the AudioSpecificConfig checked
//! and described as [`CodecParams`], and frame timestamps made exact.
//!
//! Contract: pure, and never panics on input: a config we cannot relay is an error saying
//! why. [`AudioClock`] turns timestamps rounded to a coarser clock (RTMP's milliseconds) back
//! into the exact frame grid a player expects.

use bytes::Bytes;

use super::CodecParams;
use crate::StreamerError;

/// The sampling frequencies an AudioSpecificConfig indexes (ISO/IEC 14496-3 1.6.3.4).
const FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];
/// Object types whose config is a GASpecificConfig: Main, LC, SSR, LTP (and the scalable
/// ones, which nobody streams, are refused).
const PLAIN_OBJECT_TYPES: [u8; 4] = [1, 2, 3, 4];
/// SBR and PS (HE-AAC v1 and v2), signalled explicitly: a core object type follows.
const SBR_OBJECT_TYPES: [u8; 2] = [5, 29];

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("aac: {msg}"))
}

/// One AAC stream's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioConfig {
    /// The first object type the config names (2 = AAC-LC, 5 = SBR, 29 = PS).
    pub object_type: u8,
    /// Of the core decoder: the track's clock rate.
    pub sample_rate: u32,
    pub channels: u16,
    /// Samples per frame at `sample_rate`: 1024, or 960.
    pub frame_len: u32,
    /// The AudioSpecificConfig as sent.
    pub asc: Bytes,
}

impl AudioConfig {
    pub fn params(&self) -> CodecParams {
        CodecParams::Aac {
            asc: self.asc.clone(),
            sample_rate: self.sample_rate,
            channels: self.channels,
            codec: format!("mp4a.40.{}", self.object_type),
        }
    }
}

/// MSB-first bits of a byte slice.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, count: usize) -> Result<u32, StreamerError> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self
                .data
                .get(self.at / 8)
                .ok_or_else(|| error("AudioSpecificConfig too short"))?;
            value = (value << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Ok(value)
    }

    fn object_type(&mut self) -> Result<u8, StreamerError> {
        let first = self.take(5)?;
        let value = if first == 31 {
            32 + self.take(6)?
        } else {
            first
        };
        u8::try_from(value).map_err(|_| error("object type out of range"))
    }

    fn frequency(&mut self) -> Result<u32, StreamerError> {
        match self.take(4)? {
            15 => Ok(self.take(24)?),
            index => FREQUENCIES
                .get(index as usize)
                .copied()
                .ok_or_else(|| error(format_args!("reserved sampling frequency index {index}"))),
        }
    }
}

/// Reads an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) as far as a relay needs: object
/// type, core sampling frequency, channels and frame length.
pub fn parse_asc(asc: &[u8]) -> Result<AudioConfig, StreamerError> {
    let mut bits = Bits { data: asc, at: 0 };
    let object_type = bits.object_type()?;
    let sample_rate = bits.frequency()?;
    let channel_config = bits.take(4)?;
    let mut core = object_type;
    if SBR_OBJECT_TYPES.contains(&object_type) {
        // The extension's frequency, then the core's object type; the core frequency is the
        // one above, which is the track's clock.
        bits.frequency()?;
        core = bits.object_type()?;
    }
    if !PLAIN_OBJECT_TYPES.contains(&core) {
        return Err(error(format_args!(
            "object type {core} (slotcast relays AAC Main, LC, SSR, LTP, and HE-AAC over them)"
        )));
    }
    let frame_len = if bits.take(1)? == 1 { 960 } else { 1024 };
    let channels = match channel_config {
        0 => {
            return Err(error(
                "channels in a program config element are not supported",
            ))
        }
        1..=6 => channel_config as u16,
        7 => 8,
        reserved => {
            return Err(error(format_args!(
                "reserved channel configuration {reserved}"
            )))
        }
    };
    if sample_rate == 0 {
        return Err(error("sampling frequency 0"));
    }
    Ok(AudioConfig {
        object_type,
        sample_rate,
        channels,
        frame_len,
        asc: Bytes::copy_from_slice(asc),
    })
}

/// Exact frame timestamps from rounded ones. A frame stamped within half a frame of where the
/// previous frame's end says it starts is put exactly there; one further off (a gap, a jump)
/// is taken as stamped.
#[derive(Debug)]
pub struct AudioClock {
    frame_len: i64,
    last: Option<i64>,
}

impl AudioClock {
    pub fn new(frame_len: u32) -> Self {
        Self {
            frame_len: i64::from(frame_len),
            last: None,
        }
    }

    /// The timestamp of the frame stamped `ts` (in the sample rate).
    pub fn stamp(&mut self, ts: i64) -> i64 {
        let exact = match self.last {
            Some(last) => {
                let expected = last.saturating_add(self.frame_len);
                if ts.abs_diff(expected) <= (self.frame_len / 2).unsigned_abs() {
                    expected
                } else {
                    ts
                }
            }
            None => ts,
        };
        self.last = Some(exact);
        exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_give_rate_channels_frame_length_and_codec() {
        // (ASC, object type, rate, channels, frame length)
        let cases: [(&[u8], u8, u32, u16, u32); 5] = [
            // AAC-LC 48 kHz stereo, as ffmpeg's encoder writes it.
            (&[0x11, 0x90], 2, 48_000, 2, 1024),
            // AAC-LC 44.1 kHz mono.
            (&[0x12, 0x08], 2, 44_100, 1, 1024),
            // AAC-LC 48 kHz stereo with 960-sample frames.
            (&[0x11, 0x94], 2, 48_000, 2, 960),
            // HE-AAC: SBR over LC, core 24 kHz, extension 48 kHz, stereo.
            (&[0x2b, 0x11, 0x88, 0x00], 5, 24_000, 2, 1024),
            // An explicit frequency (escape 15): 48 000 = 0x00bb80, LC, stereo.
            (&[0x17, 0x80, 0x5d, 0xc0, 0x10], 2, 48_000, 2, 1024),
        ];
        for (asc, object_type, rate, channels, frame_len) in cases {
            let config = parse_asc(asc).unwrap_or_else(|e| panic!("{asc:02x?}: {e}"));
            assert_eq!(
                (
                    config.object_type,
                    config.sample_rate,
                    config.channels,
                    config.frame_len
                ),
                (object_type, rate, channels, frame_len),
                "{asc:02x?}"
            );
            assert_eq!(config.params().codec(), format!("mp4a.40.{object_type}"));
        }
    }

    #[test]
    fn configs_we_cannot_relay_say_why() {
        let cases: [(&[u8], &str); 5] = [
            (&[], "too short"),
            (&[0x11], "too short"),
            // Index 13 is reserved.
            (&[0x16, 0x90], "reserved sampling frequency index 13"),
            // Channel configuration 0: a PCE.
            (&[0x11, 0x80], "program config element"),
            // Object type 23 (ER AAC LD).
            (&[0xb9, 0x90], "object type 23"),
        ];
        for (asc, says) in cases {
            let err = parse_asc(asc).unwrap_err().to_string();
            assert!(err.contains(says), "{asc:02x?}: {err}");
        }
    }

    #[test]
    fn millisecond_stamps_snap_to_the_frame_grid_and_a_gap_resyncs() {
        let mut clock = AudioClock::new(1024);
        // RTMP stamps 48 kHz frames at 0, 21, 43, 64, 85 ms: × 48 is off the grid by up to 32.
        let stamped: Vec<i64> = [0, 21, 43, 64, 85].iter().map(|ms| ms * 48).collect();
        let exact: Vec<i64> = stamped.iter().map(|&ts| clock.stamp(ts)).collect();
        assert_eq!(exact, [0, 1024, 2048, 3072, 4096]);
        // A frame a second later (a gap): taken as stamped, and the grid goes on from there.
        assert_eq!(clock.stamp(1085 * 48), 52_080);
        assert_eq!(clock.stamp(1107 * 48), 53_104);
    }
}
