//! slotcast's domain: the `ServerSchedule` aggregate, its commands and events, and the
//! booking decision.
//!
//! Contract: pure. No I/O, no clocks, no randomness. `now`, the caller's identity, the new
//! reservation id, the stream-key hash and any sealing nonce all arrive inside the command, so every decision is
//! a function of (state, command) and replays byte for byte.

pub mod audit;
#[cfg(test)]
mod audit_tests;
pub mod booking;
pub mod contract;
pub mod schedule;
pub mod secret;
pub mod signing;
pub mod slot_index;
mod spelled;
pub mod status;
pub mod time;
pub mod versions;

pub use booking::{free_windows, free_windows_near, max_overlap, Window};
pub use schedule::{
    Actor, Carrier, Command, CommandKind, NatsStream, RejectReason, Role, ScheduleError,
    ScheduleEvent, ServerPatch, ServerSchedule, ServerSettings, ServerSpec, Slot,
};
pub use spelled::NotSpelled;
pub use status::ReservationStatus;
