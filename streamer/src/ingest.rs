//! The RTSP edge on the dedicated network: one TCP listener per carrier, one task per
//! publisher connection, UDP port pairs for publishers that SETUP over UDP.
//!
//! Contract: the only code here that awaits on ingest sockets. Each connection task owns its
//! [`Session`] (the sans-IO RTSP core) and, once recording, its [`Pipeline`]
//! (depacketizers → segmenter → channel). Nothing a publisher sends reaches another
//! publisher's task: a bad publisher ends its own task only. Writes to a slow publisher are
//! bounded in time; UDP datagrams are accepted only from the publisher's own address, through a
//! bounded queue (overflow is counted as loss, never buffered without bound).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Listener;
use crate::gates::Denied;
use crate::hub::{ChannelHandle, Hub, Refused, SessionEntry};
use crate::media::frames::codec_names;
use crate::media::retina_adapter::Depacketizer;
use crate::media::TrackSpec;
use crate::media_path::MediaPath;
use crate::rtsp::{
    Admission, CloseReason, Credential, Host, Output, Refusal, Session, SessionConfig,
};
use crate::StreamerError;

/// A publisher that cannot take a response within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const UDP_QUEUE: usize = 1024;
/// How often a connection checks its session's timeout.
const TIMEOUT_TICK: Duration = Duration::from_millis(500);

/// Accepts publishers on one carrier listener until `shutdown`.
pub async fn serve_listener(
    hub: Hub,
    listener: Listener,
    socket: TcpListener,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(hub.config().max_connections));
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            hub.metrics().refused("too_many_connections");
            tracing::warn!(carrier = %listener.carrier, %remote, "connection limit reached");
            continue;
        };
        let hub = hub.clone();
        let carrier = listener.carrier.clone();
        let local_ip = listener.addr.ip();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(hub, carrier, local_ip, stream, remote, shutdown).await;
            drop(permit);
        });
    }
}

