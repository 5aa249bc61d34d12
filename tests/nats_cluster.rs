//! slotcast on a 3-node NATS cluster of the test's own, its streams kept on all three
//! (`SLOTCAST_NATS_REPLICAS=3`): the node leading the slot stream is killed (SIGKILL) while
//! slots open and close, and brought back. No boundary is lost or stored twice, the api
//! records each once, a consumer and the streamer see each, and every ingest report of a
//! real streamer (a publisher going through RECORD) lands in the reservation's history. The
//! boundaries' lateness is printed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::Value;
use support::nats::Stored;
use support::nats_cluster::{read_stream, stream_leader, NatsCluster};
use support::streaming::{RawRtsp, Stack, SDP};
use support::{time, TestDb};

/// How long the node stays down.
const OUTAGE_S: i64 = 12;

/// What the test's own consumer was handed: one line per delivery.
#[derive(Clone, Debug)]
struct Delivery {
    sequence: u64,
    message_id: String,
    delivered: i64,
    at: DateTime<Utc>,
}

/// Follows the slot stream with a durable consumer of its own (explicit acks, as the api's),
/// binding again after any error, until aborted.
fn watch_slots(
    js: async_nats::jetstream::Context,
    stream: String,
    subjects: String,
) -> (Arc<Mutex<Vec<Delivery>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let bound = async {
                let handle = js.get_stream(&stream).await.map_err(|e| e.to_string())?;
                let consumer = handle
                    .get_or_create_consumer(
                        "test-watch",
                        pull::Config {
                            durable_name: Some("test-watch".into()),
                            filter_subject: subjects.clone(),
                            ack_policy: AckPolicy::Explicit,
                            deliver_policy: DeliverPolicy::All,
                            ack_wait: StdDuration::from_secs(5),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
                while let Some(next) = messages.next().await {
                    let message = next.map_err(|e| e.to_string())?;
                    let info = message.info().map_err(|e| e.to_string())?;
                    let delivery = Delivery {
                        sequence: info.stream_sequence,
                        message_id: message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                            .map(|v| v.as_str().to_string())
                            .unwrap_or_default(),
                        delivered: info.delivered,
                        at: Utc::now(),
                    };
                    out.lock().expect("deliveries").push(delivery);
                    message.ack().await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            };
            if let Err(e) = bound.await {
                eprintln!("test consumer: {e}; binding again");
            }
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    });
    (seen, task)
}

/// A publisher as far as RECORD, without media: the streamer lets it in only while the
/// gate is open, reports it `connected`, and `disconnected` once it hangs up. Tries until
/// the gate lets it in or `until` passes; returns when it was let in.
fn publish_once(addr: SocketAddr, id: &str, key: &str, until: DateTime<Utc>) -> DateTime<Utc> {
    let base = format!("rtsp://{addr}/live/{id}");
    loop {
        let mut rtsp = RawRtsp::connect(addr);
        let (code, reason, _) = rtsp.request("ANNOUNCE", &format!("{base}?key={key}"), &[], SDP);
        if code == 200 {
            let (code, reason, answer) = rtsp.request(
                "SETUP",
                &format!("{base}/streamid=0"),
                &[(
                    "Transport",
                    "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
                )],
                "",
            );
            assert_eq!(code, 200, "SETUP {id}: {reason}");
            let session = answer
                .lines()
                .find_map(|l| l.strip_prefix("Session: "))
                .and_then(|s| s.split(';').next())
                .expect("a session")
                .to_string();
            let (code, reason, _) = rtsp.request("RECORD", &base, &[("Session", &session)], "");
            assert_eq!(code, 200, "RECORD {id}: {reason}");
            let admitted = Utc::now();
            // On the air for a moment, then gone: `connected`, then `disconnected`.
            std::thread::sleep(StdDuration::from_millis(500));
            drop(rtsp);
            return admitted;
        }
        assert!(
            Utc::now() < until,
            "the streamer never let {id} in: {code} {reason}"
        );
        std::thread::sleep(StdDuration::from_millis(100));
    }
}

/// The api's history of a reservation, as event types (JSON of each event alongside).
async fn history(stack: &Stack, id: &str) -> Vec<Value> {
    let (status, h) = stack
        .api
        .get(&format!("/v1/reservations/{id}/history"), &stack.alice)
        .await;
    assert_eq!(status, 200, "{h}");
    h["events"].as_array().cloned().unwrap_or_default()
}

fn count(events: &[Value], ty: &str, kind: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == ty && kind.is_none_or(|k| e["data"]["kind"] == k))
        .count()
}

