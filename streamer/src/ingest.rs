//! The RTSP edge on the dedicated network: one TCP listener per carrier, one task per
//! publisher connection, UDP port pairs for publishers that SETUP over UDP.
//!
//! Contract: the only code that drives RTSP sessions and their UDP ports (the socket itself
//! is `crate::ingest_socket`'s, the course before and after RECORD `crate::publisher_edge`'s,
//! both shared with RTMP's edge; the [`Poller`] reads a socket only through `Connection`).
//! Each connection task owns its [`Session`] (the sans-IO RTSP core)
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
//! (`crate::ingest_socket`).
//! UDP datagrams are accepted only from the publisher's own address, through a bounded queue
//! drained at each poll (overflow is counted as loss, never buffered without bound).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Listener;
use crate::control::Refused;
use crate::gates::Denied;
use crate::hub::{Hub, PlayoutHandle, SessionEntry};
use crate::ingest_limits::Limits;
use crate::ingest_socket::{Accepted, IngestSocket, Polled};
use crate::media::frames::codec_names;
use crate::media::retina_adapter::Depacketizer;
use crate::media::TrackSpec;
use crate::media_path::{Clocks, MediaPath};
use crate::poller::{Pollable, Poller};
use crate::publisher_edge::{
    arrival, cut_off, end_of_step, follow, media_failed, received, Publishing,
};
use crate::rtsp::{
    Admission, CloseReason, Credential, Host, Output, Refusal, Session, SessionConfig,
};
use crate::StreamerError;

const UDP_QUEUE: usize = 1024;

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
    while let Some(accepted) =
        crate::ingest_socket::accept(&hub, &limits, &listener.carrier, &socket, &shutdown).await
    {
        let hub = hub.clone();
        let carrier = listener.carrier.clone();
        let local_ip = listener.addr.ip();
        let shutdown = shutdown.clone();
        let poller = poller.clone();
        tokio::spawn(async move {
            connection(hub, poller, carrier, local_ip, accepted, shutdown).await;
        });
    }
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
        admit(&self.hub, &self.entry, request, self.now)?;
        self.credential = Some(request.credential.clone());
        Ok(())
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

/// May this publisher publish ([`Hub::admit`])? The one gate every ingest protocol asks: a
/// refusal is reported ([`Hub::report_refusal`]) and answered in [`refusal`]'s words.
pub(crate) fn admit(
    hub: &Hub,
    entry: &SessionEntry,
    request: &Admission<'_>,
    now: Instant,
) -> Result<(), Refusal> {
    hub.admit(entry, request.reservation_id, request.credential, now)
        .map_err(|refused| {
            hub.report_refusal(entry, request.reservation_id, &refused);
            refusal(&refused)
        })
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
    let entry = hub.register_session(
        &carrier,
        remote,
        slotcast_domain::contract::IngestProtocol::Rtsp,
    );
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
    let conn = Connection {
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
    let followed = follow(conn, &hub, &entry, &poller, &shutdown, place).await;
    stop.cancel();
    let Some((conn, reason)) = followed else {
        tracing::error!(%carrier, %remote, "publisher connection lost with its poller");
        hub.end_session(entry.id, "the streamer failed on this connection", true);
        return;
    };
    conn.socket.close();
    if let Some(mut p) = conn.pipeline {
        p.finish(&hub);
    }
    tracing::info!(carrier = %conn.carrier, %remote, reason = %reason, "publisher connection closed");
    hub.end_session(entry.id, &reason.to_string(), conn.failure);
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

impl Publishing for Connection {
    const PUBLISHING: &'static str = "RECORD";
    /// Requests before RECORD are small; media is read with the poller's buffer.
    const EXCHANGE_BUFFER: usize = 16 * 1024;
    const EXCHANGE_TICK: Duration = Duration::from_millis(500);

    fn socket(&self) -> &IngestSocket {
        &self.socket
    }

    fn stopping(&self) -> bool {
        self.stopping
    }

    /// The socket, or a datagram (handled here).
    async fn ready(&mut self) {
        let datagram = tokio::select! {
            () = self.socket.ready() => None,
            Some(datagram) = self.udp_rx.recv() => Some(datagram),
        };
        if let Some(datagram) = datagram {
            let now = Instant::now();
            self.datagram(now, now, datagram);
        }
    }
}

impl Connection {
    /// Handles everything that came in (socket, UDP queue, the window's end, shutdown, the
    /// session timeout) and writes what the session answers; `Some` once the connection is
    /// over. Once the publisher records, the socket leaves the reactor here.
    fn step(&mut self, now: Instant, buf: &mut [u8], shutting_down: bool) -> Option<CloseReason> {
        let arrived = arrival(&self.socket, &mut self.last_poll, now);
        self.host.now = now;
        if let Some(why) = cut_off(&self.host.entry, &mut self.stopping, shutting_down) {
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
        let outputs = self.handle_outputs(now, arrived);
        end_of_step(&mut self.socket, outputs, read, self.pipeline.is_some())
    }

    /// Feeds what the socket holds to the session; input read now arrived after `arrived`.
    fn read(&mut self, buf: &mut [u8], now: Instant, arrived: Instant) -> Polled {
        let Self {
            session,
            host,
            socket,
            ..
        } = self;
        socket.read_available(buf, |input| {
            received(&host.hub, &host.entry, now, input.len());
            session.handle_input(arrived, input, host);
        })
    }

    /// One datagram from the connection's UDP queue, received by `now`, after `arrived`.
    fn datagram(&mut self, now: Instant, arrived: Instant, (track, rtcp, data): Datagram) {
        received(&self.host.hub, &self.host.entry, now, data.len());
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
                            let (reason, failure) = media_failed(&hub, &err);
                            self.failure = failure;
                            return Some(reason);
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
