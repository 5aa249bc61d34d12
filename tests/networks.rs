//! The two networks as networks (issue 21): hosts in network namespaces of the test's own
//! (tests/support/netns.rs), on a public network (the api, the viewers, the terminal's
//! booking side) and a dedicated one (the ingest listeners, the terminal's publishing side).
//! The terminal books over the first and publishes over the second while a viewer plays the
//! stream over the first; the ingest listeners cannot be reached from the public network and
//! the api cannot be reached from the dedicated one, each shown by a real connection attempt
//! beside one from the right side that succeeds. Needs root (docs/testing.md).
//!
//! ```text
//!   public 10.91.0.0/24                          dedicated 10.92.0.0/24
//!   ├─ server   .1  api :8080, HLS :8888          ├─ server   .1  ingest carrier-a :8554
//!   ├─ terminal .2  books                         ├─ terminal .2  publishes (slotcast live)
//!   └─ viewer   .3  plays the HLS (ffmpeg)        └─ encoder  .3  (dedicated only)
//! ```
//!
//! The server reaches the shared Postgres and NATS through relays on its own loopback
//! (tests/support/netns.rs), which join neither network.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use support::netns::{Host, Lab};
use support::streaming::{
    connected, ffmpeg_read_frames, make_clip, streamer_env, wait_for_text, StreamerProcess,
};
use support::terminal::{booked_id, finish, ok, start, Terminal};
use support::{nats, spawn_role_lines, token, TestDb};

const API_PORT: u16 = 8080;
const HLS_PORT: u16 = 8888;
const INGEST_PORT: u16 = 8554;
/// A terminal command that talks to the api once or twice.
const COMMAND: Duration = Duration::from_secs(30);

fn at(host: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(host, port)
}

