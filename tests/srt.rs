//! SRT publishers with real peers: ffmpeg publishes MPEG-TS by SRT (caller mode,
//! `streamid=#!::r=<reservation>,k=<key>`) into reserved windows through the same gate as
//! RTSP, and ffmpeg reads the LL-HLS output and the recording back; callers the gate refuses
//! get the refusal's SRT reject code before their handshake completes, read here by a caller
//! of our own (libsrt's, as ffmpeg's is: ffmpeg prints no code).

mod support;

use std::process::Stdio;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use slotcast_domain::contract::{RefusalCode, SRT_REJECT_BAD_STREAM_ID};
use slotcast_srt::SrtError;

use support::streaming::{
    assert_live_then_recorded, assert_refusals_recorded, ffmpeg_publish_srt, ingest_reports,
    segments, srt_url, wait_for_text, wait_gate_open, window, Stack,
};
use support::TestDb;

/// `slotcast server all` with an RTSP listener on carrier-a (the tests wait for gates with
/// it) and the SRT listeners `srt`.
fn start(db: &TestDb, srt: &str) -> Stack {
    let env = [("SLOTCAST_SRT_LISTENERS", srt)];
    Stack::start_to(db, "s1", "carrier-a=127.0.0.2:0", &env, Stdio::inherit())
}

/// A caller of our own with this stream id: how the listener answered.
fn call(addr: std::net::SocketAddr, stream_id: &str) -> Result<slotcast_srt::Socket, SrtError> {
    slotcast_srt::connect(
        addr,
        stream_id,
        StdDuration::from_millis(120),
        StdDuration::from_secs(5),
    )
}

fn stream_id(reservation: &str, key: &str) -> String {
    format!("#!::r={reservation},k={key}")
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_publishes_by_srt_and_viewers_watch_live_then_the_recording() {
    let db = TestDb::new().await;
    let stack = start(&db, "carrier-a=127.0.0.2:0");
    stack.register("s1", &["carrier-a"]).await;
    let (start, end) = window(2, 28);
    let (id, key) = stack.book("s1", start, end).await;
    wait_gate_open(stack.rtsp("carrier-a"), &id, &key);

    // With B-frames, as OBS's x264 sends by default.
    let b_frames = ["-profile:v", "high", "-bf", "2"];
    let url = srt_url(stack.srt("carrier-a"), &id, &key);
    let mut publisher = ffmpeg_publish_srt(&url, 18, &b_frames);
    assert_live_then_recorded(&stack, &db, &id, ("srt", "h264,aac"), &mut publisher).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_callers_are_refused_by_code_before_their_handshake_and_cut_off_at_close() {
    let db = TestDb::new().await;
    // carrier-x is an SRT listener of this streamer but not a carrier of server s1.
    let stack = start(&db, "carrier-a=127.0.0.2:0,carrier-x=127.0.0.4:0");
    stack.register("s1", &["carrier-a"]).await;
    stack.register("s2", &["carrier-a"]).await;
    let (start, end) = window(2, 16);
    let (open_id, open_key) = stack.book("s1", start, end).await;
    let (other_id, other_key) = stack.book("s2", start, end).await;
    let later = (start + Duration::seconds(600), end + Duration::seconds(600));
    let (later_id, later_key) = stack.book("s1", later.0, later.1).await;
    wait_gate_open(stack.rtsp("carrier-a"), &open_id, &open_key);
    let a = stack.srt("carrier-a");

    let wrong_key = "0123456789abcdef0123456789abcdef";
    let cases = [
        (
            a,
            stream_id(&later_id, &later_key),
            RefusalCode::NotOpen.srt_reject(),
        ),
        (
            a,
            stream_id(&open_id, wrong_key),
            RefusalCode::BadKey.srt_reject(),
        ),
        (
            a,
            stream_id(&other_id, &other_key),
            RefusalCode::OtherServer.srt_reject(),
        ),
        (
            stack.srt("carrier-x"),
            stream_id(&open_id, &open_key),
            RefusalCode::NotACarrier.srt_reject(),
        ),
        (
            a,
            stream_id("no-such-reservation", &open_key),
            RefusalCode::Unknown.srt_reject(),
        ),
        (
            a,
            format!("{open_id}?key={open_key}"),
            SRT_REJECT_BAD_STREAM_ID,
        ),
        (a, String::new(), SRT_REJECT_BAD_STREAM_ID),
    ];
    for (addr, id, code) in &cases {
        let answer = call(*addr, id).err();
        assert_eq!(answer, Some(SrtError::Rejected(*code)), "{id:?}");
    }
    // ffmpeg refused: it gives up, and says its connection was rejected.
    let mut refused = ffmpeg_publish_srt(&srt_url(a, &open_id, wrong_key), 10, &[]);
    let code = refused.wait(StdDuration::from_secs(20));
    assert!(code.is_some_and(|c| c != 0), "{}", refused.describe());
    // Refusals of a known reservation go into its history; each is a metric.
    let reasons = [
        "not_open",
        "bad_key",
        "other_server",
        "not_a_carrier",
        "unknown",
        "malformed",
    ];
    assert_refusals_recorded(&stack, &db, &later_id, &reasons).await;

    // A publisher that would go on for a minute: a second caller is refused while it is live
    // (busy), and the first is cut off when the window closes.
    let mut publisher = ffmpeg_publish_srt(&srt_url(a, &open_id, &open_key), 60, &[]);
    let url = stack.hls(&format!("/hls/{open_id}/index.m3u8"));
    wait_for_text(&url, "a segment", StdDuration::from_secs(15), |p| {
        segments(p) >= 1
    })
    .await;
    let busy = call(a, &stream_id(&open_id, &open_key)).err();
    assert_eq!(
        busy,
        Some(SrtError::Rejected(RefusalCode::Busy.srt_reject()))
    );
    let code = publisher.wait(StdDuration::from_secs(40));
    assert!(
        code.is_some(),
        "still publishing after the close: {}",
        publisher.describe()
    );
    let deadline = Instant::now() + StdDuration::from_secs(15);
    loop {
        let reports = ingest_reports(&db, &open_id).await;
        if let Some(r) = reports.iter().find(|r| r["kind"] == "disconnected") {
            assert_eq!(r["reason"], "the window closed", "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no disconnected report: {reports:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}
