//! The open and future slots of one server, indexed for the booking decision.
//!
//! Contract: [`SlotIndex`] owns the slots by reservation id and keeps two orders beside them:
//! by start, for overlap queries, and by `closes_at`, so closed slots leave from the front and
//! never by a walk over all of them. Insert, remove and reschedule are O(log n); pruning is
//! O(log n) for each slot it drops. Pure: no clock, no I/O. It serializes as the plain map by
//! id (the JSON the aggregate always had); the orders are rebuilt on load. Slots have
//! `start < end` (`decide` accepts nothing else).
//!
//! Why the start order is split by length. A slot overlapping `[a, b)` starts in
//! `(a − its length, b)`. With one start order a query must reach back by the longest slot
//! held, so a single week-long slot would make every decision read a week of short slots.
//! Here each slot sits in the start order of its length class (lengths in `[2^c, 2^(c+1))` ns)
//! and each class reaches back by its own bound only. A slot read that does not overlap
//! `[a, b)` starts in `[a − 2^(c+1), a − 2^c]` and ends at or after `a − 2^c`, so it holds the
//! instant `a − 2^c` or the nanosecond before: per class there are at most twice the greatest
//! overlap among the slots held (no more than the highest capacity the server has had). A
//! query is O(C log n + k + 2·C·capacity), with k the slots overlapping and C the classes
//! present (lengths from a minute to 12 hours span 11; a server's slots usually fill two or
//! three). An interval tree would drop the C at the price of a hand-written balanced tree;
//! std's B-trees do this with no unsafe code and no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::booking::{free_windows_near, max_overlap, Window};

/// An accepted slot still open or in the future.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub reservation_id: String,
    pub owner: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub stream_key_hash: String,
}

impl Slot {
    pub(crate) fn window(&self) -> Window {
        Window::new(self.start, self.end)
    }
}

/// A slot's place in an order: the instant, then the reservation id to tell ties apart.
type Key = (DateTime<Utc>, String);

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, Slot>")]
pub struct SlotIndex {
    by_id: BTreeMap<String, Slot>,
    /// Per length class (module doc), each slot's start and id, mapped to its end so a query
    /// needs no lookup by id. A class without slots has no entry: queries visit only the
    /// classes present, and a long slot's reach leaves with it.
    by_start: BTreeMap<u32, BTreeMap<Key, DateTime<Utc>>>,
    by_close: BTreeSet<Key>,
}

impl Serialize for SlotIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The map by id, without the clone a `#[serde(into)]` would make.
        self.by_id.serialize(serializer)
    }
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

/// A slot's length class: `c` for a length in `[2^c, 2^(c+1))` ns. A length under 1 ns counts
/// as 1 ns and one past i64 nanoseconds (292 years) as the last class, so every slot has one.
fn class(length: Duration) -> u32 {
    let ns = length.num_nanoseconds().unwrap_or(i64::MAX).max(1);
    63 - ns.leading_zeros()
}

/// How long a slot of `class` may be: how far before a window it may start and still meet it.
fn reach(class: u32) -> Duration {
    let ns = 1i64
        .checked_shl(class + 1)
        .filter(|ns| *ns > 0)
        .unwrap_or(i64::MAX);
    Duration::nanoseconds(ns)
}

/// `t − d`, or the earliest instant chrono holds: a bound of a query, so saturating is exact.
fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, or the latest instant chrono holds.
fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn doubled(d: Duration) -> Duration {
    d.checked_mul(2).unwrap_or(Duration::MAX)
}

