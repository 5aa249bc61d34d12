//! The RTSP edge on the dedicated network: one TCP listener per carrier, one task per
//! publisher connection, UDP port pairs for publishers that SETUP over UDP.
//!
//! Contract: the only code that touches ingest sockets (the [`Poller`] reads them only
//! through `Connection`). Each connection task owns its [`Session`] (the sans-IO RTSP core)
//! and, once recording, its `Pipeline` (depacketizers → segmenter → playout); while media
//! flows a poller shard holds them and gives them back at the end. Nothing a publisher sends
//! reaches another publisher's connection: a bad publisher ends its own connection only.
//!
//! Once the publisher records, its TCP socket is not read on readiness but polled: the task
//! hands the connection to the [`Poller`], whose shards wake on one shared grid
//! (`ingest_poll`, 25 ms by default), read all the kernel holds, hand it to the session and go
//! back to sleep; the task gets the connection back when it is over and finishes it. A
//! publisher sends a burst per video frame, so reading on readiness woke a worker, and sent an
//! ACK, for each burst of each publisher; on the grid one thread wake serves up to 64
//! connections and each read takes several bursts. A frame therefore waits up to one period before it is
//! handled, and is stamped as arriving at the poll before the one that read it, so the part
//! latency reported includes that wait. The end of the window, a shutdown and the session
//! timeout are checked at each poll too.
//!
//! Writes to a slow publisher wait for the next polls, bounded in time
//! ([`crate::ingest_socket`]).
//! UDP datagrams are accepted only from the publisher's own address, through a bounded queue
//! drained at each poll (overflow is counted as loss, never buffered without bound).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Listener;
use crate::control::Refused;
use crate::gates::Denied;
use crate::hub::{Hub, PlayoutHandle, SessionEntry};
use crate::ingest_limits::{Limits, Place};
use crate::ingest_socket::{IngestSocket, Polled, READS_PER_EXCHANGE, READS_PER_POLL};
use crate::media::frames::codec_names;
use crate::media::retina_adapter::Depacketizer;
use crate::media::TrackSpec;
use crate::media_path::{Clocks, MediaPath};
use crate::poller::{Adopted, Pollable, Poller};
use crate::rtsp::{
    Admission, CloseReason, Credential, Host, Output, Refusal, Session, SessionConfig,
};
use crate::StreamerError;

const UDP_QUEUE: usize = 1024;
/// Before RECORD, how often a connection checks its session's timeout and its writes' when
/// nothing else wakes it.
const EXCHANGE_TICK: Duration = Duration::from_millis(500);
/// Accepts publishers on one carrier listener until `shutdown`. Each connection takes a
/// place in `limits` until it records ([`crate::ingest_limits`]).
pub(crate) async fn serve_listener(
    hub: Hub,
    poller: Poller<Connection>,
    limits: Arc<Limits>,
    listener: Listener,
    socket: TcpListener,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(carrier = %listener.carrier, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let place = match limits.admit(remote.ip()) {
            Ok((place, took)) => {
                if took {
                    hub.metrics().refused("unauth_evicted");
                }
                place
            }
            Err(turned) => {
                hub.metrics().refused(turned.label());
                if let Some(held_back) = hub.hush(turned.label()) {
                    tracing::warn!(carrier = %listener.carrier, %remote, held_back,
                        why = turned.label(), "connection turned away before RECORD");
                }
                // Dropped: closed without a word, as a full listen queue would.
                continue;
            }
        };
        let hub = hub.clone();
        let carrier = listener.carrier.clone();
        let local_ip = listener.addr.ip();
        let shutdown = shutdown.clone();
        let poller = poller.clone();
        let accepted = Accepted {
            stream,
            remote,
            place,
        };
        tokio::spawn(async move {
            connection(hub, poller, carrier, local_ip, accepted, shutdown).await;
        });
    }
}

/// A connection just accepted, with its place among those not yet recording.
struct Accepted {
    stream: TcpStream,
    remote: SocketAddr,
    place: Place,
}

/// A datagram for a connection: the track it was SETUP for, whether it came to the RTCP port
/// (then empty: only its arrival matters), and the RTP packet.
type Datagram = (usize, bool, Bytes);

