//! The index on its own (overlap queries, skip, pruning, moving a slot, a long slot's reach),
//! then the aggregate through it: every decision against the walk over every slot that the
//! aggregate made before the index, and how much of a 10,000-slot schedule a decision reads.

use chrono::TimeZone;
use cqrs_es::Aggregate;

use super::*;
use crate::booking::{free_windows, max_overlap};
use crate::schedule::{
    Actor, Carrier, Command, CommandKind, Role, ScheduleError, ScheduleEvent, ServerPatch,
    ServerSchedule, ServerSettings, ServerSpec,
};

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + Duration::minutes(minute)
}

fn w(a: i64, b: i64) -> Window {
    Window::new(at(a), at(b))
}

fn slot(id: &str, a: i64, b: i64) -> Slot {
    Slot {
        reservation_id: id.to_string(),
        owner: "alice".into(),
        start: at(a),
        end: at(b),
        opens_at: at(a) - Duration::seconds(30),
        closes_at: at(b) + Duration::seconds(10),
        stream_key_hash: "h".into(),
    }
}

#[test]
fn overlap_queries_find_exactly_the_overlapping_slots() {
    let mut index = SlotIndex::default();
    for (id, a, b) in [("a", 0, 10), ("b", 10, 20), ("c", 5, 65), ("d", 100, 110)] {
        index.insert(slot(id, a, b));
    }
    let mut got = index.busy_within(w(10, 12), at(-100), None);
    got.sort();
    // `a` ends where the window starts (half-open): not counted; the long `c` is.
    assert_eq!(got, vec![w(5, 65), w(10, 20)]);
    assert_eq!(index.busy_within(w(65, 100), at(-100), None), vec![]);
    // A reschedule does not count its own slot, and slots over by `now` do not count.
    assert_eq!(
        index.busy_within(w(10, 12), at(-100), Some("c")),
        vec![w(10, 20)]
    );
    let mut got = index.busy_within(w(0, 12), at(15), None);
    got.sort();
    assert_eq!(got, vec![w(5, 65), w(10, 20)]);
    assert_eq!(index.conflicts(3, w(10, 12), at(-100), None), None);
    assert_eq!(
        index.conflicts(2, w(10, 12), at(-100), None),
        Some(vec![w(5, 65), w(10, 20)])
    );
}

#[test]
fn a_long_slot_widens_only_its_own_class_and_leaves_with_it() {
    let mut index = SlotIndex::default();
    for i in 0..1000 {
        index.insert(slot(&format!("s{i}"), i * 10, i * 10 + 5));
    }
    index.insert(slot("week", 20_000, 20_000 + 7 * 1440));
    assert_eq!(index.by_start.len(), 2);
    take_examined();
    // Far from the long slot, a query reads the short slots within a short slot's reach only.
    let got = index.busy_within(w(5000, 5003), at(0), None);
    assert_eq!(got, vec![w(5000, 5005)]);
    assert!(take_examined() <= 2);
    // Near it, the long one's class reads back a week, and finds that one slot.
    assert_eq!(
        index.busy_within(w(25_000, 25_001), at(0), None),
        vec![w(20_000, 30_080)]
    );
    assert!(take_examined() <= 2);
    // Once it goes, so does its class and its reach.
    index.remove("week");
    assert_eq!(index.by_start.len(), 1);
    assert_eq!(index.busy_within(w(25_000, 25_001), at(0), None), vec![]);
    assert_eq!(take_examined(), 0);
}

#[test]
fn a_reschedule_moves_the_slot_in_every_order() {
    let mut index = SlotIndex::default();
    index.insert(slot("r", 0, 10));
    index.insert(slot("other", 100, 110));
    let moved = slot("r", 200, 500);
    index.reschedule("r", w(200, 500), moved.opens_at, moved.closes_at);
    assert_eq!(index.get("r"), Some(&moved));
    assert_eq!(index.busy_within(w(0, 10), at(-100), None), vec![]);
    assert_eq!(
        index.busy_within(w(300, 301), at(-100), None),
        vec![w(200, 500)]
    );
    // Its old close no longer drops it; its new one does.
    index.prune_closed(at(20));
    assert!(index.get("r").is_some());
    index.prune_closed(moved.closes_at);
    assert_eq!(index.slots().len(), 0);
    // A reservation no longer held stays gone.
    index.reschedule("r", w(0, 10), at(0), at(10));
    assert!(index.slots().is_empty() && index.by_start.is_empty());
}

