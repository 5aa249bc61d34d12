//! The `ServerSchedule` aggregate: one per distribution server, the consistency boundary for
//! every booking decision on it.
//!
//! Contract: `handle` decides from the state and the command alone (the command carries `now`,
//! the actor and any generated ids), and records every decision as an event, a refusal
//! included. Input that breaks a rule on a field is an error naming the field and records
//! nothing. `apply` is idempotent (set semantics keyed by reservation id) so replaying an event
//! twice cannot change the state. The state keeps open and future slots only: a slot leaves
//! when its window closes or it is cancelled. The slots live in a [`SlotIndex`]: a decision
//! reads only the slots near its window (and a refusal's suggestions only as far as the
//! nearest free windows), and `apply` never walks the schedule, closed slots included.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::booking::Window;
use crate::contract::{
    CameraSource, IngestKind, IngestMessage, IngestProtocol, SlotKind, SlotMessage, StreamCursor,
};
pub use crate::slot_index::Slot;
use crate::slot_index::SlotIndex;

/// Defaults for a server's booking rules; the API documents them.
pub mod defaults {
    pub const CAPACITY: u32 = 1;
    pub const MIN_LEAD_S: u64 = 30;
    pub const MAX_DURATION_S: u64 = 12 * 3600;
    pub const HORIZON_S: u64 = 90 * 86_400;
    pub const PREROLL_S: u64 = 30;
    pub const GRACE_S: u64 = 10;
}

/// Upper bounds on server settings, so that no setting can make the arithmetic overflow.
mod limits {
    pub const CAPACITY: u32 = 10_000;
    pub const MIN_LEAD_S: u64 = 7 * 86_400;
    pub const MAX_DURATION_S: u64 = 7 * 86_400;
    pub const HORIZON_S: u64 = 5 * 366 * 86_400;
    pub const WINDOW_PAD_S: u64 = 3600;
    pub const CARRIERS: usize = 16;
    pub const TEXT: usize = 200;
    pub const ID: usize = 64;
    pub const URL: usize = 2048;
    pub const SEALED: usize = 4096;
}

/// How many free windows a refusal suggests.
pub const SUGGESTIONS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Distributor,
    /// slotcast's own roles (the api's NATS consumers), recording what the streamer and the
    /// scheduler report. No token carries it.
    Service,
}

/// Who asked. `name` is the tenant: a distributor owns the reservations it books.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub role: Role,
    pub name: String,
}

impl Actor {
    fn may_touch(&self, slot: &Slot) -> bool {
        self.role == Role::Operator || self.name == slot.owner
    }
}

/// One carrier of the dedicated ingest network and how a publisher reaches the server on
/// it: always by RTSP, and by RTMP, SRT or WHIP where the carrier has their addresses. An
/// address that is not set is not written into the events, so events recorded before these
/// protocols read and hash as they did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carrier {
    pub name: String,
    /// `rtsp://host[:port][/path]`: the publisher adds `/live/<reservation_id>`.
    pub ingest_url: String,
    /// `rtmp://host[:port]`: the publisher adds `/live/<reservation_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_url: Option<String>,
    /// `srt://host:port`: the publisher names the reservation in its `streamid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
    /// `http[s]://host[:port]`: the publisher adds `/whip/<reservation_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip_url: Option<String>,
}

impl Carrier {
    /// A carrier reached by RTSP only.
    pub fn rtsp(name: impl Into<String>, ingest_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ingest_url: ingest_url.into(),
            rtmp_url: None,
            srt_url: None,
            whip_url: None,
        }
    }
}

/// A server as an operator registers it; unset rules take the defaults. (Recorded in the
/// events' metadata as the command, so a field added later is left out when unset: commands
/// recorded before it read and hash as they did.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    pub id: String,
    pub name: String,
    pub capacity: Option<u32>,
    pub min_lead_s: Option<u64>,
    pub max_duration_s: Option<u64>,
    pub horizon_s: Option<u64>,
    pub preroll_s: Option<u64>,
    pub grace_s: Option<u64>,
    pub carriers: Vec<Carrier>,
    /// See [`ServerSettings::viewer_url`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_url: Option<String>,
}

