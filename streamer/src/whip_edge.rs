//! The WHIP edge on the dedicated network: one HTTP listener per carrier
//! (`SLOTCAST_WHIP_LISTENERS`), one WebRTC peer per publisher, the same gate as RTSP.
//!
//! Contract: the only code that serves WHIP requests and drives WHIP peers. Each TCP
//! connection takes a place in the streamer's one book of connections before authentication
//! (`crate::ingest_limits`, shared with RTSP, RTMP and SRT) and is served one request, which
//! must be read and answered within `record_deadline` of the accept (its headers within it
//! too, the offer at most [`whip::OFFER_MAX`] bytes), then closed. A publish
//! (`POST /whip/<reservation_id>`, `crate::webrtc::whip` decides what a request asks) goes
//! through the hub's admission and its refusal reports (`crate::ingest::admit`); admitted, the
//! offer is answered by a new peer (`crate::webrtc::peer`) on a UDP socket of its own, an
//! ephemeral port on the address the publisher reached the listener on, and the publisher is
//! live from that answer (`start_recording`, the `connected` report), as an RTSP publisher is
//! from `RECORD`. At most [`PEERS_MAX`] peers at once. From then on the peer is polled on the
//! grid by a [`Poller`] of its own: it must finish ICE and DTLS within [`CONNECT_WAIT`], stay
//! heard from within the session timeout, and its frames (`whip::Ingest`, which holds the
//! audio for the first keyframe) go into a [`MediaPath`], each track aligned by arrival
//! ([`Clocks::PerTrack`]: RTP gives each track a clock of its own). A `DELETE` of the
//! session's resource ends it, and so does the cut-off (window closed, reservation cancelled,
//! key rotated); a peer that goes says goodbye (RTCP BYE, DTLS close_notify). The reports and
//! the metrics are RTSP's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::RngCore;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::{Event, IceConnectionState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Listener;
use crate::hub::{Hub, SessionEntry};
use crate::ingest_limits::Limits;
use crate::ingest_socket::{accept, Accepted};
use crate::media::frames::codec_names;
use crate::media_path::{Clocks, MediaPath};
use crate::poller::{Adopted, Pollable, Poller};
use crate::publisher_edge::{cut_off, media_failed, received};
use crate::rtsp::{Admission, CloseReason, Credential};
use crate::webrtc::peer::Peer;
use crate::webrtc::whip::{self, Answer, Ingest, Request as Asked};
use crate::webrtc::Crypto;

/// WebRTC peers at once, at most (each holds a UDP port and a media path).
pub const PEERS_MAX: usize = 1024;
/// A peer must finish ICE and DTLS this long after its answer, or it goes.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The peers by session, for their `DELETE`.
#[derive(Default)]
struct Sessions(Mutex<HashMap<String, (String, CancellationToken)>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, CancellationToken)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends `session` of `reservation_id`; whether there was one.
    fn end(&self, reservation_id: &str, session: &str) -> bool {
        match self.lock().get(session) {
            Some((id, ended)) if id == reservation_id => {
                ended.cancel();
                true
            }
            _ => false,
        }
    }
}

/// What every WHIP listener of the streamer shares.
pub(crate) struct WhipEdge {
    hub: Hub,
    poller: Poller<WhipConnection>,
    limits: Arc<Limits>,
    crypto: Crypto,
    sessions: Sessions,
}

impl WhipEdge {
    pub(crate) fn new(
        hub: Hub,
        poller: Poller<WhipConnection>,
        limits: Arc<Limits>,
        crypto: Crypto,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            poller,
            limits,
            crypto,
            sessions: Sessions::default(),
        })
    }
}

/// Accepts publishers on one carrier's WHIP listener until `shutdown`.
pub(crate) async fn serve_listener(
    edge: Arc<WhipEdge>,
    listener: Listener,
    socket: TcpListener,
    shutdown: CancellationToken,
) {
    let carrier: Arc<str> = listener.carrier.into();
    while let Some(accepted) = accept(&edge.hub, &edge.limits, &carrier, &socket, &shutdown).await {
        let (edge, carrier, shutdown) = (edge.clone(), carrier.clone(), shutdown.clone());
        tokio::spawn(async move { serve_connection(edge, carrier, accepted, shutdown).await });
    }
}

