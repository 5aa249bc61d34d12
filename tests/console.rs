//! The web console served by the api at `/`, driven in Debian's headless Chromium
//! (tests/browser/console.mjs): an operator registers a server through the form; a broadcaster
//! books, is refused on an overlapping window and books a suggestion, sees the setting info
//! once; on the reservations' pages moves, rotates and cancels, each confirmed. Then the API
//! is asked whether what the page said happened did happen. And the whole story against a
//! real streamer (tests/browser/console_story.mjs): an operator registers and edits a server,
//! a broadcaster books (refused once, then a suggestion), publishes with the ffmpeg command
//! the console gave, sees it in "Live now" with its figures, plays it inline, and reads the
//! story in the reservation's audit trail.

mod support;

use std::process::Command;

use serde_json::Value;
use support::streaming::{repo_root, secret_key, Stack};
use support::{time, token, Api, TestDb};

/// Runs `tests/browser/<script>` with `args` and a screenshot directory; its report once it
/// passed. With `SLOTCAST_CONSOLE_SHOTS=DIR`, the screenshots named in `shots` are kept there.
fn drive(script: &str, args: &[&str], shots: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("a screenshot directory");
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser").join(script))
        .args(args)
        .arg("--screenshot-dir")
        .arg(dir.path())
        .output()
        .expect("node (scripts/services installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(keep) = std::env::var("SLOTCAST_CONSOLE_SHOTS") {
        for name in shots {
            std::fs::copy(
                dir.path().join(name),
                std::path::Path::new(&keep).join(name),
            )
            .expect("copy a screenshot");
        }
    }
    serde_json::from_str(stdout.trim()).expect("the script's report")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_registers_and_a_broadcaster_books_through_the_console() {
    let db = TestDb::new().await;
    // A secret key, so a camera's login can be sealed.
    let secret = secret_key();
    let api = Api::start(&db, &[("SLOTCAST_SECRET_KEY", &secret)]);
    let operator = token(&db, "operator", "ops");
    let broadcaster = token(&db, "distributor", "studio-7");
    let server = format!("console-{}", &db.nats_prefix[2..10]);

    // The page and its files come from the binary, whatever the working directory.
    let index = reqwest::get(api.url("/")).await.expect("GET /");
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    let script = reqwest::get(api.url("/console/app.js"))
        .await
        .expect("app.js");
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let missing = reqwest::get(api.url("/console/nothing.js"))
        .await
        .expect("an unknown file");
    assert_eq!(missing.status(), 404);

    let report = drive(
        "console.mjs",
        &[
            &api.base,
            "--operator",
            &operator,
            "--broadcaster",
            &broadcaster,
            "--server",
            &server,
        ],
        &[
            "console-timeline.png",
            "console-week.png",
            "console-booked.png",
            "console-phone.png",
        ],
    );

    // The server the form registered, as the operator typed it.
    let (status, s) = api.get(&format!("/v1/servers/{server}"), &operator).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["preroll_s"], 60);
    assert_eq!(s["carriers"][0]["name"], "carrier-a");
    assert_eq!(s["carriers"][0]["rtmp_url"], "rtmp://127.0.0.2:1935");

    // The two bookings the page showed, at the instants it was asked for (the first typed in
    // Tokyo time, the second a suggestion), the broadcaster's own; then the first moved into
    // the second's window once the second was cancelled; and the refusal recorded.
    let bookings = report["bookings"].as_array().expect("bookings");
    assert_eq!(bookings.len(), 2, "{report}");
    let mut shown = Vec::new();
    for b in bookings {
        let id = b["id"].as_str().expect("an id");
        let (status, r) = api
            .get(&format!("/v1/reservations/{id}"), &broadcaster)
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["server_id"], server.as_str());
        assert_eq!(r["owner"], "studio-7");
        assert_eq!(r["title"], "Console test show");
        assert_eq!(
            (time(&r["end"]) - time(&r["start"])).num_minutes(),
            30,
            "{r}"
        );
        shown.push(r);
    }
    assert_eq!(shown[0]["status"], "accepted", "{}", shown[0]);
    assert_eq!(time(&shown[0]["start"]), time(&bookings[0]["moved_to"]));
    assert_eq!(shown[1]["status"], "cancelled", "{}", shown[1]);
    assert_eq!(time(&shown[1]["start"]), time(&bookings[1]["start"]));
    assert_ne!(bookings[0]["start"], bookings[1]["start"]);
    let first = bookings[0]["id"].as_str().expect("an id");
    let (_, history) = api
        .get(&format!("/v1/reservations/{first}/history"), &broadcaster)
        .await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "ReservationAccepted",
            "RescheduleRejected",
            "StreamKeyRotated",
            "ReservationRescheduled"
        ],
        "{history}"
    );
    // The camera the form booked, pulled over UDP; its password not shown back.
    let camera = report["camera"]["id"].as_str().expect("the camera booking");
    let (status, c) = api
        .get(&format!("/v1/reservations/{camera}"), &broadcaster)
        .await;
    assert_eq!(status, 200, "{c}");
    assert!(
        c["source"]["pull_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("10.20.0.5:554/stream1")),
        "{c}"
    );
    assert_eq!(c["source"]["transport"], "udp", "{c}");
    assert!(!c.to_string().contains("cam-secret-1"), "{c}");
    let (_, rejected) = api
        .get(
            &format!("/v1/reservations?status=rejected&server_id={server}"),
            &broadcaster,
        )
        .await;
    assert_eq!(
        rejected["reservations"].as_array().map(Vec::len),
        Some(1),
        "{rejected}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcaster_books_publishes_and_watches_it_live_in_the_console() {
    let db = TestDb::new().await;
    let server = format!("story-{}", &db.nats_prefix[2..10]);
    let stack = Stack::start(&db, &server, "carrier-a=127.0.0.1:0");
    let rtsp = format!("rtsp://{}", stack.rtsp("carrier-a"));

    let report = drive(
        "console_story.mjs",
        &[
            &stack.api.base,
            "--operator",
            &stack.operator,
            "--broadcaster",
            &stack.alice,
            "--server",
            &server,
            "--rtsp",
            &rtsp,
            "--viewer",
            &stack.streamer.hls,
        ],
        &["console-live.png"],
    );
    println!("{report}");

    // The server as edited, and the story the page read, as the API tells it.
    let (_, s) = stack
        .api
        .get(&format!("/v1/servers/{server}"), &stack.operator)
        .await;
    assert_eq!(s["name"], "Story server, studio B", "{s}");
    assert_eq!(s["viewer_url"], stack.streamer.hls.as_str(), "{s}");
    assert_eq!(s["preroll_s"], 600, "{s}");
    let first = report["bookings"][0]["id"]
        .as_str()
        .expect("the first booking");
    let (_, history) = stack
        .api
        .get(&format!("/v1/reservations/{first}/history"), &stack.alice)
        .await;
    let events = history["events"].as_array().expect("events");
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e["type"].as_str()? {
            "IngestReported" => e["data"]["kind"].as_str(),
            other => Some(other),
        })
        .collect();
    assert_eq!(kinds[0], "ReservationAccepted", "{history}");
    let opened = kinds.iter().position(|k| *k == "WindowOpened");
    let connected = kinds.iter().position(|k| *k == "connected");
    let disconnected = kinds.iter().position(|k| *k == "disconnected");
    assert!(
        opened < connected && connected < disconnected && opened.is_some(),
        "{kinds:?}"
    );
    let connected = events
        .iter()
        .find(|e| e["data"]["kind"] == "connected")
        .map(|e| (e["data"]["carrier"].clone(), e["data"]["protocol"].clone()));
    assert_eq!(
        connected,
        Some((Value::from("carrier-a"), Value::from("rtsp"))),
        "{history}"
    );
}
