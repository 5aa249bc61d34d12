//! The audit core on a made-up stream: a clean stream verifies, and each kind of tampering
//! and each kind of divergence is named where it is.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;

use crate::audit::*;
use crate::{Actor, Carrier, Command, CommandKind, Role, ServerSchedule, ServerSpec};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn operator() -> Actor {
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

fn register() -> CommandKind {
    CommandKind::RegisterServer(ServerSpec {
        id: "srv-1".into(),
        name: "Server one".into(),
        capacity: Some(1),
        carriers: vec![Carrier::rtsp("carrier-a", "rtsp://127.0.0.2:8554")],
        ..ServerSpec::default()
    })
}

/// One hour-long booking per `i`, every other one overlapping the one before (so refused).
fn book(i: i64) -> CommandKind {
    let start = t0() + Duration::hours(2 + i - i % 2);
    CommandKind::RequestReservation {
        reservation_id: format!("r-{i}"),
        start,
        end: start + Duration::hours(1),
        title: Some(format!("show {i}")),
        stream_key_hash: format!("{i:064x}"),
        stream_key_digest: None,
        source: None,
    }
}

/// The rows slotcast would have written for `commands`, each with its command recorded
/// (`with_command`) or not (as before commands were kept).
fn rows(commands: Vec<(Actor, CommandKind)>, with_command: bool) -> Vec<StoredRow> {
    let mut state = ServerSchedule::default();
    let mut prev = GENESIS;
    let mut out = Vec::new();
    for (i, (actor, kind)) in commands.into_iter().enumerate() {
        let now = t0() + Duration::seconds(i as i64);
        let command = Command { now, actor, kind };
        let event = state.decide(command.clone()).expect("decided");
        let metadata = Metadata {
            actor: command.actor.name.clone(),
            request_id: format!("req-{i}"),
            recorded_at: crate::time::rfc3339_us(&now),
            reservation_id: event.reservation_id().map(str::to_string),
            command: with_command.then(|| command.clone()),
        };
        let row = StoredRow::seal("srv-1", i as i64 + 1, &event, &metadata, &mut prev).unwrap();
        state.apply(event);
        out.push(row);
    }
    out
}

fn stream(n: i64) -> Vec<StoredRow> {
    let mut commands = vec![(operator(), register())];
    commands.extend((0..n).map(|i| (alice(), book(i))));
    rows(commands, true)
}

fn anchor(row: &StoredRow) -> Anchor {
    Anchor {
        sequence: row.sequence,
        hash: row.hash.as_slice().try_into().unwrap(),
        source: "audit_anchors".into(),
    }
}

fn audit(rows: &[StoredRow], anchors: Vec<Anchor>) -> Report {
    let mut audit = StreamAudit::new("srv-1", Range::default(), anchors);
    for row in rows {
        audit.push(row);
    }
    audit.finish()
}

/// Rewrites one stored text the way someone with write access to the table would: the row
/// keeps its old hash.
fn tamper(row: &mut StoredRow) {
    row.payload = row.payload.replacen("show", "shoW", 1);
}

#[test]
fn an_untouched_stream_verifies_clean_and_every_command_is_decided_again() {
    let rows = stream(6);
    let report = audit(&rows, vec![anchor(&rows[6])]);
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.events, 7);
    assert_eq!(report.redecided, 7);
    assert_eq!(report.replayed_only, 0);
    assert_eq!(report.anchors_checked, 1);
}

#[test]
fn the_hash_is_the_documented_length_prefixed_sha256() {
    use sha2::{Digest, Sha256};
    let fields = RowFields {
        aggregate_id: "srv-1",
        sequence: 12,
        event_type: "ReservationAccepted",
        event_version: "1",
        payload: "{}",
        metadata: "{\"actor\":\"ops\"}",
    };
    let mut by_hand = Vec::new();
    for field in [
        &GENESIS[..],
        b"srv-1",
        b"12",
        b"ReservationAccepted",
        b"1",
        b"{}",
        b"{\"actor\":\"ops\"}",
    ] {
        by_hand.extend_from_slice(&(field.len() as u64).to_be_bytes());
        by_hand.extend_from_slice(field);
    }
    let expected: Hash = Sha256::digest(&by_hand).into();
    assert_eq!(event_hash(&GENESIS, &fields), expected);
}

#[test]
fn a_changed_byte_is_named_at_its_row_and_nowhere_else() {
    let mut rows = stream(6);
    tamper(&mut rows[3]);
    let report = audit(&rows, vec![]);
    assert_eq!(
        report.findings,
        vec![Finding::Changed {
            aggregate_id: "srv-1".into(),
            sequence: 4
        }]
    );
}

#[test]
fn deleted_rows_are_named_by_their_sequences() {
    let mut rows = stream(8);
    rows.remove(5);
    rows.remove(2);
    rows.remove(0);
    let report = audit(&rows, vec![]);
    let missing = |from, to| Finding::Missing {
        aggregate_id: "srv-1".into(),
        from,
        to,
    };
    assert_eq!(
        report.findings,
        vec![missing(1, 1), missing(3, 3), missing(6, 6)]
    );
}

