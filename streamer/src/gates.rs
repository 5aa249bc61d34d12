//! Ingest gates: which of this server's reservations may publish now, decided from slot
//! messages alone (docs/nats-contract.md, "Rebuilding state after a restart").
//!
//! Contract: sans-IO. [`Gates::apply`] takes each slot message as it arrives (the newest per
//! reservation first after a restart, then everything new) and says what changed;
//! [`Gates::admit`] answers a publisher at a given server-clock instant; [`Gates::expire`]
//! drops gates whose window has passed, so a gate closes on time even if the `closed`
//! message is late. Stream keys are compared as SHA-256 hashes in constant time; the key
//! itself is never stored. A Digest answer is checked against the key's HA1, which arrives
//! sealed in the message and is opened with the secret key (without one, or for a message
//! without it, Digest answers are refused as a wrong key). Reservations of other servers are
//! remembered by id only, so a publisher who dialled the wrong server is told so (403)
//! instead of "unknown" (404). A `scheduled` slot is known but admits nobody before
//! `opens_at`, so an early publisher is told when it opens (403). A slot that names a camera
//! admits no publisher; [`Gates::cameras_open`] lists the cameras to pull now, with their
//! sealed logins opened. Each reservation's title (from its newest message) is kept for its
//! viewers while the reservation is known, if a page may show it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use slotcast_domain::contract::{
    CameraSource, CameraTransport, IngestMode, RefusalCode, SlotKind, SlotMessage, TITLE_MAX,
};
use slotcast_domain::secret::{constant_time_eq, CameraLogin, SecretKey};

use crate::rtsp::Credential;

/// Why a publisher is not let in. Each has its [`RefusalCode`], the word the publisher is
/// told (docs/publishing.md) and that metrics and reports count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No slot message ever named this reservation.
    Unknown,
    /// The reservation belongs to another distribution server.
    OtherServer(String),
    /// The key does not hash to the reservation's current key hash.
    BadKey,
    /// The window has not opened at this instant; the text says when it opens.
    NotOpen(String),
    /// The window is over: closed, or the reservation was cancelled; the text says which.
    Closed(String),
    /// The listener's carrier is not one of the server's carriers for this slot.
    NotACarrier(String),
    /// The reservation names a camera, which the streamer pulls: nobody may push to it.
    PullsACamera,
}

impl Denied {
    pub const fn code(&self) -> RefusalCode {
        match self {
            Self::Unknown => RefusalCode::Unknown,
            Self::OtherServer(_) => RefusalCode::OtherServer,
            Self::BadKey => RefusalCode::BadKey,
            Self::NotOpen(_) => RefusalCode::NotOpen,
            Self::Closed(_) => RefusalCode::Closed,
            Self::NotACarrier(_) => RefusalCode::NotACarrier,
            Self::PullsACamera => RefusalCode::PullsACamera,
        }
    }

    /// A fixed label for metrics (the text may hold times and server ids).
    pub const fn label(&self) -> &'static str {
        self.code().as_str()
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => write!(f, "unknown reservation"),
            Self::OtherServer(server) => {
                write!(f, "the reservation is on server {server}, not this one")
            }
            Self::BadKey => write!(f, "wrong stream key"),
            Self::NotOpen(why) | Self::Closed(why) => write!(f, "ingest window not open: {why}"),
            Self::NotACarrier(carrier) => {
                write!(
                    f,
                    "carrier {carrier} is not a carrier of this reservation's server"
                )
            }
            Self::PullsACamera => write!(
                f,
                "this reservation pulls a camera; the server takes no publisher for it"
            ),
        }
    }
}

/// What a message did to the gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Older than what is known, or for another server: nothing changed.
    Ignored,
    /// The reservation's gate is (still) there, maybe with a new window or key. A live
    /// publisher should be checked again ([`Gates::still_admitted`]): the window may have
    /// moved away from now, or the key changed.
    Updated,
    /// The slot is over (`closed` or `cancelled`): disconnect its publisher, end its playlist.
    Ended,
}

