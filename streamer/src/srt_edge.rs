//! The SRT edge on the dedicated network: one SRT listener per carrier
//! (`SLOTCAST_SRT_LISTENERS`), callers in live mode with MPEG-TS inside, the same gate as RTSP.
//!
//! Contract: a caller is decided on before its handshake completes ([`SrtGate`], on libsrt's
//! receiving thread): a place in the streamer's one book of connections before
//! authentication (`crate::ingest_limits`, shared with RTSP and RTMP), its stream id
//! (`#!::r=<reservation_id>,k=<stream_key>`, `crate::mpegts::stream_id`), then the hub's
//! admission and its refusal reports (`crate::ingest::admit`). A refused caller gets the
//! refusal's SRT reject code ([`RefusalCode::srt_reject`]) and nothing is kept of it. An
//! admitted one is accepted by a thread per listener and polled on the grid by a [`Poller`]
//! of its own from then on: its MPEG-TS is taken apart (`crate::mpegts`), and once every
//! track is described it goes live (`start_recording`, a [`MediaPath`] on the shared clock
//! the stream's timestamps give). It must be live within `record_deadline` of its admission,
//! and within [`PROBE_BYTES`]. The cut-off, the reports and the metrics are RTSP's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use slotcast_domain::contract::{
    SRT_REJECT_BAD_STREAM_ID, SRT_REJECT_NOT_READY, SRT_REJECT_TOO_MANY,
};
use slotcast_srt::{Accepted, Gatekeeper, SrtError};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, SessionEntry};
use crate::ingest_limits::{Limits, Place};
use crate::media::frames::codec_names;
use crate::media::Frame;
use crate::media_path::{Clocks, MediaPath};
use crate::mpegts::demux::TsDemux;
use crate::mpegts::framer::TsFramer;
use crate::mpegts::stream_id;
use crate::poller::{Adopted, Pollable, Poller};
use crate::publisher_edge::{cut_off, media_failed, received};
use crate::rtsp::{Admission, CloseReason, Credential};

/// What a caller may send before it is live (its tracks described): bytes of frames held.
pub const PROBE_BYTES: usize = 8 << 20;
/// SRT messages read per poll at most (a 20 Mbit/s stream sends about 50 in 25 ms).
const MESSAGES_PER_POLL: usize = 1024;
/// How long an accept waits before looking at the shutdown again.
const ACCEPT_WAIT: Duration = Duration::from_millis(200);

/// A caller the gate admitted, until the listener accepts it.
struct Admitted {
    entry: Arc<SessionEntry>,
    reservation_id: String,
    credential: Credential,
    place: Place,
    at: Instant,
}

/// Decides on SRT callers for one carrier's listener.
pub(crate) struct SrtGate {
    hub: Hub,
    carrier: String,
    limits: Arc<Limits>,
    /// Admitted callers by address and stream id, taken by the accept.
    admitted: Mutex<HashMap<(SocketAddr, String), Admitted>>,
}

impl SrtGate {
    pub(crate) fn new(hub: Hub, carrier: String, limits: Arc<Limits>) -> Self {
        Self {
            hub,
            carrier,
            limits,
            admitted: Mutex::new(HashMap::new()),
        }
    }

    fn admitted(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, String), Admitted>> {
        self.admitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admissions whose caller never completed its handshake within the record deadline:
    /// their sessions end, their places are given back.
    fn sweep(&self, now: Instant) {
        let deadline = self.hub.config().record_deadline;
        let stale: Vec<Admitted> = {
            let mut admitted = self.admitted();
            let keys: Vec<_> = admitted
                .iter()
                .filter(|(_, a)| now.duration_since(a.at) > deadline)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| admitted.remove(k)).collect()
        };
        for a in stale {
            self.hub.metrics().refused("record_deadline");
            self.hub.end_session(
                a.entry.id,
                "the caller never completed its handshake",
                false,
            );
        }
    }

    /// The admission of the caller the listener just accepted.
    fn take(&self, peer: SocketAddr, stream_id: &str) -> Option<Admitted> {
        self.admitted().remove(&(peer, stream_id.to_owned()))
    }

    fn refuse(&self, label: &'static str, peer: SocketAddr, words: &str, code: i32) -> i32 {
        self.hub.metrics().refused(label);
        if let Some(held_back) = self.hub.hush(label) {
            tracing::warn!(carrier = %self.carrier, %peer, held_back, why = label, words,
                "SRT caller refused");
        }
        code
    }
}

