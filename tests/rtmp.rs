//! RTMP publishers with real peers: ffmpeg publishes by RTMP (`-f flv
//! rtmp://…/live/<reservation>?key=<key>`) into reserved windows through the same gate as
//! RTSP, ffmpeg reads the LL-HLS output and the recording back, and strangers that never
//! publish are held to the limits RTSP's are.

mod support;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};

use support::streaming::{
    assert_closed_at_record_deadline, assert_live_then_recorded, assert_plays,
    assert_refusals_recorded, connected, disconnected_reason, ffmpeg_publish_rtmp,
    hold_a_strangers_share, rtmp_url, segments, wait_ended, wait_for_text, wait_gate_open, window,
    Stack,
};
use support::TestDb;

/// `slotcast server all` with an RTSP listener on carrier-a (the tests wait for gates with
/// it) and the RTMP listeners `rtmp`, and more environment.
fn start(db: &TestDb, rtmp: &str, env: &[(&str, &str)]) -> Stack {
    let mut env = env.to_vec();
    env.push(("SLOTCAST_RTMP_LISTENERS", rtmp));
    Stack::start_to(db, "s1", "carrier-a=127.0.0.2:0", &env, Stdio::inherit())
}

/// ffmpeg publishing by RTMP to `url`, refused: what it printed (it must exit, and not 0).
fn refused(url: &str) -> String {
    let mut publisher = ffmpeg_publish_rtmp(url, 10, &[]);
    let code = publisher.wait(StdDuration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0),
        "not refused (exit {code:?}): {}",
        publisher.describe()
    );
    publisher.log()
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_publishes_by_rtmp_and_viewers_watch_live_then_the_recording() {
    let db = TestDb::new().await;
    let stack = start(&db, "carrier-a=127.0.0.2:0", &[]);
    stack.register("s1", &["carrier-a"]).await;
    let (start, end) = window(2, 28);
    let (id, key) = stack.book("s1", start, end).await;
    wait_gate_open(stack.rtsp("carrier-a"), &id, &key);

    let url = rtmp_url(stack.rtmp("carrier-a"), &id, &key);
    let mut publisher = ffmpeg_publish_rtmp(&url, 18, &[]);
    assert_live_then_recorded(&stack, &db, &id, ("rtmp", "h264,aac"), &mut publisher).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rtmp_publishers_are_refused_outside_their_window_server_key_or_carrier_and_cut_off_at_close(
) {
    let db = TestDb::new().await;
    // carrier-x is an RTMP listener of this streamer but not a carrier of server s1.
    let stack = start(&db, "carrier-a=127.0.0.2:0,carrier-x=127.0.0.4:0", &[]);
    stack.register("s1", &["carrier-a"]).await;
    stack.register("s2", &["carrier-a"]).await;
    let (start, end) = window(2, 20);
    let (open_id, open_key) = stack.book("s1", start, end).await;
    let (other_id, other_key) = stack.book("s2", start, end).await;
    let (later_id, later_key) = stack
        .book(
            "s1",
            start + Duration::seconds(600),
            end + Duration::seconds(600),
        )
        .await;
    wait_gate_open(stack.rtsp("carrier-a"), &open_id, &open_key);
    let a = stack.rtmp("carrier-a");

    // ffmpeg prints the refusal's code and words as the server sent them.
    let wrong_key = "0123456789abcdef0123456789abcdef";
    let cases = [
        (
            rtmp_url(a, &later_id, &later_key),
            "Server error: not_open: reservation not open: ",
        ),
        (
            rtmp_url(a, &open_id, wrong_key),
            "Server error: bad_key: wrong stream key",
        ),
        (
            format!("rtmp://{a}/live/{open_id}"),
            "Server error: bad_key: no stream key: publish to rtmp://<host>:<port>/live with the stream key <reservation-id>?key=<stream-key>",
        ),
        (
            rtmp_url(a, &other_id, &other_key),
            "Server error: other_server: the reservation is not on this server or carrier",
        ),
        (
            rtmp_url(stack.rtmp("carrier-x"), &open_id, &open_key),
            "Server error: not_a_carrier: the reservation is not on this server or carrier",
        ),
        (
            rtmp_url(a, "no-such-reservation", &open_key),
            "Server error: unknown: unknown reservation",
        ),
    ];
    for (url, says) in &cases {
        let printed = refused(url);
        assert!(printed.contains(says), "{url}: ffmpeg printed {printed}");
    }
    let printed = refused(&rtmp_url(a, &later_id, &later_key));
    assert!(printed.contains("it opens at"), "{printed}");
    // The first refusal of a reservation goes into its history at once (later ones are
    // rolled up by the minute); each is a metric.
    let reasons = [
        "not_open",
        "bad_key",
        "other_server",
        "not_a_carrier",
        "unknown",
    ];
    assert_refusals_recorded(&stack, &db, &later_id, &reasons).await;

    // A publisher that would go on for a minute, with B-frames (as OBS's x264 sends by
    // default): viewers get every frame; a second publisher is refused while it is live, and
    // the first is cut off when the window closes.
    let b_frames = ["-profile:v", "high", "-bf", "2"];
    let mut publisher = ffmpeg_publish_rtmp(&rtmp_url(a, &open_id, &open_key), 60, &b_frames);
    let url = stack.hls(&format!("/hls/{open_id}/index.m3u8"));
    wait_for_text(&url, "a segment", StdDuration::from_secs(15), |p| {
        segments(p) >= 1
    })
    .await;
    let printed = refused(&rtmp_url(a, &open_id, &open_key));
    assert!(
        printed.contains("Server error: busy: another publisher is live on this reservation"),
        "{printed}"
    );
    assert_plays(&url, 2, "0:v:0", 40, "live with B-frames");
    let limit = (end - Utc::now()).to_std().unwrap_or_default() + StdDuration::from_secs(8);
    let code = publisher.wait(limit);
    assert!(
        code.is_some_and(|c| c != 0),
        "not cut off at window close (exit {code:?}): {}",
        publisher.describe()
    );
    let ended = wait_ended(&url, 10).await;
    assert!(segments(&ended) >= 3, "{ended}");
    let reason = disconnected_reason(&db, &open_id).await;
    assert!(reason.contains("the window closed"), "{reason}");
    let printed = refused(&rtmp_url(a, &open_id, &open_key));
    assert!(
        printed.contains("Server error: closed: reservation not open: "),
        "after the window: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_that_never_publish_share_rtsps_limits_and_deadline_while_a_publisher_goes_live()
{
    let db = TestDb::new().await;
    let stack = start(
        &db,
        "carrier-a=127.0.0.2:0",
        &[("SLOTCAST_INGEST_RECORD_DEADLINE_S", "4")],
    );
    stack.register("s1", &["carrier-a"]).await;
    let (start, end) = window(2, 40);
    let (id, key) = stack.book("s1", start, end).await;
    wait_gate_open(stack.rtsp("carrier-a"), &id, &key);
    let (rtmp, rtsp) = (stack.rtmp("carrier-a"), stack.rtsp("carrier-a"));

    // A stranger holds 8 RTMP connections, its share: the 9th, by RTMP or by RTSP, is closed
    // at once.
    let stranger = Ipv4Addr::new(127, 0, 1, 1);
    let mut held = hold_a_strangers_share(&stack, stranger, rtmp, rtsp).await;

    // Meanwhile a publisher from its own address goes live by RTMP.
    let mut publisher = ffmpeg_publish_rtmp(&rtmp_url(rtmp, &id, &key), 12, &[]);
    let report = connected(&db, &id).await;
    assert_eq!(report["codec"], "h264,aac", "{report}");

    // The stranger's connections, which never published, go at the record deadline.
    assert_closed_at_record_deadline(&stack, &mut held).await;
    assert!(publisher.is_running(), "{}", publisher.describe());
}