/// A change to a server: every field that is set replaces the current one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPatch {
    pub name: Option<String>,
    pub capacity: Option<u32>,
    pub min_lead_s: Option<u64>,
    pub max_duration_s: Option<u64>,
    pub horizon_s: Option<u64>,
    pub preroll_s: Option<u64>,
    pub grace_s: Option<u64>,
    pub carriers: Option<Vec<Carrier>>,
    /// `None`: unchanged; `Some(None)`: removed (`null`); `Some(Some(url))`: replaced.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub viewer_url: Option<Option<String>>,
}

/// For an `Option<Option<T>>` field with `#[serde(default)]`: a field that is there, `null`
/// included, is `Some`, so an absent field (`None`, "unchanged") differs from `null`
/// (`Some(None)`, "removed").
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A server's settings with every default resolved, as recorded in its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSettings {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub min_lead_s: u64,
    pub max_duration_s: u64,
    pub horizon_s: u64,
    pub preroll_s: u64,
    pub grace_s: u64,
    pub carriers: Vec<Carrier>,
    /// `http[s]://host[:port]`: where the server's streamer serves viewers (its watch page at
    /// `/watch/<reservation_id>`, its `/hls/<reservation_id>/…`). Not set: not said. Left out
    /// of the events when not set, so events recorded before it read and hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_url: Option<String>,
}

impl ServerSettings {
    fn from_spec(spec: ServerSpec) -> Result<Self, ScheduleError> {
        let settings = Self {
            id: spec.id,
            name: spec.name,
            capacity: spec.capacity.unwrap_or(defaults::CAPACITY),
            min_lead_s: spec.min_lead_s.unwrap_or(defaults::MIN_LEAD_S),
            max_duration_s: spec.max_duration_s.unwrap_or(defaults::MAX_DURATION_S),
            horizon_s: spec.horizon_s.unwrap_or(defaults::HORIZON_S),
            preroll_s: spec.preroll_s.unwrap_or(defaults::PREROLL_S),
            grace_s: spec.grace_s.unwrap_or(defaults::GRACE_S),
            carriers: spec.carriers,
            viewer_url: spec.viewer_url,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn patched(&self, patch: ServerPatch) -> Result<Self, ScheduleError> {
        let settings = Self {
            id: self.id.clone(),
            name: patch.name.unwrap_or_else(|| self.name.clone()),
            capacity: patch.capacity.unwrap_or(self.capacity),
            min_lead_s: patch.min_lead_s.unwrap_or(self.min_lead_s),
            max_duration_s: patch.max_duration_s.unwrap_or(self.max_duration_s),
            horizon_s: patch.horizon_s.unwrap_or(self.horizon_s),
            preroll_s: patch.preroll_s.unwrap_or(self.preroll_s),
            grace_s: patch.grace_s.unwrap_or(self.grace_s),
            carriers: patch.carriers.unwrap_or_else(|| self.carriers.clone()),
            viewer_url: patch.viewer_url.unwrap_or_else(|| self.viewer_url.clone()),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ScheduleError> {
        check_token("id", &self.id)?;
        if self.name.trim().is_empty() || self.name.len() > limits::TEXT {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("name", "must not hold control characters"));
        }
        check_range("capacity", self.capacity.into(), 1, limits::CAPACITY.into())?;
        check_range("min_lead_s", self.min_lead_s, 0, limits::MIN_LEAD_S)?;
        check_range(
            "max_duration_s",
            self.max_duration_s,
            1,
            limits::MAX_DURATION_S,
        )?;
        check_range("horizon_s", self.horizon_s, 60, limits::HORIZON_S)?;
        check_range("preroll_s", self.preroll_s, 0, limits::WINDOW_PAD_S)?;
        check_range("grace_s", self.grace_s, 0, limits::WINDOW_PAD_S)?;
        if self.carriers.is_empty() || self.carriers.len() > limits::CARRIERS {
            return Err(invalid("carriers", "must list 1 to 16 carriers"));
        }
        for (i, carrier) in self.carriers.iter().enumerate() {
            check_token("carriers[].name", &carrier.name)?;
            if self.carriers[..i].iter().any(|c| c.name == carrier.name) {
                return Err(invalid("carriers[].name", "carrier names must be unique"));
            }
            check_ingest_url(&carrier.ingest_url)?;
            // (field, its address, schemes, port required, what it must be)
            let others = [
                (
                    "carriers[].rtmp_url",
                    &carrier.rtmp_url,
                    &["rtmp", "rtmps"][..],
                    false,
                    "rtmp://host[:port] or rtmps://…",
                ),
                (
                    "carriers[].srt_url",
                    &carrier.srt_url,
                    &["srt"][..],
                    true,
                    "srt://host:port",
                ),
                (
                    "carriers[].whip_url",
                    &carrier.whip_url,
                    &["http", "https"][..],
                    false,
                    "http://host[:port] or https://…",
                ),
            ];
            for (field, url, schemes, port_required, form) in others {
                check_optional_origin(field, url.as_deref(), schemes, port_required, form)?;
            }
        }
        check_optional_origin(
            "viewer_url",
            self.viewer_url.as_deref(),
            &["http", "https"],
            false,
            "http://host[:port] or https://…",
        )
    }

    fn seconds(s: u64) -> Duration {
        // Bounded by `limits`, so the cast cannot wrap.
        Duration::seconds(s as i64)
    }

    /// The ingest window `[start - preroll, end + grace)` for a slot.
    pub fn ingest_window(&self, slot: Window) -> Window {
        Window::new(
            slot.start - Self::seconds(self.preroll_s),
            slot.end + Self::seconds(self.grace_s),
        )
    }
}

/// Ids and carrier names end up in URLs and NATS subjects: keep them to one plain token.
fn check_token(field: &'static str, value: &str) -> Result<(), ScheduleError> {
    let ok = !value.is_empty()
        && value.len() <= limits::ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
        ))
    }
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ScheduleError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, &format!("must be between {min} and {max}")))
    }
}

