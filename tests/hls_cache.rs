//! Viewers through a cache: a real publisher (ffmpeg) goes live in a window, and viewers read
//! the LL-HLS stream and then the recording through nginx caching the streamer's viewer port
//! (tests/support/nginx.rs). The streamer's answers carry their validators and are answered
//! 304 when a conditional request still holds; a blocking reload is never served from the
//! cache; viewers behind the cache count one by one when it is a trusted proxy, as one when
//! it is not.

mod support;

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use reqwest::header::HeaderMap;
use support::nginx::Nginx;
use support::streaming::{
    ffmpeg_publish, ffmpeg_read_frames, publish_url, segments, wait_gate_open, Publisher, Stack,
};
use support::TestDb;

/// A viewer whose connections come from `from` (a loopback address of its own).
fn viewer(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("an address"))
        .timeout(StdDuration::from_secs(20))
        .build()
        .expect("a client")
}

/// GET with extra headers: (status, headers, body).
async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("a body").to_vec();
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().expect("a text header"))
        .unwrap_or("")
}

/// Polls the playlist at `url` as `client` until `check` holds on it (bounded).
async fn wait_playlist(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + StdDuration::from_secs(40);
    loop {
        let (status, _, body) = get(client, url, &[]).await;
        let text = String::from_utf8_lossy(&body).to_string();
        if status == 200 && check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 40 s; last {status}: {text}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

/// The streamer's viewer count, from its `/metrics`.
async fn viewers(stack: &Stack) -> i64 {
    let (_, _, body) = get(&reqwest::Client::new(), &stack.hls("/metrics"), &[]).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("slotcast_streamer_viewers "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the viewers gauge")
}

/// A stack whose streamer has these extra settings, a window open now, a publisher live in
/// it for `seconds`, and nginx in front of its viewer port.
async fn live_behind_nginx(
    db: &TestDb,
    env: &[(&str, &str)],
    seconds: u32,
) -> (Stack, String, Publisher, Nginx) {
    let stack = Stack::start_to(db, "s1", "carrier-a=127.0.0.1:0", env, Stdio::inherit());
    stack.register("s1", &["carrier-a"]).await;
    let start = Utc::now() + Duration::seconds(2);
    let (id, key) = stack
        .book(
            "s1",
            start,
            start + Duration::seconds(i64::from(seconds) + 12),
        )
        .await;
    let addr = stack.rtsp("carrier-a");
    wait_gate_open(addr, &id, &key);
    let publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", seconds);
    let nginx = Nginx::proxy(&stack.streamer.hls);
    (stack, id, publisher, nginx)
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_through_nginx_play_live_and_the_recording_and_count_one_by_one() {
    let db = TestDb::new().await;
    let (stack, id, mut publisher, nginx) =
        live_behind_nginx(&db, &[("SLOTCAST_HLS_TRUSTED_PROXIES", "127.0.0.1")], 14).await;
    let playlist = format!("/hls/{id}/index.m3u8");

    // Two viewers behind the cache, one of them claiming to be someone else: the first
    // playlist requests the streamer sees are theirs, and they count as two.
    let (ann, bob) = (viewer("127.0.0.2"), viewer("127.0.0.3"));
    wait_playlist(&ann, &nginx.at(&playlist), "ann sees three segments", |p| {
        segments(p) >= 3
    })
    .await;
    let (status, _, _) = get(
        &bob,
        &nginx.at(&playlist),
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(viewers(&stack).await, 2, "{}", nginx.logs());

    // ffmpeg plays the live stream through the cache.
    let (frames, errors) = ffmpeg_read_frames(&nginx.at(&playlist), 3);
    assert!(
        frames >= 50,
        "decoded {frames} frames live; errors: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reading live said: {errors}"
    );

    // Straight from the streamer: validators, and 304 while they hold. The newest segment
    // and part, as a live viewer asks for them (from memory; a segment served from disk
    // while its recording grows gets a new tag with every segment).
    let direct = reqwest::Client::new();
    let (_, _, now) = get(&direct, &stack.hls(&playlist), &[]).await;
    let now = String::from_utf8_lossy(&now).to_string();
    let part = now
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXT-X-PART:")
                .and_then(|a| a.split("URI=\"").nth(1))
                .and_then(|u| u.split('"').next())
        })
        .next_back()
        .expect("a listed part")
        .to_string();
    let newest = now
        .lines()
        .rfind(|l| l.starts_with("seg-"))
        .expect("a listed segment")
        .to_string();
    for name in [newest.as_str(), "init.mp4", part.as_str()] {
        let url = stack.hls(&format!("/hls/{id}/{name}"));
        let (status, h, body) = get(&direct, &url, &[]).await;
        assert_eq!(status, 200, "{name}");
        let (etag, modified) = (header(&h, "etag").to_string(), header(&h, "last-modified"));
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "{name}: {h:?}"
        );
        assert!(modified.ends_with(" GMT"), "{name}: {h:?}");
        assert_eq!(
            header(&h, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            header(&h, "content-length"),
            body.len().to_string(),
            "{name}"
        );
        assert!(!body.is_empty());
        for conditional in [
            ("If-None-Match", etag.as_str()),
            ("If-Modified-Since", modified),
        ] {
            let (status, h304, empty) = get(&direct, &url, &[conditional]).await;
            assert_eq!(status, 304, "{name} {conditional:?}");
            assert!(empty.is_empty(), "{name}: a 304 has no body");
            assert_eq!(header(&h304, "etag"), etag);
            assert_eq!(
                header(&h304, "cache-control"),
                "public, max-age=31536000, immutable"
            );
        }
        // If-None-Match decides when both are sent.
        let (status, _, again) = get(
            &direct,
            &url,
            &[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", modified),
            ],
        )
        .await;
        assert_eq!((status, again.len()), (200, body.len()), "{name}");
        // HEAD: the length, no body.
        let head = direct.head(&url).send().await.expect("HEAD");
        assert_eq!(head.status(), 200);
        assert_eq!(
            header(head.headers(), "content-length"),
            body.len().to_string()
        );
        assert_eq!(header(head.headers(), "etag"), etag);
        assert!(head.bytes().await.expect("no body").is_empty());
    }

    // The live playlist: revalidated before each use; 304 while it has not changed (it
    // changes with each part, so try until one lands between two parts).
    let url = stack.hls(&playlist);
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (_, h, _) = get(&direct, &url, &[]).await;
        assert_eq!(header(&h, "cache-control"), "no-cache");
        let etag = header(&h, "etag").to_string();
        assert!(!etag.is_empty(), "{h:?}");
        let (status, _, _) = get(&direct, &url, &[("If-None-Match", &etag)]).await;
        if status == 304 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "no 304 for the live playlist");
    }
    // A blocking reload: no validators, never kept, never a 304.
    let ready = format!("{url}?_HLS_msn=1");
    let (status, h, body) = get(&direct, &ready, &[("If-None-Match", "*")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert!(
        h.get("etag").is_none() && h.get("last-modified").is_none(),
        "{h:?}"
    );
    assert!(segments(&String::from_utf8_lossy(&body)) >= 1);

    // Through the cache: media is kept and served from it; blocking reloads never are.
    let seg = format!("/hls/{id}/seg-0.m4s");
    let (_, _, from_streamer) = get(&direct, &stack.hls(&seg), &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, h, body) = get(&ann, &nginx.at(&seg), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body, from_streamer, "the cache serves the streamer's bytes");
        statuses.push(header(&h, "x-cache-status").to_string());
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("HIT"),
        "{statuses:?}"
    );
    for _ in 0..2 {
        let (status, h, _) = get(&ann, &nginx.at(&format!("{playlist}?_HLS_msn=1")), &[]).await;
        assert_eq!(status, 200);
        assert_ne!(
            header(&h, "x-cache-status"),
            "HIT",
            "a blocking reload from the cache"
        );
        assert_eq!(header(&h, "cache-control"), "no-store");
    }

    // The window closes: the recording, through the cache.
    assert!(
        publisher.wait(StdDuration::from_secs(40)).is_some(),
        "{}",
        publisher.describe()
    );
    let ended = wait_playlist(&ann, &nginx.at(&playlist), "the recording", |p| {
        p.contains("#EXT-X-ENDLIST")
    })
    .await;
    assert!(segments(&ended) >= 10, "{ended}");
    let (_, h, _) = get(&ann, &nginx.at(&playlist), &[]).await;
    assert_eq!(header(&h, "cache-control"), "public, max-age=60");
    let (frames, errors) = ffmpeg_read_frames(&nginx.at(&playlist), 60);
    assert!(
        frames >= 250,
        "decoded {frames} frames of the recording; errors: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reading the recording said: {errors}"
    );
    let (_, h, _) = get(&bob, &nginx.at(&playlist), &[]).await;
    assert_eq!(
        header(&h, "x-cache-status"),
        "HIT",
        "the ended playlist is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_trusted_proxies_viewers_behind_a_cache_count_as_one() {
    let db = TestDb::new().await;
    let (stack, id, _publisher, nginx) = live_behind_nginx(&db, &[], 8).await;
    let playlist = nginx.at(&format!("/hls/{id}/index.m3u8"));
    let (ann, bob) = (viewer("127.0.0.2"), viewer("127.0.0.3"));
    wait_playlist(&ann, &playlist, "ann sees a segment", |p| segments(p) >= 1).await;
    wait_playlist(&bob, &playlist, "bob sees a segment", |p| segments(p) >= 1).await;
    assert_eq!(viewers(&stack).await, 1, "both are the cache's address");
    // Straight from their own addresses, they are two more.
    for client in [&ann, &bob] {
        let (status, _, _) = get(client, &stack.hls(&format!("/hls/{id}/index.m3u8")), &[]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(viewers(&stack).await, 3);
}
