//! Who may hold an ingest connection before proving a stream key: a few per source address,
//! a bounded number in all, and never so many that a slot's real publisher is locked out.
//!
//! Contract: only connections that have not reached `RECORD` are counted (a deployment runs
//! many real publishers from one address: once recording, a connection is the reservation's
//! publisher and its place here is given back). A new connection is turned away when its
//! source already holds `per_addr` of them. When `total` are held, the newcomer is let in in
//! place of the oldest connection of the source that holds the most, provided that source
//! holds more than the newcomer's does; otherwise it is turned away. So whoever floods the
//! network from a few sources crowds out only themselves, and a publisher arriving from an
//! address of its own always finds room, however many sources the flood comes from, as long
//! as one of them holds two or more.
//!
//! IPv6 sources are counted by their /64, the block one host is usually given: a host can use
//! every address of it. The [`Book`] is pure (no clock, no I/O, unit-tested); [`Limits`]
//! wraps it for the accept loops and tells an evicted connection by its cancellation token.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// A source as counted: an IPv4 address, or an IPv6 address's /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Why a connection was turned away at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnedAway {
    /// Its source already holds `per_addr` connections that have not reached RECORD.
    PerSource,
    /// `total` are held and no source holds more than the newcomer's.
    Full,
}

impl TurnedAway {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerSource => "unauth_per_source",
            Self::Full => "unauth_full",
        }
    }
}

/// The connections held, by source, oldest first. Ids are the caller's and unique.
#[derive(Debug)]
pub struct Book {
    per_addr: usize,
    total: usize,
    by_source: HashMap<Source, VecDeque<u64>>,
    held: usize,
}

impl Book {
    /// `per_addr` and `total` of at least 1.
    pub fn new(per_addr: usize, total: usize) -> Self {
        Self {
            per_addr: per_addr.max(1),
            total: total.max(1),
            by_source: HashMap::new(),
            held: 0,
        }
    }

    /// Lets connection `id` from `source` in, returning the connection it takes the place of,
    /// if any; or says why not.
    pub fn admit(&mut self, source: Source, id: u64) -> Result<Option<u64>, TurnedAway> {
        let own = self.by_source.get(&source).map_or(0, VecDeque::len);
        if own >= self.per_addr {
            return Err(TurnedAway::PerSource);
        }
        let mut evicted = None;
        if self.held >= self.total {
            // The source holding the most; between equals, the one whose oldest is oldest
            // (ids grow with time).
            let fullest = self
                .by_source
                .iter()
                .filter_map(|(s, ids)| Some((*s, ids.len(), *ids.front()?)))
                .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
            match fullest {
                Some((victim, count, _)) if count > own => {
                    evicted = self.remove_oldest(victim);
                }
                _ => return Err(TurnedAway::Full),
            }
        }
        self.by_source.entry(source).or_default().push_back(id);
        self.held += 1;
        Ok(evicted)
    }

    /// Connection `id` reached RECORD or closed: its place is free. Unknown ids (already
    /// evicted) are ignored.
    pub fn release(&mut self, source: Source, id: u64) {
        let Some(ids) = self.by_source.get_mut(&source) else {
            return;
        };
        if let Some(at) = ids.iter().position(|&held| held == id) {
            ids.remove(at);
            self.held -= 1;
        }
        if ids.is_empty() {
            self.by_source.remove(&source);
        }
    }

    /// Connections held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    fn remove_oldest(&mut self, source: Source) -> Option<u64> {
        let ids = self.by_source.get_mut(&source)?;
        let oldest = ids.pop_front()?;
        self.held -= 1;
        if ids.is_empty() {
            self.by_source.remove(&source);
        }
        Some(oldest)
    }
}

/// The book shared by every listener of the streamer, with a way to tell each held
/// connection it was evicted.
#[derive(Debug)]
pub struct Limits {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    book: Book,
    next_id: u64,
    evict: HashMap<u64, CancellationToken>,
}

impl Limits {
    pub fn new(per_addr: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                book: Book::new(per_addr, total),
                next_id: 0,
                evict: HashMap::new(),
            }),
        })
    }

    /// A place for a connection from `ip`, held until the [`Place`] is dropped; whether it
    /// took someone else's place; or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Place, bool), TurnedAway> {
        let source = Source::of(ip);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next_id;
        let evicted = state.book.admit(source, id)?;
        state.next_id += 1;
        let token = CancellationToken::new();
        state.evict.insert(id, token.clone());
        if let Some(victim) = evicted {
            if let Some(token) = state.evict.remove(&victim) {
                token.cancel();
            }
        }
        let place = Place {
            limits: self.clone(),
            source,
            id,
            evicted: token,
        };
        Ok((place, evicted.is_some()))
    }

    /// Connections held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.book.held()
    }
}

