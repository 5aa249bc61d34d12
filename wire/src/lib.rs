//! The REST API's contract: every request body the api takes and every answer it gives, as
//! types the api serializes and the terminal (or any Rust client) deserializes.
//!
//! Contract:
//!
//! - One type per body, deriving both `Serialize` and `Deserialize`, so the api and its
//!   clients cannot drift apart. The JSON is the api's documented wire format: times are
//!   RFC 3339 UTC with milliseconds (the server clock's own stamps with microseconds), input
//!   times must carry a zone and are truncated to milliseconds ([`WireTime`]).
//! - Request bodies refuse unknown fields; answers do not, so an older client reads a newer
//!   api that added a field.
//! - Statuses are the one [`ReservationStatus`] of `slotcast-domain` (the read model stores the
//!   same words); the NATS contract stays in `slotcast_domain::contract`.
//! - With the `openapi` feature every type is also a `utoipa::ToSchema`, and its field
//!   constraints (patterns, ranges) are part of the api's OpenAPI document. Only the api
//!   enables it.
//! - Types only: no I/O, no HTTP. How a body is read from a request (limits, the 422 naming a
//!   field) is the api's; what a client does with a body it cannot read is the client's.

mod clock;
mod error;
mod me;
mod reservations;
mod servers;
mod time;
mod whole;

pub use clock::{ClockSource, NtpInfo, ServerTime, StepRefused, SyncState};
pub use error::{ErrorBody, ErrorDetail};
pub use me::{Me, TokenRole};
pub use reservations::{
    Accepted, BookRequest, CarrierUrl, CarrierUrls, Concealed, History, HistoryCursor,
    HistoryEntry, IngestDto, Rejected, RescheduleRequest, ReservationDto, ReservationList,
    RotatedKey, Setting, SourceDto, SourceRequest, WindowDto,
};
pub use servers::{
    CarrierDto, CarrierInput, CreateServer, PatchServer, Schedule, ScheduleSlot, ServerDto,
    ServerList,
};
pub use slotcast_domain::{NotSpelled, ReservationStatus};
pub use time::{parse_rfc3339_ms, WireTime, TIME_FORMAT};
