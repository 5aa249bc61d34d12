//! The booking rules, one test each, on the pure decision.

use super::*;
use chrono::TimeZone;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn min(m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(m)
}

pub(super) fn operator() -> Actor {
    Actor {
        role: Role::Operator,
        name: "ops".into(),
    }
}

fn alice() -> Actor {
    Actor {
        role: Role::Distributor,
        name: "alice".into(),
    }
}

fn bob() -> Actor {
    Actor {
        role: Role::Distributor,
        name: "bob".into(),
    }
}

pub(super) fn spec(capacity: u32) -> ServerSpec {
    ServerSpec {
        id: "srv-1".into(),
        name: "Server one".into(),
        capacity: Some(capacity),
        carriers: vec![Carrier::rtsp("carrier-a", "rtsp://127.0.0.2:8554")],
        ..ServerSpec::default()
    }
}

/// Runs the real `Aggregate::handle` (which applies through the sink) to completion. Nothing
/// in it waits, so a single poll finishes it.
pub(super) fn handle(
    state: &mut ServerSchedule,
    command: Command,
) -> Result<Vec<ScheduleEvent>, ScheduleError> {
    let sink = EventSink::default();
    {
        let mut fut = pin!(state.handle(command, &(), &sink));
        let Poll::Ready(result) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("handle waited on something");
        };
        result?;
    }
    let mut collect = pin!(sink.collect());
    match collect
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(events) => Ok(events),
        Poll::Pending => panic!("collect waited on something"),
    }
}

pub(super) fn cmd(now: DateTime<Utc>, actor: Actor, kind: CommandKind) -> Command {
    Command { now, actor, kind }
}

fn server(capacity: u32) -> ServerSchedule {
    let mut s = ServerSchedule::default();
    handle(
        &mut s,
        cmd(
            t0(),
            operator(),
            CommandKind::RegisterServer(spec(capacity)),
        ),
    )
    .unwrap();
    s
}

fn request(id: &str, start: i64, end: i64) -> CommandKind {
    CommandKind::RequestReservation {
        reservation_id: id.into(),
        start: min(start),
        end: min(end),
        title: Some(format!("show {id}")),
        stream_key_hash: format!("hash-{id}"),
        stream_key_digest: None,
        source: None,
    }
}