fn check_ingest_url(url: &str) -> Result<(), ScheduleError> {
    let rest = url
        .strip_prefix("rtsp://")
        .or_else(|| url.strip_prefix("rtsps://"));
    let ok = match rest {
        Some(rest) => {
            let host = rest.split('/').next().unwrap_or("");
            !host.is_empty()
                && url.len() <= limits::TEXT
                && !url.ends_with('/')
                && !url.contains(['?', '#', ' '])
                // NUL cannot even be stored, and no URL holds a control character.
                && !url.chars().any(char::is_control)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "carriers[].ingest_url",
            "must be rtsp://host[:port][/path] or rtsps://…, without a trailing '/', query or fragment",
        ))
    }
}

/// [`check_origin`] for `field`'s `url`, when it is set; the refusal says it must be `form`.
fn check_optional_origin(
    field: &'static str,
    url: Option<&str>,
    schemes: &[&str],
    port_required: bool,
    form: &str,
) -> Result<(), ScheduleError> {
    match url {
        Some(url) => check_origin(url, schemes, port_required).map_err(|()| {
            invalid(
                field,
                &format!("must be {form}, with no path, query or fragment"),
            )
        }),
        None => Ok(()),
    }
}

/// `scheme://host[:port]` and nothing after it, for one of `schemes`; the port required
/// when `port_required` (SRT has no default port).
fn check_origin(url: &str, schemes: &[&str], port_required: bool) -> Result<(), ()> {
    let (scheme, authority) = url.split_once("://").ok_or(())?;
    if !schemes.contains(&scheme)
        || url.len() > limits::TEXT
        || authority.is_empty()
        || authority.contains(['/', '?', '#', ' ', '@'])
        || authority.chars().any(char::is_control)
    {
        return Err(());
    }
    // `[v6]:port`, `host:port` or `host`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or(())?;
            match rest {
                "" => (host, None),
                _ => (host, Some(rest.strip_prefix(':').ok_or(())?)),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port_ok = match port {
        Some(port) => {
            !port.starts_with('0')
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
        None => !port_required,
    };
    let v6 = authority.starts_with('[');
    let host_ok = !host.is_empty()
        && if v6 {
            host.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            !host.contains(['[', ']'])
        };
    if !host_ok || !port_ok {
        return Err(());
    }
    Ok(())
}

fn invalid(field: &'static str, message: &str) -> ScheduleError {
    ScheduleError::Invalid {
        field,
        message: message.to_string(),
    }
}

/// A camera source as a booking may name it: an `rtsp://` URL with a host and no user info
/// (credentials travel sealed, never in the URL), and a sealed login of sane size.
fn check_source(source: &CameraSource) -> Result<(), ScheduleError> {
    const FIELD: &str = "source.pull_url";
    let url = source.url.as_str();
    if url.len() > limits::URL {
        return Err(invalid(FIELD, "must be at most 2048 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(FIELD, "must not hold spaces or control characters"));
    }
    let rest = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("rtsp://"))
        .map(|_| &url[7..])
        .ok_or_else(|| invalid(FIELD, "must be an rtsp:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            FIELD,
            "must not carry a user name or password; give them as source.username and \
             source.password",
        ));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid(FIELD, "must name the camera's host"));
    }
    if let Some(sealed) = &source.credentials {
        if sealed.len() > limits::SEALED || !sealed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("source.credentials", "is not a sealed login"));
        }
    }
    Ok(())
}