#[test]
fn closed_slots_leave_from_the_front_only() {
    let mut index = SlotIndex::default();
    for i in 0..10 {
        index.insert(slot(&format!("s{i}"), i * 10, i * 10 + 10));
    }
    // s0..s2 close at 10, 20, 30 minutes (+10 s of grace).
    index.prune_closed(at(30) + Duration::seconds(10));
    assert_eq!(index.slots().len(), 7);
    assert!(index.get("s2").is_none() && index.get("s3").is_some());
    index.prune_closed(at(30) + Duration::seconds(10));
    assert_eq!(index.slots().len(), 7, "pruning twice changes nothing");
    let json = serde_json::to_value(&index).unwrap();
    assert_eq!(json, serde_json::to_value(index.slots()).unwrap());
    let back: SlotIndex = serde_json::from_value(json).unwrap();
    assert_eq!(back, index, "serialized as the slots, rebuilt on load");
}

#[test]
fn a_suggestion_at_the_very_edge_of_the_bounds_is_found() {
    let mut index = SlotIndex::default();
    index.insert(slot("a", -25, 15));
    index.insert(slot("b", 30, 40));
    // The first radius (twice the length) is already the whole of `[earliest, latest]`, and
    // the window that ends where `b` starts begins exactly there: `b` must be read.
    let got = index.suggest(1, w(0, 10), at(-20), at(20), 3, at(-100), None);
    assert_eq!(got, vec![w(15, 25), w(20, 30)]);
    assert_eq!(
        got,
        free_windows(&[w(-25, 15), w(30, 40)], 1, w(0, 10), at(-20), at(20), 3)
    );
}

/// A small deterministic generator (xorshift), so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// The aggregate's state before the index: `busy` was every slot not ended by `now` (and not
/// `skip`'s), then `max_overlap` and `free_windows` over all of it.
fn busy(slots: &BTreeMap<String, Slot>, now: DateTime<Utc>, skip: Option<&str>) -> Vec<Window> {
    slots
        .values()
        .filter(|s| s.end > now && Some(s.reservation_id.as_str()) != skip)
        .map(|s| Window::new(s.start, s.end))
        .collect()
}

