//! The streamer's shared state: gates, live publishers, channels, viewers.
//!
//! Contract: one cheap-clone [`Hub`] shared by the RTSP edge, the NATS feed and the HTTP
//! side. Every lock is a std `Mutex` held for a few map operations and never across an await;
//! locks are taken in the order gates → sessions → pulls → channels → unfinished and never
//! the other way. Camera pulls are started and stopped here, from the gates, and run in
//! `camera`.
//! Decisions that end a publisher (window over, key rotated, a newer publisher took over) are
//! made here and delivered through the session's cancellation token with a reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use slotcast_domain::contract::{IngestKind, IngestMessage, SCHEMA};
use slotcast_domain::time::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{Channel, ChannelState, DiskWrite};
use crate::config::StreamerConfig;
use crate::gates::{Applied, Denied, Gates};
use crate::hush::Hush;
use crate::metrics::{AuthLabel, Metrics};
use crate::playlist::Playlist;
use crate::refusals::Rollup;
use crate::rtsp::Credential;
use slotcast_domain::contract::SlotMessage;

/// Files of one reservation's recording to write.
#[derive(Debug)]
pub struct DiskBatch {
    pub reservation_id: String,
    pub writes: Vec<DiskWrite>,
}

/// A channel and the version watch that blocked requests wait on.
#[derive(Debug)]
pub struct ChannelHandle {
    channel: Mutex<Channel>,
    changed: watch::Sender<u64>,
    /// The playlist as last rendered, with the channel version it was rendered at: rendered
    /// once per change, served to every viewer from here without the channel's lock.
    rendered: Mutex<Option<Rendered>>,
}

/// A rendered playlist: `None` while it lists no segment.
type Rendered = (u64, Option<Bytes>);

