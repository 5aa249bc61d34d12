//! `ServerClock` against a real NTP server: each test starts its own `chronyd` on a free
//! loopback UDP port (see [`Chrony`]). Everything stays on 127.0.0.1 and every wait is bounded.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use slotcast_api::clock::{ClockConfig, ClockError, ClockSource, NtpInfo, ServerClock, SyncState};
use tokio_util::sync::CancellationToken;

/// chrony answers as a `local stratum N` server with stratum N itself (not N + 1).
const LOCAL_STRATUM: u8 = 8;

/// A `chronyd` serving NTP on 127.0.0.1 from a private tempdir, killed on drop.
///
/// It runs with `-x` (never touches the system clock) and `-d` (foreground). `-U` lifts
/// chronyd's "must be root" check and `-u root` stops it dropping privileges to `_chrony`
/// when it is root (it could then not write its pid and drift files in our tempdir); together
/// they work both as root and as a normal user. `cmdport 0` and `bindcmdaddress /` disable
/// both command sockets, so nothing is shared with a system chronyd.
struct Chrony {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Chrony {
    fn start() -> Self {
        let chronyd = std::env::var_os("CHRONYD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/chronyd"));
        let dir = tempfile::tempdir().expect("create tempdir");
        let port = free_udp_port();
        let conf = dir.path().join("chrony.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "port {port}\n\
                 bindaddress 127.0.0.1\n\
                 local stratum {LOCAL_STRATUM}\n\
                 allow 127.0.0.1\n\
                 cmdport 0\n\
                 bindcmdaddress /\n\
                 pidfile {d}/chronyd.pid\n\
                 driftfile {d}/drift\n"
            ),
        )
        .expect("write chrony.conf");
        let log = std::fs::File::create(dir.path().join("chronyd.log")).expect("create log");
        let child = Command::new(&chronyd)
            .args(["-x", "-d", "-U", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (is chrony installed?)", chronyd.display()));
        Self { child, port, dir }
    }

    /// The `host:port` to put in `ClockConfig::servers`.
    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chronyd.log")).unwrap_or_default()
    }

