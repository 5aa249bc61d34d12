//! The web console (`/`): static files from `web/console/`, embedded in the binary at build
//! time, so the api serves them from any working directory and needs no Node at run time.
//!
//! Contract: only the files listed in [`FILES`] are served, each with its content type and a
//! Content-Security-Policy that lets the page load nothing but itself and talk only to this
//! api (the token it holds must not leak to another origin). No token is needed for the
//! files: the page asks for one and sends it to the API routes, which decide.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The page's own files: (name under `/console/`, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/api.js"),
    ),
    (
        "clock.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/clock.js"),
    ),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/timeline.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/ui.js"),
    ),
    (
        "setting.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/setting.js"),
    ),
    (
        "reservation.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/reservation.js"),
    ),
    (
        "publish.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/publish.js"),
    ),
];

const INDEX: &str = include_str!("../../../web/console/index.html");

/// Scripts, styles and requests from this origin only; nothing may frame the page.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(file))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => page(kind, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn page(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A new binary may bring new files: check each time (they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
