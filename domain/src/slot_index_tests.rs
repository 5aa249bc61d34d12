use chrono::TimeZone;

use super::*;
use crate::booking::{free_windows, max_overlap};

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
    assert_eq!(
        index.busy_within(w(0, 12), at(15), None),
        vec![w(5, 65), w(10, 20)]
    );
}

#[test]
fn the_longest_length_shrinks_when_the_long_slot_goes() {
    let mut index = SlotIndex::default();
    index.insert(slot("long", 0, 600));
    index.insert(slot("short", 700, 710));
    assert_eq!(index.longest(), Duration::minutes(600));
    index.remove("long");
    assert_eq!(index.longest(), Duration::minutes(10));
    // Moving a slot (a reschedule) is a replace: the old place is gone from every order.
    index.insert(slot("short", 800, 805));
    assert_eq!(index.longest(), Duration::minutes(5));
    assert_eq!(index.busy_within(w(700, 710), at(-100), None), vec![]);
    assert_eq!(
        index.busy_within(w(800, 801), at(-100), None),
        vec![w(800, 805)]
    );
    assert_eq!(index.slots().len(), 1);
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
    let back: SlotIndex = serde_json::from_value(json).unwrap();
    assert_eq!(back, index, "serialized as the slots, rebuilt on load");
}

#[test]
fn a_decision_on_ten_thousand_slots_looks_at_a_handful() {
    let mut index = SlotIndex::default();
    for i in 0..10_000 {
        index.insert(slot(&format!("s{i}"), i * 10, i * 10 + 10));
    }
    // A window in the middle: the slots examined are those starting within the longest
    // slot's length before it, up to its end.
    let examined = index.near(at(50_000), at(50_005), at(0), None);
    assert!(examined.len() <= 2, "{examined:?}");
    assert_eq!(
        index.busy_within(w(50_000, 50_005), at(0), None),
        vec![w(50_000, 50_010)]
    );
    // A refusal's suggestions (capacity 1, fully booked around it) look nearby only.
    let got = index.suggest(1, w(50_000, 50_005), at(0), at(1_000_000), 3, at(0), None);
    assert_eq!(got, vec![w(100_000, 100_005)]);
}

/// A small deterministic generator (xorshift), so the test needs no dependency.
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

/// Every query the decision makes, against the same question asked of all slots the old way
/// (`busy` = every slot not ended by `now`, then `max_overlap` and `free_windows` over it).
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
        let all: Vec<Window> = index
            .slots()
            .values()
            .filter(|s| s.end > now && Some(s.reservation_id.as_str()) != skip)
            .map(|s| Window::new(s.start, s.end))
            .collect();
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
