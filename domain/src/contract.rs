//! The NATS contract between the booking and the streaming side (docs/nats-contract.md):
//! subjects, message ids and payloads of the slot and ingest streams; and the refusal codes
//! the streamer tells publishers why it refused them with (docs/publishing.md).
//!
//! Contract: types and names only, shared by the scheduler (publisher of slot messages), the
//! api (consumer of both streams), the streamer and the terminal. No I/O. `SCHEMA` changes
//! only with a breaking payload change; additive fields keep it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spelled::spelled;

/// The payload schema version carried in every message.
pub const SCHEMA: u32 = 1;

spelled! {
    /// What a slot message announces.
    #[derive(PartialOrd, Ord)]
    pub enum SlotKind {
        /// A slot was booked, or changed before its window opened: the streamer learns the window
        /// and key ahead, so an early publisher is told when it opens (403), not "unknown" (404).
        /// It admits nobody before `opens_at`.
        Scheduled = "scheduled",
        /// The ingest window is open: accept the publisher (or pull the camera).
        Opened = "opened",
        /// The window has closed: disconnect, end the playlist.
        Closed = "closed",
        /// The window of an already opened slot moved, or its stream key changed: apply the
        /// payload's window and key; close the gate while now is outside the new window.
        Changed = "changed",
        /// An opened slot was cancelled: disconnect, end the playlist.
        Cancelled = "cancelled",
    }
}

impl SlotKind {
    /// Whether this message ends the slot for good (no later message follows it).
    pub const fn ends_the_slot(self) -> bool {
        matches!(self, Self::Closed | Self::Cancelled)
    }
}

/// How media reaches the streamer for a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum IngestMode {
    /// A publisher pushes by RTSP ANNOUNCE/RECORD on a carrier listener.
    Push {
        /// The server's carriers when the slot was booked: a streamer accepts the publisher
        /// only on a listener of one of these. Empty (a message from before this field) means
        /// any of the streamer's listeners.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        carriers: Vec<String>,
    },
    /// The streamer pulls a camera over the dedicated network while the window is open.
    Pull(CameraSource),
}

/// How the streamer asks a camera to send RTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraTransport {
    /// Interleaved on the RTSP connection (RFC 2326 section 10.12): one TCP connection, no
    /// loss, through any firewall.
    #[default]
    Tcp,
    /// RTP and RTCP on UDP port pairs.
    Udp,
}

impl CameraTransport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A camera a reservation names instead of a publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSource {
    /// `rtsp://host[:port]/path[?query]`, never with user info: credentials travel only
    /// sealed, in `credentials`.
    pub url: String,
    #[serde(default)]
    pub transport: CameraTransport,
    /// The camera's user name and password, sealed with the deployment's secret key for
    /// [`crate::secret::camera_context`] of the reservation id; absent for a camera without
    /// authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// The most bytes a reservation's title holds (the api refuses a longer one).
pub const TITLE_MAX: usize = 200;

/// One message on `SLOTCAST_SLOTS`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotMessage {
    pub schema: u32,
    pub kind: SlotKind,
    pub reservation_id: String,
    pub server_id: String,
    /// Bumped by every change to the slot (reschedule, key rotation, cancel).
    pub revision: u32,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Lower-case hex SHA-256 of the stream key valid for this revision.
    pub stream_key_hash: String,
    /// The stream key's Digest HA1 sealed with the deployment's secret key, for the
    /// reservation id (`slotcast_domain::secret`); absent without a secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_key_digest: Option<String>,
    pub ingest: IngestMode,
    /// The reservation's title, shown to its viewers; absent without one (and in messages
    /// from before titles travelled: older readers ignore it, as every unknown field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// When the boundary was due by the server clock.
    pub due_at: DateTime<Utc>,
    /// When the scheduler sent it, by the server clock.
    pub published_at: DateTime<Utc>,
    /// `published_at - due_at` in milliseconds: how late it went out.
    pub late_ms: f64,
}

