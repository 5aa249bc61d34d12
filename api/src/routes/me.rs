//! `GET /v1/me`: the caller as its bearer token says, so a client (the console) can show who
//! is signed in and what they may do before it asks for anything else.
//!
//! Contract: the same [`Caller`] extractor as every other route, so a token refused here is
//! refused everywhere (401), and one accepted here carries the role the other routes decide by.

use axum::routing::get;
use axum::{Json, Router};
use slotcast_domain::Role;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::{Me, TokenRole};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/me", get(me))
}

/// Who the token belongs to and its role: an `operator` sees every tenant, a `distributor`
/// (a broadcaster) only what it booked.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(caller: Caller) -> Result<Json<Me>, ApiError> {
    let role = match caller.0.role {
        Role::Operator => TokenRole::Operator,
        Role::Distributor => TokenRole::Distributor,
        // slotcast's own consumers act as `Service`; no token carries it.
        Role::Service => return Err(ApiError::Forbidden("no token carries this role")),
    };
    Ok(Json(Me {
        name: caller.0.name,
        role,
    }))
}