/// One connection's place among those not yet recording; given back when dropped.
#[derive(Debug)]
pub struct Place {
    limits: Arc<Limits>,
    source: Source,
    id: u64,
    evicted: CancellationToken,
}

impl Place {
    /// Cancelled when a newcomer took this place.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self
            .limits
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.evict.remove(&self.id);
        state.book.release(self.source, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_source_gets_its_share_and_no_more() {
        let mut book = Book::new(2, 100);
        assert_eq!(book.admit(v4(1), 0), Ok(None));
        assert_eq!(book.admit(v4(1), 1), Ok(None));
        assert_eq!(book.admit(v4(1), 2), Err(TurnedAway::PerSource));
        // Another source is not affected.
        assert_eq!(book.admit(v4(2), 3), Ok(None));
        // A place given back can be taken again.
        book.release(v4(1), 0);
        assert_eq!(book.admit(v4(1), 4), Ok(None));
        assert_eq!(book.held(), 3);
    }

    #[test]
    fn when_full_a_newcomer_takes_the_oldest_place_of_the_fullest_source() {
        let mut book = Book::new(8, 4);
        for id in 0..3 {
            book.admit(v4(1), id).unwrap();
        }
        book.admit(v4(2), 3).unwrap();
        // Full: the real publisher from a source of its own gets in, in place of source 1's
        // oldest.
        assert_eq!(book.admit(v4(9), 4), Ok(Some(0)));
        assert_eq!(book.held(), 4);
        // Source 1 (2 held) cannot take from anyone holding as many or fewer than itself.
        assert_eq!(book.admit(v4(1), 5), Err(TurnedAway::Full));
        // Source 2 (1 held) can take from source 1 (2 held).
        assert_eq!(book.admit(v4(2), 6), Ok(Some(1)));
        // Now every source holds 1 or 2: a source holding 2 is turned away.
        assert_eq!(book.admit(v4(2), 7), Err(TurnedAway::Full));
        // The evicted id is gone: releasing it changes nothing.
        book.release(v4(1), 0);
        assert_eq!(book.held(), 4);
    }

    #[test]
    fn a_flood_from_many_sources_never_locks_out_a_new_source() {
        // 1,000 connections from 125 sources, 8 each at most, against 256 places.
        let mut book = Book::new(8, 256);
        let mut id = 0;
        for round in 0..8 {
            for source in 0..125u8 {
                let _ = book.admit(v4(source), id);
                id += 1;
                assert!(book.held() <= 256, "round {round}");
            }
        }
        assert_eq!(book.held(), 256);
        let publisher = Source::of(IpAddr::from([192, 0, 2, 7]));
        assert!(matches!(book.admit(publisher, id), Ok(Some(_))));
        let held_by_publisher = id;
        id += 1;
        // More of the flood keeps coming, and places are given back as connections time out.
        // The publisher's one place is never taken: 256 places over 126 sources means the
        // fullest holds at least 3, and only the fullest gives up a place.
        for source in (0..125u8).cycle().take(2_000) {
            let _ = book.admit(v4(source), id);
            id += 1;
            if id % 7 == 0 {
                book.release(v4(source), id - 50);
            }
            assert_eq!(book.by_source[&publisher], [held_by_publisher]);
        }
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), v4(1));
    }

    #[tokio::test]
    async fn an_evicted_connection_is_told_and_a_dropped_place_is_given_back() {
        let limits = Limits::new(8, 2);
        let (first, took) = limits.admit(IpAddr::from([10, 0, 0, 1])).unwrap();
        assert!(!took);
        let (_second, _) = limits.admit(IpAddr::from([10, 0, 0, 1])).unwrap();
        let (third, took) = limits.admit(IpAddr::from([10, 0, 0, 2])).unwrap();
        assert!(took);
        assert!(first.evicted().is_cancelled());
        assert!(!third.evicted().is_cancelled());
        assert_eq!(limits.held(), 2);
        drop(first);
        assert_eq!(limits.held(), 2, "an evicted place was already given back");
        drop(third);
        assert_eq!(limits.held(), 1);
    }
}
