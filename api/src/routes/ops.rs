//! Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use slotcast_nats::Health;

use crate::clock::ServerClock;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers and, where this process runs the scheduler, it can publish.
/// The clock and the NATS consumers are reported, but neither NTP nor consumer trouble makes
/// the api unready (booking works on the system clock, and consumers catch up).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // Marked down (`crate::database`): not asked again here, its watcher is asking.
    let answers = !state.database.is_down()
        && match sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&state.pool)
            .await
        {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(%err, "readiness: database unavailable");
                false
            }
        };
    let clock = state.clock.status();
    let (status, db) = if answers {
        (StatusCode::OK, json!("ok"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable"))
    };
    let nats = state.health.snapshot();
    let scheduler = state.health.is_ok(slotcast_scheduler::COMPONENT);
    let status = if scheduler == Some(false) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let ready = status == StatusCode::OK;
    (
        status,
        Json(json!({"ready": ready, "database": db, "clock": clock, "nats": nats})),
    )
}

/// A standalone scheduler's `/healthz` and `/readyz` (503 while it cannot publish).
pub fn scheduler_ops(clock: ServerClock, health: Health) -> Router {
    let ready = move || {
        let clock = clock.status();
        let nats = health.snapshot();
        let ok = health.is_ok(slotcast_scheduler::COMPONENT) == Some(true);
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        async move {
            (
                status,
                Json(json!({"ready": ok, "clock": clock, "nats": nats})),
            )
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .render(&state.clock.status(), state.store.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers every route of a kind can give, so no route's entry misses them: 401 where a
/// token is needed (none, malformed, unknown, expired, revoked), 400 and 413 where a JSON
/// body is read (not JSON, over the body limit), 403 where an operator's token is needed or
/// a tenant may be refused.
struct CommonAnswers;

/// Routes that answer 403: operator-only, or a booking a distributor may not make.
const FORBIDDING: [(&str, &str); 3] = [
    ("/v1/servers", "post"),
    ("/v1/servers/{id}", "patch"),
    ("/v1/reservations", "post"),
];

impl Modify for CommonAnswers {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Response};
        let error = |what: &str| -> RefOr<Response> {
            RefOr::T(
                utoipa::openapi::ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let operations = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("patch", item.patch.as_mut()),
                ("put", item.put.as_mut()),
                ("delete", item.delete.as_mut()),
            ];
            for (method, operation) in operations {
                let Some(op) = operation else { continue };
                let answers = &mut op.responses.responses;
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    answers
                        .entry("401".into())
                        .or_insert_with(|| error("no token, or one that is not valid"));
                }
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    })
                });
                if has_query {
                    answers
                        .entry("400".into())
                        .or_insert_with(|| error("the query string does not parse"));
                }
                if op.request_body.is_some() {
                    answers
                        .entry("400".into())
                        .or_insert_with(|| error("the body is not the JSON this route takes"));
                    answers
                        .entry("413".into())
                        .or_insert_with(|| error("the body is over the size limit"));
                }
                if FORBIDDING.contains(&(path.as_str(), method)) {
                    answers
                        .entry("403".into())
                        .or_insert_with(|| error("the token's role may not do this"));
                }
            }
        }
    }
}

/// The OpenAPI document, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "slotcast", description = "Book live-streaming servers by the time slot."),
    modifiers(&BearerAuth, &CommonAnswers),
    paths(
        super::time::time,
        super::me::me,
        super::servers::create, super::servers::list, super::servers::show,
        super::servers::update, super::servers::schedule,
        super::reservations::book, super::reservations::list, super::reservations::show,
        super::reservations::cancel, super::reservations::reschedule,
        super::reservations::rotate_key, super::reservations::history,
    )
)]
pub struct ApiDoc;
