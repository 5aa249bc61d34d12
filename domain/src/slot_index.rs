//! The open and future slots of one server, indexed for the booking decision.
//!
//! Contract: [`SlotIndex`] owns the slots by reservation id and keeps two orders beside them:
//! by start (for overlap queries) and by `closes_at` (so closed slots leave from the front,
//! never by a walk over all of them). Every operation is O(log n), and a query for the slots
//! overlapping a window is O(log n + k), where k counts the slots that start within the longest
//! slot's length before the window's end: the index also keeps the multiset of slot lengths,
//! so the longest is known exactly after any removal. (An interval tree would bound k by the
//! overlaps alone; with lengths capped by `max_duration_s` and slots that mostly do not
//! overlap, the two orders and the longest length do the same work with std's B-trees.)
//! Serialized as the plain map by id; the orders are rebuilt on load.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::booking::{free_windows_near, Window};
use crate::schedule::Slot;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, Slot>", into = "BTreeMap<String, Slot>")]
pub struct SlotIndex {
    by_id: BTreeMap<String, Slot>,
    by_start: BTreeSet<(DateTime<Utc>, String)>,
    by_close: BTreeSet<(DateTime<Utc>, String)>,
    /// How many slots have each length (`end - start`).
    lengths: BTreeMap<Duration, usize>,
}

impl From<BTreeMap<String, Slot>> for SlotIndex {
    fn from(slots: BTreeMap<String, Slot>) -> Self {
        let mut index = Self::default();
        for slot in slots.into_values() {
            index.insert(slot);
        }
        index
    }
}

impl From<SlotIndex> for BTreeMap<String, Slot> {
    fn from(index: SlotIndex) -> Self {
        index.by_id
    }
}

impl SlotIndex {
    /// The slots by reservation id.
    pub fn slots(&self) -> &BTreeMap<String, Slot> {
        &self.by_id
    }

    pub fn get(&self, reservation_id: &str) -> Option<&Slot> {
        self.by_id.get(reservation_id)
    }

    /// Adds `slot`, replacing the slot of the same reservation if there is one.
    pub fn insert(&mut self, slot: Slot) {
        self.remove(&slot.reservation_id);
        let id = slot.reservation_id.clone();
        self.by_start.insert((slot.start, id.clone()));
        self.by_close.insert((slot.closes_at, id.clone()));
        *self.lengths.entry(slot.end - slot.start).or_default() += 1;
        self.by_id.insert(id, slot);
    }

    pub fn remove(&mut self, reservation_id: &str) -> Option<Slot> {
        let slot = self.by_id.remove(reservation_id)?;
        let id = slot.reservation_id.clone();
        self.by_start.remove(&(slot.start, id.clone()));
        self.by_close.remove(&(slot.closes_at, id));
        let length = slot.end - slot.start;
        if let Some(count) = self.lengths.get_mut(&length) {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&length);
            }
        }
        Some(slot)
    }

    /// Changes what the orders do not depend on (the stream key).
    pub fn set_key_hash(&mut self, reservation_id: &str, hash: String) {
        if let Some(slot) = self.by_id.get_mut(reservation_id) {
            slot.stream_key_hash = hash;
        }
    }

    /// Drops every slot whose window has closed by `at`.
    pub fn prune_closed(&mut self, at: DateTime<Utc>) {
        while let Some((closes_at, id)) = self.by_close.first() {
            if *closes_at > at {
                break;
            }
            let id = id.clone();
            self.remove(&id);
        }
    }

    /// The longest slot held, zero when empty.
    fn longest(&self) -> Duration {
        self.lengths
            .last_key_value()
            .map_or(Duration::zero(), |(length, _)| *length)
    }

    /// Slots starting in `[from, to)`, in start order.
    fn starting(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> impl Iterator<Item = &Slot> {
        let range = (
            Bound::Included((from, String::new())),
            Bound::Excluded((to, String::new())),
        );
        let valid = from < to;
        valid
            .then(|| self.by_start.range(range))
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.by_id.get(id))
    }

    /// Windows of the slots that overlap `window`, have not ended by `now`, and are not
    /// `skip`'s: what a decision about `window` has to count.
    pub fn busy_within(
        &self,
        window: Window,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> Vec<Window> {
        self.near(window.start, window.end, now, skip)
            .into_iter()
            .filter(|w| w.overlaps(&window))
            .collect()
    }

    /// Windows of the slots (not ended by `now`, not `skip`'s) that start in
    /// `[from - longest, to)`: every slot that overlaps `[from, to)`, and a few that do not.
    fn near(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> Vec<Window> {
        self.starting(from - self.longest(), to)
            .filter(|s| s.end > now && Some(s.reservation_id.as_str()) != skip)
            .map(|s| Window::new(s.start, s.end))
            .collect()
    }

    /// The nearest free windows of `wanted`'s length, exactly as [`crate::free_windows`] finds
    /// them over every busy slot, but looking only as far from `wanted.start` as it must: the
    /// radius doubles until `limit` are found within it or it spans `[earliest, latest]`.
    #[allow(clippy::too_many_arguments)]
    pub fn suggest(
        &self,
        capacity: usize,
        wanted: Window,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> Vec<Window> {
        let length = wanted.duration();
        let span = (earliest - wanted.start)
            .abs()
            .max((latest - wanted.start).abs());
        let mut radius = (length.max(self.longest()) * 4).max(Duration::minutes(1));
        loop {
            // Candidates within the radius come from slots ending or starting near it, and
            // are checked against slots overlapping them: all start in this range.
            let from = wanted.start - radius;
            let to = wanted.start + radius + length + Duration::nanoseconds(1);
            let near = self.near(from, to, now, skip);
            let found = free_windows_near(&near, capacity, wanted, earliest, latest, limit, radius);
            if found.len() >= limit || radius >= span {
                return found;
            }
            radius = radius * 2;
        }
    }
}

#[cfg(test)]
#[path = "slot_index_tests.rs"]
mod tests;