#[cfg(test)]
thread_local! {
    /// Index entries read by queries on this thread, for the tests that show a decision reads
    /// a neighbourhood and not the schedule (tests run one per thread).
    static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index entries queries read on this thread since the last call.
#[cfg(test)]
pub(crate) fn take_examined() -> usize {
    EXAMINED.with(|examined| examined.replace(0))
}

impl SlotIndex {
    /// The slots by reservation id.
    pub fn slots(&self) -> &BTreeMap<String, Slot> {
        &self.by_id
    }

    pub fn get(&self, reservation_id: &str) -> Option<&Slot> {
        self.by_id.get(reservation_id)
    }

    /// Adds `slot`, replacing the slot of the same reservation if there is one (so applying
    /// the same acceptance twice leaves one slot).
    pub fn insert(&mut self, slot: Slot) {
        self.remove(&slot.reservation_id);
        let id = slot.reservation_id.clone();
        self.by_start
            .entry(class(slot.end - slot.start))
            .or_default()
            .insert((slot.start, id.clone()), slot.end);
        self.by_close.insert((slot.closes_at, id.clone()));
        self.by_id.insert(id, slot);
    }

    pub fn remove(&mut self, reservation_id: &str) -> Option<Slot> {
        let slot = self.by_id.remove(reservation_id)?;
        let class = class(slot.end - slot.start);
        let key = (slot.start, slot.reservation_id.clone());
        if let Some(starts) = self.by_start.get_mut(&class) {
            starts.remove(&key);
            if starts.is_empty() {
                self.by_start.remove(&class);
            }
        }
        self.by_close.remove(&(slot.closes_at, key.1));
        Some(slot)
    }

    /// Moves a held slot to `window` with its new ingest window; a reservation no longer held
    /// (closed or cancelled) stays gone.
    pub fn reschedule(
        &mut self,
        reservation_id: &str,
        window: Window,
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) {
        if let Some(mut slot) = self.remove(reservation_id) {
            slot.start = window.start;
            slot.end = window.end;
            slot.opens_at = opens_at;
            slot.closes_at = closes_at;
            self.insert(slot);
        }
    }

    /// Changes what the orders do not depend on (the stream key).
    pub fn set_key_hash(&mut self, reservation_id: &str, hash: String) {
        if let Some(slot) = self.by_id.get_mut(reservation_id) {
            slot.stream_key_hash = hash;
        }
    }

    /// Drops every slot whose window has closed by `at`, from the front of the close order.
    pub fn prune_closed(&mut self, at: DateTime<Utc>) {
        while self
            .by_close
            .first()
            .is_some_and(|(closes_at, _)| *closes_at <= at)
        {
            if let Some((_, id)) = self.by_close.pop_first() {
                self.remove(&id);
            }
        }
    }

    /// Windows of the slots that overlap `window`, have not ended by `now`, and are not
    /// `skip`'s: what a decision about `window` has to count.
    pub fn busy_within(
        &self,
        window: Window,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> Vec<Window> {
        let (mut near, _) = self.near(window.start, window.end, now, skip);
        near.retain(|w| w.overlaps(&window));
        near
    }

    /// `None` when `wanted` fits under `capacity`; otherwise the windows it conflicts with
    /// (as [`Self::busy_within`]), in order.
    pub fn conflicts(
        &self,
        capacity: usize,
        wanted: Window,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> Option<Vec<Window>> {
        let mut conflicts = self.busy_within(wanted, now, skip);
        if max_overlap(&conflicts, wanted) < capacity {
            return None;
        }
        conflicts.sort_unstable();
        Some(conflicts)
    }

    /// Windows of the slots (not ended by `now`, not `skip`'s) that each class holds starting
    /// in `[from − the class's reach, to)`: every slot overlapping `[from, to)` and, per
    /// class, a few more (module doc). Also how many entries were read, skipped ones included.
    fn near(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        skip: Option<&str>,
    ) -> (Vec<Window>, usize) {
        let mut found = Vec::new();
        let mut read = 0;
        for (class, starts) in &self.by_start {
            let low = before(from, reach(*class));
            if low >= to {
                continue;
            }
            let range = (
                Bound::Included((low, String::new())),
                Bound::Excluded((to, String::new())),
            );
            for ((start, id), end) in starts.range(range) {
                read += 1;
                if *end > now && Some(id.as_str()) != skip {
                    found.push(Window::new(*start, *end));
                }
            }
        }
        #[cfg(test)]
        EXAMINED.with(|examined| examined.set(examined.get() + read));
        (found, read)
    }

    /// The nearest free windows of `wanted`'s length, exactly as [`crate::free_windows`] finds
    /// them over every slot not ended by `now` and not `skip`'s, but reading only as far from
    /// `wanted.start` as it must: the radius doubles until `limit` are found within it, it
    /// spans `[earliest, latest]`, or every slot is in hand. The rounds' reads add up to about
    /// twice the last one's, so a refusal costs O(m log m) for the m slots within twice the
    /// distance of the last suggestion, and O(n log n) at worst.
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
        // A candidate's window reaches `length` past its start, and the slot edge that makes
        // a candidate may sit `length` from it: reading `|length|` further covers both.
        let pad = wanted.duration().abs();
        let span = (earliest - wanted.start)
            .abs()
            .max((latest - wanted.start).abs());
        let mut radius = doubled(pad).max(Duration::minutes(1));
        loop {
            let from = before(before(wanted.start, radius), pad);
            let to = after(
                after(after(wanted.start, radius), pad),
                Duration::nanoseconds(1),
            );
            let (near, read) = self.near(from, to, now, skip);
            if read == self.by_id.len() {
                // Every slot is in hand: a wider radius would read the same, so look as far as
                // the bounds allow, once.
                radius = radius.max(span);
            }
            let found = free_windows_near(&near, capacity, wanted, earliest, latest, limit, radius);
            if found.len() >= limit || radius >= span {
                return found;
            }
            radius = doubled(radius);
        }
    }
}

#[cfg(test)]
#[path = "slot_index_tests.rs"]
mod tests;
