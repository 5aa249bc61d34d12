//! The RTMP edge on the dedicated network: one TCP listener per carrier
//! (`SLOTCAST_RTMP_LISTENERS`), one task per publisher connection, the same gate as RTSP.
//!
//! Contract: the only code that drives RTMP sessions. Each connection task owns its
//! [`Session`] (the sans-IO core in `crate::rtmp`) and, once live, its [`MediaPath`] (on a
//! shared clock: RTMP stamps every track from one). It goes through everything RTSP's edge
//! (`crate::ingest`) does, with the same pieces: a place in the streamer's one book of
//! connections before authentication (`crate::ingest_limits`, shared with RTSP), the record
//! deadline (live within `record_deadline` of the accept, whatever is sent meanwhile), the
//! hub's admission and its refusal reports (`crate::ingest::admit`), `start_recording` and
//! `end_session` for the `connected` / `disconnected` reports and the metrics, and the cut-off
//! when the hub cancels the session (window closed, reservation cancelled, key rotated). The
//! socket is read on readiness until the publisher is live, then on the poll grid by a
//! [`Poller`] of its own ([`crate::ingest_socket`]). Nothing a publisher sends reaches another
//! connection: a bad publisher ends its own connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Listener;
use crate::hub::{Hub, SessionEntry};
use crate::ingest_limits::Limits;
use crate::ingest_socket::{accept, Accepted, IngestSocket, Polled};
use crate::media::frames::codec_names;
use crate::media::{CodecParams, TrackSpec};
use crate::media_path::{Clocks, MediaPath};
use crate::poller::{Pollable, Poller};
use crate::publisher_edge::{
    arrival, cut_off, end_of_step, follow, media_failed, received, Publishing,
};
use crate::rtmp::{Admission, CloseReason, Credential, Host, Output, Refusal, RtmpConfig, Session};

/// Accepts publishers on one carrier's RTMP listener until `shutdown`.
pub(crate) async fn serve_listener(
    hub: Hub,
    poller: Poller<RtmpConnection>,
    limits: Arc<Limits>,
    listener: Listener,
    socket: TcpListener,
    shutdown: CancellationToken,
) {
    while let Some(accepted) = accept(&hub, &limits, &listener.carrier, &socket, &shutdown).await {
        let (hub, poller, shutdown) = (hub.clone(), poller.clone(), shutdown.clone());
        let carrier = listener.carrier.clone();
        tokio::spawn(async move {
            connection(hub, poller, carrier, accepted, shutdown).await;
        });
    }
}

/// The world as one RTMP session's core sees it.
struct RtmpHost {
    hub: Hub,
    entry: Arc<SessionEntry>,
    now: Instant,
    /// The key of the admitted publish: the one the publisher goes live with.
    credential: Option<Credential>,
}

impl Host for RtmpHost {
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal> {
        crate::ingest::admit(&self.hub, &self.entry, request, self.now)?;
        self.credential = Some(request.credential.clone());
        Ok(())
    }
}

/// One RTMP publisher connection's state between reads.
pub(crate) struct RtmpConnection {
    session: Session,
    host: RtmpHost,
    path: Option<MediaPath>,
    /// The connection ended in a failure (bad media, malformed input) rather than an end.
    failure: bool,
    carrier: String,
    remote: SocketAddr,
    socket: IngestSocket,
    /// The session has been told to close (cut off, or shutdown).
    stopping: bool,
    /// When the socket was last read.
    last_poll: Instant,
}

impl Pollable for RtmpConnection {
    type Over = CloseReason;

    /// Handles what came in (the socket, the hub's cut-off, shutdown, the session's timers)
    /// and carries out what the session asks; `Some` once the connection is over. Once the
    /// publisher is live, the socket leaves the reactor here.
    fn poll(&mut self, now: Instant, buf: &mut [u8], shutting_down: bool) -> Option<CloseReason> {
        let arrived = arrival(&self.socket, &mut self.last_poll, now);
        self.host.now = now;
        if let Some(why) = cut_off(&self.host.entry, &mut self.stopping, shutting_down) {
            self.session.close(CloseReason::Ended(why));
        }
        // While answers wait to be written, nothing more is read.
        let read = if self.socket.out.is_empty() {
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
        } else {
            Polled::Open
        };
        if self.session.poll_timeout().is_some_and(|due| due <= now) {
            self.session.handle_timeout(now);
        }
        let outputs = self.handle_outputs(now, arrived);
        end_of_step(&mut self.socket, outputs, read, self.path.is_some())
    }

    fn panicked(&mut self) -> CloseReason {
        self.failure = true;
        CloseReason::Ended("the streamer failed on this connection".into())
    }
}

