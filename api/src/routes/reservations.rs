//! `/v1/reservations`: distributors book, change and audit their slots; operators see all.
//!
//! Contract: a distributor only ever sees its own reservations; another tenant's id answers
//! 404 exactly like an unknown one. Booking answers carry `server_time` stamped for this
//! request, and the stream key appears only in the acceptance (and rotation) answer. One
//! reservation is shown by one mapping from read-model rows (`dto`), whether they come from
//! the read model or, with `?as_of=`, from its server's events folded up to that instant
//! (`slotcast_readmodel::read::as_of`), under the same visibility rule (`may_see`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Deserialize;
use slotcast_domain::contract::{CameraSource, CameraTransport};
use slotcast_domain::secret::{CameraLogin, SecretKey};
use slotcast_domain::{Carrier, Command, CommandKind, Role, ScheduleEvent, ServerSettings};
use slotcast_readmodel::read::as_of::Known;
use slotcast_readmodel::read::{self, ReservationFilter, ReservationRow, ServerRow};

use super::RequestContext;
use crate::auth::{new_stream_key, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{self, Turn};
use crate::state::AppState;
use crate::store::{Answered, Decided, Once};
use crate::wire::{
    parse_as_of, parse_time, Accepted, Body, BookRequest, CarrierUrl, History, HistoryCursor,
    HistoryEntry, IngestDto, QueryOf, Rejected, RescheduleRequest, ReservationDto, ReservationList,
    ReservationStatus, RotatedKey, ServerTime, Setting, SourceDto, SourceRequest, WindowDto,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reservations", get(list).post(book))
        .route("/v1/reservations/{id}", get(show))
        .route("/v1/reservations/{id}/cancel", post(cancel))
        .route("/v1/reservations/{id}/reschedule", post(reschedule))
        .route("/v1/reservations/{id}/rotate-key", post(rotate_key))
        .route("/v1/reservations/{id}/history", get(history))
}

fn carrier_urls(carriers: &[Carrier], id: &str) -> Vec<CarrierUrl> {
    carriers.iter().map(|c| CarrierUrl::of(c, id)).collect()
}

fn settings_carriers(settings: Option<&ServerSettings>) -> &[Carrier] {
    settings.map_or(&[], |s| s.carriers.as_slice())
}

async fn row_carriers(state: &AppState, server_id: &str) -> Result<Vec<Carrier>, ApiError> {
    Ok(server_carriers(read::server(&state.pool, server_id).await?))
}

/// A server row's carriers; none without the row.
fn server_carriers(row: Option<ServerRow>) -> Vec<Carrier> {
    row.map(super::servers::row_carriers).unwrap_or_default()
}

fn dto(row: ReservationRow, carriers: &[Carrier]) -> ReservationDto {
    let setting = match (row.status.was_accepted(), row.opens_at, row.closes_at) {
        (true, Some(opens_at), Some(closes_at)) => Some(Setting {
            stream_key: None,
            opens_at,
            closes_at,
            carriers: carrier_urls(carriers, &row.id),
        }),
        _ => None,
    };
    ReservationDto {
        id: row.id,
        status: row.status,
        server_id: row.server_id,
        owner: row.owner,
        title: row.title,
        start: row.start_at,
        end: row.end_at,
        setting,
        source: row.camera_url.map(|pull_url| SourceDto {
            pull_url,
            transport: row.camera_transport.unwrap_or_else(|| "tcp".into()),
            login: row.camera_login,
        }),
        reason: row.reason,
        ingest: row.ingest.map(|state| IngestDto {
            state,
            carrier: row.ingest_carrier,
            at: row.ingest_at.unwrap_or(row.updated_at),
        }),
        requested_at: row.requested_at,
        updated_at: row.updated_at,
    }
}

/// A booking's camera as the command carries it: the login sealed for this reservation at
/// once (it exists nowhere else in the clear), the URL checked by the aggregate.
fn camera_source(
    request: SourceRequest,
    reservation_id: &str,
    secret: Option<&SecretKey>,
) -> Result<CameraSource, ApiError> {
    let transport = match request.transport.as_deref() {
        None | Some("tcp") => CameraTransport::Tcp,
        Some("udp") => CameraTransport::Udp,
        Some(_) => return Err(ApiError::invalid("source.transport", "must be tcp or udp")),
    };
    // The aggregate checks the rules (rtsp://, a host, no user info); this checks that the
    // streamer will be able to read it at all, without echoing it.
    if let Err(err) = url::Url::parse(&request.pull_url) {
        return Err(ApiError::invalid(
            "source.pull_url",
            format!("is not a URL ({err})"),
        ));
    }
    let password = request.password.map(|p| p.0);
    let credentials = match (request.username, password) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "source.username",
                "is needed with a password",
            ))
        }
        (Some(username), password) => {
            if username.is_empty() || username.len() > LOGIN_MAX {
                return Err(ApiError::invalid(
                    "source.username",
                    "must be 1 to 256 characters",
                ));
            }
            // Basic auth joins them with `:`, Digest quotes the user name.
            if username.contains([':', '"']) || username.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "source.username",
                    "must not hold `:`, `\"` or control characters",
                ));
            }
            let password = password.unwrap_or_default();
            if password.len() > LOGIN_MAX {
                return Err(ApiError::invalid(
                    "source.password",
                    "must be at most 256 characters",
                ));
            }
            if password.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "source.password",
                    "must not hold control characters",
                ));
            }
            let Some(secret) = secret else {
                return Err(ApiError::invalid(
                    "source.password",
                    "cannot be stored: this deployment has no SLOTCAST_SECRET_KEY to seal it with \
                     (ask the operator to set one)",
                ));
            };
            let mut nonce = [0u8; slotcast_domain::secret::NONCE_LEN];
            rand::rng().fill_bytes(&mut nonce);
            Some(CameraLogin { username, password }.seal(secret, nonce, reservation_id))
        }
    };
    Ok(CameraSource {
        url: request.pull_url,
        transport,
        credentials,
    })
}

