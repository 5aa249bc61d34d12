//! What the streamer says of a stream in `/hls/<id>/status.json`, which the watch page and
//! the console poll: the reservation's title (booked through the api, carried by the slot
//! messages), and while ffmpeg publishes, its state, codecs, ingest bitrate, frames and
//! viewers; and the watch page in Chromium naming the stream by its title, or by its id
//! without one.

mod support;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::streaming::{
    ffmpeg_publish, find_key, publish_url, repo_root, wait_gate_open, wait_live, window, Stack,
};
use support::{ts, TestDb};

const TITLE: &str = "Evening show — ライブ <b>&amp;</b>";

/// Books `[start, end)` on `server` as alice, with `title`; (reservation id, stream key).
async fn book(
    stack: &Stack,
    server: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    title: Option<&str>,
) -> (String, String) {
    let mut body = json!({"server_id": server, "start": ts(start), "end": ts(end)});
    if let Some(title) = title {
        body["title"] = json!(title);
    }
    let (status, booked) = stack.api.post("/v1/reservations", &stack.alice, body).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().expect("id").to_string();
    (id, find_key(&booked).expect("a stream key"))
}

/// The watch page in Chromium for `seconds`: it plays (at least `min_advance` s) in `state`,
/// and its heading and document title name the stream `name`.
fn watch_page_names(
    stack: &Stack,
    id: &str,
    seconds: &str,
    min_advance: &str,
    state: &str,
    name: &str,
) {
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser/watch.mjs"))
        .arg(stack.hls(&format!("/watch/{id}")))
        .args(["--seconds", seconds, "--min-advance", min_advance])
        .args(["--expect-state", state, "--expect-title", name])
        .output()
        .expect("node (scripts/services installs it)");
    assert!(
        out.status.success(),
        "the watch page: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `status.json` of `id` as JSON.
async fn status(stack: &Stack, id: &str) -> Value {
    let url = stack.hls(&format!("/hls/{id}/status.json"));
    let resp = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.expect("status.json is JSON")
}

/// Polls `status.json` until `done` holds on it (bounded), doing `between` before each try.
async fn status_until(
    stack: &Stack,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
    between: impl AsyncFn(),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        between().await;
        let now = status(stack, id).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 15 s; last {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs the playlist from the loopback address `from`, as a viewer there would.
async fn fetch_playlist_from(stack: &Stack, id: &str, from: [u8; 4]) {
    let client = reqwest::Client::builder()
        .local_address(Some(IpAddr::from(from)))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let resp = client
        .get(stack.hls(&format!("/hls/{id}/index.m3u8")))
        .send()
        .await
        .expect("playlist");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_json_gives_the_codecs_bitrate_frames_and_viewers_of_a_live_stream() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    stack.register("s1", &["carrier-a"]).await;
    let (id, key) = book(&stack, "s1", window(3, 45), Some(TITLE)).await;

    // Before any media: waiting, nothing received, nobody watching; the title has come with
    // the slot's `scheduled` message, as booked (markup and all: it is text).
    let before = status_until(
        &stack,
        &id,
        "the title",
        |s| s["title"] == TITLE,
        async || {},
    )
    .await;
    assert_eq!(before["reservation_id"], id.as_str());
    assert_eq!(before["state"], "waiting");
    for field in ["codec", "bitrate_bps", "frames"] {
        assert!(before[field].is_null(), "{field}: {before}");
    }
    assert_eq!(before["viewers"], 0, "{before}");

    let addr = stack.rtsp("carrier-a");
    wait_gate_open(addr, &id, &key);
    let mut publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", 32);
    wait_live(&stack.hls(&format!("/hls/{id}/index.m3u8"))).await;

    // Live: H.264 baseline and AAC-LC, as ffmpeg sends them (the playlist's CODECS names),
    // and a bitrate a 320x240 test pattern with a 64 kbit/s tone can have.
    let live = status_until(
        &stack,
        &id,
        "live with media measured",
        |s| s["state"] == "live" && s["bitrate_bps"].as_u64().is_some_and(|b| b > 0),
        async || {},
    )
    .await;
    let codec = live["codec"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        codec.starts_with("avc1.42") && codec.ends_with(",mp4a.40.2") && codec.len() == 21,
        "codec {codec:?}: {live}"
    );
    let bitrate = live["bitrate_bps"].as_u64().unwrap();
    assert!(
        (64_000..20_000_000).contains(&bitrate),
        "{bitrate} bit/s: {live}"
    );
    // Frames keep coming: video at 25 fps and AAC frames beside them.
    let first = live["frames"].as_u64().expect("frames");
    assert!(first > 0, "{live}");
    let later = status_until(
        &stack,
        &id,
        "more frames",
        |s| s["frames"].as_u64().is_some_and(|f| f > first + 50),
        async || {},
    )
    .await;
    assert_eq!(later["state"], "live", "{later}");

    // Viewers: every address that fetched the playlist lately, once however often it asks.
    // This test has fetched it from 127.0.0.1 (waiting for it to go live); 127.0.0.9 joins.
    let two = status_until(
        &stack,
        &id,
        "two viewers",
        |s| s["viewers"] == 2,
        async || {
            fetch_playlist_from(&stack, &id, [127, 0, 0, 1]).await;
            fetch_playlist_from(&stack, &id, [127, 0, 0, 9]).await;
            fetch_playlist_from(&stack, &id, [127, 0, 0, 9]).await;
        },
    )
    .await;
    assert_eq!(two["viewers"], 2, "{two}");
    assert_eq!(two["title"], TITLE);

    // The watch page names the stream by its title while it plays.
    watch_page_names(&stack, &id, "6", "2", "live", TITLE);

    assert!(
        publisher.wait(Duration::from_secs(40)).is_some(),
        "{}",
        publisher.describe()
    );
    // The publisher has gone: the bitrate falls to nothing, the frames stay counted.
    let stopped = status_until(
        &stack,
        &id,
        "no bitrate once the publisher stopped",
        |s| s["bitrate_bps"] == 0,
        async || {},
    )
    .await;
    assert!(
        stopped["frames"].as_u64().is_some_and(|f| f > first + 50),
        "{stopped}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_without_a_title_is_named_by_its_id() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    stack.register("s1", &["carrier-a"]).await;
    let (id, _) = book(&stack, "s1", window(600, 60), None).await;
    // Known to the streamer (its `scheduled` message has come: a publisher is told when the
    // window opens), with no title to show.
    let addr = stack.rtsp("carrier-a");
    let deadline = Instant::now() + Duration::from_secs(15);
    while support::streaming::announce(addr, &id, "x").0 == 404 {
        assert!(
            Instant::now() < deadline,
            "the streamer never heard of {id}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = status(&stack, &id).await;
    assert!(now["title"].is_null(), "{now}");
    assert_eq!(now["state"], "waiting");
    watch_page_names(&stack, &id, "3", "0", "waiting", &id);
}
