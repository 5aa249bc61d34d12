//! WHIP publishers with real peers: GStreamer's webrtcbin (tests/support/whip_publish.py)
//! publishes H.264 and Opus by WHIP (`POST /whip/<reservation>`, the key as the bearer token)
//! into reserved windows through the same gate as RTSP, from a host of its own on the
//! dedicated network (see [`Lab`]), and ffmpeg reads the LL-HLS output and the recording
//! back; a second publisher is refused `busy`, the first is cut off at the close. Refused
//! publishers get the refusal's status, code and words over real HTTP; requests that are not
//! a publish get WHIP's answers (401 asking for the bearer, 405 for trickle's PATCH, 415,
//! 413); strangers that never ask are held to the limits every ingest protocol shares. The
//! lab needs root (docs/testing.md).

mod support;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};

use support::streaming::{
    assert_closed_at_record_deadline, assert_live_then_recorded, assert_plays,
    assert_refusals_recorded, disconnected_reason, gst_publish_whip, hold_a_strangers_share,
    segments, wait_ended, wait_for_text, wait_gate_open, whip_url, window, Publisher, Stack,
};
use support::TestDb;

/// `slotcast server all` with an RTSP listener on carrier-a (the tests wait for gates with
/// it) and the WHIP listeners `whip`, and more environment.
fn start(db: &TestDb, whip: &str, env: &[(&str, &str)]) -> Stack {
    let mut env = env.to_vec();
    env.push(("SLOTCAST_WHIP_LISTENERS", whip));
    Stack::start_to(db, "s1", "carrier-a=127.0.0.2:0", &env, Stdio::inherit())
}

/// Waits (bounded) for `publisher` to exit; what it said, which must end in exit `code`.
fn exits(publisher: &mut Publisher, code: i32, limit: StdDuration) -> String {
    let exited = publisher.wait(limit);
    assert_eq!(exited, Some(code), "{}", publisher.describe());
    publisher.log()
}

/// An answer as a WHIP client sees it.
struct Answered {
    status: u16,
    refusal: Option<String>,
    challenge: Option<String>,
    body: String,
}

/// A WHIP request (a POST with an offer when `offer` is given) with these headers.
async fn whip(method: &str, url: &str, headers: &[(&str, &str)], offer: &str) -> Answered {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client
        .request(method, url)
        .timeout(StdDuration::from_secs(10));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request
        .body(offer.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (refusal, challenge) = (header("Slotcast-Refusal"), header("WWW-Authenticate"));
    Answered {
        status: answer.status().as_u16(),
        refusal,
        challenge,
        body: answer.text().await.unwrap_or_default(),
    }
}

/// A minimal offer: the gate decides before the offer is read as SDP.
const OFFER: &str = "v=0\r\n";

async fn publish(url: &str, key: &str) -> Answered {
    let bearer = format!("Bearer {key}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/sdp"),
    ];
    whip("POST", url, &headers, OFFER).await
}