/// Every query the decision makes, against the same question asked of all slots.
#[test]
fn the_index_answers_exactly_as_a_walk_over_every_slot() {
    let mut rng = Rng(0x5107_ca57);
    let mut index = SlotIndex::default();
    let mut now = at(0);
    for step in 0..4000 {
        let id = format!("r{}", rng.below(300));
        match rng.below(10) {
            0..=4 => {
                let start = rng.below(2000);
                // Mostly short slots, now and then a long one (as max_duration allows).
                let length = if rng.below(20) == 0 {
                    60 + rng.below(600)
                } else {
                    1 + rng.below(30)
                };
                index.insert(slot(&id, start, start + length));
            }
            5 => {
                index.remove(&id);
            }
            6 => {
                now += Duration::minutes(rng.below(20));
                index.prune_closed(now);
            }
            _ => {}
        }
        let start = rng.below(2100) - 50;
        let wanted = w(start, start + 1 + rng.below(90));
        let skip = (rng.below(4) == 0).then_some(id.as_str());
        let capacity = 1 + rng.below(4) as usize;
        let all = busy(index.slots(), now, skip);
        let mut conflicts: Vec<Window> = all
            .iter()
            .copied()
            .filter(|x| x.overlaps(&wanted))
            .collect();
        conflicts.sort();
        let mut got = index.busy_within(wanted, now, skip);
        got.sort();
        assert_eq!(got, conflicts, "step {step}: overlaps of {wanted:?}");
        assert_eq!(
            max_overlap(&got, wanted),
            max_overlap(&all, wanted),
            "step {step}"
        );
        let (earliest, latest) = (
            now + Duration::minutes(rng.below(60)),
            now + Duration::minutes(3000),
        );
        let want = free_windows(&all, capacity, wanted, earliest, latest, 3);
        let got = index.suggest(capacity, wanted, earliest, latest, 3, now, skip);
        assert_eq!(
            got, want,
            "step {step}: suggestions for {wanted:?} at capacity {capacity}"
        );
    }
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

fn registered(capacity: u32, max_duration_s: u64, horizon_s: u64) -> ServerSchedule {
    let spec = ServerSpec {
        id: "srv-1".into(),
        name: "Server one".into(),
        capacity: Some(capacity),
        max_duration_s: Some(max_duration_s),
        horizon_s: Some(horizon_s),
        carriers: vec![Carrier::rtsp("carrier-a", "rtsp://127.0.0.2:8554")],
        ..ServerSpec::default()
    };
    let mut s = ServerSchedule::default();
    let command = Command {
        now: at(0),
        actor: operator(),
        kind: CommandKind::RegisterServer(spec),
    };
    let event = s.decide(command).expect("a valid server");
    s.apply(event);
    s
}

/// The state change of each event the old way: a map by id, then `retain` of what is open.
fn apply_the_old_way(slots: &mut BTreeMap<String, Slot>, event: &ScheduleEvent) {
    match event.clone() {
        ScheduleEvent::ReservationAccepted {
            reservation_id,
            owner,
            start,
            end,
            opens_at,
            closes_at,
            stream_key_hash,
            ..
        } => {
            let slot = Slot {
                reservation_id: reservation_id.clone(),
                owner,
                start,
                end,
                opens_at,
                closes_at,
                stream_key_hash,
            };
            slots.insert(reservation_id, slot);
        }
        ScheduleEvent::ReservationCancelled { reservation_id, .. } => {
            slots.remove(&reservation_id);
        }
        ScheduleEvent::ReservationRescheduled {
            reservation_id,
            start,
            end,
            opens_at,
            closes_at,
            ..
        } => {
            if let Some(slot) = slots.get_mut(&reservation_id) {
                (slot.start, slot.end) = (start, end);
                (slot.opens_at, slot.closes_at) = (opens_at, closes_at);
            }
        }
        _ => {}
    }
    slots.retain(|_, slot| slot.closes_at > event.at());
}

/// What the old `fit` answered: `None` when `wanted` fits, else the conflicts and suggestions.
fn fit_the_old_way(
    slots: &BTreeMap<String, Slot>,
    settings: &ServerSettings,
    now: DateTime<Utc>,
    wanted: Window,
    skip: Option<&str>,
) -> Option<(Vec<Window>, Vec<Window>)> {
    let busy = busy(slots, now, skip);
    let capacity = settings.capacity as usize;
    if max_overlap(&busy, wanted) < capacity {
        return None;
    }
    let mut conflicts: Vec<Window> = busy
        .iter()
        .copied()
        .filter(|b| b.overlaps(&wanted))
        .collect();
    conflicts.sort_unstable();
    let seconds = |s: u64| Duration::seconds(s as i64);
    let earliest = now + seconds(settings.min_lead_s);
    let latest = now + seconds(settings.horizon_s);
    let suggestions = free_windows(&busy, capacity, wanted, earliest, latest, 3);
    Some((conflicts, suggestions))
}

/// Book, reschedule, cancel, time passing and changes of capacity or maximum length, through
/// the aggregate: every decision must be the one the walk over every slot made, and every
/// state the one the old `apply` left. Applying an event twice must change nothing.
#[test]
fn every_decision_is_the_one_the_walk_over_every_slot_made() {
    let mut rng = Rng(0x00d5_1075_ca57);
    let mut s = registered(2, 6 * 3600, 3 * 86_400);
    let mut old: BTreeMap<String, Slot> = BTreeMap::new();
    let mut now = at(0);
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    for step in 0..3000 {
        if rng.below(4) == 0 {
            now += Duration::minutes(rng.below(30));
        }
        let id = format!("r{}", rng.below(120));
        // Mostly within a day (so slots crowd), sometimes too close, too far, or too long.
        let start = now + Duration::minutes(rng.below(1440)) + Duration::seconds(rng.below(60));
        let length = if rng.below(15) == 0 {
            Duration::minutes(60 + rng.below(420))
        } else {
            Duration::minutes(5 + rng.below(85))
        };
        let held = old.get(&id).cloned();
        let kind = match rng.below(20) {
            0..=9 => CommandKind::RequestReservation {
                reservation_id: id.clone(),
                start,
                end: start + length,
                title: None,
                stream_key_hash: format!("hash-{id}"),
                stream_key_digest: None,
                source: None,
            },
            // A third of reschedules keep the start and move the end (as a running slot may).
            10..=13 => {
                let start = match &held {
                    Some(slot) if rng.below(3) == 0 => slot.start,
                    _ => start,
                };
                CommandKind::RescheduleReservation {
                    reservation_id: id.clone(),
                    start,
                    end: start + length,
                }
            }
            14..=16 => CommandKind::CancelReservation {
                reservation_id: id.clone(),
            },
            17 => CommandKind::UpdateServer(ServerPatch {
                capacity: Some(1 + rng.below(4) as u32),
                ..ServerPatch::default()
            }),
            18 => CommandKind::UpdateServer(ServerPatch {
                max_duration_s: Some(3600 * (1 + rng.below(8) as u64)),
                ..ServerPatch::default()
            }),
            _ => continue,
        };
        let actor = match kind {
            CommandKind::UpdateServer(_) => operator(),
            _ => alice(),
        };
        let settings = s.settings().expect("registered").clone();
        let decided = s.decide(Command { now, actor, kind });
        let event = match decided {
            Ok(event) => event,
            Err(err) => {
                // Only the rules on the window itself and the reservation's presence refuse
                // outright; the latter is a question of the map by id.
                match &err {
                    ScheduleError::Invalid { field, .. } => {
                        assert!(["start", "end"].contains(field))
                    }
                    ScheduleError::ReservationNotFound => assert!(held.is_none(), "step {step}"),
                    ScheduleError::ReservationNotActive => {
                        assert!(held.is_some_and(|h| h.end <= now), "step {step}")
                    }
                    other => panic!("step {step}: {other:?}"),
                }
                *seen.entry("refused outright").or_default() += 1;
                continue;
            }
        };
        let rejected = |conflicts: &Vec<Window>, suggestions: &Vec<Window>| {
            Some((conflicts.clone(), suggestions.clone()))
        };
        let (kind, asked) = match &event {
            ScheduleEvent::ReservationAccepted { start, end, .. } => {
                ("accepted", Some((Window::new(*start, *end), None, None)))
            }
            ScheduleEvent::ReservationRejected {
                start,
                end,
                conflicts,
                suggestions,
                ..
            } => (
                "rejected",
                Some((
                    Window::new(*start, *end),
                    None,
                    rejected(conflicts, suggestions),
                )),
            ),
            ScheduleEvent::ReservationRescheduled { start, end, .. } => (
                "rescheduled",
                Some((Window::new(*start, *end), Some(id.as_str()), None)),
            ),
            ScheduleEvent::RescheduleRejected {
                start,
                end,
                conflicts,
                suggestions,
                ..
            } => (
                "reschedule rejected",
                Some((
                    Window::new(*start, *end),
                    Some(id.as_str()),
                    rejected(conflicts, suggestions),
                )),
            ),
            ScheduleEvent::ReservationCancelled { .. } => ("cancelled", None),
            ScheduleEvent::ServerUpdated { .. } => ("server updated", None),
            other => panic!("step {step}: {other:?}"),
        };
        *seen.entry(kind).or_default() += 1;
        if let Some((wanted, skip, answer)) = asked {
            let want = fit_the_old_way(&old, &settings, now, wanted, skip);
            assert_eq!(answer, want, "step {step}: {event:?}");
        }
        s.apply(event.clone());
        apply_the_old_way(&mut old, &event);
        assert_eq!(s.slots(), &old, "step {step}: state after {event:?}");
        if step % 7 == 0 {
            let once = s.clone();
            s.apply(event.clone());
            assert_eq!(s, once, "step {step}: applying {event:?} twice");
        }
    }
    let back: ServerSchedule = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    // The run went through every kind of decision, more than a few times each.
    for kind in [
        "accepted",
        "rejected",
        "rescheduled",
        "reschedule rejected",
        "cancelled",
        "server updated",
        "refused outright",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) >= 20, "{seen:?}");
    }
}

