//! Hostile clients with real sockets: strangers on the dedicated network with no stream key,
//! doing what costs a server most, beside a real publisher (ffmpeg) and a real viewer (ffmpeg
//! reading the HLS back). Each test is bounded in time; every address is on loopback (the
//! strangers come from addresses of 127.0.1.0/24 and 127.0.2.0/24, the publisher from
//! 127.0.0.1).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use support::streaming::{
    closed_within, connect_from, ffmpeg_publish, ffmpeg_read_frames, get_text, ingest_reports,
    metric, publish_url, wait_for_text, wait_gate_open, window, Stack, SDP,
};
use support::TestDb;

const ONE_CARRIER: &str = "carrier-a=127.0.0.2:0";

/// `slotcast server all` with one carrier, a server `s1` on it, and a slot opening `lead`
/// seconds from now for `length` seconds, its gate open (waited for): the stack, the
/// reservation id, its key and the carrier's address.
async fn open_slot(db: &TestDb, lead: i64, length: i64) -> (Stack, String, String, SocketAddr) {
    let stack = Stack::start(db, "s1", ONE_CARRIER);
    stack.register("s1", &["carrier-a"]).await;
    let (start, end) = window(lead, length);
    let (id, key) = stack.book("s1", start, end).await;
    let addr = stack.rtsp("carrier-a");
    wait_gate_open(addr, &id, &key);
    (stack, id, key, addr)
}

