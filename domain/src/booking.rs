//! Interval arithmetic for the booking decision: half-open windows, the greatest overlap a
//! candidate would see, and the nearest free windows to suggest after a refusal.
//!
//! Contract: pure functions over slices, no panic on any input (arithmetic past chrono's range
//! drops the candidate it would have made). [`max_overlap`] and [`free_windows`] are the
//! definitions, written to be read, not to be fast; [`free_windows_near`] is the same answer in
//! O(m log m), which [`crate::slot_index`] asks with only the slots near the wanted window.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A half-open interval `[start, end)`: back-to-back windows do not overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self { start, end }
    }

    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The greatest number of `slots` that cover one instant inside `candidate`.
pub fn max_overlap(slots: &[Window], candidate: Window) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for slot in slots.iter().filter(|s| s.overlaps(&candidate)) {
        edges.push((slot.start.max(candidate.start), 1));
        edges.push((slot.end.min(candidate.end), -1));
    }
    // At equal instants an end sorts before a start: `[a, t)` and `[t, b)` never meet.
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Up to `limit` windows of `wanted`'s length, nearest to `wanted.start` first (of two equally
/// near, the earlier), in which fewer than `capacity` of `slots` overlap at every instant,
/// starting within `[earliest, latest]`.
///
/// Feasibility only changes where a window edge meets a slot edge, so the nearest free
/// windows start at `earliest`, at a slot's end, or end at a slot's start: those are the only
/// candidates tried.
///
/// This is the definition, kept as plain as it reads: each candidate is checked against every
/// slot, O(n²) on a crowded schedule. The aggregate asks [`crate::slot_index::SlotIndex`],
/// which gives the same answer through [`free_windows_near`]; the tests hold the two together.
pub fn free_windows(
    slots: &[Window],
    capacity: usize,
    wanted: Window,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    limit: usize,
) -> Vec<Window> {
    let length = wanted.duration();
    let starts = candidates(slots, wanted, earliest, latest, Duration::MAX);
    let mut found: Vec<Window> = Vec::new();
    for start in starts {
        if found.len() == limit {
            break;
        }
        let Some(end) = start.checked_add_signed(length) else {
            continue;
        };
        let window = Window::new(start, end);
        if !found.contains(&window) && max_overlap(slots, window) < capacity {
            found.push(window);
        }
    }
    found
}

/// The candidate starts within `[earliest, latest]` and within `radius` of `wanted.start`,
/// nearest first (of two equally near, the earlier), without repeats.
fn candidates(
    slots: &[Window],
    wanted: Window,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    radius: Duration,
) -> Vec<DateTime<Utc>> {
    let length = wanted.duration();
    let mut starts: Vec<DateTime<Utc>> = vec![wanted.start, earliest];
    for slot in slots {
        starts.push(slot.end);
        // Out of chrono's range is out of `[earliest, latest]` too: dropping it is exact.
        starts.extend(slot.start.checked_sub_signed(length));
    }
    starts.retain(|s| *s >= earliest && *s <= latest && (*s - wanted.start).abs() <= radius);
    starts.sort_unstable_by_key(|s| ((*s - wanted.start).abs(), *s));
    starts.dedup();
    starts
}

/// [`free_windows`] among the candidates that start at most `radius` from `wanted.start`: the
/// same windows in the same order as far as they go. A caller that hands over only the slots
/// near `wanted` (every slot that ends or starts within `radius` plus `wanted`'s length of
/// `wanted.start`, and every slot overlapping a window that starts within `radius` of it)
/// gets the answer `free_windows` would give over all of them, up to that radius.
///
/// O(m log m) for m slots, however crowded: the stretches where `capacity` slots already
/// overlap are swept once, and each candidate is a binary search among them.
pub fn free_windows_near(
    slots: &[Window],
    capacity: usize,
    wanted: Window,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    limit: usize,
    radius: Duration,
) -> Vec<Window> {
    if capacity == 0 {
        // `max_overlap` is never below zero: nothing fits, as the definition says.
        return Vec::new();
    }
    let length = wanted.duration();
    let full = full_stretches(slots, capacity);
    let mut found: Vec<Window> = Vec::new();
    for start in candidates(slots, wanted, earliest, latest, radius) {
        if found.len() == limit {
            break;
        }
        let Some(end) = start.checked_add_signed(length) else {
            continue;
        };
        let window = Window::new(start, end);
        // The first full stretch that ends after the window starts is the only one that can
        // meet it. An empty window meets nothing, as `max_overlap` counts it.
        let i = full.partition_point(|f| f.end <= window.start);
        let meets = window.start < window.end && full.get(i).is_some_and(|f| f.start < window.end);
        if !meets && !found.contains(&window) {
            found.push(window);
        }
    }
    found
}

