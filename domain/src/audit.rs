//! The audit trail's pure core: what an event row's hash is, and checking one server's
//! stream of stored events against itself, its anchors and the rules that decided it.
//!
//! Contract: no I/O. [`event_hash`] is the definition written in `docs/audit.md` (SHA-256 over
//! the length-prefixed fields, payload and metadata exactly as stored). A [`StreamAudit`] takes
//! one server's rows in sequence order and, once finished, names every row whose hash does not
//! match its fields ([`Finding::Changed`]), every gap in the sequence ([`Finding::Missing`]),
//! every row linked to something other than the row before it ([`Finding::Relinked`]), and
//! every anchor the rows do not reach or do not match ([`Finding::Truncated`],
//! [`Finding::AnchorMismatch`]). It also folds the events into the aggregate and, for every
//! row whose metadata carries the command that produced it, decides that command again on the
//! state before it: the event must come out the same ([`Divergence`] otherwise). Rows written
//! before commands were recorded are only replayed, and counted as such.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Command, ScheduleEvent, ServerSchedule};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of a stream's first event.
pub const GENESIS: Hash = [0; 32];

/// An event row's hash: SHA-256 over `prev_hash, aggregate_id, sequence, event_type,
/// event_version, payload, metadata`, each written as its length in bytes (8 bytes,
/// big-endian) followed by its bytes; `sequence` as decimal ASCII, the texts as UTF-8,
/// `payload` and `metadata` exactly as stored.
pub fn event_hash(prev: &Hash, row: &RowFields<'_>) -> Hash {
    let mut hasher = Sha256::new();
    let sequence = row.sequence.to_string();
    for field in [
        prev.as_slice(),
        row.aggregate_id.as_bytes(),
        sequence.as_bytes(),
        row.event_type.as_bytes(),
        row.event_version.as_bytes(),
        row.payload.as_bytes(),
        row.metadata.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// The hashed fields of one event row, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RowFields<'a> {
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    /// The payload's text exactly as stored.
    pub payload: &'a str,
    /// The metadata's text exactly as stored.
    pub metadata: &'a str,
}

/// One stored event row with its chain link.
#[derive(Clone, Debug)]
pub struct StoredRow {
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl StoredRow {
    /// The row slotcast writes for `event`, the `sequence`-th of `aggregate_id`, linked to
    /// `head` (the hash of the row before it, or [`GENESIS`]), which becomes this row's hash.
    pub fn seal(
        aggregate_id: &str,
        sequence: i64,
        event: &ScheduleEvent,
        metadata: &Metadata,
        head: &mut Hash,
    ) -> Result<Self, serde_json::Error> {
        let mut row = Self {
            aggregate_id: aggregate_id.to_string(),
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_string(event)?,
            metadata: serde_json::to_string(metadata)?,
            prev_hash: head.to_vec(),
            hash: Vec::new(),
        };
        *head = event_hash(head, &row.fields());
        row.hash = head.to_vec();
        Ok(row)
    }

    pub fn fields(&self) -> RowFields<'_> {
        RowFields {
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
        }
    }
}

/// What slotcast writes beside every event (the `metadata` column). `command` is absent in
/// events written before commands were recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub actor: String,
    pub request_id: String,
    /// RFC 3339, the server clock when the command was executed.
    pub recorded_at: String,
    pub reservation_id: Option<String>,
    /// The command that produced the event, as it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
}

/// A server's chain head written outside the rows it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub sequence: i64,
    pub hash: Hash,
    /// Where it was read from (`audit_anchors`, `nats`, the file), for the report.
    pub source: String,
}

/// Something the chain or the anchors say was changed in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The row's fields no longer give its hash: changed after it was written.
    Changed { aggregate_id: String, sequence: i64 },
    /// Sequences `from..=to` are absent: deleted.
    Missing {
        aggregate_id: String,
        from: i64,
        to: i64,
    },
    /// The row does not link to the row before it: inserted, reordered or rewritten.
    Relinked { aggregate_id: String, sequence: i64 },
    /// An anchor covers a sequence beyond the stream's last row: truncated.
    Truncated {
        aggregate_id: String,
        anchored: i64,
        last: i64,
        source: String,
    },
    /// The row at an anchored sequence has another hash than the anchor.
    AnchorMismatch {
        aggregate_id: String,
        sequence: i64,
        source: String,
    },
}