/// Waits (bounded) for the reservation's `connected` report; the reports then.
async fn wait_connected(
    db: &TestDb,
    id: &str,
    publisher: &support::streaming::Publisher,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        let reports = ingest_reports(db, id).await;
        if reports.iter().any(|r| r["kind"] == "connected") {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "never connected: {}",
            publisher.describe()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn options(cseq: u32) -> String {
    format!("OPTIONS rtsp://slotcast/ RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n")
}

/// Writes `request` and reads an answer (bounded): its status code, or `None` if the server
/// closed the connection instead.
async fn ask(stream: &mut TcpStream, request: &str) -> Option<u16> {
    match try_ask(stream, request).await {
        Ok(answer) => answer,
        Err(()) => panic!("no answer and no close in 10 s"),
    }
}

/// [`ask`], where no answer in 10 s is `Err` rather than a failure.
async fn try_ask(stream: &mut TcpStream, request: &str) -> Result<Option<u16>, ()> {
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Ok(None);
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            return Ok(head.split(' ').nth(1).and_then(|c| c.parse().ok()));
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(()),
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// ffmpeg publishing `seconds` of the test pattern with a keyframe every `gop` frames at 25
/// frames a second.
fn ffmpeg_publish_gop(url: &str, seconds: u32, gop: u32) -> support::streaming::Publisher {
    let gop = gop.to_string();
    support::streaming::ffmpeg_publish_with(
        url,
        "tcp",
        seconds,
        &["-g", &gop, "-sc_threshold", "0"],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_connections_from_one_address_leave_the_publisher_its_slot() {
    let db = TestDb::new().await;
    let (stack, id, key, addr) = open_slot(&db, 2, 60).await;

    // 300 connections from one address, each asking OPTIONS as a keep-alive would.
    let stranger = Ipv4Addr::new(127, 0, 1, 1);
    let mut held = Vec::new();
    let mut turned_away = 0;
    for i in 0..300 {
        let mut stream = connect_from(stranger, addr).await.expect("connect");
        match ask(&mut stream, &options(i)).await {
            Some(200) => held.push(stream),
            Some(other) => panic!("OPTIONS answered {other}"),
            None => turned_away += 1,
        }
    }
    assert_eq!(held.len(), 8, "the default share of one address is 8");
    assert_eq!(turned_away, 292);
    assert_eq!(
        metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"unauth_per_source\"}"
        )
        .await,
        292.0
    );

    // Those it holds go on answering, and the real publisher from its own address gets in.
    for (i, stream) in held.iter_mut().enumerate() {
        assert_eq!(ask(stream, &options(1000 + i as u32)).await, Some(200));
    }
    let mut publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", 6);
    let playlist = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_for_text(&playlist, "a segment", StdDuration::from_secs(20), |p| {
        p.contains("#EXTINF")
    })
    .await;
    let (frames, errors) = ffmpeg_read_frames(&playlist, 2);
    assert!(frames >= 25, "viewers got {frames} frames: {errors}");
    assert!(
        publisher.wait(StdDuration::from_secs(30)).is_some(),
        "{}",
        publisher.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_records_goes_at_the_deadline_whatever_it_sends() {
    let db = TestDb::new().await;
    let stack = Stack::start_to(
        &db,
        "s1",
        ONE_CARRIER,
        &[("SLOTCAST_INGEST_RECORD_DEADLINE_S", "2")],
        std::process::Stdio::inherit(),
    );
    let addr = stack.rtsp("carrier-a");
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 1, 2), addr)
        .await
        .expect("connect");
    // Keep-alives every 300 ms for up to 8 s, inside the 10 s session timeout the tests run
    // with: only the deadline to RECORD can end it.
    let began = Instant::now();
    let mut answered = 0;
    let closed = loop {
        if began.elapsed() > StdDuration::from_secs(8) {
            break false;
        }
        match ask(&mut stream, &options(answered)).await {
            Some(200) => answered += 1,
            Some(other) => panic!("OPTIONS answered {other}"),
            None => break true,
        }
        tokio::time::sleep(StdDuration::from_millis(300)).await;
    };
    assert!(closed, "kept open for 8 s by keep-alives without RECORD");
    assert!(answered >= 1, "closed before its first answer");
    assert_eq!(
        metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"record_deadline\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pipelines_without_reading_stalls_itself_not_the_server() {
    let db = TestDb::new().await;
    let stack = Stack::start(&db, "s1", ONE_CARRIER);
    let addr = stack.rtsp("carrier-a");
    let pid = stack.api.pid();
    let before = rss_kib(pid);

    let mut stream = connect_from(Ipv4Addr::new(127, 0, 1, 3), addr)
        .await
        .expect("connect");
    let burst: String = (0..500).map(options).collect();
    let mut sent = 0usize;
    let began = Instant::now();
    // Writes until the server stops taking them (a write that waits a second) or closes.
    while began.elapsed() < StdDuration::from_secs(8) {
        match tokio::time::timeout(
            StdDuration::from_secs(1),
            stream.write_all(burst.as_bytes()),
        )
        .await
        {
            Ok(Ok(())) => sent += burst.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let grown = rss_kib(pid).saturating_sub(before);
    println!(
        "pipelining without reading: {} KiB sent before the server stopped taking them; \
         the server grew {grown} KiB",
        sent / 1024
    );
    // The kernel's buffers on both sides hold a few MiB; the server reads nothing more while
    // its answers wait.
    assert!(
        sent < 64 << 20,
        "{sent} bytes taken from a client that reads nothing"
    );
    assert!(grown < 64 * 1024, "the server grew {grown} KiB");
    assert!(
        closed_within(&mut stream, StdDuration::from_secs(20)).await,
        "the connection was never closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_that_sends_no_keyframe_for_ten_seconds_is_disconnected_with_no_keyframe() {
    let db = TestDb::new().await;
    let (_stack, id, key, addr) = open_slot(&db, 2, 60).await;
    // One keyframe at the start, then none for 40 s (x264 makes no others with -g 1000 and
    // scene cuts off).
    let mut publisher = ffmpeg_publish_gop(&publish_url(addr, &id, &key), 40, 1000);
    let deadline = Instant::now() + StdDuration::from_secs(40);
    let reason = loop {
        let reports = ingest_reports(&db, &id).await;
        // After it connected (refusals while the gate was waited for come before).
        let ended = reports
            .iter()
            .skip_while(|r| r["kind"] != "connected")
            .find(|r| r["kind"] != "connected");
        if let Some(r) = ended {
            break r["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not disconnected; reports {reports:?}; {}",
            publisher.describe()
        );
        tokio::time::sleep(StdDuration::from_millis(300)).await;
    };
    assert!(reason.starts_with("no_keyframe"), "{reason}");
    assert!(
        publisher.wait(StdDuration::from_secs(10)).is_some(),
        "ffmpeg still publishing after the disconnect"
    );
}

/// One stranger's connection doing one hostile thing until `stop`.
#[derive(Clone, Copy, Debug)]
enum Hostility {
    /// Asks OPTIONS once, then holds the connection open.
    Idle,
    /// Sends OPTIONS without ever reading the answers.
    Pipelining,
    /// ANNOUNCEs the real reservation with a wrong key, reconnecting when closed.
    WrongKey,
}

async fn hostile(
    kind: Hostility,
    from: Ipv4Addr,
    addr: SocketAddr,
    reservation: String,
    stop: CancellationToken,
    refused: Arc<AtomicU64>,
) {
    let wrong = format!("rtsp://{addr}/live/{reservation}?key=not-the-key");
    while !stop.is_cancelled() {
        let Ok(mut stream) = connect_from(from, addr).await else {
            tokio::time::sleep(StdDuration::from_millis(100)).await;
            continue;
        };
        match kind {
            Hostility::Idle => {
                if let Ok(Some(_)) = try_ask(&mut stream, &options(1)).await {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = closed_within(&mut stream, StdDuration::from_secs(3600)) => {}
                    }
                }
            }
            Hostility::Pipelining => {
                let burst: String = (0..200).map(options).collect();
                loop {
                    let wrote = tokio::select! {
                        () = stop.cancelled() => return,
                        w = stream.write_all(burst.as_bytes()) => w,
                    };
                    if wrote.is_err() {
                        break;
                    }
                }
            }
            Hostility::WrongKey => {
                for cseq in 0.. {
                    if stop.is_cancelled() {
                        return;
                    }
                    let announce = format!(
                        "ANNOUNCE {wrong} RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Type: \
                         application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
                        SDP.len()
                    );
                    match try_ask(&mut stream, &announce).await {
                        Ok(Some(_)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) | Err(()) => break,
                    }
                }
            }
        }
        // Turned away or closed: try again soon, as a flood does.
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_hostile_connections_cost_the_publisher_nothing() {
    let db = TestDb::new().await;
    // The window closes soon after the publisher is done, so what viewers get can be read
    // whole, as the recording.
    let (stack, id, key, addr) = open_slot(&db, 2, 30).await;
    let pid = stack.api.pid();
    let before = rss_kib(pid);

    // 1,000 connections from 250 addresses, four each: idle, pipelining and wrong keys.
    let stop = CancellationToken::new();
    let refused = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    let kinds = [
        Hostility::Idle,
        Hostility::Pipelining,
        Hostility::WrongKey,
        Hostility::Idle,
    ];
    for n in 0..1000u32 {
        let host = n / 4;
        let from = Ipv4Addr::new(127, 0, 1 + (host / 200) as u8, 1 + (host % 200) as u8);
        let kind = kinds[(n % 4) as usize];
        flood.spawn(hostile(
            kind,
            from,
            addr,
            id.clone(),
            stop.clone(),
            refused.clone(),
        ));
    }
    // The flood is on once every place is taken and newcomers take places from others.
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        let held = metric(&stack, "slotcast_streamer_connections").await;
        let evicted = metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"unauth_evicted\"}",
        )
        .await;
        if evicted > 0.0 {
            println!("flood on: {held} connections held, {evicted} evicted so far");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood never filled the places: {held} held, {evicted} evicted"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }

    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        })
    };

    let seconds = 8;
    let spawned = Instant::now();
    let mut publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", seconds);
    wait_connected(&db, &id, &publisher).await;
    let in_after = spawned.elapsed();
    assert!(
        publisher.wait(StdDuration::from_secs(60)).is_some(),
        "{}",
        publisher.describe()
    );
    stop.cancel();
    let _ = sampler.await;
    while flood.join_next().await.is_some() {}
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);

    // Every frame the publisher sent is in what viewers get: the reservation's playlist
    // read from its start once the window closed (ffmpeg's -t counts 25 frames a second).
    let playlist = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_for_text(
        &playlist,
        "the window's end",
        StdDuration::from_secs(60),
        |p| p.contains("#EXT-X-ENDLIST"),
    )
    .await;
    let (frames, errors) = ffmpeg_read_frames(&playlist, seconds + 2);
    let sent = seconds as usize * 25;
    println!(
        "1,000 hostile connections: the publisher got in {in_after:?} after ffmpeg started; \
         viewers got {frames} of {sent} frames; the server grew {} KiB at most; {} wrong-key \
         ANNOUNCEs answered",
        grown,
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(frames, sent, "frames lost; ffmpeg said: {errors}");
    assert!(grown < 64 * 1024, "the server grew {grown} KiB");

    // Thousands of refusals, and the history has at most one event for them a minute: the
    // first (while the test waited for the gate) went out at once, the flood's wait for the
    // next minute. The test is well inside two minutes.
    let bad_keys = metric(
        &stack,
        "slotcast_streamer_refusals_total{reason=\"bad_key\"}",
    )
    .await;
    assert!(bad_keys >= 100.0, "{bad_keys} wrong keys refused");
    let reports = ingest_reports(&db, &id).await;
    let refused: Vec<_> = reports.iter().filter(|r| r["kind"] == "refused").collect();
    assert!(
        (1..=2).contains(&refused.len()),
        "{} refused reports: {refused:?}",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_wrong_keys_are_one_history_event_not_three_hundred() {
    let db = TestDb::new().await;
    let (stack, id, key, addr) = open_slot(&db, 2, 60).await;
    let waited = ingest_reports(&db, &id).await.len();

    let wrong = format!("rtsp://{addr}/live/{id}?key=not-the-key");
    let mut answered = 0;
    for conn in 0..100u8 {
        let mut stream = connect_from(Ipv4Addr::new(127, 0, 2, 1 + conn), addr)
            .await
            .expect("connect");
        for cseq in 0..3 {
            let announce = format!(
                "ANNOUNCE {wrong} RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{SDP}",
                SDP.len()
            );
            assert_eq!(ask(&mut stream, &announce).await, Some(401));
            answered += 1;
        }
    }
    assert_eq!(answered, 300);
    assert!(
        metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"bad_key\"}"
        )
        .await
            >= 300.0
    );

    // The real publisher connects after them; once its report is in, everything the streamer
    // reported before it is too (one stream, in order).
    let mut publisher = ffmpeg_publish(&publish_url(addr, &id, &key), "tcp", 4);
    let reports = wait_connected(&db, &id, &publisher).await;
    let after: Vec<_> = reports[waited..]
        .iter()
        .filter(|r| r["kind"] == "refused")
        .collect();
    assert!(after.len() <= 1, "{after:?}");
    let before: u64 = reports
        .iter()
        .filter(|r| r["kind"] == "refused")
        .filter_map(|r| r["refusals"]["bad_key"].as_u64())
        .sum();
    assert!(before <= 300, "{reports:?}");
    assert!(publisher.wait(StdDuration::from_secs(30)).is_some());
}

/// Whether the server closed `stream` within `limit` having sent nothing (or a reset).
async fn closed_silently_within(stream: &mut TcpStream, limit: StdDuration) -> bool {
    let mut got = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut got))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_http_headers_are_cut_off_on_both_public_ports_and_the_cap_holds() {
    let db = TestDb::new().await;
    let stack = Stack::start_to(
        &db,
        "s1",
        ONE_CARRIER,
        &[
            ("SLOTCAST_HTTP_HEADER_TIMEOUT_S", "1"),
            ("SLOTCAST_HTTP_MAX_CONNECTIONS", "16"),
        ],
        std::process::Stdio::inherit(),
    );
    let api: SocketAddr = stack
        .api
        .base
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let hls: SocketAddr = stack.hls("").trim_start_matches("http://").parse().unwrap();
    for (port, addr) in [("api", api), ("viewers", hls)] {
        // A client that sends half a request line and then waits.
        let mut slow = connect_from(Ipv4Addr::new(127, 0, 1, 9), addr)
            .await
            .unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
            .await
            .unwrap();
        assert!(
            closed_silently_within(&mut slow, StdDuration::from_secs(8)).await,
            "{port}: a trickled header kept the connection"
        );
        // 16 idle connections fill the port; the 17th is closed at once, and once the idle
        // ones are cut off at the header timeout, requests are served again.
        let mut idle = Vec::new();
        for _ in 0..16 {
            idle.push(
                connect_from(Ipv4Addr::new(127, 0, 1, 10), addr)
                    .await
                    .unwrap(),
            );
        }
        let deadline = Instant::now() + StdDuration::from_secs(10);
        loop {
            let mut extra = connect_from(Ipv4Addr::new(127, 0, 1, 11), addr)
                .await
                .unwrap();
            if closed_silently_within(&mut extra, StdDuration::from_millis(300)).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{port}: the cap of 16 never held"
            );
        }
        let (status, _) = wait_for_ok(&format!("http://{addr}/healthz")).await;
        assert_eq!(status, 200, "{port}");
        drop(idle);
    }
}

/// GETs `url` until it answers (bounded): (status, body).
async fn wait_for_ok(url: &str) -> (u16, String) {
    let deadline = Instant::now() + StdDuration::from_secs(15);
    loop {
        let client = reqwest::Client::builder()
            .timeout(StdDuration::from_secs(2))
            .build()
            .unwrap();
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            return (status, resp.text().await.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

/// Lower-case hex SHA-256, as slot messages carry a stream key.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Publishes `payload` on `subject` with `signature` as its signature header, if any.
async fn publish_forged(subject: &str, payload: &serde_json::Value, signature: Option<&str>) {
    let js = support::nats::jetstream(&support::nats::shared_url()).await;
    let mut headers = async_nats::HeaderMap::new();
    if let Some(signature) = signature {
        headers.insert(slotcast_domain::signing::HEADER, signature);
    }
    let body = serde_json::to_vec(payload).unwrap();
    js.publish_with_headers(subject.to_string(), headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_unsigned_nats_messages_open_no_gate_and_write_no_history() {
    let db = TestDb::new().await;
    let secret = support::streaming::secret_key();
    let stack = Stack::start_to(
        &db,
        "s1",
        ONE_CARRIER,
        &[("SLOTCAST_SECRET_KEY", secret.as_str())],
        std::process::Stdio::inherit(),
    );
    stack.register("s1", &["carrier-a"]).await;
    // A slot two minutes away: its gate is shut now.
    let (start, end) = window(120, 60);
    let (id, key) = stack.book("s1", start, end).await;
    let addr = stack.rtsp("carrier-a");
    // Once the streamer knows the slot (its signed 'scheduled' message is in), the gate says
    // when it opens; forged messages come after it.
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (code, reason) = support::streaming::announce(addr, &id, &key);
        if code != 404 {
            assert_ne!(code, 200, "{reason}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the streamer never learnt the slot"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }

    // The attacker's "opened": the window open now, for a key of the attacker's.
    let stolen = "0123456789abcdef0123456789abcdef";
    let now = Utc::now();
    let slot_subject = format!("{}.slot.s1.{id}", db.nats_prefix);
    let opened = serde_json::json!({
        "schema": slotcast_domain::contract::SCHEMA, "kind": "opened",
        "reservation_id": id, "server_id": "s1", "revision": 99,
        "opens_at": now - Duration::seconds(10), "closes_at": now + Duration::seconds(60),
        "start": now, "end": now + Duration::seconds(50),
        "stream_key_hash": sha256_hex(stolen),
        "ingest": {"mode": "push"},
        "due_at": now, "published_at": now, "late_ms": 0.0,
    });
    let ingest_subject = format!("{}.ingest.s1.{id}", db.nats_prefix);
    let report = serde_json::json!({
        "schema": slotcast_domain::contract::SCHEMA, "kind": "connected",
        "reservation_id": id, "server_id": "s1", "at": now,
        "carrier": "carrier-a", "remote_addr": "203.0.113.9:554", "codec": "h264",
    });
    let forged_sig = format!("v1={}", "ab".repeat(32));
    for signature in [None, Some(forged_sig.as_str())] {
        publish_forged(&slot_subject, &opened, signature).await;
        publish_forged(&ingest_subject, &report, signature).await;
    }
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let unsigned = metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"nats_unsigned\"}",
        )
        .await;
        let bad = metric(
            &stack,
            "slotcast_streamer_refusals_total{reason=\"nats_bad_signature\"}",
        )
        .await;
        if unsigned >= 1.0 && bad >= 1.0 {
            break;
        }
        if Instant::now() >= deadline {
            let (_, text) = get_text(&stack.hls("/metrics")).await;
            panic!("forged slot messages not seen: {unsigned} {bad}\n{text}");
        }
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    let (code, reason) = support::streaming::announce(addr, &id, stolen);
    assert_ne!(code, 200, "a forged message opened the gate: {reason}");
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (_, text) = get_text(&stack.api.url("/metrics")).await;
        // Two of each: the api consumes the slot messages and the reports.
        if text.contains("slotcast_nats_messages_refused_total{outcome=\"unsigned\"} 2")
            && text.contains("slotcast_nats_messages_refused_total{outcome=\"bad_signature\"} 2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forged reports not refused:\n{text}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    // (The gate's own refusals of the test's ANNOUNCEs may be there, signed; not the forgery.)
    let reports = ingest_reports(&db, &id).await;
    assert!(
        reports
            .iter()
            .all(|r| r["remote_addr"] != "203.0.113.9:554"),
        "a forged report reached the history: {reports:?}"
    );

    // The same message signed with the deployment's key is taken: the signature is what
    // kept the gate shut.
    let signer = slotcast_domain::signing::Signer::new(&secret.parse().unwrap());
    let body = serde_json::to_vec(&opened).unwrap();
    let signed = signer.sign(&slot_subject, &body);
    publish_forged(&slot_subject, &opened, Some(&signed)).await;
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (code, reason) = support::streaming::announce(addr, &id, stolen);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a signed message was not taken: {reason}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

/// Polls the api's `/readyz` until its ingest consumer says `ok` (bounded); the last body.
async fn wait_consuming(api: &support::Api) -> serde_json::Value {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (_, ready) = api.call("GET", "/readyz", None, None).await;
        if ready["nats"]["ingest-consumer"]["ok"] == true {
            return ready;
        }
        assert!(Instant::now() < deadline, "never consuming: {ready}");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_logins_by_password_and_nkey_work_and_are_never_shown() {
    let db = TestDb::new().await;
    let password = "s3cret-nats-pass";
    let nats = support::nats::NatsServer::start_with(&["--user", "slot", "--pass", password]);
    let with_login = format!("nats://slot:{password}@127.0.0.1:{}", nats.port);
    let log = tempfile::NamedTempFile::new().unwrap();
    let api = support::Api::start_to(
        &db,
        &[("NATS_URL", with_login.as_str()), ("SLOTCAST_LOG", "info")],
        log.reopen().unwrap().into(),
    );
    let ready = wait_consuming(&api).await;
    assert!(!ready.to_string().contains(password), "{ready}");
    drop(api);

    // A wrong password: /readyz and the log say where NATS is, never the login.
    let wrong = format!("nats://slot:not-{password}@127.0.0.1:{}", nats.port);
    let api = support::Api::start_to(
        &db,
        &[("NATS_URL", wrong.as_str()), ("SLOTCAST_LOG", "info")],
        log.reopen().unwrap().into(),
    );
    let deadline = Instant::now() + StdDuration::from_secs(20);
    let said = loop {
        let (_, ready) = api.call("GET", "/readyz", None, None).await;
        let text = ready.to_string();
        if text.contains("***@127.0.0.1") {
            break text;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    };
    assert!(!said.contains(password), "{said}");
    drop(api);
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !logged.contains(password),
        "the log shows the NATS password"
    );

    // An nkey: the server knows the public key, the api holds the seed in a file.
    let pair = nkeys::KeyPair::new_user();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            pair.public_key()
        ),
    )
    .unwrap();
    let seed = conf_dir.path().join("api.nk");
    std::fs::write(&seed, pair.seed().unwrap()).unwrap();
    let nats = support::nats::NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let api = support::Api::start(
        &db,
        &[
            ("NATS_URL", nats.url().as_str()),
            ("SLOTCAST_NATS_NKEY_FILE", seed.to_str().unwrap()),
        ],
    );
    wait_consuming(&api).await;
}

/// A NATS JWT: `claims` (with `iss` and `sub` filled in) signed by `issuer`, as nats-server
/// reads them in operator mode (ed25519 over `header.payload`, base64url without padding).
fn nats_jwt(mut claims: serde_json::Value, issuer: &nkeys::KeyPair, subject: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    claims["iss"] = issuer.public_key().into();
    claims["sub"] = subject.into();
    claims["iat"] = Utc::now().timestamp().into();
    claims["jti"] = sha256_hex(&claims.to_string()).to_uppercase().into();
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = b64.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64.encode(signature))
}

/// A `.creds` file in `dir`: the user's JWT and its nkey seed, as nsc writes them.
fn creds_file(
    dir: &std::path::Path,
    name: &str,
    jwt: &str,
    user: &nkeys::KeyPair,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let seed = user.seed().expect("a user seed");
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .expect("write the creds file");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_login_by_creds_file_works() {
    let db = TestDb::new().await;
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        serde_json::json!({"name": "slotcast-test", "nats": {"type": "operator", "version": 2}}),
        &operator,
        &operator.public_key(),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = nats_jwt(
        serde_json::json!({"name": "slotcast", "nats": {
            "type": "account", "version": 2, "limits": unlimited,
        }}),
        &operator,
        &account.public_key(),
    );
    let system_jwt = nats_jwt(
        serde_json::json!({"name": "SYS", "nats": {"type": "account", "version": 2}}),
        &operator,
        &system.public_key(),
    );
    let user_jwt = nats_jwt(
        serde_json::json!({"name": "api", "nats": {
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1,
        }}),
        &account,
        &user.public_key(),
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{ {acc}: \"{account_jwt}\", {sys}: \"{system_jwt}\" }}\n",
            acc = account.public_key(),
            sys = system.public_key(),
        ),
    )
    .unwrap();
    let creds = creds_file(dir.path(), "api.creds", &user_jwt, &user);
    std::fs::copy(&conf, "/tmp/nats-creds.conf").unwrap();
    let nats = support::nats::NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let api = support::Api::start(
        &db,
        &[
            ("NATS_URL", nats.url().as_str()),
            ("SLOTCAST_NATS_CREDS_FILE", creds.to_str().unwrap()),
        ],
    );
    wait_consuming(&api).await;
    drop(api);

    // A user signed by an account the server does not trust is kept out: the login is what
    // let the first one in.
    let stranger = nkeys::KeyPair::new_account();
    let forged = nats_jwt(
        serde_json::json!({"name": "api", "nats": {"type": "user", "version": 2}}),
        &stranger,
        &user.public_key(),
    );
    let forged_creds = creds_file(dir.path(), "forged.creds", &forged, &user);
    let api = support::Api::start(
        &db,
        &[
            ("NATS_URL", nats.url().as_str()),
            ("SLOTCAST_NATS_CREDS_FILE", forged_creds.to_str().unwrap()),
        ],
    );
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (_, ready) = api.call("GET", "/readyz", None, None).await;
        let detail = ready["nats"]["ingest-consumer"]["detail"].to_string();
        if detail.contains("unreachable") {
            break;
        }
        assert_ne!(ready["nats"]["ingest-consumer"]["ok"], true, "{ready}");
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}
