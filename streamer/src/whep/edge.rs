//! WHEP's thin async edge: the offer/answer exchange on the viewer port and one task per
//! real-time viewer.
//!
//! Contract: `POST /whep/<id>` (`application/sdp`, at most [`OFFER_MAX`] bytes) answers `201`
//! with the SDP answer and `Location: /whep/<id>/<session>` while the reservation is live on
//! this streamer. Otherwise: `404` with `not_live` (the watch page retries); `503` when real
//! time is off ([`crate::config::StreamerConfig::whep_address`]) or as many viewers as
//! [`crate::config::StreamerConfig::whep_viewers`] watch already; `429` when one viewer
//! address holds [`PER_VIEWER`] sessions; `415` for another content type; `400` for an offer
//! that is no SDP or receives neither H.264 nor Opus. `DELETE` on the `Location` ends the
//! session (`204`); `PATCH` (trickle ICE) is `405`: the streamer is ICE-lite and its answer
//! holds its one candidate. Each session is a task holding the peer ([`Peer`]: its own UDP
//! socket on the WHEP address, an ephemeral port) and the reservation's relayed samples
//! (`super::relay`). It ends when the viewer deletes it or goes (ICE disconnected), when it
//! has not connected within [`CONNECT_WAIT`], when the stream stops being live, and at
//! shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::{Event, IceConnectionState};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::feed::Sample;
use super::relay::Relays;
use crate::hub::Hub;
use crate::media::TrackKind;
use crate::playout::PlayoutState;
use crate::webrtc::peer::{Peer, DATAGRAM_MAX};
use crate::webrtc::Crypto;
use crate::StreamerError;

/// The largest offer taken: a browser's is a few kilobytes.
pub const OFFER_MAX: usize = 64 << 10;
/// How long a viewer has to complete ICE and DTLS after the answer.
pub const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// Real-time sessions one viewer address may hold: a household, not a flood.
pub const PER_VIEWER: usize = 10;
/// How often a session checks that the stream is still live.
const LIVE_CHECK: Duration = Duration::from_secs(1);

/// The real-time viewers of this streamer.
#[derive(Debug, Default)]
pub struct Viewers {
    /// Made on first use: one DTLS certificate for every session (`None`: it failed).
    crypto: OnceLock<Option<Crypto>>,
    /// Session id to the session.
    sessions: Mutex<HashMap<String, Session>>,
    /// What the sessions send, shaped once per reservation.
    pub(super) relays: Relays,
}

/// One real-time viewer.
#[derive(Debug)]
struct Session {
    reservation: String,
    /// The viewer's address (behind trusted proxies, the one they name).
    viewer: IpAddr,
    stop: CancellationToken,
}

impl Viewers {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Real-time viewers watching `reservation_id` now.
    pub fn watching(&self, reservation_id: &str) -> usize {
        self.sessions()
            .values()
            .filter(|s| s.reservation == reservation_id)
            .count()
    }

