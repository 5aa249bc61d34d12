//! The NTP-disciplined server clock.
//!
//! Contract:
//!
//! - [`ServerClock::now`] is the system clock plus the offset of the last good NTP sync, or the
//!   bare system clock before the first good sync. It and [`ServerClock::status`] never wait on
//!   the network: they read a small state under a `std::sync::Mutex` that is held only to copy a
//!   few fields and never across an `.await`. NTP trouble therefore never blocks a caller.
//! - [`ServerClock::sync_once`] asks every configured server at once, `samples` exchanges
//!   each, within `timeout` per server (resolving included), and chooses by the rules of
//!   [`crate::clock_select`]: each server's least-delayed sample, the largest group of
//!   servers that agree, and a step past `max_step` refused unless a second server agrees. A
//!   refused step leaves the offset in use and shows as `ntp.step_refused` (its size, the
//!   server, when) until an offset is taken again. A failed round leaves the previous offset
//!   in place.
//! - [`ServerClock::run`] syncs at start, then every `interval`; after a failed round it retries
//!   sooner (1 s, doubling, capped at `interval`). It returns when its shutdown token is
//!   cancelled, even in the middle of a query.
//! - State, by one rule: `unsynced` until the first good sync (source `system`, no NTP info);
//!   afterwards the offset is always applied (source `ntp`) and the state is `synced` while the
//!   last good sync is younger than `stale_after`, `stale` from then on. Failed attempts do not
//!   change the state by themselves; they only let the last good sync age. Age is measured on
//!   the monotonic clock, so a step of the system clock cannot make the clock look fresh.
//! - An empty server list, or addresses that are not `host:port`, keep the clock unsynced;
//!   every attempt says so as a [`ClockError`] and in the logs, never as a panic.
//!
//! The state logic (`State`) is pure: it takes the system time and an [`Instant`] as
//! arguments, so its transitions are unit-tested without sleeping or a network.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock_select;

/// What the clock reports travels in answers, so its types are the wire crate's.
pub use slotcast_wire::{ClockSource, NtpInfo, StepRefused, SyncState};

/// First retry delay after a failed round; it doubles up to the resync interval. Also the
/// smallest resync interval `run` accepts, so a zero interval cannot make it spin.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where the server clock gets its time from and how often it checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockConfig {
    /// NTP servers as `host:port` (IPv6 literals in brackets: `[::1]:123`), in order of
    /// preference.
    pub servers: Vec<String>,
    /// Resync period after a good sync (default 64 s).
    pub interval: Duration,
    /// Bound on one query to one server, DNS included (default 2 s).
    pub timeout: Duration,
    /// With no good sync for this long the clock is `stale` (default 5 min).
    pub stale_after: Duration,
    /// A change of offset larger than this is taken only when two servers agree on it
    /// (`SLOTCAST_NTP_MAX_STEP_MS`, default 1 s).
    pub max_step: Duration,
    /// Exchanges per server per round; the least delayed counts (default 4).
    pub samples: u32,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            interval: Duration::from_secs(64),
            timeout: Duration::from_secs(2),
            stale_after: Duration::from_secs(5 * 60),
            max_step: Duration::from_secs(1),
            samples: 4,
        }
    }
}

/// Why an NTP sync did not produce a usable offset.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("no NTP servers configured")]
    NoServers,
    #[error("NTP server {server:?} is not a valid host:port: {reason}")]
    BadAddress {
        server: String,
        reason: &'static str,
    },
    #[error("NTP server {server}: cannot resolve host: {source}")]
    Resolve {
        server: String,
        source: std::io::Error,
    },
    #[error("NTP server {server}: no answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("NTP server {server}: {source}")]
    Query {
        server: String,
        source: rsntp::SynchronizationError,
    },
    #[error("NTP server {server}: unusable reply: {reason}")]
    BadReply {
        server: String,
        reason: &'static str,
    },
    #[error("all NTP servers failed: {}", join_errors(.0))]
    AllServersFailed(Vec<ClockError>),
    #[error("NTP server {server} would step the clock by {step_ms:.0} ms and no other server agrees; step refused")]
    StepRefused { server: String, step_ms: f64 },
}

