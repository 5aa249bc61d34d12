//! Cameras against a running `slotcast server all`: a reservation names a camera,
//! and inside its window the streamer pulls it with retina (over TCP or UDP) and serves it as
//! HLS like a pushed stream. The camera is GStreamer's RTSP server (tests/support/camera.py);
//! ffmpeg reads the HLS back. A camera absent at the opening, or killed mid-slot, is retried
//! until it comes; a wrong password is reported and retried slowly; the password is found
//! nowhere: not in the events, the outbox, any API answer, or the server's debug log.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::camera::Camera;
use support::nats::free_tcp_port;
use support::streaming::{
    announce, ffmpeg_read_frames, get_text, ingest_reports, wait_for_text, Stack,
};
use support::terminal::{output, Terminal};
use support::{time, ts, TestDb};

const LISTENER: &str = "carrier-a=127.0.0.2:0";
const USER: &str = "cam-operator-7";
const PASSWORD: &str = "Cam-pa55:w@rd!";

/// A booking on s1 for `[now + start_in, + seconds)` naming `source`: (id, stream key,
/// closes_at).
async fn book_camera(
    stack: &Stack,
    start_in: i64,
    seconds: i64,
    source: Value,
) -> (String, String, DateTime<Utc>, Value) {
    let start = Utc::now() + chrono::Duration::seconds(start_in);
    let end = start + chrono::Duration::seconds(seconds);
    let body = json!({"server_id": "s1", "start": ts(start), "end": ts(end), "source": source});
    let (status, booked) = stack.api.post("/v1/reservations", &stack.alice, body).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().expect("id").to_string();
    let key = support::streaming::find_key(&booked).expect("stream key");
    let closes_at = time(&booked["setting"]["closes_at"]);
    (id, key, closes_at, booked)
}

