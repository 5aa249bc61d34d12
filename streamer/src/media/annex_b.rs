//! H.264 as an Annex B byte stream (start codes before each NAL unit, parameter sets in
//! band), as MPEG-TS (SRT) and depacketized RTP (WHIP, through str0m) carry it, into the
//! streamer's described frames.
//!
//! Contract: pure, and never panics on input. One [`AnnexB`] serves one track: it keeps the
//! latest SPS and PPS, describes the track once it has both (a decoder configuration record
//! checked by [`h264::parse_avcc`]), and turns each access unit into an MP4 sample (4-byte NAL
//! lengths, without parameter sets or delimiters: [`h264::to_sample`]); a keyframe is an
//! access unit with an IDR slice. An access unit before the first SPS and PPS cannot be
//! described and is dropped. A frame carries `params` on the track's first frame and whenever
//! they change.

use bytes::{BufMut, Bytes, BytesMut};

use super::{h264, CodecParams, Frame};
use crate::StreamerError;

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

fn error(msg: impl std::fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("h264 annex b: {msg}"))
}

/// The NAL units of an Annex B byte stream (start codes of three or four bytes).
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| {
            // The start code before `next`, and the zero byte of a four-byte one.
            let end = next - 3;
            if end > 0 && data[end - 1] == 0 {
                end - 1
            } else {
                end
            }
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| &data[s..e.max(s)])
        .filter(|nal| !nal.is_empty())
}

/// One H.264 track's parameter sets and what they describe.
#[derive(Debug, Default)]
pub struct AnnexB {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    params: Option<CodecParams>,
    /// The parameters changed since the last frame: the next one carries them.
    announce: bool,
}

impl AnnexB {
    pub fn new() -> Self {
        Self::default()
    }

    /// What describes the track, once an SPS and a PPS came.
    pub fn params(&self) -> Option<&CodecParams> {
        self.params.as_ref()
    }

    /// The access unit `data` of track `track`, stamped `pts` and `dts`, as a frame; `None`
    /// when nothing can be made of it yet (no parameters, or only parameter sets).
    pub fn frame(
        &mut self,
        track: usize,
        data: &[u8],
        pts: i64,
        dts: i64,
    ) -> Result<Option<Frame>, StreamerError> {
        let mut sample = BytesMut::with_capacity(data.len() + 16);
        let mut sets_changed = false;
        for nal in nal_units(data) {
            let set = match nal[0] & 0x1f {
                NAL_SPS => &mut self.sps,
                NAL_PPS => &mut self.pps,
                _ => {
                    let len = u32::try_from(nal.len()).map_err(|_| error("NAL unit too large"))?;
                    sample.put_u32(len);
                    sample.put_slice(nal);
                    continue;
                }
            };
            if set.as_deref() != Some(nal) {
                *set = Some(Bytes::copy_from_slice(nal));
                sets_changed = true;
            }
        }
        if sets_changed {
            if let (Some(sps), Some(pps)) = (self.sps.as_ref(), self.pps.as_ref()) {
                let record = avcc(sps, pps)?;
                self.params = Some(h264::parse_avcc(&record)?.params);
                self.announce = true;
            }
        }
        if self.params.is_none() || sample.is_empty() {
            return Ok(None);
        }
        let (data, keyframe) = h264::to_sample(sample.freeze(), 4)?;
        if data.is_empty() {
            return Ok(None);
        }
        let announce = std::mem::take(&mut self.announce);
        Ok(Some(Frame {
            track,
            pts,
            dts,
            keyframe,
            data,
            params: announce.then(|| self.params.clone()).flatten(),
        }))
    }
}

/// An AVCDecoderConfigurationRecord of one SPS and one PPS, 4-byte NAL lengths.
fn avcc(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, StreamerError> {
    let (Ok(sps_len), Ok(pps_len)) = (u16::try_from(sps.len()), u16::try_from(pps.len())) else {
        return Err(error("a parameter set over 64 KiB"));
    };
    if sps.len() < 4 {
        return Err(error("SPS too short"));
    }
    let mut out = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    out.extend_from_slice(&sps_len.to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&pps_len.to_be_bytes());
    out.extend_from_slice(pps);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::{PPS, SPS};

    #[test]
    fn annex_b_is_split_at_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
            .collect()
    }

    #[test]
    fn a_track_is_described_by_its_first_sps_and_pps_and_says_so_once() {
        let mut track = AnnexB::new();
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let inter: &[u8] = &[0x41, 0x9a, 0x02];
        // Before any parameter set: nothing to describe it with.
        assert_eq!(track.frame(0, &annex_b(&[inter]), 0, 0).unwrap(), None);
        let first = track
            .frame(0, &annex_b(&[SPS, PPS, idr]), 3000, 3000)
            .unwrap()
            .expect("a frame");
        assert!(first.keyframe);
        assert_eq!(&first.data[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        let Some(CodecParams::H264 { width, height, .. }) = first.params else {
            panic!("the first frame is described: {:?}", first.params);
        };
        assert_eq!((width, height), (320, 240));
        // The same sets again (as encoders repeat them before each IDR): no new description.
        let again = track
            .frame(0, &annex_b(&[SPS, PPS, idr]), 6000, 6000)
            .unwrap();
        assert_eq!(again.expect("a frame").params, None);
        let next = track.frame(0, &annex_b(&[inter]), 9000, 9000).unwrap();
        let next = next.expect("a frame");
        assert!(!next.keyframe);
        assert_eq!((next.pts, next.dts), (9000, 9000));
        // Parameter sets alone make no frame; a bad SPS is an error, not a panic.
        assert_eq!(
            track.frame(0, &annex_b(&[SPS, PPS]), 9000, 9000).unwrap(),
            None
        );
        let mut bad = AnnexB::new();
        let err = bad.frame(0, &annex_b(&[&[0x67, 0x42], PPS, idr]), 0, 0);
        assert!(err.is_err());
    }
}