fn book(s: &mut ServerSchedule, who: Actor, id: &str, start: i64, end: i64) -> ScheduleEvent {
    let mut events = handle(s, cmd(t0(), who, request(id, start, end))).unwrap();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

pub(super) fn field_of(err: ScheduleError) -> &'static str {
    match err {
        ScheduleError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn registering_resolves_the_documented_defaults() {
    let s = server(1);
    let settings = s.settings().unwrap();
    assert_eq!(
        (
            settings.min_lead_s,
            settings.max_duration_s,
            settings.horizon_s,
            settings.preroll_s,
            settings.grace_s
        ),
        (30, 12 * 3600, 90 * 86_400, 30, 10)
    );
}

#[test]
fn only_an_operator_registers_and_only_once() {
    let mut s = ServerSchedule::default();
    let err = handle(
        &mut s,
        cmd(t0(), alice(), CommandKind::RegisterServer(spec(1))),
    )
    .unwrap_err();
    assert_eq!(err, ScheduleError::Forbidden);
    let mut s = server(1);
    let err = handle(
        &mut s,
        cmd(t0(), operator(), CommandKind::RegisterServer(spec(1))),
    )
    .unwrap_err();
    assert_eq!(err, ScheduleError::ServerExists);
}

#[test]
fn server_settings_are_validated_field_by_field() {
    let cases: Vec<(ServerSpec, &str)> = vec![
        (
            ServerSpec {
                id: "has.dot".into(),
                ..spec(1)
            },
            "id",
        ),
        (
            ServerSpec {
                capacity: Some(0),
                ..spec(1)
            },
            "capacity",
        ),
        (
            ServerSpec {
                carriers: vec![],
                ..spec(1)
            },
            "carriers",
        ),
        (
            ServerSpec {
                carriers: vec![Carrier::rtsp("a", "http://x")],
                ..spec(1)
            },
            "carriers[].ingest_url",
        ),
        (
            ServerSpec {
                // A NUL cannot be stored: refused as input, not failed as a commit.
                carriers: vec![Carrier::rtsp("a", "rtsps://cam\u{0}era/x")],
                ..spec(1)
            },
            "carriers[].ingest_url",
        ),
        (
            ServerSpec {
                carriers: vec![
                    Carrier::rtsp("a", "rtsp://x"),
                    Carrier::rtsp("a", "rtsp://y"),
                ],
                ..spec(1)
            },
            "carriers[].name",
        ),
    ];
    for (bad, field) in cases.into_iter().chain(bad_protocol_urls()) {
        let mut s = ServerSchedule::default();
        let err = handle(
            &mut s,
            cmd(t0(), operator(), CommandKind::RegisterServer(bad)),
        )
        .unwrap_err();
        assert_eq!(field_of(err), field);
    }
}

/// A carrier with one other protocol's address set to `url`.
fn carrier_with(field: &str, url: &str) -> Carrier {
    let mut c = Carrier::rtsp("a", "rtsp://x");
    let url = Some(url.to_string());
    match field {
        "rtmp_url" => c.rtmp_url = url,
        "srt_url" => c.srt_url = url,
        _ => c.whip_url = url,
    }
    c
}

/// RTMP, SRT and WHIP addresses a carrier cannot have, with the field each is refused on.
fn bad_protocol_urls() -> Vec<(ServerSpec, &'static str)> {
    let bad = [
        ("rtmp_url", "rtsp://x:1935"),
        ("rtmp_url", "rtmp://x:1935/live"),
        ("rtmp_url", "rtmp://x:0"),
        ("rtmp_url", "rtmp://x:65536"),
        ("rtmp_url", "rtmp://x:+1935"),
        ("rtmp_url", "rtmp://user@x"),
        ("rtmp_url", "rtmp://"),
        ("srt_url", "srt://x"),
        ("srt_url", "srt://x:9000?streamid=a"),
        ("srt_url", "srt://[::1"),
        ("whip_url", "http://x/whip"),
        ("whip_url", "ws://x"),
        ("whip_url", "http://x y"),
    ];
    bad.into_iter()
        .map(|(field, url)| {
            let spec = ServerSpec {
                carriers: vec![carrier_with(field, url)],
                ..spec(1)
            };
            let field = match field {
                "rtmp_url" => "carriers[].rtmp_url",
                "srt_url" => "carriers[].srt_url",
                _ => "carriers[].whip_url",
            };
            (spec, field)
        })
        .collect()
}

#[test]
fn a_carrier_may_take_rtmp_srt_and_whip_beside_rtsp() {
    let good = [
        ("rtmp_url", "rtmp://10.2.0.1:1935"),
        ("rtmp_url", "rtmps://ingest.example"),
        ("srt_url", "srt://10.2.0.1:9000"),
        ("srt_url", "srt://[fd00::1]:9000"),
        ("whip_url", "http://10.2.0.1:8889"),
        ("whip_url", "https://[::1]"),
    ];
    for (field, url) in good {
        let mut s = ServerSchedule::default();
        let registered = handle(
            &mut s,
            cmd(
                t0(),
                operator(),
                CommandKind::RegisterServer(ServerSpec {
                    carriers: vec![carrier_with(field, url)],
                    ..spec(1)
                }),
            ),
        );
        assert!(registered.is_ok(), "{field} {url}: {registered:?}");
    }
}

#[test]
fn a_carrier_without_other_protocols_is_recorded_as_before_them() {
    // Events recorded before RTMP, SRT and WHIP hold only a name and an RTSP address: they
    // read the same, and write the same bytes again (their hashes hold).
    let before = r#"{"name":"a","ingest_url":"rtsp://x"}"#;
    let carrier: Carrier = serde_json::from_str(before).unwrap();
    assert_eq!(carrier, Carrier::rtsp("a", "rtsp://x"));
    assert_eq!(serde_json::to_string(&carrier).unwrap(), before);
}

#[test]
fn booking_an_unregistered_server_is_not_found() {
    let mut s = ServerSchedule::default();
    let err = handle(&mut s, cmd(t0(), alice(), request("r1", 10, 20))).unwrap_err();
    assert_eq!(err, ScheduleError::ServerNotFound);
}

#[test]
fn acceptance_carries_the_ingest_window() {
    let mut s = server(1);
    match book(&mut s, alice(), "r1", 10, 20) {
        ScheduleEvent::ReservationAccepted {
            opens_at,
            closes_at,
            owner,
            ..
        } => {
            assert_eq!(opens_at, min(10) - Duration::seconds(30));
            assert_eq!(closes_at, min(20) + Duration::seconds(10));
            assert_eq!(owner, "alice");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.slots().len(), 1);
}

#[test]
fn window_rules_name_the_field_and_record_nothing() {
    let mut s = server(1);
    let too_long = 12 * 60 + 1;
    let cases = [
        (request("r", 10, 10), "end"),
        (request("r", 10, 5), "end"),
        (request("r", 0, 10), "start"), // closer than min_lead (30 s)
        (request("r", 91 * 24 * 60, 91 * 24 * 60 + 10), "start"), // past the horizon
        (request("r", 10, 10 + too_long), "end"),
    ];
    for (kind, field) in cases {
        let err = handle(&mut s, cmd(t0(), alice(), kind)).unwrap_err();
        assert_eq!(field_of(err), field);
    }
    assert!(s.slots().is_empty());
}

#[test]
fn min_lead_is_inclusive() {
    let mut s = server(1);
    let start = t0() + Duration::seconds(30);
    let kind = CommandKind::RequestReservation {
        reservation_id: "r1".into(),
        start,
        end: start + Duration::minutes(5),
        title: None,
        stream_key_hash: "h".into(),
        stream_key_digest: None,
        source: None,
    };
    let events = handle(&mut s, cmd(t0(), alice(), kind)).unwrap();
    assert!(matches!(
        events[0],
        ScheduleEvent::ReservationAccepted { .. }
    ));
}

#[test]
fn overlap_is_refused_as_an_event_with_conflicts_and_suggestions() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 40);
    match book(&mut s, bob(), "r2", 20, 30) {
        ScheduleEvent::ReservationRejected {
            reason,
            conflicts,
            suggestions,
            owner,
            ..
        } => {
            assert_eq!(reason, RejectReason::CapacityExceeded);
            assert_eq!(owner, "bob");
            assert_eq!(conflicts, vec![Window::new(min(10), min(40))]);
            // The only gap that fits 10 minutes after the earliest allowed start.
            assert_eq!(suggestions, vec![Window::new(min(40), min(50))]);
            for w in &suggestions {
                assert_eq!(w.duration(), Duration::minutes(10));
                assert!(!w.overlaps(&Window::new(min(10), min(40))));
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.slots().len(), 1, "a refusal changes nothing");
}

#[test]
fn back_to_back_slots_are_both_accepted() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    assert!(matches!(
        book(&mut s, bob(), "r2", 20, 30),
        ScheduleEvent::ReservationAccepted { .. }
    ));
    assert!(matches!(
        book(&mut s, bob(), "r3", 1, 10),
        ScheduleEvent::ReservationAccepted { .. }
    ));
}

#[test]
fn capacity_counts_simultaneous_slots() {
    let mut s = server(3);
    for id in ["a", "b", "c"] {
        assert!(matches!(
            book(&mut s, alice(), id, 10, 20),
            ScheduleEvent::ReservationAccepted { .. }
        ));
    }
    assert!(matches!(
        book(&mut s, alice(), "d", 15, 25),
        ScheduleEvent::ReservationRejected { .. }
    ));
    // Two overlap [20, 30) but never three at once together with [10, 20) ones.
    assert!(matches!(
        book(&mut s, alice(), "e", 20, 30),
        ScheduleEvent::ReservationAccepted { .. }
    ));
}

#[test]
fn another_tenant_cannot_see_or_touch_a_reservation() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    for kind in [
        CommandKind::CancelReservation {
            reservation_id: "r1".into(),
        },
        CommandKind::RescheduleReservation {
            reservation_id: "r1".into(),
            start: min(30),
            end: min(40),
        },
        CommandKind::RotateStreamKey {
            reservation_id: "r1".into(),
            stream_key_hash: "x".into(),
            stream_key_digest: None,
        },
    ] {
        let err = handle(&mut s, cmd(t0(), bob(), kind)).unwrap_err();
        assert_eq!(err, ScheduleError::ReservationNotFound);
    }
    // An operator may.
    let events = handle(
        &mut s,
        cmd(
            t0(),
            operator(),
            CommandKind::CancelReservation {
                reservation_id: "r1".into(),
            },
        ),
    )
    .unwrap();
    assert!(matches!(
        events[0],
        ScheduleEvent::ReservationCancelled { .. }
    ));
}

#[test]
fn cancel_frees_the_slot() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    handle(
        &mut s,
        cmd(
            t0(),
            alice(),
            CommandKind::CancelReservation {
                reservation_id: "r1".into(),
            },
        ),
    )
    .unwrap();
    assert!(matches!(
        book(&mut s, bob(), "r2", 10, 20),
        ScheduleEvent::ReservationAccepted { .. }
    ));
}

