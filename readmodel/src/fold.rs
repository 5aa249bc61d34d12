//! One aggregate's events folded in memory into the read-model rows they leave behind, for
//! the bulk rebuild (`rebuild.rs`), which writes the rows once instead of event by event.
//!
//! Contract: pure (no I/O). Feeding a stream's events in sequence order gives exactly the
//! rows of `rm.servers`, `rm.reservations` and `rm.schedule` that the per-event SQL of
//! `project.rs` (`apply`) leaves for that stream: each arm below is that SQL's effect on one
//! row, and `rebuild` is tested to give the same tables as the incremental projectors. Rows are
//! keyed as the tables are (a server by its id, a reservation by its id, a schedule row by
//! server and reservation). A stream that inserts the same reservation twice is refused, as
//! the primary key refuses it there.
//!
//! One difference, on events the domain never decides: an event naming a reservation that its
//! own server never booked changes nothing here, where the per-event SQL would update another
//! server's row of that id (cancels, reschedules and key rotations match by id alone).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use slotcast_domain::contract::IngestKind;
use slotcast_domain::{ReservationStatus, ScheduleEvent, ServerSettings};

/// A row of `rm.servers`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServerRow {
    pub settings: ServerSettings,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row of `rm.reservations`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReservationRow {
    pub id: String,
    pub server_id: String,
    pub owner: String,
    pub title: Option<String>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    pub status: ReservationStatus,
    pub reason: Option<&'static str>,
    pub stream_key_hash: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ingest: Option<IngestKind>,
    pub ingest_carrier: Option<String>,
    pub ingest_at: Option<DateTime<Utc>>,
    pub ingested: bool,
    pub camera_url: Option<String>,
    pub camera_transport: Option<&'static str>,
    pub camera_login: bool,
}

/// A row of `rm.schedule`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScheduleRow {
    pub server_id: String,
    pub reservation_id: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
}

/// A reservation and, while it holds its slot, its schedule window.
#[derive(Debug)]
struct Held {
    row: ReservationRow,
    slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The rows of one aggregate (`server_id`), as its events so far leave them.
#[derive(Debug)]
pub(crate) struct StreamFold {
    server_id: String,
    last_sequence: i64,
    servers: Vec<ServerRow>,
    /// In booking order, so the rows come out in the order the events made them.
    reservations: Vec<Held>,
    by_id: HashMap<String, usize>,
}

/// What a finished stream leaves in the read model.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub servers: Vec<ServerRow>,
    pub reservations: Vec<ReservationRow>,
    pub schedule: Vec<ScheduleRow>,
}

/// An event the read model cannot take: the same reservation booked twice in one stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub reservation_id: String,
    pub sequence: i64,
}