impl Finding {
    /// The server and the (first) sequence it names, for ordering a report.
    pub fn at(&self) -> (&str, i64) {
        match self {
            Self::Changed {
                aggregate_id,
                sequence,
            }
            | Self::Relinked {
                aggregate_id,
                sequence,
            }
            | Self::AnchorMismatch {
                aggregate_id,
                sequence,
                ..
            } => (aggregate_id, *sequence),
            Self::Missing {
                aggregate_id, from, ..
            } => (aggregate_id, *from),
            Self::Truncated {
                aggregate_id, last, ..
            } => (aggregate_id, *last + 1),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed {
                aggregate_id,
                sequence,
            } => write!(
                f,
                "{aggregate_id}#{sequence}: changed (its fields do not give its hash)"
            ),
            Self::Missing {
                aggregate_id,
                from,
                to,
            } if from == to => write!(f, "{aggregate_id}#{from}: deleted"),
            Self::Missing {
                aggregate_id,
                from,
                to,
            } => write!(f, "{aggregate_id}#{from}..#{to}: deleted"),
            Self::Relinked {
                aggregate_id,
                sequence,
            } => write!(
                f,
                "{aggregate_id}#{sequence}: does not link to the event before it \
                 (inserted out of order or rewritten)"
            ),
            Self::Truncated {
                aggregate_id,
                anchored,
                last,
                source,
            } => write!(
                f,
                "{aggregate_id}: truncated: anchored at #{anchored} ({source}), the stream \
                 ends at #{last}"
            ),
            Self::AnchorMismatch {
                aggregate_id,
                sequence,
                source,
            } => write!(
                f,
                "{aggregate_id}#{sequence}: differs from its anchor ({source})"
            ),
        }
    }
}

/// A recorded command that, decided again, does not give the recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    pub aggregate_id: String,
    pub sequence: i64,
    /// The event as recorded (or why it could not be read).
    pub recorded: Result<ScheduleEvent, String>,
    /// What deciding its command again gave.
    pub redecided: Result<ScheduleEvent, String>,
}

/// Whether `row` records exactly `event`, as slotcast writes it today.
fn is_recorded_as(event: &ScheduleEvent, row: &StoredRow) -> bool {
    event.event_type() == row.event_type
        && event.event_version() == row.event_version
        && serde_json::to_string(event).is_ok_and(|text| text == row.payload)
}

/// Which rows count: those recorded within `[from, to]` (either end open).
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    /// Whether an event recorded at `at` counts; one whose time does not read always does.
    pub fn holds(&self, at: Option<DateTime<Utc>>) -> bool {
        at.is_none_or(|at| {
            self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at <= to)
        })
    }

    /// [`Range::holds`] for a row's stored metadata.
    pub fn holds_row(&self, metadata: &str) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        #[derive(Deserialize)]
        struct At {
            recorded_at: String,
        }
        let at = serde_json::from_str::<At>(metadata)
            .ok()
            .and_then(|m| parse_instant(&m.recorded_at));
        self.holds(at)
    }
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What checking one or many streams found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub streams: u64,
    /// Rows checked (in range).
    pub events: u64,
    /// Of those, decided again from their recorded command.
    pub redecided: u64,
    /// Of those, only replayed: written before commands were recorded.
    pub replayed_only: u64,
    pub divergences: u64,
    pub first_divergence: Option<Divergence>,
    pub findings: Vec<Finding>,
    pub anchors_checked: u64,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.divergences == 0 && self.findings.is_empty()
    }

    /// Adds another stream's (or batch's) report to this one.
    pub fn merge(&mut self, other: Report) {
        self.streams += other.streams;
        self.events += other.events;
        self.redecided += other.redecided;
        self.replayed_only += other.replayed_only;
        self.divergences += other.divergences;
        if self.first_divergence.is_none() {
            self.first_divergence = other.first_divergence;
        }
        self.findings.extend(other.findings);
        self.anchors_checked += other.anchors_checked;
    }
}

/// Checks one server's rows, fed in sequence order.
pub struct StreamAudit {
    aggregate_id: String,
    range: Range,
    anchors: Vec<Anchor>,
    /// The stored hash of the last row seen, and its sequence.
    last: Option<(i64, Vec<u8>)>,
    /// Whether the stream is read from its first event (so it can be re-decided).
    from_genesis: bool,
    state: ServerSchedule,
    /// Set once the stream could not be folded any further (an event that does not decode).
    stalled: bool,
    report: Report,
}

impl StreamAudit {
    /// A stream read from its first event: a first row other than #1 is a deletion.
    pub fn new(aggregate_id: &str, range: Range, anchors: Vec<Anchor>) -> Self {
        Self {
            aggregate_id: aggregate_id.to_string(),
            range,
            anchors,
            last: None,
            from_genesis: true,
            state: ServerSchedule::default(),
            stalled: false,
            report: Report {
                streams: 1,
                ..Report::default()
            },
        }
    }

    /// A stream that starts mid-way (a file exported from a later moment): its first row's
    /// `prev_hash` is taken as given, and nothing is re-decided.
    pub fn mid_stream(aggregate_id: &str, range: Range, anchors: Vec<Anchor>) -> Self {
        Self {
            from_genesis: false,
            ..Self::new(aggregate_id, range, anchors)
        }
    }