#[derive(Clone, Debug)]
struct Gate {
    revision: u32,
    kind: SlotKind,
    opens_at: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    key_hash: [u8; 32],
    /// The key's Digest HA1 (lower-case hex), when the message carried one we could open.
    digest_ha1: Option<String>,
    carriers: Vec<String>,
    /// The camera to pull, for a pull reservation.
    camera: Option<Camera>,
    /// The reservation's title, for its viewers ([`Gates::title`]).
    title: Option<String>,
}

/// A camera to pull while its window is open, with its login opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Camera {
    pub url: String,
    pub transport: CameraTransport,
    /// `Err` says why a sealed login could not be opened (the pull cannot authenticate).
    pub login: Result<Option<CameraLogin>, String>,
}

#[derive(Clone, Debug)]
enum Entry {
    Live(Gate),
    /// Closed or cancelled, at this revision: kept so a late publisher hears "closed" (and
    /// the recording's viewers see the title).
    Over {
        revision: u32,
        kind: SlotKind,
        title: Option<String>,
    },
}

impl Entry {
    fn revision(&self) -> u32 {
        match self {
            Self::Live(gate) => gate.revision,
            Self::Over { revision, .. } => *revision,
        }
    }
}

/// The message's title, if it is one a page may show: within [`TITLE_MAX`] bytes and without
/// control characters, as the api takes titles. Anything else is not kept.
fn shown_title(msg: &SlotMessage) -> Option<String> {
    let title = msg.title.as_deref()?;
    if !page_safe(title) {
        tracing::warn!(reservation = %msg.reservation_id, "slot message with an unusable title");
        return None;
    }
    Some(title.to_string())
}

/// Whether `title` is one a page may show: within [`TITLE_MAX`] bytes, without control
/// characters.
pub(crate) fn page_safe(title: &str) -> bool {
    title.len() <= TITLE_MAX && !title.chars().any(char::is_control)
}

/// Other servers' reservations remembered at most (ids only).
const DIRECTORY_MAX: usize = 1_000_000;

#[derive(Debug)]
pub struct Gates {
    server_id: String,
    secret_key: Option<SecretKey>,
    entries: HashMap<String, Entry>,
    directory: HashMap<String, String>,
}

impl Gates {
    pub fn new(server_id: impl Into<String>, secret_key: Option<SecretKey>) -> Self {
        Self {
            server_id: server_id.into(),
            secret_key,
            entries: HashMap::new(),
            directory: HashMap::new(),
        }
    }

    /// Applies one slot message of this server.
    pub fn apply(&mut self, msg: &SlotMessage) -> Applied {
        if msg.server_id != self.server_id {
            self.note_elsewhere(&msg.reservation_id, &msg.server_id);
            return Applied::Ignored;
        }
        if let Some(entry) = self.entries.get(&msg.reservation_id) {
            // A revision is only ever followed by messages of the same or a higher one; a
            // lower one is a redelivery from before a change.
            if msg.revision < entry.revision() {
                return Applied::Ignored;
            }
            if let Entry::Over { revision, .. } = entry {
                if msg.revision == *revision {
                    return Applied::Ignored;
                }
            }
        }
        let title = shown_title(msg);
        if msg.kind.ends_the_slot() {
            self.entries.insert(
                msg.reservation_id.clone(),
                Entry::Over {
                    revision: msg.revision,
                    kind: msg.kind,
                    title,
                },
            );
            return Applied::Ended;
        }
        let Some(key_hash) = parse_hash(&msg.stream_key_hash) else {
            // A message we cannot check keys against lets nobody in.
            tracing::warn!(reservation = %msg.reservation_id, "slot message with a bad key hash");
            self.entries.insert(
                msg.reservation_id.clone(),
                Entry::Over {
                    revision: msg.revision,
                    kind: SlotKind::Cancelled,
                    title,
                },
            );
            return Applied::Ended;
        };
        let (carriers, camera) = match &msg.ingest {
            IngestMode::Push { carriers } => (carriers.clone(), None),
            IngestMode::Pull(source) => (Vec::new(), Some(self.open_camera(msg, source))),
        };
        let digest_ha1 = self.open_digest(msg);
        self.entries.insert(
            msg.reservation_id.clone(),
            Entry::Live(Gate {
                revision: msg.revision,
                kind: msg.kind,
                opens_at: msg.opens_at,
                closes_at: msg.closes_at,
                key_hash,
                digest_ha1,
                carriers,
                camera,
                title,
            }),
        );
        Applied::Updated
    }