/// Why a booking or a reschedule was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// `capacity` accepted slots already overlap some instant of the window.
    CapacityExceeded,
}

impl RejectReason {
    pub fn explain(&self) -> &'static str {
        match self {
            Self::CapacityExceeded => "the server is fully booked for part of that window",
        }
    }
}

/// A command and its context. The API fills `now` from the NTP-disciplined server clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub now: DateTime<Utc>,
    pub actor: Actor,
    pub kind: CommandKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandKind {
    RegisterServer(ServerSpec),
    UpdateServer(ServerPatch),
    RequestReservation {
        reservation_id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        title: Option<String>,
        stream_key_hash: String,
        /// The stream key's Digest HA1, sealed with the deployment's secret key for this
        /// reservation id ([`crate::secret`]); absent when no secret key is configured (the
        /// streamer then offers Basic auth only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_key_digest: Option<String>,
        /// A camera for the streamer to pull; `None` for a pushed stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<CameraSource>,
    },
    CancelReservation {
        reservation_id: String,
    },
    RescheduleReservation {
        reservation_id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    RotateStreamKey {
        reservation_id: String,
        stream_key_hash: String,
        /// The stream key's Digest HA1, sealed with the deployment's secret key for this
        /// reservation id ([`crate::secret`]); absent when no secret key is configured (the
        /// streamer then offers Basic auth only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_key_digest: Option<String>,
    },
    /// What the streamer reported on the ingest stream, at `cursor` in that stream.
    RecordIngest {
        report: IngestMessage,
        cursor: StreamCursor,
    },
    /// A slot boundary as delivered on the slot stream (`opened` or `closed`), at `cursor`.
    RecordWindow {
        message: SlotMessage,
        cursor: StreamCursor,
    },
}

/// Everything that happened to a server's schedule. Every event carries `at`, the server-clock
/// instant of the decision, so `apply` never needs a clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScheduleEvent {
    ServerRegistered {
        at: DateTime<Utc>,
        settings: ServerSettings,
    },
    ServerUpdated {
        at: DateTime<Utc>,
        settings: ServerSettings,
    },
    ReservationAccepted {
        at: DateTime<Utc>,
        reservation_id: String,
        owner: String,
        title: Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
        stream_key_hash: String,
        /// The stream key's Digest HA1, sealed with the deployment's secret key for this
        /// reservation id ([`crate::secret`]); absent when no secret key is configured (the
        /// streamer then offers Basic auth only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_key_digest: Option<String>,
        /// The camera the streamer pulls; `None` for a pushed stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<CameraSource>,
    },
    ReservationRejected {
        at: DateTime<Utc>,
        reservation_id: String,
        owner: String,
        title: Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        reason: RejectReason,
        conflicts: Vec<Window>,
        suggestions: Vec<Window>,
    },
    ReservationCancelled {
        at: DateTime<Utc>,
        reservation_id: String,
        by: Actor,
    },
    ReservationRescheduled {
        at: DateTime<Utc>,
        reservation_id: String,
        previous: Window,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    },
    RescheduleRejected {
        at: DateTime<Utc>,
        reservation_id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        reason: RejectReason,
        conflicts: Vec<Window>,
        suggestions: Vec<Window>,
    },
    StreamKeyRotated {
        at: DateTime<Utc>,
        reservation_id: String,
        stream_key_hash: String,
        /// The stream key's Digest HA1, sealed with the deployment's secret key for this
        /// reservation id ([`crate::secret`]); absent when no secret key is configured (the
        /// streamer then offers Basic auth only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_key_digest: Option<String>,
    },
    /// The streamer reported a publisher (or camera) connecting, disconnecting or failing.
    IngestReported {
        at: DateTime<Utc>,
        reservation_id: String,
        kind: IngestKind,
        /// When the streamer saw it (its server clock).
        reported_at: DateTime<Utc>,
        carrier: Option<String>,
        remote_addr: Option<String>,
        codec: Option<String>,
        reason: Option<String>,
        /// For `refused`: attempts refused per reason since the last such report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refusals: Option<BTreeMap<String, u64>>,
        cursor: StreamCursor,
        /// How the publisher came in, when the report said (events before it have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<IngestProtocol>,
    },
    /// The scheduler announced the ingest window open.
    WindowOpened {
        at: DateTime<Utc>,
        reservation_id: String,
        revision: u32,
        due_at: DateTime<Utc>,
        published_at: DateTime<Utc>,
        late_ms: f64,
        cursor: StreamCursor,
    },
    /// The scheduler announced the ingest window closed.
    WindowClosed {
        at: DateTime<Utc>,
        reservation_id: String,
        revision: u32,
        due_at: DateTime<Utc>,
        published_at: DateTime<Utc>,
        late_ms: f64,
        cursor: StreamCursor,
    },
}

