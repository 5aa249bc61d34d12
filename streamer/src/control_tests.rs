//! [`Control`] driven by slot messages, publishers and ticks on a made-up clock.

use std::collections::BTreeMap;

use slotcast_domain::contract::{CameraSource, CameraTransport, IngestMode};

use super::*;
use crate::testing::{at, key, pushed, slot};

fn msg(id: &str, kind: SlotKind, revision: u32, opens: i64, closes: i64, key: &str) -> SlotMessage {
    slot(
        id,
        kind,
        revision,
        (opens, closes),
        key,
        pushed(&["carrier-a"]),
    )
}

fn camera_msg(kind: SlotKind, revision: u32, opens: i64, closes: i64) -> SlotMessage {
    let mut m = msg("cam", kind, revision, opens, closes, "k");
    m.ingest = IngestMode::Pull(CameraSource {
        url: "rtsp://192.0.2.10:554/stream".into(),
        transport: CameraTransport::Tcp,
        credentials: None,
    });
    m
}

fn remote() -> SocketAddr {
    "127.0.0.9:40000".parse().expect("a socket address")
}

/// A control with slot `r1` open from 100 to 200 (key `k`).
fn open_slot() -> Control {
    let mut control = Control::new("s1", None);
    let actions = control.slot(&msg("r1", SlotKind::Opened, 1, 100, 200, "k"), at(100));
    assert_eq!(actions, []);
    control
}

/// A publisher of `r1` recording since `now`.
fn recording(control: &mut Control, now: i64) -> u64 {
    let session = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    control
        .admit(session, "r1", &key("k"), at(now), |_| false)
        .expect("admitted");
    let actions = control
        .start_recording(session, "r1", key("k"), "H264", at(now), |_| false)
        .expect("nobody else records");
    assert!(
        matches!(&actions[..], [Action::Report(m)]
            if m.kind == IngestKind::Connected && m.protocol == Some(IngestProtocol::Rtsp)),
        "{actions:?}"
    );
    session
}

fn reports(actions: &[Action]) -> Vec<(IngestKind, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(m) => Some((m.kind, m.reason.clone())),
            _ => None,
        })
        .collect()
}

fn end_playout(id: &str) -> Action {
    Action::EndPlayout {
        reservation_id: id.into(),
    }
}

#[test]
fn a_publisher_records_inside_its_window_and_is_cut_off_when_it_closes() {
    let mut control = open_slot();
    assert_eq!(control.protocol_of("r1"), None);
    let session = recording(&mut control, 150);
    assert!(control.is_recording(session));
    assert_eq!(control.protocol_of("r1"), Some(IngestProtocol::Rtsp));
    assert_eq!(control.credential(session), Some(&key("k")));

    // The window closes by the clock before any `closed` message: the publisher is cut off,
    // and its playout ends only once its last media is in (when it has hung up).
    let closing = control.tick(at(200), Instant::now(), true);
    assert_eq!(
        closing,
        [Action::Cut {
            session,
            reason: "the window closed".into()
        }]
    );
    let gone = control.disconnect(session, "connection reset", false, at(201));
    assert_eq!(
        reports(&gone),
        [(IngestKind::Disconnected, Some("the window closed".into()))]
    );
    assert_eq!(gone.last(), Some(&end_playout("r1")));
    // A late `closed` cuts nobody off; its playout's end is asked again (which a playout
    // already ended ignores).
    assert_eq!(
        control.slot(&msg("r1", SlotKind::Closed, 2, 100, 200, "k"), at(202)),
        [end_playout("r1")]
    );
}

#[test]
fn a_publisher_that_hangs_up_inside_its_window_leaves_the_channel_open() {
    let mut control = open_slot();
    let session = recording(&mut control, 150);
    let gone = control.disconnect(session, "TEARDOWN", false, at(160));
    assert_eq!(
        reports(&gone),
        [(IngestKind::Disconnected, Some("TEARDOWN".into()))]
    );
    assert!(!gone.contains(&end_playout("r1")), "{gone:?}");
    // A connection that never recorded leaves no trace in the history.
    let stranger = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    assert_eq!(control.disconnect(stranger, "bye", false, at(161)), []);
    // Bad media is a failure.
    let session = recording(&mut control, 170);
    let failed = control.disconnect(session, "media: broken NAL", true, at(171));
    assert_eq!(
        reports(&failed),
        [(IngestKind::Failed, Some("media: broken NAL".into()))]
    );
}

#[test]
fn one_publisher_at_a_time_and_a_silent_one_is_taken_over() {
    let mut control = open_slot();
    let first = recording(&mut control, 150);
    let second = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    assert_eq!(
        control.admit(second, "r1", &key("k"), at(151), |_| false),
        Err(Refused::Busy)
    );
    // The first went silent past the session timeout: the second may take over.
    let silent = |id: u64| id == first;
    control
        .admit(second, "r1", &key("k"), at(152), silent)
        .expect("admitted over a silent publisher");
    let actions = control
        .start_recording(second, "r1", key("k"), "H264", at(152), silent)
        .expect("the silent one does not hold the reservation");
    assert_eq!(
        actions.first(),
        Some(&Action::Cut {
            session: first,
            reason: "a new publisher took over after this one went silent".into()
        })
    );
    assert_eq!(reports(&actions), [(IngestKind::Connected, None)]);
}