/// One message on `SLOTCAST_AUDIT`, published by the api: a server's event-chain head
/// (`docs/audit.md`). Its `Nats-Msg-Id` is `<server_id>:<sequence>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    pub server_id: String,
    pub sequence: i64,
    /// Lower-case hex SHA-256: the `hash` of the server's event at `sequence`.
    pub hash: String,
    pub anchored_at: DateTime<Utc>,
}

impl AuditAnchor {
    /// An anchor from an `audit_anchors` row (the hash as stored, in bytes).
    pub fn from_row(
        (server_id, sequence, hash, anchored_at): (String, i64, Vec<u8>, DateTime<Utc>),
    ) -> Self {
        Self {
            server_id,
            sequence,
            hash: hex::encode(hash),
            anchored_at,
        }
    }
}

spelled! {
    /// What the streamer reports about a publisher or a pull.
    pub enum IngestKind {
        Connected = "connected",
        Disconnected = "disconnected",
        Failed = "failed",
        /// Publishers refused since the last such report, counted per reason in
        /// [`IngestMessage::refusals`]: at most one a minute per reservation.
        Refused = "refused",
    }
}

spelled! {
    /// How a publisher reached the streamer (a camera the streamer pulls is `rtsp`).
    pub enum IngestProtocol {
        Rtsp = "rtsp",
        Rtmp = "rtmp",
        Srt = "srt",
        Whip = "whip",
    }
}

/// One message on `SLOTCAST_INGEST`, published by the streamer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestMessage {
    pub schema: u32,
    pub kind: IngestKind,
    pub reservation_id: String,
    pub server_id: String,
    /// When it happened, by the streamer's server clock.
    pub at: DateTime<Utc>,
    /// The carrier (ingest network) the publisher came in on, or the camera was pulled over.
    #[serde(default)]
    pub carrier: Option<String>,
    /// The publisher's (or camera's) address, `host:port`.
    #[serde(default)]
    pub remote_addr: Option<String>,
    /// Codecs, e.g. `h264,aac`.
    #[serde(default)]
    pub codec: Option<String>,
    /// Why it disconnected or failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// How the publisher came in (or `rtsp` for a camera pulled); absent from streamers
    /// before it, and from `refused` reports (they count attempts of every protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IngestProtocol>,
    /// For `refused`: how many attempts were refused, per reason (a [`RefusalCode`]:
    /// `bad_key`, `not_open`, `busy`...), since the reservation's last such report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<BTreeMap<String, u64>>,
}

/// The most reasons one `refused` report may count (there are fewer [`RefusalCode`]s).
pub const REFUSAL_REASONS_MAX: usize = 16;

/// The RTSP response header in which the streamer names why it refused a publisher: one
/// [`RefusalCode`], so a publisher decides on the code, never on the reason's wording.
pub const REFUSAL_HEADER: &str = "Slotcast-Refusal";

spelled! {
    /// Why the streamer refused a publisher. The same code goes to the publisher (in
    /// [`REFUSAL_HEADER`]), into `refused` reports ([`IngestMessage::refusals`]) and into the
    /// streamer's refusal metric; its spelling is [`RefusalCode::as_str`] and nowhere else.
    pub enum RefusalCode {
        /// No slot message named the reservation: it is unknown, or this streamer has not heard
        /// of it yet (404).
        Unknown = "unknown",
        /// The reservation belongs to another distribution server (403).
        OtherServer = "other_server",
        /// The stream key is not the reservation's current key: mistyped, or rotated (401).
        BadKey = "bad_key",
        /// The window has not opened yet; the reason says when it opens (403).
        NotOpen = "not_open",
        /// The window is over: it closed, or the reservation was cancelled (403).
        Closed = "closed",
        /// The listener's carrier is not one of the carriers of the reservation's server (403).
        NotACarrier = "not_a_carrier",
        /// The reservation pulls a camera, so the server takes no publisher for it (403).
        PullsACamera = "pulls_a_camera",
        /// Another publisher is live on the reservation (403).
        Busy = "busy",
    }
}