impl ScheduleEvent {
    /// The reservation the event is about, if any.
    pub fn reservation_id(&self) -> Option<&str> {
        match self {
            Self::ServerRegistered { .. } | Self::ServerUpdated { .. } => None,
            Self::ReservationAccepted { reservation_id, .. }
            | Self::ReservationRejected { reservation_id, .. }
            | Self::ReservationCancelled { reservation_id, .. }
            | Self::ReservationRescheduled { reservation_id, .. }
            | Self::RescheduleRejected { reservation_id, .. }
            | Self::StreamKeyRotated { reservation_id, .. }
            | Self::IngestReported { reservation_id, .. }
            | Self::WindowOpened { reservation_id, .. }
            | Self::WindowClosed { reservation_id, .. } => Some(reservation_id),
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::ServerRegistered { at, .. }
            | Self::ServerUpdated { at, .. }
            | Self::ReservationAccepted { at, .. }
            | Self::ReservationRejected { at, .. }
            | Self::ReservationCancelled { at, .. }
            | Self::ReservationRescheduled { at, .. }
            | Self::RescheduleRejected { at, .. }
            | Self::StreamKeyRotated { at, .. }
            | Self::IngestReported { at, .. }
            | Self::WindowOpened { at, .. }
            | Self::WindowClosed { at, .. } => *at,
        }
    }
}

impl DomainEvent for ScheduleEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::ServerRegistered { .. } => "ServerRegistered",
            Self::ServerUpdated { .. } => "ServerUpdated",
            Self::ReservationAccepted { .. } => "ReservationAccepted",
            Self::ReservationRejected { .. } => "ReservationRejected",
            Self::ReservationCancelled { .. } => "ReservationCancelled",
            Self::ReservationRescheduled { .. } => "ReservationRescheduled",
            Self::RescheduleRejected { .. } => "RescheduleRejected",
            Self::StreamKeyRotated { .. } => "StreamKeyRotated",
            Self::IngestReported { .. } => "IngestReported",
            Self::WindowOpened { .. } => "WindowOpened",
            Self::WindowClosed { .. } => "WindowClosed",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::version_of(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("only an operator may do that")]
    Forbidden,
    #[error("no such server")]
    ServerNotFound,
    #[error("a server with that id is already registered")]
    ServerExists,
    /// Also the answer for another tenant's reservation: its existence is not disclosed.
    #[error("no such reservation")]
    ReservationNotFound,
    #[error("the reservation has ended or was cancelled")]
    ReservationNotActive,
    /// A stream message at or before what this server has already recorded from that stream:
    /// a redelivery. Nothing is recorded.
    #[error("already recorded")]
    AlreadyRecorded,
}

/// The NATS streams whose messages become events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NatsStream {
    Ingest,
    Slots,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSchedule {
    settings: Option<ServerSettings>,
    /// Open and future slots, indexed by start and by close (serialized as the map by id).
    slots: SlotIndex,
    /// Per stream, the newest message recorded. The api consumes each stream in order, one
    /// message at a time, so anything at or before this in the same stream is a redelivery;
    /// a message of another stream (the stream was recreated) is new.
    cursors: BTreeMap<NatsStream, StreamCursor>,
}

