//! The streamer with real peers: ffmpeg and GStreamer publish by RTSP into reserved windows
//! on the dedicated-network listeners, ffmpeg and headless Chromium (hls.js) watch the
//! LL-HLS output, and the gates follow the slot clock over real NATS JetStream.

mod support;

use std::process::Command;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use rand::RngCore;
use support::streaming::{
    announce, book, ffmpeg_publish, ffmpeg_read_frames, get_text, gst_publish, publish_url,
    register, repo_root, segments, streamer_env, wait_ended, wait_for_text, wait_gate_open,
    wait_live, window, RawRtsp, Stack, StreamerProcess, SDP,
};
use support::TestDb;

const TWO_CARRIERS: &str = "carrier-a=127.0.0.2:0,carrier-b=127.0.0.3:0";

/// ANNOUNCE as a publisher would, on a fresh connection: the status, and the code of its
/// `Slotcast-Refusal` header if it has one.
fn refused(addr: std::net::SocketAddr, reservation: &str, key: &str) -> (u16, Option<String>) {
    let (status, _, answer) =
        RawRtsp::connect(addr).request("ANNOUNCE", &publish_url(addr, reservation, key), &[], SDP);
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    let code = head
        .lines()
        .find_map(|line| line.strip_prefix("Slotcast-Refusal: "))
        .map(|code| code.trim().to_string());
    (status, code)
}

