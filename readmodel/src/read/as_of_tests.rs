//! The fold behind answers "as of" an instant, on events written out by hand.

use chrono::{DateTime, Duration, Utc};
use slotcast_domain::contract::{CameraSource, CameraTransport, IngestKind, StreamCursor};
use slotcast_domain::{
    Actor, Carrier, RejectReason, ReservationStatus, Role, ScheduleEvent, ServerSettings, Window,
};

use super::Known;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Noon, plus `m` minutes.
fn noon(m: i64) -> DateTime<Utc> {
    t("2030-01-01T12:00:00Z") + Duration::minutes(m)
}

fn settings(carrier: &str) -> ServerSettings {
    ServerSettings {
        id: "s1".into(),
        name: "Server 1".into(),
        capacity: 2,
        min_lead_s: 30,
        max_duration_s: 43_200,
        horizon_s: 7_776_000,
        preroll_s: 30,
        grace_s: 10,
        carriers: vec![Carrier::rtsp(carrier, format!("rtsp://{carrier}:8554"))],
        viewer_url: None,
    }
}

fn accepted(id: &str, owner: &str, at: DateTime<Utc>, start: i64, end: i64) -> ScheduleEvent {
    ScheduleEvent::ReservationAccepted {
        at,
        reservation_id: id.into(),
        owner: owner.into(),
        title: Some(format!("show {id}")),
        start: noon(start),
        end: noon(end),
        opens_at: noon(start) - Duration::seconds(30),
        closes_at: noon(end) + Duration::seconds(10),
        stream_key_hash: format!("hash-{id}"),
        stream_key_digest: None,
        source: None,
    }
}

fn cursor(sequence: u64) -> StreamCursor {
    StreamCursor {
        epoch_ms: 1,
        sequence,
    }
}

fn ingest(id: &str, at: DateTime<Utc>, kind: IngestKind, carrier: Option<&str>) -> ScheduleEvent {
    ScheduleEvent::IngestReported {
        at,
        reservation_id: id.into(),
        kind,
        reported_at: at,
        carrier: carrier.map(str::to_string),
        remote_addr: None,
        codec: None,
        reason: None,
        refusals: None,
        protocol: None,
        cursor: cursor(1),
    }
}

fn closed(id: &str, at: DateTime<Utc>) -> ScheduleEvent {
    ScheduleEvent::WindowClosed {
        at,
        reservation_id: id.into(),
        revision: 1,
        due_at: at,
        published_at: at,
        late_ms: 0.0,
        cursor: cursor(2),
    }
}

