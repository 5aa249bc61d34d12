//! What slotcast knew at an instant: one server's events folded, in memory, into the very rows
//! the read path returns ([`ServerRow`], [`ReservationRow`]), so the api builds an answer "as
//! of" a past instant with the same mapping code as the live one.
//!
//! Contract: pure (no I/O, no clock). [`Known::fold`] takes the server's events in sequence
//! order, already cut to those known at the instant ([`super::events_known_at`] reads them);
//! each event has the effect the projector gives it in `readmodel/src/project.rs` (and, for
//! bookings, `batch.rs`), field for field, times truncated to microseconds as Postgres stores
//! them. That projector writes SQL and this fold writes a map, so the two are one rule
//! written twice: `tests/as_of.rs` holds them equal, answer for answer, while booking,
//! rescheduling, cancelling, changing the server and reporting ingest and windows.
//! [`Known::schedule`] selects and orders as [`super::schedule`] does.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use slotcast_domain::contract::IngestKind;
use slotcast_domain::{ReservationStatus, ScheduleEvent, ServerSettings};

use super::{ReservationRow, ServerRow};

/// One server's read-model rows after some prefix of its events.
#[derive(Clone, Debug, Default)]
pub struct Known {
    server: Option<ServerRow>,
    reservations: BTreeMap<String, ReservationRow>,
    /// The reservations holding a slot (the `schedule` table): accepted, not cancelled.
    held: BTreeSet<String>,
}