    /// The reservation's title as its last message gave it, while the reservation is known
    /// (its slot, and a while after: until [`Gates::forget_over`]).
    pub fn title(&self, reservation_id: &str) -> Option<&str> {
        match self.entries.get(reservation_id)? {
            Entry::Live(gate) => gate.title.as_deref(),
            Entry::Over { title, .. } => title.as_deref(),
        }
    }

    /// The HA1 sealed in `msg`, if there is one and it opens with our key.
    fn open_digest(&self, msg: &SlotMessage) -> Option<String> {
        let sealed = msg.stream_key_digest.as_deref()?;
        let Some(secret_key) = &self.secret_key else {
            return None;
        };
        match secret_key.open(sealed, &msg.reservation_id) {
            Ok(ha1) => String::from_utf8(ha1).ok(),
            Err(err) => {
                tracing::warn!(reservation = %msg.reservation_id, %err,
                    "Digest credential unusable: is SLOTCAST_SECRET_KEY the api's?");
                None
            }
        }
    }

    /// The camera `source` names, its sealed login opened with our key.
    fn open_camera(&self, msg: &SlotMessage, source: &CameraSource) -> Camera {
        let login = match (&source.credentials, &self.secret_key) {
            (None, _) => Ok(None),
            (Some(_), None) => Err("the camera's login is sealed and this streamer has no \
                 SLOTCAST_SECRET_KEY to open it"
                .to_string()),
            (Some(sealed), Some(key)) => CameraLogin::open(key, sealed, &msg.reservation_id)
                .map(Some)
                .map_err(|_| {
                    "the camera's login does not open with this streamer's SLOTCAST_SECRET_KEY \
                     (is it the api's?)"
                        .to_string()
                }),
        };
        Camera {
            url: source.url.clone(),
            transport: source.transport,
            login,
        }
    }

    /// The cameras whose window is open at `now`, by reservation id: what should be pulled.
    pub fn cameras_open(&self, now: DateTime<Utc>) -> Vec<(String, Camera)> {
        self.entries
            .iter()
            .filter_map(|(id, entry)| match entry {
                Entry::Live(gate) if gate.check_open(now).is_ok() => {
                    gate.camera.clone().map(|camera| (id.clone(), camera))
                }
                _ => None,
            })
            .collect()
    }

    /// Remembers that `reservation_id` lives on another server (seen on the other servers' slot subjects).
    pub fn note_elsewhere(&mut self, reservation_id: &str, server_id: &str) {
        if server_id == self.server_id || self.directory.len() >= DIRECTORY_MAX {
            return;
        }
        self.directory
            .insert(reservation_id.to_string(), server_id.to_string());
    }

    /// Whether a publisher may start publishing now.
    pub fn admit(
        &self,
        carrier: &str,
        reservation_id: &str,
        credential: &Credential,
        now: DateTime<Utc>,
    ) -> Result<(), Denied> {
        let gate = match self.entries.get(reservation_id) {
            Some(Entry::Live(gate)) => gate,
            Some(Entry::Over { kind, .. }) => {
                let why = match kind {
                    SlotKind::Cancelled => "the reservation was cancelled",
                    _ => "the window has closed",
                };
                return Err(Denied::Closed(why.into()));
            }
            None => {
                return Err(match self.directory.get(reservation_id) {
                    Some(server) => Denied::OtherServer(server.clone()),
                    None => Denied::Unknown,
                })
            }
        };
        if gate.camera.is_some() {
            return Err(Denied::PullsACamera);
        }
        if !gate.accepts(credential) {
            return Err(Denied::BadKey);
        }
        if !gate.carriers.is_empty() && !gate.carriers.iter().any(|c| c == carrier) {
            return Err(Denied::NotACarrier(carrier.to_string()));
        }
        gate.check_open(now)
    }

