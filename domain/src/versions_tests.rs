//! Events as today's code stores them, read back by today's code and by a slotcast of
//! tomorrow that added a field to `ReservationAccepted` and renamed another.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use serde::Deserialize;
use serde_json::json;

use super::*;

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .expect("a valid time")
}

/// A booking as today's code decides it.
fn accepted() -> ScheduleEvent {
    ScheduleEvent::ReservationAccepted {
        at: at(0),
        reservation_id: "r1".into(),
        owner: "acme".into(),
        title: Some("Morning show".into()),
        start: at(600),
        end: at(1200),
        opens_at: at(570),
        closes_at: at(1210),
        stream_key_hash: "ab".repeat(32),
        stream_key_digest: None,
        source: None,
    }
}

/// What the events table holds for `event`: its type, its version and its payload.
fn stored(event: &ScheduleEvent) -> (String, String, Value) {
    let payload = serde_json::to_value(event).expect("an event serializes");
    (event.event_type(), event.event_version(), payload)
}

#[test]
fn todays_events_are_stored_at_their_version_and_read_back_as_they_were() {
    let cancelled = ScheduleEvent::ReservationCancelled {
        at: at(30),
        reservation_id: "r1".into(),
        by: crate::Actor {
            role: crate::Role::Distributor,
            name: "acme".into(),
        },
    };
    for event in [accepted(), cancelled] {
        let (event_type, version, payload) = stored(&event);
        assert_eq!(version, "1", "{event_type} is at its first version");
        let text = payload.to_string();
        let read = decode(&event_type, &version, payload).expect("today's event reads");
        assert_eq!(read, event);
        let from_text = decode_text(&event_type, &version, &text).expect("and from its text");
        assert_eq!(from_text, event);
    }
    // The text path refuses what the value path refuses.
    let (event_type, _, payload) = stored(&accepted());
    assert!(decode_text(&event_type, "2", &payload.to_string()).is_err());
}

/// `ReservationAccepted` as a slotcast of tomorrow has it, at version 2: `title` renamed
/// `display_title`, and a new field `language` (absent in older events).
#[derive(Debug, PartialEq, Deserialize)]
enum Tomorrow {
    ReservationAccepted {
        reservation_id: String,
        display_title: Option<String>,
        #[serde(default)]
        language: Option<String>,
        start: DateTime<Utc>,
    },
}

/// Tomorrow's step from version 1 to 2: the rename (the added field needs none).
fn rename_title(payload: &mut Value) -> Result<(), String> {
    let fields = payload
        .get_mut("ReservationAccepted")
        .and_then(Value::as_object_mut)
        .ok_or("not a ReservationAccepted payload")?;
    let title = fields.remove("title").ok_or("no title to rename")?;
    fields.insert("display_title".into(), title);
    Ok(())
}

const TOMORROW: &[Upcaster] = &[Upcaster {
    event_type: "ReservationAccepted",
    from: 1,
    step: rename_title,
}];

#[test]
fn an_event_stored_today_reads_after_a_field_is_renamed_and_one_is_added() {
    let (event_type, version, payload) = stored(&accepted());
    let read: Tomorrow = decode_with(TOMORROW, 2, &event_type, &version, payload)
        .expect("today's event reads tomorrow");
    assert_eq!(
        read,
        Tomorrow::ReservationAccepted {
            reservation_id: "r1".into(),
            display_title: Some("Morning show".into()),
            language: None,
            start: at(600),
        }
    );
    // Tomorrow's own events are at version 2 and take no step.
    let written_tomorrow = json!({"ReservationAccepted": {
        "reservation_id": "r2", "display_title": null, "language": "ja",
        "start": "2027-01-15T08:00:00Z"
    }});
    let read: Tomorrow = decode_with(TOMORROW, 2, &event_type, "2", written_tomorrow)
        .expect("tomorrow's event reads");
    assert!(matches!(read, Tomorrow::ReservationAccepted { language: Some(l), .. } if l == "ja"));
}

#[test]
fn without_its_upcaster_an_old_event_is_refused_not_misread() {
    let (event_type, version, payload) = stored(&accepted());
    let err = decode_with::<Tomorrow>(&[], 2, &event_type, &version, payload.clone())
        .expect_err("no step from version 1");
    assert!(
        matches!(err, DecodeError::NoUpcaster { version: 1, .. }),
        "{err}"
    );
    // Read as if no step were needed, the title would be silently lost (an absent Option
    // reads as None): the version and its upcaster are what keep it.
    let misread: Tomorrow =
        decode_with(&[], 1, &event_type, &version, payload).expect("it decodes, wrongly");
    assert!(
        matches!(
            misread,
            Tomorrow::ReservationAccepted {
                display_title: None,
                ..
            }
        ),
        "{misread:?}"
    );
}

#[test]
fn an_event_from_a_newer_slotcast_or_with_a_bad_version_is_refused() {
    let (event_type, _, payload) = stored(&accepted());
    let err = decode(&event_type, "2", payload.clone()).expect_err("written by a newer one");
    assert!(
        matches!(
            err,
            DecodeError::Newer {
                version: 2,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer slotcast"), "{err}");
    let err = decode(&event_type, "v1", payload).expect_err("not a number");
    assert!(matches!(err, DecodeError::BadVersion { .. }), "{err}");
}
