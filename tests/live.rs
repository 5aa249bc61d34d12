//! `slotcast live` against a running `slotcast server all` with its streamer: a broadcaster
//! logs in, books, and goes live from a clip over the preset carrier; ffmpeg reads the HLS
//! back; a terminal whose clock runs 3 s slow still starts on the true opening; `--fallback`
//! moves to the next carrier when the preset one is down; the streamer's refusals are retried
//! or not by their code; a booking made through the API goes live once `slotcast import` has
//! stored it.

mod support;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::camera::Camera;
use support::nats::free_tcp_port;
use support::streaming::{connected, ffmpeg_read_frames, ingest_reports, make_clip, Stack};
use support::terminal::{booked_id, finish, mode, ok, output, Run, Terminal};
use support::{ts, TestDb};

const TWO_CARRIERS: &str = "carrier-a=127.0.0.2:0,carrier-b=127.0.0.3:0";

/// Registers `s1` with these carriers (name, ingest URL), windows exactly the booked slots.
async fn register(stack: &Stack, carriers: &[(&str, String)]) {
    let carriers: Vec<Value> = carriers
        .iter()
        .map(|(name, url)| json!({"name": name, "ingest_url": url}))
        .collect();
    let body = json!({
        "id": "s1", "name": "s1", "capacity": 10,
        "min_lead_s": 0, "preroll_s": 0, "grace_s": 0, "carriers": carriers
    });
    let (status, body) = stack.api.post("/v1/servers", &stack.operator, body).await;
    assert_eq!(status, 201, "{body}");
}

/// These carriers at the streamer's own listeners.
fn real_carriers(stack: &Stack, names: &[&'static str]) -> Vec<(&'static str, String)> {
    names
        .iter()
        .map(|c| (*c, format!("rtsp://{}", stack.rtsp(c))))
        .collect()
}

/// A broadcaster's terminal logged in to the stack.
fn broadcaster(stack: &Stack) -> Terminal {
    let t = Terminal::new();
    ok(
        &t.run(&["login", "--api", &stack.api.base, "--token", &stack.alice]),
        "login",
    );
    t
}

/// `slotcast book` on s1 from `t`; returns the reservation id.
fn book(t: &Terminal, start: &str, duration: &str) -> String {
    booked_id(&t.run(&[
        "book",
        "--server",
        "s1",
        "--start",
        start,
        "--duration",
        duration,
    ]))
}

/// `slotcast --json live ID --input …` run to the end of the window: its run and summary.
fn live_to_the_close(t: &Terminal, id: &str, input: &[&str]) -> (Run, Value) {
    let mut args = vec!["--json", "live", id, "--input"];
    args.extend_from_slice(input);
    let run = finish(t.command(&args), Duration::from_secs(45));
    let summary = run.closed_summary();
    (run, summary)
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a time: {v}"))
}

fn clip_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("clip dir")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcaster_books_and_goes_live_from_a_clip_on_the_preset_carrier_and_viewers_read_it_back(
) {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", TWO_CARRIERS);
    register(&stack, &real_carriers(&stack, &["carrier-a", "carrier-b"])).await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    ok(&t.run(&["carrier", "use", "carrier-b"]), "carrier use");
    let id = book(&t, "+6s", "10s");
    let file = t.setting(&id);
    assert_eq!(mode(&file), 0o600);
    let setting: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        setting["carriers"].as_array().map(Vec::len),
        Some(2),
        "{setting}"
    );

    let (run, summary) = live_to_the_close(&t, &id, &[path(&clip), "--loop"]);
    assert_eq!(summary["carriers"], json!(["carrier-b"]), "{summary}");
    assert_eq!(summary["reconnects"], 0, "{summary}\n{}", run.stderr);
    // 10 s of 25 fps video and 48 kHz AAC (about 47 frames a second), less the start.
    let frames = summary["frames"].as_u64().unwrap();
    assert!(frames >= 500, "{frames} frames in a 10 s window: {summary}");
    assert!(summary["bytes"].as_u64().unwrap() > 100_000, "{summary}");
    for shown in [
        "Sending ",
        "clip.mp4 (H.264 + AAC 48 kHz",
        "Live over carrier-b at ",
    ] {
        assert!(
            run.stderr.contains(shown),
            "{shown:?} missing in:\n{}",
            run.stderr
        );
    }

    // The streamer saw the preset carrier, and the history says so.
    let report = connected(&db, &id).await;
    assert_eq!(report["carrier"], "carrier-b", "{report}");
    // The key went as a Digest answer, never in clear.
    let (_, metrics) = support::streaming::get_text(&stack.hls("/metrics")).await;
    assert!(
        metrics.contains("slotcast_streamer_publishers_total{auth=\"digest\"} 1\n"),
        "{metrics}"
    );

    // A viewer reads the recording back (the window is over: the playlist has ENDLIST).
    let (decoded, errors) = ffmpeg_read_frames(&stack.hls(&format!("/hls/{id}/index.m3u8")), 12);
    assert!(decoded >= 150, "ffmpeg decoded {decoded} frames: {errors}");
    assert!(!errors.contains("error"), "{errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_3_s_slow_goes_live_within_50_ms_of_the_true_opening() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    register(&stack, &real_carriers(&stack, &["carrier-a"])).await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    let id = booked_id(&output(t.faketime(
        "-3s",
        &[
            "book",
            "--server",
            "s1",
            "--start",
            "+6s",
            "--duration",
            "4s",
        ],
    )));
    let run = finish(
        t.faketime("-3s", &["live", &id, "--input", path(&clip)]),
        Duration::from_secs(30),
    );
    ok(&run, "live under faketime");
    assert!(run.stderr.contains("behind the server"), "{}", run.stderr);

    let setting: Value = serde_json::from_slice(&std::fs::read(t.setting(&id)).unwrap()).unwrap();
    let opens = at(&setting["opens_at"]);
    let report = connected(&db, &id).await;
    let late = at(&report["reported_at"]) - opens;
    eprintln!(
        "connected {late} after the opening; live said:\n{}{}",
        run.stderr, run.stdout
    );
    assert!(
        late >= chrono::Duration::zero() && late <= chrono::Duration::milliseconds(50),
        "connected {late} after the true opening (the terminal's clock is 3 s slow):\n{}",
        run.stderr
    );
}

