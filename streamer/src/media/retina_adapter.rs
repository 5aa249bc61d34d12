//! RTP packets in, [`Frame`]s out, through retina's depacketizers.
//!
//! Contract:
//!
//! - **This file is the only place slotcast touches retina's hidden API.** retina 0.4.21
//!   exposes its push-side depacketizer only as `#[doc(hidden)]` items meant for its fuzzers
//!   and benchmarks, and that API breaks between patch releases (0.4.19 → 0.4.20; see
//!   docs/dependencies.md). Older releases had
//!   `codec::Depacketizer::push(rtp::ReceivedPacket)` and a `pull` taking connection
//!   contexts; in 0.4.21 depacketizers read payloads from a shared ring buffer, `push` is
//!   `pub(crate)`, and the only way in is
//!   `testutil::DepacketizeBuf::push(&mut Depacketizer, rtp::PacketMeta, &[u8])`. retina is
//!   therefore pinned exactly (`=0.4.21`), and the hidden calls are these, all below:
//!   `codec::Depacketizer::{new, set_frame_format, pull, parameters}`,
//!   `testutil::DepacketizeBuf::{new, push}`, the `rtp::PacketMeta` literal and
//!   `PacketContext::dummy()`. Moving to another retina version means rereading its source
//!   for these and rerunning `tests/retina_ffmpeg.rs` (real ffmpeg output).
//! - **Sans-IO.** [`Depacketizer::push_rtp`] takes one RTP packet as received (a UDP datagram
//!   or one RTSP interleaved frame); [`Depacketizer::pull`] hands out complete frames. No
//!   clock, no socket.
//! - **RTP is parsed here**, not by retina: the header parser is ours ([`parse_rtp`]) so its
//!   errors are exact. Sequence numbers and timestamps are extended to 64 bits here; gaps in
//!   the sequence become retina's `loss` (it drops damaged access units); a packet up to
//!   100 behind the highest seen is a late or duplicate UDP packet and is skipped (counted in
//!   [`Depacketizer::late_packets`]); further behind, a changed SSRC or payload type, or a
//!   malformed header is an error. Such errors leave the depacketizer usable: the caller
//!   decides whether to drop the publisher.
//! - **Frames** are shaped by [`super::frames::Framer`], as for a pulled camera: video `data`
//!   in MP4 sample format (retina's `FrameFormat::MP4`), one raw AAC access unit for audio,
//!   `pts` counted from the first packet's RTP timestamp in the track's clock rate, `dts =
//!   pts`, parameters on the first frame and whenever retina reports new ones (from the SDP's
//!   `sprop-parameter-sets` / `config=` or in band; video before any is dropped). Aligning
//!   tracks with each other needs RTCP sender reports; [`Depacketizer::first_rtp_timestamp`]
//!   gives the base for that.
//! - **Bounded**: at most [`MAX_READY_FRAMES`] frames wait for `pull`, and at most
//!   [`MAX_UNFINISHED_BYTES`] of payload are pushed without a frame coming out (retina pins
//!   an unfinished access unit's bytes in its buffer); past either, `push_rtp` errs (past the
//!   second, for good).
//! - **Panics**: retina asserts its own invariants with panics. A panic inside retina is
//!   caught here, logged, turned into an error, and poisons this depacketizer (every later
//!   push errs), so a peer that trips a retina bug loses its stream, not the process.

use std::collections::VecDeque;
use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};
use std::panic::{catch_unwind, AssertUnwindSafe};

use retina::codec::FrameFormat;

use super::frames::{Codec, Framer};
use super::{CodecParams, Frame, TrackSpec};
use crate::StreamerError;

/// The fixed part of an RTP header (RFC 3550 section 5.1).
const RTP_HEADER_LEN: usize = 12;

/// retina stores payload lengths as `u16`; no UDP datagram or RTSP interleaved frame is larger.
const MAX_RTP_PACKET: usize = u16::MAX as usize;

/// How far behind the highest sequence number a packet may be and still count as merely late
/// (RFC 3550 appendix A.1 uses the same figure).
const MAX_MISORDER: u16 = 100;