impl RefusalCode {
    /// Whether the same publisher, asking again later, may be let in without anything being
    /// changed: the streamer may hear of the reservation or its opening, the other publisher
    /// may leave. The other refusals stand until the reservation or the publisher's setting
    /// changes (a new key, another server or carrier, a new booking).
    pub const fn worth_retrying(self) -> bool {
        matches!(self, Self::Unknown | Self::NotOpen | Self::Busy)
    }

    /// The HTTP-like status a refusal is answered with (RTSP's and WHIP's, both by this):
    /// 404 when the reservation is not known, 401 for a key that is not its key, 403 for the
    /// rest.
    pub const fn status(self) -> u16 {
        match self {
            Self::Unknown => 404,
            Self::BadKey => 401,
            Self::OtherServer
            | Self::NotOpen
            | Self::Closed
            | Self::NotACarrier
            | Self::PullsACamera
            | Self::Busy => 403,
        }
    }

    /// The reject code an SRT listener refuses with: SRT carries a number only, so each
    /// refusal has its own, in SRT's predefined range (1000 + an HTTP-like status).
    pub const fn srt_reject(self) -> i32 {
        match self {
            Self::Unknown => 1404,
            Self::OtherServer => 1421,
            Self::BadKey => 1401,
            Self::NotOpen => 1425,
            Self::Closed => 1410,
            Self::NotACarrier => 1403,
            Self::PullsACamera => 1405,
            Self::Busy => 1409,
        }
    }

    /// The refusal an SRT reject code stands for ([`RefusalCode::srt_reject`]).
    pub fn from_srt_reject(code: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.srt_reject() == code)
    }
}

/// SRT reject codes for what is refused before the reservation is known: a stream id not of
/// the form `#!::r=<reservation_id>,k=<stream_key>`...
pub const SRT_REJECT_BAD_STREAM_ID: i32 = 1400;
/// ...too many callers from one address...
pub const SRT_REJECT_TOO_MANY: i32 = 1429;
/// ...and a streamer not yet following the slot clock.
pub const SRT_REJECT_NOT_READY: i32 = 1503;

/// Limits on what the api accepts from the ingest stream, so a faulty streamer cannot write
/// unbounded text into the history.
pub const INGEST_TEXT_MAX: usize = 512;

/// Subject and stream names under one prefix (default `slotcast`), so that several
/// deployments, or tests, share a NATS server without seeing each other's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub const DEFAULT_PREFIX: &'static str = "slotcast";

    /// `prefix` must be one NATS subject token: ASCII letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> Option<Self> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self {
            prefix: prefix.to_string(),
        })
    }

    fn stream(&self, what: &str) -> String {
        let base: String = self
            .prefix
            .chars()
            .map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("{base}_{what}")
    }

    /// `SLOTCAST_SLOTS` for the default prefix.
    pub fn slots_stream(&self) -> String {
        self.stream("SLOTS")
    }

    /// `SLOTCAST_INGEST` for the default prefix.
    pub fn ingest_stream(&self) -> String {
        self.stream("INGEST")
    }

    /// `SLOTCAST_AUDIT` for the default prefix.
    pub fn audit_stream(&self) -> String {
        self.stream("AUDIT")
    }

    /// `slotcast.audit.>`: every server's chain anchors.
    pub fn audit_subjects(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }

    /// `slotcast.audit.<server_id>`: one server's chain anchors.
    pub fn audit_subject(&self, server_id: &str) -> String {
        format!("{}.audit.{server_id}", self.prefix)
    }

    /// `slotcast.slot.>`: every slot subject.
    pub fn slot_subjects(&self) -> String {
        format!("{}.slot.>", self.prefix)
    }

    /// `slotcast.slot.<server_id>.>`: one server's slots (what its streamer consumes).
    pub fn server_slot_subjects(&self, server_id: &str) -> String {
        format!("{}.slot.{server_id}.>", self.prefix)
    }

    pub fn slot_subject(&self, server_id: &str, reservation_id: &str) -> String {
        format!("{}.slot.{server_id}.{reservation_id}", self.prefix)
    }

    pub fn ingest_subjects(&self) -> String {
        format!("{}.ingest.>", self.prefix)
    }

    pub fn ingest_subject(&self, server_id: &str, reservation_id: &str) -> String {
        format!("{}.ingest.{server_id}.{reservation_id}", self.prefix)
    }

    /// `(server_id, reservation_id)` from a slot or ingest subject of this prefix.
    pub fn parse_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let rest = rest
            .strip_prefix("slot.")
            .or_else(|| rest.strip_prefix("ingest."))?;
        let (server, reservation) = rest.split_once('.')?;
        let token = |s: &str| !s.is_empty() && !s.contains(['.', '*', '>']);
        (token(server) && token(reservation)).then_some((server, reservation))
    }
}