/// The longest camera user name or password taken.
const LOGIN_MAX: usize = 256;

/// Whether `caller` may see `row` (or its title and owner in a schedule): its owner or an
/// operator.
pub(super) fn may_see(caller: &Caller, row: &ReservationRow) -> bool {
    caller.is_operator() || row.owner == caller.0.name
}

/// The caller's view of a reservation: 404 for unknown ids and other tenants' alike.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<ReservationRow, ApiError> {
    match read::reservation(&state.pool, id).await? {
        Some(row) if may_see(caller, &row) => Ok(row),
        _ => Err(ApiError::NotFound("reservation")),
    }
}

/// [`visible`] as slotcast knew it at `at`, with its server's row then: 404 as well for a
/// reservation not yet requested at `at`.
async fn visible_at(
    state: &AppState,
    caller: &Caller,
    id: &str,
    at: DateTime<Utc>,
) -> Result<(ReservationRow, Option<ServerRow>), ApiError> {
    let Some(server_id) = read::server_of_reservation(&state.pool, id).await? else {
        return Err(ApiError::NotFound("reservation"));
    };
    let events = read::events_known_at(&state.pool, &server_id, at).await?;
    let known = Known::fold(&server_id, &events);
    match known.reservation(id) {
        Some(row) if may_see(caller, row) => Ok((row.clone(), known.server().cloned())),
        _ => Err(ApiError::NotFound("reservation")),
    }
}

/// How long a retry waits for a request with the same Idempotency-Key that is still being
/// decided in this process, before it is told to come back (503 with `Retry-After`).
const ONCE_WAIT: Duration = Duration::from_secs(60);

/// Books a slot (distributor). 201 with the setting info and the server time on acceptance;
/// 409 with the conflicts and up to 3 free windows when the server is full. With an
/// `Idempotency-Key` header a retry gets the first answer back (stream key included; its
/// `server_time` stamped for the retry) and books nothing new, whether it arrives while the
/// first is still being decided (it waits for it) or after; the first runs to its end even if
/// its client has gone.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", request_body = BookRequest,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe booking")),
    responses((status = 201, body = Accepted), (status = 409, body = Rejected),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Cannot answer now: retry after `Retry-After` seconds")))]
pub async fn book(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    headers: HeaderMap,
    body: Body<BookRequest>,
) -> Result<Response, ApiError> {
    if caller.0.role != Role::Distributor {
        return Err(ApiError::Forbidden(
            "bookings are made with a distributor token",
        ));
    }
    let (status, answer) = match headers.get("idempotency-key") {
        None => {
            let booking = Booking::prepare(&state, &ctx, body.value)?;
            let decided = state
                .decide(&ctx, &caller, &booking.server_id, booking.command.clone())
                .await?;
            let (status, answer) = booking.answer(&decided)?;
            state.metrics.decision(outcome(status));
            (status, answer)
        }
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
            let key = idempotency::Key::new(&caller.label(), value, &body.raw)?;
            book_once(state.clone(), ctx.clone(), caller, key, body.value).await?
        }
    };
    Ok(answered(&state, &ctx, status, answer))
}