/// The world as one session's core sees it.
struct EdgeHost {
    hub: Hub,
    entry: Arc<SessionEntry>,
    local_ip: IpAddr,
    now: Instant,
    /// The credential of the last admitted request: the one the publisher records with.
    credential: Option<Credential>,
    udp: mpsc::Sender<Datagram>,
    stop: CancellationToken,
    /// The streamer's runtime: UDP receivers run on it, wherever the session is polled.
    runtime: tokio::runtime::Handle,
}

impl Host for EdgeHost {
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal> {
        match self.hub.admit(
            &self.entry,
            request.reservation_id,
            request.credential,
            self.now,
        ) {
            Ok(()) => {
                self.credential = Some(request.credential.clone());
                Ok(())
            }
            Err(refused) => {
                self.hub
                    .report_refusal(&self.entry, request.reservation_id, &refused);
                Err(refusal(&refused))
            }
        }
    }

    fn offers_digest(&mut self, reservation_id: &str) -> bool {
        self.hub.offers_digest(reservation_id)
    }

    fn bind_udp(&mut self, track: usize) -> Result<(u16, u16), String> {
        let (rtp, rtcp) = bind_pair(self.local_ip)?;
        let ports = (
            rtp.local_addr().map_err(|e| e.to_string())?.port(),
            rtcp.local_addr().map_err(|e| e.to_string())?.port(),
        );
        let from = self.entry.remote.ip();
        let _runtime = self.runtime.enter();
        for (socket, is_rtcp) in [(rtp, false), (rtcp, true)] {
            let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
            self.runtime.spawn(receive_udp(
                socket,
                from,
                track,
                is_rtcp,
                self.udp.clone(),
                self.stop.clone(),
                self.hub.clone(),
            ));
        }
        Ok(ports)
    }
}

/// What a refused publisher is told: the refusal's code, and words that name no other
/// server (the reason is shown to whoever dialled).
pub(crate) fn refusal(refused: &Refused) -> Refusal {
    let reason = match refused {
        Refused::Gate(Denied::OtherServer(_) | Denied::NotACarrier(_)) => {
            "the reservation is not on this server or carrier".to_owned()
        }
        Refused::Gate(Denied::NotOpen(why) | Denied::Closed(why)) => {
            format!("reservation not open: {why}")
        }
        Refused::Gate(denied @ Denied::PullsACamera) => format!("reservation not open: {denied}"),
        Refused::Gate(Denied::Unknown | Denied::BadKey) | Refused::Busy => refused.to_string(),
    };
    Refusal::new(refused.code(), reason)
}

