//! MPEG-TS as SRT publishers send it, into elementary-stream units: each PES packet of the
//! first H.264 and the first AAC (ADTS) stream of the first program, whole, with its
//! timestamps unwrapped to 64 bits.
//!
//! Contract: sans-IO. [`TsDemux::push`] takes whole 188-byte packets (an SRT message holds
//! seven) and [`TsDemux::pop`] gives the units completed so far, in the order they
//! completed. mpeg2ts-reader parses the packets and the PAT and PMT (CRC-checked); the PES
//! headers, the reassembly, the limits and the clocks are ours (its PES reader ends a
//! packet only when the next begins; ours ends one of known length at its last byte). Bounded: a PES payload over
//! [`MAX_PES`], more than [`MAX_READY`] units not taken, or input that is not 188-byte
//! packets ends the stream with a [`TsError`]; nothing grows with what a publisher sends. A
//! PES of unbounded length (ffmpeg's video) is complete when the next one starts: one frame
//! later than one of known length (ffmpeg's audio).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PacketFilter,
    PatPacketFilter, PmtPacketFilter,
};
use mpeg2ts_reader::packet::{ContinuityCounter, Packet};
use mpeg2ts_reader::{packet_filter_switch, StreamType};

/// The largest PES payload taken (a 4K keyframe fits many times over).
pub const MAX_PES: usize = 8 << 20;
/// Units completed and not yet taken.
pub const MAX_READY: usize = 256;
/// The size of one transport stream packet.
pub const PACKET: usize = 188;

/// The 33-bit timestamps' clock.
pub const CLOCK_RATE: u32 = 90_000;

/// What an elementary stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// H.264 in Annex B byte stream format.
    H264,
    /// AAC in ADTS frames, one or more per unit.
    Aac,
}

/// One PES packet's payload, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub kind: Kind,
    /// Presentation and decode time on the 90 kHz clock, unwrapped (the first unit of each
    /// stream near its value as sent). A PES with only a PTS has it as both.
    pub pts: i64,
    pub dts: i64,
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("MPEG-TS input must be whole 188-byte packets starting with 0x47")]
    NotPackets,
    #[error("a PES packet over {MAX_PES} bytes")]
    PesTooLarge,
    #[error("a PES packet of the {0:?} stream without timestamps")]
    NoTimestamp(Kind),
    #[error("over {MAX_READY} units not taken")]
    Backlog,
}

packet_filter_switch! {
    Filter<Ctx> {
        Pat: PatPacketFilter<Ctx>,
        Pmt: PmtPacketFilter<Ctx>,
        Es: Elementary,
        Null: NullPacketFilter<Ctx>,
    }
}

/// What the demultiplexer's filters share: the units made, the streams chosen, the error.
pub struct Ctx {
    changeset: FilterChangeset<Filter>,
    ready: VecDeque<Unit>,
    failed: Option<TsError>,
    /// The streams taken so far (at most one of each kind).
    taken: Vec<Kind>,
}

impl DemuxContext for Ctx {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, req: FilterRequest<'_, '_>) -> Filter {
        match req {
            FilterRequest::ByPid(mpeg2ts_reader::psi::pat::PAT_PID) => {
                Filter::Pat(PatPacketFilter::default())
            }
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Filter::Pmt(PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream { stream_type, .. } => {
                let kind = match stream_type {
                    StreamType::H264 => Some(Kind::H264),
                    StreamType::ADTS => Some(Kind::Aac),
                    _ => None,
                };
                match kind.filter(|k| !self.taken.contains(k)) {
                    Some(kind) => {
                        self.taken.push(kind);
                        Filter::Es(Elementary::new(kind))
                    }
                    None => Filter::Null(NullPacketFilter::default()),
                }
            }
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => {
                Filter::Null(NullPacketFilter::default())
            }
        }
    }
}

impl Ctx {
    fn fail(&mut self, err: TsError) {
        self.failed.get_or_insert(err);
    }
}

/// One elementary stream being reassembled.
pub struct Elementary {
    kind: Kind,
    /// The PES under way: its timestamps (unwrapped) and, when its length is known, the
    /// payload bytes it still has to come.
    current: Option<(i64, i64, Option<usize>)>,
    payload: BytesMut,
    /// The last unwrapped decode time, to unwrap the next.
    last: Option<i64>,
    continuity: Option<ContinuityCounter>,
}

/// A PES header's timestamps, payload start and payload length (when bounded), from the
/// start of its first packet's payload (ISO/IEC 13818-1 2.4.3.6).
fn pes_header(pes: &[u8]) -> Option<(u64, u64, usize, Option<usize>)> {
    if pes.len() < 9 || pes[..3] != [0, 0, 1] || pes[6] >> 6 != 0b10 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
    let header_end = 9 + usize::from(pes[8]);
    let read = |at: usize| -> Option<u64> {
        let b = pes.get(at..at + 5)?;
        Some(
            (u64::from(b[0] >> 1 & 0x07) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1),
        )
    };
    let (pts, dts) = match pes[7] >> 6 {
        0b10 => {
            let pts = read(9)?;
            (pts, pts)
        }
        0b11 => (read(9)?, read(14)?),
        _ => return None,
    };
    if header_end > pes.len() {
        return None;
    }
    let payload = (length > 0).then(|| length.saturating_sub(3 + usize::from(pes[8])));
    Some((pts, dts, header_end, payload))
}