/// The booking's answer as sent: `server_time` stamped now, for this request (a replay's
/// stored stamp belongs to the first request's exchange, not to this one).
fn answered(
    state: &AppState,
    ctx: &RequestContext,
    status: u16,
    mut body: serde_json::Value,
) -> Response {
    if let Some(stamp) = body.get_mut("server_time") {
        if let Ok(now) = serde_json::to_value(state.server_time(ctx.received)) {
            *stamp = now;
        }
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, Json(body)).into_response()
}

/// The decision's metric label: the status the booking ended in.
fn outcome(status: u16) -> &'static str {
    if status == StatusCode::CREATED.as_u16() {
        ReservationStatus::Accepted.as_str()
    } else {
        ReservationStatus::Rejected.as_str()
    }
}

/// A booking with an Idempotency-Key: one request per key decides at a time in this process;
/// a retry waits for it, then finds its stored answer.
async fn book_once(
    state: AppState,
    ctx: RequestContext,
    caller: Caller,
    key: idempotency::Key,
    input: BookRequest,
) -> Result<(u16, serde_json::Value), ApiError> {
    let deadline = tokio::time::Instant::now() + ONCE_WAIT;
    loop {
        match state.inflight.enter(&key)? {
            Turn::Wait(mut done) => {
                if tokio::time::timeout_at(deadline, done.changed())
                    .await
                    .is_err()
                {
                    return Err(ApiError::unavailable(
                        "a request with this Idempotency-Key is still being decided; retry",
                    ));
                }
            }
            Turn::Lead(leader) => {
                // A task of its own, so that a client that hangs up cannot stop the decision
                // halfway: it commits (with its answer) or fails, and only then lets the key go.
                let task = tokio::spawn(async move {
                    let _leader = leader;
                    decide_once(&state, &ctx, &caller, &key, input).await
                });
                return task.await.map_err(ApiError::internal)?;
            }
        }
    }
}

async fn decide_once(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    key: &idempotency::Key,
    input: BookRequest,
) -> Result<(u16, serde_json::Value), ApiError> {
    if let Some(stored) = key.lookup(&state.pool).await? {
        return Ok(stored);
    }
    let booking = Arc::new(Booking::prepare(state, ctx, input)?);
    let once = Once {
        key: key.clone(),
        answer: Box::new({
            let booking = booking.clone();
            move |decided| booking.answer(decided)
        }),
    };
    let command = Command {
        now: ctx.received,
        actor: caller.0.clone(),
        kind: booking.command.clone(),
    };
    let answered = state
        .store
        .execute_once(
            &booking.server_id,
            command,
            &state.context(ctx, caller),
            once,
        )
        .await?;
    Ok(match answered {
        Answered::Fresh(_, status, body) => {
            state.metrics.decision(outcome(status));
            (status, body)
        }
        Answered::Replay(status, body) => (status, body),
    })
}

/// A booking request made ready to decide: the reservation id and stream key minted, the
/// camera's login sealed.
struct Booking {
    id: String,
    server_id: String,
    stream_key: String,
    command: CommandKind,
    /// The request's server time, for the answer (restamped when sent).
    server_time: ServerTime,
}

impl Booking {
    fn prepare(
        state: &AppState,
        ctx: &RequestContext,
        input: BookRequest,
    ) -> Result<Self, ApiError> {
        let id = uuid::Uuid::now_v7().to_string();
        let source = input
            .source
            .map(|s| camera_source(s, &id, state.config.secret_key.as_ref()))
            .transpose()?;
        let minted = new_stream_key(&id, state.config.secret_key.as_ref());
        Ok(Self {
            command: CommandKind::RequestReservation {
                reservation_id: id.clone(),
                start: input.start.0,
                end: input.end.0,
                title: input.title,
                stream_key_hash: minted.hash,
                stream_key_digest: minted.digest,
                source,
            },
            id,
            server_id: input.server_id,
            stream_key: minted.key,
            server_time: state.server_time(ctx.received),
        })
    }