/// POSTs `body` with a bearer token (run inside a host): (status, JSON answer).
async fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Connects from `host` to each `(what, addr)`; each must answer (`reach`) or not.
fn probe(reach: bool, probes: &[(&Host, &str, SocketAddr)]) {
    for (host, what, addr) in probes {
        let result = host.connect(*addr);
        eprintln!("{} -> {what} {addr}: {result:?}", host.name);
        match (reach, result) {
            (true, Err(e)) => panic!("{} cannot reach {what}: {e}", host.name),
            (false, Ok(())) => panic!("{} reached {what} at {addr}", host.name),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_terminal_books_over_the_public_network_and_publishes_over_the_dedicated_one_and_neither_reaches_the_other_side(
) {
    let lab = Lab::new();
    let public = lab.network("public", [10, 91, 0]);
    let dedicated = lab.network("dedicated", [10, 92, 0]);
    let server = lab.host("server", &[(&public, 1), (&dedicated, 1)]);
    let terminal = lab.host("terminal", &[(&public, 2), (&dedicated, 2)]);
    let viewer = lab.host("viewer", &[(&public, 3)]);
    let encoder = lab.host("encoder", &[(&dedicated, 3)]);

    let db = TestDb::new().await;
    let _postgres = server.relay(&db.url);
    let _nats = server.relay(&nats::shared_url());

    let (server_public, server_dedicated) =
        (server.addr(&public).into(), server.addr(&dedicated).into());
    let api = at(server_public, API_PORT);
    let hls = at(server_public, HLS_PORT);
    let ingest = at(server_dedicated, INGEST_PORT);
    let recordings = tempfile::tempdir().expect("recordings dir");
    let mut streamer = streamer_env("s1", &format!("carrier-a={ingest}"), recordings.path());
    streamer.push(("SLOTCAST_HLS_ADDR".into(), hls.to_string()));
    let key = streamer
        .iter()
        .find(|(k, _)| k == "SLOTCAST_SECRET_KEY")
        .map(|(_, v)| v.clone())
        .expect("streamer_env gives a secret key");
    // The api with the scheduler in it, on the public address only; the streamer with its
    // viewers on the public address and its carrier on the dedicated one.
    let (_api, lines) = server.run(|| {
        spawn_role_lines(
            &db,
            "all",
            &[
                ("SLOTCAST_API_ADDR", &api.to_string()),
                ("SLOTCAST_SECRET_KEY", &key),
            ],
            &["slotcast api listening on "],
        )
    });
    assert_eq!(lines[0], format!("http://{api}"));
    let streamer = server.run(|| StreamerProcess::start(&db, &streamer));
    assert_eq!(streamer.endpoints.hls, format!("http://{hls}"));
    assert_eq!(streamer.endpoints.ingest["carrier-a"], ingest);
    let api_url = format!("http://{api}");

    // Bound where they were told, and nowhere else (the loopback ones are the relays and the
    // scheduler's ops port).
    let mut listening: Vec<String> = server
        .listening()
        .into_iter()
        .filter(|a| !a.starts_with("127.0.0.1:"))
        .collect();
    listening.sort();
    assert_eq!(
        listening,
        [api.to_string(), hls.to_string(), ingest.to_string()],
        "the server's listening sockets off loopback"
    );

    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    // The operator registers the server from the public network.
    let servers = format!("{api_url}/v1/servers");
    let (status, body) = viewer.block_on(|| {
        post(
            &servers,
            &operator,
            json!({
                "id": "s1", "name": "s1", "capacity": 10,
                "min_lead_s": 0, "preroll_s": 0, "grace_s": 0,
                "carriers": [{"name": "carrier-a", "ingest_url": format!("rtsp://{ingest}")}]
            }),
        )
    });
    assert_eq!(status, 201, "{body}");

    // The terminal books over the public network and stores the dedicated carrier's URL.
    let clips = tempfile::tempdir().expect("clip dir");
    let clip = make_clip(clips.path(), 4);
    let t = Terminal::new();
    let before_booking = (terminal.sent(&public), terminal.sent(&dedicated));
    let login = terminal.run(|| {
        finish(
            t.command(&["login", "--api", &api_url, "--token", &alice]),
            COMMAND,
        )
    });
    ok(&login, "login");
    let booked = terminal.run(|| {
        finish(
            t.command(&[
                "book",
                "--server",
                "s1",
                "--start",
                "+8s",
                "--duration",
                "14s",
            ]),
            COMMAND,
        )
    });
    let id = booked_id(&booked);
    let (over_public, over_dedicated) = (
        terminal.sent(&public) - before_booking.0,
        terminal.sent(&dedicated) - before_booking.1,
    );
    eprintln!("login and book sent {over_public} bytes (public), {over_dedicated} (dedicated)");
    assert!(
        over_public > 0 && over_dedicated == 0,
        "the booking went over the public network"
    );
    let setting: Value =
        serde_json::from_slice(&std::fs::read(t.setting(&id)).expect("the setting info"))
            .expect("JSON");
    let carriers = setting["carriers"].as_array().expect("carriers");
    assert_eq!(carriers.len(), 1, "{setting}");
    assert_eq!(carriers[0]["carrier"], "carrier-a");
    let url = carriers[0]["url"].as_str().unwrap_or_default();
    assert!(url.starts_with(&format!("rtsp://{ingest}/")), "{setting}");

    // Reachability, each way, with the same probe from the right side as the control.
    let public_ingest = at(server_public, INGEST_PORT);
    let dedicated_api = at(server_dedicated, API_PORT);
    let dedicated_hls = at(server_dedicated, HLS_PORT);
    probe(
        true,
        &[
            (&viewer, "the api", api),
            (&viewer, "the HLS", hls),
            (&terminal, "the api", api),
            (&terminal, "the ingest listener", ingest),
            (&encoder, "the ingest listener", ingest),
        ],
    );
    probe(
        false,
        &[
            (&viewer, "the ingest listener", ingest),
            (&viewer, "ingest port, public address", public_ingest),
            (&encoder, "the api", api),
            (&encoder, "api port, dedicated address", dedicated_api),
            (&encoder, "the HLS", hls),
            (&encoder, "HLS port, dedicated address", dedicated_hls),
        ],
    );

    // At the slot it publishes over the dedicated network.
    let sent_before = (terminal.sent(&public), terminal.sent(&dedicated));
    let clip_path = clip.to_str().expect("utf-8 path").to_string();
    let live = terminal
        .run(|| start(t.command(&["--json", "live", &id, "--input", &clip_path, "--loop"])));
    let report = connected(&db, &id).await;
    assert_eq!(report["carrier"], "carrier-a", "{report}");
    let from: SocketAddr = report["remote_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("a remote address: {report}"));
    assert_eq!(
        from.ip(),
        IpAddr::from(terminal.addr(&dedicated)),
        "{report}"
    );

    // A viewer plays it live over the public network.
    let playlist = format!("http://{hls}/hls/{id}/index.m3u8");
    let live_playlist = viewer.block_on(|| {
        wait_for_text(&playlist, "two segments", Duration::from_secs(20), |p| {
            p.matches("#EXTINF").count() >= 2
        })
    });
    for tag in ["#EXT-X-PART-INF:", "#EXT-X-PRELOAD-HINT:TYPE=PART"] {
        assert!(live_playlist.contains(tag), "{tag}:\n{live_playlist}");
    }
    assert!(!live_playlist.contains("#EXT-X-ENDLIST"), "{live_playlist}");
    let (frames, errors) = viewer.run(|| ffmpeg_read_frames(&playlist, 3));
    assert!(frames >= 50, "the viewer decoded {frames} frames: {errors}");

    let run = tokio::task::spawn_blocking(move || live.finish(Duration::from_secs(45)))
        .await
        .expect("the live run");
    let summary = run.closed_summary();
    assert_eq!(summary["carriers"], json!(["carrier-a"]), "{summary}");
    assert_eq!(summary["reconnects"], 0, "{summary}\n{}", run.stderr);
    // It measured its clock against the api (over the public network) before going live.
    assert!(run.stderr.contains("measured just now"), "{}", run.stderr);

    // The media went out of its dedicated interface, not its public one.
    let sent = summary["bytes"].as_u64().expect("bytes");
    let over_public = terminal.sent(&public) - sent_before.0;
    let over_dedicated = terminal.sent(&dedicated) - sent_before.1;
    eprintln!(
        "live sent {sent} bytes; the terminal's interfaces sent {over_dedicated} (dedicated) \
         and {over_public} (public)"
    );
    assert!(sent > 100_000, "{summary}");
    assert!(over_dedicated >= sent, "{over_dedicated} < {sent}");
    assert!(
        over_public < sent / 20,
        "{over_public} bytes over the public network"
    );
}