impl Elementary {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            current: None,
            payload: BytesMut::new(),
            last: None,
            continuity: None,
        }
    }

    /// `raw` (33 bits) as the 64-bit time nearest the last one.
    fn unwrap(&mut self, raw: u64) -> i64 {
        const WRAP: i64 = 1 << 33;
        let raw = (raw & (WRAP as u64 - 1)) as i64;
        let t = match self.last {
            None => raw,
            Some(last) => {
                let base = last - last.rem_euclid(WRAP);
                [base - WRAP + raw, base + raw, base + WRAP + raw]
                    .into_iter()
                    .min_by_key(|t| (t - last).abs())
                    .unwrap_or(raw)
            }
        };
        self.last = Some(t);
        t
    }

    /// The PES under way is complete: a unit, unless it was empty.
    fn finish(&mut self, ctx: &mut Ctx) {
        let Some((pts, dts, _)) = self.current.take() else {
            return;
        };
        if self.payload.is_empty() {
            return;
        }
        if ctx.ready.len() >= MAX_READY {
            ctx.fail(TsError::Backlog);
            self.payload.clear();
            return;
        }
        ctx.ready.push_back(Unit {
            kind: self.kind,
            pts,
            dts,
            data: self.payload.split().freeze(),
        });
    }

    /// Payload bytes of the PES under way; complete once its known length is reached.
    fn append(&mut self, ctx: &mut Ctx, data: &[u8]) {
        let Some((_, _, left)) = self.current.as_mut() else {
            return;
        };
        let data = match left {
            Some(left) => {
                let take = data.len().min(*left);
                *left -= take;
                &data[..take]
            }
            None => data,
        };
        if self.payload.len() + data.len() > MAX_PES {
            self.current = None;
            self.payload.clear();
            ctx.fail(TsError::PesTooLarge);
            return;
        }
        self.payload.extend_from_slice(data);
        if matches!(self.current, Some((_, _, Some(0)))) {
            self.finish(ctx);
        }
    }

    fn begin(&mut self, ctx: &mut Ctx, pes: &[u8]) {
        let Some((pts, dts, header_end, length)) = pes_header(pes) else {
            ctx.fail(TsError::NoTimestamp(self.kind));
            return;
        };
        // Decode time first: it only goes forward, so it anchors the unwrapping.
        let dts = self.unwrap(dts);
        let pts = dts + (pts as i64 - (dts & ((1 << 33) - 1))).rem_euclid(1 << 33);
        self.current = Some((pts, dts, length));
        self.append(ctx, &pes[header_end..]);
    }
}

impl PacketFilter for Elementary {
    type Ctx = Ctx;

    fn consume(&mut self, ctx: &mut Ctx, packet: &Packet<'_>) {
        let has_payload = packet.adaptation_control().has_payload();
        let cc = packet.continuity_counter();
        let continuous = match self.continuity {
            None => true,
            Some(last) if has_payload => cc.follows(last),
            Some(last) => cc.count() == last.count(),
        };
        self.continuity = Some(cc);
        if !continuous {
            // A lost packet: the PES under way is broken; the next one starts clean.
            self.current = None;
            self.payload.clear();
        }
        let Some(payload) = packet.payload() else {
            return;
        };
        if packet.payload_unit_start_indicator() {
            self.finish(ctx);
            self.begin(ctx, payload);
        } else {
            self.append(ctx, payload);
        }
    }
}

/// A transport stream being taken apart.
pub struct TsDemux {
    ctx: Ctx,
    demux: demultiplex::Demultiplex<Ctx>,
}

impl Default for TsDemux {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemux {
    pub fn new() -> Self {
        let mut ctx = Ctx {
            changeset: FilterChangeset::default(),
            ready: VecDeque::new(),
            failed: None,
            taken: Vec::new(),
        };
        let demux = demultiplex::Demultiplex::new(&mut ctx);
        Self { ctx, demux }
    }

    /// Takes whole packets. Once it has failed, it takes nothing more.
    pub fn push(&mut self, packets: &[u8]) -> Result<(), TsError> {
        if let Some(err) = &self.ctx.failed {
            return Err(err.clone());
        }
        let whole = packets.len().is_multiple_of(PACKET)
            && packets.chunks(PACKET).all(|p| Packet::is_sync_byte(p[0]));
        if !whole {
            self.ctx.fail(TsError::NotPackets);
            return Err(TsError::NotPackets);
        }
        self.demux.push(&mut self.ctx, packets);
        match &self.ctx.failed {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// The next completed unit.
    pub fn pop(&mut self) -> Option<Unit> {
        self.ctx.ready.pop_front()
    }

    /// The kinds of stream the program carries that are taken, in the order the PMT listed
    /// them; empty until the PMT was read.
    pub fn streams(&self) -> &[Kind] {
        &self.ctx.taken
    }
}

#[cfg(test)]
#[path = "demux_tests.rs"]
pub(crate) mod tests;