/// One TCP connection: one request, read and answered within the record deadline.
async fn serve_connection(
    edge: Arc<WhipEdge>,
    carrier: Arc<str>,
    accepted: Accepted,
    shutdown: CancellationToken,
) {
    let Accepted {
        stream,
        remote,
        place,
    } = accepted;
    // The address the publisher reached us on: its peer's host candidate.
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let deadline = edge.hub.config().record_deadline;
    let service = {
        let edge = edge.clone();
        hyper::service::service_fn(move |request| {
            let (edge, carrier) = (edge.clone(), carrier.clone());
            async move {
                let answer = edge.handle(&carrier, remote, local.ip(), request).await;
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Past the deadline below, which closes the connection first (and counts it).
        .header_read_timeout(deadline + Duration::from_secs(1))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        served = tokio::time::timeout(deadline, connection) => {
            if served.is_err() {
                edge.hub.metrics().refused("record_deadline");
            }
        }
        () = place.evicted().cancelled() => {}
        () = shutdown.cancelled() => {}
    }
    drop(place);
}

/// `answer` as an HTTP response (and counted, if it turns a publisher away).
fn respond(hub: &Hub, answer: Answer) -> Response<Body> {
    if let Some(reason) = answer.counted {
        hub.metrics().refused(reason);
    }
    let mut body = answer.body;
    body.push('\n');
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
    response
}

/// An answer of the streamer's own trouble (not the publisher's): logged, not counted.
fn trouble(status: u16, words: &str) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: words.to_owned(),
        counted: None,
    }
}

impl WhipEdge {
    async fn handle(
        self: &Arc<Self>,
        carrier: &str,
        remote: SocketAddr,
        local_ip: IpAddr,
        request: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let text = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (authorization, content_type) =
            (text(header::AUTHORIZATION), text(header::CONTENT_TYPE));
        let length = text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let asked = whip::read_head(
            parts.method.as_str(),
            parts.uri.path(),
            authorization.as_deref(),
            content_type.as_deref(),
            length,
        );
        match asked {
            Err(answer) => respond(&self.hub, answer),
            Ok(Asked::Options { allow }) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            Ok(Asked::End {
                reservation_id,
                session,
            }) => {
                if self.sessions.end(reservation_id, session) {
                    Response::new(Body::empty())
                } else {
                    respond(&self.hub, trouble(404, "no such WHIP session"))
                }
            }
            Ok(Asked::Publish {
                reservation_id,
                key,
            }) => {
                let offer = match axum::body::to_bytes(Body::new(body), whip::OFFER_MAX).await {
                    Ok(offer) => offer,
                    Err(_) => return respond(&self.hub, whip::offer_too_large()),
                };
                let Ok(offer) = std::str::from_utf8(&offer) else {
                    let answer = trouble(400, "the offer is not UTF-8 text");
                    return respond(
                        &self.hub,
                        Answer {
                            counted: Some("malformed"),
                            ..answer
                        },
                    );
                };
                let publish = Publish {
                    carrier,
                    remote,
                    local_ip,
                    reservation_id,
                    key,
                };
                match self.publish(&publish, offer) {
                    Ok(response) => response,
                    Err(answer) => respond(&self.hub, answer),
                }
            }
        }
    }

    /// A publish, through the gate: the SDP answer and the live peer, or why not.
    fn publish(
        self: &Arc<Self>,
        asked: &Publish<'_>,
        offer: &str,
    ) -> Result<Response<Body>, Answer> {
        let hub = &self.hub;
        if !hub.gates_ready() {
            return Err(Answer {
                counted: Some("not_ready"),
                ..trouble(503, "not yet following the slot clock")
            });
        }
        if self.sessions.lock().len() >= PEERS_MAX {
            let answer = trouble(503, "too many WebRTC publishers on this streamer");
            return Err(Answer {
                counted: Some("whip_peers_full"),
                headers: vec![("Retry-After", "5".into())],
                ..answer
            });
        }
        let now = Instant::now();
        let entry = hub.register_session(
            asked.carrier,
            asked.remote,
            slotcast_domain::contract::IngestProtocol::Whip,
        );
        let credential = Credential::Key(asked.key.to_owned());
        let admission = Admission {
            carrier: asked.carrier,
            reservation_id: asked.reservation_id,
            credential: &credential,
        };
        if let Err(refusal) = crate::ingest::admit(hub, &entry, &admission, now) {
            hub.end_session(entry.id, &refusal.coded(), false);
            return Err(whip::refused(&refusal));
        }
        let peer = std::net::UdpSocket::bind((asked.local_ip, 0))
            .map_err(StreamerTrouble::from)
            .and_then(|socket| {
                Peer::on_std(whip::rtc_config(&self.crypto), socket, now)
                    .map_err(StreamerTrouble::from)
            });
        let mut peer = match peer {
            Ok(peer) => peer,
            Err(StreamerTrouble(err)) => {
                tracing::error!(%err, "a WHIP peer could not be made");
                hub.end_session(entry.id, &err, true);
                return Err(trouble(500, "the streamer could not make a WebRTC peer"));
            }
        };
        let offered = match whip::answer(&mut peer, offer, now) {
            Ok(offered) => offered,
            Err(answer) => {
                hub.end_session(entry.id, &answer.body, false);
                return Err(answer);
            }
        };
        let tracks = whip::tracks(&offered.media);
        let codecs = codec_names(&tracks);
        let playout = match hub.start_recording(&entry, asked.reservation_id, credential, &codecs) {
            Ok(playout) => playout,
            Err(refused) => {
                // Another publisher went live first, between our admission and now.
                let refusal = crate::ingest::refusal(&refused);
                hub.end_session(entry.id, &refusal.coded(), false);
                return Err(whip::refused(&refusal));
            }
        };
        let mut path = MediaPath::new(
            hub,
            asked.reservation_id,
            &tracks,
            Clocks::PerTrack,
            playout,
        );
        // Opus says all it needs in its SDP: the first init describes it.
        for (track, (_, kind)) in offered.media.iter().enumerate() {
            if *kind == MediaKind::Audio {
                path.set_params(track, whip::opus_params());
            }
        }
        let session = session_id();
        let ended = CancellationToken::new();
        self.sessions.lock().insert(
            session.clone(),
            (asked.reservation_id.to_owned(), ended.clone()),
        );
        tracing::info!(reservation = %asked.reservation_id, carrier = %asked.carrier,
            remote = %asked.remote, udp = %peer.local_addr(), codecs, "WHIP publisher live");
        let conn = WhipConnection {
            hub: hub.clone(),
            entry,
            peer,
            ingest: Ingest::new(&offered.media),
            path,
            ended,
            answered: now,
            connected: false,
            last_heard: now,
            failure: false,
            stopping: false,
        };
        tokio::spawn(follow(self.clone(), conn, session.clone()));
        let location = format!("{}{}/{session}", whip::PREFIX, asked.reservation_id);
        let mut response = Response::new(Body::from(offered.sdp));
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        );
        if let Ok(location) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, location);
        }
        Ok(response)
    }
}