    /// Syncs `clock` (configured with this server) once chrony answers. chrony answers from
    /// its first packet once its socket is bound, so this normally succeeds at once; the
    /// bounded retries only cover process start-up.
    async fn sync(&mut self, clock: &ServerClock) -> NtpInfo {
        let mut last_error = None;
        for _ in 0..50 {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("chronyd exited early ({exit}):\n{}", self.log());
            }
            match clock.sync_once().await {
                Ok(info) => return info,
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "chronyd on {} never answered: {last_error:?}\n{}",
            self.server(),
            self.log()
        );
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        // Ignore errors: the process may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral loopback UDP port")
        .port()
}

fn config(servers: &[String]) -> ClockConfig {
    ClockConfig {
        servers: servers.to_vec(),
        interval: Duration::from_secs(64),
        timeout: Duration::from_millis(500),
        stale_after: Duration::from_secs(300),
    }
}

/// |clock.now() - system clock| in milliseconds.
fn skew_from_system_ms(clock: &ServerClock) -> i64 {
    (clock.now() - Utc::now()).num_milliseconds().abs()
}

#[tokio::test]
async fn syncs_against_a_real_chrony() {
    let mut chrony = Chrony::start();
    let clock = ServerClock::new(config(&[chrony.server()]));
    assert_eq!(clock.status().state, SyncState::Unsynced);

    let before = Utc::now();
    let info = chrony.sync(&clock).await;
    let after = Utc::now();

    let status = clock.status();
    assert_eq!(status.state, SyncState::Synced);
    assert_eq!(status.source, ClockSource::Ntp);
    assert_eq!(status.ntp.as_ref(), Some(&info));
    assert_eq!(info.server, chrony.server());
    assert_eq!(info.stratum, LOCAL_STRATUM);
    // chrony on the same host serves the system clock.
    assert!(info.offset_ms.abs() < 50.0, "offset {} ms", info.offset_ms);
    assert!(
        (0.0..1000.0).contains(&info.delay_ms),
        "delay {} ms",
        info.delay_ms
    );
    let slack = chrono::TimeDelta::milliseconds(100);
    assert!(
        before - slack <= info.synced_at && info.synced_at <= after + slack,
        "synced_at {} not within [{before}, {after}]",
        info.synced_at
    );
    assert!(skew_from_system_ms(&clock) < 50);

    let json = serde_json::to_value(&status).expect("serializable");
    assert_eq!(json["source"], "ntp");
    assert_eq!(json["state"], "synced");
    assert_eq!(json["ntp"]["stratum"], LOCAL_STRATUM);
    // RFC 3339 UTC with milliseconds: 2026-03-01T12:00:00.123Z
    let synced_at = json["ntp"]["synced_at"].as_str().expect("a string");
    assert_eq!(synced_at.len(), 24, "{synced_at}");
    assert!(synced_at.ends_with('Z'), "{synced_at}");
}

#[tokio::test]
async fn the_first_server_that_answers_wins() {
    let mut chrony = Chrony::start();
    let nobody = format!("127.0.0.1:{}", free_udp_port());
    let clock = ServerClock::new(config(&[nobody, chrony.server()]));
    let info = chrony.sync(&clock).await;
    assert_eq!(info.server, chrony.server());
    assert_eq!(clock.status().state, SyncState::Synced);
}

#[tokio::test]
async fn unreachable_ntp_fails_within_the_timeout_and_stays_unsynced() {
    let nobody = format!("127.0.0.1:{}", free_udp_port());
    let config = config(&[nobody]);
    let timeout = config.timeout;
    let clock = ServerClock::new(config);

    let started = Instant::now();
    let result = tokio::time::timeout(timeout * 4, clock.sync_once())
        .await
        .expect("sync_once is bounded by its own timeout");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    match result {
        Err(ClockError::AllServersFailed(errors)) => {
            assert_eq!(errors.len(), 1);
            // Loopback usually refuses at once (ICMP port unreachable); a timeout is fine too.
            assert!(
                matches!(
                    errors[0],
                    ClockError::Query { .. } | ClockError::Timeout { .. }
                ),
                "{errors:?}"
            );
        }
        other => panic!("expected AllServersFailed, got {other:?}"),
    }

    let status = clock.status();
    assert_eq!(status.state, SyncState::Unsynced);
    assert_eq!(status.source, ClockSource::System);
    assert_eq!(status.ntp, None);
    assert!(skew_from_system_ms(&clock) < 50);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Bound but never answers: the request is swallowed, so only the timeout can end it.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind loopback UDP");
    let server = silent.local_addr().expect("bound address").to_string();
    let config = config(&[server]);
    let timeout = config.timeout;
    let clock = ServerClock::new(config);

    let started = Instant::now();
    let result = tokio::time::timeout(timeout * 4, clock.sync_once())
        .await
        .expect("sync_once is bounded by its own timeout");
    let elapsed = started.elapsed();
    assert!(
        timeout - Duration::from_millis(50) <= elapsed
            && elapsed < timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    match result {
        Err(ClockError::AllServersFailed(errors)) => {
            assert!(
                matches!(errors[..], [ClockError::Timeout { .. }]),
                "{errors:?}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(clock.status().state, SyncState::Unsynced);
}

#[tokio::test]
async fn goes_stale_after_chrony_dies_and_keeps_the_offset() {
    let mut chrony = Chrony::start();
    let stale_after = Duration::from_secs(1);
    let clock = ServerClock::new(ClockConfig {
        stale_after,
        ..config(&[chrony.server()])
    });
    let info = chrony.sync(&clock).await;
    assert_eq!(clock.status().state, SyncState::Synced);

    drop(chrony);
    assert!(clock.sync_once().await.is_err(), "chrony is gone");
    tokio::time::sleep(stale_after).await;

    let status = clock.status();
    assert_eq!(status.state, SyncState::Stale);
    assert_eq!(status.source, ClockSource::Ntp);
    assert_eq!(status.ntp, Some(info), "the last good sync is kept");
    assert!(skew_from_system_ms(&clock) < 50);
}

#[tokio::test]
async fn run_syncs_and_returns_promptly_on_shutdown() {
    let chrony = Chrony::start();
    let clock = ServerClock::new(config(&[chrony.server()]));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(clock.clone().run(shutdown.clone()));

    // run() syncs at start and retries failures after 1 s, 2 s, …: well within 10 s.
    let mut synced = false;
    for _ in 0..100 {
        if clock.status().state == SyncState::Synced {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "run() did not sync:\n{}", chrony.log());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run() returns within 1 s of shutdown")
        .expect("run() does not panic");
}

#[tokio::test]
async fn run_returns_promptly_on_shutdown_in_the_middle_of_a_query() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind loopback UDP");
    let clock = ServerClock::new(ClockConfig {
        timeout: Duration::from_secs(30),
        ..config(&[silent.local_addr().expect("bound address").to_string()])
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(clock.clone().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run() returns within 1 s of shutdown")
        .expect("run() does not panic");
    assert_eq!(clock.status().state, SyncState::Unsynced);
}