#[test]
fn cancel_and_reschedule_only_before_the_slot_ends() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    let after_end = min(20);
    for kind in [
        CommandKind::CancelReservation {
            reservation_id: "r1".into(),
        },
        CommandKind::RescheduleReservation {
            reservation_id: "r1".into(),
            start: min(30),
            end: min(40),
        },
    ] {
        let err = handle(&mut s, cmd(after_end, alice(), kind)).unwrap_err();
        assert_eq!(err, ScheduleError::ReservationNotActive);
    }
}

#[test]
fn refused_reschedule_keeps_the_old_slot() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    book(&mut s, bob(), "r2", 30, 40);
    let events = handle(
        &mut s,
        cmd(
            t0(),
            alice(),
            CommandKind::RescheduleReservation {
                reservation_id: "r1".into(),
                start: min(35),
                end: min(45),
            },
        ),
    )
    .unwrap();
    assert!(matches!(
        events[0],
        ScheduleEvent::RescheduleRejected { .. }
    ));
    assert_eq!(s.slots()["r1"].start, min(10));
    assert_eq!(s.slots()["r1"].end, min(20));
}

#[test]
fn reschedule_does_not_conflict_with_itself() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    let events = handle(
        &mut s,
        cmd(
            t0(),
            alice(),
            CommandKind::RescheduleReservation {
                reservation_id: "r1".into(),
                start: min(15),
                end: min(25),
            },
        ),
    )
    .unwrap();
    match &events[0] {
        ScheduleEvent::ReservationRescheduled {
            previous, opens_at, ..
        } => {
            assert_eq!(*previous, Window::new(min(10), min(20)));
            assert_eq!(*opens_at, min(15) - Duration::seconds(30));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_running_slot_can_be_extended_without_moving_its_start() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    let during = min(15);
    let events = handle(
        &mut s,
        cmd(
            during,
            alice(),
            CommandKind::RescheduleReservation {
                reservation_id: "r1".into(),
                start: min(10),
                end: min(30),
            },
        ),
    )
    .unwrap();
    assert!(matches!(
        events[0],
        ScheduleEvent::ReservationRescheduled { .. }
    ));
}

#[test]
fn closed_slots_leave_the_state_and_stop_conflicting() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    // A later decision, after r1's window closed, prunes it.
    let later = min(21);
    let kind = CommandKind::RequestReservation {
        reservation_id: "r2".into(),
        start: min(60),
        end: min(70),
        title: None,
        stream_key_hash: "h".into(),
        stream_key_digest: None,
        source: None,
    };
    handle(&mut s, cmd(later, bob(), kind)).unwrap();
    assert!(!s.slots().contains_key("r1"));
    assert_eq!(s.slots().len(), 1);
}

