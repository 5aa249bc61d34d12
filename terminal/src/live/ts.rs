//! MPEG-TS for SRT (ISO/IEC 13818-1): one program of the source's H.264 and AAC, written
//! frame by frame into 188-byte packets, as ffmpeg's `-f mpegts` would send them.
//!
//! Contract: pure, no I/O. [`TsMuxer::frame`] gives the packets of one frame, preceded by the
//! PAT and PMT at the start and before every keyframe (a receiver can join there). Video
//! goes as Annex B (an access unit delimiter, the SPS and PPS before each keyframe, then the
//! NAL units with start codes) in PES packets of unbounded length, with the PCR on keyframes;
//! audio as ADTS frames. Timestamps are the frames' own, on the 90 kHz clock.

use bytes::{BufMut, BytesMut};

use super::{Codec, Frame};

pub const PACKET: usize = 188;
const PAT_PID: u16 = 0;
const PMT_PID: u16 = 0x1000;
const FIRST_ES_PID: u16 = 0x100;
const PROGRAM: u16 = 1;
/// PMT stream types: H.264, and AAC in ADTS.
const STREAM_H264: u8 = 0x1b;
const STREAM_ADTS: u8 = 0x0f;
/// How far ahead of the PCR decoding starts (ffmpeg's default muxing delay is 0.7 s; any
/// small positive delay works for live).
const PCR_LEAD: i64 = 90_000 / 10;

/// The source's tracks, as MPEG-TS carries them.
pub struct TsMuxer {
    tracks: Vec<Track>,
    /// Continuity counters of the PAT and the PMT.
    pat_cc: u8,
    pmt_cc: u8,
    started: bool,
}

struct Track {
    codec: Codec,
    pid: u16,
    cc: u8,
    /// The 7-byte ADTS header's fixed part (AAC only).
    adts: Option<[u8; 4]>,
}