/// Waits (bounded) until the history holds at least `n` reports of `kind`; returns them all.
async fn wait_reports(db: &TestDb, id: &str, kind: &str, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let reports = ingest_reports(db, id).await;
        if reports.iter().filter(|r| r["kind"] == kind).count() >= n {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {kind} reports for {id} within {limit:?}: {reports:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the reservation's status is `status`.
async fn wait_status(stack: &Stack, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = status_of(stack, id).await;
        if now["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is not {status}: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffmpeg reads each of these playlists for `seconds`, all at once: frames decoded by each.
fn read_all(urls: &[String], seconds: u32) -> Vec<(usize, String)> {
    std::thread::scope(|s| {
        let reads: Vec<_> = urls
            .iter()
            .map(|u| s.spawn(move || ffmpeg_read_frames(u, seconds)))
            .collect();
        reads
            .into_iter()
            .map(|r| r.join().expect("ffmpeg read"))
            .collect()
    })
}

/// Sleeps until `at` (plus a margin for the `closed` message and the last reports).
async fn until_after(at: DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(1500)).await;
}

fn reported_at(r: &Value) -> DateTime<Utc> {
    time(&r["reported_at"])
}

fn of_kind<'a>(reports: &'a [Value], kind: &str) -> Vec<&'a Value> {
    reports.iter().filter(|r| r["kind"] == kind).collect()
}

async fn status_of(stack: &Stack, id: &str) -> Value {
    let (code, body) = stack
        .api
        .get(&format!("/v1/reservations/{id}"), &stack.alice)
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_with_a_login_is_pulled_over_tcp_and_over_udp_and_its_password_shows_nowhere() {
    let db = TestDb::new().await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let stack = Stack::start_to(
        &db,
        "s1",
        LISTENER,
        &[("SLOTCAST_LOG", "debug")],
        Stdio::from(log.reopen().expect("log handle")),
    );
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start(USER, PASSWORD);

    // What the API refuses, field by field, and without echoing the login.
    for (source, field) in [
        (
            json!({"pull_url": format!("rtsp://{USER}:{PASSWORD}@127.0.0.1/cam")}),
            "source.pull_url",
        ),
        (
            json!({"pull_url": camera.url, "password": PASSWORD}),
            "source.username",
        ),
        (
            json!({"pull_url": camera.url, "transport": "sctp"}),
            "source.transport",
        ),
        (
            json!({"pull_url": "http://127.0.0.1/cam"}),
            "source.pull_url",
        ),
        (
            json!({"pull_url": "rtsp://127.0.0.1:99999/cam"}),
            "source.pull_url",
        ),
        (
            json!({"pull_url": camera.url, "username": "a:b", "password": PASSWORD}),
            "source.username",
        ),
    ] {
        let start = Utc::now() + chrono::Duration::seconds(60);
        let body = json!({"server_id": "s1", "start": ts(start),
            "end": ts(start + chrono::Duration::seconds(60)), "source": source});
        let (status, answer) = stack.api.post("/v1/reservations", &stack.alice, body).await;
        assert!(status == 400 || status == 422, "{status} {answer}");
        assert!(answer.to_string().contains(field), "{field}: {answer}");
        assert!(!answer.to_string().contains("pa55"), "{answer}");
    }

    // Over TCP, booked by the broadcaster's terminal with the password in the environment.
    let t = Terminal::new();
    let login = t.run(&["login", "--api", &stack.api.base, "--token", &stack.alice]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let pull = camera.url.replace("rtsp://", &format!("rtsp://{USER}@"));
    let mut cmd = t.command(&[
        "--json",
        "book",
        "--server",
        "s1",
        "--start",
        "+4s",
        "--duration",
        "8s",
        "--pull",
        &pull,
    ]);
    cmd.env("SLOTCAST_CAMERA_PASSWORD", PASSWORD);
    let booked_tcp = output(cmd);
    assert_eq!(
        booked_tcp.code, 0,
        "{}{}",
        booked_tcp.stdout, booked_tcp.stderr
    );
    let tcp = booked_tcp.json();
    let tcp_id = tcp["id"].as_str().expect("id").to_string();
    assert_eq!(
        tcp["source"],
        json!({"pull_url": camera.url, "transport": "tcp", "login": true})
    );

    // Over UDP, booked through the API.
    let source = json!({"pull_url": camera.url, "username": USER, "password": PASSWORD,
        "transport": "udp"});
    let (udp_id, udp_key, closes_at, udp) = book_camera(&stack, 4, 8, source).await;
    assert_eq!(udp["source"]["transport"], "udp");

    for id in [&tcp_id, &udp_id] {
        let reports = wait_reports(&db, id, "connected", 1, Duration::from_secs(20)).await;
        let connected = of_kind(&reports, "connected")[0].clone();
        assert_eq!(connected["codec"], "h264,aac", "{connected}");
        assert_eq!(
            connected["remote_addr"],
            format!("127.0.0.1:{}", camera.port)
        );
    }
    // Nobody may push to a camera's reservation, even with its key.
    let (code, reason) = announce(stack.rtsp("carrier-a"), &udp_id, &udp_key);
    assert_eq!(code, 403, "{reason}");
    assert!(reason.contains("pulls a camera"), "{reason}");

    let urls: Vec<String> = [&tcp_id, &udp_id]
        .iter()
        .map(|id| stack.hls(&format!("/hls/{id}/index.m3u8")))
        .collect();
    for url in &urls {
        wait_for_text(url, "a segment", Duration::from_secs(10), |p| {
            p.contains("#EXTINF")
        })
        .await;
    }
    for (decoded, errors) in read_all(&urls, 4) {
        assert!(decoded >= 50, "ffmpeg decoded {decoded} frames: {errors}");
    }
    until_after(closes_at).await;
    for id in [&tcp_id, &udp_id] {
        wait_status(&stack, id, "ended").await;
        let reports = wait_reports(&db, id, "disconnected", 1, Duration::from_secs(10)).await;
        // The one failure is the refused push, which the history records too.
        let failed: Vec<_> = of_kind(&reports, "failed")
            .into_iter()
            .filter(|r| {
                !r["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("pulls a camera"))
            })
            .collect();
        assert!(failed.is_empty(), "{id}: {reports:#?}");
        let last = reports.last().expect("reports");
        assert_eq!(last["kind"], "disconnected", "{reports:#?}");
        assert_eq!(last["reason"], "the window closed", "{reports:#?}");
        let (code, playlist) = get_text(&stack.hls(&format!("/hls/{id}/index.m3u8"))).await;
        assert_eq!(code, 200);
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    }

    // The password, in every form it could leak in, shows nowhere.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let forms = [
        PASSWORD.to_string(),
        "pa55".to_string(),
        basic,
        USER.to_string(),
    ];
    let mut seen = vec![
        (
            "events",
            db.json("SELECT json_agg(json_build_array(payload, metadata)) FROM events")
                .await
                .to_string(),
        ),
        (
            "slot outbox",
            db.json("SELECT json_agg(ingest) FROM slot_boundaries")
                .await
                .to_string(),
        ),
        (
            "idempotency table",
            db.json("SELECT json_agg(idempotency) FROM idempotency")
                .await
                .to_string(),
        ),
        ("terminal's booking answer", booked_tcp.stdout.clone()),
        ("API booking answer", udp.to_string()),
        (
            "server log",
            std::fs::read_to_string(log.path()).unwrap_or_default(),
        ),
    ];
    for id in [&tcp_id, &udp_id] {
        for path in [
            format!("/v1/reservations/{id}"),
            format!("/v1/reservations/{id}/history"),
            "/v1/reservations".to_string(),
        ] {
            let (_, body) = stack.api.get(&path, &stack.alice).await;
            seen.push(("API", body.to_string()));
        }
    }
    for (place, text) in &seen {
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "the password is in the {place}: {text}"
            );
        }
    }
    let history = stack
        .api
        .get(&format!("/v1/reservations/{udp_id}/history"), &stack.alice)
        .await
        .1;
    assert_eq!(
        history["events"][0]["data"]["source"]["credentials"], "(sealed)",
        "{history}"
    );
    // And the log did see the pulls (so it was a log worth searching).
    let log_text = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(log_text.contains("camera live"), "{log_text}");
    // retina's SETUP answers: one camera session over UDP ports, one interleaved on TCP.
    assert!(log_text.contains("client_port="), "{log_text}");
    assert!(log_text.contains("interleaved="), "{log_text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_absent_at_the_opening_is_retried_and_pulled_once_it_appears() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", LISTENER);
    stack.register("s1", &["carrier-a"]).await;
    let port = free_tcp_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let (id, _, closes_at, _) = book_camera(&stack, 2, 12, json!({"pull_url": url})).await;

    let reports = wait_reports(&db, &id, "failed", 3, Duration::from_secs(15)).await;
    let camera = Camera::start_on(port, None);
    let failed = of_kind(&reports, "failed");
    // A closed port: fixed words, not the error (no port, no "connection refused").
    assert_eq!(
        failed[0]["reason"], "the camera could not be reached",
        "{reports:#?}"
    );
    // Backing off: 1 s, then 2 s between attempts, not a fixed retry.
    let first = reported_at(failed[1]) - reported_at(failed[0]);
    let second = reported_at(failed[2]) - reported_at(failed[1]);
    assert!(
        first >= chrono::Duration::milliseconds(900)
            && second >= first + chrono::Duration::milliseconds(500),
        "retried without backing off: {reports:#?}"
    );
    wait_reports(&db, &id, "connected", 1, Duration::from_secs(15)).await;
    let url = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_for_text(&url, "a segment", Duration::from_secs(10), |p| {
        p.contains("#EXTINF")
    })
    .await;
    let (decoded, errors) = ffmpeg_read_frames(&url, 3);
    assert!(decoded >= 25, "ffmpeg decoded {decoded} frames: {errors}");
    until_after(closes_at).await;
    wait_status(&stack, &id, "ended").await;
    drop(camera);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_killed_mid_slot_is_pulled_again_after_a_discontinuity() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", LISTENER);
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start(USER, PASSWORD);
    let port = camera.port;
    let source = json!({"pull_url": camera.url, "username": USER, "password": PASSWORD});
    let (id, _, closes_at, _) = book_camera(&stack, 2, 16, source).await;

    wait_reports(&db, &id, "connected", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    camera.kill();
    let reports = wait_reports(&db, &id, "disconnected", 1, Duration::from_secs(15)).await;
    let dropped = of_kind(&reports, "disconnected")[0].clone();
    assert!(
        dropped["reason"]
            .as_str()
            .is_some_and(|r| !r.contains("window")),
        "{dropped}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _camera = Camera::start_on(port, Some((USER, PASSWORD)));
    wait_reports(&db, &id, "connected", 2, Duration::from_secs(15)).await;

    let url = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_for_text(&url, "a discontinuity", Duration::from_secs(10), |p| {
        p.contains("#EXT-X-DISCONTINUITY")
    })
    .await;
    until_after(closes_at).await;
    wait_for_text(&url, "the end", Duration::from_secs(10), |p| {
        p.contains("#EXT-X-ENDLIST")
    })
    .await;
    let (decoded, errors) = ffmpeg_read_frames(&url, 20);
    assert!(decoded >= 150, "ffmpeg decoded {decoded} frames: {errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_camera_password_is_a_clear_failure_retried_slowly_not_a_storm() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", LISTENER);
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start(USER, PASSWORD);
    let source = json!({"pull_url": camera.url, "username": USER, "password": "not-it"});
    let (id, _, closes_at, _) = book_camera(&stack, 2, 12, source).await;

    until_after(closes_at).await;
    let reports = ingest_reports(&db, &id).await;
    let failed = of_kind(&reports, "failed");
    assert_eq!(failed.len(), reports.len(), "{reports:#?}");
    // Attempts at the opening, 5 s and 15 s later: two in a 12 s window.
    assert!((2..=3).contains(&failed.len()), "{reports:#?}");
    for f in &failed {
        let reason = f["reason"].as_str().unwrap_or_default();
        assert_eq!(reason, "the camera refused the login");
    }
    for pair in failed.windows(2) {
        let gap = reported_at(pair[1]) - reported_at(pair[0]);
        assert!(gap >= chrono::Duration::milliseconds(4500), "{reports:#?}");
    }
    wait_status(&stack, &id, "missed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_outside_the_operators_camera_networks_is_not_pulled() {
    let db = TestDb::new().await;
    // Cameras only on 127.0.0.2; the camera stand-in is on 127.0.0.1.
    let stack = Stack::start_to(
        &db,
        "s1",
        LISTENER,
        &[("SLOTCAST_CAMERA_NETWORKS", "127.0.0.2/32")],
        Stdio::inherit(),
    );
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start_on(free_tcp_port(), None);
    let (id, _, closes_at, _) = book_camera(&stack, 2, 5, json!({"pull_url": camera.url})).await;

    until_after(closes_at).await;
    wait_status(&stack, &id, "missed").await;
    let reports = ingest_reports(&db, &id).await;
    assert!(!reports.is_empty(), "no report at all");
    for r in &reports {
        assert_eq!(r["kind"], "failed", "{reports:#?}");
        assert_eq!(
            r["reason"], "the camera's address is not in the networks cameras may be pulled from",
            "{reports:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_camera_networks_set_a_loopback_camera_is_refused() {
    let db = TestDb::new().await;
    // Unset (empty): public addresses only.
    let stack = Stack::start_to(
        &db,
        "s1",
        LISTENER,
        &[("SLOTCAST_CAMERA_NETWORKS", "")],
        Stdio::inherit(),
    );
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start_on(free_tcp_port(), None);
    let (id, _, _, _) = book_camera(&stack, 1, 4, json!({"pull_url": camera.url})).await;
    let reports = wait_reports(&db, &id, "failed", 1, Duration::from_secs(15)).await;
    for r in &reports {
        assert_eq!(r["kind"], "failed", "{reports:#?}");
        assert_eq!(
            r["reason"], "the camera's address is not in the networks cameras may be pulled from",
            "{reports:#?}"
        );
    }
    assert!(of_kind(&reports, "connected").is_empty(), "{reports:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_named_by_host_name_is_pulled_from_the_address_checked() {
    let db = TestDb::new().await;
    // `localhost` may also name ::1 (Debian's /etc/hosts): every address it gives must pass.
    let stack = Stack::start_to(
        &db,
        "s1",
        LISTENER,
        &[("SLOTCAST_CAMERA_NETWORKS", "127.0.0.0/8,::1")],
        Stdio::inherit(),
    );
    stack.register("s1", &["carrier-a"]).await;
    let camera = Camera::start_on(free_tcp_port(), None);
    // `localhost`, resolved once, checked against 127.0.0.0/8, connected to by address.
    let url = camera.url.replace("127.0.0.1", "localhost");
    assert!(url.contains("localhost"), "{url}");
    let (id, _, closes_at, _) = book_camera(&stack, 1, 8, json!({"pull_url": url})).await;
    wait_reports(&db, &id, "connected", 1, Duration::from_secs(15)).await;
    let playlist = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_for_text(&playlist, "a segment", Duration::from_secs(15), |p| {
        p.contains("#EXTINF")
    })
    .await;
    until_after(closes_at).await;
    wait_status(&stack, &id, "ended").await;
}
