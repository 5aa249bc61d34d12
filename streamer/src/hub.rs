//! The streamer's shared state and the thin layer that carries out its decisions.
//!
//! Contract: one cheap-clone [`Hub`] shared by the RTSP edge, the camera pulls, the NATS
//! edge and the HTTP side. The decisions are [`Control`]'s, made from the inputs given here
//! with the server clock's time; the hub executes its [`Action`]s: it cancels publishers,
//! starts and stops pulls (with the puller it was given, so it knows nothing of cameras),
//! ends playouts and recordings, and queues reports. Locks: the hub's state (the control,
//! the publishers' handles, the pulls and the playout map) is one `Mutex`, held for a few
//! map operations and never while another lock is taken; each playout has its own lock,
//! never held while the hub's is taken. Nothing is awaited under a lock.

use slotcast_http::MappedFiles;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use slotcast_domain::contract::{IngestKind, IngestMessage, IngestProtocol, SlotMessage};
use slotcast_domain::time::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::StreamerConfig;
use crate::control::{Action, Control, PullReport, Refused};
use crate::gates::Camera;
use crate::hls_viewers::HlsViewers;
use crate::hush::Hush;
use crate::ingest_meter::IngestMeter;
use crate::live_tap::LiveTap;
use crate::metrics::{AuthLabel, Metrics};
use crate::playlist::Playlist;
use crate::playout::{DiskWrite, Playout, PlayoutState};
use crate::recording::DiskBatch;
use crate::rtsp::Credential;

/// A playout and the version watch that blocked requests wait on.
#[derive(Debug)]
pub struct PlayoutHandle {
    playout: Mutex<Playout>,
    changed: watch::Sender<u64>,
    /// The playlist as last rendered: rendered once per change, served to every viewer
    /// from here without the playout's lock.
    rendered: Mutex<Option<Rendered>>,
    /// Names this playout in the validators of what it serves (`crate::caching`): unique per
    /// process start and playout.
    identity: String,
    /// Its frames as they come, for real-time viewers.
    tap: LiveTap,
    /// What it has received, for its status (a leaf lock, taken per frame).
    meter: Mutex<IngestMeter>,
}

/// What a playout has received ([`crate::ingest_meter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intake {
    pub frames: u64,
    pub bitrate_bps: u64,
}

/// A rendered playlist: the playout version it was rendered at, when (server clock), and the
/// text (`None` while it lists no segment).
#[derive(Clone, Debug)]
pub struct Rendered {
    pub version: u64,
    pub at: DateTime<Utc>,
    pub body: Option<Bytes>,
}

/// Playouts made by this process so far: part of each one's identity.
static PLAYOUTS_MADE: AtomicU64 = AtomicU64::new(0);

impl PlayoutHandle {
    fn new(playout: Playout, now: DateTime<Utc>) -> Self {
        let made = PLAYOUTS_MADE.fetch_add(1, Ordering::Relaxed);
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        Self {
            playout: Mutex::new(playout),
            changed: watch::channel(0).0,
            rendered: Mutex::new(None),
            identity: format!("{nanos:x}-{made:x}"),
            tap: LiveTap::default(),
            meter: Mutex::new(IngestMeter::new(Instant::now())),
        }
    }

    /// A frame of `bytes` arrived at `now` (for [`PlayoutHandle::intake`]).
    pub fn received(&self, now: Instant, bytes: usize) {
        lock(&self.meter).record(now, bytes);
    }