/// A booking made through the API (as the console makes it) goes live from the terminal once
/// `slotcast import` has stored the answer: with the key the booking showed, not a new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_booking_made_through_the_api_is_imported_and_goes_live_with_its_own_key() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    register(&stack, &real_carriers(&stack, &["carrier-a"])).await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let now = Utc::now();
    let body = json!({
        "server_id": "s1",
        "start": ts(now + chrono::Duration::seconds(6)),
        "end": ts(now + chrono::Duration::seconds(10)),
    });
    let (status, mut booked) = stack.api.post("/v1/reservations", &stack.alice, body).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    // What the console's "Copy for slotcast import" gives: the answer and the API's address.
    booked["api"] = json!(stack.api.base);

    let t = broadcaster(&stack);
    let imported = t.run_with_input(&["import"], booked.to_string().as_bytes());
    ok(&imported, "import");
    let (run, summary) = live_to_the_close(&t, &id, &[path(&clip)]);
    assert_eq!(summary["carriers"], json!(["carrier-a"]), "{summary}");
    let frames = summary["frames"].as_u64().unwrap();
    assert!(
        frames >= 100,
        "{frames} frames in a 4 s window: {summary}\n{}",
        run.stderr
    );
    assert_eq!(connected(&db, &id).await["carrier"], "carrier-a");
    // The key the booking showed is the one it went live with: none was rotated.
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(t.setting(&id)).unwrap()).unwrap()
            ["stream_key"],
        booked["setting"]["stream_key"]
    );
    let (_, history) = stack
        .api
        .get(&format!("/v1/reservations/{id}/history"), &stack.alice)
        .await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(kinds.contains(&"ReservationAccepted"), "{kinds:?}");
    assert!(!kinds.contains(&"StreamKeyRotated"), "{kinds:?}");
    // And a viewer sees it.
    let (decoded, errors) = ffmpeg_read_frames(&stack.hls(&format!("/hls/{id}/index.m3u8")), 12);
    assert!(decoded >= 50, "ffmpeg decoded {decoded} frames: {errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_preset_carrier_down_fallback_moves_to_the_next_and_without_it_live_says_so() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-b=127.0.0.3:0");
    // carrier-a's ingest address answers nothing.
    let down = format!("rtsp://127.0.0.2:{}", free_tcp_port());
    register(
        &stack,
        &[
            ("carrier-a", down),
            ("carrier-b", format!("rtsp://{}", stack.rtsp("carrier-b"))),
        ],
    )
    .await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    ok(&t.run(&["carrier", "use", "carrier-a"]), "carrier use");
    let with = book(&t, "+6s", "4s");
    let without = book(&t, "+6s", "4s");

    let fallback = t.command(&[
        "--json",
        "live",
        &with,
        "--input",
        path(&clip),
        "--fallback",
    ]);
    let plain = t.command(&["live", &without, "--input", path(&clip)]);
    let (fallback, plain) = std::thread::scope(|s| {
        let a = s.spawn(|| finish(fallback, Duration::from_secs(30)));
        let b = s.spawn(|| finish(plain, Duration::from_secs(30)));
        (a.join().unwrap(), b.join().unwrap())
    });

    ok(&fallback, "live --fallback");
    assert!(
        fallback.stderr.contains("carrier-a cannot be reached")
            && fallback.stderr.contains("trying carrier-b"),
        "{}",
        fallback.stderr
    );
    assert_eq!(fallback.json()["carriers"], json!(["carrier-b"]));
    assert_eq!(connected(&db, &with).await["carrier"], "carrier-b");

    assert_eq!(plain.code, 1, "{}{}", plain.stdout, plain.stderr);
    assert!(
        plain.stderr.contains("carrier-a cannot be reached"),
        "{}",
        plain.stderr
    );
    assert!(
        plain.stderr.contains("--fallback tries the other carriers"),
        "{}",
        plain.stderr
    );
    assert!(plain.stderr.contains("never went live"), "{}", plain.stderr);
    assert_eq!(
        plain
            .stderr
            .lines()
            .filter(|l| l.contains("panicked"))
            .count(),
        0
    );
    assert!(ingest_reports(&db, &without)
        .await
        .iter()
        .all(|r| r["kind"] != "connected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_reservation_is_asked_again_until_the_close_and_a_cancelled_one_stops_at_once() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    register(&stack, &real_carriers(&stack, &["carrier-a"])).await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    let shared = book(&t, "+6s", "5s");
    let cancelled = book(&t, "+6s", "5s");
    ok(&t.run(&["cancel", &cancelled]), "cancel");

    let live = |id: &str| t.command(&["--json", "live", id, "--input", path(&clip), "--loop"]);
    let (first, closed) = (live(&shared), live(&cancelled));
    let first = std::thread::spawn(move || finish(first, Duration::from_secs(30)));
    let closed = std::thread::spawn(move || finish(closed, Duration::from_secs(30)));

    // A second publisher on a reservation already live is told `busy`, and asks again until
    // the window closes.
    connected(&db, &shared).await;
    let second = live(&shared);
    let busy = tokio::task::spawn_blocking(move || finish(second, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(busy.code, 1, "{}{}", busy.stdout, busy.stderr);
    assert!(
        busy.stderr.contains(
            "carrier-a: 403 another publisher is live on this reservation; asking again in"
        ),
        "{}",
        busy.stderr
    );
    assert!(busy.stderr.contains("never went live"), "{}", busy.stderr);
    let first = tokio::task::spawn_blocking(move || first.join().unwrap())
        .await
        .unwrap();
    ok(&first, "the first publisher");
    assert_eq!(first.json()["reconnects"], 0, "{}", first.stderr);

    // A cancelled reservation is `closed`: no retry can fix it, so one refusal and exit 1.
    let run = tokio::task::spawn_blocking(move || closed.join().unwrap())
        .await
        .unwrap();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("carrier-a refused: 403 reservation not open: the reservation was cancelled"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("asking again"), "{}", run.stderr);
}

/// A loopback TCP relay standing for the dedicated network between the terminal and a
/// carrier listener; `cut` breaks every connection through it (as a link going down would).
struct Link {
    addr: std::net::SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn to(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.4:0")
            .await
            .expect("bind link");
        let addr = listener.local_addr().expect("link addr");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                held.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_link_mid_window_is_reconnected_and_the_playlist_goes_on_after_a_discontinuity() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    let link = Link::to(stack.rtsp("carrier-a")).await;
    register(&stack, &[("carrier-a", format!("rtsp://{}", link.addr))]).await;
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    let id = book(&t, "+5s", "12s");
    let live = t.command(&["--json", "live", &id, "--input", path(&clip), "--loop"]);
    let running = std::thread::spawn(move || finish(live, Duration::from_secs(45)));

    connected(&db, &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    link.cut();
    let run = tokio::task::spawn_blocking(move || running.join().unwrap())
        .await
        .unwrap();

    ok(&run, "live through a link that went down once");
    let summary = run.json();
    assert_eq!(summary["ended"], "the window closed", "{summary}");
    assert_eq!(summary["reconnects"], 1, "{summary}\n{}", run.stderr);
    assert!(run.stderr.contains("connection lost"), "{}", run.stderr);
    let kinds: Vec<String> = ingest_reports(&db, &id)
        .await
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "connected").count() == 2
            && kinds.contains(&"disconnected".to_string()),
        "{kinds:?}"
    );
    let playlist = support::streaming::get_text(&stack.hls(&format!("/hls/{id}/index.m3u8")))
        .await
        .1;
    assert!(playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    let (decoded, errors) = ffmpeg_read_frames(&stack.hls(&format!("/hls/{id}/index.m3u8")), 14);
    assert!(decoded >= 200, "ffmpeg decoded {decoded} frames: {errors}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_pulled_with_retina_is_relayed_live_and_read_back() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    register(&stack, &real_carriers(&stack, &["carrier-a"])).await;
    let camera = Camera::start("cam", "pa:ss@word");
    let input = camera.url.replace("rtsp://", "rtsp://cam:pa%3Ass%40word@");

    let t = broadcaster(&stack);
    let id = book(&t, "+5s", "8s");
    let (run, summary) = live_to_the_close(&t, &id, &[&input]);
    assert!(summary["frames"].as_u64().unwrap() >= 300, "{summary}");
    assert!(
        run.stderr.contains("camera rtsp://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("(H.264 + AAC)"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("pa:ss") && !run.stderr.contains("pa%3Ass"),
        "{}",
        run.stderr
    );
    assert_eq!(connected(&db, &id).await["carrier"], "carrier-a");

    let (decoded, errors) = ffmpeg_read_frames(&stack.hls(&format!("/hls/{id}/index.m3u8")), 10);
    assert!(decoded >= 125, "ffmpeg decoded {decoded} frames: {errors}");

    // A wrong camera password: a clear error before any waiting, exit 1.
    let wrong = camera.url.replace("rtsp://", "rtsp://cam:nope@");
    let refused = t.run(&["live", &id, "--input", &wrong]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcaster_goes_live_by_rtmp_and_by_srt_where_the_carrier_takes_them() {
    let db = TestDb::new().await;
    let env = [
        ("SLOTCAST_RTMP_LISTENERS", "carrier-a=127.0.0.2:0"),
        ("SLOTCAST_SRT_LISTENERS", "carrier-a=127.0.0.2:0"),
    ];
    let stack = Stack::start_to(
        &db,
        "s1",
        "carrier-a=127.0.0.2:0,carrier-b=127.0.0.3:0",
        &env,
        std::process::Stdio::inherit(),
    );
    // carrier-a takes RTSP, RTMP and SRT at the streamer's listeners; carrier-b RTSP only.
    let carriers = json!([
        {"name": "carrier-a", "ingest_url": format!("rtsp://{}", stack.rtsp("carrier-a")),
         "rtmp_url": format!("rtmp://{}", stack.rtmp("carrier-a")),
         "srt_url": format!("srt://{}", stack.srt("carrier-a"))},
        {"name": "carrier-b", "ingest_url": format!("rtsp://{}", stack.rtsp("carrier-b"))}
    ]);
    let body = json!({
        "id": "s1", "name": "s1", "capacity": 10,
        "min_lead_s": 0, "preroll_s": 0, "grace_s": 0, "carriers": carriers
    });
    let (status, body) = stack.api.post("/v1/servers", &stack.operator, body).await;
    assert_eq!(status, 201, "{body}");
    let dir = clip_dir();
    let clip = make_clip(dir.path(), 4);

    let t = broadcaster(&stack);
    let rtmp_id = book(&t, "+6s", "8s");
    let srt_id = book(&t, "+6s", "8s");
    // The stored setting info has each protocol's address, without the key.
    let setting: Value =
        serde_json::from_slice(&std::fs::read(t.setting(&srt_id)).unwrap()).unwrap();
    let urls = &setting["carriers"][0]["urls"];
    assert_eq!(
        urls["srt"],
        format!("srt://{}", stack.srt("carrier-a")),
        "{setting}"
    );
    assert_eq!(
        urls["rtmp"],
        format!("rtmp://{}/live/{srt_id}", stack.rtmp("carrier-a"))
    );
    // carrier-b takes neither: said before anything is sent.
    let refused = t.run(&[
        "live",
        &srt_id,
        "--input",
        path(&clip),
        "--protocol",
        "srt",
        "--carrier",
        "carrier-b",
    ]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("carrier carrier-b takes no SRT"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--carrier carrier-a does"),
        "{}",
        refused.stderr
    );

    // Both at once, each to the close of its window.
    let run = |id: &str, protocol: &str| {
        let args = [
            "--json",
            "live",
            id,
            "--input",
            path(&clip),
            "--loop",
            "--protocol",
            protocol,
        ];
        t.command(&args)
    };
    let (by_rtmp, by_srt) = (
        support::terminal::start(run(&rtmp_id, "rtmp")),
        support::terminal::start(run(&srt_id, "srt")),
    );
    let (by_rtmp, by_srt) = (
        by_rtmp.finish(Duration::from_secs(45)),
        by_srt.finish(Duration::from_secs(45)),
    );
    for (id, run, protocol) in [(&rtmp_id, by_rtmp, "RTMP"), (&srt_id, by_srt, "SRT")] {
        let summary = run.closed_summary();
        assert_eq!(
            summary["carriers"],
            json!(["carrier-a"]),
            "{protocol}: {summary}"
        );
        assert_eq!(
            summary["reconnects"], 0,
            "{protocol}: {summary}\n{}",
            run.stderr
        );
        // 8 s of 25 fps video and 48 kHz AAC (about 47 frames a second), less the start.
        let frames = summary["frames"].as_u64().unwrap();
        assert!(
            frames >= 300,
            "{protocol}: {frames} frames in an 8 s window"
        );
        assert!(
            run.stderr.contains(&format!("by {protocol}")),
            "{}",
            run.stderr
        );
        let report = connected(&db, id).await;
        assert_eq!(report["codec"], "h264,aac", "{protocol}: {report}");
        let (decoded, errors) =
            ffmpeg_read_frames(&stack.hls(&format!("/hls/{id}/index.m3u8")), 12);
        assert!(
            decoded >= 120,
            "{protocol}: ffmpeg decoded {decoded} frames: {errors}"
        );
        assert!(!errors.contains("error"), "{protocol}: {errors}");
    }
}