/// The maximal stretches, in time order and disjoint, where at least `capacity` (≥ 1) of
/// `slots` overlap: a window fits exactly when it meets none of them.
fn full_stretches(slots: &[Window], capacity: usize) -> Vec<Window> {
    let mut edges: Vec<(DateTime<Utc>, isize)> = Vec::with_capacity(slots.len() * 2);
    for slot in slots.iter().filter(|s| s.start < s.end) {
        edges.push((slot.start, 1));
        edges.push((slot.end, -1));
    }
    edges.sort_unstable();
    let mut stretches = Vec::new();
    let (mut count, mut open) = (0isize, None);
    let mut i = 0;
    while let Some(&(at, _)) = edges.get(i) {
        // Every edge at one instant before looking: the count is then the overlap on
        // `[at, next edge)`, so back-to-back slots never make a stretch on their own.
        while let Some(&(_, step)) = edges.get(i).filter(|(t, _)| *t == at) {
            count += step;
            i += 1;
        }
        let full = usize::try_from(count).is_ok_and(|c| c >= capacity);
        match (open, full) {
            (None, true) => open = Some(at),
            (Some(from), false) => {
                stretches.push(Window::new(from, at));
                open = None;
            }
            _ => {}
        }
    }
    stretches
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + Duration::minutes(minute)
    }

    fn w(a: i64, b: i64) -> Window {
        Window::new(at(a), at(b))
    }

    #[test]
    fn back_to_back_windows_do_not_overlap() {
        assert!(!w(0, 10).overlaps(&w(10, 20)));
        assert!(w(0, 10).overlaps(&w(9, 20)));
        assert_eq!(max_overlap(&[w(0, 10), w(20, 30)], w(10, 20)), 0);
    }

    #[test]
    fn overlap_counts_the_busiest_instant_not_the_number_of_neighbours() {
        // Two slots inside the candidate that never meet each other: busiest instant is 1.
        assert_eq!(max_overlap(&[w(0, 10), w(10, 20)], w(0, 20)), 1);
        assert_eq!(max_overlap(&[w(0, 10), w(5, 20), w(8, 9)], w(0, 20)), 3);
        assert_eq!(max_overlap(&[w(0, 10), w(5, 20), w(8, 9)], w(10, 20)), 1);
    }

    #[test]
    fn suggestions_are_nearest_free_windows_of_the_same_length() {
        let slots = [w(0, 30), w(40, 60)];
        let got = free_windows(&slots, 1, w(10, 20), at(-100), at(1000), 3);
        // Ends at the first slot's start, starts at its end, starts at the second's end.
        assert_eq!(got, vec![w(-10, 0), w(30, 40), w(60, 70)]);
    }

    #[test]
    fn suggestions_respect_the_earliest_allowed_start_and_the_horizon() {
        let slots = [w(0, 30)];
        let got = free_windows(&slots, 1, w(10, 20), at(-5), at(30), 3);
        assert_eq!(got, vec![w(30, 40)]);
        assert!(free_windows(&slots, 1, w(10, 20), at(-5), at(29), 3).is_empty());
    }

    #[test]
    fn with_capacity_two_a_single_neighbour_leaves_room() {
        let slots = [w(0, 30), w(10, 20)];
        let got = free_windows(&slots, 2, w(12, 18), at(0), at(100), 2);
        // Equally near on both sides: the earlier comes first.
        assert_eq!(got, vec![w(4, 10), w(20, 26)]);
    }

    #[test]
    fn the_fast_search_gives_the_definitions_answer_on_edge_cases() {
        let slots = [
            w(0, 10),
            w(10, 20),
            w(5, 15),
            w(30, 40),
            w(30, 35),
            w(50, 50),
        ];
        let cases = [
            // Back-to-back slots are never full together; two overlapping ones are at 2.
            (2, w(12, 17)),
            (1, w(12, 17)),
            (3, w(0, 40)),
            // Nothing fits under no capacity; an empty or inverted window meets nothing.
            (0, w(12, 17)),
            (1, w(12, 12)),
            (1, w(17, 12)),
        ];
        for (capacity, wanted) in cases {
            for limit in [0, 1, 3, 10] {
                let want = free_windows(&slots, capacity, wanted, at(-30), at(80), limit);
                let got = free_windows_near(
                    &slots,
                    capacity,
                    wanted,
                    at(-30),
                    at(80),
                    limit,
                    Duration::MAX,
                );
                assert_eq!(got, want, "capacity {capacity}, {wanted:?}, limit {limit}");
            }
        }
        assert_eq!(
            full_stretches(&slots, 2),
            vec![w(5, 15), w(30, 35)],
            "a stretch ends where the overlap drops, back-to-back or not"
        );
    }
}
