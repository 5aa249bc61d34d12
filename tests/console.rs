//! The web console served by the api at `/`, driven in Debian's headless Chromium
//! (tests/browser/console.mjs): an operator registers a server through the form; a broadcaster
//! books, is refused on an overlapping window and books a suggestion, sees the setting info
//! once; on the reservations' pages moves, rotates and cancels, each confirmed. Then the API
//! is asked whether what the page said happened did happen.

mod support;

use std::process::Command;

use serde_json::Value;
use support::streaming::repo_root;
use support::{time, token, Api, TestDb};

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_registers_and_a_broadcaster_books_through_the_console() {
    let db = TestDb::new().await;
    let api = Api::start(&db, &[]);
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

    let shots = tempfile::tempdir().expect("a screenshot directory");
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser/console.mjs"))
        .arg(&api.base)
        .args(["--operator", &operator, "--broadcaster", &broadcaster])
        .args(["--server", &server])
        .arg("--screenshot-dir")
        .arg(shots.path())
        .output()
        .expect("node (scripts/services installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "the console run failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(dir) = std::env::var("SLOTCAST_CONSOLE_SHOTS") {
        for name in [
            "console-timeline.png",
            "console-week.png",
            "console-booked.png",
            "console-phone.png",
        ] {
            std::fs::copy(
                shots.path().join(name),
                std::path::Path::new(&dir).join(name),
            )
            .expect("copy a screenshot");
        }
    }

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