    /// What it has received by `now`: frames, and bits per second over the last few seconds.
    pub fn intake(&self, now: Instant) -> Intake {
        let meter = lock(&self.meter);
        Intake {
            frames: meter.frames(),
            bitrate_bps: meter.bitrate_bps(now),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Playout> {
        lock(&self.playout)
    }

    /// Its frames as they come (`crate::live_tap`).
    pub fn tap(&self) -> &LiveTap {
        &self.tap
    }

    /// What names this playout in validators.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The playlist at playout version `version` or later: the rendering kept, or a new one
    /// (rendered under the playout's lock, once per version, then kept); `now` is when, if
    /// it is rendered now.
    pub fn playlist(&self, version: u64, now: DateTime<Utc>) -> Rendered {
        if let Some(kept) = lock(&self.rendered).as_ref() {
            if kept.version >= version {
                return kept.clone();
            }
        }
        let fresh = {
            let playout = self.lock();
            Rendered {
                version: playout.version(),
                at: now,
                body: playout
                    .playlist()
                    .map(|text| Bytes::from(text.into_bytes())),
            }
        };
        let mut kept = lock(&self.rendered);
        match kept.as_ref() {
            Some(was) if was.version >= fresh.version => was.clone(),
            _ => {
                *kept = Some(fresh.clone());
                fresh
            }
        }
    }

    /// Tells waiting requests that the playout changed.
    pub fn notify(&self, version: u64) {
        self.changed.send_replace(version);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A publisher connection as the edge holds it: what the control does not need.
#[derive(Debug)]
pub struct SessionEntry {
    pub id: u64,
    pub carrier: String,
    pub remote: SocketAddr,
    /// Milliseconds since the hub started, at the last request or packet.
    last_activity_ms: AtomicU64,
    /// Fires when the hub cuts the publisher off.
    pub cancel: CancellationToken,
    reason: OnceLock<String>,
}

impl SessionEntry {
    /// Why the hub cut this session off, once it has.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    fn cut(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }
}

/// A running camera pull, as the hub stops it.
#[derive(Clone, Debug, Default)]
pub struct PullHandle {
    pub stop: CancellationToken,
    /// Why the hub stopped it, once it has.
    reason: Arc<OnceLock<String>>,
}

impl PullHandle {
    fn stop_because(&self, why: String) {
        let _ = self.reason.set(why);
        self.stop.cancel();
    }

    /// Why the hub stopped the pull, once it has.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// A camera pull's task, until its handle stops: given to the hub by whoever runs the
/// streamer (`crate::camera::guarded_pull`).
pub type Puller =
    fn(Hub, String, Camera, PullHandle) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<StreamerConfig>,
    clock: Arc<dyn Clock>,
    started: Instant,
    state: Mutex<State>,
    /// HLS viewers by reservation (a leaf lock).
    viewers: Mutex<HlsViewers>,
    metrics: Metrics,
    /// Media mapped from memfds, which the viewer port sends by `sendfile`.
    files: Arc<MappedFiles>,
    /// Log lines strangers can cause (refusals), one per kind per `HUSH_PERIOD`.
    hush: Hush,
    reports: mpsc::Sender<IngestMessage>,
    disk: mpsc::Sender<DiskBatch>,
    puller: Puller,
    /// Fires at shutdown; every pull stops with it.
    shutdown: CancellationToken,
    /// The pull tasks, so the shutdown can wait for their last media and reports.
    pull_tasks: TaskTracker,
    /// Real-time (WHEP) viewers.
    whep: crate::whep::edge::Viewers,
}

/// Everything behind the hub's one lock.
struct State {
    control: Control,
    sessions: HashMap<u64, Arc<SessionEntry>>,
    pulls: HashMap<String, PullHandle>,
    playouts: HashMap<String, Arc<PlayoutHandle>>,
}

/// Viewer entries kept at most (a flood of addresses must not grow memory).
const VIEWERS_MAX: usize = 100_000;
/// How long a recording's final writes wait for room in a full disk queue.
const END_WRITE_WAIT: Duration = Duration::from_secs(10);
/// At most one log line per kind of refusal this often.
const HUSH_PERIOD: Duration = Duration::from_secs(10);

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
        puller: Puller,
        shutdown: CancellationToken,
    ) -> Self {
        let control = Control::new(config.server_id.clone(), config.secret_key.clone());
        // Beside the recordings: the disk the operator gave the streamer.
        let files = MappedFiles::in_dir(config.recordings_dir.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                clock,
                started: Instant::now(),
                state: Mutex::new(State {
                    control,
                    sessions: HashMap::new(),
                    pulls: HashMap::new(),
                    playouts: HashMap::new(),
                }),
                viewers: Mutex::new(HlsViewers::new(VIEWERS_MAX)),
                metrics: Metrics::new(),
                files,
                hush: Hush::new(HUSH_PERIOD),
                reports,
                disk,
                puller,
                shutdown,
                pull_tasks: TaskTracker::new(),
                whep: crate::whep::edge::Viewers::default(),
            }),
        }
    }

