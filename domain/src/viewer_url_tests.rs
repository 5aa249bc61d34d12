//! A server's `viewer_url`: checked as an origin, set, kept, replaced and removed by a patch;
//! and everything recorded before it (events and commands) reads and writes the same bytes.

use super::tests::{cmd, field_of, handle, operator, spec, t0};
use super::*;

fn register(viewer_url: Option<&str>) -> Result<Vec<ScheduleEvent>, ScheduleError> {
    let mut s = ServerSchedule::default();
    let spec = ServerSpec {
        viewer_url: viewer_url.map(str::to_string),
        ..spec(1)
    };
    handle(
        &mut s,
        cmd(t0(), operator(), CommandKind::RegisterServer(spec)),
    )
}

#[test]
fn a_viewer_url_is_an_http_origin() {
    for good in [
        "http://127.0.0.1:8888",
        "https://watch.example",
        "https://[fd00::1]:8443",
    ] {
        match register(Some(good)).as_deref() {
            Ok([ScheduleEvent::ServerRegistered { settings, .. }]) => {
                assert_eq!(settings.viewer_url.as_deref(), Some(good));
            }
            other => panic!("{good}: {other:?}"),
        }
    }
    for bad in [
        "http://x/watch",
        "http://x:8888/",
        "http://x?a=1",
        "rtsp://x",
        "ws://x",
        "http://",
        "http://user@x",
        "http://x:0",
        "http://x:65536",
        "http://x y",
        "http://x\u{0}y",
    ] {
        let err = register(Some(bad)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "viewer_url: must be http://host[:port] or https://…, with no path, query or fragment",
            "{bad}"
        );
        assert_eq!(field_of(err), "viewer_url");
    }
    assert!(register(None).is_ok(), "it is optional");
}

#[test]
fn a_patch_keeps_replaces_or_removes_the_viewer_url() {
    let mut s = ServerSchedule::default();
    let first = "http://10.0.0.1:8888";
    let spec = ServerSpec {
        viewer_url: Some(first.into()),
        ..spec(1)
    };
    handle(
        &mut s,
        cmd(t0(), operator(), CommandKind::RegisterServer(spec)),
    )
    .unwrap();
    // As a client sends them: absent, a new origin, null.
    let steps = [
        (r#"{"capacity": 2}"#, Some(first)),
        (
            r#"{"viewer_url": "https://watch.example"}"#,
            Some("https://watch.example"),
        ),
        (r#"{"viewer_url": null}"#, None),
    ];
    for (body, after) in steps {
        let patch: ServerPatch = serde_json::from_str(body).unwrap();
        handle(
            &mut s,
            cmd(t0(), operator(), CommandKind::UpdateServer(patch)),
        )
        .unwrap();
        let settings = s.settings().unwrap();
        assert_eq!(settings.viewer_url.as_deref(), after, "{body}");
    }
    let bad: ServerPatch = serde_json::from_str(r#"{"viewer_url": "http://x/"}"#).unwrap();
    let err = handle(
        &mut s,
        cmd(t0(), operator(), CommandKind::UpdateServer(bad)),
    )
    .unwrap_err();
    assert_eq!(field_of(err), "viewer_url");
}

/// `stored` reads as `T` and is written again byte for byte: its hash in the chain holds.
fn reads_and_writes_the_same<T>(stored: &str) -> T
where
    T: serde::de::DeserializeOwned + Serialize,
{
    let value: T = serde_json::from_str(stored).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), stored);
    value
}

#[test]
fn servers_recorded_before_viewer_urls_read_and_write_as_they_did() {
    // A registration's event and command, and a change's command, as slotcast wrote them
    // before servers had a viewer_url.
    let event = r#"{"ServerRegistered":{"at":"2030-01-01T12:00:00Z","settings":{"id":"srv-1","name":"Server one","capacity":1,"min_lead_s":30,"max_duration_s":43200,"horizon_s":7776000,"preroll_s":30,"grace_s":10,"carriers":[{"name":"carrier-a","ingest_url":"rtsp://127.0.0.2:8554"}]}}}"#;
    let registered: ScheduleEvent = reads_and_writes_the_same(event);
    let ScheduleEvent::ServerRegistered { settings, .. } = &registered else {
        panic!("{registered:?}");
    };
    assert_eq!(settings.viewer_url, None);
    // The same registration decided today records the same bytes.
    assert_eq!(
        register(None).unwrap(),
        vec![registered],
        "today's decision equals the old event"
    );

    let register = r#"{"RegisterServer":{"id":"srv-1","name":"Server one","capacity":1,"min_lead_s":null,"max_duration_s":null,"horizon_s":null,"preroll_s":null,"grace_s":null,"carriers":[{"name":"carrier-a","ingest_url":"rtsp://127.0.0.2:8554"}]}}"#;
    let register: CommandKind = reads_and_writes_the_same(register);
    assert_eq!(register, CommandKind::RegisterServer(spec(1)));

    let update = r#"{"UpdateServer":{"name":null,"capacity":2,"min_lead_s":null,"max_duration_s":null,"horizon_s":null,"preroll_s":null,"grace_s":null,"carriers":null}}"#;
    let update: CommandKind = reads_and_writes_the_same(update);
    assert_eq!(
        update,
        CommandKind::UpdateServer(ServerPatch {
            capacity: Some(2),
            ..ServerPatch::default()
        })
    );

    // A removal is recorded as `null`, and reads back as a removal, not as "unchanged".
    let removal = r#"{"UpdateServer":{"name":null,"capacity":null,"min_lead_s":null,"max_duration_s":null,"horizon_s":null,"preroll_s":null,"grace_s":null,"carriers":null,"viewer_url":null}}"#;
    let removal: CommandKind = reads_and_writes_the_same(removal);
    assert_eq!(
        removal,
        CommandKind::UpdateServer(ServerPatch {
            viewer_url: Some(None),
            ..ServerPatch::default()
        })
    );
}