impl StreamFold {
    pub fn new(server_id: &str) -> Self {
        Self {
            server_id: server_id.to_string(),
            last_sequence: 0,
            servers: Vec::new(),
            reservations: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The newest sequence folded in (`rm.streams.last_sequence`).
    pub fn last_sequence(&self) -> i64 {
        self.last_sequence
    }

    /// The rows the stream leaves: every server it registered, every reservation it recorded
    /// (in the order it recorded them), and the slots still held.
    pub fn finish(self) -> Rows {
        let mut rows = Rows {
            servers: self.servers,
            reservations: Vec::with_capacity(self.reservations.len()),
            schedule: Vec::new(),
        };
        for held in self.reservations {
            if let Some((start_at, end_at)) = held.slot {
                rows.schedule.push(ScheduleRow {
                    server_id: self.server_id.clone(),
                    reservation_id: held.row.id.clone(),
                    start_at,
                    end_at,
                });
            }
            rows.reservations.push(held.row);
        }
        rows
    }

    fn held(&mut self, reservation_id: &str) -> Option<&mut Held> {
        let i = *self.by_id.get(reservation_id)?;
        self.reservations.get_mut(i)
    }

    fn insert(
        &mut self,
        row: ReservationRow,
        slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<(), Duplicate> {
        if self.by_id.contains_key(&row.id) {
            return Err(Duplicate {
                reservation_id: row.id,
                sequence: self.last_sequence,
            });
        }
        self.by_id.insert(row.id.clone(), self.reservations.len());
        self.reservations.push(Held { row, slot });
        Ok(())
    }

    fn upsert_server(&mut self, settings: &ServerSettings, at: DateTime<Utc>) {
        match self
            .servers
            .iter_mut()
            .find(|s| s.settings.id == settings.id)
        {
            Some(row) => {
                row.settings = settings.clone();
                row.updated_at = at;
            }
            None => self.servers.push(ServerRow {
                settings: settings.clone(),
                registered_at: at,
                updated_at: at,
            }),
        }
    }

    /// Folds in the event at `sequence` (the stream's next one).
    pub fn apply(&mut self, sequence: i64, event: &ScheduleEvent) -> Result<(), Duplicate> {
        self.last_sequence = sequence;
        match event {
            ScheduleEvent::ServerRegistered { at, settings }
            | ScheduleEvent::ServerUpdated { at, settings } => self.upsert_server(settings, *at),
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
                let row = ReservationRow {
                    id: reservation_id.clone(),
                    server_id: self.server_id.clone(),
                    owner: owner.clone(),
                    title: title.clone(),
                    start_at: *start,
                    end_at: *end,
                    opens_at: Some(*opens_at),
                    closes_at: Some(*closes_at),
                    status: ReservationStatus::Accepted,
                    reason: None,
                    stream_key_hash: Some(stream_key_hash.clone()),
                    requested_at: *at,
                    updated_at: *at,
                    ingest: None,
                    ingest_carrier: None,
                    ingest_at: None,
                    ingested: false,
                    camera_url: source.as_ref().map(|c| c.url.clone()),
                    camera_transport: source.as_ref().map(|c| c.transport.as_str()),
                    camera_login: source.as_ref().is_some_and(|c| c.credentials.is_some()),
                };
                self.insert(row, Some((*start, *end)))?;
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
                let row = ReservationRow {
                    id: reservation_id.clone(),
                    server_id: self.server_id.clone(),
                    owner: owner.clone(),
                    title: title.clone(),
                    start_at: *start,
                    end_at: *end,
                    opens_at: None,
                    closes_at: None,
                    status: ReservationStatus::Rejected,
                    reason: Some(reason.explain()),
                    stream_key_hash: None,
                    requested_at: *at,
                    updated_at: *at,
                    ingest: None,
                    ingest_carrier: None,
                    ingest_at: None,
                    ingested: false,
                    camera_url: None,
                    camera_transport: None,
                    camera_login: false,
                };
                self.insert(row, None)?;
            }
            ScheduleEvent::ReservationCancelled {
                at, reservation_id, ..
            } => {
                if let Some(held) = self.held(reservation_id) {
                    held.row.status = ReservationStatus::Cancelled;
                    held.row.updated_at = *at;
                    held.slot = None;
                }
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
                if let Some(held) = self.held(reservation_id) {
                    held.row.start_at = *start;
                    held.row.end_at = *end;
                    held.row.opens_at = Some(*opens_at);
                    held.row.closes_at = Some(*closes_at);
                    held.row.updated_at = *at;
                    if let Some(slot) = held.slot.as_mut() {
                        *slot = (*start, *end);
                    }
                }
            }
            ScheduleEvent::RescheduleRejected { .. } => {}
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
                if let Some(held) = self.held(reservation_id) {
                    let row = &mut held.row;
                    let connected = *kind == IngestKind::Connected;
                    row.ingest = Some(*kind);
                    if carrier.is_some() {
                        row.ingest_carrier = carrier.clone();
                    }
                    row.ingest_at = Some(*at);
                    row.ingested |= connected;
                    row.updated_at = *at;
                    if connected {
                        row.status = match row.status {
                            ReservationStatus::Accepted => ReservationStatus::Live,
                            ReservationStatus::Missed => ReservationStatus::Ended,
                            other => other,
                        };
                    }
                }
            }
            ScheduleEvent::WindowOpened { .. } => {}
            ScheduleEvent::WindowClosed {
                at, reservation_id, ..
            } => {
                if let Some(held) = self.held(reservation_id) {
                    let row = &mut held.row;
                    row.updated_at = *at;
                    if matches!(
                        row.status,
                        ReservationStatus::Accepted | ReservationStatus::Live
                    ) {
                        row.status = if row.ingested {
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
                if let Some(held) = self.held(reservation_id) {
                    held.row.stream_key_hash = Some(stream_key_hash.clone());
                    held.row.updated_at = *at;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