fn join_errors(errors: &[ClockError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `/v1/time`, `/readyz` and the metrics report about the server clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClockStatus {
    pub source: ClockSource,
    pub state: SyncState,
    /// The last good sync; `null` while unsynced.
    pub ntp: Option<NtpInfo>,
}

/// The server clock; cheap to clone, all clones share one state.
#[derive(Clone, Debug)]
pub struct ServerClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClockConfig,
    state: Mutex<State>,
}

impl slotcast_domain::time::Clock for ServerClock {
    fn now(&self) -> DateTime<Utc> {
        ServerClock::now(self)
    }
}

impl ServerClock {
    /// A clock that starts unsynced (`now()` = system clock) until `sync_once` or `run` succeeds.
    pub fn new(config: ClockConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// System clock plus the last good NTP offset, if any.
    pub fn now(&self) -> DateTime<Utc> {
        let system_now = Utc::now();
        self.state().now(system_now)
    }

    /// The state as of this call (`synced` turns `stale` by age alone).
    pub fn status(&self) -> ClockStatus {
        let mono_now = Instant::now();
        self.state().status(self.inner.config.stale_after, mono_now)
    }

    /// One round: ask every server (`samples` each, at once), choose, and take the offset or
    /// refuse the step ([`crate::clock_select`]). Takes at most `timeout` in all. On error the
    /// previous offset stays.
    pub async fn sync_once(&self) -> Result<NtpInfo, ClockError> {
        let config = &self.inner.config;
        if config.servers.is_empty() {
            return Err(ClockError::NoServers);
        }
        let asked = futures_util::future::join_all(
            config
                .servers
                .iter()
                .map(|server| query_server(server, config.timeout, config.samples)),
        )
        .await;
        let mut candidates = Vec::new();
        let mut errors = Vec::new();
        for (server, answer) in config.servers.iter().zip(asked) {
            match answer {
                Ok(candidate) => candidates.push(candidate),
                Err(error) => {
                    warn!(%server, %error, "NTP query failed");
                    errors.push(error);
                }
            }
        }
        let current = self.state().offset_ms();
        let Some(chosen) = clock_select::choose(&candidates, current) else {
            return Err(ClockError::AllServersFailed(errors));
        };
        if !chosen.falsetickers.is_empty() {
            warn!(falsetickers = ?chosen.falsetickers, taken = %chosen.pick.server,
                "NTP servers disagree; the majority's time is taken");
        }
        let max_step_ms = config.max_step.as_secs_f64() * 1e3;
        match clock_select::decide(chosen, current, max_step_ms) {
            clock_select::Decision::Take(chosen) => {
                let pick = &chosen.pick;
                let mut sync = GoodSync::from_measurement(
                    &pick.server,
                    pick.stratum,
                    pick.sample.offset_ms / 1e3,
                    pick.sample.delay_ms / 1e3,
                    Utc::now(),
                    Instant::now(),
                )?;
                sync.info.agreeing = u32::try_from(chosen.agreeing).unwrap_or(u32::MAX);
                let info = sync.info.clone();
                self.state().record(sync);
                Ok(info)
            }
            clock_select::Decision::RefuseStep { chosen, step_ms } => {
                let refused = StepRefused {
                    server: chosen.pick.server.clone(),
                    step_ms,
                    at: self.now(),
                };
                warn!(server = %refused.server, step_ms, max_step_ms,
                    "NTP step refused: no other server agrees");
                self.state().refuse(refused);
                Err(ClockError::StepRefused {
                    server: chosen.pick.server,
                    step_ms,
                })
            }
        }
    }

    /// Keeps the clock synced until `shutdown` is cancelled: a round now, then every
    /// `interval` (at least 1 s); after a failed round, retries after 1 s, 2 s, 4 s, … up to
    /// `interval`. With no servers configured it only waits for shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        if config.servers.is_empty() {
            warn!("no NTP servers configured; the server clock stays on the system clock");
            shutdown.cancelled().await;
            return;
        }
        let interval = config.interval.max(FIRST_RETRY);
        info!(servers = ?config.servers, ?interval, "server clock: NTP sync starting");
        let mut failures: u32 = 0;
        let mut ever_synced = false;
        loop {
            let attempt = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                attempt = self.sync_once() => attempt,
            };
            let wait = match attempt {
                Ok(info) => {
                    if failures > 0 || !ever_synced {
                        info!(server = %info.server, stratum = info.stratum,
                            offset_ms = info.offset_ms, delay_ms = info.delay_ms, "NTP synced");
                    } else {
                        debug!(server = %info.server, stratum = info.stratum,
                            offset_ms = info.offset_ms, delay_ms = info.delay_ms, "NTP resynced");
                    }
                    failures = 0;
                    ever_synced = true;
                    interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let retry_in = retry_delay(failures, interval);
                    // The per-server causes were logged by sync_once.
                    warn!(failures, ?retry_in, state = ?self.status().state,
                        "NTP sync failed; keeping the last good offset, if any");
                    debug!(%error, "NTP sync round error");
                    retry_in
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        debug!("server clock: NTP sync stopped");
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // State is plain data replaced in one assignment, so it is consistent even if a holder
        // panicked: a poisoned lock is still safe to use.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// 1 s, 2 s, 4 s, … for the 1st, 2nd, 3rd… consecutive failure, capped at `interval`.
fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1 << doublings).min(interval)
}

/// Up to `samples` exchanges with one server within `timeout` in all; its best sample.
async fn query_server(
    server: &str,
    timeout: Duration,
    samples: u32,
) -> Result<clock_select::Candidate, ClockError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut stratum = 0;
    let mut last_error = None;
    for _ in 0..samples.max(1) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match query(server, left).await {
            Ok((s, sample)) => {
                stratum = s;
                got.push(sample);
            }
            // An address that cannot be right will not be right on the next try.
            Err(error @ (ClockError::BadAddress { .. } | ClockError::Resolve { .. })) => {
                return Err(error)
            }
            Err(error) => last_error = Some(error),
        }
    }
    match clock_select::best(&got) {
        Some(sample) => Ok(clock_select::Candidate {
            server: server.to_owned(),
            stratum,
            sample,
        }),
        None => Err(last_error.unwrap_or(ClockError::Timeout {
            server: server.to_owned(),
            timeout,
        })),
    }
}