impl TsMuxer {
    /// A muxer for `tracks`; an AAC config ADTS cannot describe (an object type over 4, a
    /// sample rate with no index) is refused with the reason.
    pub fn new(tracks: &[Codec]) -> Result<Self, String> {
        let tracks = tracks
            .iter()
            .enumerate()
            .map(|(i, codec)| {
                let adts = match codec {
                    Codec::Aac { config, .. } => Some(adts_fixed(config)?),
                    Codec::H264 { .. } => None,
                };
                Ok(Track {
                    codec: codec.clone(),
                    pid: FIRST_ES_PID + i as u16,
                    cc: 0,
                    adts,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            tracks,
            pat_cc: 0,
            pmt_cc: 0,
            started: false,
        })
    }

    /// The packets carrying `frame`; none for a track it does not know or a broken frame.
    pub fn frame(&mut self, frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(track) = self.tracks.get(frame.track) else {
            return out;
        };
        let video = matches!(track.codec, Codec::H264 { .. });
        let clock = i64::from(track.codec.clock_rate());
        if !self.started || (video && frame.keyframe) {
            self.tables(&mut out);
            self.started = true;
        }
        let pts = frame.timestamp * 90_000 / clock + PCR_LEAD;
        let dts = frame.decoded * 90_000 / clock + PCR_LEAD;
        let track = &mut self.tracks[frame.track];
        let Some(payload) = es_payload(track, frame) else {
            return out;
        };
        let pcr = (video && frame.keyframe).then_some(dts - PCR_LEAD);
        let pes = pes(video, pts, dts, &payload);
        packetize(
            &mut out,
            track.pid,
            &mut track.cc,
            &pes,
            pcr,
            video && frame.keyframe,
        );
        out
    }

    /// The PAT and the PMT, one packet each.
    fn tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = BytesMut::new();
        pat.put_u16(PROGRAM);
        pat.put_u16(0xe000 | PMT_PID);
        section(out, PAT_PID, &mut self.pat_cc, 0x00, 1, &pat);
        let mut pmt = BytesMut::new();
        let pcr_pid = self
            .tracks
            .iter()
            .find(|t| matches!(t.codec, Codec::H264 { .. }))
            .or(self.tracks.first())
            .map_or(0x1fff, |t| t.pid);
        pmt.put_u16(0xe000 | pcr_pid);
        pmt.put_u16(0xf000); // no program descriptors
        for t in &self.tracks {
            let kind = match t.codec {
                Codec::H264 { .. } => STREAM_H264,
                Codec::Aac { .. } => STREAM_ADTS,
            };
            pmt.put_u8(kind);
            pmt.put_u16(0xe000 | t.pid);
            pmt.put_u16(0xf000);
        }
        section(out, PMT_PID, &mut self.pmt_cc, 0x02, PROGRAM, &pmt);
    }
}

/// The ADTS header bits that do not change from frame to frame: profile, sample rate index
/// and channel configuration, from the AudioSpecificConfig.
fn adts_fixed(config: &[u8]) -> Result<[u8; 4], String> {
    let bad = || "the AAC config cannot be sent as ADTS (SRT needs AAC-LC or Main)".to_string();
    if config.len() < 2 {
        return Err(bad());
    }
    let object = config[0] >> 3;
    let rate = ((config[0] & 0x07) << 1) | (config[1] >> 7);
    let channels = (config[1] >> 3) & 0x0f;
    if !(1..=4).contains(&object) || rate > 12 || channels > 7 {
        return Err(bad());
    }
    let profile = object - 1;
    Ok([
        0xff,
        0xf1, // MPEG-4, layer 0, no CRC
        (profile << 6) | (rate << 2) | (channels >> 2),
        (channels & 0x03) << 6,
    ])
}

/// What the PES carries for one frame: Annex B for video, one ADTS frame for audio.
fn es_payload(track: &Track, frame: &Frame) -> Option<Vec<u8>> {
    match &track.codec {
        Codec::H264 {
            sps,
            pps,
            length_size,
        } => {
            let mut out = vec![0, 0, 0, 1, 0x09, 0xf0];
            if frame.keyframe {
                for set in [sps, pps] {
                    out.extend_from_slice(&[0, 0, 0, 1]);
                    out.extend_from_slice(set);
                }
            }
            let size = usize::from(*length_size);
            let mut rest = &frame.data[..];
            while !rest.is_empty() {
                let len = rest
                    .get(..size)?
                    .iter()
                    .fold(0usize, |n, b| (n << 8) | usize::from(*b));
                let nal = rest.get(size..size + len)?;
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(nal);
                rest = &rest[size + len..];
            }
            Some(out)
        }
        Codec::Aac { .. } => {
            let fixed = track.adts?;
            let len = frame.data.len() + 7;
            if len >= 1 << 13 {
                return None;
            }
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(&fixed[..3]);
            out.push(fixed[3] | ((len >> 11) as u8 & 0x03));
            out.push((len >> 3) as u8);
            out.push((((len & 0x07) as u8) << 5) | 0x1f); // buffer fullness 0x7ff: VBR
            out.push(0xfc); // one raw data block
            out.extend_from_slice(&frame.data);
            Some(out)
        }
    }
}

/// A PES packet: video unbounded (length 0), audio with its length.
fn pes(video: bool, pts: i64, dts: i64, payload: &[u8]) -> Vec<u8> {
    let with_dts = dts != pts;
    let header_len: usize = if with_dts { 10 } else { 5 };
    let mut out = vec![0, 0, 1, if video { 0xe0 } else { 0xc0 }];
    let length = 3 + header_len + payload.len();
    let length = if video || length > 0xffff {
        0
    } else {
        length as u16
    };
    out.extend_from_slice(&length.to_be_bytes());
    out.push(0x84); // '10', data alignment
    out.push(if with_dts { 0xc0 } else { 0x80 });
    out.push(header_len as u8);
    timestamp(&mut out, if with_dts { 0x3 } else { 0x2 }, pts);
    if with_dts {
        timestamp(&mut out, 0x1, dts);
    }
    out.extend_from_slice(payload);
    out
}

/// A 33-bit timestamp in PES's five bytes, after the 4-bit `prefix`.
fn timestamp(out: &mut Vec<u8>, prefix: u8, t: i64) {
    let t = (t as u64) & ((1 << 33) - 1);
    out.push((prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1);
    out.extend_from_slice(&((((t >> 15) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
    out.extend_from_slice(&(((t & 0x7fff) << 1 | 1) as u16).to_be_bytes());
}

/// `data` in packets of `pid`: the first starts the unit (and carries the PCR and the random
/// access flag when given), the last is padded with adaptation-field stuffing.
fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    data: &[u8],
    pcr: Option<i64>,
    random_access: bool,
) {
    let mut rest = data;
    let mut first = true;
    while first || !rest.is_empty() {
        // The adaptation field: whether there is one, and its body (after its length byte).
        let mut field: Option<Vec<u8>> = None;
        if first && (pcr.is_some() || random_access) {
            let mut body = vec![if random_access { 0x40 } else { 0 }];
            if let Some(pcr) = pcr {
                body[0] |= 0x10;
                let base = (pcr as u64) & ((1 << 33) - 1);
                body.extend_from_slice(&((base >> 1) as u32).to_be_bytes());
                body.push((((base & 1) as u8) << 7) | 0x7e);
                body.push(0);
            }
            field = Some(body);
        }
        let room = |field: &Option<Vec<u8>>| PACKET - 4 - field.as_ref().map_or(0, |f| 1 + f.len());
        if rest.len() < room(&field) {
            // The last packet: the adaptation field grows (with 0xff) to fill it.
            let short = room(&field) - rest.len();
            match field.as_mut() {
                Some(body) => body.extend(std::iter::repeat_n(0xff, short)),
                // Its length byte alone is one byte; with its flags, two and more.
                None if short == 1 => field = Some(Vec::new()),
                None => {
                    let mut body = vec![0];
                    body.extend(std::iter::repeat_n(0xff, short - 2));
                    field = Some(body);
                }
            }
        }
        let take = rest.len().min(room(&field));
        out.push(0x47);
        out.push(if first { 0x40 } else { 0 } | ((pid >> 8) as u8 & 0x1f));
        out.push(pid as u8);
        out.push(if field.is_some() { 0x30 } else { 0x10 } | (*cc & 0x0f));
        *cc = cc.wrapping_add(1) & 0x0f;
        if let Some(body) = &field {
            out.push(body.len() as u8);
            out.extend_from_slice(body);
        }
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
    }
}

/// A PSI section (PAT or PMT) in one packet, with its CRC.
fn section(out: &mut Vec<u8>, pid: u16, cc: &mut u8, table: u8, id: u16, body: &[u8]) {
    let mut s = vec![table];
    let length = 5 + body.len() + 4;
    s.extend_from_slice(&(0xb000 | length as u16).to_be_bytes());
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&[0xc1, 0, 0]); // version 0, current; section 0 of 0
    s.extend_from_slice(body);
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    let mut payload = vec![0]; // pointer field
    payload.extend_from_slice(&s);
    payload.resize(PACKET - 4, 0xff);
    out.push(0x47);
    out.push(0x40 | ((pid >> 8) as u8 & 0x1f));
    out.push(pid as u8);
    out.push(0x10 | (*cc & 0x0f));
    *cc = cc.wrapping_add(1) & 0x0f;
    out.extend_from_slice(&payload);
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, not reflected, from all ones, no final XOR.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
#[path = "ts_tests.rs"]
mod tests;