/// Frames that may wait for [`Depacketizer::pull`] before `push_rtp` refuses more packets.
pub const MAX_READY_FRAMES: usize = 64;

/// Payload bytes that may be pushed without a frame coming out: an access unit this large is
/// not live video slotcast can serve, and retina keeps all of it in memory until it ends.
/// Reaching it ends the stream: retina has no reset, so every later push errs too.
pub const MAX_UNFINISHED_BYTES: usize = 16 << 20;

/// The RTP fixed header fields slotcast uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// One parsed RTP packet: the header and the payload between the CSRCs/extension and the
/// padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub payload: &'a [u8],
}

/// Why an RTP packet was refused. A packet is always whole (one datagram or one interleaved
/// frame), so every error here is "bad bytes", never "need more".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet of {len} bytes is shorter than the 12-byte header")]
    TooShort { len: usize },
    #[error("RTP packet of {len} bytes is longer than 65535 bytes")]
    TooLong { len: usize },
    #[error("RTP version {version}, expected 2")]
    Version { version: u8 },
    #[error("RTP header lists {count} CSRCs, needing {needed} bytes, in a {len}-byte packet")]
    CsrcBeyondEnd {
        count: u8,
        needed: usize,
        len: usize,
    },
    #[error("RTP header extension needs {needed} bytes in a {len}-byte packet")]
    ExtensionBeyondEnd { needed: usize, len: usize },
    #[error("RTP padding flag set with a padding length of 0")]
    ZeroPadding,
    #[error("RTP padding of {padding} bytes exceeds the {available} bytes after the header")]
    PaddingBeyondPayload { padding: usize, available: usize },
}

/// Parses one RTP packet (RFC 3550 section 5.1): fixed header, CSRC list, header extension,
/// payload, padding.
pub fn parse_rtp(packet: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let len = packet.len();
    if len > MAX_RTP_PACKET {
        return Err(RtpError::TooLong { len });
    }
    let Some(fixed) = packet.first_chunk::<RTP_HEADER_LEN>() else {
        return Err(RtpError::TooShort { len });
    };
    let version = fixed[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version { version });
    }
    let has_padding = fixed[0] & 0b0010_0000 != 0;
    let has_extension = fixed[0] & 0b0001_0000 != 0;
    let csrc_count = fixed[0] & 0b0000_1111;
    let header = RtpHeader {
        marker: fixed[1] & 0b1000_0000 != 0,
        payload_type: fixed[1] & 0b0111_1111,
        sequence_number: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
    };

    let mut start = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
    if start > len {
        return Err(RtpError::CsrcBeyondEnd {
            count: csrc_count,
            needed: start,
            len,
        });
    }
    if has_extension {
        // 16 bits profile-defined, 16 bits length in 32-bit words, then the words.
        let Some(&[_, _, hi, lo]) = packet.get(start..start + 4) else {
            return Err(RtpError::ExtensionBeyondEnd {
                needed: start + 4,
                len,
            });
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([hi, lo]));
        if start > len {
            return Err(RtpError::ExtensionBeyondEnd { needed: start, len });
        }
    }
    let mut end = len;
    if has_padding {
        // The last byte counts the padding, itself included, so it must lie after the header.
        let available = len - start;
        let Some(&count) = packet[start..].last() else {
            return Err(RtpError::PaddingBeyondPayload {
                padding: 1,
                available,
            });
        };
        let padding = usize::from(count);
        if padding == 0 {
            return Err(RtpError::ZeroPadding);
        }
        if padding > available {
            return Err(RtpError::PaddingBeyondPayload { padding, available });
        }
        end -= padding;
    }
    Ok(RtpPacket {
        header,
        payload: &packet[start..end],
    })
}

/// Where a 16-bit sequence number falls against the highest extended one seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqStep {
    /// Newer: its extended value, and how many packets in between never came.
    Next { extended: u64, lost: u16 },
    /// Not newer: this many behind the highest (0 for a duplicate).
    Behind(u16),
}

