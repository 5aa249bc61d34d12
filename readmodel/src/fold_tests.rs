//! The fold on literal events: each event's effect on its row, as `project.rs`'s SQL has it.
//! That the whole tables match the projectors' is tested against Postgres
//! (`readmodel/tests/rebuild.rs`).

use super::*;
use chrono::TimeZone;
use slotcast_domain::contract::{CameraSource, StreamCursor};
use slotcast_domain::{Actor, Carrier, RejectReason, Role};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_900_000_000 + s, 0).unwrap()
}

fn settings(name: &str) -> ServerSettings {
    ServerSettings {
        id: "srv".into(),
        name: name.into(),
        capacity: 2,
        min_lead_s: 30,
        max_duration_s: 3600,
        horizon_s: 86_400,
        preroll_s: 30,
        grace_s: 10,
        carriers: vec![Carrier::rtsp("a", "rtsp://127.0.0.2:8554")],
        viewer_url: Some("http://127.0.0.2:8888".into()),
    }
}

fn accepted(id: &str, at: i64, source: Option<CameraSource>) -> ScheduleEvent {
    ScheduleEvent::ReservationAccepted {
        at: t(at),
        reservation_id: id.into(),
        owner: "alice".into(),
        title: Some("show".into()),
        start: t(1000),
        end: t(2000),
        opens_at: t(970),
        closes_at: t(2010),
        stream_key_hash: "k1".into(),
        stream_key_digest: None,
        source,
    }
}

fn ingest(id: &str, at: i64, kind: IngestKind, carrier: Option<&str>) -> ScheduleEvent {
    ScheduleEvent::IngestReported {
        at: t(at),
        reservation_id: id.into(),
        kind,
        reported_at: t(at),
        carrier: carrier.map(Into::into),
        remote_addr: None,
        codec: None,
        reason: None,
        refusals: None,
        protocol: None,
        cursor: StreamCursor {
            epoch_ms: 1,
            sequence: at as u64,
        },
    }
}

fn closed(id: &str, at: i64) -> ScheduleEvent {
    ScheduleEvent::WindowClosed {
        at: t(at),
        reservation_id: id.into(),
        revision: 1,
        due_at: t(at),
        published_at: t(at),
        late_ms: 0.0,
        cursor: StreamCursor {
            epoch_ms: 1,
            sequence: at as u64,
        },
    }
}

fn fold(events: &[ScheduleEvent]) -> Rows {
    let mut fold = StreamFold::new("srv");
    for (i, event) in events.iter().enumerate() {
        fold.apply(i as i64 + 1, event).unwrap();
    }
    assert_eq!(fold.last_sequence(), events.len() as i64);
    fold.finish()
}

#[test]
fn a_server_keeps_its_registration_time_and_takes_each_update() {
    let rows = fold(&[
        ScheduleEvent::ServerRegistered {
            at: t(0),
            settings: settings("one"),
        },
        ScheduleEvent::ServerUpdated {
            at: t(5),
            settings: settings("two"),
        },
    ]);
    assert_eq!(
        rows.servers,
        [ServerRow {
            settings: settings("two"),
            registered_at: t(0),
            updated_at: t(5),
        }]
    );
}

#[test]
fn a_booking_holds_its_slot_until_cancelled_and_a_refusal_never_does() {
    let camera = CameraSource {
        url: "rtsp://cam/1".into(),
        transport: Default::default(),
        credentials: Some("ab".into()),
    };
    let rows = fold(&[
        accepted("r1", 1, Some(camera)),
        ScheduleEvent::ReservationRejected {
            at: t(2),
            reservation_id: "r2".into(),
            owner: "bob".into(),
            title: None,
            start: t(1000),
            end: t(2000),
            reason: RejectReason::CapacityExceeded,
            conflicts: vec![],
            suggestions: vec![],
        },
        accepted("r3", 3, None),
        ScheduleEvent::ReservationCancelled {
            at: t(4),
            reservation_id: "r3".into(),
            by: Actor {
                role: Role::Operator,
                name: "ops".into(),
            },
        },
    ]);
    let ids: Vec<&str> = rows.reservations.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    let r1 = &rows.reservations[0];
    assert_eq!(r1.status, ReservationStatus::Accepted);
    assert_eq!(r1.camera_url.as_deref(), Some("rtsp://cam/1"));
    assert_eq!(r1.camera_transport, Some("tcp"));
    assert!(r1.camera_login);
    let r2 = &rows.reservations[1];
    assert_eq!(r2.status, ReservationStatus::Rejected);
    assert_eq!(r2.reason, Some(RejectReason::CapacityExceeded.explain()));
    assert_eq!((r2.opens_at, r2.stream_key_hash.as_deref()), (None, None));
    let r3 = &rows.reservations[2];
    assert_eq!(
        (r3.status, r3.updated_at),
        (ReservationStatus::Cancelled, t(4))
    );
    let held: Vec<&str> = rows
        .schedule
        .iter()
        .map(|s| s.reservation_id.as_str())
        .collect();
    assert_eq!(held, ["r1"]);
}