impl ServerSchedule {
    pub fn settings(&self) -> Option<&ServerSettings> {
        self.settings.as_ref()
    }

    /// Open and future slots, by reservation id.
    pub fn slots(&self) -> &BTreeMap<String, Slot> {
        self.slots.slots()
    }

    /// Checks a requested window against the server's rules.
    /// `keep_start` lets a running slot keep its (past) start while its end moves.
    fn check_window(
        settings: &ServerSettings,
        now: DateTime<Utc>,
        wanted: Window,
        keep_start: Option<DateTime<Utc>>,
    ) -> Result<(), ScheduleError> {
        let secs = ServerSettings::seconds;
        if wanted.end <= wanted.start {
            return Err(invalid("end", "must be after start"));
        }
        if keep_start != Some(wanted.start) && wanted.start < now + secs(settings.min_lead_s) {
            return Err(invalid(
                "start",
                &format!(
                    "must be at least {} s after the server's current time",
                    settings.min_lead_s
                ),
            ));
        }
        if wanted.start > now + secs(settings.horizon_s) {
            return Err(invalid(
                "start",
                &format!(
                    "must be within {} days of the server's current time",
                    settings.horizon_s / 86_400
                ),
            ));
        }
        if wanted.duration() > secs(settings.max_duration_s) {
            return Err(invalid(
                "end",
                &format!(
                    "the slot may last at most {} s on this server",
                    settings.max_duration_s
                ),
            ));
        }
        Ok(())
    }

    /// `None` when the window fits; otherwise the conflicts and suggestions, both found
    /// through the index near the window, not by a walk over the schedule.
    fn fit(
        &self,
        settings: &ServerSettings,
        now: DateTime<Utc>,
        wanted: Window,
        skip: Option<&str>,
    ) -> Option<(Vec<Window>, Vec<Window>)> {
        let capacity = settings.capacity as usize;
        let conflicts = self.slots.conflicts(capacity, wanted, now, skip)?;
        let secs = ServerSettings::seconds;
        let (earliest, latest) = (
            now + secs(settings.min_lead_s),
            now + secs(settings.horizon_s),
        );
        let found = self
            .slots
            .suggest(capacity, wanted, earliest, latest, SUGGESTIONS, now, skip);
        Some((conflicts, found))
    }

    /// Refuses what only slotcast's own services may record, and redeliveries.
    fn check_stream(
        &self,
        actor: &Actor,
        stream: NatsStream,
        cursor: StreamCursor,
    ) -> Result<(), ScheduleError> {
        if actor.role != Role::Service {
            return Err(ScheduleError::Forbidden);
        }
        match self.cursors.get(&stream) {
            Some(seen) if cursor.same_stream(seen) && cursor.sequence <= seen.sequence => {
                Err(ScheduleError::AlreadyRecorded)
            }
            _ => Ok(()),
        }
    }

    fn slot_for(&self, actor: &Actor, reservation_id: &str) -> Result<&Slot, ScheduleError> {
        match self.slots.get(reservation_id) {
            Some(slot) if actor.may_touch(slot) => Ok(slot),
            _ => Err(ScheduleError::ReservationNotFound),
        }
    }

