//! H.264 as publishers send it outside RTP (RTMP's FLV tags): the decoder configuration
//! record (`avcC`) checked and described as [`CodecParams`], and length-prefixed access units
//! reshaped into the MP4 sample format the segmenter takes.
//!
//! Contract: pure, and never panics on input: every malformed record or access unit is an
//! error saying what is wrong. The record handed on always says 4-byte NAL lengths (as
//! retina's does), and samples always have them, whatever length size the publisher used.
//! Parameter sets and access unit delimiters inside an access unit are dropped: the record
//! carries the parameters (a change comes as a new record), and an MP4 sample has no AUD.

use bytes::{BufMut, Bytes, BytesMut};
use h264_reader::rbsp::{BitRead, BitReader, BitReaderError, Numeric, Primitive};

use super::CodecParams;
use crate::StreamerError;

/// NAL unit types dropped from samples: SPS, PPS, access unit delimiter.
const DROPPED_NAL_TYPES: [u8; 3] = [7, 8, 9];
const NAL_TYPE_IDR: u8 = 5;

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("h264: {msg}"))
}

/// An `avcC` record as a publisher sent it, understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avcc {
    /// What the segmenter describes the track with (the record rewritten to 4-byte lengths).
    pub params: CodecParams,
    /// The NAL length size the publisher's access units use: 1, 2 or 4 bytes.
    pub length_size: usize,
}

/// Reads an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.2.4.1): version 1, at least one
/// SPS (whose picture size and profile describe the track) and one PPS.
pub fn parse_avcc(record: &[u8]) -> Result<Avcc, StreamerError> {
    let (&version, rest) = record.split_first().ok_or_else(|| error("empty avcC"))?;
    if version != 1 {
        return Err(error(format_args!("avcC version {version}, not 1")));
    }
    if rest.len() < 5 {
        return Err(error("avcC shorter than its header"));
    }
    let length_size = usize::from(rest[3] & 0b11) + 1;
    if length_size == 3 {
        return Err(error(
            "avcC says 3-byte NAL lengths, which H.264 does not allow",
        ));
    }
    let mut at = 5;
    let sps_count = usize::from(rest[4] & 0b1_1111);
    let mut first_sps = None;
    for _ in 0..sps_count {
        let sps = length_prefixed(rest, &mut at, "SPS")?;
        first_sps.get_or_insert(sps);
    }
    let sps = first_sps.ok_or_else(|| error("avcC holds no SPS"))?;
    let pps_count = *rest
        .get(at)
        .ok_or_else(|| error("avcC ends before its PPS count"))?;
    at += 1;
    if pps_count == 0 {
        return Err(error("avcC holds no PPS"));
    }
    for _ in 0..pps_count {
        length_prefixed(rest, &mut at, "PPS")?;
    }
    let (width, height, codec) = describe_sps(sps)?;
    let mut avcc = BytesMut::from(record);
    // reserved (6 bits set) and lengthSizeMinusOne = 3: samples get 4-byte lengths.
    avcc[4] = 0xff;
    Ok(Avcc {
        params: CodecParams::H264 {
            avcc: avcc.freeze(),
            width,
            height,
            codec,
        },
        length_size,
    })
}

/// The SPS and PPS NAL units of a checked `avcC` record ([`parse_avcc`]'s), in its order:
/// what a decoder needs before a keyframe when the stream does not repeat them itself.
pub fn parameter_sets(record: &[u8]) -> Result<Vec<&[u8]>, StreamerError> {
    let rest = record
        .get(1..)
        .filter(|r| r.len() >= 5)
        .ok_or_else(|| error("avcC too short"))?;
    let mut sets = Vec::new();
    let mut at = 5;
    for _ in 0..(rest[4] & 0b1_1111) {
        sets.push(length_prefixed(rest, &mut at, "SPS")?);
    }
    let pps_count = *rest
        .get(at)
        .ok_or_else(|| error("avcC ends before its PPS count"))?;
    at += 1;
    for _ in 0..pps_count {
        sets.push(length_prefixed(rest, &mut at, "PPS")?);
    }
    Ok(sets)
}