impl Publishing for RtmpConnection {
    const PUBLISHING: &'static str = "publish";
    /// A handshake packet is 1,536 bytes, a command a few hundred.
    const EXCHANGE_BUFFER: usize = 16 * 1024;
    /// Often enough for the probe's deadline (`RtmpConfig::probe_wait`).
    const EXCHANGE_TICK: Duration = Duration::from_millis(250);

    fn socket(&self) -> &IngestSocket {
        &self.socket
    }

    fn stopping(&self) -> bool {
        self.stopping
    }

    fn ready(&mut self) -> impl std::future::Future<Output = ()> + Send {
        self.socket.ready()
    }
}

impl RtmpConnection {
    /// Carries out what the session asked for; `Some` once the connection is over.
    fn handle_outputs(&mut self, now: Instant, arrived: Instant) -> Option<CloseReason> {
        let hub = self.host.hub.clone();
        if let Polled::Closed(reason) = self.socket.flush(now) {
            return Some(reason);
        }
        let mut over = None;
        while let Some(output) = self.session.poll_output() {
            let result = match output {
                Output::Send(bytes) => match self.socket.send(now, &bytes) {
                    Polled::Open => Ok(()),
                    Polled::Closed(reason) => {
                        over = Some(reason);
                        break;
                    }
                },
                Output::Publish {
                    reservation_id,
                    tracks,
                    params,
                } => {
                    if let Err(reason) = self.go_live(&hub, &reservation_id, &tracks, params) {
                        // Told to the publisher; its frames, and the close, follow.
                        self.session.close(reason);
                    }
                    Ok(())
                }
                Output::Frame(frame) => match self.path.as_mut() {
                    Some(path) => {
                        let pushed = path.push(&hub, arrived, frame);
                        path.tolerate(pushed)
                    }
                    None => Ok(()),
                },
                Output::BadMedia(err) => match self.path.as_mut() {
                    Some(path) => path.tolerate(Err(err)),
                    None => Ok(()),
                },
                Output::Close(reason) => {
                    if let Some(label) = self.session.close_label() {
                        hub.metrics().refused(label);
                        self.failure = matches!(
                            reason,
                            CloseReason::Malformed(_) | CloseReason::Unsupported(_)
                        );
                    }
                    over = Some(reason);
                    break;
                }
            };
            if let Err(err) = result {
                let (reason, failure) = media_failed(&hub, &err);
                self.failure = failure;
                over = Some(reason);
                break;
            }
        }
        if let Some(path) = self.path.as_mut() {
            path.drain(&hub);
        }
        over
    }

    /// The session is live: the reservation's publisher from now on, feeding its playout.
    fn go_live(
        &mut self,
        hub: &Hub,
        reservation_id: &str,
        tracks: &[TrackSpec],
        params: Vec<CodecParams>,
    ) -> Result<(), CloseReason> {
        let Some(credential) = self.host.credential.clone() else {
            // The core goes live only after the host admitted the publish.
            return Err(CloseReason::Ended("live without admission".into()));
        };
        let codecs = codec_names(tracks);
        let playout = hub
            .start_recording(&self.host.entry, reservation_id, credential, &codecs)
            // Another publisher went live first, between our admission and now.
            .map_err(|refused| CloseReason::Refused(crate::ingest::refusal(&refused).coded()))?;
        tracing::info!(reservation = %reservation_id, carrier = %self.carrier,
            remote = %self.remote, codecs, "RTMP publisher live");
        let mut path = MediaPath::new(hub, reservation_id, tracks, Clocks::Shared, playout);
        for (track, params) in params.into_iter().enumerate() {
            path.set_params(track, params);
        }
        self.path = Some(path);
        Ok(())
    }
}

async fn connection(
    hub: Hub,
    poller: Poller<RtmpConnection>,
    carrier: String,
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
        slotcast_domain::contract::IngestProtocol::Rtmp,
    );
    let config = RtmpConfig {
        carrier: carrier.clone(),
        timeout: hub.config().session_timeout,
        ..RtmpConfig::default()
    };
    let conn = RtmpConnection {
        session: Session::new(config, Instant::now()),
        host: RtmpHost {
            hub: hub.clone(),
            entry: entry.clone(),
            now: Instant::now(),
            credential: None,
        },
        path: None,
        failure: false,
        carrier: carrier.clone(),
        remote,
        socket: IngestSocket::new(stream),
        stopping: false,
        last_poll: Instant::now(),
    };
    let Some((conn, reason)) = follow(conn, &hub, &entry, &poller, &shutdown, place).await else {
        tracing::error!(%carrier, %remote, "RTMP connection lost with its poller");
        hub.end_session(entry.id, "the streamer failed on this connection", true);
        return;
    };
    conn.socket.close();
    if let Some(mut path) = conn.path {
        path.finish(&hub);
    }
    tracing::info!(%carrier, %remote, reason = %reason, "RTMP connection closed");
    hub.end_session(entry.id, &reason.to_string(), conn.failure);
}
