//! The streamer's decisions, sans-IO: which publishers and camera pulls may run, when they
//! are cut off, when a reservation's recording ends or goes on, and what is reported.
//!
//! Contract: [`Control`] takes slot messages, publisher events and ticks, each with the time
//! it happens at (the server clock for windows and reports, a monotonic instant for the
//! refusal rollup), and answers with [`Action`]s for the edge (`crate::hub`) to carry out.
//! It does no I/O, reads no clock and holds no lock; the same inputs give the same actions.
//! The gates ([`Gates`]) decide admission; this decides what follows from it: one publisher
//! per reservation (a newer one takes over only from one gone silent past the session
//! timeout), a publisher cut off when its window closes or its key changes, a camera pulled
//! exactly while its window is open, a recording ended once its slot is over and nothing
//! feeds it any more, and a recording a stopped streamer left unfinished resumed by the
//! reservation's next playout or ended when its slot is over (or unknown once the gates are
//! rebuilt).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use slotcast_domain::contract::{
    IngestKind, IngestMessage, IngestProtocol, RefusalCode, SlotKind, SlotMessage, SCHEMA,
};
use slotcast_domain::secret::SecretKey;

use crate::gates::{Applied, Camera, Denied, Gates};
use crate::playlist::Playlist;
use crate::refusals::Rollup;
use crate::rtsp::Credential;

/// At most one `refused` report per reservation this often.
const REFUSALS_PERIOD: Duration = Duration::from_secs(60);

/// Why a slot's publisher and pull stop.
const WINDOW_CLOSED: &str = "the window closed";
const CANCELLED: &str = "the reservation was cancelled";
const NOT_OPEN_ANY_MORE: &str = "the window is not open any more";
const TAKEN_OVER: &str = "a new publisher took over after this one went silent";

/// What the edge must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Close publisher connection `session`, telling it why.
    Cut { session: u64, reason: String },
    /// Start pulling the reservation's camera.
    Pull {
        reservation_id: String,
        camera: Camera,
    },
    /// Stop pulling the reservation's camera, telling it why.
    StopPull {
        reservation_id: String,
        reason: String,
    },
    /// End the reservation's playout, if it has one: its playlist gets its end.
    EndPlayout { reservation_id: String },
    /// A recording a stopped streamer left unfinished is over: write its final playlist.
    EndUnfinished {
        reservation_id: String,
        playlist: String,
    },
    /// Send an ingest report.
    Report(IngestMessage),
}

/// Why a publisher is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Gate(Denied),
    /// Another publisher is live on the reservation.
    Busy,
}

impl Refused {
    /// The code the publisher is told (docs/publishing.md).
    pub const fn code(&self) -> RefusalCode {
        match self {
            Self::Gate(denied) => denied.code(),
            Self::Busy => RefusalCode::Busy,
        }
    }

    /// A fixed label for metrics (the text may hold times and server ids).
    pub const fn label(&self) -> &'static str {
        self.code().as_str()
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gate(denied) => denied.fmt(f),
            Self::Busy => write!(f, "another publisher is live on this reservation"),
        }
    }
}

/// A camera pull's own report fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullReport {
    pub kind: IngestKind,
    /// The camera's `host:port`.
    pub camera: String,
    pub codec: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Publisher {
    carrier: String,
    remote: SocketAddr,
    protocol: IngestProtocol,
    recording: Option<(String, Credential)>,
    /// Why it was cut off, once it was (the first reason given).
    cut: Option<String>,
}

impl Publisher {
    fn records(&self, reservation_id: &str) -> bool {
        self.recording
            .as_ref()
            .is_some_and(|(id, _)| id == reservation_id)
    }
}

/// The decisions of one streamer (one distribution server).
#[derive(Debug)]
pub struct Control {
    server_id: String,
    gates: Gates,
    /// Whether the gates have been rebuilt from NATS and are following it.
    ready: bool,
    publishers: BTreeMap<u64, Publisher>,
    next_session: u64,
    /// Reservations whose camera is being pulled.
    pulls: BTreeSet<String>,
    /// Recordings a stopped streamer left unfinished, by reservation id.
    unfinished: HashMap<String, Playlist>,
    refusals: Rollup,
}

impl Control {
    pub fn new(server_id: impl Into<String>, secret_key: Option<SecretKey>) -> Self {
        let server_id = server_id.into();
        Self {
            gates: Gates::new(server_id.clone(), secret_key),
            server_id,
            ready: false,
            publishers: BTreeMap::new(),
            next_session: 1,
            pulls: BTreeSet::new(),
            unfinished: HashMap::new(),
            refusals: Rollup::new(REFUSALS_PERIOD),
        }
    }