/// One exchange with one server: its stratum and the sample; `timeout` bounds the whole
/// exchange, DNS included.
async fn query(server: &str, timeout: Duration) -> Result<(u8, clock_select::Sample), ClockError> {
    let timed_out = || ClockError::Timeout {
        server: server.to_owned(),
        timeout,
    };
    let target = parse_server(server)?;
    let exchange = async {
        let addr = match target {
            Target::Addr(addr) => addr,
            Target::Host(host, port) => resolve(server, host, port).await?,
        };
        // rsntp binds 0.0.0.0:0 by default, which cannot reach an IPv6 server.
        let bind = match addr.ip() {
            IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        };
        // rsntp's own timeout covers only the wait for the reply; the outer one bounds the rest.
        let client = rsntp::AsyncSntpClient::with_config(
            rsntp::Config::default().bind_address(bind).timeout(timeout),
        );
        client
            .synchronize(addr)
            .await
            .map_err(|source| match source {
                rsntp::SynchronizationError::IOError(e) if e.kind() == ErrorKind::TimedOut => {
                    timed_out()
                }
                source => ClockError::Query {
                    server: server.to_owned(),
                    source,
                },
            })
    };
    let result = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| timed_out())??;
    Ok((
        result.stratum(),
        clock_select::Sample {
            offset_ms: result.clock_offset().as_secs_f64() * 1e3,
            delay_ms: result.round_trip_delay().as_secs_f64() * 1e3,
        },
    ))
}

async fn resolve(server: &str, host: &str, port: u16) -> Result<SocketAddr, ClockError> {
    let resolve_error = |source| ClockError::Resolve {
        server: server.to_owned(),
        source,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| resolve_error(std::io::Error::new(ErrorKind::NotFound, "no addresses")))
}

#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Addr(SocketAddr),
    Host(&'a str, u16),
}

/// `host:port`, `ipv4:port` or `[ipv6]:port`; the port is required and not 0.
fn parse_server(server: &str) -> Result<Target<'_>, ClockError> {
    let bad = |reason| ClockError::BadAddress {
        server: server.to_owned(),
        reason,
    };
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(bad("port 0")),
            _ => Ok(Target::Addr(addr)),
        };
    }
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| bad("missing :port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return Err(bad("IPv6 addresses go in brackets: [::1]:123"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(bad("whitespace in host"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(bad("port 0")),
        Ok(port) => Ok(Target::Host(host, port)),
        Err(_) => Err(bad("port is not a number in 1..=65535")),
    }
}