/// The `SLOTCAST_SECRET_KEY` of a streamer environment.
fn secret_of(env: &[(String, String)]) -> &str {
    env.iter()
        .find(|(k, _)| k == "SLOTCAST_SECRET_KEY")
        .map(|(_, v)| v.as_str())
        .expect("a secret key")
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_publishes_over_tcp_and_viewers_watch_live_then_the_recording() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", TWO_CARRIERS);
    stack.register("s1", &["carrier-a", "carrier-b"]).await;
    // The publisher stops well before the window closes, and the watch page is done well
    // before the publisher stops: the page sees a live stream however slowly Chromium starts.
    let (start, end) = window(2, 28);
    let (id, key) = stack.book("s1", start, end).await;
    let addr = stack.rtsp("carrier-a");
    wait_gate_open(addr, &id, &key);

    let mut publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", 18);
    let playlist_url = stack.hls(&format!("/hls/{id}/index.m3u8"));
    let live = wait_live(&playlist_url).await;

    // Blocking reload: asking for the next segment holds until it exists.
    let next = segments(&live) + 1;
    let asked = std::time::Instant::now();
    let (status, blocked) = get_text(&format!("{playlist_url}?_HLS_msn={next}")).await;
    assert_eq!(status, 200, "{blocked}");
    assert!(
        blocked.contains(&format!("seg-{}.m4s", next - 1)) || segments(&blocked) >= next,
        "{blocked}"
    );
    assert!(
        asked.elapsed() < StdDuration::from_secs(3),
        "blocked for {:?}",
        asked.elapsed()
    );

    // A part and a segment are served with their MIME type and cache headers.
    let resp = reqwest::get(stack.hls(&format!("/hls/{id}/seg-0.m4s")))
        .await
        .expect("segment");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/iso.segment");
    assert!(resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = reqwest::get(&playlist_url).await.expect("playlist");
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(resp.headers()["cache-control"], "no-cache");

    // ffmpeg reads the live playlist back and decodes.
    let (frames, errors) = ffmpeg_read_frames(&playlist_url, 3);
    assert!(
        frames >= 50,
        "decoded {frames} frames live; errors: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reading live said: {errors}"
    );

    // The watch page in headless Chromium plays it.
    let watch = stack.hls(&format!("/watch/{id}"));
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser/watch.mjs"))
        .args([&watch, "--seconds", "8", "--min-advance", "2"])
        .args(["--expect-state", "live"])
        .output()
        .expect("node (scripts/services installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the watch page did not play live: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(
        publisher.wait(StdDuration::from_secs(30)).is_some(),
        "{}",
        publisher.describe()
    );

    // The window closes: the playlist ends and stays watchable as a recording.
    let ended = wait_ended(&playlist_url, 30).await;
    assert!(segments(&ended) >= 10, "{ended}");
    // On disk: the same final playlist, and the segments in one file with its index (older
    // segments than the newest few are served from there), not a file per segment.
    let on_disk = stack.recordings.path().join(&id);
    let deadline = std::time::Instant::now() + StdDuration::from_secs(5);
    while std::fs::read_to_string(on_disk.join("index.m3u8"))
        .ok()
        .as_ref()
        != Some(&ended)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(on_disk.join("index.m3u8")).ok(),
        Some(ended.clone())
    );
    let mut files: Vec<String> = std::fs::read_dir(&on_disk)
        .expect("the recording's directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["index.m3u8", "init.mp4", "segments.idx", "segments.m4s"]
    );
    let (frames, errors) = ffmpeg_read_frames(&playlist_url, 60);
    assert!(
        frames >= 250,
        "decoded {frames} frames of the recording; errors: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reading the recording said: {errors}"
    );
    let (_, status) = get_text(&stack.hls(&format!("/hls/{id}/status.json"))).await;
    assert!(status.contains("\"ended\""), "{status}");

    // The history has what the streamer reported.
    let (code, history) = stack
        .api
        .get(&format!("/v1/reservations/{id}/history"), &stack.alice)
        .await;
    assert_eq!(code, 200, "{history}");
    let text = history.to_string();
    assert!(
        text.contains("connected") && text.contains("disconnected"),
        "{text}"
    );
    let (_, reservation) = stack
        .api
        .get(&format!("/v1/reservations/{id}"), &stack.alice)
        .await;
    assert_eq!(reservation["status"], "ended", "{reservation}");

    // Metrics count what went through.
    let (_, metrics) = get_text(&stack.hls("/metrics")).await;
    assert!(
        metrics.contains("slotcast_streamer_frames_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("slotcast_streamer_frames_total 0\n"),
        "{metrics}"
    );
}

/// Both publishers log in with user `slotcast` and the key as the password: the streamer
/// (which shares the api's secret key) challenges for Digest first, and both use it.
#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_over_udp_and_gstreamer_publish_with_digest_auth_and_are_read_back() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", TWO_CARRIERS);
    stack.register("s1", &["carrier-a", "carrier-b"]).await;
    let (start, end) = window(2, 60);
    let (udp_id, udp_key) = stack.book("s1", start, end).await;
    let (gst_id, gst_key) = stack.book("s1", start, end).await;
    wait_gate_open(stack.rtsp("carrier-a"), &udp_id, &udp_key);

    let _udp = ffmpeg_publish(
        &format!(
            "rtsp://slotcast:{udp_key}@{}/live/{udp_id}",
            stack.rtsp("carrier-a")
        ),
        "udp",
        20,
    );
    let mut gst = gst_publish(stack.rtsp("carrier-b"), &gst_id, &gst_key, 20);
    for (id, what) in [(&udp_id, "ffmpeg over UDP"), (&gst_id, "GStreamer")] {
        let url = stack.hls(&format!("/hls/{id}/index.m3u8"));
        wait_for_text(
            &url,
            &format!("{what}: two segments"),
            StdDuration::from_secs(25),
            |p| segments(p) >= 2,
        )
        .await;
        let (frames, errors) = ffmpeg_read_frames(&url, 3);
        assert!(
            frames >= 50,
            "{what}: decoded {frames} frames; errors: {errors}; {}",
            gst.describe()
        );
        assert!(errors.trim().is_empty(), "{what}: {errors}");
    }
    assert!(gst.is_running(), "{}", gst.describe());
    let (_, metrics) = get_text(&stack.hls("/metrics")).await;
    assert!(
        metrics.contains("slotcast_streamer_publishers_total{auth=\"digest\"} 2\n"),
        "{metrics}"
    );
    // The Digest credential (HA1, a password-equivalent) is in the events only sealed.
    for key in [&udp_key, &gst_key] {
        let ha1 = slotcast_domain::secret::digest_ha1(key);
        let sealed = db
            .count("SELECT count(*) FROM events WHERE payload::text LIKE '%stream_key_digest%'")
            .await;
        assert!(sealed >= 2, "bookings carry a sealed Digest credential");
        for secret in [ha1.as_str(), key.as_str()] {
            let sql = format!("SELECT count(*) FROM events WHERE payload::text LIKE '%{secret}%'");
            assert_eq!(
                db.count(&sql).await,
                0,
                "a credential in clear in the events"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publishers_are_refused_outside_their_window_server_key_or_carrier_and_cut_off_at_close() {
    let db = TestDb::new().await;
    // carrier-x is a listener of this streamer but not a carrier of server s1.
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0,carrier-x=127.0.0.4:0");
    stack.register("s1", &["carrier-a"]).await;
    stack.register("s2", &["carrier-a"]).await;
    let (start, end) = window(2, 10);
    let (open_id, open_key) = stack.book("s1", start, end).await;
    let (later_id, later_key) = stack
        .book(
            "s1",
            start + Duration::seconds(600),
            end + Duration::seconds(600),
        )
        .await;
    let (other_id, other_key) = stack.book("s2", start, end).await;
    let a = stack.rtsp("carrier-a");
    wait_gate_open(a, &open_id, &open_key);

    // Before its window the streamer knows the slot (`scheduled`) and says when it opens.
    let (code, reason) = announce(a, &later_id, &later_key);
    assert_eq!(code, 403, "before the window: {reason}");
    assert!(reason.contains("it opens at"), "{reason}");
    // Each refusal names its reason in `Slotcast-Refusal`, for a publisher to act on.
    let wrong_key = "0123456789abcdef0123456789abcdef";
    let cases: [(_, &str, &str, _, _); 5] = [
        (a, &later_id, &later_key, 403, "not_open"),
        (a, &open_id, wrong_key, 401, "bad_key"),
        (a, &other_id, &other_key, 403, "other_server"),
        (
            stack.rtsp("carrier-x"),
            &open_id,
            &open_key,
            403,
            "not_a_carrier",
        ),
        (a, "no-such-reservation", &open_key, 404, "unknown"),
    ];
    for (addr, id, key, status, refusal) in cases {
        assert_eq!(
            refused(addr, id, key),
            (status, Some(refusal.to_string())),
            "{id} with key {key} on {addr}"
        );
    }
    // Asking for the key is no refusal: no code.
    let mut bare = RawRtsp::connect(a);
    let (code, _, text) = bare.request("ANNOUNCE", &format!("rtsp://{a}/live/{open_id}"), &[], SDP);
    assert_eq!(code, 401, "{text}");
    assert!(
        text.contains("WWW-Authenticate: Digest realm=\"slotcast\""),
        "{text}"
    );
    assert!(text.contains("WWW-Authenticate: Basic"), "{text}");
    assert!(!text.contains("Slotcast-Refusal"), "{text}");

    // A publisher that would go on for a minute is cut off when the window closes.
    let mut publisher = ffmpeg_publish(&publish_url(a, &open_id, &open_key), "tcp", 60);
    let url = stack.hls(&format!("/hls/{open_id}/index.m3u8"));
    wait_for_text(&url, "a segment", StdDuration::from_secs(15), |p| {
        segments(p) >= 1
    })
    .await;
    assert_eq!(
        refused(a, &open_id, &open_key),
        (403, Some("busy".to_string())),
        "a second publisher while one is live"
    );
    let limit = (end - Utc::now()).to_std().unwrap_or_default() + StdDuration::from_secs(8);
    assert!(
        publisher.wait(limit).is_some(),
        "not cut off at window close: {}",
        publisher.describe()
    );
    let ended = wait_ended(&url, 10).await;
    assert!(segments(&ended) >= 3, "{ended}");
    assert_eq!(
        refused(a, &open_id, &open_key),
        (403, Some("closed".to_string())),
        "after the window"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_that_reconnects_inside_the_window_continues_the_playlist_after_a_discontinuity(
) {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", TWO_CARRIERS);
    stack.register("s1", &["carrier-a", "carrier-b"]).await;
    let (start, end) = window(2, 20);
    let (id, key) = stack.book("s1", start, end).await;
    let a = stack.rtsp("carrier-a");
    wait_gate_open(a, &id, &key);
    let url = publish_url(a, &id, &key);
    let mut first = ffmpeg_publish(&url, "tcp", 4);
    assert_eq!(
        first.wait(StdDuration::from_secs(20)),
        Some(0),
        "{}",
        first.describe()
    );
    let playlist_url = stack.hls(&format!("/hls/{id}/index.m3u8"));
    let before = segments(&get_text(&playlist_url).await.1);
    let mut second = ffmpeg_publish(&url, "tcp", 4);
    assert_eq!(
        second.wait(StdDuration::from_secs(20)),
        Some(0),
        "{}",
        second.describe()
    );
    let ended = wait_ended(&playlist_url, 30).await;
    assert!(ended.contains("#EXT-X-DISCONTINUITY"), "{ended}");
    assert!(ended.contains("init-1.mp4"), "{ended}");
    assert!(
        segments(&ended) >= before + 3,
        "{before} segments before:\n{ended}"
    );
    let (frames, errors) = ffmpeg_read_frames(&playlist_url, 60);
    assert!(
        frames >= 150,
        "decoded {frames} frames across the reconnect; errors: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_sending_garbage_is_dropped_while_an_honest_one_keeps_streaming() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", TWO_CARRIERS);
    stack.register("s1", &["carrier-a", "carrier-b"]).await;
    let (start, end) = window(2, 60);
    let (honest_id, honest_key) = stack.book("s1", start, end).await;
    let (bad_id, bad_key) = stack.book("s1", start, end).await;
    let a = stack.rtsp("carrier-a");
    wait_gate_open(a, &honest_id, &honest_key);
    let mut honest = ffmpeg_publish(&publish_url(a, &honest_id, &honest_key), "tcp", 25);
    let url = stack.hls(&format!("/hls/{honest_id}/index.m3u8"));
    wait_for_text(&url, "a segment", StdDuration::from_secs(15), |p| {
        segments(p) >= 1
    })
    .await;

    let mut bad = RawRtsp::connect(a);
    let (code, _, text) = bad.request("ANNOUNCE", &publish_url(a, &bad_id, &bad_key), &[], SDP);
    assert_eq!(code, 200, "{text}");
    let mut noise = vec![0u8; 64 * 1024];
    rand::rng().fill_bytes(&mut noise);
    let _ = bad.send_raw(&noise);
    assert!(
        bad.closed_within(StdDuration::from_secs(5)),
        "the garbage publisher was not dropped"
    );

    let before = segments(&get_text(&url).await.1);
    wait_for_text(
        &url,
        "the honest stream going on",
        StdDuration::from_secs(10),
        |p| segments(p) >= before + 3,
    )
    .await;
    assert!(honest.is_running(), "{}", honest.describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_streamer_rebuilds_its_gates_and_an_open_window_stays_open() {
    let db = TestDb::new().await;
    // The booking side alone (no server id: no streamer inside), and a streamer process.
    let dir = tempfile::tempdir().expect("dir");
    let env = streamer_env("s1", "carrier-a=127.0.0.2:0", dir.path());
    // The streamer takes only slot messages signed with its key: the scheduler's must match.
    let api = support::Api::start_role(&db, "all", &[("SLOTCAST_SECRET_KEY", secret_of(&env))]);
    let operator = support::token(&db, "operator", "ops");
    let alice = support::token(&db, "distributor", "alice");
    register(&api, &operator, "s1", &["carrier-a"]).await;
    let (start, end) = window(1, 120);
    let (id, key) = book(&api, &alice, "s1", start, end).await;

    let first = StreamerProcess::start(&db, &env);
    wait_gate_open(first.endpoints.ingest["carrier-a"], &id, &key);
    first.kill();

    let second = StreamerProcess::start(&db, &env);
    let readyz = format!("{}/readyz", second.endpoints.hls);
    wait_for_text(&readyz, "ready", StdDuration::from_secs(15), |b| {
        b.contains("\"ok\"")
    })
    .await;
    assert_eq!(
        announce(second.endpoints.ingest["carrier-a"], &id, &key).0,
        200,
        "the open window was forgotten across the restart"
    );
}

/// A streamer killed mid-window (a crash, or a deploy that does not wait) loses no recording.
/// Restarted, it keeps what one slot recorded and that slot's next publisher goes on after
/// a discontinuity; another slot, whose window closed while it was down, has its recording
/// ended, playable as VOD.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamer_killed_mid_window_keeps_its_recordings_and_goes_on_or_ends_them() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = streamer_env("s1", "carrier-a=127.0.0.2:0", dir.path());
    // The streamer takes only slot messages signed with its key: the scheduler's must match.
    let api = support::Api::start_role(&db, "all", &[("SLOTCAST_SECRET_KEY", secret_of(&env))]);
    let operator = support::token(&db, "operator", "ops");
    let alice = support::token(&db, "distributor", "alice");
    register(&api, &operator, "s1", &["carrier-a"]).await;
    // The second slot closes a few seconds after both have three segments, the first well
    // after its publisher is back.
    let (start, end) = window(2, 28);
    let closes = start + Duration::seconds(13);
    let (going_on, going_on_key) = book(&api, &alice, "s1", start, end).await;
    let (closing, closing_key) = book(&api, &alice, "s1", start, closes).await;

    let first = StreamerProcess::start(&db, &env);
    let rtsp = first.endpoints.ingest["carrier-a"];
    wait_gate_open(rtsp, &going_on, &going_on_key);
    wait_gate_open(rtsp, &closing, &closing_key);
    let _publishers = [
        ffmpeg_publish(&publish_url(rtsp, &going_on, &going_on_key), "tcp", 30),
        ffmpeg_publish(&publish_url(rtsp, &closing, &closing_key), "tcp", 30),
    ];
    for id in [&going_on, &closing] {
        let url = format!("{}/hls/{id}/index.m3u8", first.endpoints.hls);
        wait_for_text(&url, "three segments", StdDuration::from_secs(20), |p| {
            segments(p) >= 3
        })
        .await;
    }
    first.kill();
    let journal = |id: &str| {
        std::fs::read_to_string(dir.path().join(id).join("index.m3u8")).unwrap_or_default()
    };
    let recorded = segments(&journal(&going_on));
    assert!(recorded >= 2, "{}", journal(&going_on));
    assert!(!journal(&closing).contains("#EXT-X-ENDLIST"));

    // Restarted after the second slot's window closed.
    let wait = (closes - Utc::now() + Duration::milliseconds(500)).max(Duration::zero());
    tokio::time::sleep(wait.to_std().expect("a wait")).await;
    let second = StreamerProcess::start(&db, &env);
    let hls = |id: &str| format!("{}/hls/{id}/index.m3u8", second.endpoints.hls);

    // The closed slot's recording is ended, with everything it had, and plays as VOD.
    let ended = wait_ended(&hls(&closing), 15).await;
    assert!(segments(&ended) >= 3, "{ended}");
    let (_, status) = get_text(&format!(
        "{}/hls/{closing}/status.json",
        second.endpoints.hls
    ))
    .await;
    assert!(status.contains("\"ended\""), "{status}");
    let (frames, errors) = ffmpeg_read_frames(&hls(&closing), 60);
    assert!(frames >= 50, "decoded {frames} frames; errors: {errors}");
    assert!(errors.trim().is_empty(), "ffmpeg said: {errors}");

    // The open slot's recording waits for its publisher, then goes on after what it had.
    let before = get_text(&hls(&going_on)).await.1;
    assert!(!before.contains("#EXT-X-ENDLIST"), "{before}");
    assert_eq!(segments(&before), recorded, "{before}");
    let rtsp = second.endpoints.ingest["carrier-a"];
    wait_gate_open(rtsp, &going_on, &going_on_key);
    let mut back = ffmpeg_publish(&publish_url(rtsp, &going_on, &going_on_key), "tcp", 5);
    assert_eq!(
        back.wait(StdDuration::from_secs(20)),
        Some(0),
        "{}",
        back.describe()
    );
    let ended = wait_ended(&hls(&going_on), 30).await;
    assert!(ended.contains("seg-0.m4s"), "{ended}");
    assert_eq!(ended.matches("#EXT-X-DISCONTINUITY").count(), 1, "{ended}");
    assert!(ended.contains("#EXT-X-MAP:URI=\"init-1.mp4\""), "{ended}");
    assert!(
        segments(&ended) >= recorded + 3,
        "{recorded} before:\n{ended}"
    );
    let (frames, errors) = ffmpeg_read_frames(&hls(&going_on), 60);
    assert!(
        frames >= (recorded + 3) * 20,
        "decoded {frames} frames across the restart; errors: {errors}"
    );
}