/// An even RTP port and the odd RTCP port above it, on the listener's address.
fn bind_pair(ip: IpAddr) -> Result<(std::net::UdpSocket, std::net::UdpSocket), String> {
    use rand::Rng;
    let mut last = String::new();
    for _ in 0..64 {
        let port = rand::rng().random_range(20_000u16..60_000) & !1;
        let rtp = match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let rtcp = match std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        for s in [&rtp, &rtcp] {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        return Ok((rtp, rtcp));
    }
    Err(format!("no free UDP port pair on {ip}: {last}"))
}

async fn receive_udp(
    socket: UdpSocket,
    from: IpAddr,
    track: usize,
    rtcp: bool,
    tx: mpsc::Sender<Datagram>,
    stop: CancellationToken,
    hub: Hub,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, peer)) = received else { continue };
        if peer.ip() != from {
            hub.metrics().refused("udp_foreign_source");
            continue;
        }
        if rtcp {
            // Receiver reports are of no use to us; RTCP only keeps the session alive.
            let _ = tx.try_send((track, true, Bytes::new()));
            continue;
        }
        match tx.try_send((track, false, Bytes::copy_from_slice(&buf[..n]))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => hub.metrics().refused("udp_queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// One publisher's media: RTP → frames (retina's depacketizers) → the one media path.
struct Pipeline {
    depacketizers: Vec<Option<Depacketizer>>,
    path: MediaPath,
}

impl Pipeline {
    /// `setup` are the tracks the publisher SETUP: the only ones that will carry media.
    fn new(
        hub: &Hub,
        reservation_id: &str,
        tracks: &[TrackSpec],
        setup: &[usize],
        playout: Arc<PlayoutHandle>,
    ) -> Self {
        let depacketizers: Vec<Option<Depacketizer>> = tracks
            .iter()
            .enumerate()
            .map(
                |(i, spec)| match setup.contains(&i).then(|| Depacketizer::new(i, spec)) {
                    None => None,
                    Some(Ok(d)) => Some(d),
                    Some(Err(err)) => {
                        tracing::info!(reservation = reservation_id, track = i, %err,
                        "track left out");
                        None
                    }
                },
            )
            .collect();
        let mut path = MediaPath::new(hub, reservation_id, tracks, Clocks::PerTrack, playout);
        for (i, d) in depacketizers.iter().enumerate() {
            if let Some(params) = d.as_ref().and_then(Depacketizer::params) {
                path.set_params(i, params);
            }
        }
        Self {
            depacketizers,
            path,
        }
    }

    fn push_rtp(
        &mut self,
        hub: &Hub,
        now: Instant,
        track: usize,
        packet: &[u8],
    ) -> Result<(), StreamerError> {
        let Some(Some(depacketizer)) = self.depacketizers.get_mut(track) else {
            return Ok(());
        };
        let path = &mut self.path;
        let result = (|| {
            depacketizer.push_rtp(packet)?;
            while let Some(frame) = depacketizer.pull()? {
                path.push(hub, now, frame)?;
            }
            Ok::<(), StreamerError>(())
        })();
        self.path.tolerate(result)?;
        self.path.drain(hub);
        Ok(())
    }

    fn finish(&mut self, hub: &Hub) {
        self.path.finish(hub);
    }
}

async fn connection(
    hub: Hub,
    poller: Poller<Connection>,
    carrier: String,
    local_ip: IpAddr,
    accepted: Accepted,
    shutdown: CancellationToken,
) {
    let Accepted {
        stream,
        remote,
        place,
    } = accepted;
    let _ = stream.set_nodelay(true);
    let entry = hub.register_session(&carrier, remote);
    let stop = CancellationToken::new();
    let (udp_tx, udp_rx) = mpsc::channel(UDP_QUEUE);
    let host = EdgeHost {
        hub: hub.clone(),
        entry: entry.clone(),
        local_ip,
        now: Instant::now(),
        credential: None,
        udp: udp_tx,
        stop: stop.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let config = SessionConfig {
        carrier: carrier.clone(),
        timeout: hub.config().session_timeout,
        // Digest only where a sealed HA1 can be opened; a fresh nonce per connection.
        digest_nonce: hub.config().secret_key.as_ref().map(|_| {
            let mut nonce = [0u8; 16];
            rand::rng().fill_bytes(&mut nonce);
            hex::encode(nonce)
        }),
        ..SessionConfig::default()
    };
    let mut conn = Connection {
        session: Session::new(config, Instant::now()),
        host,
        pipeline: None,
        failure: false,
        carrier: carrier.clone(),
        remote,
        socket: IngestSocket::new(stream),
        udp_rx,
        stopping: false,
        last_poll: Instant::now(),
    };
    let exchanged = exchange(&mut conn, &shutdown, &place).await;
    // Recording, or over: either way the place is free for someone else.
    drop(place);
    let reason = match exchanged {
        Some(reason) => reason,
        // Recording: polled on the grid from now on.
        None => match poller.adopt(conn).await {
            Adopted::Over(back, reason) => {
                conn = back;
                reason
            }
            Adopted::Refused(back, why) => {
                conn = back;
                CloseReason::Ended(why)
            }
            Adopted::Lost => {
                stop.cancel();
                tracing::error!(%carrier, %remote, "publisher connection lost with its poller");
                hub.end_session(entry.id, "the streamer failed on this connection", true);
                return;
            }
        },
    };
    stop.cancel();
    let _ = conn.socket.flush(Instant::now());
    conn.socket.shutdown();
    if let Some(mut p) = conn.pipeline {
        p.finish(&hub);
    }
    tracing::info!(carrier = %conn.carrier, %remote, reason = %reason, "publisher connection closed");
    hub.end_session(entry.id, &reason.to_string(), conn.failure);
}

/// The RTSP exchange, on readiness: until the connection is over (`Some`) or records (`None`,
/// its socket then out of the reactor, for the poller). It must record within the
/// configured deadline, whatever it sends meanwhile, and goes at once if a newcomer takes its
/// `place`.
async fn exchange(
    conn: &mut Connection,
    shutdown: &CancellationToken,
    place: &Place,
) -> Option<CloseReason> {
    // Requests before RECORD are small; media is read with the poller's buffer.
    let mut buf = vec![0u8; 16 * 1024];
    let entry = conn.host.entry.clone();
    let hub = conn.host.hub.clone();
    let allowed = hub.config().record_deadline;
    let deadline = tokio::time::Instant::now() + allowed;
    let ended = entry.cancel.cancelled();
    let shutting_down = shutdown.cancelled();
    let evicted = place.evicted().cancelled();
    tokio::pin!(ended, shutting_down, evicted);
    loop {
        if let Some(reason) = conn.step(Instant::now(), &mut buf, shutdown.is_cancelled()) {
            return Some(reason);
        }
        if conn.socket.is_polled() {
            return None;
        }
        if place.evicted().is_cancelled() {
            return Some(CloseReason::Ended(
                "made room for a connection from another address".into(),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            hub.metrics().refused("record_deadline");
            return Some(CloseReason::Ended(format!(
                "no RECORD within {} s",
                allowed.as_secs()
            )));
        }
        // Every answer is awaited: wait for the publisher, not the grid.
        let datagram = tokio::select! {
            () = conn.socket.ready() => None,
            () = &mut ended, if !conn.stopping => None,
            () = &mut shutting_down, if !conn.stopping => None,
            () = &mut evicted => None,
            Some(datagram) = conn.udp_rx.recv() => Some(datagram),
            () = tokio::time::sleep_until(deadline) => None,
            () = tokio::time::sleep(EXCHANGE_TICK) => None,
        };
        if let Some(datagram) = datagram {
            let now = Instant::now();
            conn.datagram(now, now, datagram);
        }
    }
}

/// One publisher connection's state between reads.
pub(crate) struct Connection {
    session: Session,
    host: EdgeHost,
    pipeline: Option<Pipeline>,
    /// The connection ended in a failure (bad media, malformed input) rather than an end.
    failure: bool,
    carrier: String,
    remote: SocketAddr,
    socket: IngestSocket,
    udp_rx: mpsc::Receiver<Datagram>,
    /// The session has been told to close (window over, or shutdown).
    stopping: bool,
    /// When the socket was last read.
    last_poll: Instant,
}

impl Pollable for Connection {
    type Over = CloseReason;

    fn poll(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        shutting_down: bool,
    ) -> Option<CloseReason> {
        self.step(now, scratch, shutting_down)
    }

    fn panicked(&mut self) -> CloseReason {
        self.failure = true;
        CloseReason::Ended("the streamer failed on this connection".into())
    }
}

impl Connection {
    /// Handles everything that came in (socket, UDP queue, the window's end, shutdown, the
    /// session timeout) and writes what the session answers; `Some` once the connection is
    /// over. Once the publisher records, the socket leaves the reactor here.
    fn step(&mut self, now: Instant, buf: &mut [u8], shutting_down: bool) -> Option<CloseReason> {
        // Input read on readiness arrived now. Input read at a poll arrived after the poll
        // before it: frames are stamped with that earlier instant, so the part latency
        // measured from them includes the wait for the poll.
        let arrived = if self.socket.is_polled() {
            self.last_poll
        } else {
            now
        };
        self.last_poll = now;
        self.host.now = now;
        let entry = &self.host.entry;
        if !self.stopping && (entry.cancel.is_cancelled() || shutting_down) {
            self.stopping = true;
            let why = if shutting_down {
                "the streamer is shutting down".to_owned()
            } else {
                entry.reason().unwrap_or("ended by the server").to_owned()
            };
            self.session.close(CloseReason::Ended(why));
        }
        // While answers wait to be written, nothing more is read: a client that sends without
        // reading stalls on its own send buffer, not on our memory.
        let read = if self.socket.out.is_empty() {
            self.read(buf, now, arrived)
        } else {
            Polled::Open
        };
        while let Ok(datagram) = self.udp_rx.try_recv() {
            self.datagram(now, arrived, datagram);
        }
        if self.session.poll_timeout().is_some_and(|due| due <= now) {
            self.session.handle_timeout(now);
        }
        // What the publisher sent before it went is still handled.
        if let Some(reason) = self.handle_outputs(now, arrived) {
            return Some(reason);
        }
        if let Polled::Closed(reason) = read {
            return Some(reason);
        }
        if self.pipeline.is_some() && !self.socket.is_polled() {
            if let Err(err) = self.socket.poll_from_now() {
                return Some(CloseReason::Ended(format!("socket: {err}")));
            }
        }
        None
    }

    /// Feeds what the socket holds to the session; input read now arrived after `arrived`.
    fn read(&mut self, buf: &mut [u8], now: Instant, arrived: Instant) -> Polled {
        let Self {
            session,
            host,
            socket,
            ..
        } = self;
        let reads = if socket.is_polled() {
            READS_PER_POLL
        } else {
            READS_PER_EXCHANGE
        };
        socket.read(buf, reads, |input| {
            host.hub.touch(&host.entry, now);
            host.hub.metrics().ingest_bytes.inc_by(input.len() as u64);
            session.handle_input(arrived, input, host);
        })
    }

    /// One datagram from the connection's UDP queue, received by `now`, after `arrived`.
    fn datagram(&mut self, now: Instant, arrived: Instant, (track, rtcp, data): Datagram) {
        self.host.hub.touch(&self.host.entry, now);
        self.host
            .hub
            .metrics()
            .ingest_bytes
            .inc_by(data.len() as u64);
        self.session.handle_udp(arrived, track, rtcp, &data);
    }

    /// Carries out what the session asked for; `Some` once the connection is over.
    fn handle_outputs(&mut self, now: Instant, arrived: Instant) -> Option<CloseReason> {
        let hub = self.host.hub.clone();
        let socket = &mut self.socket;
        if let Polled::Closed(reason) = socket.flush(now) {
            return Some(reason);
        }
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Send(bytes) => {
                    if let Polled::Closed(reason) = socket.send(now, &bytes) {
                        return Some(reason);
                    }
                }
                Output::Publish {
                    reservation_id,
                    tracks,
                    transport,
                } => {
                    let Some(credential) = self.host.credential.clone() else {
                        // The core publishes only after the host admitted RECORD.
                        return Some(CloseReason::Ended("recording without admission".into()));
                    };
                    let codecs = codec_names(&tracks);
                    let started =
                        hub.start_recording(&self.host.entry, &reservation_id, credential, &codecs);
                    let playout = match started {
                        Ok(playout) => playout,
                        // Another publisher went live first, between our admission and now.
                        Err(refused) => return Some(CloseReason::Ended(refused.to_string())),
                    };
                    tracing::info!(reservation = %reservation_id, carrier = %self.carrier,
                        remote = %self.remote, ?transport, codecs, "publisher live");
                    let setup = self.session.setup_tracks();
                    self.pipeline = Some(Pipeline::new(
                        &hub,
                        &reservation_id,
                        &tracks,
                        &setup,
                        playout,
                    ));
                }
                Output::Rtp { track, packet } => {
                    if let Some(p) = self.pipeline.as_mut() {
                        if let Err(err) = p.push_rtp(&hub, arrived, track, &packet) {
                            if matches!(err, StreamerError::NoKeyframe { .. }) {
                                hub.metrics().refused("no_keyframe");
                                return Some(CloseReason::NoKeyframe);
                            }
                            self.failure = true;
                            hub.metrics().refused("bad_media");
                            return Some(CloseReason::Malformed(format!("media: {err}")));
                        }
                    }
                }
                Output::Close(reason) => {
                    if matches!(reason, CloseReason::Malformed(_) | CloseReason::Timeout) {
                        self.failure = matches!(reason, CloseReason::Malformed(_));
                        hub.metrics().refused(match reason {
                            CloseReason::Timeout => "timeout",
                            _ => "malformed",
                        });
                    }
                    return Some(reason);
                }
            }
        }
        None
    }
}