/// The pure state behind `ServerClock`: the last good sync, if any, and the last step
/// refused since it.
#[derive(Debug, Default)]
struct State {
    last_good: Option<GoodSync>,
    step_refused: Option<StepRefused>,
}

#[derive(Clone, Debug)]
struct GoodSync {
    info: NtpInfo,
    /// Applied to the system clock by `now()`.
    offset: TimeDelta,
    /// Monotonic time of the sync, for its age.
    at: Instant,
}

impl GoodSync {
    /// Validates one measurement (seconds as rsntp reports them) taken at `system_now`/`at`.
    fn from_measurement(
        server: &str,
        stratum: u8,
        offset_secs: f64,
        delay_secs: f64,
        system_now: DateTime<Utc>,
        at: Instant,
    ) -> Result<Self, ClockError> {
        let bad = |reason| ClockError::BadReply {
            server: server.to_owned(),
            reason,
        };
        if !delay_secs.is_finite() {
            return Err(bad("round-trip delay is not a finite number"));
        }
        let offset = offset_from_secs(offset_secs).ok_or_else(|| bad("offset out of range"))?;
        let synced_at = system_now
            .checked_add_signed(offset)
            .ok_or_else(|| bad("offset out of range"))?;
        Ok(Self {
            info: NtpInfo {
                server: server.to_owned(),
                stratum,
                offset_ms: offset_secs * 1e3,
                delay_ms: delay_secs * 1e3,
                synced_at,
                agreeing: 1,
                step_refused: None,
            },
            offset,
            at,
        })
    }
}

/// Seconds (possibly negative) to a `TimeDelta`; `None` for NaN, infinities or overflow.
fn offset_from_secs(secs: f64) -> Option<TimeDelta> {
    let magnitude = Duration::try_from_secs_f64(secs.abs()).ok()?;
    let magnitude = TimeDelta::from_std(magnitude).ok()?;
    Some(if secs < 0.0 { -magnitude } else { magnitude })
}

impl State {
    fn now(&self, system_now: DateTime<Utc>) -> DateTime<Utc> {
        match &self.last_good {
            // The offset was checked against the clock when recorded; should the system clock
            // have since moved to the edge of chrono's range, fall back to it rather than panic.
            Some(sync) => system_now
                .checked_add_signed(sync.offset)
                .unwrap_or(system_now),
            None => system_now,
        }
    }

    fn status(&self, stale_after: Duration, mono_now: Instant) -> ClockStatus {
        match &self.last_good {
            None => ClockStatus {
                source: ClockSource::System,
                state: SyncState::Unsynced,
                ntp: None,
            },
            Some(sync) => {
                let age = mono_now.saturating_duration_since(sync.at);
                ClockStatus {
                    source: ClockSource::Ntp,
                    state: if age < stale_after {
                        SyncState::Synced
                    } else {
                        SyncState::Stale
                    },
                    ntp: Some(NtpInfo {
                        step_refused: self.step_refused.clone(),
                        ..sync.info.clone()
                    }),
                }
            }
        }
    }

    /// Keeps the newer of two syncs, so overlapping `sync_once` calls cannot roll back; a
    /// sync taken clears the refused step.
    fn record(&mut self, sync: GoodSync) {
        if self
            .last_good
            .as_ref()
            .is_none_or(|previous| sync.at >= previous.at)
        {
            self.last_good = Some(sync);
            self.step_refused = None;
        }
    }

    /// A step refused: the offset in use stays, and the refusal shows.
    fn refuse(&mut self, refused: StepRefused) {
        self.step_refused = Some(refused);
    }

    /// The offset in use, in milliseconds; `None` before the first sync.
    fn offset_ms(&self) -> Option<f64> {
        self.last_good.as_ref().map(|s| s.info.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE_AFTER: Duration = Duration::from_secs(300);

    fn system_t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00.250Z")
            .expect("literal is RFC 3339")
            .with_timezone(&Utc)
    }

    fn sync(offset_secs: f64, at: Instant) -> GoodSync {
        GoodSync::from_measurement("ntp.test:123", 2, offset_secs, 0.004, system_t0(), at)
            .expect("finite, small offset")
    }

    #[test]
    fn starts_unsynced_on_the_system_clock() {
        let state = State::default();
        assert_eq!(state.now(system_t0()), system_t0());
        assert_eq!(
            state.status(STALE_AFTER, Instant::now()),
            ClockStatus {
                source: ClockSource::System,
                state: SyncState::Unsynced,
                ntp: None,
            }
        );
    }

    #[test]
    fn synced_until_stale_after_then_stale_with_the_offset_kept() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(1.5, t0));