impl ChannelHandle {
    fn new(channel: Channel) -> Self {
        Self {
            channel: Mutex::new(channel),
            changed: watch::channel(0).0,
            rendered: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Channel> {
        lock(&self.channel)
    }

    /// The playlist at channel version `version` or later: the rendering kept, or a new one
    /// (rendered under the channel's lock, once per version, then kept).
    pub fn playlist(&self, version: u64) -> Option<Bytes> {
        if let Some((at, body)) = lock(&self.rendered).as_ref() {
            if *at >= version {
                return body.clone();
            }
        }
        let (at, body) = {
            let channel = self.lock();
            (
                channel.version(),
                channel
                    .playlist()
                    .map(|text| Bytes::from(text.into_bytes())),
            )
        };
        let mut kept = lock(&self.rendered);
        if kept.as_ref().is_none_or(|(was, _)| *was < at) {
            *kept = Some((at, body.clone()));
        }
        body
    }

    /// Tells waiting requests that the channel changed.
    pub fn notify(&self, version: u64) {
        self.changed.send_replace(version);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A publisher connection known to the hub.
#[derive(Debug)]
pub struct SessionEntry {
    pub id: u64,
    pub carrier: String,
    pub remote: SocketAddr,
    /// Set once, when RECORD goes through.
    recording: OnceLock<Recording>,
    /// Milliseconds since the hub started, at the last request or packet.
    last_activity_ms: AtomicU64,
    pub cancel: CancellationToken,
    reason: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Recording {
    reservation_id: String,
    credential: Credential,
}

impl SessionEntry {
    /// The reservation it records, once recording.
    pub fn recording(&self) -> Option<&str> {
        self.recording.get().map(|r| r.reservation_id.as_str())
    }

    fn records(&self, reservation_id: &str) -> bool {
        self.recording() == Some(reservation_id)
    }

    /// Why the hub ended this session, once it has.
    pub fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }
}

struct Sessions {
    by_id: HashMap<u64, Arc<SessionEntry>>,
    next_id: u64,
}

/// Stream status for the watch page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Waiting,
    Live,
    Ended,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<StreamerConfig>,
    clock: Arc<dyn Clock>,
    started: Instant,
    gates: Mutex<Gates>,
    sessions: Mutex<Sessions>,
    channels: Mutex<HashMap<String, Arc<ChannelHandle>>>,
    /// Recordings a stopped streamer left unfinished, by reservation id: a channel made for
    /// one goes on from it; one whose slot is over (or unknown) gets its end written.
    unfinished: Mutex<HashMap<String, Playlist>>,
    viewers: Mutex<HashMap<(String, IpAddr), Instant>>,
    metrics: Metrics,
    /// Log lines strangers can cause (refusals), one per kind per [`HUSH_PERIOD`].
    hush: Hush,
    /// Refused attempts waiting to be reported, one report a minute per reservation at most.
    refusals: Mutex<Rollup>,
    reports: mpsc::Sender<IngestMessage>,
    disk: mpsc::Sender<DiskBatch>,
    gates_ready: AtomicBool,
    /// Cameras being pulled, by reservation id.
    pulls: Mutex<HashMap<String, PullHandle>>,
    /// Fires at shutdown; every pull stops with it.
    shutdown: CancellationToken,
    /// The pull tasks, so the shutdown can wait for their last media and reports.
    pull_tasks: TaskTracker,
}

/// A running camera pull, as the hub stops it.
#[derive(Clone, Debug, Default)]
pub struct PullHandle {
    pub stop: CancellationToken,
    /// Why the hub stopped it, once it has.
    reason: Arc<Mutex<Option<String>>>,
}

impl PullHandle {
    fn stop_because(&self, why: &str) {
        lock(&self.reason).get_or_insert_with(|| why.to_string());
        self.stop.cancel();
    }

    /// Why the hub stopped the pull, once it has.
    pub fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }
}

/// Viewer entries kept at most (a flood of addresses must not grow memory).
const VIEWERS_MAX: usize = 100_000;
const VIEWER_WINDOW: Duration = Duration::from_secs(10);
/// How long a recording's final writes wait for room in a full disk queue.
const END_WRITE_WAIT: Duration = Duration::from_secs(10);
/// At most one log line per kind of refusal this often.
const HUSH_PERIOD: Duration = Duration::from_secs(10);
/// At most one `refused` report per reservation this often.
const REFUSALS_PERIOD: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere, which is a bug; the data is still usable
    // (every critical section leaves it consistent), so carry on rather than cascade.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    pub fn new(
        config: Arc<StreamerConfig>,
        clock: Arc<dyn Clock>,
        reports: mpsc::Sender<IngestMessage>,
        disk: mpsc::Sender<DiskBatch>,
        shutdown: CancellationToken,
    ) -> Self {
        let gates = Gates::new(config.server_id.clone(), config.secret_key.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                clock,
                started: Instant::now(),
                gates: Mutex::new(gates),
                sessions: Mutex::new(Sessions {
                    by_id: HashMap::new(),
                    next_id: 1,
                }),
                channels: Mutex::new(HashMap::new()),
                unfinished: Mutex::new(HashMap::new()),
                viewers: Mutex::new(HashMap::new()),
                metrics: Metrics::new(),
                hush: Hush::new(HUSH_PERIOD),
                refusals: Mutex::new(Rollup::new(REFUSALS_PERIOD)),
                reports,
                disk,
                gates_ready: AtomicBool::new(false),
                pulls: Mutex::new(HashMap::new()),
                shutdown,
                pull_tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn config(&self) -> &StreamerConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether a log line of `kind` that a stranger caused may be written now (and how many
    /// were held back since the last).
    pub fn hush(&self, kind: &'static str) -> Option<u64> {
        self.inner.hush.allow(kind, Instant::now())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// When the hub started: the origin of the ingest poll grid.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    fn ms_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.started).as_millis())
            .unwrap_or(u64::MAX)
    }

    /// The gates are (or are no longer) rebuilt from NATS. Once they are, an unfinished
    /// recording of a slot they do not know (its messages aged out of the stream) is ended:
    /// nothing will ever open it again.
    pub fn set_gates_ready(&self, ready: bool) {
        self.inner.gates_ready.store(ready, Ordering::Relaxed);
        if !ready {
            return;
        }
        let unknown: Vec<String> = {
            let gates = lock(&self.inner.gates);
            lock(&self.inner.unfinished)
                .keys()
                .filter(|id| !gates.knows(id))
                .cloned()
                .collect()
        };
        for id in unknown {
            self.end_unfinished(&id);
        }
    }

    /// Whether the gates have been rebuilt from NATS and are following it.
    pub fn gates_ready(&self) -> bool {
        self.inner.gates_ready.load(Ordering::Relaxed)
    }

    // ---- publishers ---------------------------------------------------------------------

    /// A new RTSP connection on `carrier`.
    pub fn register_session(&self, carrier: &str, remote: SocketAddr) -> Arc<SessionEntry> {
        let mut sessions = lock(&self.inner.sessions);
        let id = sessions.next_id;
        sessions.next_id += 1;
        let entry = Arc::new(SessionEntry {
            id,
            carrier: carrier.to_string(),
            remote,
            recording: OnceLock::new(),
            last_activity_ms: AtomicU64::new(self.ms_since_start(Instant::now())),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        sessions.by_id.insert(id, entry.clone());
        self.inner.metrics.connections.inc();
        entry
    }

    pub fn touch(&self, session: &SessionEntry, now: Instant) {
        session
            .last_activity_ms
            .store(self.ms_since_start(now), Ordering::Relaxed);
    }

    /// Whether the reservation's key can be checked by Digest here.
    pub fn offers_digest(&self, reservation_id: &str) -> bool {
        lock(&self.inner.gates).has_digest(reservation_id)
    }

    /// May this publisher publish? Checks the gate, then that no other publisher is live on
    /// the reservation (one that went silent past the session timeout does not count).
    pub fn admit(
        &self,
        session: &SessionEntry,
        reservation_id: &str,
        credential: &Credential,
        now: Instant,
    ) -> Result<(), Refused> {
        let at = self.now();
        lock(&self.inner.gates)
            .admit(&session.carrier, reservation_id, credential, at)
            .map_err(Refused::Gate)?;
        let timeout_ms =
            u64::try_from(self.inner.config.session_timeout.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.ms_since_start(now);
        let sessions = lock(&self.inner.sessions);
        let busy = sessions.by_id.values().any(|other| {
            other.id != session.id
                && other.records(reservation_id)
                && now_ms.saturating_sub(other.last_activity_ms.load(Ordering::Relaxed))
                    < timeout_ms
        });
        if busy {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// RECORD went through: the session is the reservation's publisher from now on. A stale
    /// publisher of the same reservation is cut off. Returns the channel to feed.
    pub fn start_recording(
        &self,
        session: &SessionEntry,
        reservation_id: &str,
        credential: Credential,
        codecs: &str,
    ) -> Arc<ChannelHandle> {
        {
            let sessions = lock(&self.inner.sessions);
            for other in sessions.by_id.values() {
                if other.id != session.id && other.records(reservation_id) {
                    *lock(&other.reason) =
                        Some("a new publisher took over after this one went silent".into());
                    other.cancel.cancel();
                }
            }
            let auth = match credential {
                Credential::Key(_) => "key",
                Credential::Digest(_) => "digest",
            };
            self.metrics()
                .publishers
                .get_or_create(&AuthLabel { auth })
                .inc();
            let recording = Recording {
                reservation_id: reservation_id.to_string(),
                credential,
            };
            if session.recording.set(recording).is_err() {
                tracing::warn!(session = session.id, "RECORD twice on one session");
            }
        }
        self.inner.metrics.sessions.inc();
        self.report(
            session,
            reservation_id,
            IngestKind::Connected,
            Some(codecs.to_string()),
            None,
        );
        self.channel(reservation_id)
    }

    /// The connection is gone. A recording publisher is reported `disconnected` (`failed` if
    /// `failure`), and if its slot is over, the channel ends.
    pub fn end_session(&self, id: u64, reason: &str, failure: bool) {
        let entry = lock(&self.inner.sessions).by_id.remove(&id);
        self.inner.metrics.connections.dec();
        let Some(entry) = entry else { return };
        let Some(reservation_id) = entry.recording() else {
            return;
        };
        self.inner.metrics.sessions.dec();
        let kind = if failure {
            IngestKind::Failed
        } else {
            IngestKind::Disconnected
        };
        let reason = entry.reason().unwrap_or_else(|| reason.to_string());
        self.report(&entry, reservation_id, kind, None, Some(reason));
        let over = lock(&self.inner.gates).is_over(reservation_id);
        if over {
            self.end_channel(reservation_id);
        }
    }

    fn report(
        &self,
        entry: &SessionEntry,
        reservation_id: &str,
        kind: IngestKind,
        codec: Option<String>,
        reason: Option<String>,
    ) {
        let what = Report {
            kind,
            carrier: Some(entry.carrier.clone()),
            remote_addr: entry.remote.to_string(),
            codec,
            reason,
        };
        self.send_report(reservation_id, what);
    }

    /// What a camera pull did: `camera` is the camera's `host:port`.
    pub fn report_pull(
        &self,
        reservation_id: &str,
        kind: IngestKind,
        camera: &str,
        codec: Option<String>,
        reason: Option<String>,
    ) {
        match kind {
            IngestKind::Connected => {
                self.inner.metrics.sessions.inc();
                self.metrics()
                    .publishers
                    .get_or_create(&AuthLabel { auth: "camera" })
                    .inc();
            }
            IngestKind::Disconnected => {
                self.inner.metrics.sessions.dec();
            }
            IngestKind::Failed => self.inner.metrics.refused("camera_failed"),
            // Pulls are never refused: nobody knocks.
            IngestKind::Refused => {}
        }
        let what = Report {
            kind,
            carrier: None,
            remote_addr: camera.to_string(),
            codec,
            reason,
        };
        self.send_report(reservation_id, what);
    }

    fn send_report(&self, reservation_id: &str, what: Report) {
        let message = IngestMessage {
            schema: SCHEMA,
            kind: what.kind,
            reservation_id: reservation_id.to_string(),
            server_id: self.inner.config.server_id.clone(),
            at: self.now(),
            carrier: what.carrier,
            remote_addr: Some(what.remote_addr),
            codec: what.codec,
            reason: what.reason,
            refusals: None,
        };
        if let Err(e) = self.inner.reports.try_send(message) {
            // The reporter is far behind NATS (or stopped): the history misses this one.
            tracing::warn!(error = %e, "ingest report dropped: the report queue is full");
        }
    }

    /// A refused publish attempt: a metric, a log line at most every [`HUSH_PERIOD`], and a
    /// count in the reservation's next `refused` report ([`Hub::flush_refusals`]).
    pub fn report_refusal(&self, session: &SessionEntry, reservation_id: &str, refused: &Refused) {
        let reason = refused.label();
        self.inner.metrics.refused(reason);
        if let Some(held_back) = self.hush(reason) {
            tracing::info!(carrier = %session.carrier, remote = %session.remote,
                reservation = reservation_id, why = %refused, held_back,
                "publisher refused");
        }
        // Only this server's reservations have a history here to land in.
        if lock(&self.inner.gates).knows(reservation_id) {
            lock(&self.inner.refusals).record(reservation_id, reason);
        }
    }

    /// Sends the `refused` reports that are due. They take at most half the report queue, so
    /// a `connected` or `disconnected` report always finds room; what does not go out now
    /// waits for the next call, its counts kept.
    pub fn flush_refusals(&self) {
        let reports = &self.inner.reports;
        if reports.capacity() <= reports.max_capacity() / 2 {
            return;
        }
        let due = lock(&self.inner.refusals).due(Instant::now());
        for (reservation_id, counts) in due {
            let message = IngestMessage {
                schema: SCHEMA,
                kind: IngestKind::Refused,
                reservation_id,
                server_id: self.inner.config.server_id.clone(),
                at: self.now(),
                carrier: None,
                remote_addr: None,
                codec: None,
                reason: None,
                refusals: Some(counts),
            };
            if let Err(e) = reports.try_send(message) {
                tracing::warn!(error = %e, "refusal report dropped: the report queue is full");
            }
        }
    }

    // ---- slots ------------------------------------------------------------------------

    /// One slot message from NATS.
    pub fn apply_slot(&self, msg: &SlotMessage) {
        let applied = lock(&self.inner.gates).apply(msg);
        match applied {
            Applied::Ignored => {}
            Applied::Ended => {
                let why = if msg.kind == slotcast_domain::contract::SlotKind::Cancelled {
                    "the reservation was cancelled"
                } else {
                    "the window closed"
                };
                self.slot_over(&msg.reservation_id, why);
            }
            Applied::Updated => self.recheck(&msg.reservation_id),
        }
        self.reconcile_pulls();
    }

    /// Closes gates whose window has passed by the server clock; returns how many.
    pub fn expire(&self) -> usize {
        let over = lock(&self.inner.gates).expire(self.now());
        for id in &over {
            self.slot_over(id, "the window closed");
        }
        self.reconcile_pulls();
        over.len()
    }

    /// Every live publisher still holds a gate (a `changed` moved the window or the key).
    fn recheck(&self, reservation_id: &str) {
        let now = self.now();
        let gates = lock(&self.inner.gates);
        let sessions = lock(&self.inner.sessions);
        for s in sessions.by_id.values() {
            let Some(recording) = s.recording.get() else {
                continue;
            };
            if recording.reservation_id == reservation_id {
                if let Err(denied) =
                    gates.still_admitted(reservation_id, &recording.credential, now)
                {
                    *lock(&s.reason) = Some(denied.to_string());
                    s.cancel.cancel();
                }
            }
        }
    }

    /// The slot is over: cut its publisher off (it ends the channel once its last media is
    /// in), or end the channel now if nobody is publishing.
    fn slot_over(&self, reservation_id: &str, why: &str) {
        let publishing = {
            let sessions = lock(&self.inner.sessions);
            let mut any = false;
            for s in sessions.by_id.values() {
                if s.records(reservation_id) {
                    *lock(&s.reason) = Some(why.to_string());
                    s.cancel.cancel();
                    any = true;
                }
            }
            any
        };
        let pulling = lock(&self.inner.pulls).remove(reservation_id);
        if let Some(pull) = &pulling {
            pull.stop_because(why);
        }
        if !publishing && pulling.is_none() {
            self.end_channel(reservation_id);
        }
    }

    // ---- cameras ------------------------------------------------------------------------

    /// Pulls every camera whose window is open and stops those whose window is not (after
    /// each slot message, and on the expiry tick).
    pub fn reconcile_pulls(&self) {
        // The gates stay locked until the pulls match them, so a slot that ends meanwhile
        // (on the feed's task) cannot get a pull started after its end.
        let gates = lock(&self.inner.gates);
        let wanted = gates.cameras_open(self.now());
        let mut pulls = lock(&self.inner.pulls);
        pulls.retain(|id, pull| {
            let keep = wanted.iter().any(|(w, _)| w == id);
            if !keep {
                pull.stop_because("the window is not open any more");
            }
            keep
        });
        for (id, camera) in wanted {
            if pulls.contains_key(&id) {
                continue;
            }
            let handle = PullHandle {
                stop: self.inner.shutdown.child_token(),
                reason: Arc::default(),
            };
            pulls.insert(id.clone(), handle.clone());
            self.inner.pull_tasks.spawn(crate::camera::guarded_pull(
                self.clone(),
                id,
                camera,
                handle,
            ));
        }
    }

    /// Waits (up to `limit`) for every pull task to hang up, after the shutdown stopped them.
    pub async fn pulls_done(&self, limit: Duration) {
        self.inner.pull_tasks.close();
        let _ = tokio::time::timeout(limit, self.inner.pull_tasks.wait()).await;
    }

    /// A pull task has hung up for good: if its slot is over, the channel ends.
    pub fn pull_ended(&self, reservation_id: &str) {
        let over = lock(&self.inner.gates).is_over(reservation_id);
        if over {
            self.end_channel(reservation_id);
        }
    }

    fn end_channel(&self, reservation_id: &str) {
        let handle = lock(&self.inner.channels).get(reservation_id).cloned();
        let Some(handle) = handle else {
            self.end_unfinished(reservation_id);
            return;
        };
        let mut writes = Vec::new();
        let version = {
            let mut channel = handle.lock();
            channel.end(&mut writes);
            self.queue_end(reservation_id, writes);
            channel.version()
        };
        handle.notify(version);
    }

    /// A recording left unfinished whose slot is over without a publisher coming back: its
    /// final playlist (what it holds, and the end) is written, so players see it ended.
    fn end_unfinished(&self, reservation_id: &str) {
        let Some(mut recorded) = lock(&self.inner.unfinished).remove(reservation_id) else {
            return;
        };
        recorded.end();
        tracing::info!(
            reservation = reservation_id,
            "an unfinished recording is ended: its slot is over"
        );
        let playlist = recorded.render();
        self.queue_end(
            reservation_id,
            vec![DiskWrite::End {
                playlist,
                start: false,
            }],
        );
    }

    /// Queues a recording's last writes. Nothing follows them, so a full queue is waited out
    /// (up to a bound) rather than leave the recording without its final playlist.
    fn queue_end(&self, reservation_id: &str, writes: Vec<DiskWrite>) {
        let Err(batch) = self.queue(reservation_id, writes) else {
            return;
        };
        let hub = self.clone();
        let wait = async move {
            if let Err(e) = hub.inner.disk.send_timeout(batch, END_WRITE_WAIT).await {
                hub.inner.metrics.refused("disk_backlog");
                tracing::error!(reservation = %e.into_inner().reservation_id,
                    "a recording's final playlist could not be queued");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(wait)),
            Err(_) => {
                self.inner.metrics.refused("disk_backlog");
                tracing::error!(
                    reservation = reservation_id,
                    "a recording's final playlist was dropped"
                );
            }
        }
    }

    /// Whether the reservation's recording was left unfinished by a stopped streamer and
    /// waits for its publisher (or its slot's end).
    pub fn is_unfinished(&self, reservation_id: &str) -> bool {
        lock(&self.inner.unfinished).contains_key(reservation_id)
    }

    /// Recordings a stopped streamer left unfinished ([`crate::recording::unfinished`]),
    /// taken once at start, before the gates are followed.
    pub fn found_unfinished(&self, found: Vec<(String, Playlist)>) {
        lock(&self.inner.unfinished).extend(found);
    }

    // ---- channels -----------------------------------------------------------------------

    /// The reservation's channel, made on first use.
    pub fn channel(&self, reservation_id: &str) -> Arc<ChannelHandle> {
        let mut channels = lock(&self.inner.channels);
        channels
            .entry(reservation_id.to_string())
            .or_insert_with(|| {
                let channel = match lock(&self.inner.unfinished).remove(reservation_id) {
                    Some(recorded) => {
                        tracing::info!(
                            reservation = reservation_id,
                            next_segment = recorded.next_msn(),
                            "the recording goes on where the stopped streamer left it"
                        );
                        Channel::resume(recorded)
                    }
                    None => Channel::new(
                        self.inner.config.segment_target,
                        self.inner.config.part_target,
                    ),
                };
                Arc::new(ChannelHandle::new(channel))
            })
            .clone()
    }

    pub fn find_channel(&self, reservation_id: &str) -> Option<Arc<ChannelHandle>> {
        lock(&self.inner.channels).get(reservation_id).cloned()
    }

    /// Drops ended channels from memory (their recordings are served from disk).
    pub fn forget_ended(&self) {
        lock(&self.inner.channels).retain(|_, c| c.lock().state() != ChannelState::Ended);
        lock(&self.inner.gates).forget_over();
    }

    /// Queues writes of a recording for the disk writer. Call it with the channel still
    /// locked, so the writer gets each channel's writes in the order it made them. Returns
    /// the writes if the queue was full (the disk is stalled): the live stream goes on from
    /// memory, and the channel makes up for them with its next segment
    /// ([`Channel::disk_lost`]). Counted and logged, never queued without bound.
    pub fn write(
        &self,
        reservation_id: &str,
        writes: Vec<DiskWrite>,
    ) -> Result<(), Vec<DiskWrite>> {
        self.queue(reservation_id, writes).map_err(|batch| {
            self.inner.metrics.refused("disk_backlog");
            tracing::error!(reservation = reservation_id, "recording write dropped");
            batch.writes
        })
    }

    /// Queues writes if there is room; the batch back if not.
    fn queue(&self, reservation_id: &str, writes: Vec<DiskWrite>) -> Result<(), DiskBatch> {
        if writes.is_empty() {
            return Ok(());
        }
        let batch = DiskBatch {
            reservation_id: reservation_id.to_string(),
            writes,
        };
        self.inner.disk.try_send(batch).map_err(|e| e.into_inner())
    }

    /// What the watch page shows.
    pub fn status(&self, reservation_id: &str) -> Status {
        if let Some(handle) = self.find_channel(reservation_id) {
            match handle.lock().state() {
                ChannelState::Live => return Status::Live,
                ChannelState::Ended => return Status::Ended,
                ChannelState::Waiting => {}
            }
        }
        if lock(&self.inner.gates).is_over(reservation_id) {
            return Status::Ended;
        }
        Status::Waiting
    }

    /// A reservation seen on another server's slot subject.
    pub fn note_elsewhere(&self, reservation_id: &str, server_id: &str) {
        lock(&self.inner.gates).note_elsewhere(reservation_id, server_id);
    }

    // ---- viewers ----------------------------------------------------------------------

    pub fn saw_viewer(&self, reservation_id: &str, ip: IpAddr) {
        let mut viewers = lock(&self.inner.viewers);
        if viewers.len() >= VIEWERS_MAX {
            let now = Instant::now();
            viewers.retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
            if viewers.len() >= VIEWERS_MAX {
                return;
            }
        }
        viewers.insert((reservation_id.to_string(), ip), Instant::now());
    }

    /// Updates the viewers gauge and encodes the metrics.
    pub fn encode_metrics(&self) -> String {
        let now = Instant::now();
        let count = {
            let mut viewers = lock(&self.inner.viewers);
            viewers.retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
            viewers.len()
        };
        self.inner
            .metrics
            .viewers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.inner.metrics.encode()
    }
}

/// One ingest report's own fields (the hub adds the reservation, server and time).
struct Report {
    kind: IngestKind,
    carrier: Option<String>,
    remote_addr: String,
    codec: Option<String>,
    reason: Option<String>,
}

/// Why the hub refused a publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Gate(Denied),
    /// Another publisher is live on the reservation.
    Busy,
}

impl Refused {
    /// The code the publisher is told (docs/publishing.md).
    pub const fn code(&self) -> slotcast_domain::contract::RefusalCode {
        match self {
            Self::Gate(denied) => denied.code(),
            Self::Busy => slotcast_domain::contract::RefusalCode::Busy,
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
