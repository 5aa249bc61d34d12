//! `GET /v1/time`: the server clock, for the terminal's NTP-style offset measurement.

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::RequestContext;
use crate::state::AppState;
use crate::wire::ServerTime;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/time", get(time))
}

/// The server's own time. `t_receive` / `t_transmit` are the NTP t2 / t3 of this exchange.
#[utoipa::path(get, path = "/v1/time", tag = "time",
    responses((status = 200, body = ServerTime)))]
pub async fn time(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
) -> Json<ServerTime> {
    Json(state.server_time(ctx.received))
}