#[test]
fn a_truncated_stream_is_caught_by_its_anchor() {
    let rows = stream(6);
    let anchors = vec![anchor(&rows[3]), anchor(&rows[6])];
    let report = audit(&rows[..5], anchors);
    assert_eq!(
        report.findings,
        vec![Finding::Truncated {
            aggregate_id: "srv-1".into(),
            anchored: 7,
            last: 5,
            source: "audit_anchors".into(),
        }]
    );
    // Without anchors the shorter stream is a valid chain: that is what anchors are for.
    assert!(audit(&rows[..5], vec![]).clean());
}

#[test]
fn a_rewritten_chain_still_differs_from_its_anchor() {
    let rows = stream(4);
    let anchors = vec![anchor(&rows[4])];
    // Someone changes #2 and recomputes every hash after it: the chain holds, the anchor not.
    let mut forged = rows.clone();
    tamper(&mut forged[1]);
    let mut prev = GENESIS;
    for row in &mut forged {
        row.prev_hash = prev.to_vec();
        prev = event_hash(&prev, &row.fields());
        row.hash = prev.to_vec();
    }
    let report = audit(&forged, anchors);
    assert_eq!(
        report.findings,
        vec![Finding::AnchorMismatch {
            aggregate_id: "srv-1".into(),
            sequence: 5,
            source: "audit_anchors".into(),
        }]
    );
    // The changed title is a different event from what its command decides.
    let divergence = report.first_divergence.expect("diverged");
    assert_eq!(divergence.sequence, 2);
}

#[test]
fn rows_put_out_of_order_break_the_links_around_them() {
    let rows = stream(4);
    let mut swapped = rows.clone();
    swapped.swap(2, 3);
    swapped[2].sequence = 3;
    swapped[3].sequence = 4;
    let report = audit(&swapped, vec![]);
    let relinked: Vec<i64> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Relinked { sequence, .. } => Some(*sequence),
            _ => None,
        })
        .collect();
    // #3 and #4 swapped (renumbered): neither links to the row before it, nor does #5.
    assert_eq!(relinked, vec![3, 4, 5]);
}

#[test]
fn a_refusal_decided_under_other_rules_is_a_divergence_with_both_outcomes() {
    let mut rows = stream(3);
    // The second booking overlapped the first and was refused under capacity 1. Make the
    // registration say capacity 2, its command too, with every hash recomputed (as if the
    // rules had been different when it was decided): deciding that booking again accepts it.
    let mut prev = GENESIS;
    for row in &mut rows {
        if row.sequence == 1 {
            row.payload = row.payload.replace("\"capacity\":1", "\"capacity\":2");
            row.metadata = row.metadata.replace("\"capacity\":1", "\"capacity\":2");
        }
        row.prev_hash = prev.to_vec();
        prev = event_hash(&prev, &row.fields());
        row.hash = prev.to_vec();
    }
    let report = audit(&rows, vec![]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.divergences, 1);
    let divergence = report.first_divergence.expect("diverged");
    assert_eq!(divergence.sequence, 3);
    assert!(matches!(
        divergence.recorded,
        Ok(crate::ScheduleEvent::ReservationRejected { .. })
    ));
    assert!(matches!(
        divergence.redecided,
        Ok(crate::ScheduleEvent::ReservationAccepted { .. })
    ));
}

#[test]
fn events_from_before_commands_were_recorded_are_replayed_and_counted_apart() {
    let mut commands = vec![(operator(), register())];
    commands.extend((0..3).map(|i| (alice(), book(i))));
    let rows = rows(commands, false);
    let report = audit(&rows, vec![]);
    assert!(report.clean());
    assert_eq!((report.redecided, report.replayed_only), (0, 4));
}

#[test]
fn a_range_counts_and_decides_only_the_rows_recorded_within_it() {
    let rows = stream(6);
    let mut audit = StreamAudit::new(
        "srv-1",
        Range {
            from: Some(t0() + Duration::seconds(2)),
            to: Some(t0() + Duration::seconds(4)),
        },
        vec![],
    );
    for row in &rows {
        audit.push(row);
    }
    let report = audit.finish();
    assert!(report.clean());
    assert_eq!((report.events, report.redecided), (3, 3));
}

#[test]
fn a_file_starting_mid_stream_checks_its_chain_but_decides_nothing() {
    let rows = stream(6);
    let mut audit = StreamAudit::mid_stream("srv-1", Range::default(), vec![]);
    for row in &rows[3..] {
        audit.push(row);
    }
    let report = audit.finish();
    assert!(report.clean());
    assert_eq!((report.events, report.redecided), (4, 0));
}

#[test]
fn an_event_stored_in_another_spelling_of_the_same_json_is_the_same_decision() {
    // As Postgres's jsonb writes it back: other spacing. Re-hashed, so only the text differs.
    let mut rows = stream(4);
    let mut prev = GENESIS;
    for row in &mut rows {
        let value: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        row.payload = serde_json::to_string_pretty(&value).unwrap();
        row.prev_hash = prev.to_vec();
        prev = event_hash(&prev, &row.fields());
        row.hash = prev.to_vec();
    }
    let report = audit(&rows, vec![]);
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.redecided, 5);
}