    fn crypto(&self) -> Option<&Crypto> {
        self.crypto
            .get_or_init(|| match Crypto::shared() {
                Ok(crypto) => Some(crypto),
                Err(err) => {
                    tracing::error!(%err, "WHEP: no DTLS certificate; real time is off");
                    None
                }
            })
            .as_ref()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `POST /whep/<id>`.
pub async fn offer(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !crate::http::valid_id(&id) {
        return text(StatusCode::NOT_FOUND, "unknown: no such stream");
    }
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an offer is application/sdp",
        );
    }
    let Some(ip) = hub.config().whep_address() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "real time is off on this streamer: it has no SLOTCAST_WHEP_IP",
        );
    };
    let Some(playout) = hub.find_playout(&id) else {
        return text(StatusCode::NOT_FOUND, "not_live: the stream is not live");
    };
    if hub.status(&id) != PlayoutState::Live {
        return text(StatusCode::NOT_FOUND, "not_live: the stream is not live");
    }
    let viewers = hub.whep();
    let viewer = hub.config().trusted_proxies.viewer(remote.ip(), &headers);
    let from_viewer = viewers
        .sessions()
        .values()
        .filter(|s| s.viewer == viewer)
        .count();
    if from_viewer >= PER_VIEWER {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many: as many real-time sessions from this address as the streamer takes",
        );
    }
    if viewers.sessions().len() >= hub.config().whep_viewers {
        return (
            [(header::RETRY_AFTER, "10")],
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: as many real-time viewers as this streamer takes; LL-HLS still plays",
            ),
        )
            .into_response();
    }
    let Some(crypto) = viewers.crypto() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "real time is off: no DTLS certificate",
        );
    };
    let Some(offer) = std::str::from_utf8(&body)
        .ok()
        .and_then(|sdp| SdpOffer::from_sdp_string(sdp).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "the offer is not SDP");
    };
    let now = Instant::now();
    let (mut peer, answer, mids) = match answer(crypto, ip, offer, now) {
        Ok(made) => made,
        Err(Answered::Refused(words)) => return text(StatusCode::BAD_REQUEST, words),
        Err(Answered::Failed(err)) => {
            tracing::warn!(reservation = %id, %err, "WHEP: no peer");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "real time failed; LL-HLS still plays",
            );
        }
    };
    let session = hex::encode(rand::random::<[u8; 12]>());
    let stop = CancellationToken::new();
    viewers.sessions().insert(
        session.clone(),
        Session {
            reservation: id.clone(),
            viewer,
            stop: stop.clone(),
        },
    );
    hub.metrics().realtime_viewers.inc();
    let samples = viewers.relays.subscribe(&hub, &id, &playout);
    let task_hub = hub.clone();
    let task_session = session.clone();
    let task_id = id.clone();
    tokio::spawn(async move {
        let why = run(&task_hub, &task_id, &mut peer, samples, mids, &stop).await;
        tracing::debug!(reservation = %task_id, session = %task_session, why, "WHEP session over");
        task_hub.whep().sessions().remove(&task_session);
        task_hub.metrics().realtime_viewers.dec();
    });
    tracing::info!(reservation = %id, %session, "WHEP viewer");
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/whep/{id}/{session}")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        answer,
    )
        .into_response()
}