    /// Whether a publisher admitted with `credential` may go on (after [`Applied::Updated`]
    /// or on a timer): the window still holds now and the key is still the reservation's key.
    pub fn still_admitted(
        &self,
        reservation_id: &str,
        credential: &Credential,
        now: DateTime<Utc>,
    ) -> Result<(), Denied> {
        match self.entries.get(reservation_id) {
            Some(Entry::Live(gate)) => {
                if !gate.accepts(credential) {
                    return Err(Denied::BadKey);
                }
                gate.check_open(now)
            }
            Some(Entry::Over { .. }) => Err(Denied::Closed("the window has closed".into())),
            None => Err(Denied::Unknown),
        }
    }

    /// Whether the reservation's gate is open at `now`.
    pub fn is_open(&self, reservation_id: &str, now: DateTime<Utc>) -> bool {
        matches!(self.entries.get(reservation_id), Some(Entry::Live(g)) if g.check_open(now).is_ok())
    }

    /// Whether a Digest answer for the reservation can be checked (its HA1 opened).
    pub fn has_digest(&self, reservation_id: &str) -> bool {
        matches!(self.entries.get(reservation_id), Some(Entry::Live(g)) if g.digest_ha1.is_some())
    }

    /// Whether a message of this server ever named the reservation.
    pub fn knows(&self, reservation_id: &str) -> bool {
        self.entries.contains_key(reservation_id)
    }

    /// Whether the slot is over for good (closed or cancelled).
    pub fn is_over(&self, reservation_id: &str) -> bool {
        matches!(self.entries.get(reservation_id), Some(Entry::Over { .. }))
    }

    /// Gates whose window ended by `now` without their `closed` message yet: marked over and
    /// returned, so their publishers are cut off on time.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut over = Vec::new();
        for (id, entry) in &mut self.entries {
            if let Entry::Live(gate) = entry {
                if now >= gate.closes_at {
                    over.push(id.clone());
                    *entry = Entry::Over {
                        revision: gate.revision,
                        kind: SlotKind::Closed,
                        title: gate.title.take(),
                    };
                }
            }
        }
        over
    }

    /// Forgets slots that ended; called rarely, so the map holds open and future slots and
    /// recently ended ones only.
    pub fn forget_over(&mut self) {
        self.entries.retain(|_, e| matches!(e, Entry::Live(_)));
    }
}

impl Gate {
    fn accepts(&self, credential: &Credential) -> bool {
        match credential {
            Credential::Key(key) => key_matches(key, &self.key_hash),
            Credential::Digest(answer) => self
                .digest_ha1
                .as_deref()
                .is_some_and(|ha1| answer.matches(ha1)),
        }
    }

