//! The viewer side: LL-HLS playlists (with blocking reload), init segments, segments and parts,
//! the watch page, hls.js, status, metrics and health.
//!
//! Contract: a thin axum edge over the [`Hub`]. Live media comes from the playout in memory;
//! anything older, and every recording after its slot, from the recordings directory. A
//! blocked request holds no lock: it waits on the playout's version watch, bounded by three
//! target durations (then 503, as RFC 8216bis asks). File names are matched against the
//! stream's own patterns before any path is built, so a request cannot leave the directory.
//!
//! Caches: every answer says how long it may be kept (`crate::caching`); init segments,
//! segments, parts and non-blocking playlists carry strong validators, and a conditional
//! request that still holds is answered 304 without the body. A blocking reload is never
//! kept. Media in memory is served from buffers shared by every viewer (`Held`), never
//! copied per request: mapped from memfds, they leave by `sendfile` (`slotcast_http`). Viewers are counted by address, the one `X-Forwarded-For` names
//! behind a trusted proxy (`crate::forwarded`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use slotcast_http::Conn;
use tokio_util::sync::CancellationToken;

use crate::caching::{self, Validators};
use crate::hub::{Hub, PlayoutHandle};
use crate::playlist::Readiness;
use crate::playlist::{parse_part, parse_segment};
use crate::playout::{HeldFile, PlayoutState};
use crate::recording;

const WATCH_PAGE: &str = include_str!("../../web/watch.html");

const MIME_PLAYLIST: &str = "application/vnd.apple.mpegurl";

pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/hls/{id}/index.m3u8", get(playlist))
        .route("/hls/{id}/status.json", get(status))
        .route("/hls/{id}/{file}", get(media_file))
        .route("/watch/{id}", get(watch))
        .route(
            "/whep/{id}",
            post(crate::whep::edge::offer)
                .layer(DefaultBodyLimit::max(crate::whep::edge::OFFER_MAX)),
        )
        .route(
            "/whep/{id}/{session}",
            delete(crate::whep::edge::end).patch(crate::whep::edge::no_trickle),
        )
        .route("/assets/hls.min.js", get(hls_js))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::map_response(cors))
        .with_state(hub)
}

/// Serves until `shutdown`, within the configured limits (`slotcast_http`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Hub,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = hub.config().http.clone();
    let counted = hub.clone();
    let files = Some(hub.files().clone());
    slotcast_http::serve(listener, router(hub), limits, files, shutdown, move || {
        counted.metrics().refused("http_connections_full");
    })
    .await
}

/// Blocking reloads waiting on one connection at most (HTTP/2 can ask many at once; a cache
/// in front of many viewers asks on few connections, each for its own part).
const BLOCKING_PER_CONNECTION: usize = 16;

async fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into(),
    )
        .into_response()
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "no such stream or file\n")
}

#[derive(Debug, Deserialize)]
struct Blocking {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<usize>,
}

fn hold_limit(hub: &Hub) -> Duration {
    hub.config().segment_target * 3
}