/// `DELETE /whep/<id>/<session>`.
pub async fn end(State(hub): State<Hub>, Path((id, session)): Path<(String, String)>) -> Response {
    let mut sessions = hub.whep().sessions();
    match sessions.get(&session) {
        Some(s) if s.reservation == id => {
            s.stop.cancel();
            sessions.remove(&session);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => text(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// `PATCH /whep/<id>/<session>`: trickle ICE, which an ICE-lite server does not need.
pub async fn no_trickle() -> Response {
    (
        [(header::ALLOW, "DELETE")],
        text(
            StatusCode::METHOD_NOT_ALLOWED,
            "no trickle ICE: the answer has every candidate",
        ),
    )
        .into_response()
}

enum Answered {
    /// The offer cannot be answered: words for the viewer.
    Refused(&'static str),
    Failed(StreamerError),
}

/// Where a session sends each kind: the mid and the payload type chosen for it.
type Mids = [Option<(Mid, Pt)>; 2];

/// A peer on a fresh socket at `ip`, the offer accepted: the peer, the answer, and where video
/// and audio go.
fn answer(
    crypto: &Crypto,
    ip: IpAddr,
    offer: SdpOffer,
    now: Instant,
) -> Result<(Peer<tokio::net::UdpSocket>, String, Mids), Answered> {
    let failed = |e: std::io::Error| Answered::Failed(e.into());
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(failed)?;
    let config = crypto.rtc_config().set_ice_lite(true);
    let mut peer = Peer::new(config, socket, now).map_err(Answered::Failed)?;
    let answer = peer
        .rtc()
        .sdp_api()
        .accept_offer(offer)
        .map_err(|_| Answered::Refused("the offer cannot be answered"))?;
    peer.drain(now).map_err(Answered::Failed)?;
    let answer = answer.to_sdp_string();
    let mut mids: Mids = [None, None];
    // str0m tells of the media it accepted only once the peer connects (`MediaAdded`); the
    // answer says it now.
    for (kind, mid) in answered_media(&answer) {
        let slot = match kind {
            MediaKind::Video => 0,
            MediaKind::Audio => 1,
        };
        let mid = Mid::from(mid);
        let sending = peer
            .rtc()
            .media(mid)
            .is_some_and(|m| m.direction().is_sending());
        if mids[slot].is_some() || !sending {
            continue;
        }
        let Some(writer) = peer.rtc().writer(mid) else {
            continue;
        };
        let pt = writer
            .payload_params()
            .find(|p| {
                let spec = p.spec();
                match kind {
                    MediaKind::Video => {
                        spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)
                    }
                    MediaKind::Audio => spec.codec == Codec::Opus,
                }
            })
            .map(|p| p.pt());
        mids[slot] = pt.map(|pt| (mid, pt));
    }
    if mids.iter().all(Option::is_none) {
        return Err(Answered::Refused(
            "the offer receives neither H.264 video (packetization-mode 1) nor Opus audio",
        ));
    }
    Ok((peer, answer, mids))
}

/// The kind and mid of each media section of an SDP, in order.
fn answered_media(sdp: &str) -> Vec<(MediaKind, &str)> {
    let mut found = Vec::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            kind = match media.split(' ').next() {
                Some("video") => Some(MediaKind::Video),
                Some("audio") => Some(MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(k), Some(mid)) = (kind, line.strip_prefix("a=mid:")) {
            found.push((k, mid.trim()));
        }
    }
    found
}

/// One viewer's session until it ends; says why.
async fn run(
    hub: &Hub,
    id: &str,
    peer: &mut Peer<tokio::net::UdpSocket>,
    mut samples: tokio::sync::broadcast::Receiver<Arc<Sample>>,
    mids: Mids,
    stop: &CancellationToken,
) -> &'static str {
    let shutdown = hub.shutdown_token();
    // Video starts (and after a loss, starts again) at a keyframe.
    let mut video_started = false;
    let mut scratch = vec![0u8; DATAGRAM_MAX];
    let mut connected = false;
    let connect_by = Instant::now() + CONNECT_WAIT;
    let mut check = tokio::time::interval(LIVE_CHECK);
    loop {
        let due = tokio::time::Instant::from_std(peer.due());
        tokio::select! {
            () = stop.cancelled() => return "deleted",
            () = shutdown.cancelled() => return "shutdown",
            ready = peer.socket().readable() => {
                if ready.is_err() {
                    return "socket failed";
                }
            }
            () = tokio::time::sleep_until(due) => {}
            sample = samples.recv() => match sample {
                Ok(sample) if connected => {
                    if sample.kind == TrackKind::Video {
                        video_started |= sample.keyframe;
                        if !video_started {
                            continue;
                        }
                    }
                    if let Err(err) = write(peer, &mids, &sample) {
                        tracing::debug!(reservation = %id, %err, "WHEP: a write failed");
                        return "write failed";
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(lost)) => {
                    tracing::debug!(reservation = %id, lost, "WHEP viewer fell behind");
                    video_started = false;
                }
                Err(RecvError::Closed) => return "stream over",
            },
            _ = check.tick() => {
                if hub.status(id) != PlayoutState::Live {
                    return "stream over";
                }
                if !connected && Instant::now() > connect_by {
                    return "never connected";
                }
            }
        }
        if peer.poll(Instant::now(), &mut scratch).is_err() {
            return "peer failed";
        }
        while let Some(event) = peer.poll_event() {
            match event {
                Event::Connected => connected = true,
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    return "viewer gone";
                }
                _ => {}
            }
        }
        if !peer.is_alive() {
            return "viewer gone";
        }
    }
}

/// Writes `sample` to the peer.
fn write(
    peer: &mut Peer<tokio::net::UdpSocket>,
    mids: &Mids,
    sample: &Sample,
) -> Result<(), StreamerError> {
    let (slot, rate) = match sample.kind {
        TrackKind::Video => (0, Frequency::NINETY_KHZ),
        TrackKind::Audio => (1, Frequency::FORTY_EIGHT_KHZ),
    };
    let Some((mid, pt)) = mids[slot] else {
        return Ok(());
    };
    let Some(writer) = peer.rtc().writer(mid) else {
        return Ok(());
    };
    let now = Instant::now();
    let time = MediaTime::new(u64::try_from(sample.time).unwrap_or(0), rate);
    writer
        .write(pt, now, time, &sample.data[..])
        .map_err(|e| StreamerError::WebRtc(e.to_string()))?;
    peer.drain(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_sections_of_an_answer_are_read_with_their_mids() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:x\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=mid:1\r\n";
        assert_eq!(
            answered_media(sdp),
            [(MediaKind::Audio, "0"), (MediaKind::Video, "1")]
        );
    }
}