    // ---- publishers ---------------------------------------------------------------------

    /// A new publisher connection on `carrier`: its session id.
    pub fn connect(&mut self, carrier: &str, remote: SocketAddr, protocol: IngestProtocol) -> u64 {
        let id = self.next_session;
        self.next_session += 1;
        self.publishers.insert(
            id,
            Publisher {
                carrier: carrier.to_string(),
                remote,
                protocol,
                recording: None,
                cut: None,
            },
        );
        id
    }

    /// Whether the reservation's key can be checked by Digest here.
    pub fn offers_digest(&self, reservation_id: &str) -> bool {
        self.gates.has_digest(reservation_id)
    }

    /// May `session` publish to the reservation at `now`? The gate decides, then no other
    /// publisher may be live on it: one that `is_silent` (past the session timeout) does not
    /// count.
    pub fn admit(
        &self,
        session: u64,
        reservation_id: &str,
        credential: &Credential,
        now: DateTime<Utc>,
        is_silent: impl Fn(u64) -> bool,
    ) -> Result<(), Refused> {
        let carrier = self
            .publishers
            .get(&session)
            .map_or("", |p| p.carrier.as_str());
        self.gates
            .admit(carrier, reservation_id, credential, now)
            .map_err(Refused::Gate)?;
        if self.another_live(session, reservation_id, is_silent) {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// A refused attempt, counted for the reservation's next `refused` report if the
    /// reservation is this server's (only its history has a place for it).
    pub fn refused(&mut self, reservation_id: &str, refused: &Refused) {
        if self.gates.knows(reservation_id) {
            self.refusals.record(reservation_id, refused.label());
        }
    }

    /// `session`, admitted, records: it is the reservation's publisher from now on, and any
    /// other that `is_silent` is cut off. If another publisher recording the reservation is
    /// not silent (both were admitted before either recorded), the newcomer is refused
    /// `busy` and the live one goes on.
    pub fn start_recording(
        &mut self,
        session: u64,
        reservation_id: &str,
        credential: Credential,
        codecs: &str,
        now: DateTime<Utc>,
        is_silent: impl Fn(u64) -> bool,
    ) -> Result<Vec<Action>, Refused> {
        if self.another_live(session, reservation_id, is_silent) {
            return Err(Refused::Busy);
        }
        let mut actions = Vec::new();
        for (&id, other) in &mut self.publishers {
            if id != session && other.records(reservation_id) {
                actions.push(cut(id, other, TAKEN_OVER));
            }
        }
        let Some(publisher) = self.publishers.get_mut(&session) else {
            return Ok(actions);
        };
        publisher.recording = Some((reservation_id.to_string(), credential));
        let report = publisher_report(
            publisher,
            IngestKind::Connected,
            Some(codecs.to_string()),
            None,
        );
        actions.push(self.report(reservation_id, report, now));
        Ok(actions)
    }

    /// Whether a publisher other than `session` records the reservation and is not silent.
    fn another_live(
        &self,
        session: u64,
        reservation_id: &str,
        is_silent: impl Fn(u64) -> bool,
    ) -> bool {
        self.publishers
            .iter()
            .any(|(&id, p)| id != session && p.records(reservation_id) && !is_silent(id))
    }

    /// Whether `session` records (went through RECORD).
    pub fn is_recording(&self, session: u64) -> bool {
        self.publishers
            .get(&session)
            .is_some_and(|p| p.recording.is_some())
    }

    /// How the stream of `reservation_id` comes in now: its recording publisher's protocol,
    /// `rtsp` while a camera is pulled, `None` otherwise.
    pub fn protocol_of(&self, reservation_id: &str) -> Option<IngestProtocol> {
        self.publishers
            .values()
            .find(|p| p.records(reservation_id))
            .map(|p| p.protocol)
            .or_else(|| {
                self.pulls
                    .contains(reservation_id)
                    .then_some(IngestProtocol::Rtsp)
            })
    }

    /// The credential `session` records with.
    #[cfg(test)]
    pub fn credential(&self, session: u64) -> Option<&Credential> {
        let publisher = self.publishers.get(&session)?;
        publisher
            .recording
            .as_ref()
            .map(|(_, credential)| credential)
    }

    /// The connection is gone, because of `reason` (`failure`: the streamer's fault or the
    /// publisher's bad media). A recording publisher is reported `disconnected` (`failed`),
    /// with the reason it was cut off for if it was; if its slot is over, its playout ends.
    pub fn disconnect(
        &mut self,
        session: u64,
        reason: &str,
        failure: bool,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let Some(publisher) = self.publishers.remove(&session) else {
            return Vec::new();
        };
        let Some((reservation_id, _)) = &publisher.recording else {
            return Vec::new();
        };
        let kind = if failure {
            IngestKind::Failed
        } else {
            IngestKind::Disconnected
        };
        let reason = publisher.cut.clone().unwrap_or_else(|| reason.to_string());
        let report = publisher_report(&publisher, kind, None, Some(reason));
        let mut actions = vec![self.report(reservation_id, report, now)];
        if self.gates.is_over(reservation_id) {
            actions.push(self.end_recording(reservation_id));
        }
        actions
    }

    // ---- slots --------------------------------------------------------------------------

    /// One slot message from NATS, at `now`.
    pub fn slot(&mut self, msg: &SlotMessage, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.gates.apply(msg) {
            Applied::Ignored => {}
            Applied::Ended => {
                let why = if msg.kind == SlotKind::Cancelled {
                    CANCELLED
                } else {
                    WINDOW_CLOSED
                };
                self.slot_over(&msg.reservation_id, why, &mut actions);
            }
            Applied::Updated => self.recheck(&msg.reservation_id, now, &mut actions),
        }
        self.reconcile_pulls(now, &mut actions);
        actions
    }

    /// A reservation seen on another server's slot subject.
    pub fn elsewhere(&mut self, reservation_id: &str, server_id: &str) {
        self.gates.note_elsewhere(reservation_id, server_id);
    }

    /// Time passes: gates whose window has passed by `now` close, pulls follow the windows,
    /// and (when `report_room`) the `refused` reports due at `mono` go out.
    pub fn tick(&mut self, now: DateTime<Utc>, mono: Instant, report_room: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        for id in self.gates.expire(now) {
            self.slot_over(&id, WINDOW_CLOSED, &mut actions);
        }
        self.reconcile_pulls(now, &mut actions);
        if report_room {
            for (reservation_id, counts) in self.refusals.due(mono) {
                actions.push(Action::Report(IngestMessage {
                    schema: SCHEMA,
                    kind: IngestKind::Refused,
                    reservation_id,
                    server_id: self.server_id.clone(),
                    at: now,
                    carrier: None,
                    remote_addr: None,
                    protocol: None,
                    codec: None,
                    reason: None,
                    refusals: Some(counts),
                }));
            }
        }
        actions
    }

    /// Forgets gates of slots long over (their playouts are gone from memory too).
    pub fn forget_over(&mut self) {
        self.gates.forget_over();
    }

    /// The reservation's title, for its viewers ([`Gates::title`]).
    pub fn title(&self, reservation_id: &str) -> Option<&str> {
        self.gates.title(reservation_id)
    }

    /// Whether the reservation's slot is over (closed, cancelled or expired).
    pub fn is_over(&self, reservation_id: &str) -> bool {
        self.gates.is_over(reservation_id)
    }

    /// Every live publisher of the reservation still holds its gate at `now` (a `changed`
    /// moved the window or the key).
    fn recheck(&mut self, reservation_id: &str, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        for (&id, publisher) in &mut self.publishers {
            let Some((recorded, credential)) = &publisher.recording else {
                continue;
            };
            if recorded != reservation_id {
                continue;
            }
            if let Err(denied) = self.gates.still_admitted(reservation_id, credential, now) {
                actions.push(cut(id, publisher, &denied.to_string()));
            }
        }
    }

    /// The slot is over: its publisher is cut off and its pull stopped (each ends the
    /// playout once its last media is in), or the playout ends now if neither runs.
    fn slot_over(&mut self, reservation_id: &str, why: &str, actions: &mut Vec<Action>) {
        let mut publishing = false;
        for (&id, publisher) in &mut self.publishers {
            if publisher.records(reservation_id) {
                actions.push(cut(id, publisher, why));
                publishing = true;
            }
        }
        let pulling = self.pulls.remove(reservation_id);
        if pulling {
            actions.push(Action::StopPull {
                reservation_id: reservation_id.to_string(),
                reason: why.to_string(),
            });
        }
        if !publishing && !pulling {
            actions.push(self.end_recording(reservation_id));
        }
    }

    // ---- cameras ------------------------------------------------------------------------

    /// Pulls every camera whose window is open at `now`, and stops the others.
    fn reconcile_pulls(&mut self, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let wanted = self.gates.cameras_open(now);
        self.pulls.retain(|id| {
            let keep = wanted.iter().any(|(w, _)| w == id);
            if !keep {
                actions.push(Action::StopPull {
                    reservation_id: id.clone(),
                    reason: NOT_OPEN_ANY_MORE.to_string(),
                });
            }
            keep
        });
        for (reservation_id, camera) in wanted {
            if self.pulls.insert(reservation_id.clone()) {
                actions.push(Action::Pull {
                    reservation_id,
                    camera,
                });
            }
        }
    }

    /// What a camera pull did, as a report.
    pub fn pull_report(
        &self,
        reservation_id: &str,
        what: PullReport,
        now: DateTime<Utc>,
    ) -> Action {
        let report = Report {
            kind: what.kind,
            carrier: None,
            remote_addr: what.camera,
            protocol: IngestProtocol::Rtsp,
            codec: what.codec,
            reason: what.reason,
        };
        self.report(reservation_id, report, now)
    }

    /// A pull has hung up for good: if its slot is over, its playout ends.
    pub fn pull_ended(&mut self, reservation_id: &str) -> Vec<Action> {
        if self.gates.is_over(reservation_id) {
            vec![self.end_recording(reservation_id)]
        } else {
            Vec::new()
        }
    }

    // ---- recordings ---------------------------------------------------------------------

    /// Recordings a stopped streamer left unfinished, found at start.
    pub fn found_unfinished(&mut self, found: Vec<(String, Playlist)>) {
        self.unfinished.extend(found);
    }

    /// Whether the reservation's recording was left unfinished and waits for its publisher
    /// (or its slot's end).
    pub fn is_unfinished(&self, reservation_id: &str) -> bool {
        self.unfinished.contains_key(reservation_id)
    }

    /// The reservation gets a playout: the recording it goes on from, if one was left
    /// unfinished (handed out once).
    pub fn open_playout(&mut self, reservation_id: &str) -> Option<Playlist> {
        self.unfinished.remove(reservation_id)
    }

    /// The gates are (or are no longer) rebuilt from NATS. Once they are, an unfinished
    /// recording of a slot they do not know (its messages aged out of the stream) ends:
    /// nothing will ever open it again.
    pub fn set_ready(&mut self, ready: bool) -> Vec<Action> {
        self.ready = ready;
        if !ready {
            return Vec::new();
        }
        let mut unknown: Vec<String> = self
            .unfinished
            .keys()
            .filter(|id| !self.gates.knows(id))
            .cloned()
            .collect();
        unknown.sort();
        unknown.iter().map(|id| self.end_recording(id)).collect()
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The reservation's recording ends: an unfinished one gets its final playlist, else its
    /// playout (if any) ends.
    fn end_recording(&mut self, reservation_id: &str) -> Action {
        match self.unfinished.remove(reservation_id) {
            Some(mut recorded) => {
                recorded.end();
                Action::EndUnfinished {
                    reservation_id: reservation_id.to_string(),
                    playlist: recorded.render(),
                }
            }
            None => Action::EndPlayout {
                reservation_id: reservation_id.to_string(),
            },
        }
    }

    fn report(&self, reservation_id: &str, what: Report, now: DateTime<Utc>) -> Action {
        Action::Report(IngestMessage {
            schema: SCHEMA,
            kind: what.kind,
            reservation_id: reservation_id.to_string(),
            server_id: self.server_id.clone(),
            at: now,
            carrier: what.carrier,
            remote_addr: Some(what.remote_addr),
            codec: what.codec,
            reason: what.reason,
            refusals: None,
            protocol: Some(what.protocol),
        })
    }
}

/// One ingest report's own fields (the reservation, server and time are added).
struct Report {
    kind: IngestKind,
    carrier: Option<String>,
    remote_addr: String,
    protocol: IngestProtocol,
    codec: Option<String>,
    reason: Option<String>,
}

fn publisher_report(
    publisher: &Publisher,
    kind: IngestKind,
    codec: Option<String>,
    reason: Option<String>,
) -> Report {
    Report {
        kind,
        carrier: Some(publisher.carrier.clone()),
        remote_addr: publisher.remote.to_string(),
        protocol: publisher.protocol,
        codec,
        reason,
    }
}

fn cut(session: u64, publisher: &mut Publisher, why: &str) -> Action {
    let reason = publisher.cut.get_or_insert_with(|| why.to_string()).clone();
    Action::Cut { session, reason }
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
