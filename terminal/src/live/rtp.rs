//! RTP packetizers: H.264 as RFC 6184 (single NAL unit packets and FU-A fragments,
//! packetization-mode 1) and AAC as RFC 3640 `mpeg4-generic` in `AAC-hbr` mode.
//!
//! Contract: pure. [`Packetizer::packetize`] turns one frame into whole RTP packets (12-byte
//! header, no CSRC or extension), none larger than the configured size, with the marker on
//! the last packet of an access unit; sequence numbers run on across frames and wrap. H.264
//! keyframes that do not carry their SPS and PPS get them sent first, so a receiver that
//! joins (or a streamer that restarts) can decode from any keyframe. A frame that cannot be
//! packetized (a NAL length running past the end) is an error, and nothing of it is sent.

use super::Codec;

const HEADER: usize = 12;
const FU_A: u8 = 28;
const NAL_SPS: u8 = 7;
const NAL_AUD: u8 = 9;
/// AAC-hbr: AU-headers-length (16 bits) + one AU-header (13 bits size, 3 bits index).
const AAC_HEADERS: usize = 4;
/// The largest AAC access unit a 13-bit AU-size can say.
const AAC_MAX_AU: usize = (1 << 13) - 1;

pub(super) struct Packetizer {
    codec: Codec,
    header: Header,
    /// Added to every timestamp (random start, RFC 3550 §5.1).
    timestamp_base: u32,
    max_packet: usize,
}

/// The fixed part of this track's RTP headers, and its running sequence number.
struct Header {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
}

impl Header {
    /// A new packet: its 12-byte header (the sequence number moves on), then `payload`.
    fn packet(&mut self, ts: u32, marker: bool, payload: &[&[u8]]) -> Vec<u8> {
        let len = payload.iter().map(|p| p.len()).sum::<usize>();
        let mut out = Vec::with_capacity(HEADER + len);
        out.push(0x80);
        out.push(self.payload_type | if marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for p in payload {
            out.extend_from_slice(p);
        }
        self.sequence = self.sequence.wrapping_add(1);
        out
    }
}

impl Packetizer {
    /// `random` supplies the SSRC, the first sequence number and the timestamp base.
    pub fn new(codec: Codec, payload_type: u8, max_packet: usize, random: [u32; 3]) -> Self {
        Self {
            codec,
            header: Header {
                payload_type,
                ssrc: random[0],
                sequence: random[1] as u16,
            },
            timestamp_base: random[2],
            max_packet: max_packet.max(HEADER + AAC_HEADERS + 16),
        }
    }

    /// The packets of one frame, in order.
    pub fn packetize(
        &mut self,
        timestamp: i64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<Vec<Vec<u8>>, String> {
        // RTP timestamps are modulo 2^32.
        let ts = self.timestamp_base.wrapping_add(timestamp as u32);
        let room = self.max_packet - HEADER;
        let header = &mut self.header;
        match &self.codec {
            Codec::H264 {
                sps,
                pps,
                length_size,
            } => {
                let nals = nal_units(data, *length_size)?;
                let has_params = nals.iter().any(|n| n[0] & 0x1f == NAL_SPS);
                let mut all: Vec<&[u8]> = Vec::with_capacity(nals.len() + 2);
                if keyframe && !has_params && !sps.is_empty() && !pps.is_empty() {
                    all.push(sps);
                    all.push(pps);
                }
                // Access unit delimiters carry nothing a receiver needs.
                all.extend(nals.into_iter().filter(|n| n[0] & 0x1f != NAL_AUD));
                let mut packets = Vec::new();
                let last = all.len().saturating_sub(1);
                for (i, nal) in all.iter().enumerate() {
                    h264_nal(header, room, nal, ts, i == last, &mut packets);
                }
                Ok(packets)
            }
            Codec::Aac { .. } => aac(header, room - AAC_HEADERS, data, ts),
        }
    }
}

/// One NAL unit: a single NAL unit packet if it fits in `room`, else FU-A fragments.
fn h264_nal(
    header: &mut Header,
    room: usize,
    nal: &[u8],
    ts: u32,
    last: bool,
    packets: &mut Vec<Vec<u8>>,
) {
    if nal.len() <= room {
        packets.push(header.packet(ts, last, &[nal]));
        return;
    }
    let indicator = (nal[0] & 0xe0) | FU_A;
    let kind = nal[0] & 0x1f;
    let chunks: Vec<&[u8]> = nal[1..].chunks(room - 2).collect();
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i + 1 == n { 0x40 } else { 0 };
        let fu = [indicator, start | end | kind];
        packets.push(header.packet(ts, last && i + 1 == n, &[&fu, chunk]));
    }
}

/// One AAC access unit: one packet, or fragments of at most `room` bytes of it, each with
/// the whole AU's size in its AU-header and the marker on the last (RFC 3640 §3.2.3.2).
fn aac(header: &mut Header, room: usize, au: &[u8], ts: u32) -> Result<Vec<Vec<u8>>, String> {
    if au.is_empty() || au.len() > AAC_MAX_AU {
        return Err(format!(
            "an AAC frame of {} bytes (1 to {AAC_MAX_AU} can be sent)",
            au.len()
        ));
    }
    let [hi, lo] = ((au.len() as u16) << 3).to_be_bytes();
    let headers = [0, 16, hi, lo];
    let chunks: Vec<&[u8]> = au.chunks(room).collect();
    let n = chunks.len();
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| header.packet(ts, i + 1 == n, &[&headers, chunk]))
        .collect())
}