impl Known {
    /// Folds `server_id`'s `events`, oldest first.
    pub fn fold<'a>(server_id: &str, events: impl IntoIterator<Item = &'a ScheduleEvent>) -> Self {
        let mut known = Self::default();
        for event in events {
            known.apply(server_id, event);
        }
        known
    }

    /// The server as it was registered and last changed; `None` before its registration.
    pub fn server(&self) -> Option<&ServerRow> {
        self.server.as_ref()
    }

    /// One reservation of this server; `None` for an id it had not heard of.
    pub fn reservation(&self, id: &str) -> Option<&ReservationRow> {
        self.reservations.get(id)
    }

    /// The held slots with any part in `[from, to)`, in start order (then by id), at most
    /// `limit`: [`super::schedule`]'s selection.
    pub fn schedule(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<ReservationRow> {
        let mut rows: Vec<&ReservationRow> = self
            .held
            .iter()
            .filter_map(|id| self.reservations.get(id))
            .filter(|r| from.is_none_or(|from| r.end_at > from))
            .filter(|r| to.is_none_or(|to| r.start_at < to))
            .collect();
        rows.sort_by(|a, b| (a.start_at, &a.id).cmp(&(b.start_at, &b.id)));
        rows.into_iter().take(limit).cloned().collect()
    }

    fn apply(&mut self, server_id: &str, event: &ScheduleEvent) {
        match event {
            ScheduleEvent::ServerRegistered { at, settings }
            | ScheduleEvent::ServerUpdated { at, settings } => {
                let at = stored(*at);
                let registered_at = self.server.as_ref().map_or(at, |s| s.registered_at);
                self.server = Some(server_row(settings, registered_at, at));
            }
            ScheduleEvent::ReservationAccepted {
                at,
                reservation_id,
                owner,
                title,
                start,
                end,
                opens_at,
                closes_at,
                stream_key_hash,
                source,
                ..
            } => {
                let at = stored(*at);
                self.reservations.insert(
                    reservation_id.clone(),
                    ReservationRow {
                        id: reservation_id.clone(),
                        server_id: server_id.to_string(),
                        owner: owner.clone(),
                        title: title.clone(),
                        start_at: stored(*start),
                        end_at: stored(*end),
                        opens_at: Some(stored(*opens_at)),
                        closes_at: Some(stored(*closes_at)),
                        status: ReservationStatus::Accepted,
                        reason: None,
                        stream_key_hash: Some(stream_key_hash.clone()),
                        requested_at: at,
                        updated_at: at,
                        ingest: None,
                        ingest_carrier: None,
                        ingest_at: None,
                        ingested: false,
                        camera_url: source.as_ref().map(|c| c.url.clone()),
                        camera_transport: source.as_ref().map(|c| c.transport.as_str().into()),
                        camera_login: source.as_ref().is_some_and(|c| c.credentials.is_some()),
                    },
                );
                self.held.insert(reservation_id.clone());
            }
            ScheduleEvent::ReservationRejected {
                at,
                reservation_id,
                owner,
                title,
                start,
                end,
                reason,
                ..
            } => {
                let at = stored(*at);
                self.reservations.insert(
                    reservation_id.clone(),
                    ReservationRow {
                        id: reservation_id.clone(),
                        server_id: server_id.to_string(),
                        owner: owner.clone(),
                        title: title.clone(),
                        start_at: stored(*start),
                        end_at: stored(*end),
                        opens_at: None,
                        closes_at: None,
                        status: ReservationStatus::Rejected,
                        reason: Some(reason.explain().to_string()),
                        stream_key_hash: None,
                        requested_at: at,
                        updated_at: at,
                        ingest: None,
                        ingest_carrier: None,
                        ingest_at: None,
                        ingested: false,
                        camera_url: None,
                        camera_transport: None,
                        camera_login: false,
                    },
                );
            }
            ScheduleEvent::ReservationCancelled {
                at, reservation_id, ..
            } => {
                if let Some(r) = self.reservations.get_mut(reservation_id) {
                    r.status = ReservationStatus::Cancelled;
                    r.updated_at = stored(*at);
                }
                self.held.remove(reservation_id);
            }
            ScheduleEvent::ReservationRescheduled {
                at,
                reservation_id,
                start,
                end,
                opens_at,
                closes_at,
                ..
            } => {
                if let Some(r) = self.reservations.get_mut(reservation_id) {
                    r.start_at = stored(*start);
                    r.end_at = stored(*end);
                    r.opens_at = Some(stored(*opens_at));
                    r.closes_at = Some(stored(*closes_at));
                    r.updated_at = stored(*at);
                }
            }
            // A refused reschedule changes nothing; the history shows it.
            ScheduleEvent::RescheduleRejected { .. } => {}
            // Refusals of strangers change nothing about the reservation's own publisher.
            ScheduleEvent::IngestReported {
                kind: IngestKind::Refused,
                ..
            } => {}
            ScheduleEvent::IngestReported {
                at,
                reservation_id,
                kind,
                carrier,
                ..
            } => {
                if let Some(r) = self.reservations.get_mut(reservation_id) {
                    let at = stored(*at);
                    let connected = *kind == IngestKind::Connected;
                    r.ingest = Some(kind.as_str().to_string());
                    if carrier.is_some() {
                        r.ingest_carrier = carrier.clone();
                    }
                    r.ingest_at = Some(at);
                    r.ingested |= connected;
                    r.updated_at = at;
                    // Connected makes it live; a connect recorded after the window's close
                    // still turns `missed` into `ended`.
                    r.status = match r.status {
                        ReservationStatus::Accepted if connected => ReservationStatus::Live,
                        ReservationStatus::Missed if connected => ReservationStatus::Ended,
                        other => other,
                    };
                }
            }
            // The window opening changes no status: `live` waits for a publisher.
            ScheduleEvent::WindowOpened { .. } => {}
            ScheduleEvent::WindowClosed {
                at, reservation_id, ..
            } => {
                if let Some(r) = self.reservations.get_mut(reservation_id) {
                    r.updated_at = stored(*at);
                    if matches!(
                        r.status,
                        ReservationStatus::Accepted | ReservationStatus::Live
                    ) {
                        r.status = if r.ingested {
                            ReservationStatus::Ended
                        } else {
                            ReservationStatus::Missed
                        };
                    }
                }
            }
            ScheduleEvent::StreamKeyRotated {
                at,
                reservation_id,
                stream_key_hash,
                ..
            } => {
                if let Some(r) = self.reservations.get_mut(reservation_id) {
                    r.stream_key_hash = Some(stream_key_hash.clone());
                    r.updated_at = stored(*at);
                }
            }
        }
    }
}

/// The server's row as the projector upserts it: `registered_at` kept from the first.
fn server_row(
    settings: &ServerSettings,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> ServerRow {
    // The same conversions as the projector's binds (`capacity as i32`, seconds as i64).
    ServerRow {
        id: settings.id.clone(),
        name: settings.name.clone(),
        capacity: settings.capacity as i32,
        min_lead_s: settings.min_lead_s as i64,
        max_duration_s: settings.max_duration_s as i64,
        horizon_s: settings.horizon_s as i64,
        preroll_s: settings.preroll_s as i64,
        grace_s: settings.grace_s as i64,
        carriers: serde_json::to_value(&settings.carriers).unwrap_or(serde_json::Value::Null),
        viewer_url: settings.viewer_url.clone(),
        registered_at,
        updated_at,
    }
}

/// `t` as a `timestamptz` keeps it: whole microseconds (sqlx drops the nanoseconds below).
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
#[path = "as_of_tests.rs"]
mod tests;