impl Gatekeeper for SrtGate {
    fn check(&self, peer: SocketAddr, stream_id: &str) -> Result<(), i32> {
        let now = Instant::now();
        self.sweep(now);
        if !self.hub.gates_ready() {
            let words = "not yet following the slot clock";
            return Err(self.refuse("not_ready", peer, words, SRT_REJECT_NOT_READY));
        }
        let (place, took) = match self.limits.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(turned) => {
                let words = "too many callers";
                return Err(self.refuse(turned.label(), peer, words, SRT_REJECT_TOO_MANY));
            }
        };
        if took {
            self.hub.metrics().refused("unauth_evicted");
        }
        let named = stream_id::parse(stream_id)
            .map_err(|why| self.refuse("malformed", peer, &why, SRT_REJECT_BAD_STREAM_ID))?;
        let entry = self.hub.register_session(
            &self.carrier,
            peer,
            slotcast_domain::contract::IngestProtocol::Srt,
        );
        let credential = Credential::Key(named.key);
        let admission = Admission {
            carrier: &self.carrier,
            reservation_id: &named.reservation_id,
            credential: &credential,
        };
        if let Err(refusal) = crate::ingest::admit(&self.hub, &entry, &admission, now) {
            self.hub.end_session(entry.id, &refusal.coded(), false);
            return Err(refusal.code.srt_reject());
        }
        let admitted = Admitted {
            entry,
            reservation_id: named.reservation_id,
            credential,
            place,
            at: now,
        };
        // A caller asking again with the same address and id replaces its earlier admission.
        if let Some(earlier) = self
            .admitted()
            .insert((peer, stream_id.to_owned()), admitted)
        {
            self.hub
                .end_session(earlier.entry.id, "the caller asked again", false);
        }
        Ok(())
    }
}

/// Accepts the callers `gate` admitted on `listener` until `shutdown`, on a thread of its
/// own (libsrt's accept blocks); each goes to `poller` as a task on `runtime`.
pub(crate) fn serve_listener(
    hub: Hub,
    poller: Poller<SrtConnection>,
    gate: Arc<SrtGate>,
    listener: slotcast_srt::Listener,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("srt-accept-{}", gate.carrier))
        .spawn(move || {
            while !shutdown.is_cancelled() {
                let accepted = match listener.accept(ACCEPT_WAIT) {
                    Ok(Some(accepted)) => accepted,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(carrier = %gate.carrier, %err, "SRT accept failed");
                        std::thread::sleep(ACCEPT_WAIT);
                        continue;
                    }
                };
                let Some(admitted) = gate.take(accepted.peer, &accepted.stream_id) else {
                    // Swept meanwhile, or asked again: its socket closes here.
                    continue;
                };
                let (hub, poller, carrier) = (hub.clone(), poller.clone(), gate.carrier.clone());
                runtime.spawn(connection(hub, poller, carrier, accepted, admitted));
            }
        })
}

/// One SRT caller's state between polls.
pub(crate) struct SrtConnection {
    hub: Hub,
    entry: Arc<SessionEntry>,
    reservation_id: String,
    credential: Option<Credential>,
    socket: slotcast_srt::Socket,
    demux: TsDemux,
    framer: Option<TsFramer>,
    /// Frames held until every track is described, and their bytes.
    held: Vec<Frame>,
    held_bytes: usize,
    path: Option<MediaPath>,
    /// Held until live: the caller's place among connections not yet publishing.
    place: Option<Place>,
    admitted_at: Instant,
    failure: bool,
    stopping: bool,
    carrier: String,
    remote: SocketAddr,
}

impl Pollable for SrtConnection {
    type Over = CloseReason;

    fn poll(&mut self, now: Instant, buf: &mut [u8], shutting_down: bool) -> Option<CloseReason> {
        if let Some(why) = cut_off(&self.entry, &mut self.stopping, shutting_down) {
            return Some(CloseReason::Ended(why));
        }
        if self.path.is_none()
            && now.duration_since(self.admitted_at) > self.hub.config().record_deadline
        {
            self.hub.metrics().refused("record_deadline");
            self.failure = true;
            return Some(CloseReason::Malformed(
                "no H.264 or AAC described in time (MPEG-TS with a PMT, SPS and PPS)".into(),
            ));
        }
        let mut over = None;
        for _ in 0..MESSAGES_PER_POLL {
            match self.socket.recv(buf) {
                Ok(Some(n)) => {
                    received(&self.hub, &self.entry, now, n);
                    if let Err(err) = self.demux.push(&buf[..n]) {
                        self.hub.metrics().refused("malformed");
                        self.failure = true;
                        over = Some(CloseReason::Malformed(format!("MPEG-TS: {err}")));
                        break;
                    }
                }
                Ok(None) => break,
                Err(SrtError::Closed) => {
                    over = Some(CloseReason::PeerClosed);
                    break;
                }
                Err(err) => {
                    over = Some(CloseReason::Ended(err.to_string()));
                    break;
                }
            }
        }
        if let Err(reason) = self.frames(now) {
            return Some(reason);
        }
        if let Some(path) = self.path.as_mut() {
            path.drain(&self.hub);
        }
        over
    }