#[test]
fn rotation_replaces_the_key_hash() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 10, 20);
    handle(
        &mut s,
        cmd(
            t0(),
            alice(),
            CommandKind::RotateStreamKey {
                reservation_id: "r1".into(),
                stream_key_hash: "new".into(),
                stream_key_digest: None,
            },
        ),
    )
    .unwrap();
    assert_eq!(s.slots()["r1"].stream_key_hash, "new");
}

#[test]
fn replaying_the_events_rebuilds_the_same_state_and_apply_is_idempotent() {
    let mut s = ServerSchedule::default();
    let mut log = Vec::new();
    log.extend(
        handle(
            &mut s,
            cmd(t0(), operator(), CommandKind::RegisterServer(spec(2))),
        )
        .unwrap(),
    );
    for (i, (a, b)) in [(10, 20), (15, 25), (12, 18), (30, 40)].iter().enumerate() {
        log.extend(
            handle(
                &mut s,
                cmd(t0(), alice(), request(&format!("r{i}"), *a, *b)),
            )
            .unwrap(),
        );
    }
    log.extend(
        handle(
            &mut s,
            cmd(
                t0(),
                alice(),
                CommandKind::CancelReservation {
                    reservation_id: "r0".into(),
                },
            ),
        )
        .unwrap(),
    );
    let mut replayed = ServerSchedule::default();
    let mut twice = ServerSchedule::default();
    for e in &log {
        replayed.apply(e.clone());
        twice.apply(e.clone());
        twice.apply(e.clone());
    }
    assert_eq!(replayed, s);
    assert_eq!(twice, s);
}