fn ids(known: &Known, from: Option<i64>, to: Option<i64>, limit: usize) -> Vec<String> {
    known
        .schedule(from.map(noon), to.map(noon), limit)
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[test]
fn bookings_moves_and_cancels_shape_the_schedule_as_the_read_model_does() {
    let booked = noon(-60);
    let events = [
        ScheduleEvent::ServerRegistered {
            at: noon(-120),
            settings: settings("a"),
        },
        accepted("r-1", "alice", booked, 0, 30),
        accepted("r-2", "bob", booked, 10, 40),
        ScheduleEvent::ReservationRejected {
            at: booked,
            reservation_id: "r-3".into(),
            owner: "alice".into(),
            title: None,
            start: noon(5),
            end: noon(15),
            reason: RejectReason::CapacityExceeded,
            conflicts: vec![],
            suggestions: vec![],
        },
        accepted("r-4", "alice", booked, 60, 90),
        ScheduleEvent::ReservationRescheduled {
            at: noon(-50),
            reservation_id: "r-1".into(),
            previous: Window::new(noon(0), noon(30)),
            start: noon(100),
            end: noon(120),
            opens_at: noon(100) - Duration::seconds(30),
            closes_at: noon(120) + Duration::seconds(10),
        },
        ScheduleEvent::RescheduleRejected {
            at: noon(-45),
            reservation_id: "r-2".into(),
            start: noon(60),
            end: noon(90),
            reason: RejectReason::CapacityExceeded,
            conflicts: vec![],
            suggestions: vec![],
        },
        ScheduleEvent::ReservationCancelled {
            at: noon(-40),
            reservation_id: "r-4".into(),
            by: Actor {
                role: Role::Operator,
                name: "ops".into(),
            },
        },
    ];
    let known = Known::fold("s1", &events);
    // Start order; the refused booking and the cancelled slot hold nothing.
    assert_eq!(ids(&known, None, None, 10), ["r-2", "r-1"]);
    // Half-open ranges against the slot, and the limit.
    assert_eq!(ids(&known, Some(40), None, 10), ["r-1"]);
    assert_eq!(ids(&known, None, Some(100), 10), ["r-2"]);
    assert_eq!(ids(&known, None, None, 1), ["r-2"]);

    let moved = known.reservation("r-1").unwrap();
    assert_eq!((moved.start_at, moved.end_at), (noon(100), noon(120)));
    assert_eq!(moved.opens_at, Some(noon(100) - Duration::seconds(30)));
    assert_eq!((moved.requested_at, moved.updated_at), (booked, noon(-50)));
    assert_eq!(moved.server_id, "s1");
    // A refused move changes nothing, not even the time of the last change.
    assert_eq!(known.reservation("r-2").unwrap().updated_at, booked);
    let refused = known.reservation("r-3").unwrap();
    assert_eq!(refused.status, ReservationStatus::Rejected);
    assert_eq!(
        refused.reason.as_deref(),
        Some(RejectReason::CapacityExceeded.explain())
    );
    assert_eq!(
        (refused.opens_at, refused.stream_key_hash.as_ref()),
        (None, None)
    );
    let cancelled = known.reservation("r-4").unwrap();
    assert_eq!(
        (cancelled.status, cancelled.updated_at),
        (ReservationStatus::Cancelled, noon(-40))
    );
    assert!(known.reservation("r-5").is_none());
}

#[test]
fn the_server_keeps_its_registration_time_and_takes_each_change() {
    let events = [
        ScheduleEvent::ServerRegistered {
            at: noon(-120),
            settings: settings("a"),
        },
        ScheduleEvent::ServerUpdated {
            at: noon(-60),
            settings: settings("b"),
        },
    ];
    assert!(Known::fold("s1", &events[..0]).server().is_none());
    let before = Known::fold("s1", &events[..1]);
    let after = Known::fold("s1", &events);
    let carriers = |k: &Known| k.server().unwrap().carriers[0]["name"].clone();
    assert_eq!(
        (carriers(&before), carriers(&after)),
        ("a".into(), "b".into())
    );
    let server = after.server().unwrap();
    assert_eq!(
        (server.registered_at, server.updated_at),
        (noon(-120), noon(-60))
    );
    assert_eq!((server.capacity, server.preroll_s), (2, 30));
}

#[test]
fn ingest_and_windows_move_the_status_as_the_projector_does() {
    let open = noon(0);
    let base = [
        ScheduleEvent::ServerRegistered {
            at: noon(-120),
            settings: settings("a"),
        },
        accepted("r-1", "alice", noon(-60), 0, 30),
    ];
    let with = |more: Vec<ScheduleEvent>| {
        let all: Vec<ScheduleEvent> = base.iter().cloned().chain(more).collect();
        Known::fold("s1", &all).reservation("r-1").unwrap().clone()
    };

    // Connected: live, with the carrier; a later report without a carrier keeps it.
    let live = with(vec![ingest("r-1", open, IngestKind::Connected, Some("a"))]);
    assert_eq!(live.status, ReservationStatus::Live);
    assert_eq!(
        (live.ingest.as_deref(), live.ingest_carrier.as_deref()),
        (Some("connected"), Some("a"))
    );
    let gone = with(vec![
        ingest("r-1", open, IngestKind::Connected, Some("a")),
        ingest("r-1", noon(1), IngestKind::Disconnected, None),
    ]);
    assert_eq!(gone.status, ReservationStatus::Live);
    assert_eq!(
        (gone.ingest.as_deref(), gone.ingest_carrier.as_deref()),
        (Some("disconnected"), Some("a"))
    );
    assert_eq!((gone.ingest_at, gone.updated_at), (Some(noon(1)), noon(1)));

    // Closed after ingest: ended; without: missed; a connect recorded after the close of a
    // missed window still makes it ended.
    let ended = with(vec![
        ingest("r-1", open, IngestKind::Connected, Some("a")),
        closed("r-1", noon(31)),
    ]);
    assert_eq!(
        (ended.status, ended.updated_at),
        (ReservationStatus::Ended, noon(31))
    );
    let missed = with(vec![closed("r-1", noon(31))]);
    assert_eq!(missed.status, ReservationStatus::Missed);
    let late = with(vec![
        closed("r-1", noon(31)),
        ingest("r-1", noon(32), IngestKind::Connected, Some("a")),
    ]);
    assert_eq!(late.status, ReservationStatus::Ended);

    // A failure is shown but makes nothing live; refusals of strangers change nothing.
    let failed = with(vec![ingest("r-1", open, IngestKind::Failed, Some("a"))]);
    assert_eq!(
        (failed.status, failed.ingest.as_deref()),
        (ReservationStatus::Accepted, Some("failed"))
    );
    let refused = with(vec![ingest("r-1", open, IngestKind::Refused, Some("a"))]);
    assert_eq!((refused.ingest, refused.updated_at), (None, noon(-60)));

    // A cancelled slot stays cancelled when its window closes.
    let cancelled = with(vec![
        ScheduleEvent::ReservationCancelled {
            at: noon(-1),
            reservation_id: "r-1".into(),
            by: Actor {
                role: Role::Distributor,
                name: "alice".into(),
            },
        },
        closed("r-1", noon(31)),
    ]);
    assert_eq!(cancelled.status, ReservationStatus::Cancelled);

    // A key rotation changes the hash and the time of the last change only.
    let rotated = with(vec![ScheduleEvent::StreamKeyRotated {
        at: noon(-30),
        reservation_id: "r-1".into(),
        stream_key_hash: "new".into(),
        stream_key_digest: None,
    }]);
    assert_eq!(
        (rotated.stream_key_hash.as_deref(), rotated.updated_at),
        (Some("new"), noon(-30))
    );
}

#[test]
fn a_camera_and_the_times_are_kept_as_the_read_model_keeps_them() {
    // Postgres keeps microseconds: the nanoseconds of a server-clock stamp go.
    let at = t("2030-01-01T11:00:00.123456789Z");
    let ScheduleEvent::ReservationAccepted {
        at: _,
        reservation_id,
        owner,
        title,
        start,
        end,
        opens_at,
        closes_at,
        stream_key_hash,
        stream_key_digest,
        source: _,
    } = accepted("r-1", "alice", at, 0, 30)
    else {
        unreachable!("accepted() builds an acceptance")
    };
    let event = ScheduleEvent::ReservationAccepted {
        at,
        reservation_id,
        owner,
        title,
        start,
        end,
        opens_at,
        closes_at,
        stream_key_hash,
        stream_key_digest,
        source: Some(CameraSource {
            url: "rtsp://cam/stream".into(),
            transport: CameraTransport::Udp,
            credentials: Some("sealed".into()),
        }),
    };
    let known = Known::fold("s1", [&event]);
    let row = known.reservation("r-1").unwrap();
    assert_eq!(row.requested_at, t("2030-01-01T11:00:00.123456Z"));
    assert_eq!(
        (
            row.camera_url.as_deref(),
            row.camera_transport.as_deref(),
            row.camera_login
        ),
        (Some("rtsp://cam/stream"), Some("udp"), true)
    );
}