#[test]
fn a_reschedule_moves_the_row_and_the_slot_and_a_rotation_the_key() {
    let rows = fold(&[
        accepted("r1", 1, None),
        ScheduleEvent::ReservationRescheduled {
            at: t(2),
            reservation_id: "r1".into(),
            previous: slotcast_domain::Window::new(t(1000), t(2000)),
            start: t(3000),
            end: t(4000),
            opens_at: t(2970),
            closes_at: t(4010),
        },
        ScheduleEvent::StreamKeyRotated {
            at: t(3),
            reservation_id: "r1".into(),
            stream_key_hash: "k2".into(),
            stream_key_digest: None,
        },
    ]);
    let r = &rows.reservations[0];
    assert_eq!((r.start_at, r.end_at), (t(3000), t(4000)));
    assert_eq!((r.opens_at, r.closes_at), (Some(t(2970)), Some(t(4010))));
    assert_eq!(
        (r.stream_key_hash.as_deref(), r.updated_at),
        (Some("k2"), t(3))
    );
    assert_eq!(
        (rows.schedule[0].start_at, rows.schedule[0].end_at),
        (t(3000), t(4000))
    );
}

#[test]
fn ingest_makes_a_slot_live_and_its_close_ends_it() {
    let rows = fold(&[
        accepted("r1", 1, None),
        ingest("r1", 980, IngestKind::Refused, Some("b")),
        ingest("r1", 990, IngestKind::Connected, Some("a")),
        ingest("r1", 995, IngestKind::Disconnected, None),
        closed("r1", 2010),
    ]);
    let r = &rows.reservations[0];
    assert_eq!(r.status, ReservationStatus::Ended);
    assert_eq!(r.ingest, Some(IngestKind::Disconnected));
    assert_eq!(
        r.ingest_carrier.as_deref(),
        Some("a"),
        "kept when none is named"
    );
    assert_eq!((r.ingest_at, r.updated_at), (Some(t(995)), t(2010)));
    assert!(r.ingested);
}

#[test]
fn a_window_closed_without_ingest_is_missed_until_a_late_connect_ends_it() {
    let rows = fold(&[accepted("r1", 1, None), closed("r1", 2010)]);
    assert_eq!(rows.reservations[0].status, ReservationStatus::Missed);
    let rows = fold(&[
        accepted("r1", 1, None),
        closed("r1", 2010),
        ingest("r1", 2011, IngestKind::Connected, Some("a")),
    ]);
    assert_eq!(rows.reservations[0].status, ReservationStatus::Ended);
}

#[test]
fn an_event_about_a_reservation_the_server_never_booked_changes_nothing() {
    let rows = fold(&[
        accepted("r1", 1, None),
        ingest("elsewhere", 990, IngestKind::Connected, Some("a")),
        closed("elsewhere", 2010),
    ]);
    assert_eq!(rows.reservations.len(), 1);
    assert_eq!(rows.reservations[0].status, ReservationStatus::Accepted);
}

#[test]
fn the_same_reservation_booked_twice_is_refused() {
    let mut fold = StreamFold::new("srv");
    fold.apply(1, &accepted("r1", 1, None)).unwrap();
    assert_eq!(
        fold.apply(2, &accepted("r1", 2, None)),
        Err(Duplicate {
            reservation_id: "r1".into(),
            sequence: 2
        })
    );
}