#[test]
fn events_round_trip_through_json() {
    let mut s = server(1);
    let e = book(&mut s, alice(), "r1", 10, 20);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(serde_json::from_value::<ScheduleEvent>(json).unwrap(), e);
    assert_eq!(e.event_type(), "ReservationAccepted");
    assert_eq!(e.reservation_id(), Some("r1"));
}

fn service() -> Actor {
    Actor {
        role: Role::Service,
        name: "api:ingest".into(),
    }
}

fn ingest(kind: IngestKind, reservation_id: &str) -> IngestMessage {
    IngestMessage {
        schema: crate::contract::SCHEMA,
        kind,
        reservation_id: reservation_id.into(),
        server_id: "srv-1".into(),
        at: min(1),
        carrier: Some("carrier-a".into()),
        remote_addr: Some("127.0.0.2:50000".into()),
        codec: Some("h264,aac".into()),
        reason: None,
        refusals: None,
        protocol: None,
    }
}

#[test]
fn a_report_says_how_the_publisher_came_in_and_one_from_before_reads_as_it_was() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 60, 90);
    let mut report = ingest(IngestKind::Connected, "r1");
    report.protocol = Some(IngestProtocol::Srt);
    let cmd_of = |report, seq| CommandKind::RecordIngest {
        report,
        cursor: at(1, seq),
    };
    let events = handle(&mut s, cmd(min(1), service(), cmd_of(report, 1))).unwrap();
    assert!(matches!(
        &events[..],
        [ScheduleEvent::IngestReported {
            protocol: Some(IngestProtocol::Srt),
            ..
        }]
    ));
    let text = serde_json::to_string(&events[0]).unwrap();
    assert!(text.contains(r#""protocol":"srt""#), "{text}");

    // A streamer from before the field: its message reads without one, and the event it makes
    // is written without the field, byte for byte as before.
    let old = serde_json::to_value(ingest(IngestKind::Disconnected, "r1")).unwrap();
    assert!(old.get("protocol").is_none(), "{old}");
    let read: IngestMessage = serde_json::from_value(old).unwrap();
    assert_eq!(read.protocol, None);
    let events = handle(&mut s, cmd(min(2), service(), cmd_of(read, 2))).unwrap();
    let text = serde_json::to_string(&events[0]).unwrap();
    assert!(!text.contains("protocol"), "{text}");
}

fn at(epoch_ms: i64, sequence: u64) -> StreamCursor {
    StreamCursor { epoch_ms, sequence }
}

#[test]
fn a_redelivered_stream_message_records_nothing() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 60, 90);
    let report = |seq| CommandKind::RecordIngest {
        report: ingest(IngestKind::Connected, "r1"),
        cursor: at(1, seq),
    };
    let events = handle(&mut s, cmd(min(1), service(), report(7))).unwrap();
    assert!(matches!(
        &events[..],
        [ScheduleEvent::IngestReported { kind: IngestKind::Connected, carrier: Some(c), .. }]
            if c == "carrier-a"
    ));
    for seq in [7, 3] {
        assert_eq!(
            handle(&mut s, cmd(min(2), service(), report(seq))),
            Err(ScheduleError::AlreadyRecorded)
        );
    }
    assert_eq!(
        handle(&mut s, cmd(min(2), service(), report(8)))
            .unwrap()
            .len(),
        1
    );
    // The stream was recreated (even with an earlier creation time): sequences restart.
    let recreated = |seq| CommandKind::RecordIngest {
        report: ingest(IngestKind::Disconnected, "r1"),
        cursor: at(0, seq),
    };
    assert_eq!(
        handle(&mut s, cmd(min(3), service(), recreated(1)))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        handle(&mut s, cmd(min(3), service(), recreated(1))),
        Err(ScheduleError::AlreadyRecorded)
    );
}