/// One server with 10,000 future slots of 5 minutes, 5 minutes apart, and a week-long slot
/// after them all: a booking, a refusal with its suggestions and a reschedule each read a
/// few index entries, not the schedule (an order by start alone would read back a week).
#[test]
fn a_decision_on_ten_thousand_slots_reads_a_neighbourhood() {
    let mut s = registered(1, 7 * 86_400, 90 * 86_400);
    let accepted =
        |id: &str, start: DateTime<Utc>, end: DateTime<Utc>| ScheduleEvent::ReservationAccepted {
            at: at(0),
            reservation_id: id.to_string(),
            owner: "alice".into(),
            title: None,
            start,
            end,
            opens_at: start - Duration::seconds(30),
            closes_at: end + Duration::seconds(10),
            stream_key_hash: "h".into(),
            stream_key_digest: None,
            source: None,
        };
    for i in 0..10_000 {
        let start = at(60 + 10 * i);
        s.apply(accepted(
            &format!("s{i}"),
            start,
            start + Duration::minutes(5),
        ));
    }
    s.apply(accepted("week", at(200_000), at(200_000 + 7 * 1440)));
    assert_eq!(s.slots().len(), 10_001);
    let ask = |kind: CommandKind| {
        take_examined();
        let event = s.decide(Command {
            now: at(0),
            actor: alice(),
            kind,
        });
        (event.expect("a valid command"), take_examined())
    };
    let request = |a: i64, b: i64| CommandKind::RequestReservation {
        reservation_id: "new".into(),
        start: at(a),
        end: at(b),
        title: None,
        stream_key_hash: "h".into(),
        stream_key_digest: None,
        source: None,
    };
    // Into a gap in the middle: accepted, having read the slots either side.
    let (event, read) = ask(request(50_005, 50_010));
    assert!(
        matches!(event, ScheduleEvent::ReservationAccepted { .. }),
        "{event:?}"
    );
    assert!(read <= 4, "read {read}");
    // Across a slot: refused, and the nearest gaps suggested.
    let (event, read) = ask(request(50_002, 50_007));
    match event {
        ScheduleEvent::ReservationRejected {
            conflicts,
            suggestions,
            ..
        } => {
            assert_eq!(conflicts, vec![w(50_000, 50_005)]);
            assert_eq!(
                suggestions,
                vec![w(50_005, 50_010), w(49_995, 50_000), w(50_015, 50_020)]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(read <= 20, "read {read}");
    // A slot moved onto its neighbour: refused the same way, without reading its own.
    let (event, read) = ask(CommandKind::RescheduleReservation {
        reservation_id: "s5000".into(),
        start: at(50_008),
        end: at(50_013),
    });
    assert!(
        matches!(event, ScheduleEvent::RescheduleRejected { .. }),
        "{event:?}"
    );
    assert!(read <= 20, "read {read}");
    // Applying an event reads nothing: no walk, and closed slots leave from the front.
    s.apply(ScheduleEvent::ReservationCancelled {
        at: at(66),
        reservation_id: "s5000".into(),
        by: alice(),
    });
    assert_eq!(take_examined(), 0);
    assert_eq!(
        s.slots().len(),
        9_999,
        "s0 closed (65 min 10 s), s5000 cancelled"
    );
}