#[test]
fn of_two_publishers_admitted_at_once_the_first_to_record_keeps_the_reservation() {
    let mut control = open_slot();
    let first = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    let second = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    // Both asked before either recorded: both were let in.
    for session in [first, second] {
        control
            .admit(session, "r1", &key("k"), at(150), |_| false)
            .expect("admitted");
    }
    let started = control
        .start_recording(first, "r1", key("k"), "H264", at(150), |_| false)
        .expect("the first records");
    assert_eq!(reports(&started), [(IngestKind::Connected, None)]);
    // The second finds the first live: it is refused, and the first is not cut off.
    assert_eq!(
        control.start_recording(second, "r1", key("k"), "H264", at(150), |_| false),
        Err(Refused::Busy)
    );
    assert!(control.is_recording(first));
    assert!(!control.is_recording(second));
    // The refused one leaves no trace in the history when it hangs up.
    assert_eq!(control.disconnect(second, "refused", false, at(151)), []);
}

#[test]
fn the_gate_decides_and_its_refusals_are_rolled_up_for_this_servers_reservations() {
    let mut control = open_slot();
    let session = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    let wrong = control.admit(session, "r1", &key("nope"), at(150), |_| false);
    assert_eq!(wrong, Err(Refused::Gate(Denied::BadKey)));
    let unknown = control.admit(session, "r9", &key("k"), at(150), |_| false);
    assert_eq!(unknown, Err(Refused::Gate(Denied::Unknown)));
    for _ in 0..3 {
        control.refused("r1", &Refused::Gate(Denied::BadKey));
    }
    control.refused("r9", &Refused::Gate(Denied::Unknown));

    let t0 = Instant::now();
    // No room in the report queue: the counts wait.
    assert_eq!(control.tick(at(151), t0, false), []);
    let sent = control.tick(at(151), t0, true);
    let [Action::Report(report)] = &sent[..] else {
        panic!("one refused report: {sent:?}");
    };
    assert_eq!(report.kind, IngestKind::Refused);
    assert_eq!(report.reservation_id, "r1");
    assert_eq!(
        report.refusals,
        Some(BTreeMap::from([("bad_key".to_string(), 3)]))
    );
    // Within the minute the next ones wait; after it they go out together.
    control.refused("r1", &Refused::Busy);
    assert_eq!(
        control.tick(at(152), t0 + Duration::from_secs(30), true),
        []
    );
    let later = control.tick(at(153), t0 + Duration::from_secs(60), true);
    assert_eq!(later.len(), 1, "{later:?}");
}

#[test]
fn a_rotated_key_or_a_moved_window_cuts_the_publisher_off() {
    let mut control = open_slot();
    let session = recording(&mut control, 150);
    let rotated = control.slot(&msg("r1", SlotKind::Changed, 2, 100, 200, "k2"), at(160));
    assert_eq!(
        rotated,
        [Action::Cut {
            session,
            reason: Denied::BadKey.to_string()
        }]
    );

    let mut control = open_slot();
    let session = recording(&mut control, 150);
    let moved = control.slot(&msg("r1", SlotKind::Changed, 2, 300, 400, "k"), at(160));
    assert!(
        matches!(&moved[..], [Action::Cut { session: s, .. }] if *s == session),
        "{moved:?}"
    );
    // Still inside the new window: nothing happens.
    let mut control = open_slot();
    recording(&mut control, 150);
    assert_eq!(
        control.slot(&msg("r1", SlotKind::Changed, 2, 100, 300, "k"), at(160)),
        []
    );
}

#[test]
fn a_cancelled_slot_says_so_and_a_slot_over_with_nobody_ends_its_channel_at_once() {
    let mut control = open_slot();
    let session = recording(&mut control, 150);
    let cancelled = control.slot(&msg("r1", SlotKind::Cancelled, 2, 100, 200, "k"), at(160));
    assert_eq!(
        cancelled,
        [Action::Cut {
            session,
            reason: "the reservation was cancelled".into()
        }]
    );
    // Cut off once, the first reason stays.
    let gone = control.disconnect(session, "connection reset", false, at(161));
    assert_eq!(
        reports(&gone),
        [(
            IngestKind::Disconnected,
            Some("the reservation was cancelled".into())
        )]
    );

    let mut control = open_slot();
    let closed = control.slot(&msg("r1", SlotKind::Closed, 2, 100, 200, "k"), at(200));
    assert_eq!(closed, [end_playout("r1")]);
}

