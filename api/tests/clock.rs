//! `ServerClock` against a real NTP server: each test starts its own `chronyd` on a free
//! loopback UDP port (see [`Chrony`]). Everything stays on 127.0.0.1 and every wait is bounded.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use chrono::Utc;
use slotcast_api::clock::{ClockConfig, ClockError, ClockSource, NtpInfo, ServerClock, SyncState};
use tokio_util::sync::CancellationToken;

// The same real-chrony harness the end-to-end tests use.
#[path = "../../tests/support/chrony.rs"]
mod chrony;
use chrony::{free_udp_port, Chrony, LOCAL_STRATUM};

/// Syncs `clock` (configured with `chrony`) once chrony answers. chrony answers from its first
/// packet once its socket is bound, so this normally succeeds at once; the bounded retries
/// only cover process start-up.
async fn sync(chrony: &mut Chrony, clock: &ServerClock) -> NtpInfo {
    let mut last_error = None;
    for _ in 0..50 {
        if chrony.exited() {
            panic!("chronyd exited early:\n{}", chrony.log());
        }
        match clock.sync_once().await {
            Ok(info) => return info,
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "chronyd on {} never answered: {last_error:?}\n{}",
        chrony.server(),
        chrony.log()
    );
}

fn config(servers: &[String]) -> ClockConfig {
    ClockConfig {
        servers: servers.to_vec(),
        interval: Duration::from_secs(64),
        timeout: Duration::from_millis(500),
        stale_after: Duration::from_secs(300),
        ..ClockConfig::default()
    }
}

/// |clock.now() - system clock| in milliseconds.
/// How far the clock's now is outside the system clock's, read just before and just after it
/// (0 inside): a pause between the reads (a loaded machine) cannot make it look skewed.
fn skew_from_system_ms(clock: &ServerClock) -> i64 {
    let before = Utc::now();
    let now = clock.now();
    let after = Utc::now();
    if now < before {
        (before - now).num_milliseconds()
    } else if now > after {
        (now - after).num_milliseconds()
    } else {
        0
    }
}

#[tokio::test]
async fn syncs_against_a_real_chrony() {
    let mut chrony = Chrony::start();
    let clock = ServerClock::new(config(&[chrony.server()]));
    assert_eq!(clock.status().state, SyncState::Unsynced);

    let before = Utc::now();
    let info = sync(&mut chrony, &clock).await;
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
async fn a_server_that_answers_is_taken_over_one_that_does_not() {
    let mut chrony = Chrony::start();
    let nobody = format!("127.0.0.1:{}", free_udp_port());
    let clock = ServerClock::new(config(&[nobody, chrony.server()]));
    let info = sync(&mut chrony, &clock).await;
    assert_eq!(info.server, chrony.server());
    assert_eq!(clock.status().state, SyncState::Synced);
}

#[tokio::test]
async fn unreachable_ntp_fails_within_the_timeout_and_stays_unsynced() {
    let nobody = format!("127.0.0.1:{}", free_udp_port());
    let config = config(&[nobody]);
    let timeout = config.timeout;
    let clock = ServerClock::new(config);

    // Bounded: it ends before four times its own timeout (never a wall-time assertion).
    let result = tokio::time::timeout(timeout * 4, clock.sync_once())
        .await
        .expect("sync_once is bounded by its own timeout");
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
    // It waited its timeout out (a lower bound: a slow machine cannot break it), and no
    // longer than four times it (the outer timeout).
    let elapsed = started.elapsed();
    assert!(
        timeout - Duration::from_millis(50) <= elapsed,
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
    let info = sync(&mut chrony, &clock).await;
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

#[tokio::test]
async fn a_jump_of_the_only_server_is_refused_and_the_offset_kept() {
    let mut chrony = Chrony::start();
    let clock = ServerClock::new(config(&[chrony.server()]));
    let first = sync(&mut chrony, &clock).await;
    chrony.restart_shifted(Some("-4s"));
    // The restarted chronyd answers within a few tries.
    let mut refused = None;
    for _ in 0..50 {
        match clock.sync_once().await {
            Err(ClockError::StepRefused { step_ms, .. }) => {
                refused = Some(step_ms);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let step_ms = refused.expect("the jump was never refused");
    assert!((-4_200.0..-3_800.0).contains(&step_ms), "{step_ms}");
    let ntp = clock.status().ntp.expect("still synced");
    assert!((ntp.offset_ms - first.offset_ms).abs() < 50.0, "{ntp:?}");
    assert_eq!(ntp.step_refused.expect("shown").step_ms, step_ms);
    assert!(skew_from_system_ms(&clock) < 100);
}