/// One NAL unit of `data` after its 2-byte length, at `*at`; moves `*at` past it.
fn length_prefixed<'a>(
    data: &'a [u8],
    at: &mut usize,
    what: &str,
) -> Result<&'a [u8], StreamerError> {
    let len = data
        .get(*at..*at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| error(format_args!("avcC ends inside a {what} length")))?;
    let unit = data
        .get(*at + 2..*at + 2 + len)
        .filter(|unit| !unit.is_empty())
        .ok_or_else(|| error(format_args!("avcC {what} of {len} bytes runs past its end")))?;
    *at += 2 + len;
    Ok(unit)
}

/// Picture size and RFC 6381 codec string of an SPS NAL unit.
fn describe_sps(sps: &[u8]) -> Result<(u16, u16, String), StreamerError> {
    if sps.first().map(|b| b & 0x1f) != Some(7) {
        return Err(error("the avcC's SPS is not an SPS NAL unit"));
    }
    let rbsp = h264_reader::rbsp::decode_nal(sps).map_err(|e| error(format_args!("SPS: {e}")))?;
    if rbsp.len() < 4 {
        return Err(error("SPS too short"));
    }
    let parsed =
        h264_reader::nal::sps::SeqParameterSet::from_bits(Tolerant(BitReader::new(&*rbsp)))
            .map_err(|e| error(format_args!("SPS: {e:?}")))?;
    let (w, h) = parsed
        .pixel_dimensions()
        .map_err(|e| error(format_args!("SPS picture size: {e:?}")))?;
    let (Ok(width), Ok(height)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(error(format_args!("picture size {w}x{h} too large")));
    };
    // profile_idc, the constraint flags and level_idc, as retina writes them.
    let codec = format!("avc1.{:02X}{:02X}{:02X}", rbsp[0], rbsp[1], rbsp[2]);
    Ok((width, height, codec))
}

/// One access unit of `length_size`-prefixed NAL units as an MP4 sample (4-byte lengths,
/// no parameter sets, no delimiters), and whether it holds an IDR slice. Zero-copy when the
/// publisher's lengths are 4 bytes and nothing is dropped.
pub fn to_sample(data: Bytes, length_size: usize) -> Result<(Bytes, bool), StreamerError> {
    let mut keep = Vec::new();
    let mut idr = false;
    let mut at = 0;
    while at < data.len() {
        let len_bytes = data
            .get(at..at + length_size)
            .ok_or_else(|| error("access unit ends inside a NAL length"))?;
        let len = len_bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        let start = at + length_size;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| {
                error(format_args!(
                    "NAL unit of {len} bytes runs past the access unit"
                ))
            })?;
        if len == 0 {
            return Err(error("empty NAL unit"));
        }
        let nal_type = data[start] & 0x1f;
        idr |= nal_type == NAL_TYPE_IDR;
        if !DROPPED_NAL_TYPES.contains(&nal_type) {
            keep.push(start..end);
        }
        at = end;
    }
    if keep.is_empty() {
        return Err(error("access unit without a slice"));
    }
    let whole = keep.len() == 1 && keep[0].start == length_size && keep[0].end == data.len();
    if length_size == 4 && (whole || keep.iter().map(|r| r.len() + 4).sum::<usize>() == data.len())
    {
        return Ok((data, idr));
    }
    let mut out = BytesMut::with_capacity(keep.iter().map(|r| r.len() + 4).sum());
    for range in keep {
        // A NAL unit inside one access unit is far below 4 GiB: the tag that carried it is.
        out.put_u32(u32::try_from(range.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&data[range]);
    }
    Ok((out.freeze(), idr))
}

/// h264-reader's bit reader, minus its refusal of bits after the RBSP trailing bits: some
/// encoders pad their SPS, and the fields we read come before.
struct Tolerant<R>(R);

impl<R: BitRead> BitRead for Tolerant<R> {
    fn read_ue(&mut self, name: &'static str) -> Result<u32, BitReaderError> {
        self.0.read_ue(name)
    }

    fn read_se(&mut self, name: &'static str) -> Result<i32, BitReaderError> {
        self.0.read_se(name)
    }

    fn read_bool(&mut self, name: &'static str) -> Result<bool, BitReaderError> {
        self.0.read_bool(name)
    }

    fn read<U: Numeric>(
        &mut self,
        bit_count: u32,
        name: &'static str,
    ) -> Result<U, BitReaderError> {
        self.0.read(bit_count, name)
    }

    fn read_to<V: Primitive>(&mut self, name: &'static str) -> Result<V, BitReaderError> {
        self.0.read_to(name)
    }