/// Splits length-prefixed NAL units (AVCC); empty units are skipped.
pub(super) fn nal_units(data: &[u8], length_size: u8) -> Result<Vec<&[u8]>, String> {
    let size = usize::from(length_size);
    if !(1..=4).contains(&size) {
        return Err(format!("NAL length size {size} (1 to 4 bytes can be read)"));
    }
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < size {
            return Err("a frame ends inside a NAL length".into());
        }
        let len = rest[..size]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[size..];
        if len > rest.len() {
            return Err(format!(
                "a NAL unit of {len} bytes in the {} left of its frame",
                rest.len()
            ));
        }
        if len > 0 {
            nals.push(&rest[..len]);
        }
        rest = &rest[len..];
    }
    Ok(nals)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1e];
    const PPS: [u8; 3] = [0x68, 0xce, 0x3c];

    fn h264(max: usize) -> Packetizer {
        let codec = Codec::H264 {
            sps: SPS.to_vec(),
            pps: PPS.to_vec(),
            length_size: 4,
        };
        Packetizer::new(codec, 96, max, [0xdead_beef, 65_534, 1000])
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    fn seq(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[2], p[3]])
    }

    fn ts(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    }

    fn marker(p: &[u8]) -> bool {
        p[1] & 0x80 != 0
    }

    #[test]
    fn a_small_keyframe_is_sps_pps_then_the_slice_with_the_marker_on_the_last() {
        let mut p = h264(1400);
        let idr = [0x65, 1, 2, 3];
        let packets = p
            .packetize(3000, true, &avcc(&[&[0x09, 0xf0], &idr]))
            .unwrap();
        assert_eq!(
            packets.len(),
            3,
            "the AUD is dropped, SPS and PPS come first"
        );
        assert_eq!(&packets[0][12..], &SPS);
        assert_eq!(&packets[1][12..], &PPS);
        assert_eq!(&packets[2][12..], &idr);
        assert_eq!(
            packets.iter().map(|p| marker(p)).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(
            packets.iter().map(|p| seq(p)).collect::<Vec<_>>(),
            [65_534, 65_535, 0]
        );
        assert!(packets
            .iter()
            .all(|p| ts(p) == 4000 && p[0] == 0x80 && p[1] & 0x7f == 96));
        assert_eq!(&packets[0][8..12], &0xdead_beefu32.to_be_bytes());
    }

    #[test]
    fn a_keyframe_carrying_its_own_parameter_sets_is_sent_as_it_is() {
        let mut p = h264(1400);
        let packets = p
            .packetize(0, true, &avcc(&[&SPS, &PPS, &[0x65, 9]]))
            .unwrap();
        assert_eq!(packets.len(), 3);
        let delta = p.packetize(3000, false, &avcc(&[&[0x41, 7]])).unwrap();
        assert_eq!(delta.len(), 1, "no parameter sets before a delta frame");
    }

    #[test]
    fn a_large_nal_is_cut_into_fu_a_fragments_that_reassemble() {
        let mut p = h264(100);
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..1000).map(|i| i as u8))
            .collect();
        let packets = p.packetize(0, false, &avcc(&[&nal])).unwrap();
        assert!(packets.iter().all(|p| p.len() <= 100));
        let mut rebuilt = vec![(packets[0][12] & 0xe0) | (packets[0][13] & 0x1f)];
        for (i, pk) in packets.iter().enumerate() {
            assert_eq!(pk[12] & 0x1f, 28, "FU-A indicator");
            assert_eq!(pk[13] & 0x80 != 0, i == 0, "start bit");
            assert_eq!(pk[13] & 0x40 != 0, i + 1 == packets.len(), "end bit");
            assert_eq!(marker(pk), i + 1 == packets.len());
            rebuilt.extend_from_slice(&pk[14..]);
        }
        assert_eq!(rebuilt, nal);
    }

    #[test]
    fn a_broken_length_prefix_is_an_error_and_sends_nothing() {
        let mut p = h264(1400);
        let mut bad = avcc(&[&[0x41, 1, 2]]);
        bad[3] = 50;
        assert!(p.packetize(0, false, &bad).is_err());
        assert!(p.packetize(0, false, &[0, 0]).is_err());
        let next = p.packetize(0, false, &avcc(&[&[0x41]])).unwrap();
        assert_eq!(
            seq(&next[0]),
            65_534,
            "no sequence number was spent on the bad frames"
        );
    }

    #[test]
    fn aac_frames_get_one_au_header_and_large_ones_are_fragmented() {
        let codec = Codec::Aac {
            config: vec![0x11, 0x90],
            sample_rate: 48_000,
            channels: 2,
        };
        let mut p = Packetizer::new(codec, 97, 1400, [1, 0, 0]);
        let packets = p.packetize(1024, true, &[7; 300]).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(
            &packets[0][12..16],
            &[0, 16, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]
        );
        assert_eq!(packets[0].len(), 12 + 4 + 300);
        assert!(marker(&packets[0]));
        assert_eq!(ts(&packets[0]), 1024);

        let big = p.packetize(2048, true, &[9; 3000]).unwrap();
        assert_eq!(big.len(), 3);
        assert!(big
            .iter()
            .all(|pk| pk.len() <= 1400 && pk[12..16] == [0, 16, 0x5d, 0xc0]));
        assert_eq!(
            big.iter().map(|pk| marker(pk)).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(big.iter().map(|pk| pk.len() - 16).sum::<usize>(), 3000);
        assert!(p.packetize(0, true, &[0; 9000]).is_err());
    }
}
