//! `/v1/servers`: operators register and change distribution servers; anyone with a token
//! lists them and reads their schedule, as it stands or as slotcast knew it at a past
//! instant (`?as_of=`).
//!
//! Contract: a schedule answer is built from read-model rows by one mapping (`slot`),
//! whether the rows come from the read model (live) or from the server's events folded up to
//! the instant (`slotcast_readmodel::read::as_of`); titles and owners only for their owner or
//! an operator, either way (the rule a reservation is shown by).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use slotcast_domain::{Carrier, CommandKind, ServerPatch, ServerSettings, ServerSpec};
use slotcast_readmodel::read::as_of::Known;
use slotcast_readmodel::read::{self, ReservationRow, ServerRow};

use super::RequestContext;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::{
    parse_as_of, parse_time, Body, CarrierDto, CarrierInput, CreateServer, PatchServer, QueryOf,
    Schedule, ScheduleSlot, ServerDto, ServerList,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/servers", get(list).post(create))
        .route("/v1/servers/{id}", get(show).patch(update))
        .route("/v1/servers/{id}/schedule", get(schedule))
}

fn carriers(input: Vec<CarrierInput>) -> Vec<Carrier> {
    input.into_iter().map(Carrier::from).collect()
}

/// A server row's carriers, as its events recorded them.
pub(crate) fn row_carriers(row: ServerRow) -> Vec<Carrier> {
    serde_json::from_value(row.carriers).unwrap_or_default()
}

fn from_settings(s: &ServerSettings) -> ServerDto {
    ServerDto {
        id: s.id.clone(),
        name: s.name.clone(),
        capacity: s.capacity,
        min_lead_s: s.min_lead_s,
        max_duration_s: s.max_duration_s,
        horizon_s: s.horizon_s,
        preroll_s: s.preroll_s,
        grace_s: s.grace_s,
        carriers: s.carriers.iter().cloned().map(CarrierDto::from).collect(),
        viewer_url: s.viewer_url.clone(),
        registered_at: None,
        updated_at: None,
    }
}

pub(crate) fn from_row(row: ServerRow) -> ServerDto {
    let carriers: Vec<Carrier> = serde_json::from_value(row.carriers).unwrap_or_default();
    ServerDto {
        id: row.id,
        name: row.name,
        capacity: u32::try_from(row.capacity).unwrap_or(0),
        min_lead_s: u64::try_from(row.min_lead_s).unwrap_or(0),
        max_duration_s: u64::try_from(row.max_duration_s).unwrap_or(0),
        horizon_s: u64::try_from(row.horizon_s).unwrap_or(0),
        preroll_s: u64::try_from(row.preroll_s).unwrap_or(0),
        grace_s: u64::try_from(row.grace_s).unwrap_or(0),
        carriers: carriers.into_iter().map(CarrierDto::from).collect(),
        viewer_url: row.viewer_url,
        registered_at: Some(row.registered_at),
        updated_at: Some(row.updated_at),
    }
}

