//! Event schema versions, and reading an event stored by an earlier version of slotcast.
//!
//! Contract: every event type has a schema version ([`version_of`]), written beside the
//! payload in `events.event_version`; the version changes whenever the payload's shape does.
//! [`decode`] reads a stored event through the upcasters registered for its type, one step
//! per version, from the version it was stored at up to today's, then decodes it; an event
//! stored by a newer slotcast (a version above today's) is refused, never guessed at. Adding
//! a field with a default needs no upcaster; renaming, moving or retyping one does. The
//! versions and what each step changed are listed in `docs/events.md`.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ScheduleEvent;

/// The `ScheduleEvent` types past their first version, with today's version. A type whose
/// payload changes is listed here, with an upcaster from its old version in [`UPCASTERS`].
pub const VERSIONS: &[(&str, u32)] = &[];

/// Today's schema version of a `ScheduleEvent` type: 1 unless [`VERSIONS`] says otherwise.
pub fn version_of(event_type: &str) -> u32 {
    VERSIONS
        .iter()
        .find(|(name, _)| *name == event_type)
        .map_or(1, |(_, version)| *version)
}

/// One step: a payload of `event_type` at version `from`, rewritten in place to `from + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: u32,
    pub step: fn(&mut Value) -> Result<(), String>,
}

/// The steps `ScheduleEvent` has had (none yet).
pub const UPCASTERS: &[Upcaster] = &[];

/// Why a stored event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{event_type} version {version:?} is not a version number")]
    BadVersion { event_type: String, version: String },
    #[error(
        "{event_type} version {version} was written by a newer slotcast (this one reads up to \
         version {current})"
    )]
    Newer {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("{event_type} version {version} has no upcaster to version {}", .version + 1)]
    NoUpcaster { event_type: String, version: u32 },
    #[error("{event_type}: upcasting from version {version}: {reason}")]
    Upcast {
        event_type: String,
        version: u32,
        reason: String,
    },
    #[error("{event_type} version {version}: {source}")]
    Json {
        event_type: String,
        version: u32,
        source: serde_json::Error,
    },
}

/// A stored `ScheduleEvent`, read whatever version of slotcast wrote it.
pub fn decode(
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> Result<ScheduleEvent, DecodeError> {
    decode_with(
        UPCASTERS,
        version_of(event_type),
        event_type,
        event_version,
        payload,
    )
}

/// [`decode`] from the payload's stored text: an event already at today's version is read
/// straight from the text (no intermediate `Value`), as a bulk reader wants; an older one goes
/// through its upcasters.
pub fn decode_text(
    event_type: &str,
    event_version: &str,
    payload: &str,
) -> Result<ScheduleEvent, DecodeError> {
    let current = version_of(event_type);
    let json = |version, source| DecodeError::Json {
        event_type: event_type.to_string(),
        version,
        source,
    };
    if event_version.trim().parse::<u32>().ok() == Some(current) {
        return serde_json::from_str(payload).map_err(|e| json(current, e));
    }
    let value: Value = serde_json::from_str(payload).map_err(|e| json(current, e))?;
    decode(event_type, event_version, value)
}

/// [`decode`] with the steps and today's version given: the mechanism itself, so a test can
/// run it over an event type of tomorrow.
pub fn decode_with<E: DeserializeOwned>(
    upcasters: &[Upcaster],
    current: u32,
    event_type: &str,
    event_version: &str,
    mut payload: Value,
) -> Result<E, DecodeError> {
    let stored: u32 = event_version
        .trim()
        .parse()
        .map_err(|_| DecodeError::BadVersion {
            event_type: event_type.to_string(),
            version: event_version.to_string(),
        })?;
    if stored > current {
        return Err(DecodeError::Newer {
            event_type: event_type.to_string(),
            version: stored,
            current,
        });
    }
    for version in stored..current {
        let upcaster = upcasters
            .iter()
            .find(|u| u.event_type == event_type && u.from == version)
            .ok_or_else(|| DecodeError::NoUpcaster {
                event_type: event_type.to_string(),
                version,
            })?;
        (upcaster.step)(&mut payload).map_err(|reason| DecodeError::Upcast {
            event_type: event_type.to_string(),
            version,
            reason,
        })?;
    }
    serde_json::from_value(payload).map_err(|source| DecodeError::Json {
        event_type: event_type.to_string(),
        version: stored,
        source,
    })
}

#[cfg(test)]
#[path = "versions_tests.rs"]
mod tests;