/// The world as one session's core sees it.
struct EdgeHost {
    hub: Hub,
    entry: Arc<SessionEntry>,
    local_ip: IpAddr,
    now: Instant,
    /// The credential of the last admitted request: the one the publisher records with.
    credential: Option<Credential>,
    udp: mpsc::Sender<(usize, bool, Bytes)>,
    stop: CancellationToken,
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
                tracing::info!(carrier = %self.entry.carrier, remote = %self.entry.remote,
                    reservation = request.reservation_id, why = %refused, "publisher refused");
                self.hub
                    .report_refusal(&self.entry, request.reservation_id, &refused);
                Err(match refused {
                    Refused::Busy => Refusal::Busy,
                    Refused::Gate(Denied::Unknown) => Refusal::UnknownReservation,
                    Refused::Gate(Denied::BadKey) => Refusal::BadKey,
                    Refused::Gate(Denied::OtherServer(_) | Denied::NotACarrier(_)) => {
                        Refusal::NotThisServer
                    }
                    Refused::Gate(Denied::NotOpen(why)) => Refusal::NotOpen(why),
                    Refused::Gate(denied @ Denied::PullsACamera) => {
                        Refusal::NotOpen(denied.to_string())
                    }
                })
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
        for (socket, is_rtcp) in [(rtp, false), (rtcp, true)] {
            let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
            tokio::spawn(receive_udp(
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
    tx: mpsc::Sender<(usize, bool, Bytes)>,
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
        channel: Arc<ChannelHandle>,
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
        let mut path = MediaPath::new(hub, reservation_id, tracks, channel);
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
    carrier: String,
    local_ip: IpAddr,
    mut stream: TcpStream,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let entry = hub.register_session(&carrier, remote);
    let stop = CancellationToken::new();
    let (udp_tx, mut udp_rx) = mpsc::channel(UDP_QUEUE);
    let mut host = EdgeHost {
        hub: hub.clone(),
        entry: entry.clone(),
        local_ip,
        now: Instant::now(),
        credential: None,
        udp: udp_tx,
        stop: stop.clone(),
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
    let mut session = Session::new(config, Instant::now());
    let mut pipeline: Option<Pipeline> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut failure = false;
    let mut timeout_tick = tokio::time::interval(TIMEOUT_TICK);
    timeout_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Made once, not per read: each `cancelled()` registers a waiter on the token.
    let ended = entry.cancel.cancelled();
    let shutting_down = shutdown.cancelled();
    tokio::pin!(ended, shutting_down);
    let mut stopping = false;
    let reason = 'session: loop {
        tokio::select! {
            _ = &mut ended, if !stopping => {
                stopping = true;
                let why = entry.reason().unwrap_or_else(|| "ended by the server".into());
                session.close(CloseReason::Ended(why));
            }
            _ = &mut shutting_down, if !stopping => {
                stopping = true;
                session.close(CloseReason::Ended("the streamer is shutting down".into()));
            }
            read = stream.read(&mut buf) => {
                let now = Instant::now();
                match read {
                    Ok(0) => break 'session CloseReason::PeerClosed,
                    Ok(n) => {
                        hub.touch(&entry, now);
                        hub.metrics().ingest_bytes.inc_by(n as u64);
                        host.now = now;
                        session.handle_input(now, &buf[..n], &mut host);
                    }
                    Err(err) => break 'session CloseReason::Ended(format!("read: {err}")),
                }
            }
            Some((track, rtcp, data)) = udp_rx.recv() => {
                let now = Instant::now();
                hub.touch(&entry, now);
                hub.metrics().ingest_bytes.inc_by(data.len() as u64);
                session.handle_udp(now, track, rtcp, &data);
            }
            // The session's own deadline moves with every packet; re-arming a timer per read
            // costs more than the read. A coarse tick checks it instead (timeouts are
            // seconds long, so they fire at most one tick late).
            _ = timeout_tick.tick() => {
                let now = Instant::now();
                if session.poll_timeout().is_some_and(|due| due <= now) {
                    session.handle_timeout(now);
                }
            }
        }
        while let Some(output) = session.poll_output() {
            match output {
                Output::Send(bytes) => {
                    let written =
                        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        break 'session CloseReason::Ended("the publisher stopped reading".into());
                    }
                }
                Output::Publish {
                    reservation_id,
                    tracks,
                    transport,
                } => {
                    let Some(credential) = host.credential.clone() else {
                        // The core publishes only after the host admitted RECORD.
                        break 'session CloseReason::Ended("recording without admission".into());
                    };
                    let codecs = codec_names(&tracks);
                    let channel = hub.start_recording(&entry, &reservation_id, credential, &codecs);
                    tracing::info!(reservation = %reservation_id, %carrier, %remote, ?transport,
                        codecs, "publisher live");
                    let setup = session.setup_tracks();
                    pipeline = Some(Pipeline::new(
                        &hub,
                        &reservation_id,
                        &tracks,
                        &setup,
                        channel,
                    ));
                }
                Output::Rtp { track, packet } => {
                    if let Some(p) = pipeline.as_mut() {
                        if let Err(err) = p.push_rtp(&hub, Instant::now(), track, &packet) {
                            failure = true;
                            hub.metrics().refused("bad_media");
                            break 'session CloseReason::Malformed(format!("media: {err}"));
                        }
                    }
                }
                Output::Close(reason) => {
                    if matches!(reason, CloseReason::Malformed(_) | CloseReason::Timeout) {
                        failure = matches!(reason, CloseReason::Malformed(_));
                        hub.metrics().refused(match reason {
                            CloseReason::Timeout => "timeout",
                            _ => "malformed",
                        });
                    }
                    break 'session reason;
                }
            }
        }
    };
    stop.cancel();
    let _ = stream.shutdown().await;
    if let Some(mut p) = pipeline {
        p.finish(&hub);
    }
    tracing::info!(%carrier, %remote, reason = %reason, "publisher connection closed");
    hub.end_session(entry.id, &reason.to_string(), failure);
}