#[test]
fn feeds_are_recorded_only_by_slotcast_and_only_for_this_server() {
    let mut s = server(1);
    let report = CommandKind::RecordIngest {
        report: ingest(IngestKind::Connected, "r1"),
        cursor: at(1, 1),
    };
    for who in [operator(), alice()] {
        assert_eq!(
            handle(&mut s, cmd(min(1), who, report.clone())),
            Err(ScheduleError::Forbidden)
        );
    }
    let mut elsewhere = ingest(IngestKind::Connected, "r1");
    elsewhere.server_id = "srv-2".into();
    let wrong = CommandKind::RecordIngest {
        report: elsewhere,
        cursor: at(1, 1),
    };
    assert_eq!(
        field_of(handle(&mut s, cmd(min(1), service(), wrong)).unwrap_err()),
        "server_id"
    );
    let mut long = ingest(IngestKind::Failed, "r1");
    long.reason = Some("é".repeat(1000));
    let events = handle(
        &mut s,
        cmd(
            min(1),
            service(),
            CommandKind::RecordIngest {
                report: long,
                cursor: at(1, 2),
            },
        ),
    )
    .unwrap();
    let ScheduleEvent::IngestReported {
        reason: Some(reason),
        ..
    } = &events[0]
    else {
        panic!("{events:?}");
    };
    assert!(reason.len() <= crate::contract::INGEST_TEXT_MAX && reason.starts_with('é'));
}

#[test]
fn a_refused_report_carries_its_counts_and_nothing_else_does() {
    let mut s = server(1);
    let record = |s: &mut ServerSchedule, report: IngestMessage, seq: u64| {
        handle(
            s,
            cmd(
                min(1),
                service(),
                CommandKind::RecordIngest {
                    report,
                    cursor: at(1, seq),
                },
            ),
        )
    };
    let mut refused = ingest(IngestKind::Refused, "r1");
    refused.refusals = Some([("bad_key".to_string(), 297), ("not_open".to_string(), 2)].into());
    let events = record(&mut s, refused, 1).unwrap();
    let ScheduleEvent::IngestReported {
        refusals: Some(counts),
        ..
    } = &events[0]
    else {
        panic!("{events:?}");
    };
    assert_eq!(counts["bad_key"], 297);

    // A refused report without counts, or with too many reasons, is refused itself.
    let empty = ingest(IngestKind::Refused, "r1");
    assert_eq!(field_of(record(&mut s, empty, 2).unwrap_err()), "refusals");
    let mut many = ingest(IngestKind::Refused, "r1");
    many.refusals = Some((0..17).map(|i| (format!("r{i}"), 1)).collect());
    assert_eq!(field_of(record(&mut s, many, 2).unwrap_err()), "refusals");

    // Counts on another kind are dropped.
    let mut connected = ingest(IngestKind::Connected, "r1");
    connected.refusals = Some([("bad_key".to_string(), 1)].into());
    let events = record(&mut s, connected, 2).unwrap();
    assert!(matches!(
        &events[0],
        ScheduleEvent::IngestReported { refusals: None, .. }
    ));
}