#[test]
fn a_camera_is_pulled_exactly_while_its_window_is_open() {
    let mut control = Control::new("s1", None);
    assert_eq!(
        control.slot(&camera_msg(SlotKind::Scheduled, 1, 100, 200), at(50)),
        []
    );
    let opening = control.tick(at(100), Instant::now(), true);
    let [Action::Pull {
        reservation_id,
        camera,
    }] = &opening[..]
    else {
        panic!("one pull: {opening:?}");
    };
    assert_eq!(reservation_id, "cam");
    assert_eq!(camera.url, "rtsp://192.0.2.10:554/stream");
    // Pulled once, not again on every tick.
    assert_eq!(control.tick(at(150), Instant::now(), true), []);
    assert_eq!(
        control.pull_report(
            "cam",
            PullReport {
                kind: IngestKind::Connected,
                camera: "192.0.2.10:554".into(),
                codec: Some("H264".into()),
                reason: None,
            },
            at(151),
        ),
        Action::Report(IngestMessage {
            schema: SCHEMA,
            kind: IngestKind::Connected,
            reservation_id: "cam".into(),
            server_id: "s1".into(),
            at: at(151),
            carrier: None,
            remote_addr: Some("192.0.2.10:554".into()),
            codec: Some("H264".into()),
            reason: None,
            refusals: None,
            protocol: Some(IngestProtocol::Rtsp),
        })
    );
    // Not over yet: the pull's end leaves the playout.
    assert_eq!(control.pull_ended("cam"), []);
    let cancelled = control.slot(&camera_msg(SlotKind::Cancelled, 2, 100, 200), at(160));
    assert_eq!(
        cancelled,
        [Action::StopPull {
            reservation_id: "cam".into(),
            reason: "the reservation was cancelled".into()
        }]
    );
    // Once the pull has hung up, the playout ends.
    assert_eq!(control.pull_ended("cam"), [end_playout("cam")]);
}

#[test]
fn a_camera_window_moved_away_stops_the_pull() {
    let mut control = Control::new("s1", None);
    let opened = control.slot(&camera_msg(SlotKind::Opened, 1, 100, 200), at(120));
    assert!(matches!(&opened[..], [Action::Pull { .. }]), "{opened:?}");
    let moved = control.slot(&camera_msg(SlotKind::Changed, 2, 300, 400), at(130));
    assert_eq!(
        moved,
        [Action::StopPull {
            reservation_id: "cam".into(),
            reason: "the window is not open any more".into()
        }]
    );
    let reopened = control.tick(at(300), Instant::now(), true);
    assert!(
        matches!(&reopened[..], [Action::Pull { .. }]),
        "{reopened:?}"
    );
}

#[test]
fn an_unfinished_recording_goes_on_with_its_slot_or_ends_when_nobody_will_open_it() {
    let part = Duration::from_millis(200);
    let playlist = || Playlist::new(Duration::from_secs(1), part);
    let mut control = Control::new("s1", None);
    control.found_unfinished(vec![
        ("r1".into(), playlist()),
        ("gone".into(), playlist()),
        ("over".into(), playlist()),
    ]);
    assert!(control.is_unfinished("gone"));
    control.slot(&msg("r1", SlotKind::Opened, 1, 100, 200, "k"), at(150));
    // A slot over before the gates were followed ends its unfinished recording at once.
    let over = control.slot(&msg("over", SlotKind::Closed, 3, 100, 140, "k"), at(150));
    assert!(
        matches!(&over[..], [Action::EndUnfinished { reservation_id, playlist }]
            if reservation_id == "over" && playlist.contains("#EXT-X-ENDLIST")),
        "{over:?}"
    );
    assert!(!control.is_ready());
    // Once the gates are rebuilt, a recording of a slot they never heard of ends.
    let ready = control.set_ready(true);
    assert!(
        matches!(&ready[..], [Action::EndUnfinished { reservation_id, .. }] if reservation_id == "gone"),
        "{ready:?}"
    );
    assert!(control.is_ready());
    // The open slot's playout goes on from its recording, handed out once.
    assert!(control.open_playout("r1").is_some());
    assert!(control.open_playout("r1").is_none());
    assert!(!control.is_unfinished("r1"));
}

#[test]
fn an_unfinished_recording_whose_publisher_never_came_back_ends_with_its_window() {
    let mut control = Control::new("s1", None);
    let playlist = Playlist::new(Duration::from_secs(1), Duration::from_millis(200));
    control.found_unfinished(vec![("r1".into(), playlist)]);
    control.slot(&msg("r1", SlotKind::Opened, 1, 100, 200, "k"), at(150));
    assert_eq!(control.set_ready(true), []);
    let closing = control.tick(at(200), Instant::now(), true);
    assert!(
        matches!(&closing[..], [Action::EndUnfinished { reservation_id, .. }] if reservation_id == "r1"),
        "{closing:?}"
    );
    assert!(!control.is_unfinished("r1"));
}

#[test]
fn a_reservation_of_another_server_is_told_apart_from_an_unknown_one() {
    let mut control = Control::new("s1", None);
    control.elsewhere("r2", "s2");
    let session = control.connect("carrier-a", remote(), IngestProtocol::Rtsp);
    assert_eq!(
        control.admit(session, "r2", &key("k"), at(150), |_| false),
        Err(Refused::Gate(Denied::OtherServer("s2".into())))
    );
    // Not this server's: nothing to report in its history.
    control.refused("r2", &Refused::Gate(Denied::OtherServer("s2".into())));
    assert_eq!(control.tick(at(151), Instant::now(), true), []);
}