    fn skip(&mut self, bit_count: u32, name: &'static str) -> Result<(), BitReaderError> {
        self.0.skip(bit_count, name)
    }

    fn has_more_rbsp_data(&mut self, name: &'static str) -> Result<bool, BitReaderError> {
        self.0.has_more_rbsp_data(name)
    }

    fn finish_rbsp(self) -> Result<(), BitReaderError> {
        match self.0.finish_rbsp() {
            Err(BitReaderError::RemainingData) => Ok(()),
            other => other,
        }
    }

    fn finish_sei_payload(self) -> Result<(), BitReaderError> {
        self.0.finish_sei_payload()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// libx264's SPS and PPS for ffmpeg's 320x240 test pattern, Constrained Baseline, level 1.3.
    pub(crate) const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0c, 0xa3, 0xc5, 0x0a, 0xa8,
    ];
    pub(crate) const PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];

    pub(crate) fn avcc(length_size_minus_one: u8, sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut v = vec![
            1,
            sps[1],
            sps[2],
            sps[3],
            0xfc | length_size_minus_one,
            0xe1,
        ];
        v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        v
    }

    #[test]
    fn a_record_gives_the_picture_size_and_codec_and_says_four_byte_lengths() {
        let parsed = parse_avcc(&avcc(1, SPS, PPS)).unwrap();
        assert_eq!(parsed.length_size, 2);
        let CodecParams::H264 {
            avcc: record,
            width,
            height,
            codec,
        } = parsed.params
        else {
            panic!("not H.264");
        };
        assert_eq!((width, height), (320, 240));
        assert_eq!(codec, "avc1.42C00D");
        assert_eq!(record[4], 0xff, "4-byte lengths");
        assert_eq!(&record[5..], &avcc(1, SPS, PPS)[5..]);
    }

    #[test]
    fn malformed_records_say_what_is_wrong() {
        let good = avcc(3, SPS, PPS);
        let mut no_sps = good[..5].to_vec();
        no_sps.extend_from_slice(&[0xe0, 1, 0, 1, 0x68]);
        let mut three = good.clone();
        three[4] = 0xfe;
        let cases: [(&[u8], &str); 7] = [
            (&[], "empty avcC"),
            (&[2, 0x42, 0xc0, 0x0d, 0xff, 0xe1], "version 2"),
            (&good[..4], "shorter than its header"),
            (&good[..12], "runs past its end"),
            (&good[..good.len() - PPS.len() - 3], "before its PPS count"),
            (&no_sps, "no SPS"),
            (&three, "3-byte NAL lengths"),
        ];
        for (bytes, says) in cases {
            let err = parse_avcc(bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{bytes:02x?}: {err}");
        }
        let mut pps_as_sps = avcc(3, PPS, PPS);
        pps_as_sps[1] = 0x42;
        let err = parse_avcc(&pps_as_sps).unwrap_err().to_string();
        assert!(err.contains("not an SPS"), "{err}");
    }

    #[test]
    fn samples_get_four_byte_lengths_without_parameter_sets_or_delimiters() {
        // AUD, SPS, IDR slice with 2-byte lengths.
        let au = Bytes::from_static(&[0, 2, 0x09, 0xf0, 0, 2, 0x67, 0x64, 0, 3, 0x65, 0x88, 0x84]);
        let (sample, idr) = to_sample(au, 2).unwrap();
        assert!(idr);
        assert_eq!(&sample[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        // 4-byte lengths and nothing to drop: the very same bytes.
        let au = Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9a, 0, 0, 0, 1, 0x01]);
        let (sample, idr) = to_sample(au.clone(), 4).unwrap();
        assert!(!idr);
        assert_eq!(sample.as_ptr(), au.as_ptr(), "zero-copy");
        for (bytes, size, says) in [
            (&[0, 0, 0, 9, 0x65][..], 4, "runs past"),
            (&[0, 0, 0][..], 4, "inside a NAL length"),
            (&[0, 0][..], 2, "empty NAL unit"),
            (&[0, 1, 0x09][..], 2, "without a slice"),
        ] {
            let err = to_sample(Bytes::copy_from_slice(bytes), size).unwrap_err();
            assert!(err.to_string().contains(says), "{bytes:02x?}: {err}");
        }
    }
}