/// A publish request, once its head was read.
struct Publish<'a> {
    carrier: &'a str,
    remote: SocketAddr,
    local_ip: IpAddr,
    reservation_id: &'a str,
    key: &'a str,
}

/// Why the streamer could not make a peer, in words for the log.
struct StreamerTrouble(String);

impl<E: std::fmt::Display> From<E> for StreamerTrouble {
    fn from(err: E) -> Self {
        Self(err.to_string())
    }
}

/// 128 random bits as 32 hex digits ([`whip::valid_session`]).
fn session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The peer's course once answered: on the grid until over, then finished.
async fn follow(edge: Arc<WhipEdge>, conn: WhipConnection, session: String) {
    let hub = edge.hub.clone();
    let entry = conn.entry.clone();
    let over = edge.poller.adopt(conn).await;
    edge.sessions.lock().remove(&session);
    let (conn, reason) = match over {
        Adopted::Over(conn, reason) => (conn, reason),
        Adopted::Refused(conn, why) => (conn, CloseReason::Ended(why)),
        Adopted::Lost => {
            tracing::error!(carrier = %entry.carrier, "WHIP peer lost with its poller");
            hub.end_session(entry.id, "the streamer failed on this connection", true);
            return;
        }
    };
    let WhipConnection {
        mut path,
        mut peer,
        failure,
        ..
    } = conn;
    peer.close(Instant::now());
    path.finish(&hub);
    tracing::info!(carrier = %entry.carrier, remote = %entry.remote, reason = %reason,
        "WHIP publisher gone");
    hub.end_session(entry.id, &reason.to_string(), failure);
}