    /// The decision itself; `handle` only records what this returns.
    pub fn decide(&self, command: Command) -> Result<ScheduleEvent, ScheduleError> {
        let Command { now, actor, kind } = command;
        let registered = self.settings.as_ref().ok_or(ScheduleError::ServerNotFound);
        match kind {
            CommandKind::RegisterServer(spec) => {
                if actor.role != Role::Operator {
                    return Err(ScheduleError::Forbidden);
                }
                if self.settings.is_some() {
                    return Err(ScheduleError::ServerExists);
                }
                let settings = ServerSettings::from_spec(spec)?;
                Ok(ScheduleEvent::ServerRegistered { at: now, settings })
            }
            CommandKind::UpdateServer(patch) => {
                if actor.role != Role::Operator {
                    return Err(ScheduleError::Forbidden);
                }
                let settings = registered?.patched(patch)?;
                Ok(ScheduleEvent::ServerUpdated { at: now, settings })
            }
            CommandKind::RequestReservation {
                reservation_id,
                start,
                end,
                title,
                stream_key_hash,
                stream_key_digest,
                source,
            } => {
                if let Some(t) = &title {
                    if t.len() > limits::TEXT {
                        return Err(invalid("title", "must be at most 200 characters"));
                    }
                    // Titles end up in terminals, logs and pages: no escape sequences, no
                    // line breaks that forge a second line.
                    if t.chars().any(char::is_control) {
                        return Err(invalid("title", "must not hold control characters"));
                    }
                }
                if let Some(source) = &source {
                    check_source(source)?;
                }
                let settings = registered?;
                let wanted = Window::new(start, end);
                Self::check_window(settings, now, wanted, None)?;
                if let Some((conflicts, suggestions)) = self.fit(settings, now, wanted, None) {
                    return Ok(ScheduleEvent::ReservationRejected {
                        at: now,
                        reservation_id,
                        owner: actor.name,
                        title,
                        start,
                        end,
                        reason: RejectReason::CapacityExceeded,
                        conflicts,
                        suggestions,
                    });
                }
                let window = settings.ingest_window(wanted);
                Ok(ScheduleEvent::ReservationAccepted {
                    at: now,
                    reservation_id,
                    owner: actor.name,
                    title,
                    start,
                    end,
                    opens_at: window.start,
                    closes_at: window.end,
                    stream_key_hash,
                    stream_key_digest,
                    source,
                })
            }
            CommandKind::CancelReservation { reservation_id } => {
                registered?;
                let slot = self.slot_for(&actor, &reservation_id)?;
                if slot.end <= now {
                    return Err(ScheduleError::ReservationNotActive);
                }
                Ok(ScheduleEvent::ReservationCancelled {
                    at: now,
                    reservation_id,
                    by: actor,
                })
            }
            CommandKind::RescheduleReservation {
                reservation_id,
                start,
                end,
            } => {
                let slot = self.slot_for(&actor, &reservation_id)?;
                if slot.end <= now {
                    return Err(ScheduleError::ReservationNotActive);
                }
                let settings = registered?;
                let wanted = Window::new(start, end);
                let keep_start = (slot.start <= now).then_some(slot.start);
                Self::check_window(settings, now, wanted, keep_start)?;
                if let Some((conflicts, suggestions)) =
                    self.fit(settings, now, wanted, Some(&reservation_id))
                {
                    return Ok(ScheduleEvent::RescheduleRejected {
                        at: now,
                        reservation_id,
                        start,
                        end,
                        reason: RejectReason::CapacityExceeded,
                        conflicts,
                        suggestions,
                    });
                }
                let window = settings.ingest_window(wanted);
                Ok(ScheduleEvent::ReservationRescheduled {
                    at: now,
                    previous: slot.window(),
                    reservation_id,
                    start,
                    end,
                    opens_at: window.start,
                    closes_at: window.end,
                })
            }
            CommandKind::RotateStreamKey {
                reservation_id,
                stream_key_hash,
                stream_key_digest,
            } => {
                registered?;
                let slot = self.slot_for(&actor, &reservation_id)?;
                if slot.closes_at <= now {
                    return Err(ScheduleError::ReservationNotActive);
                }
                Ok(ScheduleEvent::StreamKeyRotated {
                    at: now,
                    reservation_id,
                    stream_key_hash,
                    stream_key_digest,
                })
            }
            CommandKind::RecordIngest { report, cursor } => {
                let settings = registered?;
                self.check_stream(&actor, NatsStream::Ingest, cursor)?;
                if report.server_id != settings.id {
                    return Err(invalid("server_id", "is not this server"));
                }
                let refusals = match (report.kind, report.refusals) {
                    (IngestKind::Refused, Some(counts))
                        if !counts.is_empty()
                            && counts.len() <= crate::contract::REFUSAL_REASONS_MAX =>
                    {
                        Some(
                            counts
                                .into_iter()
                                .map(|(reason, n)| (bounded_to(reason, 64), n))
                                .collect(),
                        )
                    }
                    (IngestKind::Refused, _) => {
                        return Err(invalid(
                            "refusals",
                            "a refused report counts 1 to 16 reasons",
                        ))
                    }
                    (_, _) => None,
                };
                Ok(ScheduleEvent::IngestReported {
                    at: now,
                    reservation_id: bounded(report.reservation_id),
                    kind: report.kind,
                    reported_at: report.at,
                    carrier: report.carrier.map(bounded),
                    remote_addr: report.remote_addr.map(bounded),
                    codec: report.codec.map(bounded),
                    reason: report.reason.map(bounded),
                    refusals,
                    cursor,
                    protocol: report.protocol,
                })
            }
            CommandKind::RecordWindow { message, cursor } => {
                let settings = registered?;
                self.check_stream(&actor, NatsStream::Slots, cursor)?;
                if message.server_id != settings.id {
                    return Err(invalid("server_id", "is not this server"));
                }
                let SlotMessage {
                    kind,
                    reservation_id,
                    revision,
                    due_at,
                    published_at,
                    late_ms,
                    ..
                } = message;
                let reservation_id = bounded(reservation_id);
                match kind {
                    SlotKind::Opened => Ok(ScheduleEvent::WindowOpened {
                        at: now,
                        reservation_id,
                        revision,
                        due_at,
                        published_at,
                        late_ms,
                        cursor,
                    }),
                    SlotKind::Closed => Ok(ScheduleEvent::WindowClosed {
                        at: now,
                        reservation_id,
                        revision,
                        due_at,
                        published_at,
                        late_ms,
                        cursor,
                    }),
                    // Already in the history as the booking, reschedule, rotation or cancel.
                    SlotKind::Scheduled | SlotKind::Changed | SlotKind::Cancelled => {
                        Err(invalid("kind", "only opened and closed are recorded"))
                    }
                }
            }
        }
    }
}