async fn playlist(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    conn: Option<Extension<Conn>>,
    Query(blocking): Query<Blocking>,
    request: Request,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let headers = request.headers();
    let viewer = hub.config().trusted_proxies.viewer(remote.ip(), headers);
    hub.saw_viewer(&id, viewer);
    let Some(playout) = hub.find_playout(&id) else {
        return match read_recording(&hub, &id, "index.m3u8").await {
            Some(file) => answer(
                headers,
                MIME_PLAYLIST,
                caching::CACHE_ENDED,
                Some(&file.validators),
                Body::from(file.data),
                None,
            ),
            None => text(StatusCode::NOT_FOUND, "the stream has not started\n"),
        };
    };
    if blocking.part.is_some() && blocking.msn.is_none() {
        return text(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn\n");
    }
    // A place among the requests waiting on this connection, held while this one may wait.
    let _waiting = match (&blocking.msn, conn) {
        (Some(_), Some(Extension(conn))) => match conn.wait(BLOCKING_PER_CONNECTION) {
            Some(place) => Some(place),
            None => {
                return text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many blocking reloads waiting on this connection\n",
                )
            }
        },
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + hold_limit(&hub);
    let mut changed = playout.subscribe();
    loop {
        let answer_now = {
            let c = playout.lock();
            let ready = match blocking.msn {
                Some(msn) => c.readiness(msn, blocking.part),
                None => Readiness::Ready,
            };
            match ready {
                Readiness::Ready => Some((c.version(), c.state())),
                Readiness::TooFarAhead => {
                    return text(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead\n")
                }
                Readiness::Wait => None,
            }
        };
        if let Some((version, state)) = answer_now {
            // Served from the rendering kept for this version, outside the playout's lock.
            let rendered = playout.playlist(version, hub.now());
            let Some(body) = rendered.body else {
                return text(StatusCode::NOT_FOUND, "the stream has not started\n");
            };
            if blocking.msn.is_some() {
                // One viewer's wait: no validators, and no cache keeps it.
                return answer(
                    headers,
                    MIME_PLAYLIST,
                    caching::CACHE_BLOCKING,
                    None,
                    Body::from(body),
                    None,
                );
            }
            let cache = if state == PlayoutState::Ended {
                caching::CACHE_ENDED
            } else {
                caching::CACHE_LIVE
            };
            let validators =
                Validators::rendered(playout.identity(), rendered.version, rendered.at.into());
            return answer(
                headers,
                MIME_PLAYLIST,
                cache,
                Some(&validators),
                Body::from(body),
                None,
            );
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the playlist did not reach the requested part in time\n",
            );
        }
    }
}

/// A 200 with `body`, or a 304 when the request's conditions hold for `validators`.
/// `length`: the body's length, when the body does not know it.
fn answer(
    request: &HeaderMap,
    mime: &'static str,
    cache: &'static str,
    validators: Option<&Validators>,
    body: Body,
    length: Option<usize>,
) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(v) = validators {
        if let Ok(etag) = HeaderValue::from_str(&v.etag) {
            headers.insert(header::ETAG, etag);
        }
        if let Ok(date) = HeaderValue::from_str(&v.http_date()) {
            headers.insert(header::LAST_MODIFIED, date);
        }
        let unchanged = caching::not_modified(
            v,
            request
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .map(HeaderValue::as_bytes),
            request
                .get(header::IF_MODIFIED_SINCE)
                .map(HeaderValue::as_bytes),
        );
        if unchanged {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    *response.body_mut() = body;
    response
}

/// The names a stream's files can have: `init.mp4`, `init-<n>.mp4`, `seg-<msn>.m4s`,
/// `part-<msn>.<i>.m4s`.
fn media_name(name: &str) -> Option<&'static str> {
    let init = name == "init.mp4"
        || name
            .strip_prefix("init-")
            .and_then(|n| n.strip_suffix(".mp4"))
            .is_some_and(|n| n.parse::<u32>().is_ok());
    if init {
        return Some("video/mp4");
    }
    if parse_segment(name).is_some() || parse_part(name).is_some() {
        return Some("video/iso.segment");
    }
    None
}

async fn media_file(
    State(hub): State<Hub>,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let Some(mime) = media_name(&name) else {
        return not_found();
    };
    let headers = request.headers();
    let cache = caching::CACHE_IMMUTABLE;
    if let Some(playout) = hub.find_playout(&id) {
        match wait_for_file(&hub, &playout, &name).await {
            Ok(Some(file)) => {
                let made = file.made().unwrap_or_else(|| hub.now());
                let length = file.len();
                let validators =
                    Validators::in_memory(playout.identity(), &name, length, made.into());
                // A segment goes out as its parts' buffers, each joined once for all viewers
                // into a memfd the kernel sends from.
                let body = match <[Bytes; 1]>::try_from(file.served(hub.files())) {
                    Ok([one]) => Body::from(one),
                    Err(pieces) => Body::new(Chunks::new(pieces)),
                };
                return answer(headers, mime, cache, Some(&validators), body, Some(length));
            }
            Ok(None) => {}
            Err(response) => return response,
        }
    }
    match read_recording(&hub, &id, &name).await {
        Some(file) => {
            let length = file.data.len();
            let body = Body::from(file.data);
            answer(
                headers,
                mime,
                cache,
                Some(&file.validators),
                body,
                Some(length),
            )
        }
        None => not_found(),
    }
}

/// A body of whole buffers, known in length: a segment as its parts.
struct Chunks {
    left: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(pieces: Vec<Bytes>) -> Self {
        let remaining = pieces.iter().map(|b| b.len() as u64).sum();
        Self {
            left: pieces.into(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.left.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The file from memory; for the part the stream will produce next (the preload hint),
/// waits for it.
async fn wait_for_file(
    hub: &Hub,
    playout: &PlayoutHandle,
    name: &str,
) -> Result<Option<HeldFile>, Response> {
    // Asked for again only when the file is not there yet: a file held is answered without
    // touching the version watch.
    let mut changed: Option<tokio::sync::watch::Receiver<u64>> = None;
    let deadline = tokio::time::Instant::now() + hold_limit(hub);
    loop {
        {
            let c = playout.lock();
            if let Some(file) = c.file(name) {
                return Ok(Some(file));
            }
            if !c.is_coming(name) {
                return Ok(None);
            }
        }
        let Some(watch) = changed.as_mut() else {
            // Subscribed after the look: the next look sees any change made since.
            changed = Some(playout.subscribe());
            continue;
        };
        if tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_err()
        {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the part did not arrive in time\n",
            ));
        }
    }
}

/// A file of the recording on disk (names already checked against the stream's patterns),
/// read on a blocking thread.
async fn read_recording(hub: &Hub, id: &str, name: &str) -> Option<recording::Recorded> {
    let dir = hub.config().recordings_dir.join(id);
    let name = name.to_string();
    off_thread(id, "recording file", move || {
        recording::read_file(&dir, &name)
    })
    .await
}

async fn recorded_title(hub: &Hub, id: &str) -> Option<String> {
    let dir = hub.config().recordings_dir.join(id);
    off_thread(id, "recording title", move || recording::read_title(&dir)).await
}

/// Runs a read of reservation `id`'s recording on the blocking pool; an error (or a panic)
/// is logged as `what` unreadable, and is nothing.
async fn off_thread<T: Send + 'static>(
    id: &str,
    what: &str,
    read: impl FnOnce() -> std::io::Result<Option<T>> + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            tracing::warn!(reservation = id, %err, "{what} unreadable");
            None
        }
        Err(err) => {
            tracing::error!(%err, "{what} read panicked");
            None
        }
    }
}

