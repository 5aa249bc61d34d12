//! `ApiError`: every way a request can fail, mapped to HTTP in this one place.
//!
//! Contract: the client gets `{"error": {"code", "message"}}` with a message it can act on;
//! internal causes (database, serialization) are logged here and never sent.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use slotcast_domain::ScheduleError;
/// The error body is part of the wire contract (clients read it).
pub use slotcast_wire::{ErrorBody, ErrorDetail};

/// Marks a response answered 503 because Postgres could not be reached (a response
/// extension, read by `crate::database`'s middleware; never sent).
#[derive(Clone, Copy, Debug)]
pub struct DatabaseDown;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str, String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// Cannot answer now (the database failed the commit, the store is shutting down): the
    /// client may retry after `retry_after_s`. 503 with `Retry-After`, the shape every part of
    /// slotcast answers with when it cannot answer now.
    #[error("{message}")]
    Unavailable {
        retry_after_s: u64,
        message: &'static str,
    },
    /// Postgres cannot be reached or is restarting: 503 `unavailable` with `Retry-After`, and
    /// the response is marked [`DatabaseDown`] so the api stops waiting on it
    /// (`crate::database`).
    #[error("{0}")]
    DatabaseUnavailable(&'static str),
    #[error("already recorded")]
    AlreadyRecorded,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    /// 503 `unavailable`, retry after a second.
    pub fn unavailable(message: &'static str) -> Self {
        Self::Unavailable {
            retry_after_s: 1,
            message,
        }
    }

    /// 503 `unavailable` because Postgres cannot be reached.
    pub fn database_unavailable() -> Self {
        Self::DatabaseUnavailable("the database is unavailable; retry")
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(field.to_string(), message.into())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Invalid(..) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::Unavailable { .. } | Self::DatabaseUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::AlreadyRecorded => (StatusCode::CONFLICT, "already_recorded"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Conflict(_, message) => message.clone(),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                self.to_string()
            }
            other => other.to_string(),
        };
        let database_down = matches!(self, Self::DatabaseUnavailable(_));
        let retry_after_s = match self {
            Self::Unavailable { retry_after_s, .. } => Some(retry_after_s),
            Self::DatabaseUnavailable(_) => Some(1),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                retry_after_s,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if database_down {
            response.extensions_mut().insert(DatabaseDown);
        }
        response
    }
}

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> Self {
        match err {
            ScheduleError::Invalid { field, message } => Self::invalid(field, message),
            ScheduleError::Forbidden => Self::Forbidden("only an operator may do that"),
            ScheduleError::ServerNotFound => Self::NotFound("server"),
            ScheduleError::ServerExists => Self::Conflict(
                "server_exists",
                "a server with that id is already registered".into(),
            ),
            ScheduleError::ReservationNotFound => Self::NotFound("reservation"),
            ScheduleError::ReservationNotActive => Self::Conflict(
                "reservation_not_active",
                "the reservation has ended or was cancelled".into(),
            ),
            ScheduleError::AlreadyRecorded => Self::AlreadyRecorded,
        }
    }
}

impl From<slotcast_readmodel::Error> for ApiError {
    fn from(err: slotcast_readmodel::Error) -> Self {
        // 503 when Postgres could not be reached, else 500.
        if err.is_unavailable() {
            tracing::warn!(%err, "the database is unavailable");
            Self::database_unavailable()
        } else {
            Self::internal(err)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        slotcast_readmodel::Error::Db(err).into()
    }
}