impl Default for Names {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_string(),
        }
    }
}

/// A slot message's JetStream message id: JetStream drops a second message with the same id
/// within the stream's duplicate window, which makes replicas publish each boundary once.
pub fn slot_message_id(reservation_id: &str, kind: SlotKind, revision: u32) -> String {
    format!("{reservation_id}:{}:{revision}", kind.as_str())
}

/// Where a consumed message sits in its stream: which incarnation of the stream (its creation
/// time: a recreated stream restarts its sequences) and the message's sequence in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamCursor {
    /// The stream's creation time in Unix milliseconds.
    pub epoch_ms: i64,
    pub sequence: u64,
}

impl StreamCursor {
    /// Whether both positions are in the same incarnation of the stream, so their sequences
    /// compare. Creation times are only told apart, never ordered: a recreated stream may
    /// carry an earlier one (a clock step on the NATS server).
    pub fn same_stream(&self, other: &Self) -> bool {
        self.epoch_ms == other.epoch_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_the_documented_ones() {
        let n = Names::default();
        assert_eq!(n.slots_stream(), "SLOTCAST_SLOTS");
        assert_eq!(n.ingest_stream(), "SLOTCAST_INGEST");
        assert_eq!(n.slot_subject("s1", "r1"), "slotcast.slot.s1.r1");
        assert_eq!(n.server_slot_subjects("s1"), "slotcast.slot.s1.>");
        assert_eq!(n.ingest_subject("s1", "r1"), "slotcast.ingest.s1.r1");
        assert_eq!(slot_message_id("r1", SlotKind::Opened, 3), "r1:opened:3");
    }

    #[test]
    fn a_prefix_gives_disjoint_names() {
        let n = Names::new("t-42").unwrap();
        assert_eq!(n.slots_stream(), "T_42_SLOTS");
        assert_eq!(n.slot_subject("s", "r"), "t-42.slot.s.r");
        assert_eq!(n.parse_subject("t-42.ingest.s.r"), Some(("s", "r")));
        assert_eq!(n.parse_subject("slotcast.ingest.s.r"), None);
        assert_eq!(n.parse_subject("t-42.ingest.s"), None);
        assert_eq!(n.parse_subject("t-42.ingest.s.r.x"), None);
        assert_eq!(n.parse_subject("t-42.other.s.r"), None);
        assert!(Names::new("a.b").is_none());
        assert!(Names::new("").is_none());
        assert!(Names::new("a>").is_none());
    }

    #[test]
    fn refusal_codes_are_the_documented_words_and_parse_back() {
        // History already counts these words: they change only with docs/publishing.md.
        assert_eq!(
            RefusalCode::WORDS,
            [
                "unknown",
                "other_server",
                "bad_key",
                "not_open",
                "closed",
                "not_a_carrier",
                "pulls_a_camera",
                "busy"
            ]
        );
        for &code in RefusalCode::ALL {
            assert_eq!(code.as_str().parse::<RefusalCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
            // Over SRT, each refusal has a reject code of its own, apart from the others'.
            assert_eq!(RefusalCode::from_srt_reject(code.srt_reject()), Some(code));
            assert!((1400..1500).contains(&code.srt_reject()));
        }
        for other in [
            SRT_REJECT_BAD_STREAM_ID,
            SRT_REJECT_TOO_MANY,
            SRT_REJECT_NOT_READY,
            2000,
        ] {
            assert_eq!(RefusalCode::from_srt_reject(other), None);
        }
        for unknown in ["", "Busy", "busy ", "opens_later"] {
            let err = unknown.parse::<RefusalCode>().unwrap_err();
            assert_eq!(err.given, unknown);
        }
    }

    #[test]
    fn only_refusals_that_can_clear_by_themselves_are_worth_retrying() {
        let retried: Vec<RefusalCode> = RefusalCode::ALL
            .iter()
            .copied()
            .filter(|code| code.worth_retrying())
            .collect();
        assert_eq!(
            retried,
            [
                RefusalCode::Unknown,
                RefusalCode::NotOpen,
                RefusalCode::Busy
            ]
        );
    }

    #[test]
    fn cursors_of_a_recreated_stream_do_not_compare() {
        let old = StreamCursor {
            epoch_ms: 2000,
            sequence: 5000,
        };
        let new = StreamCursor {
            epoch_ms: 1000,
            sequence: 1,
        };
        assert!(!new.same_stream(&old));
        assert!(old.same_stream(&StreamCursor { sequence: 1, ..old }));
    }

    #[test]
    fn slot_messages_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = SlotMessage {
            schema: SCHEMA,
            kind: SlotKind::Opened,
            reservation_id: "r".into(),
            server_id: "s".into(),
            revision: 1,
            opens_at: t,
            closes_at: t,
            start: t,
            end: t,
            stream_key_hash: "ab".into(),
            stream_key_digest: None,
            ingest: IngestMode::Push { carriers: vec![] },
            title: Some("Evening show".into()),
            due_at: t,
            published_at: t,
            late_ms: 1.5,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["kind"], "opened");
        assert_eq!(json["ingest"]["mode"], "push");
        assert_eq!(json["title"], "Evening show");
        assert_eq!(serde_json::from_value::<SlotMessage>(json).unwrap(), m);
    }

    #[test]
    fn a_slot_message_without_a_title_reads_and_is_written_as_before_titles() {
        // A message as a scheduler from before titles sent it.
        let before = r#"{"schema":1,"kind":"scheduled","reservation_id":"r","server_id":"s","revision":1,"opens_at":"2026-11-21T10:00:00Z","closes_at":"2026-11-21T10:30:00Z","start":"2026-11-21T10:00:30Z","end":"2026-11-21T10:30:00Z","stream_key_hash":"ab","ingest":{"mode":"push","carriers":["carrier-a"]},"due_at":"2026-11-21T09:59:00Z","published_at":"2026-11-21T09:59:00.001Z","late_ms":1.0}"#;
        let m: SlotMessage = serde_json::from_str(before).unwrap();
        assert_eq!(m.title, None);
        assert_eq!(m.kind, SlotKind::Scheduled);
        // Without a title nothing is added: the payload (and so its signature) is as before.
        assert_eq!(serde_json::to_string(&m).unwrap(), before);
        // A reader that knows no titles (a streamer from before them) reads one with a
        // title: an unknown field is ignored.
        #[derive(Deserialize)]
        struct Older {
            kind: SlotKind,
            revision: u32,
        }
        let with = SlotMessage {
            title: Some("Evening show".into()),
            ..m
        };
        let older: Older = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!((older.kind, older.revision), (SlotKind::Scheduled, 1));
    }
}