/// Text from a stream message, cut to `INGEST_TEXT_MAX` bytes on a character boundary.
fn bounded(text: String) -> String {
    bounded_to(text, crate::contract::INGEST_TEXT_MAX)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn bounded_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

impl ServerSchedule {
    fn advance(&mut self, stream: NatsStream, cursor: StreamCursor) {
        let seen = self.cursors.entry(stream).or_insert(cursor);
        if !cursor.same_stream(seen) || cursor.sequence > seen.sequence {
            *seen = cursor;
        }
    }
}

impl Aggregate for ServerSchedule {
    const TYPE: &'static str = "ServerSchedule";
    type Command = Command;
    type Event = ScheduleEvent;
    type Error = ScheduleError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let at = event.at();
        match event {
            ScheduleEvent::ServerRegistered { settings, .. }
            | ScheduleEvent::ServerUpdated { settings, .. } => self.settings = Some(settings),
            ScheduleEvent::ReservationAccepted {
                reservation_id,
                owner,
                start,
                end,
                opens_at,
                closes_at,
                stream_key_hash,
                ..
            } => {
                let slot = Slot {
                    reservation_id: reservation_id.clone(),
                    owner,
                    start,
                    end,
                    opens_at,
                    closes_at,
                    stream_key_hash,
                };
                self.slots.insert(slot);
            }
            ScheduleEvent::ReservationRejected { .. }
            | ScheduleEvent::RescheduleRejected { .. } => {}
            ScheduleEvent::ReservationCancelled { reservation_id, .. } => {
                self.slots.remove(&reservation_id);
            }
            ScheduleEvent::ReservationRescheduled {
                reservation_id,
                start,
                end,
                opens_at,
                closes_at,
                ..
            } => {
                let window = Window::new(start, end);
                self.slots
                    .reschedule(&reservation_id, window, opens_at, closes_at);
            }
            ScheduleEvent::StreamKeyRotated {
                reservation_id,
                stream_key_hash,
                ..
            } => {
                self.slots.set_key_hash(&reservation_id, stream_key_hash);
            }
            ScheduleEvent::IngestReported { cursor, .. } => {
                self.advance(NatsStream::Ingest, cursor)
            }
            ScheduleEvent::WindowOpened { cursor, .. }
            | ScheduleEvent::WindowClosed { cursor, .. } => self.advance(NatsStream::Slots, cursor),
        }
        // Closed windows leave the state: the aggregate stays as small as its open slots.
        // They leave from the front of the close order, never by a walk over every slot.
        self.slots.prune_closed(at);
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "viewer_url_tests.rs"]
mod viewer_url_tests;