#[test]
fn window_boundaries_are_recorded_with_their_lateness() {
    let mut s = server(1);
    book(&mut s, alice(), "r1", 60, 90);
    let message = |kind, due| SlotMessage {
        schema: crate::contract::SCHEMA,
        kind,
        reservation_id: "r1".into(),
        server_id: "srv-1".into(),
        revision: 1,
        opens_at: min(60),
        closes_at: min(90),
        start: min(60),
        end: min(90),
        stream_key_hash: "k".into(),
        stream_key_digest: None,
        ingest: crate::contract::IngestMode::Push { carriers: vec![] },
        title: None,
        due_at: due,
        published_at: due + Duration::milliseconds(3),
        late_ms: 3.0,
    };
    let record = |kind, due, seq| CommandKind::RecordWindow {
        message: message(kind, due),
        cursor: at(1, seq),
    };
    let events = handle(
        &mut s,
        cmd(min(60), service(), record(SlotKind::Opened, min(60), 1)),
    );
    assert!(matches!(
        &events.unwrap()[..],
        [ScheduleEvent::WindowOpened { revision: 1, late_ms, .. }] if *late_ms == 3.0
    ));
    let events = handle(
        &mut s,
        cmd(min(90), service(), record(SlotKind::Closed, min(90), 2)),
    );
    assert!(matches!(
        &events.unwrap()[..],
        [ScheduleEvent::WindowClosed { .. }]
    ));
    assert_eq!(
        field_of(
            handle(
                &mut s,
                cmd(min(91), service(), record(SlotKind::Changed, min(91), 3))
            )
            .unwrap_err()
        ),
        "kind"
    );
}

#[test]
fn a_camera_source_is_recorded_and_a_bad_one_names_its_field() {
    use crate::contract::{CameraSource, CameraTransport};
    let mut s = server(1);
    let with = |url: &str, credentials: Option<&str>| {
        let mut kind = request("cam", 10, 20);
        if let CommandKind::RequestReservation { source, .. } = &mut kind {
            *source = Some(CameraSource {
                url: url.into(),
                transport: CameraTransport::Udp,
                credentials: credentials.map(str::to_string),
            });
        }
        kind
    };
    for (url, credentials, why) in [
        ("http://cam/live", None, "must be an rtsp:// URL"),
        (
            "rtsp://admin:pw@cam/live",
            None,
            "must not carry a user name or password",
        ),
        ("rtsp:///live", None, "must name the camera's host"),
        ("rtsp://cam/a b", None, "must not hold spaces"),
        ("rtsp://cam/live", Some("not hex!"), "is not a sealed login"),
    ] {
        let err = handle(&mut s, cmd(t0(), alice(), with(url, credentials))).unwrap_err();
        assert!(err.to_string().contains(why), "{url}: {err}");
        assert!(field_of(err).starts_with("source."), "{url}");
    }
    let long = format!("rtsp://cam/{}", "a".repeat(2048));
    assert!(handle(&mut s, cmd(t0(), alice(), with(&long, None))).is_err());

    let events = handle(
        &mut s,
        cmd(
            t0(),
            alice(),
            with("RTSP://cam:554/live?ch=1", Some("00ff")),
        ),
    )
    .unwrap();
    let ScheduleEvent::ReservationAccepted { source, .. } = &events[0] else {
        panic!("not accepted: {events:?}");
    };
    let source = source.as_ref().unwrap();
    assert_eq!(source.transport, CameraTransport::Udp);
    assert_eq!(source.credentials.as_deref(), Some("00ff"));
    // A pushed booking's event stays as it was: no `source` key at all.
    let pushed = book(&mut s, alice(), "push", 30, 40);
    let json = serde_json::to_value(&pushed).unwrap();
    assert!(json["ReservationAccepted"].get("source").is_none());
}

#[test]
fn control_characters_are_refused_in_titles_and_names_naming_the_field() {
    let mut s = server(1);
    let mut with_title = |title: &str| {
        let kind = match request("r1", 10, 20) {
            CommandKind::RequestReservation {
                reservation_id,
                start,
                end,
                stream_key_hash,
                ..
            } => CommandKind::RequestReservation {
                reservation_id,
                start,
                end,
                title: Some(title.to_string()),
                stream_key_hash,
                stream_key_digest: None,
                source: None,
            },
            other => other,
        };
        handle(&mut s, cmd(t0(), alice(), kind))
    };
    for bad in ["evening\nshow", "\u{1b}[2Jwiped", "tab\there"] {
        assert_eq!(field_of(with_title(bad).unwrap_err()), "title", "{bad:?}");
    }
    assert!(with_title("Evening show — ライブ").is_ok());
    let mut fresh = ServerSchedule::default();
    let mut named = spec(1);
    named.name = "demo\r\nforged: line".into();
    let refused = handle(
        &mut fresh,
        cmd(t0(), operator(), CommandKind::RegisterServer(named)),
    );
    assert_eq!(field_of(refused.unwrap_err()), "name");
}
