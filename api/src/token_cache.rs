//! Tokens looked up lately, so a request costs no query: each trusted for `CACHE_TTL`,
//! and hashes the database did not know refused for `UNKNOWN_TTL`.
//!
//! Contract: keyed by the token's hash, never the token; bounded to `CACHE_MAX` entries of
//! each kind; [`TokenCache::clear`] forgets every token (a revocation).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use slotcast_domain::Actor;

/// How long a looked-up token is trusted before asking the database again (revocation delay).
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;
/// How long a token the database did not know is refused without asking again. Short: a
/// token is random, so only a client retrying a wrong one meets this.
const UNKNOWN_TTL: Duration = Duration::from_secs(5);

/// A token looked up lately: the caller, when it was looked up, and when the token expires.
type Cached = (Actor, Instant, Option<DateTime<Utc>>);

/// Tokens looked up lately, by the token's hash; and hashes the database did not know.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, Cached>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl TokenCache {
    /// Whether `hash` was looked up and not found within `UNKNOWN_TTL`.
    pub(crate) fn known_unknown(&self, hash: &str) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown
            .get(hash)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    pub(crate) fn put_unknown(&self, hash: String) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= CACHE_MAX {
            unknown.retain(|_, at| at.elapsed() < UNKNOWN_TTL);
            if unknown.len() >= CACHE_MAX {
                unknown.clear();
            }
        }
        unknown.insert(hash, Instant::now());
    }

    pub(crate) fn get(&self, hash: &str) -> Option<Actor> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at, expires)| {
                at.elapsed() < CACHE_TTL && expires.is_none_or(|e| e > Utc::now())
            })
            .map(|(actor, _, _)| actor.clone())
    }

    pub(crate) fn put(&self, hash: String, actor: Actor, expires: Option<DateTime<Utc>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (actor, Instant::now(), expires));
    }

    /// Forgets every token: the next request of each asks the database again.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_token_is_remembered_as_unknown_for_a_short_while() {
        let cache = TokenCache::default();
        let hash = crate::auth::sha256_hex(b"sct_not-a-real-one");
        assert!(!cache.known_unknown(&hash));
        cache.put_unknown(hash.clone());
        assert!(cache.known_unknown(&hash));
        assert!(!cache.known_unknown(&crate::auth::sha256_hex(b"another")));
        // Aged past the bound: asked again.
        cache
            .unknown
            .lock()
            .unwrap()
            .insert(hash.clone(), Instant::now() - UNKNOWN_TTL);
        assert!(!cache.known_unknown(&hash));
    }
}