/// The server that leads `stream` once `old` no longer does, and when that was seen.
async fn new_leader(
    js: &async_nats::jetstream::Context,
    stream: &str,
    old: &str,
) -> (String, DateTime<Utc>) {
    loop {
        if let Ok(mut handle) = js.get_stream(stream).await {
            if let Ok(info) = handle.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    if leader != old {
                        return (leader, Utc::now());
                    }
                }
            }
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_boundary_and_no_report() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    let url = cluster.url();
    let db = TestDb::new().await;
    let nats_env = [("NATS_URL", url.as_str()), ("SLOTCAST_NATS_REPLICAS", "3")];
    let stack = Stack::start_to(
        &db,
        "s1",
        "carrier-a=127.0.0.2:0",
        &nats_env,
        std::process::Stdio::inherit(),
    );
    stack.register("s1", &["carrier-a"]).await;
    let js = cluster.jetstream().await;
    let slots = db.slots_stream();
    let ingest = db.ingest_stream();
    let limit = StdDuration::from_secs(20);
    let slots_leader = stream_leader(&js, &slots, limit).await;
    let ingest_leader = stream_leader(&js, &ingest, limit).await;
    let replicas = js
        .get_stream(&slots)
        .await
        .expect("slot stream")
        .info()
        .await
        .expect("slot stream info")
        .config
        .num_replicas;
    assert_eq!(replicas, 3, "the slot stream is kept on all three nodes");
    let (deliveries, watcher) = watch_slots(
        js.clone(),
        slots.clone(),
        format!("{}.slot.>", db.nats_prefix),
    );

    // Whole milliseconds, as the API keeps them.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let kill_at = now + Duration::seconds(4);
    // Longer than a leader election (4 to 9 s on nats-server 2.9), so boundaries come due
    // both before and after the two nodes left elect a new leader of the slot stream.
    let back_planned = kill_at + Duration::seconds(OUTAGE_S);
    let at = |ms: i64| kill_at + Duration::milliseconds(ms);
    let mut windows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = vec![
        ("across".into(), at(-1500), at(1500)),
        (
            "publisher-down".into(),
            at(1000),
            at(OUTAGE_S * 1000 + 2000),
        ),
    ];
    for i in 0..7 {
        let start = at(500 + 1400 * i);
        windows.push((
            format!("down-{i}"),
            start,
            start + Duration::milliseconds(1500),
        ));
    }
    let mut booked: Vec<(String, String, String)> = Vec::new(); // (label, id, key)
    for (label, start, end) in &windows {
        let (id, key) = stack.book("s1", *start, *end).await;
        booked.push((label.clone(), id, key));
    }
    let addr = stack.rtsp("carrier-a");
    let down_pub = {
        let (_, id, key) = booked[1].clone();
        let until = windows[1].2;
        tokio::task::spawn_blocking(move || publish_once(addr, &id, &key, until))
    };

    // The node leading the slot stream goes down while boundaries come due.
    let victim = cluster
        .index_of(&slots_leader)
        .expect("a node of ours leads");
    sleep_until(kill_at).await;
    cluster.kill(victim);
    let killed = Utc::now();
    let left = (back_planned - Utc::now()).to_std().unwrap_or_default();
    let elected = tokio::time::timeout(left, new_leader(&js, &slots, &slots_leader))
        .await
        .ok()
        .map(|(name, at)| format!("{name} after {} ms", (at - killed).num_milliseconds()));
    sleep_until(back_planned).await;
    cluster.restart(victim, StdDuration::from_secs(30)).await;
    let back = Utc::now();

    // Slots booked once it is back.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now");
    let mut after = vec![(
        "publisher-after".to_string(),
        now + Duration::milliseconds(1500),
        now + Duration::milliseconds(5000),
    )];
    for i in 0..3 {
        let start = now + Duration::milliseconds(1000 + 500 * i);
        after.push((
            format!("after-{i}"),
            start,
            start + Duration::milliseconds(1500),
        ));
    }
    for (label, start, end) in &after {
        let (id, key) = stack.book("s1", *start, *end).await;
        booked.push((label.clone(), id, key));
    }
    windows.extend(after.iter().cloned());
    let after_pub = {
        let (_, id, key) = booked[booked.len() - after.len()].clone();
        let until = after[0].2;
        tokio::task::spawn_blocking(move || publish_once(addr, &id, &key, until))
    };
    let admitted_down = down_pub.await.expect("the publisher during the outage");
    let admitted_after = after_pub.await.expect("the publisher after it");

    // Every window reaches the history once, and both publishers' reports.
    let publishers: BTreeSet<&str> = ["publisher-down", "publisher-after"].into();
    let deadline = Instant::now() + StdDuration::from_secs(40);
    let mut histories: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (label, id, _) in &booked {
        loop {
            let events = history(&stack, id).await;
            let reports = count(&events, "IngestReported", Some("connected"))
                + count(&events, "IngestReported", Some("disconnected"));
            let want_reports = if publishers.contains(label.as_str()) {
                2
            } else {
                0
            };
            if count(&events, "WindowClosed", None) >= 1 && reports >= want_reports {
                histories.insert(label.clone(), events);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label} ({id}): history incomplete after 40 s: {events:?}"
            );
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    }

    // The stream holds every boundary exactly once, in order within a reservation.
    let stored = read_stream(&js, &slots, limit).await;
    let ids: Vec<&str> = stored
        .iter()
        .filter_map(|m| m.message_id.as_deref())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a boundary stored twice: {ids:?}");
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for (_, id, _) in &booked {
        expected.insert(format!("{id}:opened:1"));
        expected.insert(format!("{id}:closed:1"));
    }
    let windows_stored: BTreeSet<String> = unique
        .iter()
        .filter(|id| !id.ends_with(":scheduled:1"))
        .map(|id| id.to_string())
        .collect();
    assert_eq!(windows_stored, expected, "boundaries lost or unexpected");
    for (label, id, _) in &booked {
        let mine: Vec<&str> = stored
            .iter()
            .filter(|m| m.payload["reservation_id"] == id.as_str())
            .filter_map(|m| m.payload["kind"].as_str())
            .filter(|k| *k != "scheduled")
            .collect();
        assert_eq!(mine, ["opened", "closed"], "{label}");
    }

    // The api recorded each window once, and every report of the streamer.
    for (label, id, _) in &booked {
        let events = &histories[label];
        assert_eq!(
            count(events, "WindowOpened", None),
            1,
            "{label} {id}: {events:?}"
        );
        assert_eq!(
            count(events, "WindowClosed", None),
            1,
            "{label} {id}: {events:?}"
        );
        if publishers.contains(label.as_str()) {
            let kinds: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "IngestReported")
                .filter_map(|e| e["data"]["kind"].as_str())
                .filter(|k| *k != "refused")
                .collect();
            assert_eq!(kinds, ["connected", "disconnected"], "{label} {id}");
        }
    }

    // The test's own consumer was handed every boundary, each from one stream position.
    let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let deadline = Instant::now() + limit;
    let seen = loop {
        let seen = deliveries.lock().expect("deliveries").clone();
        let have: BTreeSet<&str> = seen.iter().map(|d| d.message_id.as_str()).collect();
        if want.is_subset(&have) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer lacks {:?}",
            want.difference(&have).collect::<Vec<_>>()
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    watcher.abort();
    let mut position: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for d in &seen {
        position
            .entry(&d.message_id)
            .or_default()
            .insert(d.sequence);
    }
    for (id, sequences) in &position {
        assert_eq!(sequences.len(), 1, "{id} handed over from {sequences:?}");
    }
    let redelivered = seen.iter().filter(|d| d.delivered > 1).count();

    print_lateness(&booked, &stored, &seen, killed, back);
    eprintln!(
        "killed {} (leading {slots}; {ingest} led by {ingest_leader}) at +0 ms; the slot \
         stream's new leader: {}; back and healthy at +{} ms; publishers let in {} ms after their window opened during the \
         outage, {} ms after it; {redelivered} redeliveries to the test's consumer; the test \
         took {:.1} s",
        slots_leader,
        elected.as_deref().unwrap_or("none while it was down"),
        (back - killed).num_milliseconds(),
        (admitted_down - windows[1].1).num_milliseconds(),
        (admitted_after - after[0].1).num_milliseconds(),
        started.elapsed().as_secs_f64()
    );
    drop(stack);
    drop(cluster);
}

