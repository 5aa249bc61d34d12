//! MPEG-TS as SRT publishers send it, into elementary-stream units: each PES packet of the
//! first H.264 and the first AAC (ADTS) stream of the first program, whole, with its
//! timestamps unwrapped to 64 bits.
//!
//! Contract: sans-IO. [`TsDemux::push`] takes whole 188-byte packets (an SRT message holds
//! seven) and [`TsDemux::pop`] gives the units completed so far, in the order they
//! completed. mpeg2ts-reader parses the packets, the PAT and PMT (CRC-checked) and the PES
//! headers; the reassembly, the limits and the clocks are ours. Bounded: a PES payload over
//! [`MAX_PES`], more than [`MAX_READY`] units not taken, or input that is not 188-byte
//! packets ends the stream with a [`TsError`]; nothing grows with what a publisher sends. A
//! video PES of unbounded length (ffmpeg's) is complete when the next one starts: one frame
//! later than a bounded one.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PatPacketFilter,
    PmtPacketFilter,
};
use mpeg2ts_reader::packet::Packet;
use mpeg2ts_reader::pes::{self, ElementaryStreamConsumer, PesContents, PesHeader, PtsDts};
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
        Es: pes::PesPacketFilter<Ctx, Elementary>,
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
                        Filter::Es(pes::PesPacketFilter::new(Elementary::new(kind)))
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
    /// The PES under way: its timestamps (unwrapped) and its payload so far.
    current: Option<(i64, i64)>,
    payload: BytesMut,
    /// The last unwrapped timestamp, to unwrap the next.
    last: Option<i64>,
    /// The PES under way is being dropped (too large, or no timestamps).
    skipping: bool,
}

impl Elementary {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            current: None,
            payload: BytesMut::new(),
            last: None,
            skipping: false,
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

    fn append(&mut self, ctx: &mut Ctx, data: &[u8]) {
        if self.skipping || self.current.is_none() {
            return;
        }
        if self.payload.len() + data.len() > MAX_PES {
            self.skipping = true;
            self.payload.clear();
            ctx.fail(TsError::PesTooLarge);
            return;
        }
        self.payload.extend_from_slice(data);
    }
}

impl ElementaryStreamConsumer<Ctx> for Elementary {
    fn start_stream(&mut self, _ctx: &mut Ctx) {}

    fn begin_packet(&mut self, ctx: &mut Ctx, header: PesHeader<'_>) {
        self.skipping = false;
        self.payload.clear();
        self.current = None;
        let PesContents::Parsed(Some(parsed)) = header.contents() else {
            self.skipping = true;
            return;
        };
        let times = match parsed.pts_dts() {
            Ok(PtsDts::PtsOnly(Ok(pts))) => Some((pts.value(), pts.value())),
            Ok(PtsDts::Both {
                pts: Ok(pts),
                dts: Ok(dts),
            }) => Some((pts.value(), dts.value())),
            _ => None,
        };
        let Some((pts, dts)) = times else {
            self.skipping = true;
            ctx.fail(TsError::NoTimestamp(self.kind));
            return;
        };
        // Decode time first: it only goes forward, so it anchors the unwrapping.
        let dts = self.unwrap(dts);
        let pts = dts + (pts as i64 - (dts & ((1 << 33) - 1))).rem_euclid(1 << 33);
        self.current = Some((pts, dts));
        self.append(ctx, parsed.payload());
    }

    fn continue_packet(&mut self, ctx: &mut Ctx, data: &[u8]) {
        self.append(ctx, data);
    }

    fn end_packet(&mut self, ctx: &mut Ctx) {
        let Some((pts, dts)) = self.current.take() else {
            return;
        };
        if self.skipping || self.payload.is_empty() {
            self.payload.clear();
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

    fn continuity_error(&mut self, _ctx: &mut Ctx) {
        // A lost packet: the PES under way is broken; the next one starts clean.
        self.skipping = true;
        self.payload.clear();
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
mod tests;
