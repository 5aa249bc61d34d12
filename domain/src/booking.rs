//! Interval arithmetic for the booking decision: half-open windows, the greatest overlap a
//! candidate would see, and the nearest free windows to suggest after a refusal.
//!
//! Contract: pure functions over slices; no allocation beyond the answer and one sort.

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

/// Up to `limit` windows of `wanted`'s length, nearest to `wanted.start` first, in which fewer
/// than `capacity` of `slots` overlap at every instant, starting within `[earliest, latest]`.
///
/// Feasibility only changes where a window edge meets a slot edge, so the nearest free
/// windows start at `earliest`, at a slot's end, or end at a slot's start: those are the only
/// candidates tried.
pub fn free_windows(
    slots: &[Window],
    capacity: usize,
    wanted: Window,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    limit: usize,
) -> Vec<Window> {
    free_windows_near(
        slots,
        capacity,
        wanted,
        earliest,
        latest,
        limit,
        Duration::MAX,
    )
}

/// [`free_windows`] among the candidates that start at most `radius` from `wanted.start`: the
/// same windows in the same order as far as they go, so a caller that hands over only the
/// slots near `wanted` (those starting within `radius` plus the longest slot's length before
/// it, and up to `radius` plus `wanted`'s length after it) gets the answer `free_windows`
/// would give over all of them, up to that radius.
pub fn free_windows_near(
    slots: &[Window],
    capacity: usize,
    wanted: Window,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    limit: usize,
    radius: Duration,
) -> Vec<Window> {
    let length = wanted.duration();
    let mut starts: Vec<DateTime<Utc>> = vec![wanted.start, earliest];
    for slot in slots {
        starts.push(slot.end);
        starts.push(slot.start - length);
    }
    starts.retain(|s| *s >= earliest && *s <= latest && (*s - wanted.start).abs() <= radius);
    starts.sort_unstable_by_key(|s| ((*s - wanted.start).abs(), *s));
    starts.dedup();
    // Each candidate is checked against the slots that can overlap it (found by binary search
    // in start order), not against all of them: a refusal on a crowded schedule stays
    // O(n log n), not O(n²).
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    let longest = sorted
        .iter()
        .map(Window::duration)
        .max()
        .unwrap_or_else(Duration::zero);
    let mut found: Vec<Window> = Vec::new();
    for start in starts {
        if found.len() == limit {
            break;
        }
        let window = Window::new(start, start + length);
        let from = sorted.partition_point(|s| s.start < window.start - longest);
        let to = sorted.partition_point(|s| s.start < window.end);
        let near = sorted.get(from..to).unwrap_or_default();
        if !found.contains(&window) && max_overlap(near, window) < capacity {
            found.push(window);
        }
    }
    found
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
}