/// One line per window boundary: when it was due (ms from the kill), whether the node was
/// down then, how late the scheduler published it (`late_ms`) and how late the test's
/// consumer was first handed it; then the worst of each.
fn print_lateness(
    booked: &[(String, String, String)],
    stored: &[Stored],
    seen: &[Delivery],
    killed: DateTime<Utc>,
    back: DateTime<Utc>,
) {
    let label: BTreeMap<&str, &str> = booked
        .iter()
        .map(|(l, id, _)| (id.as_str(), l.as_str()))
        .collect();
    let mut first_seen: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for d in seen {
        let at = first_seen.entry(&d.message_id).or_insert(d.at);
        *at = (*at).min(d.at);
    }
    eprintln!(
        "{:<16} {:<7} {:>9} {:<7} {:>9} {:>9}",
        "slot", "kind", "due_ms", "node", "late_ms", "seen_ms"
    );
    let mut worst: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for m in stored {
        let p = &m.payload;
        let kind = p["kind"].as_str().unwrap_or_default();
        if kind != "opened" && kind != "closed" {
            continue;
        }
        let due = time(&p["due_at"]);
        let when = if due < killed {
            "up"
        } else if due < back {
            "down"
        } else {
            "back"
        };
        let late = p["late_ms"].as_f64().unwrap_or(f64::NAN);
        let id = m.message_id.as_deref().unwrap_or_default();
        let seen_ms = first_seen.get(id).map_or(f64::NAN, |t| {
            (*t - due).num_microseconds().unwrap_or(0) as f64 / 1000.0
        });
        let reservation = p["reservation_id"].as_str().unwrap_or_default();
        eprintln!(
            "{:<16} {:<7} {:>9} {:<7} {:>9.1} {:>9.1}",
            label.get(reservation).copied().unwrap_or("?"),
            kind,
            (due - killed).num_milliseconds(),
            when,
            late,
            seen_ms
        );
        let w = worst.entry(when).or_insert((0, 0.0, 0.0));
        *w = (w.0 + 1, w.1.max(late), w.2.max(seen_ms));
    }
    for (when, (n, late, seen_ms)) in worst {
        eprintln!(
            "node {when}: {n} boundaries, the latest published {late:.1} ms late, \
             handed to the consumer {seen_ms:.1} ms late"
        );
    }
}