/// Extends `seq` against `highest` (RFC 3550 appendix A.1 without the restart probation):
/// half the 16-bit space ahead is newer, the other half behind, across wrap-around.
fn step_seq(highest: u64, seq: u16) -> SeqStep {
    // Truncation intended: the low 16 bits are what the wire carries.
    let delta = seq.wrapping_sub(highest as u16) as i16;
    if delta > 0 {
        SeqStep::Next {
            extended: highest + delta.unsigned_abs() as u64,
            lost: delta.unsigned_abs() - 1,
        }
    } else {
        SeqStep::Behind(delta.unsigned_abs())
    }
}

/// Extends a 32-bit RTP timestamp against the previous packet's: within ±2^31 ticks (6.6 h at
/// 90 kHz) of it, forwards or backwards, across wrap-around.
fn extend_timestamp(prev_extended: i64, prev: u32, timestamp: u32) -> i64 {
    prev_extended + i64::from(timestamp.wrapping_sub(prev) as i32)
}

/// Per-SSRC receive state, set by the first accepted packet.
#[derive(Clone, Copy, Debug)]
struct Sequence {
    ssrc: u32,
    first_timestamp: u32,
    highest_seq: u64,
    last_timestamp: u32,
    extended_timestamp: i64,
}

/// One track's depacketizer: RTP packets in, frames out. See the module docs for the contract.
pub struct Depacketizer {
    track: usize,
    framer: Framer,
    payload_type: u8,
    clock_rate: NonZeroU32,
    retina: retina::codec::Depacketizer,
    buf: retina::testutil::DepacketizeBuf,
    sequence: Option<Sequence>,
    ready: VecDeque<Frame>,
    unfinished_bytes: usize,
    lost_packets: u64,
    late_packets: u64,
    poisoned: bool,
}