    pub fn config(&self) -> &StreamerConfig {
        &self.inner.config
    }

    /// Real-time (WHEP) viewers.
    pub fn whep(&self) -> &crate::whep::edge::Viewers {
        &self.inner.whep
    }

    /// Fires when the streamer shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Where media served from memory is mapped for `sendfile` (`playout::Held::served`).
    pub fn files(&self) -> &Arc<MappedFiles> {
        &self.inner.files
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

    /// Whether publisher `id` is silent at `now_ms` (since the hub started): no request and no
    /// packet for the session timeout, or gone. A silent publisher holds no reservation.
    fn is_silent(&self, sessions: &HashMap<u64, Arc<SessionEntry>>, id: u64, now_ms: u64) -> bool {
        let timeout_ms =
            u64::try_from(self.inner.config.session_timeout.as_millis()).unwrap_or(u64::MAX);
        sessions.get(&id).is_none_or(|other| {
            now_ms.saturating_sub(other.last_activity_ms.load(Ordering::Relaxed)) >= timeout_ms
        })
    }

    /// Runs one decision under the hub's lock and carries out its actions: those that touch
    /// the hub's state at once, under the same lock (so a pull started and a pull stopped
    /// cannot cross), the playout and disk work after it is released.
    /// The decision is given the server clock's time, and which publishers are silent (no
    /// request, no packet for the session timeout): they do not hold their reservation.
    fn decide<T>(
        &self,
        decide: impl FnOnce(&mut Control, DateTime<Utc>, &dyn Fn(u64) -> bool) -> (T, Vec<Action>),
    ) -> T {
        let now = self.now();
        let now_ms = self.ms_since_start(Instant::now());
        let (answer, endings) = {
            let mut state = lock(&self.inner.state);
            let State {
                control, sessions, ..
            } = &mut *state;
            let is_silent = |id: u64| self.is_silent(sessions, id, now_ms);
            let (answer, actions) = decide(control, now, &is_silent);
            let mut endings = Vec::new();
            for action in actions {
                match action {
                    Action::Cut { session, reason } => {
                        if let Some(entry) = state.sessions.get(&session) {
                            entry.cut(reason);
                        }
                    }
                    Action::Pull {
                        reservation_id,
                        camera,
                    } => {
                        let handle = PullHandle {
                            stop: self.inner.shutdown.child_token(),
                            reason: Arc::default(),
                        };
                        state.pulls.insert(reservation_id.clone(), handle.clone());
                        let task =
                            (self.inner.puller)(self.clone(), reservation_id, camera, handle);
                        self.inner.pull_tasks.spawn(task);
                    }
                    Action::StopPull {
                        reservation_id,
                        reason,
                    } => {
                        if let Some(pull) = state.pulls.remove(&reservation_id) {
                            pull.stop_because(reason);
                        }
                    }
                    Action::Report(message) => self.send_report(message),
                    Action::EndPlayout { reservation_id } => {
                        let playout = state.playouts.get(&reservation_id).cloned();
                        endings.push(Ending::Playout(reservation_id, playout));
                    }
                    Action::EndUnfinished {
                        reservation_id,
                        playlist,
                    } => endings.push(Ending::Unfinished(reservation_id, playlist)),
                }
            }
            (answer, endings)
        };
        for ending in endings {
            match ending {
                Ending::Playout(reservation_id, Some(playout)) => {
                    self.end_playout(&reservation_id, &playout);
                }
                Ending::Playout(_, None) => {}
                Ending::Unfinished(reservation_id, playlist) => {
                    tracing::info!(
                        reservation = %reservation_id,
                        "an unfinished recording is ended: its slot is over"
                    );
                    let mut writes = self.title_write(&reservation_id);
                    writes.push(DiskWrite::End {
                        playlist,
                        start: false,
                    });
                    self.queue_end(&reservation_id, writes);
                }
            }
        }
        answer
    }

    fn send_report(&self, message: IngestMessage) {
        if let Err(e) = self.inner.reports.try_send(message) {
            // The reporter is far behind NATS (or stopped): the history misses this one.
            tracing::warn!(error = %e, "ingest report dropped: the report queue is full");
        }
    }

    /// The gates are (or are no longer) rebuilt from NATS ([`Control::set_ready`]).
    pub fn set_gates_ready(&self, ready: bool) {
        self.decide(|control, _, _| ((), control.set_ready(ready)));
    }

    /// Whether the gates have been rebuilt from NATS and are following it.
    pub fn gates_ready(&self) -> bool {
        lock(&self.inner.state).control.is_ready()
    }

    // ---- publishers ---------------------------------------------------------------------

    /// A new RTSP connection on `carrier`.
    pub fn register_session(
        &self,
        carrier: &str,
        remote: SocketAddr,
        protocol: IngestProtocol,
    ) -> Arc<SessionEntry> {
        let mut state = lock(&self.inner.state);
        let id = state.control.connect(carrier, remote, protocol);
        let entry = Arc::new(SessionEntry {
            id,
            carrier: carrier.to_string(),
            remote,
            last_activity_ms: AtomicU64::new(self.ms_since_start(Instant::now())),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
        });
        state.sessions.insert(id, entry.clone());
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
        lock(&self.inner.state)
            .control
            .offers_digest(reservation_id)
    }

    /// May this publisher publish ([`Control::admit`])? A publisher silent (no request, no
    /// packet) for the session timeout by `now` does not hold its reservation.
    pub fn admit(
        &self,
        session: &SessionEntry,
        reservation_id: &str,
        credential: &Credential,
        now: Instant,
    ) -> Result<(), Refused> {
        let at = self.now();
        let now_ms = self.ms_since_start(now);
        let state = lock(&self.inner.state);
        let is_silent = |id: u64| self.is_silent(&state.sessions, id, now_ms);
        state
            .control
            .admit(session.id, reservation_id, credential, at, is_silent)
    }

    /// RECORD went through: the session is the reservation's publisher from now on
    /// ([`Control::start_recording`]), and the playout to feed is returned. A publisher that
    /// lost the race to another, live one is refused `busy` (and counted as a refusal).
    pub fn start_recording(
        &self,
        session: &SessionEntry,
        reservation_id: &str,
        credential: Credential,
        codecs: &str,
    ) -> Result<Arc<PlayoutHandle>, Refused> {
        let auth = match credential {
            Credential::Key(_) => "key",
            Credential::Digest(_) => "digest",
        };
        let started = self.decide(|control, now, is_silent| {
            match control.start_recording(
                session.id,
                reservation_id,
                credential,
                codecs,
                now,
                is_silent,
            ) {
                Ok(actions) => (Ok(()), actions),
                Err(refused) => (Err(refused), Vec::new()),
            }
        });
        if let Err(refused) = started {
            self.report_refusal(session, reservation_id, &refused);
            return Err(refused);
        }
        self.metrics()
            .publishers
            .get_or_create(&AuthLabel { auth })
            .inc();
        self.inner.metrics.sessions.inc();
        Ok(self.playout(reservation_id))
    }

    /// The connection is gone ([`Control::disconnect`]).
    pub fn end_session(&self, id: u64, reason: &str, failure: bool) {
        let recorded = self.decide(|control, now, _| {
            let recorded = control.is_recording(id);
            (recorded, control.disconnect(id, reason, failure, now))
        });
        lock(&self.inner.state).sessions.remove(&id);
        self.inner.metrics.connections.dec();
        if recorded {
            self.inner.metrics.sessions.dec();
        }
    }

    /// What a camera pull did, for the history and the metrics.
    pub fn report_pull(&self, reservation_id: &str, what: PullReport) {
        match what.kind {
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
        self.decide(|control, now, _| ((), vec![control.pull_report(reservation_id, what, now)]));
    }

    /// A refused publish attempt: a metric, a log line at most every `HUSH_PERIOD`, and a
    /// count in the reservation's next `refused` report.
    pub fn report_refusal(&self, session: &SessionEntry, reservation_id: &str, refused: &Refused) {
        let reason = refused.label();
        self.inner.metrics.refused(reason);
        if let Some(held_back) = self.hush(reason) {
            tracing::info!(carrier = %session.carrier, remote = %session.remote,
                reservation = reservation_id, why = %refused, held_back,
                "publisher refused");
        }
        lock(&self.inner.state)
            .control
            .refused(reservation_id, refused);
    }

    // ---- slots ------------------------------------------------------------------------

    /// One slot message from NATS.
    pub fn apply_slot(&self, msg: &SlotMessage) {
        self.decide(|control, now, _| ((), control.slot(msg, now)));
    }

    /// Time passes ([`Control::tick`]): gates close on time, pulls follow their windows, and
    /// the `refused` reports due go out, taking at most half the report queue, so a
    /// `connected` or `disconnected` report always finds room.
    pub fn tick(&self) {
        let reports = &self.inner.reports;
        let room = reports.capacity() > reports.max_capacity() / 2;
        self.decide(|control, now, _| ((), control.tick(now, Instant::now(), room)));
    }

    /// A reservation seen on another server's slot subject.
    pub fn note_elsewhere(&self, reservation_id: &str, server_id: &str) {
        lock(&self.inner.state)
            .control
            .elsewhere(reservation_id, server_id);
    }

    // ---- cameras ------------------------------------------------------------------------

    /// Waits (up to `limit`) for every pull task to hang up, after the shutdown stopped them.
    pub async fn pulls_done(&self, limit: Duration) {
        self.inner.pull_tasks.close();
        let _ = tokio::time::timeout(limit, self.inner.pull_tasks.wait()).await;
    }

    /// A pull task has hung up for good: if its slot is over, the playout ends.
    pub fn pull_ended(&self, reservation_id: &str) {
        self.decide(|control, _, _| ((), control.pull_ended(reservation_id)));
    }

    // ---- playouts and recordings ---------------------------------------------------------

    fn end_playout(&self, reservation_id: &str, handle: &PlayoutHandle) {
        let mut writes = self.title_write(reservation_id);
        let version = {
            let mut playout = handle.lock();
            playout.end(&mut writes);
            self.queue_end(reservation_id, writes);
            playout.version()
        };
        handle.notify(version);
    }

    /// The reservation's title for its recording's directory, if it has one.
    fn title_write(&self, reservation_id: &str) -> Vec<DiskWrite> {
        self.title(reservation_id)
            .map(|title| DiskWrite::Title { title })
            .into_iter()
            .collect()
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
        lock(&self.inner.state)
            .control
            .is_unfinished(reservation_id)
    }

    /// Recordings a stopped streamer left unfinished ([`crate::recording::unfinished`]),
    /// taken once at start, before the gates are followed.
    pub fn found_unfinished(&self, found: Vec<(String, Playlist)>) {
        lock(&self.inner.state).control.found_unfinished(found);
    }

    /// The reservation's playout, made on first use (going on from its unfinished recording,
    /// if a stopped streamer left one).
    pub fn playout(&self, reservation_id: &str) -> Arc<PlayoutHandle> {
        let mut state = lock(&self.inner.state);
        if let Some(handle) = state.playouts.get(reservation_id) {
            return handle.clone();
        }
        let playout = match state.control.open_playout(reservation_id) {
            Some(recorded) => {
                tracing::info!(
                    reservation = reservation_id,
                    next_segment = recorded.next_msn(),
                    "the recording goes on where the stopped streamer left it"
                );
                Playout::resume(recorded)
            }
            None => Playout::new(
                self.inner.config.segment_target,
                self.inner.config.part_target,
            ),
        };
        let handle = Arc::new(PlayoutHandle::new(playout, self.now()));
        state
            .playouts
            .insert(reservation_id.to_string(), handle.clone());
        handle
    }

    pub fn find_playout(&self, reservation_id: &str) -> Option<Arc<PlayoutHandle>> {
        lock(&self.inner.state)
            .playouts
            .get(reservation_id)
            .cloned()
    }

    /// Drops ended playouts from memory (their recordings are served from disk), and the
    /// gates of slots long over.
    pub fn forget_ended(&self) {
        let playouts: Vec<(String, Arc<PlayoutHandle>)> = lock(&self.inner.state)
            .playouts
            .iter()
            .map(|(id, handle)| (id.clone(), handle.clone()))
            .collect();
        // An ended playout stays ended: checked without the hub's lock, dropped under it.
        let ended: Vec<String> = playouts
            .into_iter()
            .filter(|(_, handle)| handle.lock().state() == PlayoutState::Ended)
            .map(|(id, _)| id)
            .collect();
        let mut state = lock(&self.inner.state);
        for id in ended {
            state.playouts.remove(&id);
        }
        state.control.forget_over();
    }

    /// Queues writes of a recording for the disk writer. Call it with the playout still
    /// locked, so the writer gets each playout's writes in the order it made them. Returns
    /// the writes if the queue was full (the disk is stalled): the live stream goes on from
    /// memory, and the playout makes up for them with its next segment
    /// ([`Playout::disk_lost`]). Counted and logged, never queued without bound.
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

    /// What the watch page shows: the playout's state, or `ended` for a slot over without
    /// one.
    pub fn status(&self, reservation_id: &str) -> PlayoutState {
        if let Some(handle) = self.find_playout(reservation_id) {
            let state = handle.lock().state();
            if state != PlayoutState::Waiting {
                return state;
            }
        }
        if lock(&self.inner.state).control.is_over(reservation_id) {
            return PlayoutState::Ended;
        }
        PlayoutState::Waiting
    }

    /// How the reservation's stream comes in now ([`Control::protocol_of`]).
    pub fn protocol_of(&self, reservation_id: &str) -> Option<IngestProtocol> {
        lock(&self.inner.state).control.protocol_of(reservation_id)
    }

    /// The reservation's title, while the streamer knows the reservation.
    pub fn title(&self, reservation_id: &str) -> Option<String> {
        lock(&self.inner.state)
            .control
            .title(reservation_id)
            .map(str::to_string)
    }

    // ---- viewers ----------------------------------------------------------------------

    /// `ip` fetched the reservation's playlist.
    pub fn saw_viewer(&self, reservation_id: &str, ip: IpAddr) {
        lock(&self.inner.viewers).saw(reservation_id, ip, Instant::now());
    }

    /// Who watches the reservation now: the distinct addresses that fetched its playlist
    /// lately ([`crate::hls_viewers`]) and its real-time (WHEP) sessions.
    pub fn viewers_of(&self, reservation_id: &str) -> usize {
        let hls = lock(&self.inner.viewers).count(reservation_id, Instant::now());
        hls + self.whep().watching(reservation_id)
    }

    /// Updates the viewers gauge and encodes the metrics.
    pub fn encode_metrics(&self) -> String {
        let count = lock(&self.inner.viewers).count_all(Instant::now());
        self.inner
            .metrics
            .viewers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.inner.metrics.encode()
    }
}

/// A recording's end, carried out once the hub's lock is released.
enum Ending {
    Playout(String, Option<Arc<PlayoutHandle>>),
    Unfinished(String, String),
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