#[tokio::test(flavor = "multi_thread")]
async fn whip_publishers_are_refused_with_the_gates_status_code_and_words() {
    let db = TestDb::new().await;
    // carrier-x is a WHIP listener of this streamer but not a carrier of server s1.
    let stack = start(&db, "carrier-a=127.0.0.2:0,carrier-x=127.0.0.4:0", &[]);
    stack.register("s1", &["carrier-a"]).await;
    stack.register("s2", &["carrier-a"]).await;
    let (start, end) = window(2, 30);
    let (open_id, open_key) = stack.book("s1", start, end).await;
    let (other_id, other_key) = stack.book("s2", start, end).await;
    let later = (start + Duration::seconds(600), end + Duration::seconds(600));
    let (later_id, later_key) = stack.book("s1", later.0, later.1).await;
    wait_gate_open(stack.rtsp("carrier-a"), &open_id, &open_key);
    let (a, x) = (stack.whip("carrier-a"), stack.whip("carrier-x"));

    let wrong_key = "0123456789abcdef0123456789abcdef";
    let cases = [
        (whip_url(a, &later_id), later_key.as_str(), 403, "not_open"),
        (whip_url(a, &open_id), wrong_key, 401, "bad_key"),
        (
            whip_url(a, &other_id),
            other_key.as_str(),
            403,
            "other_server",
        ),
        (
            whip_url(x, &open_id),
            open_key.as_str(),
            403,
            "not_a_carrier",
        ),
        (
            whip_url(a, "no-such-reservation"),
            open_key.as_str(),
            404,
            "unknown",
        ),
    ];
    for (url, key, status, code) in &cases {
        let answer = publish(url, key).await;
        if *code == "not_open" {
            assert!(answer.body.contains("it opens at"), "{}", answer.body);
        }
        assert_eq!(answer.status, *status, "{url}: {}", answer.body);
        assert_eq!(
            answer.refusal.as_deref(),
            Some(*code),
            "{url}: {}",
            answer.body
        );
        assert!(
            answer.body.starts_with(&format!("{code}: ")),
            "{url}: {}",
            answer.body
        );
    }
    let bad_key = publish(&whip_url(a, &open_id), wrong_key).await;
    assert_eq!(
        bad_key.challenge.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_refusals_recorded(
        &stack,
        &db,
        &later_id,
        &[
            "not_open",
            "bad_key",
            "other_server",
            "not_a_carrier",
            "unknown",
        ],
    )
    .await;

    // What is not a publish: no refusal code, WHIP's answers.
    let url = whip_url(a, &open_id);
    let sdp = [("Content-Type", "application/sdp")];
    let no_key = whip("POST", &url, &sdp, OFFER).await;
    assert_eq!(no_key.status, 401, "{}", no_key.body);
    assert_eq!(no_key.challenge.as_deref(), Some("Bearer"));
    assert_eq!(no_key.refusal, None);
    let bearer = format!("Bearer {open_key}");
    let json = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(whip("POST", &url, &json, "{}").await.status, 415);
    let big = "a".repeat(64 * 1024 + 1);
    let too_big = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/sdp"),
    ];
    assert_eq!(whip("POST", &url, &too_big, &big).await.status, 413);
    let session = format!("{url}/0123456789abcdef0123456789abcdef");
    let patch = whip("PATCH", &session, &too_big, "a=candidate:1").await;
    assert_eq!(patch.status, 405, "{}", patch.body);
    assert!(patch.body.contains("trickle"), "{}", patch.body);
    assert_eq!(whip("DELETE", &session, &[], "").await.status, 404);
    // Inside the window, with the key: the gate lets it in, and the offer decides.
    let not_sdp = publish(&url, &open_key).await;
    assert_eq!(not_sdp.status, 400, "{}", not_sdp.body);
    assert_eq!(not_sdp.refusal, None, "{}", not_sdp.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_that_never_ask_share_the_limits_and_deadline_of_every_ingest_protocol() {
    let db = TestDb::new().await;
    let stack = start(
        &db,
        "carrier-a=127.0.0.2:0",
        &[("SLOTCAST_INGEST_RECORD_DEADLINE_S", "4")],
    );
    let (whip, rtsp) = (stack.whip("carrier-a"), stack.rtsp("carrier-a"));
    // A stranger holds 8 WHIP connections that never send a request, its share: the 9th, by
    // WHIP or by RTSP, is closed at once; they go at the record deadline.
    let stranger = Ipv4Addr::new(127, 0, 1, 1);
    let mut held = hold_a_strangers_share(&stack, stranger, whip, rtsp).await;
    assert_closed_at_record_deadline(&stack, &mut held).await;
}

/// The lab for a real WebRTC publisher: webrtcbin's libnice gathers no loopback candidate
/// and pins each candidate's socket to its interface (`IP_UNICAST_IF`), so it cannot reach a
/// streamer on 127.0.0.x. The streamer is `server` (.1) and the publisher `publisher` (.2) on
/// the dedicated network 10.93.0.0/24 of namespaces of the test's own
/// (tests/support/netns.rs); the server reaches Postgres and NATS through relays.
struct Lab {
    lab: support::netns::Lab,
    server: support::netns::Host,
    publisher: support::netns::Host,
    _relays: Vec<support::netns::Relay>,
}

const SERVER_WHIP: &str = "carrier-a=10.93.0.1:0";

impl Lab {
    fn new(db: &TestDb) -> Self {
        let lab = support::netns::Lab::new();
        let dedicated = lab.network("dedicated", [10, 93, 0]);
        let server = lab.host("server", &[(&dedicated, 1)]);
        let publisher = lab.host("publisher", &[(&dedicated, 2)]);
        let relays = vec![
            server.relay(&db.url),
            server.relay(&support::nats::shared_url()),
        ];
        Self {
            lab,
            server,
            publisher,
            _relays: relays,
        }
    }

    /// webrtcbin publishing from the publisher host (see [`gst_publish_whip`]).
    fn publish(&self, url: &str, key: &str, seconds: u32) -> Publisher {
        self.publisher.run(|| gst_publish_whip(url, key, seconds))
    }
}

/// The part latency the streamer measured (a figure, printed; never asserted): its mean,
/// and the histogram bucket its 95th percentile falls in.
async fn print_part_latency(stack: &Stack) {
    let (_, text) = support::streaming::get_text(&stack.hls("/metrics")).await;
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let series = "slotcast_streamer_part_latency_seconds";
    let find = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{series}_{name} ")))
            .and_then(value)
            .unwrap_or(0.0)
    };
    let (sum, count) = (find("sum"), find("count"));
    let p95 = text
        .lines()
        .filter(|l| l.starts_with(&format!("{series}_bucket{{le=\"")))
        .find(|l| value(l).is_some_and(|n| n >= 0.95 * count))
        .and_then(|l| l.split('"').nth(1)?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    eprintln!(
        "WHIP part latency: {count} parts, mean {:.0} ms, p95 at most {:.0} ms",
        1000.0 * sum / count.max(1.0),
        1000.0 * p95
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webrtcbin_publishes_by_whip_and_viewers_watch_live_then_the_recording() {
    let db = TestDb::new().await;
    let lab = Lab::new(&db);
    let _lab = &lab.lab;
    lab.server.block_on(|| async {
        let stack = start(&db, SERVER_WHIP, &[]);
        stack.register("s1", &["carrier-a"]).await;
        let (start, end) = window(2, 28);
        let (id, key) = stack.book("s1", start, end).await;
        wait_gate_open(stack.rtsp("carrier-a"), &id, &key);

        let url = whip_url(stack.whip("carrier-a"), &id);
        let mut publisher = lab.publish(&url, &key, 18);
        assert_live_then_recorded(&stack, &db, &id, ("whip", "h264,opus"), &mut publisher).await;
        print_part_latency(&stack).await;
        let said = publisher.log();
        assert!(said.contains("status 201"), "{said}");
        assert!(said.contains("deleted 200"), "{said}");
        let reason = disconnected_reason(&db, &id).await;
        assert!(
            reason.contains("publisher stopped publishing"),
            "the DELETE: {reason}"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_webrtcbin_publisher_is_refused_busy_and_the_first_is_cut_off_at_close() {
    let db = TestDb::new().await;
    let lab = Lab::new(&db);
    let _lab = &lab.lab;
    lab.server.block_on(|| async {
        let stack = start(&db, SERVER_WHIP, &[]);
        stack.register("s1", &["carrier-a"]).await;
        let (start, end) = window(2, 16);
        let (id, key) = stack.book("s1", start, end).await;
        wait_gate_open(stack.rtsp("carrier-a"), &id, &key);
        let url = whip_url(stack.whip("carrier-a"), &id);

        // One that would go on for a minute.
        let mut first = lab.publish(&url, &key, 60);
        let playlist = stack.hls(&format!("/hls/{id}/index.m3u8"));
        wait_for_text(&playlist, "a segment", StdDuration::from_secs(15), |p| {
            segments(p) >= 1
        })
        .await;
        assert_plays(&playlist, 2, "0:a:0", 50, "live Opus");
        let mut second = lab.publish(&url, &key, 10);
        let said = exits(&mut second, 3, StdDuration::from_secs(20));
        assert!(said.contains("status 403"), "{said}");
        assert!(said.contains("refusal busy"), "{said}");
        assert!(
            said.contains("body busy: another publisher is live on this reservation"),
            "{said}"
        );

        // The window closes: the first is cut off (sent RTCP BYE and a DTLS close_notify,
        // which GStreamer 1.22's webrtcbin does not act on: it is stopped here).
        let limit = (end - Utc::now()).num_seconds().max(0) as u64 + 10;
        let ended = wait_ended(&playlist, limit).await;
        assert!(
            first.is_running(),
            "cut off by the streamer, not gone by itself"
        );
        drop(first);
        assert!(segments(&ended) >= 3, "{ended}");
        let reason = disconnected_reason(&db, &id).await;
        assert!(reason.contains("the window closed"), "{reason}");
        let mut late = lab.publish(&url, &key, 10);
        let said = exits(&mut late, 3, StdDuration::from_secs(20));
        assert!(said.contains("refusal closed"), "after the window: {said}");
    });
}