    fn panicked(&mut self) -> CloseReason {
        self.failure = true;
        CloseReason::Ended("the streamer failed on this connection".into())
    }
}

impl SrtConnection {
    /// The units taken apart so far, as frames: held until the tracks are described, then
    /// into the media path.
    fn frames(&mut self, now: Instant) -> Result<(), CloseReason> {
        while let Some(unit) = self.demux.pop() {
            let streams = self.demux.streams();
            let framer = self.framer.get_or_insert_with(|| TsFramer::new(streams));
            let Some(track) = streams.iter().position(|k| *k == unit.kind) else {
                continue;
            };
            let framed = framer.frames(track, &unit);
            let frames = match framed {
                Ok(frames) => frames,
                Err(err) => {
                    let tolerated = match self.path.as_mut() {
                        Some(path) => path.tolerate(Err(err)),
                        None => Err(err),
                    };
                    if let Err(err) = tolerated {
                        return Err(self.media_failed(&err));
                    }
                    continue;
                }
            };
            for frame in frames {
                self.take(now, frame)?;
            }
        }
        if self.path.is_none() {
            self.go_live(now)?;
        }
        Ok(())
    }

    fn take(&mut self, now: Instant, frame: Frame) -> Result<(), CloseReason> {
        match self.path.as_mut() {
            Some(path) => {
                let pushed = path.push(&self.hub, now, frame);
                match path.tolerate(pushed) {
                    Ok(()) => Ok(()),
                    Err(err) => Err(self.media_failed(&err)),
                }
            }
            None => {
                self.held_bytes += frame.data.len();
                self.held.push(frame);
                if self.held_bytes > PROBE_BYTES {
                    self.hub.metrics().refused("unsupported_codec");
                    self.failure = true;
                    return Err(CloseReason::Unsupported(format!(
                        "{PROBE_BYTES} bytes without every track described"
                    )));
                }
                Ok(())
            }
        }
    }

    fn media_failed(&mut self, err: &crate::StreamerError) -> CloseReason {
        let (reason, failure) = media_failed(&self.hub, err);
        self.failure = failure;
        reason
    }

    /// Live once every track is described: the reservation's publisher from now on.
    fn go_live(&mut self, now: Instant) -> Result<(), CloseReason> {
        let Some(tracks) = self.framer.as_ref().and_then(TsFramer::tracks) else {
            return Ok(());
        };
        let Some(credential) = self.credential.take() else {
            return Ok(());
        };
        let codecs = codec_names(&tracks);
        let playout = self
            .hub
            .start_recording(&self.entry, &self.reservation_id, credential, &codecs)
            .map_err(|refused| CloseReason::Refused(crate::ingest::refusal(&refused).coded()))?;
        tracing::info!(reservation = %self.reservation_id, carrier = %self.carrier,
            remote = %self.remote, codecs, "SRT publisher live");
        self.place = None;
        let mut path = MediaPath::new(
            &self.hub,
            &self.reservation_id,
            &tracks,
            Clocks::Shared,
            playout,
        );
        // Every track described before the first frame: the first init segment has them all.
        for (track, params) in self
            .framer
            .as_ref()
            .and_then(TsFramer::params)
            .into_iter()
            .flatten()
            .enumerate()
        {
            path.set_params(track, params);
        }
        self.path = Some(path);
        for frame in std::mem::take(&mut self.held) {
            self.take(now, frame)?;
        }
        self.held_bytes = 0;
        Ok(())
    }
}

async fn connection(
    hub: Hub,
    poller: Poller<SrtConnection>,
    carrier: String,
    accepted: Accepted,
    admitted: Admitted,
) {
    let Admitted {
        entry,
        reservation_id,
        credential,
        place,
        at,
    } = admitted;
    let conn = SrtConnection {
        hub: hub.clone(),
        entry: entry.clone(),
        reservation_id,
        credential: Some(credential),
        socket: accepted.socket,
        demux: TsDemux::new(),
        framer: None,
        held: Vec::new(),
        held_bytes: 0,
        path: None,
        place: Some(place),
        admitted_at: at,
        failure: false,
        stopping: false,
        carrier: carrier.clone(),
        remote: accepted.peer,
    };
    let (conn, reason) = match poller.adopt(conn).await {
        Adopted::Over(conn, reason) => (conn, reason),
        Adopted::Refused(conn, why) => (conn, CloseReason::Ended(why)),
        Adopted::Lost => {
            tracing::error!(%carrier, "SRT connection lost with its poller");
            hub.end_session(entry.id, "the streamer failed on this connection", true);
            return;
        }
    };
    let SrtConnection {
        path,
        failure,
        remote,
        ..
    } = conn;
    if let Some(mut path) = path {
        path.finish(&hub);
    }
    tracing::info!(%carrier, %remote, reason = %reason, "SRT connection closed");
    hub.end_session(entry.id, &reason.to_string(), failure);
}