    /// The answer to the booking once decided: 201 with the setting info, or 409.
    fn answer(&self, decided: &Decided) -> Result<(u16, serde_json::Value), ApiError> {
        let id = &self.id;
        match decided.events.first() {
            Some(ScheduleEvent::ReservationAccepted {
                start,
                end,
                title,
                opens_at,
                closes_at,
                source,
                ..
            }) => {
                let carriers = settings_carriers(decided.settings.as_ref());
                let body = Accepted {
                    id: id.clone(),
                    status: ReservationStatus::Accepted,
                    server_id: self.server_id.clone(),
                    start: *start,
                    end: *end,
                    title: title.clone(),
                    source: source.as_ref().map(|c| SourceDto {
                        pull_url: c.url.clone(),
                        transport: c.transport.as_str().to_string(),
                        login: c.credentials.is_some(),
                    }),
                    setting: Setting {
                        stream_key: Some(self.stream_key.clone()),
                        opens_at: *opens_at,
                        closes_at: *closes_at,
                        carriers: carrier_urls(carriers, id),
                    },
                    server_time: self.server_time.clone(),
                };
                json_answer(StatusCode::CREATED, &body)
            }
            Some(ScheduleEvent::ReservationRejected {
                reason,
                conflicts,
                suggestions,
                ..
            }) => {
                let body = rejection(
                    self.server_time.clone(),
                    id.clone(),
                    *reason,
                    conflicts,
                    suggestions,
                );
                json_answer(StatusCode::CONFLICT, &body)
            }
            _ => Err(ApiError::internal(std::io::Error::other(
                "a booking decided neither accepted nor rejected",
            ))),
        }
    }
}

fn json_answer<T: serde::Serialize>(
    status: StatusCode,
    body: &T,
) -> Result<(u16, serde_json::Value), ApiError> {
    Ok((
        status.as_u16(),
        serde_json::to_value(body).map_err(ApiError::internal)?,
    ))
}