fn recording_path(hub: &Hub, id: &str, name: &str) -> PathBuf {
    hub.config().recordings_dir.join(id).join(name)
}

async fn status(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let mut state = hub.status(&id);
    if state == PlayoutState::Waiting
        && tokio::fs::try_exists(recording_path(&hub, &id, "index.m3u8"))
            .await
            .unwrap_or(false)
        && hub.find_playout(&id).is_none()
        && !hub.is_unfinished(&id)
    {
        state = PlayoutState::Ended;
    }
    let (codec, intake) = match hub.find_playout(&id) {
        Some(playout) => {
            let codec = playout.lock().codecs().map(str::to_string);
            (codec, Some(playout.intake(Instant::now())))
        }
        None => (None, None),
    };
    let title = match hub.title(&id) {
        Some(title) => Some(title),
        // A slot the streamer has forgotten (or one from before a restart): the title its
        // recording kept.
        None if state == PlayoutState::Ended => recorded_title(&hub, &id).await,
        None => None,
    };
    let body = Status {
        viewers: hub.viewers_of(&id),
        protocol: hub.protocol_of(&id).map(|p| p.as_str()),
        title,
        reservation_id: id,
        state,
        codec,
        bitrate_bps: intake.map(|i| i.bitrate_bps),
        frames: intake.map(|i| i.frames),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// `/hls/<id>/status.json` (docs/api.md, "Viewers"): what the watch page and the console
/// show of a stream. Every watch page asks every 2 s, so each field is a map read or a
/// count kept up to date as media and viewers come (`crate::ingest_meter`,
/// `crate::hls_viewers`).
#[derive(Debug, serde::Serialize)]
struct Status {
    reservation_id: String,
    state: PlayoutState,
    /// The reservation's title, from its slot messages.
    title: Option<String>,
    /// RFC 6381, as an HLS `CODECS` attribute: `avc1.42C01E,mp4a.40.2`.
    codec: Option<String>,
    /// Over the last few seconds; `None` while no playout is in memory.
    bitrate_bps: Option<u64>,
    /// Received on this playout; `None` while no playout is in memory.
    frames: Option<u64>,
    /// Distinct HLS viewer addresses lately, plus real-time (WHEP) sessions.
    viewers: usize,
    /// How the stream comes in now (`rtsp`, `rtmp`, `srt`, `whip`; `rtsp` for a camera);
    /// `None` while nothing does.
    protocol: Option<&'static str>,
}

async fn watch(Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WATCH_PAGE,
    )
        .into_response()
}

async fn hls_js(State(hub): State<Hub>) -> Response {
    match tokio::fs::read(&hub.config().hls_js).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(path = %hub.config().hls_js.display(), error = %e, "hls.js is not installed");
            text(
                StatusCode::NOT_FOUND,
                "player not installed: run scripts/services (npm ci --prefix web)\n",
            )
        }
    }
}

async fn metrics(State(hub): State<Hub>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.encode_metrics(),
    )
        .into_response()
}

async fn readyz(State(hub): State<Hub>) -> Response {
    let gates = hub.gates_ready();
    let body = serde_json::json!({
        "status": if gates { "ok" } else { "unavailable" },
        "checks": { "gates": if gates { "ok" } else { "not following NATS" } },
    });
    let status = if gates {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_streams_own_file_names_are_served() {
        assert_eq!(media_name("init.mp4"), Some("video/mp4"));
        assert_eq!(media_name("init-3.mp4"), Some("video/mp4"));
        assert_eq!(media_name("seg-7.m4s"), Some("video/iso.segment"));
        assert_eq!(media_name("part-7.2.m4s"), Some("video/iso.segment"));
        for bad in [
            "../etc/passwd",
            "index.m3u8",
            "seg-x.m4s",
            "init-.mp4",
            "seg-1.m4s/..",
        ] {
            assert_eq!(media_name(bad), None, "{bad}");
        }
        assert!(!valid_id("../x"));
        assert!(valid_id("0190c7a2-1b2c-7d3e-8f90-123456789abc"));
    }
}
