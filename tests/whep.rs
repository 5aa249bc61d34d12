//! Real time: a broadcaster publishes by RTSP (ffmpeg, H.264 and AAC at 44.1 kHz) and the
//! watch page in headless Chromium plays the stream by WebRTC (WHEP, `?mode=realtime`):
//! video decoded, audio (turned into Opus by the streamer) received; two pages at once share
//! one relay (the stream shaped and its AAC made Opus once), each session counted among the
//! viewers in `status.json`. The WHEP exchange's
//! answers to what is not an offer, to a stream that is not live and to trickle ICE, and the
//! session's end when the window closes.

mod support;

use std::process::Stdio;
use std::time::{Duration as StdDuration, Instant};

use tokio::process::Command;

use support::streaming::{
    ffmpeg_publish_with, get_text, publish_url, repo_root, wait_ended, wait_gate_open, wait_live,
    window, Stack,
};
use support::TestDb;

/// A gauge of the streamer's metrics (`slotcast_streamer_<name>`).
async fn gauge(stack: &Stack, name: &str) -> Option<u64> {
    let (_, metrics) = get_text(&stack.hls("/metrics")).await;
    let prefix = format!("slotcast_streamer_{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// The streamer's real-time viewers, from its metrics.
async fn realtime_viewers(stack: &Stack) -> Option<u64> {
    gauge(stack, "realtime_viewers").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_page_plays_a_live_stream_in_real_time_by_whep() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", "carrier-a=127.0.0.2:0");
    stack.register("s1", &["carrier-a"]).await;
    let (start, end) = window(2, 34);
    let (id, key) = stack.book("s1", start, end).await;
    let addr = stack.rtsp("carrier-a");
    wait_gate_open(addr, &id, &key);
    let client = reqwest::Client::new();
    let whep = stack.hls(&format!("/whep/{id}"));

    // Before the publisher: not live, which the page takes as "not yet".
    let answer = client
        .post(&whep)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer.text().await.unwrap().starts_with("not_live:"));

    let mut publisher =
        ffmpeg_publish_with(&publish_url(addr, &id, &key), "tcp", 22, &["-ar", "44100"]);
    wait_live(&stack.hls(&format!("/hls/{id}/index.m3u8"))).await;

    // What is not an offer is told so.
    let answer = client.post(&whep).body("hello").send().await.unwrap();
    assert_eq!(answer.status(), 415, "no content type");
    let answer = client
        .post(&whep)
        .header("content-type", "application/sdp")
        .body("not sdp")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let answer = client
        .patch(stack.hls(&format!("/whep/{id}/nosuchsession")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405, "no trickle ICE");
    let answer = client
        .delete(stack.hls(&format!("/whep/{id}/nosuchsession")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    // Chromium plays it in real time, in two pages at once: video frames decoded, audio
    // received, both fed by one relay.
    let watch = stack.hls(&format!("/watch/{id}?mode=realtime"));
    let open_page = || {
        Command::new("node")
            .arg(repo_root().join("tests/browser/watch.mjs"))
            .args([&watch, "--seconds", "8", "--min-advance", "2"])
            .args(["--expect-state", "live", "--expect-engine", "whep"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (scripts/services installs it)")
    };
    let mut pages = [open_page(), open_page()];
    // While they play, status.json counts their sessions among the stream's viewers, beside
    // the addresses that fetched the playlist (this test's, waiting for the stream).
    let status_url = stack.hls(&format!("/hls/{id}/status.json"));
    let deadline = Instant::now() + StdDuration::from_secs(30);
    let (hls, realtime, relays, status) = loop {
        for page in &mut pages {
            if let Ok(Some(code)) = page.try_wait() {
                panic!("a page ended ({code}) before both sessions were counted");
            }
        }
        let realtime = realtime_viewers(&stack).await;
        let relays = gauge(&stack, "realtime_relays").await;
        let hls = gauge(&stack, "viewers").await;
        let (_, status) = get_text(&status_url).await;
        let status: serde_json::Value = serde_json::from_str(&status).expect("status.json");
        let counted = status["viewers"].as_u64();
        if realtime == Some(2) && hls.zip(counted).is_some_and(|(h, c)| c == h + 2) {
            break (hls, realtime, relays, status);
        }
        assert!(
            Instant::now() < deadline,
            "status.json never counted both real-time sessions: {status}, HLS {hls:?}, real \
             time {realtime:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    };
    assert_eq!(status["state"], "live", "{status} ({hls:?} + {realtime:?})");
    assert_eq!(relays, Some(1), "two viewers of one stream, one relay");
    for page in pages {
        let out = page.wait_with_output().await.expect("the page's run");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the watch page did not play in real time: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The page has gone: its session ends (deleted, or the peer's silence noticed).
    let deadline = Instant::now() + StdDuration::from_secs(40);
    while realtime_viewers(&stack).await != Some(0) && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert_eq!(
        realtime_viewers(&stack).await,
        Some(0),
        "the session outlived its page"
    );
    // Nobody watches: the relay stops too.
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while gauge(&stack, "realtime_relays").await != Some(0) && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert_eq!(
        gauge(&stack, "realtime_relays").await,
        Some(0),
        "the relay outlived its viewers"
    );

    assert!(
        publisher.wait(StdDuration::from_secs(40)).is_some(),
        "{}",
        publisher.describe()
    );
    wait_ended(&stack.hls(&format!("/hls/{id}/index.m3u8")), 30).await;
}
