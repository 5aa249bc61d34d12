//! The server clock as answers carry it: `GET /v1/time` and every booking's `server_time`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slotcast_domain::time::{serde_ms, serde_us};

/// `server_time` in every booking answer and the whole of `GET /v1/time`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerTime {
    /// When the server received the request (server clock).
    #[serde(serialize_with = "serde_us::serialize")]
    pub t_receive: DateTime<Utc>,
    /// When the server sent this answer (server clock).
    #[serde(serialize_with = "serde_us::serialize")]
    pub t_transmit: DateTime<Utc>,
    /// The server clock now (equal to `t_transmit`).
    #[serde(serialize_with = "serde_us::serialize")]
    pub now: DateTime<Utc>,
    pub source: ClockSource,
    pub state: SyncState,
    pub ntp: Option<NtpInfo>,
}

/// `ntp` when an NTP offset is applied to the system clock, `system` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    Ntp,
    System,
}

/// `synced`: last good sync younger than `stale_after`; `stale`: older, its offset still
/// applied; `unsynced`: never synced, system clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    Synced,
    Stale,
    Unsynced,
}

/// One good NTP sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NtpInfo {
    /// The configured `host:port` that answered.
    pub server: String,
    pub stratum: u8,
    /// Server time minus system time, as applied by `now()`.
    pub offset_ms: f64,
    pub delay_ms: f64,
    /// Corrected (server) time of the sync, RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "serde_ms::serialize")]
    pub synced_at: DateTime<Utc>,
    /// Configured servers that agreed with this one (itself included).
    #[serde(default = "one")]
    pub agreeing: u32,
    /// The last step refused since this sync: a server that would have moved the clock by
    /// more than `SLOTCAST_NTP_MAX_STEP_MS` with no other server agreeing. `null` when none.
    #[serde(default)]
    pub step_refused: Option<StepRefused>,
}

fn one() -> u32 {
    1
}

/// A refused step of the server clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRefused {
    /// The server that would have stepped the clock.
    pub server: String,
    /// How far, in milliseconds (its offset minus the offset in use).
    pub step_ms: f64,
    /// When, by the server clock (RFC 3339 UTC with milliseconds).
    #[serde(serialize_with = "serde_ms::serialize")]
    pub at: DateTime<Utc>,
}