    /// The next row of this stream.
    pub fn push(&mut self, row: &StoredRow) {
        let metadata: Option<Metadata> = serde_json::from_str(&row.metadata).ok();
        let bounded = self.range.from.is_some() || self.range.to.is_some();
        let in_range = !bounded
            || self.range.holds(
                metadata
                    .as_ref()
                    .and_then(|m| parse_instant(&m.recorded_at)),
            );
        self.check_link(row);
        if in_range {
            self.report.events += 1;
        }
        self.fold(row, metadata.and_then(|m| m.command), in_range);
    }

    fn check_link(&mut self, row: &StoredRow) {
        let expected = match &self.last {
            Some((sequence, _)) => sequence + 1,
            None if self.from_genesis => 1,
            None => row.sequence,
        };
        let prev = match &self.last {
            Some((_, hash)) => Some(hash.as_slice()),
            None if self.from_genesis => Some(GENESIS.as_slice()),
            None => None,
        };
        if row.sequence > expected {
            // The link across a gap cannot hold: the gap is the finding.
            self.missing(expected, row.sequence - 1);
        } else if row.sequence < expected || prev.is_some_and(|p| p != row.prev_hash) {
            self.report.findings.push(Finding::Relinked {
                aggregate_id: self.aggregate_id.clone(),
                sequence: row.sequence,
            });
        }
        let intact = <&Hash>::try_from(row.prev_hash.as_slice())
            .is_ok_and(|prev| event_hash(prev, &row.fields()).as_slice() == row.hash);
        if !intact {
            self.report.findings.push(Finding::Changed {
                aggregate_id: self.aggregate_id.clone(),
                sequence: row.sequence,
            });
        }
        for anchor in self.anchors.iter().filter(|a| a.sequence == row.sequence) {
            self.report.anchors_checked += 1;
            if anchor.hash.as_slice() != row.hash {
                self.report.findings.push(Finding::AnchorMismatch {
                    aggregate_id: self.aggregate_id.clone(),
                    sequence: row.sequence,
                    source: anchor.source.clone(),
                });
            }
        }
        self.last = Some((row.sequence, row.hash.clone()));
    }

    fn missing(&mut self, from: i64, to: i64) {
        self.report.findings.push(Finding::Missing {
            aggregate_id: self.aggregate_id.clone(),
            from,
            to,
        });
    }

    fn fold(&mut self, row: &StoredRow, command: Option<Command>, in_range: bool) {
        if self.stalled {
            return;
        }
        let redecide = in_range && self.from_genesis;
        let redecided = match command {
            Some(command) if redecide => {
                let redecided = self.state.decide(command).map_err(|e| e.to_string());
                if let Ok(event) = redecided {
                    // The common case, and the cheap one: the event decided again is, byte for
                    // byte, the payload recorded (today's version, as the api writes it).
                    if is_recorded_as(&event, row) {
                        self.report.redecided += 1;
                        self.state.apply(event);
                        return;
                    }
                    Some(Ok(event))
                } else {
                    Some(redecided)
                }
            }
            _ => None,
        };
        let recorded =
            crate::versions::decode_text(&row.event_type, &row.event_version, &row.payload)
                .map_err(|e| e.to_string());
        let Ok(event) = &recorded else {
            if in_range {
                self.diverged(
                    row.sequence,
                    recorded.clone(),
                    Err("not decided: the recorded event does not decode".to_string()),
                );
            }
            // The state after an unreadable event is unknown: fold no further.
            self.stalled = true;
            return;
        };
        match redecided {
            // Written differently (an older version, another serializer) but the same event.
            Some(Ok(again)) if again == *event => self.report.redecided += 1,
            Some(again) => self.diverged(row.sequence, recorded.clone(), again),
            None if redecide => self.report.replayed_only += 1,
            None => {}
        }
        if let Ok(event) = recorded {
            self.state.apply(event);
        }
    }

    fn diverged(
        &mut self,
        sequence: i64,
        recorded: Result<ScheduleEvent, String>,
        redecided: Result<ScheduleEvent, String>,
    ) {
        self.report.divergences += 1;
        if self.report.first_divergence.is_none() {
            self.report.first_divergence = Some(Divergence {
                aggregate_id: self.aggregate_id.clone(),
                sequence,
                recorded,
                redecided,
            });
        }
    }

    /// The stream has ended: an anchor beyond its last row means it was truncated (named
    /// once per source, at the highest anchor).
    pub fn finish(mut self) -> Report {
        let last = self.last.as_ref().map_or(0, |(sequence, _)| *sequence);
        let mut beyond: Vec<&Anchor> = Vec::new();
        for anchor in self.anchors.iter().filter(|a| a.sequence > last) {
            self.report.anchors_checked += 1;
            match beyond.iter_mut().find(|b| b.source == anchor.source) {
                Some(b) if b.sequence < anchor.sequence => *b = anchor,
                Some(_) => {}
                None => beyond.push(anchor),
            }
        }
        for anchor in beyond {
            self.report.findings.push(Finding::Truncated {
                aggregate_id: self.aggregate_id.clone(),
                anchored: anchor.sequence,
                last,
                source: anchor.source.clone(),
            });
        }
        self.report
    }
}