impl fmt::Debug for Depacketizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Depacketizer")
            .field("track", &self.track)
            .field("framer", &self.framer)
            .field("payload_type", &self.payload_type)
            .field("sequence", &self.sequence)
            .field("ready", &self.ready.len())
            .field("lost_packets", &self.lost_packets)
            .field("late_packets", &self.late_packets)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn error(track: usize, msg: impl fmt::Display) -> StreamerError {
    StreamerError::Depacketize(format!("track {track}: {msg}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Depacketizer {
    /// A depacketizer for the track `spec` describes; `track` is the index stamped on its
    /// frames. Takes H264, H265 and MPEG4-GENERIC (AAC-hbr); anything else is an error.
    pub fn new(track: usize, spec: &TrackSpec) -> Result<Self, StreamerError> {
        let Some(codec) = Codec::of(spec.kind, &spec.encoding_name) else {
            return Err(error(
                track,
                format_args!(
                    "unsupported {:?} encoding {:?} (slotcast takes H264 and H265 video, \
                     MPEG4-GENERIC audio)",
                    spec.kind, spec.encoding_name
                ),
            ));
        };
        let (media, encoding) = codec.retina_names();
        if spec.payload_type > 127 {
            return Err(error(
                track,
                format_args!("payload type {} is not 7 bits", spec.payload_type),
            ));
        }
        let clock_rate =
            NonZeroU32::new(spec.clock_rate).ok_or_else(|| error(track, "clock rate 0"))?;
        let channels = spec
            .channels
            .map(|c| NonZeroU16::new(c).ok_or_else(|| error(track, "channel count 0")))
            .transpose()?;
        let fmtp = spec.fmtp.as_deref();
        let retina = catch_unwind(|| -> Result<_, String> {
            let mut d = retina::codec::Depacketizer::new(
                media,
                encoding,
                clock_rate.get(),
                channels,
                fmtp,
            )?;
            // 4-byte NAL lengths, parameter sets only in extra data (avcC/hvcC), raw AAC with
            // the AudioSpecificConfig as extra data.
            d.set_frame_format(FrameFormat::MP4);
            Ok(d)
        })
        .map_err(|p| {
            error(
                track,
                format_args!("retina panicked: {}", panic_message(&*p)),
            )
        })?
        .map_err(|e| error(track, e))?;
        // Sized for a few packets; retina grows it while an access unit is unfinished.
        let buf = retina::testutil::DepacketizeBuf::new(64 * 1024);
        Ok(Self {
            track,
            framer: Framer::new(track, codec),
            payload_type: spec.payload_type,
            clock_rate,
            retina,
            buf,
            sequence: None,
            ready: VecDeque::new(),
            unfinished_bytes: 0,
            lost_packets: 0,
            late_packets: 0,
            poisoned: false,
        })
    }

    /// Takes one RTP packet as received (12-byte header, CSRCs, extension, payload, padding).
    ///
    /// A late or duplicate packet (up to 100 behind) is skipped and counted. A malformed
    /// packet, a foreign payload type or SSRC, a sequence number far behind, or a payload
    /// retina refuses is an error; the state stays usable, and the caller decides whether the
    /// publisher goes. Frames this packet completes wait for [`Self::pull`] (at most
    /// [`MAX_READY_FRAMES`] of them).
    pub fn push_rtp(&mut self, packet: &[u8]) -> Result<(), StreamerError> {
        let track = self.track;
        if self.poisoned {
            return Err(error(track, "depacketizer disabled after a retina panic"));
        }
        let rtp = parse_rtp(packet).map_err(|e| error(track, e))?;
        let h = rtp.header;
        if h.payload_type != self.payload_type {
            return Err(error(
                track,
                format_args!(
                    "payload type {} where the SDP says {}",
                    h.payload_type, self.payload_type
                ),
            ));
        }
        // Bounds first, so a refused packet is not in the sequence state and retina learns of
        // it as loss once packets flow again.
        if self.ready.len() >= MAX_READY_FRAMES {
            return Err(error(
                track,
                format_args!("{} frames waiting for pull", self.ready.len()),
            ));
        }
        if self.unfinished_bytes + rtp.payload.len() > MAX_UNFINISHED_BYTES {
            return Err(error(
                track,
                format_args!("over {MAX_UNFINISHED_BYTES} payload bytes without a complete frame"),
            ));
        }
        let (sequence, loss) = match self.sequence {
            None => (
                Sequence {
                    ssrc: h.ssrc,
                    first_timestamp: h.timestamp,
                    highest_seq: u64::from(h.sequence_number),
                    last_timestamp: h.timestamp,
                    extended_timestamp: i64::from(h.timestamp),
                },
                0,
            ),
            Some(s) if s.ssrc != h.ssrc => {
                return Err(error(
                    track,
                    format_args!("SSRC changed from {:08x} to {:08x}", s.ssrc, h.ssrc),
                ));
            }
            Some(s) => match step_seq(s.highest_seq, h.sequence_number) {
                SeqStep::Behind(behind) if behind <= MAX_MISORDER => {
                    self.late_packets += 1;
                    return Ok(());
                }
                SeqStep::Behind(behind) => {
                    return Err(error(
                        track,
                        format_args!(
                            "sequence number {} is {behind} behind the highest seen",
                            h.sequence_number
                        ),
                    ));
                }
                SeqStep::Next { extended, lost } => (
                    Sequence {
                        highest_seq: extended,
                        last_timestamp: h.timestamp,
                        extended_timestamp: extend_timestamp(
                            s.extended_timestamp,
                            s.last_timestamp,
                            h.timestamp,
                        ),
                        ..s
                    },
                    lost,
                ),
            },
        };
        self.sequence = Some(sequence);
        self.lost_packets += u64::from(loss);

        self.unfinished_bytes += rtp.payload.len();
        let timestamp = retina::Timestamp::new(
            sequence.extended_timestamp,
            self.clock_rate,
            sequence.first_timestamp,
        )
        .ok_or_else(|| error(track, "RTP timestamp out of range"))?;
        let meta = retina::rtp::PacketMeta {
            ctx: retina::PacketContext::dummy(),
            stream_id: track,
            timestamp,
            sequence_number: h.sequence_number,
            ssrc: h.ssrc,
            mark: h.marker,
            loss,
        };
        let pushed = self.guarded(|d| d.buf.push(&mut d.retina, meta, rtp.payload))?;
        // retina may hold frames (and errors) even when the push failed, and must be drained
        // before the next push, so drain first and report the push's own error first.
        let drained = self.drain();
        pushed.map_err(|e| error(track, format_args!("packet {}: {e}", h.sequence_number)))?;
        drained
    }

    /// The next complete frame, if any.
    pub fn pull(&mut self) -> Result<Option<Frame>, StreamerError> {
        Ok(self.ready.pop_front())
    }

    /// The track's current parameters, if known: from the SDP (`sprop-parameter-sets`,
    /// `config=`) before the first frame, then as the stream updates them.
    pub fn params(&self) -> Option<CodecParams> {
        self.framer.params(self.retina.parameters())
    }

    /// The RTP timestamp of the first accepted packet: frames' `pts` count from it.
    pub fn first_rtp_timestamp(&self) -> Option<u32> {
        self.sequence.map(|s| s.first_timestamp)
    }

    /// Packets that never arrived, from gaps in the sequence numbers.
    pub fn lost_packets(&self) -> u64 {
        self.lost_packets
    }

    /// Late or duplicate packets skipped.
    pub fn late_packets(&self) -> u64 {
        self.late_packets
    }

    /// Video frames dropped because no parameters were known yet.
    pub fn dropped_frames(&self) -> u64 {
        self.framer.dropped_frames()
    }

    /// Runs `f` on retina's state, turning a panic into an error that poisons `self`.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Result<T, StreamerError> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(t) => Ok(t),
            Err(payload) => {
                self.poisoned = true;
                let msg = panic_message(&*payload);
                tracing::error!(track = self.track, "retina panicked: {msg}");
                Err(error(self.track, format_args!("retina panicked: {msg}")))
            }
        }
    }

    /// Moves everything retina has finished into `ready`; returns the first error among them.
    fn drain(&mut self) -> Result<(), StreamerError> {
        let mut first_error = None;
        while let Some(item) = self.guarded(|d| d.retina.pull())? {
            let framed = match item {
                Ok(item) => {
                    self.unfinished_bytes = 0;
                    self.framer.frame(item, self.retina.parameters())
                }
                Err(e) => Err(error(self.track, format_args!("{e:?}"))),
            };
            match framed {
                Ok(Some(frame)) => self.ready.push_back(frame),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackKind;
    use bytes::Bytes;

    fn assert_send<T: Send>() {}

    #[test]
    fn depacketizer_is_send() {
        assert_send::<Depacketizer>();
    }

    /// A 12-byte header: V=2 plus `flags` (P, X, CC) in byte 0, M+PT in byte 1.
    fn header(flags: u8, m_pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80 | flags, m_pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        // CC=1, X, P; marker, PT 96.
        let mut p = header(0x20 | 0x10 | 0x01, 0x80 | 96, 0x1234, 0xdead_beef, 7);
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension: 1 word
        p.extend_from_slice(b"payload");
        p.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let rtp = parse_rtp(&p).unwrap();
        assert_eq!(
            rtp.header,
            RtpHeader {
                marker: true,
                payload_type: 96,
                sequence_number: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 7,
            }
        );
        assert_eq!(rtp.payload, b"payload");

        let bare = header(0, 0, 1, 2, 3);
        assert_eq!(parse_rtp(&bare).unwrap().payload, b"");
    }

    #[test]
    fn malformed_headers() {
        let with = |mut p: Vec<u8>, tail: &[u8]| {
            p.extend_from_slice(tail);
            p
        };
        let mut version_1 = header(0, 96, 1, 2, 3);
        version_1[0] = 0x40;
        use RtpError::*;
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<u8>, RtpError)> = vec![
            ("empty", vec![], TooShort { len: 0 }),
            ("11 bytes", header(0, 96, 1, 2, 3)[..11].to_vec(), TooShort { len: 11 }),
            ("too long", vec![0x80; 65_536], TooLong { len: 65_536 }),
            ("version 1", version_1, Version { version: 1 }),
            ("version 0", vec![0; 12], Version { version: 0 }),
            ("15 CSRCs in 20 bytes", with(header(0x0f, 96, 1, 2, 3), &[0; 8]),
                CsrcBeyondEnd { count: 15, needed: 72, len: 20 }),
            ("extension header cut short", with(header(0x10, 96, 1, 2, 3), &[0xbe, 0xde]),
                ExtensionBeyondEnd { needed: 16, len: 14 }),
            ("extension words beyond end",
                with(header(0x10, 96, 1, 2, 3), &[0xbe, 0xde, 0, 2, 1, 2, 3, 4]),
                ExtensionBeyondEnd { needed: 24, len: 20 }),
            ("extension after a CSRC, beyond end", with(header(0x11, 96, 1, 2, 3), &[0, 0, 0, 1]),
                ExtensionBeyondEnd { needed: 20, len: 16 }),
            ("padding length 0", with(header(0x20, 96, 1, 2, 3), &[1, 2, 0]), ZeroPadding),
            ("padding beyond payload", with(header(0x20, 96, 1, 2, 3), &[1, 2, 4]),
                PaddingBeyondPayload { padding: 4, available: 3 }),
            ("padding flag, nothing after the header", header(0x20, 96, 1, 2, 3),
                PaddingBeyondPayload { padding: 1, available: 0 }),
        ];
        for (name, packet, want) in cases {
            assert_eq!(parse_rtp(&packet), Err(want), "{name}");
        }
        // The padding count includes itself: a packet that is all padding is fine.
        let p = with(header(0x20, 96, 1, 2, 3), &[9, 9, 3]);
        assert_eq!(parse_rtp(&p).unwrap().payload, b"");
    }

    #[test]
    fn sequence_extension_across_wrap() {
        assert_eq!(
            step_seq(65_535, 0),
            SeqStep::Next {
                extended: 65_536,
                lost: 0
            }
        );
        assert_eq!(
            step_seq(65_534, 2),
            SeqStep::Next {
                extended: 65_538,
                lost: 3
            }
        );
        assert_eq!(
            step_seq(3 * 65_536 + 10, 11),
            SeqStep::Next {
                extended: 3 * 65_536 + 11,
                lost: 0
            }
        );
        assert_eq!(step_seq(65_536, 65_535), SeqStep::Behind(1));
        assert_eq!(step_seq(70_000, 4_464), SeqStep::Behind(0));
        // Half the space ahead is newer, the other half behind.
        assert_eq!(
            step_seq(0, 32_767),
            SeqStep::Next {
                extended: 32_767,
                lost: 32_766
            }
        );
        assert_eq!(step_seq(65_536, 32_768), SeqStep::Behind(32_768));
    }

    #[test]
    fn timestamp_extension_across_wrap() {
        let before = 0xffff_ff00_u32;
        let ext = extend_timestamp(i64::from(before), before, 0x100);
        assert_eq!(ext, 0x1_0000_0100);
        // And back across it (a B-frame-like step backwards).
        assert_eq!(extend_timestamp(ext, 0x100, before), i64::from(before));
        // A second wrap.
        assert_eq!(
            extend_timestamp(0x1_ffff_fff0, 0xffff_fff0, 0x10),
            0x2_0000_0010
        );
    }

    fn aac_spec() -> TrackSpec {
        TrackSpec {
            kind: TrackKind::Audio,
            media: "audio".into(),
            encoding_name: "mpeg4-generic".into(),
            payload_type: 97,
            clock_rate: 48_000,
            channels: Some(2),
            fmtp: Some(
                "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;\
                 indexdeltalength=3;config=1190"
                    .into(),
            ),
            control: None,
        }
    }

    /// One AAC-hbr packet carrying `aus` whole access units.
    fn aac_packet(seq: u16, ts: u32, aus: &[&[u8]]) -> Vec<u8> {
        let mut p = header(0, 0x80 | 97, seq, ts, 0x5eed);
        p.extend_from_slice(&((aus.len() as u16) * 16).to_be_bytes());
        for au in aus {
            p.extend_from_slice(&((au.len() as u16) << 3).to_be_bytes());
        }
        for au in aus {
            p.extend_from_slice(au);
        }
        p
    }

    fn pull_all(d: &mut Depacketizer) -> Vec<Frame> {
        std::iter::from_fn(|| d.pull().unwrap()).collect()
    }

    #[test]
    fn aac_frames_across_wrap_with_loss_and_duplicates() {
        let mut d = Depacketizer::new(1, &aac_spec()).unwrap();
        let want = CodecParams::Aac {
            asc: Bytes::from_static(&[0x11, 0x90]),
            sample_rate: 48_000,
            channels: 2,
            codec: "mp4a.40.2".into(),
        };
        // Known from the SDP's config= before any packet.
        assert_eq!(d.params(), Some(want.clone()));

        let t0 = u32::MAX - 1023;
        d.push_rtp(&aac_packet(65_535, t0, &[b"first"])).unwrap();
        let frames = pull_all(&mut d);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].track, 1);
        assert_eq!((frames[0].pts, frames[0].dts), (0, 0));
        assert!(frames[0].keyframe);
        assert_eq!(&frames[0].data[..], b"first");
        assert_eq!(frames[0].params, Some(want));
        assert_eq!(d.first_rtp_timestamp(), Some(t0));

        // Two AUs in one packet, across both wraps.
        d.push_rtp(&aac_packet(0, t0.wrapping_add(1024), &[b"a", b"bb"]))
            .unwrap();
        let frames = pull_all(&mut d);
        assert_eq!(
            frames
                .iter()
                .map(|f| (f.pts, &f.data[..]))
                .collect::<Vec<_>>(),
            [(1024, &b"a"[..]), (2048, &b"bb"[..])]
        );
        assert!(frames.iter().all(|f| f.params.is_none()));

        // A duplicate is skipped; a gap of two is loss.
        d.push_rtp(&aac_packet(0, t0.wrapping_add(1024), &[b"a", b"bb"]))
            .unwrap();
        assert_eq!(pull_all(&mut d), []);
        assert_eq!(d.late_packets(), 1);
        d.push_rtp(&aac_packet(3, t0.wrapping_add(5 * 1024), &[b"c"]))
            .unwrap();
        let frames = pull_all(&mut d);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].pts, 5 * 1024);
        assert_eq!(d.lost_packets(), 2);
    }

    #[test]
    fn refused_packets_leave_the_depacketizer_usable() {
        let mut d = Depacketizer::new(0, &aac_spec()).unwrap();
        d.push_rtp(&aac_packet(1_000, 0, &[b"x"])).unwrap();
        pull_all(&mut d);
        let err = |r: Result<(), StreamerError>| match r {
            Err(StreamerError::Depacketize(msg)) => msg,
            other => panic!("expected a depacketize error, got {other:?}"),
        };

        assert_eq!(
            err(d.push_rtp(&[0x80, 97])),
            "track 0: RTP packet of 2 bytes is shorter than the 12-byte header"
        );
        let mut wrong_pt = aac_packet(1_001, 1024, &[b"x"]);
        wrong_pt[1] = 0x80 | 96;
        assert_eq!(
            err(d.push_rtp(&wrong_pt)),
            "track 0: payload type 96 where the SDP says 97"
        );
        let mut wrong_ssrc = aac_packet(1_001, 1024, &[b"x"]);
        wrong_ssrc[11] ^= 1;
        assert_eq!(
            err(d.push_rtp(&wrong_ssrc)),
            "track 0: SSRC changed from 00005eed to 00005eec"
        );
        assert_eq!(
            err(d.push_rtp(&aac_packet(800, 1024, &[b"x"]))),
            "track 0: sequence number 800 is 200 behind the highest seen"
        );
        // retina's own refusal: an AU header count of zero.
        let mut empty = header(0, 0x80 | 97, 1_001, 1024, 0x5eed);
        empty.extend_from_slice(&[0, 0]);
        assert!(err(d.push_rtp(&empty)).contains("aggregate with no headers"));

        d.push_rtp(&aac_packet(1_002, 2048, &[b"y"])).unwrap();
        let frames = pull_all(&mut d);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].pts, 2048);
    }

    #[test]
    fn unpulled_frames_are_bounded() {
        let mut d = Depacketizer::new(0, &aac_spec()).unwrap();
        for i in 0..MAX_READY_FRAMES as u16 {
            d.push_rtp(&aac_packet(i, u32::from(i) * 1024, &[b"x"]))
                .unwrap();
        }
        let over = aac_packet(64, 64 * 1024, &[b"x"]);
        assert!(d.push_rtp(&over).is_err());
        assert_eq!(pull_all(&mut d).len(), MAX_READY_FRAMES);
        // The refused packet counts as lost once packets flow again.
        d.push_rtp(&aac_packet(65, 65 * 1024, &[b"y"])).unwrap();
        assert_eq!(d.lost_packets(), 1);
        assert_eq!(pull_all(&mut d)[0].pts, 65 * 1024);
    }

    #[test]
    fn unsupported_tracks_are_refused() {
        let spec = |kind, name: &str, clock_rate| TrackSpec {
            kind,
            media: "x".into(),
            encoding_name: name.into(),
            payload_type: 96,
            clock_rate,
            channels: None,
            fmtp: None,
            control: None,
        };
        for (spec, want) in [
            (
                spec(TrackKind::Video, "VP8", 90_000),
                "track 2: unsupported Video encoding \"VP8\"",
            ),
            (
                spec(TrackKind::Audio, "H264", 90_000),
                "track 2: unsupported Audio encoding \"H264\"",
            ),
            (
                spec(TrackKind::Video, "H264", 8_000),
                "track 2: invalid H.264 clock rate 8000",
            ),
            (
                spec(TrackKind::Audio, "MPEG4-GENERIC", 48_000),
                "track 2: AAC requires format specific params",
            ),
        ] {
            match Depacketizer::new(2, &spec) {
                Err(StreamerError::Depacketize(msg)) => {
                    assert!(msg.starts_with(want), "{msg:?} should start with {want:?}")
                }
                other => panic!("{want}: got {other:?}"),
            }
        }
    }

    fn h264_spec(fmtp: &str) -> TrackSpec {
        TrackSpec {
            kind: TrackKind::Video,
            media: "video".into(),
            encoding_name: "H264".into(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: None,
            fmtp: Some(fmtp.into()),
            control: Some("streamid=0".into()),
        }
    }

    #[test]
    fn h264_params_from_sdp_and_mp4_sample_format() {
        // SPS/PPS of a 240x160 baseline stream (from retina's own benchmark SDP).
        let mut d = Depacketizer::new(
            0,
            &h264_spec(
                "packetization-mode=1;profile-level-id=42C01E;\
                 sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==",
            ),
        )
        .unwrap();
        let Some(CodecParams::H264 {
            avcc,
            width,
            height,
            codec,
        }) = d.params()
        else {
            panic!(
                "no H.264 params from sprop-parameter-sets: {:?}",
                d.params()
            );
        };
        assert_eq!((width, height, codec.as_str()), (240, 160, "avc1.42C01E"));
        // AVCDecoderConfigurationRecord: version 1, profile/compat/level from the SPS, 4-byte
        // NAL lengths, one SPS, then one PPS.
        assert_eq!(&avcc[..6], &[0x01, 0x42, 0xc0, 0x1e, 0xff, 0xe1]);

        // One single-NAL-unit packet: an IDR slice, marked.
        let mut p = header(0, 0x80 | 96, 7, 90_000, 1);
        p.extend_from_slice(&[0x65, 0xb8, 0x40, 0xf0]);
        d.push_rtp(&p).unwrap();
        let frames = pull_all(&mut d);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].pts, 0);
        // 4-byte length prefix, no SPS/PPS inserted in band.
        assert_eq!(&frames[0].data[..], &[0, 0, 0, 4, 0x65, 0xb8, 0x40, 0xf0]);
        assert!(matches!(frames[0].params, Some(CodecParams::H264 { .. })));
    }

    #[test]
    fn h264_frames_before_parameters_are_dropped() {
        let mut d = Depacketizer::new(0, &h264_spec("packetization-mode=1")).unwrap();
        assert_eq!(d.params(), None);
        let mut p = header(0, 0x80 | 96, 7, 90_000, 1);
        p.extend_from_slice(&[0x65, 0xb8, 0x40, 0xf0]);
        d.push_rtp(&p).unwrap();
        assert_eq!(pull_all(&mut d), []);
        assert_eq!(d.dropped_frames(), 1);
    }
}