/// One WHIP publisher's peer between polls.
pub(crate) struct WhipConnection {
    hub: Hub,
    entry: Arc<SessionEntry>,
    peer: Peer,
    ingest: Ingest,
    path: MediaPath,
    /// Cancelled by the publisher's `DELETE`.
    ended: CancellationToken,
    answered: Instant,
    /// ICE and DTLS are done.
    connected: bool,
    /// When a datagram last came.
    last_heard: Instant,
    failure: bool,
    stopping: bool,
}

impl Pollable for WhipConnection {
    type Over = CloseReason;

    fn poll(&mut self, now: Instant, buf: &mut [u8], shutting_down: bool) -> Option<CloseReason> {
        if let Some(why) = cut_off(&self.entry, &mut self.stopping, shutting_down) {
            return Some(CloseReason::Ended(why));
        }
        if self.ended.is_cancelled() {
            return Some(CloseReason::Unpublished);
        }
        let polled = match self.peer.poll(now, buf) {
            Ok(polled) => polled,
            Err(err) => return Some(CloseReason::Ended(err.to_string())),
        };
        if polled.datagrams > 0 {
            received(&self.hub, &self.entry, now, polled.bytes);
            self.last_heard = now;
        }
        let over = self.events();
        self.path.drain(&self.hub);
        if over.is_some() {
            return over;
        }
        if !self.connected && now.saturating_duration_since(self.answered) > CONNECT_WAIT {
            self.hub.metrics().refused("webrtc_connect");
            return Some(CloseReason::Ended(format!(
                "no ICE and DTLS within {} s of the answer",
                CONNECT_WAIT.as_secs()
            )));
        }
        if now.saturating_duration_since(self.last_heard) > self.hub.config().session_timeout {
            return Some(CloseReason::Timeout);
        }
        if !self.peer.is_alive() {
            return Some(CloseReason::PeerClosed);
        }
        self.ask_keyframe(now)
    }

    fn panicked(&mut self) -> CloseReason {
        self.failure = true;
        CloseReason::Ended("the streamer failed on this connection".into())
    }
}

impl WhipConnection {
    /// What the peer produced: its state, and frames into the media path. `Some` once over.
    fn events(&mut self) -> Option<CloseReason> {
        while let Some(event) = self.peer.poll_event() {
            match event {
                Event::Connected => self.connected = true,
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    return Some(CloseReason::PeerClosed);
                }
                Event::MediaData(data) => {
                    let framed = self.ingest.frame(
                        data.network_time,
                        data.mid,
                        data.time.numer(),
                        data.time.denom(),
                        data.contiguous,
                        &data.data,
                    );
                    let pushed = framed.and_then(|frames| {
                        frames.into_iter().try_for_each(|(arrival, frame)| {
                            let pushed = self.path.push(&self.hub, arrival, frame);
                            self.path.tolerate(pushed)
                        })
                    });
                    if let Err(err) = self.path.tolerate(pushed) {
                        let (reason, failure) = media_failed(&self.hub, &err);
                        self.failure = failure;
                        return Some(reason);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Asks the publisher for a keyframe when the ingest wants one (PLI, or FIR where only
    /// that was negotiated).
    fn ask_keyframe(&mut self, now: Instant) -> Option<CloseReason> {
        let mid = self.ingest.video_mid()?;
        if !self.connected || !self.ingest.ask_keyframe(now) {
            return None;
        }
        if let Some(mut writer) = self.peer.rtc().writer(mid) {
            let kind = [KeyframeRequestKind::Pli, KeyframeRequestKind::Fir]
                .into_iter()
                .find(|kind| writer.is_request_keyframe_possible(*kind));
            if let Some(kind) = kind {
                // Fails only before the first packet of the video: asked again in a second.
                let _ = writer.request_keyframe(None, kind);
            }
        }
        self.peer
            .drain(now)
            .err()
            .map(|err| CloseReason::Ended(err.to_string()))
    }
}
