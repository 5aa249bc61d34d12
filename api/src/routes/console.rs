//! The web console (`/`): static files from `web/console/`, embedded in the binary at build
//! time, so the api serves them from any working directory and needs no Node at run time.
//!
//! Contract: only the files listed in [`FILES`] are served, each with its content type and a
//! Content-Security-Policy that lets the page load nothing but itself and talk only to this
//! api, and to the streamers' viewer origins (the servers' `viewer_url`s, read when the page
//! is served) for the live view's `status.json` and watch page: the page sends its token to
//! this api alone. No token is needed for the files: the page asks for one and sends it to
//! the API routes, which decide.

use axum::extract::{Path, State};
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
        "servers.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/servers.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console/live.js"),
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

/// [`POLICY`] for the page itself, which may also ask the viewer origins for a stream's
/// status and frame their watch pages (the live view). Without the database the page is
/// still served, with no viewer origin: the live view then says it cannot show the player.
fn page_policy(viewer_origins: &[String]) -> String {
    let origins: Vec<&str> = viewer_origins
        .iter()
        .map(String::as_str)
        .filter(|o| safe_origin(o))
        .collect();
    if origins.is_empty() {
        return POLICY.replace(
            "connect-src 'self';",
            "connect-src 'self'; frame-src 'none';",
        );
    }
    let list = origins.join(" ");
    POLICY.replace(
        "connect-src 'self';",
        &format!("connect-src 'self' {list}; frame-src {list};"),
    )
}

/// An origin as the domain checked it (`http[s]://host[:port]`), and nothing that could end
/// or widen a policy's source list (a space, `;`, `,`, `*`, a quote).
fn safe_origin(origin: &str) -> bool {
    (origin.starts_with("http://") || origin.starts_with("https://"))
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:/[]".contains(&b))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(file))
}

async fn index(State(state): State<AppState>) -> Response {
    let origins = match slotcast_readmodel::read::viewer_origins(&state.pool).await {
        Ok(origins) => origins,
        Err(e) => {
            tracing::warn!(error = %e, "the console is served without the viewer origins");
            Vec::new()
        }
    };
    let mut response = page("text/html; charset=utf-8", INDEX);
    if let Ok(policy) = HeaderValue::from_str(&page_policy(&origins)) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_may_reach_the_viewer_origins_and_nothing_else() {
        let policy = page_policy(&[
            "http://127.0.0.1:8888".into(),
            "https://watch.example.com".into(),
        ]);
        assert!(policy.contains(
            "connect-src 'self' http://127.0.0.1:8888 https://watch.example.com; \
             frame-src http://127.0.0.1:8888 https://watch.example.com;"
        ));
        assert!(policy.contains("default-src 'none'"));
        assert!(policy.contains("frame-ancestors 'none'"));
    }

    #[test]
    fn without_viewer_origins_nothing_is_framed() {
        assert!(page_policy(&[]).contains("connect-src 'self'; frame-src 'none';"));
    }

    #[test]
    fn an_origin_that_would_widen_the_policy_is_left_out() {
        for bad in [
            "http://a.example; script-src *",
            "http://*",
            "javascript:alert(1)",
            "http://a.example 'unsafe-inline'",
        ] {
            let policy = page_policy(&[bad.into()]);
            assert!(policy.contains("frame-src 'none'"), "{bad}: {policy}");
        }
    }
}
