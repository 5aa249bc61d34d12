//! Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use slotcast_projections::nats::Health;

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
    let db = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await;
    let clock = state.clock.status();
    let (status, db) = match db {
        Ok(_) => (StatusCode::OK, json!("ok")),
        Err(err) => {
            tracing::warn!(%err, "readiness: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable"))
        }
    };
    let nats = state.health.snapshot();
    let scheduler = state
        .health
        .is_ok(slotcast_projections::scheduler::COMPONENT);
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
        let ok = health.is_ok(slotcast_projections::scheduler::COMPONENT) == Some(true);
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

/// The OpenAPI document, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "slotcast", description = "Book live-streaming servers by the time slot."),
    modifiers(&BearerAuth),
    paths(
        super::time::time,
        super::servers::create, super::servers::list, super::servers::show,
        super::servers::update, super::servers::schedule,
        super::reservations::book, super::reservations::list, super::reservations::show,
        super::reservations::cancel, super::reservations::reschedule,
        super::reservations::rotate_key, super::reservations::history,
    )
)]
pub struct ApiDoc;
