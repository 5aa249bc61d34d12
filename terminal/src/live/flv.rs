//! FLV audio and video tag bodies, as RTMP carries them (the FLV file format's
//! `VIDEODATA`/`AUDIODATA`, without the tag headers), for H.264 and AAC: the sequence
//! headers a receiver needs first, then one tag per frame.
//!
//! Contract: pure, no I/O. H.264 frames go out as the source gives them (length-prefixed NAL
//! units, the sequence header declaring that length); the composition time is the frame's
//! presentation minus its decode time, in milliseconds. Timestamps are milliseconds on one
//! clock for all tracks, as RTMP wants them: [`millis`].

use bytes::{BufMut, Bytes, BytesMut};

use super::Codec;

/// FLV codec id of AVC (H.264), and of AAC.
const AVC: u8 = 7;
const AAC: u8 = 10;
/// AAC in FLV always says 44 kHz, 16 bit, stereo: the AudioSpecificConfig holds the truth.
const AAC_FLAGS: u8 = (AAC << 4) | (3 << 2) | (1 << 1) | 1;

/// The sequence header of a track: the AVCDecoderConfigurationRecord (H.264) or the
/// AudioSpecificConfig (AAC), wrapped as a tag body. `None` for an SPS too short to read.
pub fn sequence_header(codec: &Codec) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match codec {
        Codec::H264 {
            sps,
            pps,
            length_size,
        } => {
            if sps.len() < 4 || !(1..=4).contains(length_size) {
                return None;
            }
            let sps_len = u16::try_from(sps.len()).ok()?;
            let pps_len = u16::try_from(pps.len()).ok()?;
            out.put_slice(&[(1 << 4) | AVC, 0, 0, 0, 0]);
            // AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): version 1, the
            // SPS's profile, compatibility and level, the NAL length size, one SPS, one PPS.
            out.put_slice(&[1, sps[1], sps[2], sps[3], 0xfc | (length_size - 1), 0xe1]);
            out.put_u16(sps_len);
            out.put_slice(sps);
            out.put_u8(1);
            out.put_u16(pps_len);
            out.put_slice(pps);
        }
        Codec::Aac { config, .. } => {
            out.put_slice(&[AAC_FLAGS, 0]);
            out.put_slice(config);
        }
    }
    Some(out.freeze())
}

/// One frame's tag body: `composition_ms` (presentation minus decode time) for H.264.
pub fn frame(codec: &Codec, keyframe: bool, composition_ms: i32, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 5);
    match codec {
        Codec::H264 { .. } => {
            let kind = if keyframe { 1 } else { 2 };
            // A signed 24-bit composition time, clamped to what it can hold.
            let cts = composition_ms.clamp(-(1 << 23), (1 << 23) - 1);
            let cts = cts.to_be_bytes();
            out.put_slice(&[(kind << 4) | AVC, 1, cts[1], cts[2], cts[3]]);
        }
        Codec::Aac { .. } => out.put_slice(&[AAC_FLAGS, 1]),
    }
    out.put_slice(data);
    out.freeze()
}

/// `ticks` of a `clock_rate` clock in milliseconds.
pub fn millis(ticks: i64, clock_rate: u32) -> i64 {
    ticks.saturating_mul(1000) / i64::from(clock_rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264() -> Codec {
        Codec::H264 {
            sps: vec![0x67, 0x64, 0x00, 0x1f, 0xac],
            pps: vec![0x68, 0xee, 0x3c, 0x80],
            length_size: 4,
        }
    }

    #[test]
    fn the_avc_sequence_header_is_a_configuration_record_of_the_sps_and_pps() {
        let header = sequence_header(&h264()).unwrap();
        assert_eq!(
            &header[..],
            &[
                0x17, 0, 0, 0, 0, // keyframe, AVC; sequence header; cts 0
                1, 0x64, 0x00, 0x1f, 0xff,
                0xe1, // version, profile, compat, level, 4-byte NALs, 1 SPS
                0, 5, 0x67, 0x64, 0x00, 0x1f, 0xac, // the SPS
                1, 0, 4, 0x68, 0xee, 0x3c, 0x80, // one PPS
            ][..]
        );
        let short = Codec::H264 {
            sps: vec![0x67],
            pps: vec![],
            length_size: 4,
        };
        assert_eq!(sequence_header(&short), None);
    }

    #[test]
    fn frames_carry_their_kind_and_composition_time() {
        let data = [0, 0, 0, 1, 0x65];
        assert_eq!(&frame(&h264(), true, 80, &data)[..5], &[0x17, 1, 0, 0, 80]);
        assert_eq!(
            &frame(&h264(), false, -40, &data)[..5],
            &[0x27, 1, 0xff, 0xff, 0xd8]
        );
        assert_eq!(&frame(&h264(), false, 0, &data)[5..], &data);
        let aac = Codec::Aac {
            config: vec![0x12, 0x10],
            sample_rate: 44_100,
            channels: 2,
        };
        assert_eq!(&sequence_header(&aac).unwrap()[..], &[0xaf, 0, 0x12, 0x10]);
        assert_eq!(&frame(&aac, true, 0, &[9, 9])[..], &[0xaf, 1, 9, 9]);
        assert_eq!(millis(90_000, 90_000), 1000);
        assert_eq!(millis(1024, 48_000), 21);
    }
}