    fn check_open(&self, now: DateTime<Utc>) -> Result<(), Denied> {
        // `opened` means the scheduler saw `opens_at` pass on the server clock; trust it even
        // if this clock lags a little. `changed` carries a window that may start later.
        let opened = self.kind == SlotKind::Opened || now >= self.opens_at;
        if !opened {
            return Err(Denied::NotOpen(format!(
                "it opens at {}",
                self.opens_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
        if now >= self.closes_at {
            return Err(Denied::Closed("the window has closed".into()));
        }
        Ok(())
    }
}

fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_hash).ok()?;
    bytes.try_into().ok()
}

/// Compares SHA-256(key) with the stored hash without an early exit.
fn key_matches(key: &str, hash: &[u8; 32]) -> bool {
    constant_time_eq(&Sha256::digest(key.as_bytes()), hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{at, key, pushed, slot};

    fn msg(kind: SlotKind, revision: u32, opens: i64, closes: i64, key: &str) -> SlotMessage {
        slot(
            "r1",
            kind,
            revision,
            (opens, closes),
            key,
            pushed(&["carrier-a", "carrier-b"]),
        )
    }

    fn titled(kind: SlotKind, revision: u32, title: &str) -> SlotMessage {
        SlotMessage {
            title: Some(title.into()),
            ..msg(kind, revision, 0, 100, "k")
        }
    }

    #[test]
    fn the_title_is_the_last_message_s_while_the_reservation_is_known() {
        let mut gates = Gates::new("s1", None);
        assert_eq!(gates.title("r1"), None);
        gates.apply(&titled(SlotKind::Scheduled, 1, "Evening show"));
        assert_eq!(gates.title("r1"), Some("Evening show"));
        // A message without one (from a scheduler before titles) says there is none.
        gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k"));
        assert_eq!(gates.title("r1"), None);
        gates.apply(&titled(SlotKind::Changed, 2, "Evening show — ライブ"));
        assert_eq!(gates.title("r1"), Some("Evening show — ライブ"));
        // An older revision changes nothing.
        gates.apply(&titled(SlotKind::Opened, 1, "stale"));
        assert_eq!(gates.title("r1"), Some("Evening show — ライブ"));
        // Closed on time, then by its message: the recording's viewers still see it.
        gates.expire(at(100));
        assert_eq!(gates.title("r1"), Some("Evening show — ライブ"));
        gates.apply(&titled(SlotKind::Closed, 3, "Evening show (ended)"));
        assert_eq!(gates.title("r1"), Some("Evening show (ended)"));
        gates.forget_over();
        assert_eq!(gates.title("r1"), None);
    }

    #[test]
    fn a_title_no_page_should_show_is_not_kept() {
        let mut gates = Gates::new("s1", None);
        for bad in [
            "x".repeat(TITLE_MAX + 1),
            "evening\nshow".into(),
            "\u{1b}[2J".into(),
        ] {
            gates.apply(&titled(SlotKind::Scheduled, 1, &bad));
            assert_eq!(gates.title("r1"), None, "{bad:?}");
            assert!(gates.knows("r1"), "the slot itself is taken");
        }
        gates.apply(&titled(SlotKind::Scheduled, 1, &"é".repeat(TITLE_MAX / 2)));
        assert_eq!(gates.title("r1").map(str::len), Some(TITLE_MAX));
    }

    #[test]
    fn a_slot_as_booked_opens_then_closes() {
        let mut gates = Gates::new("s1", None);
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(0)),
            Err(Denied::Unknown)
        );
        assert_eq!(
            gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k")),
            Applied::Updated
        );
        assert_eq!(gates.admit("carrier-a", "r1", &key("k"), at(10)), Ok(()));
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("x"), at(10)),
            Err(Denied::BadKey)
        );
        assert_eq!(
            gates.admit("carrier-z", "r1", &key("k"), at(10)),
            Err(Denied::NotACarrier("carrier-z".into()))
        );
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(100)),
            Err(Denied::Closed("the window has closed".into()))
        );
        assert_eq!(
            gates.apply(&msg(SlotKind::Closed, 1, 0, 100, "k")),
            Applied::Ended
        );
        assert!(gates.is_over("r1"));
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(50)),
            Err(Denied::Closed("the window has closed".into()))
        );
    }

    #[test]
    fn a_move_to_later_closes_until_opened_again() {
        let mut gates = Gates::new("s1", None);
        gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k"));
        assert_eq!(
            gates.apply(&msg(SlotKind::Changed, 2, 50, 150, "k")),
            Applied::Updated
        );
        assert!(gates.still_admitted("r1", &key("k"), at(10)).is_err());
        assert!(!gates.is_open("r1", at(10)));
        // Opens by time even before `opened:2` arrives, as the contract says for `changed`.
        assert!(gates.is_open("r1", at(60)));
        // A stale redelivery of revision 1 changes nothing.
        assert_eq!(
            gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k")),
            Applied::Ignored
        );
        assert!(!gates.is_open("r1", at(10)));
    }

    #[test]
    fn a_rotated_key_cuts_off_the_old_one() {
        let mut gates = Gates::new("s1", None);
        gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "old"));
        gates.apply(&msg(SlotKind::Changed, 2, 0, 100, "new"));
        assert_eq!(
            gates.still_admitted("r1", &key("old"), at(10)),
            Err(Denied::BadKey)
        );
        assert_eq!(gates.admit("carrier-b", "r1", &key("new"), at(10)), Ok(()));
    }

    #[test]
    fn expiry_closes_on_time_without_the_closed_message() {
        let mut gates = Gates::new("s1", None);
        gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k"));
        assert!(gates.expire(at(99)).is_empty());
        assert_eq!(gates.expire(at(100)), vec!["r1".to_string()]);
        assert!(!gates.is_open("r1", at(50)));
        // The late `closed` then changes nothing visible.
        assert_eq!(
            gates.apply(&msg(SlotKind::Closed, 1, 0, 100, "k")),
            Applied::Ignored
        );
    }

    #[test]
    fn other_servers_and_cancellations_are_told_apart() {
        let mut gates = Gates::new("s1", None);
        let mut other = msg(SlotKind::Opened, 1, 0, 100, "k");
        other.server_id = "s2".into();
        other.reservation_id = "r2".into();
        assert_eq!(gates.apply(&other), Applied::Ignored);
        assert_eq!(
            gates.admit("carrier-a", "r2", &key("k"), at(10)),
            Err(Denied::OtherServer("s2".into()))
        );
        gates.apply(&msg(SlotKind::Opened, 1, 0, 100, "k"));
        assert_eq!(
            gates.apply(&msg(SlotKind::Cancelled, 2, 0, 100, "k")),
            Applied::Ended
        );
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(10)),
            Err(Denied::Closed("the reservation was cancelled".into()))
        );
    }

    #[test]
    fn no_carriers_listed_means_any_listener() {
        let mut gates = Gates::new("s1", None);
        let mut m = msg(SlotKind::Opened, 1, 0, 100, "k");
        m.ingest = IngestMode::Push { carriers: vec![] };
        gates.apply(&m);
        assert_eq!(gates.admit("anything", "r1", &key("k"), at(1)), Ok(()));
    }

    #[test]
    fn a_scheduled_slot_tells_an_early_publisher_when_it_opens() {
        let mut gates = Gates::new("s1", None);
        assert_eq!(
            gates.apply(&msg(SlotKind::Scheduled, 1, 100, 200, "k")),
            Applied::Updated
        );
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(10)),
            Err(Denied::NotOpen("it opens at 2027-01-15T08:01:40Z".into()))
        );
        // The key is checked first: a wrong key learns nothing about the window.
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("x"), at(10)),
            Err(Denied::BadKey)
        );
        // By time alone, should `opened` be late.
        assert_eq!(gates.admit("carrier-a", "r1", &key("k"), at(100)), Ok(()));
        assert_eq!(
            gates.apply(&msg(SlotKind::Opened, 1, 100, 200, "k")),
            Applied::Updated
        );
        assert_eq!(gates.admit("carrier-a", "r1", &key("k"), at(150)), Ok(()));
    }

    #[test]
    fn a_cancel_before_the_window_says_cancelled() {
        let mut gates = Gates::new("s1", None);
        gates.apply(&msg(SlotKind::Scheduled, 1, 100, 200, "k"));
        assert_eq!(
            gates.apply(&msg(SlotKind::Cancelled, 2, 100, 200, "k")),
            Applied::Ended
        );
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(150)),
            Err(Denied::Closed("the reservation was cancelled".into()))
        );
    }

    fn digest_answer(stream_key: &str, nonce: &str) -> Credential {
        use slotcast_domain::secret::{digest_ha1, md5_hex};
        let ha2 = md5_hex(&["ANNOUNCE", "rtsp://h/live/r1"]);
        Credential::Digest(crate::rtsp::DigestAnswer {
            method: "ANNOUNCE".into(),
            uri: "rtsp://h/live/r1".into(),
            nonce: nonce.into(),
            response: md5_hex(&[&digest_ha1(stream_key), nonce, &ha2]),
            qop_auth: None,
        })
    }

    fn sealed(secret: &SecretKey, reservation: &str, stream_key: &str) -> Option<String> {
        let ha1 = slotcast_domain::secret::digest_ha1(stream_key);
        Some(secret.seal([3; 24], reservation, ha1.as_bytes()))
    }

    #[test]
    fn digest_answers_are_checked_against_the_sealed_ha1() {
        let secret = SecretKey::from_bytes([9; 32]);
        let mut gates = Gates::new("s1", Some(secret.clone()));
        let mut m = msg(SlotKind::Opened, 1, 0, 100, "k");
        m.stream_key_digest = sealed(&secret, "r1", "k");
        gates.apply(&m);
        assert!(gates.has_digest("r1"));
        assert_eq!(
            gates.admit("carrier-a", "r1", &digest_answer("k", "n1"), at(10)),
            Ok(())
        );
        assert_eq!(
            gates.admit("carrier-a", "r1", &digest_answer("x", "n1"), at(10)),
            Err(Denied::BadKey)
        );
        // A rotated key: the old Digest answer no longer holds.
        let mut rotated = msg(SlotKind::Changed, 2, 0, 100, "k2");
        rotated.stream_key_digest = sealed(&secret, "r1", "k2");
        gates.apply(&rotated);
        assert_eq!(
            gates.still_admitted("r1", &digest_answer("k", "n1"), at(20)),
            Err(Denied::BadKey)
        );
        assert_eq!(
            gates.still_admitted("r1", &digest_answer("k2", "n1"), at(20)),
            Ok(())
        );
    }

    #[test]
    fn digest_is_refused_without_the_secret_key_or_with_another_ones_seal() {
        let secret = SecretKey::from_bytes([9; 32]);
        let mut m = msg(SlotKind::Opened, 1, 0, 100, "k");
        m.stream_key_digest = sealed(&secret, "r1", "k");
        let mut without = Gates::new("s1", None);
        without.apply(&m);
        assert!(!without.has_digest("r1"));
        assert_eq!(
            without.admit("carrier-a", "r1", &digest_answer("k", "n"), at(10)),
            Err(Denied::BadKey)
        );
        assert_eq!(without.admit("carrier-a", "r1", &key("k"), at(10)), Ok(()));
        let mut other = Gates::new("s1", Some(SecretKey::from_bytes([1; 32])));
        other.apply(&m);
        assert_eq!(
            other.admit("carrier-a", "r1", &digest_answer("k", "n"), at(10)),
            Err(Denied::BadKey)
        );
        // Sealed for another reservation: copied into this one's message, it does not open.
        let mut copied = msg(SlotKind::Opened, 1, 0, 100, "k");
        copied.stream_key_digest = sealed(&secret, "r2", "k");
        let mut gates = Gates::new("s1", Some(secret));
        gates.apply(&copied);
        assert_eq!(
            gates.admit("carrier-a", "r1", &digest_answer("k", "n"), at(10)),
            Err(Denied::BadKey)
        );
    }

    #[test]
    fn a_camera_slot_is_pulled_while_open_and_admits_no_publisher() {
        let secret = SecretKey::from_bytes([9; 32]);
        let login = CameraLogin {
            username: "admin".into(),
            password: "secret".into(),
        };
        let camera = |credentials: Option<String>| {
            IngestMode::Pull(CameraSource {
                url: "rtsp://127.0.0.5:8554/cam".into(),
                transport: CameraTransport::Udp,
                credentials,
            })
        };
        let mut m = msg(SlotKind::Scheduled, 1, 100, 200, "k");
        m.ingest = camera(Some(login.seal(&secret, [4; 24], "r1")));
        let mut gates = Gates::new("s1", Some(secret.clone()));
        gates.apply(&m);
        assert_eq!(gates.cameras_open(at(50)), vec![]);
        let open = gates.cameras_open(at(100));
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].0, "r1");
        assert_eq!(open[0].1.transport, CameraTransport::Udp);
        assert_eq!(open[0].1.login, Ok(Some(login.clone())));
        assert_eq!(
            gates.admit("carrier-a", "r1", &key("k"), at(150)),
            Err(Denied::PullsACamera)
        );
        assert_eq!(gates.cameras_open(at(200)), vec![]);

        // Without the secret key, or with another one, the pull is told why it cannot log in.
        for other in [None, Some(SecretKey::from_bytes([1; 32]))] {
            let mut gates = Gates::new("s1", other);
            gates.apply(&m);
            let open = gates.cameras_open(at(150));
            let why = open[0].1.login.clone().unwrap_err();
            assert!(why.contains("SLOTCAST_SECRET_KEY"), "{why}");
        }
        // A camera without a login needs no key.
        m.ingest = camera(None);
        let mut gates = Gates::new("s1", None);
        gates.apply(&m);
        assert_eq!(gates.cameras_open(at(150))[0].1.login, Ok(None));
    }
}