fn rejection(
    server_time: ServerTime,
    id: String,
    reason: slotcast_domain::RejectReason,
    conflicts: &[slotcast_domain::Window],
    suggestions: &[slotcast_domain::Window],
) -> Rejected {
    let code = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Rejected {
        id,
        status: ReservationStatus::Rejected,
        reason: code,
        message: reason.explain().to_string(),
        conflicts: conflicts.iter().map(WindowDto::from).collect(),
        suggestions: suggestions.iter().map(WindowDto::from).collect(),
        server_time,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// One of the statuses.
    // Read as text: a word that is none of them is a 422 naming them, as every bad value is.
    #[param(value_type = Option<ReservationStatus>)]
    pub status: Option<String>,
    pub server_id: Option<String>,
    /// RFC 3339: slots ending after this.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339: slots starting before this.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// At most this many (default 500; more than 5000 is taken as 5000).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// The caller's reservations (an operator's: everyone's) in start order.
#[utoipa::path(get, path = "/v1/reservations", tag = "reservations", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = ReservationList),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<ListQuery>,
) -> Result<Json<ReservationList>, ApiError> {
    let parse = |field: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
        v.as_deref().map(|t| parse_time(field, t)).transpose()
    };
    let status = q
        .status
        .as_deref()
        .map(str::parse::<ReservationStatus>)
        .transpose()
        .map_err(|e| {
            ApiError::invalid(
                "status",
                format!("must be one of {}", e.expected.join(", ")),
            )
        })?;
    let filter = ReservationFilter {
        owner: (!caller.is_operator()).then(|| caller.0.name.clone()),
        server_id: q.server_id,
        status,
        from: parse("from", &q.from)?,
        to: parse("to", &q.to)?,
        limit: match &q.limit {
            Some(limit) => query_whole("limit", limit, 1)?.min(5000),
            None => 500,
        },
    };
    let rows = read::reservations(&state.pool, &filter).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut carriers: std::collections::HashMap<String, Vec<Carrier>> = Default::default();
    for row in rows {
        if !carriers.contains_key(&row.server_id) {
            let c = row_carriers(&state, &row.server_id).await?;
            carriers.insert(row.server_id.clone(), c);
        }
        let c = carriers.get(&row.server_id).cloned().unwrap_or_default();
        out.push(dto(row, &c));
    }
    Ok(Json(ReservationList { reservations: out }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// RFC 3339: the reservation as slotcast knew it at this instant, from the events recorded
    /// by then (its server's carriers too). Not after the server's now (400).
    #[param(format = DateTime)]
    pub as_of: Option<String>,
}

/// One reservation. With `as_of`, the answer slotcast would have given at that instant: 404
/// for a reservation not yet requested then, as for an unknown one.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations",
    security(("bearer" = [])), params(("id" = String, Path), ShowQuery),
    responses((status = 200, body = ReservationDto), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
    QueryOf(q): QueryOf<ShowQuery>,
) -> Result<Json<ReservationDto>, ApiError> {
    let as_of = q
        .as_of
        .as_deref()
        .map(|t| parse_as_of(t, ctx.received))
        .transpose()?;
    let (row, carriers) = match as_of {
        None => {
            let row = visible(&state, &caller, &id).await?;
            let carriers = row_carriers(&state, &row.server_id).await?;
            (row, carriers)
        }
        Some(at) => {
            let (row, server) = visible_at(&state, &caller, &id, at).await?;
            (row, server_carriers(server))
        }
    };
    Ok(Json(dto(row, &carriers)))
}

async fn fresh(state: &AppState, id: &str) -> Result<ReservationDto, ApiError> {
    let row = read::reservation(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("reservation"))?;
    let carriers = row_carriers(state, &row.server_id).await?;
    Ok(dto(row, &carriers))
}

/// Cancels a reservation before its slot ends (owner or operator).
#[utoipa::path(post, path = "/v1/reservations/{id}/cancel", tag = "reservations",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ReservationDto), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReservationDto>, ApiError> {
    let row = visible(&state, &caller, &id).await?;
    state
        .decide(
            &ctx,
            &caller,
            &row.server_id,
            CommandKind::CancelReservation {
                reservation_id: id.clone(),
            },
        )
        .await?;
    Ok(Json(fresh(&state, &id).await?))
}

/// Moves a reservation (owner or operator), atomically: if the new time is refused the old
/// slot stays and the answer is 409 with conflicts and suggestions.
#[utoipa::path(post, path = "/v1/reservations/{id}/reschedule", tag = "reservations",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = RescheduleRequest,
    responses((status = 200, body = ReservationDto), (status = 409, body = Rejected),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reschedule(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body<RescheduleRequest>,
) -> Result<Response, ApiError> {
    let row = visible(&state, &caller, &id).await?;
    let decided = state
        .decide(
            &ctx,
            &caller,
            &row.server_id,
            CommandKind::RescheduleReservation {
                reservation_id: id.clone(),
                start: body.value.start.0,
                end: body.value.end.0,
            },
        )
        .await?;
    if let Some(ScheduleEvent::RescheduleRejected {
        reason,
        conflicts,
        suggestions,
        ..
    }) = decided.events.first()
    {
        state.metrics.decision("reschedule_rejected");
        let body = rejection(
            state.server_time(ctx.received),
            id,
            *reason,
            conflicts,
            suggestions,
        );
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    state.metrics.decision("rescheduled");
    Ok(Json(fresh(&state, &id).await?).into_response())
}

/// Issues a new stream key for the reservation (owner or operator); the old one stops
/// working. Answers the new setting, the only time this key is shown.
#[utoipa::path(post, path = "/v1/reservations/{id}/rotate-key", tag = "reservations",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RotatedKey), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RotatedKey>, ApiError> {
    let row = visible(&state, &caller, &id).await?;
    let minted = new_stream_key(&id, state.config.secret_key.as_ref());
    let stream_key = minted.key;
    let decided = state
        .decide(
            &ctx,
            &caller,
            &row.server_id,
            CommandKind::RotateStreamKey {
                reservation_id: id.clone(),
                stream_key_hash: minted.hash,
                stream_key_digest: minted.digest,
            },
        )
        .await?;
    let carriers = settings_carriers(decided.settings.as_ref());
    let (opens_at, closes_at) = match (row.opens_at, row.closes_at) {
        (Some(o), Some(c)) => (o, c),
        _ => return Err(ApiError::NotFound("reservation")),
    };
    Ok(Json(RotatedKey {
        setting: Setting {
            stream_key: Some(stream_key),
            opens_at,
            closes_at,
            carriers: carrier_urls(carriers, &id),
        },
        id,
        server_time: state.server_time(ctx.received),
    }))
}

/// A page of a history: `after` or `before` (not both), and `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The events after this sequence, oldest first (the default: from the first); with
    /// `before` too, the events between the two, oldest first.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
    /// The events before this sequence, newest first.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub before: Option<String>,
    /// Events per page, 1 to 1000 (default 1000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Events per history page, at most (and by default).
pub const HISTORY_PAGE_MAX: i64 = 1000;

/// A whole number from a query parameter (`12`, or `12.0` as JSON Schema counts it), at
/// least `min`.
fn query_whole(field: &str, text: &str, min: i64) -> Result<i64, ApiError> {
    let text = text.trim();
    let n = text
        .parse::<i64>()
        .ok()
        .or_else(|| {
            let f = text.parse::<f64>().ok()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        })
        .ok_or_else(|| ApiError::invalid(field, "must be a whole number"))?;
    if n < min {
        return Err(ApiError::invalid(field, format!("must be at least {min}")));
    }
    Ok(n)
}

/// The reservation's events, a page at a time: the audit trail. Oldest first from the start
/// by default; `?after=SEQ` continues oldest first, `?before=SEQ` goes newest first, both
/// give the events between them, oldest first. The
/// answer's `next` is the query for the following page, `null` on the last.
#[utoipa::path(get, path = "/v1/reservations/{id}/history", tag = "reservations",
    security(("bearer" = [])), params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = History), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryOf(q): QueryOf<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let page = match (&q.after, &q.before) {
        (Some(after), Some(before)) => read::Page::Between(
            query_whole("after", after, 0)?,
            query_whole("before", before, 0)?,
        ),
        (Some(after), None) => read::Page::After(query_whole("after", after, 0)?),
        (None, Some(before)) => read::Page::Before(query_whole("before", before, 0)?),
        (None, None) => read::Page::After(0),
    };
    let limit = match &q.limit {
        Some(limit) => query_whole("limit", limit, 1)?,
        None => HISTORY_PAGE_MAX,
    };
    if limit > HISTORY_PAGE_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("must be at most {HISTORY_PAGE_MAX}"),
        ));
    }
    visible(&state, &caller, &id).await?;
    // One more than asked: whether there is a next page, without asking again.
    let mut rows = read::history(&state.pool, &id, page, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match (more, rows.last(), page) {
        (true, Some(last), read::Page::After(_)) => Some(HistoryCursor {
            after: Some(last.sequence),
            before: None,
        }),
        (true, Some(last), read::Page::Between(_, before)) => Some(HistoryCursor {
            after: Some(last.sequence),
            before: Some(before),
        }),
        (true, Some(last), read::Page::Before(_)) => Some(HistoryCursor {
            after: None,
            before: Some(last.sequence),
        }),
        _ => None,
    };
    let field =
        |m: &serde_json::Value, k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let events = rows
        .into_iter()
        .map(|r| {
            // Events are stored externally tagged ({"Type": {...}}): show the inside.
            let mut data = match r.payload {
                serde_json::Value::Object(mut map) if map.len() == 1 => {
                    map.remove(&r.event_type).unwrap_or(serde_json::Value::Null)
                }
                other => other,
            };
            // A camera login is shown as stored, not even as its ciphertext.
            if let Some(login) = data.pointer_mut("/source/credentials") {
                *login = serde_json::Value::from("(sealed)");
            }
            HistoryEntry {
                sequence: r.sequence,
                recorded_at: field(&r.metadata, "recorded_at"),
                actor: field(&r.metadata, "actor"),
                request_id: field(&r.metadata, "request_id"),
                kind: r.event_type,
                data,
            }
        })
        .collect();
    Ok(Json(History {
        reservation_id: id,
        events,
        next,
    }))
}