/// Registers a distribution server (operator).
#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = CreateServer,
    security(("bearer" = [])),
    responses((status = 201, body = ServerDto), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    body: Body<CreateServer>,
) -> Result<(StatusCode, Json<ServerDto>), ApiError> {
    caller.require_operator()?;
    let input = body.value;
    let spec = ServerSpec {
        id: input.id.clone(),
        name: input.name,
        capacity: input.capacity,
        min_lead_s: input.min_lead_s,
        max_duration_s: input.max_duration_s,
        horizon_s: input.horizon_s,
        preroll_s: input.preroll_s,
        grace_s: input.grace_s,
        carriers: carriers(input.carriers),
        viewer_url: input.viewer_url,
    };
    // The domain validates the id; the store keeps no cache entry for one that is refused.
    let id = input.id;
    let decided = state
        .decide(&ctx, &caller, &id, CommandKind::RegisterServer(spec))
        .await?;
    let settings = decided
        .settings
        .ok_or_else(|| ApiError::internal(std::io::Error::other("no settings after register")))?;
    let mut dto = from_settings(&settings);
    dto.registered_at = Some(ctx.received);
    dto.updated_at = Some(ctx.received);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Every registered server.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", security(("bearer" = [])),
    responses((status = 200, body = ServerList)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<ServerList>, ApiError> {
    let servers = read::servers(&state.pool).await?;
    Ok(Json(ServerList {
        servers: servers.into_iter().map(from_row).collect(),
    }))
}

/// One server.
#[utoipa::path(get, path = "/v1/servers/{id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ServerDto), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ServerDto>, ApiError> {
    let row = read::server(&state.pool, &id)
        .await?
        .ok_or(ApiError::NotFound("server"))?;
    Ok(Json(from_row(row)))
}

/// Changes a server's settings (operator); each field given replaces the current one. New
/// rules apply to later bookings.
#[utoipa::path(patch, path = "/v1/servers/{id}", tag = "servers", request_body = PatchServer,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ServerDto), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body<PatchServer>,
) -> Result<Json<ServerDto>, ApiError> {
    caller.require_operator()?;
    let p = body.value;
    let patch = ServerPatch {
        name: p.name,
        capacity: p.capacity,
        min_lead_s: p.min_lead_s,
        max_duration_s: p.max_duration_s,
        horizon_s: p.horizon_s,
        preroll_s: p.preroll_s,
        grace_s: p.grace_s,
        carriers: p.carriers.map(carriers),
        viewer_url: p.viewer_url,
    };
    let decided = state
        .decide(&ctx, &caller, &id, CommandKind::UpdateServer(patch))
        .await?;
    match read::server(&state.pool, &id).await? {
        Some(row) => Ok(Json(from_row(row))),
        None => decided
            .settings
            .map(|s| Json(from_settings(&s)))
            .ok_or(ApiError::NotFound("server")),
    }
}

/// The most slots one schedule answer lists.
const SCHEDULE_MAX: usize = 5000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// RFC 3339; slots ending after this.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; slots starting before this.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// RFC 3339: the schedule as slotcast knew it at this instant, from the events recorded
    /// by then. Not after the server's now (400).
    #[param(format = DateTime)]
    pub as_of: Option<String>,
}

/// A server's slots in start order. Titles and owners only for their owner or an operator.
/// With `as_of`, the answer slotcast would have given at that instant (404 if the server was
/// not registered yet).
#[utoipa::path(get, path = "/v1/servers/{id}/schedule", tag = "servers",
    security(("bearer" = [])), params(("id" = String, Path), Range),
    responses((status = 200, body = Schedule), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn schedule(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
    QueryOf(range): QueryOf<Range>,
) -> Result<Json<Schedule>, ApiError> {
    let from = range
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let to = range
        .to
        .as_deref()
        .map(|t| parse_time("to", t))
        .transpose()?;
    let as_of = range
        .as_of
        .as_deref()
        .map(|t| parse_as_of(t, ctx.received))
        .transpose()?;
    let rows = match as_of {
        None => {
            if read::server(&state.pool, &id).await?.is_none() {
                return Err(ApiError::NotFound("server"));
            }
            read::schedule(&state.pool, &id, from, to, SCHEDULE_MAX as i64).await?
        }
        Some(at) => {
            let events = read::events_known_at(&state.pool, &id, at).await?;
            let known = Known::fold(&id, &events);
            if known.server().is_none() {
                return Err(ApiError::NotFound("server"));
            }
            known.schedule(from, to, SCHEDULE_MAX)
        }
    };
    Ok(Json(Schedule {
        server_id: id,
        slots: rows.into_iter().map(|r| slot(r, &caller)).collect(),
    }))
}

/// One slot of a schedule as `caller` may see it.
fn slot(r: ReservationRow, caller: &Caller) -> ScheduleSlot {
    let visible = super::reservations::may_see(caller, &r);
    ScheduleSlot {
        reservation_id: r.id,
        start: r.start_at,
        end: r.end_at,
        status: r.status,
        opens_at: r.opens_at,
        closes_at: r.closes_at,
        title: if visible { r.title } else { None },
        owner: visible.then_some(r.owner),
    }
}