        let synced = state.status(STALE_AFTER, t0);
        assert_eq!(synced.source, ClockSource::Ntp);
        assert_eq!(synced.state, SyncState::Synced);
        let info = synced.ntp.expect("synced has NTP info");
        assert_eq!(info.server, "ntp.test:123");
        assert_eq!(info.stratum, 2);
        assert_eq!(info.offset_ms, 1500.0);
        assert_eq!(info.delay_ms, 4.0);
        assert_eq!(info.synced_at, system_t0() + TimeDelta::milliseconds(1500));

        let just_before = t0 + STALE_AFTER - Duration::from_millis(1);
        assert_eq!(
            state.status(STALE_AFTER, just_before).state,
            SyncState::Synced
        );

        let stale = state.status(STALE_AFTER, t0 + STALE_AFTER);
        assert_eq!(stale.state, SyncState::Stale);
        assert_eq!(stale.source, ClockSource::Ntp);
        assert_eq!(stale.ntp.map(|n| n.offset_ms), Some(1500.0));
        // The offset still applies while stale.
        assert_eq!(
            state.now(system_t0()),
            system_t0() + TimeDelta::milliseconds(1500)
        );
    }

    #[test]
    fn a_new_sync_makes_a_stale_clock_synced_again() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.1, t0));
        let later = t0 + 2 * STALE_AFTER;
        assert_eq!(state.status(STALE_AFTER, later).state, SyncState::Stale);
        state.record(sync(-0.2, later));
        let status = state.status(STALE_AFTER, later);
        assert_eq!(status.state, SyncState::Synced);
        assert_eq!(status.ntp.map(|n| n.offset_ms), Some(-200.0));
        assert_eq!(
            state.now(system_t0()),
            system_t0() - TimeDelta::milliseconds(200)
        );
    }

    #[test]
    fn an_older_sync_does_not_replace_a_newer_one() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.5, t0 + Duration::from_secs(10)));
        state.record(sync(9.0, t0));
        assert_eq!(
            state.now(system_t0()),
            system_t0() + TimeDelta::milliseconds(500)
        );
    }

    #[test]
    fn a_clock_running_backwards_does_not_panic() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.0, t0 + Duration::from_secs(5)));
        // An `Instant` before the sync: age saturates at zero.
        assert_eq!(state.status(STALE_AFTER, t0).state, SyncState::Synced);
    }

    #[test]
    fn zero_stale_after_is_stale_at_once() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.0, t0));
        assert_eq!(state.status(Duration::ZERO, t0).state, SyncState::Stale);
    }

    #[test]
    fn unusable_measurements_are_errors() {
        let t0 = Instant::now();
        for (offset, delay) in [
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (f64::NEG_INFINITY, 0.0),
            (1e30, 0.0),
            (-1e30, 0.0),
            (0.0, f64::NAN),
        ] {
            let result = GoodSync::from_measurement("s:1", 3, offset, delay, system_t0(), t0);
            assert!(
                matches!(result, Err(ClockError::BadReply { .. })),
                "offset {offset}, delay {delay}: {result:?}"
            );
        }
        // A large but representable offset (a system clock years off) is what NTP is for.
        let years = 10.0 * 365.0 * 86_400.0;
        assert!(GoodSync::from_measurement("s:1", 3, -years, 0.0, system_t0(), t0).is_ok());
    }

    #[test]
    fn server_addresses() {
        let v4: SocketAddr = "127.0.0.1:123".parse().expect("literal");
        let v6: SocketAddr = "[::1]:4123".parse().expect("literal");
        assert_eq!(
            parse_server("127.0.0.1:123").expect("valid"),
            Target::Addr(v4)
        );
        assert_eq!(parse_server("[::1]:4123").expect("valid"), Target::Addr(v6));
        assert_eq!(
            parse_server("pool.ntp.org:123").expect("valid"),
            Target::Host("pool.ntp.org", 123)
        );
        assert_eq!(
            parse_server("localhost:65535").expect("valid"),
            Target::Host("localhost", 65535)
        );
        for (server, reason) in [
            ("", "missing :port"),
            ("pool.ntp.org", "missing :port"),
            ("127.0.0.1", "missing :port"),
            (":123", "empty host"),
            ("pool.ntp.org:", "port is not a number in 1..=65535"),
            ("pool.ntp.org:ntp", "port is not a number in 1..=65535"),
            ("pool.ntp.org:65536", "port is not a number in 1..=65535"),
            ("pool.ntp.org:-1", "port is not a number in 1..=65535"),
            ("pool.ntp.org:0", "port 0"),
            ("127.0.0.1:0", "port 0"),
            ("::1:123", "IPv6 addresses go in brackets: [::1]:123"),
            ("[::1]", "IPv6 addresses go in brackets: [::1]:123"),
            ("pool ntp.org:123", "whitespace in host"),
        ] {
            match parse_server(server) {
                Err(ClockError::BadAddress {
                    server: s,
                    reason: r,
                }) => {
                    assert_eq!((s.as_str(), r), (server, reason));
                }
                other => panic!("{server:?}: expected BadAddress, got {other:?}"),
            }
        }
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_interval() {
        let interval = Duration::from_secs(64);
        let delays: Vec<u64> = (1..=9)
            .map(|n| retry_delay(n, interval).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(retry_delay(u32::MAX, interval), interval);
        assert_eq!(retry_delay(0, interval), FIRST_RETRY);
    }

    #[test]
    fn status_json() {
        let unsynced = State::default().status(STALE_AFTER, Instant::now());
        assert_eq!(
            serde_json::to_value(&unsynced).expect("serializable"),
            serde_json::json!({"source": "system", "state": "unsynced", "ntp": null})
        );

        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.0125, t0));
        assert_eq!(
            serde_json::to_value(state.status(STALE_AFTER, t0)).expect("serializable"),
            serde_json::json!({
                "source": "ntp",
                "state": "synced",
                "ntp": {
                    "server": "ntp.test:123",
                    "stratum": 2,
                    "offset_ms": 12.5,
                    "delay_ms": 4.0,
                    "synced_at": "2026-03-01T12:00:00.262Z",
                    "agreeing": 1,
                    "step_refused": null,
                },
            })
        );
        assert_eq!(
            serde_json::to_value(state.status(STALE_AFTER, t0 + STALE_AFTER))
                .expect("serializable")["state"],
            "stale"
        );
    }

    #[test]
    fn a_refused_step_shows_until_an_offset_is_taken_again() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.record(sync(0.0125, t0));
        state.refuse(StepRefused {
            server: "ntp.test:123".into(),
            step_ms: 5_000.0,
            at: system_t0(),
        });
        let status = state.status(STALE_AFTER, t0);
        assert_eq!(
            status.state,
            SyncState::Synced,
            "the state values stay as they are"
        );
        let ntp = status.ntp.expect("synced");
        assert_eq!(ntp.offset_ms, 12.5, "the offset in use stays");
        assert_eq!(ntp.step_refused.expect("shown").step_ms, 5_000.0);
        assert_eq!(
            state.now(system_t0()),
            system_t0() + TimeDelta::microseconds(12_500)
        );
        state.record(sync(0.013, t0 + Duration::from_secs(1)));
        assert!(state
            .status(STALE_AFTER, t0)
            .ntp
            .unwrap()
            .step_refused
            .is_none());
    }

    #[tokio::test]
    async fn no_servers_stays_unsynced() {
        let clock = ServerClock::new(ClockConfig::default());
        assert!(matches!(
            clock.sync_once().await,
            Err(ClockError::NoServers)
        ));
        assert_eq!(clock.status().state, SyncState::Unsynced);

        let shutdown = CancellationToken::new();
        let run = tokio::spawn(clock.clone().run(shutdown.clone()));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        assert_eq!(clock.status().state, SyncState::Unsynced);
    }

    #[tokio::test]
    async fn a_bad_address_is_an_error_not_a_panic() {
        let clock = ServerClock::new(ClockConfig {
            servers: vec!["no-port-here".into(), "[::1".into()],
            ..ClockConfig::default()
        });
        match clock.sync_once().await {
            Err(ClockError::AllServersFailed(errors)) => {
                assert_eq!(errors.len(), 2);
                assert!(errors
                    .iter()
                    .all(|e| matches!(e, ClockError::BadAddress { .. })));
            }
            other => panic!("expected AllServersFailed, got {other:?}"),
        }
        let status = clock.status();
        assert_eq!(
            (status.source, status.state),
            (ClockSource::System, SyncState::Unsynced)
        );
    }
}
