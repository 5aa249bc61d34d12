//! The HTTP surface: each module exports `router()`, merged here with the request-context
//! middleware (request id, receive stamp on the server clock, metrics).

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};

use slotcast_domain::{Command, CommandKind};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Context, Decided};
use crate::wire::ServerTime;

mod console;
mod me;
mod ops;
mod reservations;
mod servers;
mod time;

pub use ops::{scheduler_ops, ApiDoc};

/// Set on every request by the middleware.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    /// The server clock when the request arrived (`t_receive`).
    pub received: DateTime<Utc>,
}

impl AppState {
    /// The `server_time` object for a request received at `received`, stamped now.
    pub fn server_time(&self, received: DateTime<Utc>) -> ServerTime {
        let status = self.clock.status();
        let now = self.clock.now();
        ServerTime {
            t_receive: received,
            t_transmit: now,
            now,
            source: status.source,
            state: status.state,
            ntp: status.ntp,
        }
    }

    /// Decides `kind` on `server_id`'s schedule for `caller`, at the request's receive time.
    pub async fn decide(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        server_id: &str,
        kind: CommandKind,
    ) -> Result<Decided, ApiError> {
        let command = Command {
            now: ctx.received,
            actor: caller.0.clone(),
            kind,
        };
        self.store
            .execute(server_id, command, &self.context(ctx, caller))
            .await
    }

    /// The event metadata for a command `caller` sent in the request `ctx`.
    pub fn context(&self, ctx: &RequestContext, caller: &Caller) -> Context {
        Context {
            actor: caller.label(),
            request_id: ctx.request_id.clone(),
            recorded_at: ctx.received,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    // The routes that decide, and those that read what was decided: each request runs in a
    // task of its own, so a client that hangs up (or a proxy that cuts it) after sending does
    // not stop a decision halfway. All of them need Postgres (`/v1/me` for a token not yet
    // cached): while it is down they are answered 503 at once.
    let deciding = Router::new()
        .merge(me::router())
        .merge(servers::router())
        .merge(reservations::router())
        .layer(middleware::from_fn(carry_through))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::database::gate,
        ));
    Router::new()
        .merge(time::router())
        .merge(console::router())
        .merge(deciding)
        .merge(ops::router())
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), context))
        .with_state(state)
}

/// Handles the request in a task of its own: hyper drops a request's future when its
/// connection closes, and a booking must be carried through (or not started) whatever the
/// client does. The answer then goes nowhere; a retry with the same Idempotency-Key finds it.
async fn carry_through(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(err) => ApiError::internal(err).into_response(),
    }
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_string())
}

async fn context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let received = state.clock.now();
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().to_string();
    req.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        received,
    });
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state
        .metrics
        .observe_request(&method, response.status().as_u16(), started.elapsed());
    response
}
