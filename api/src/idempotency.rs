//! `Idempotency-Key` for bookings: a retry with the same key gets the first answer back, stream
//! key included, and books nothing new.
//!
//! Contract: the answer is stored in the same transaction as the decision's events (the store's
//! writer inserts the [`Sealed`] row), so a key is answered exactly when its booking is
//! committed: there is no "claimed" row that a dropped request could leave behind, and a key
//! is never given up. Within this process at most one request per key is deciding
//! ([`Inflight`]): a retry that arrives meanwhile waits for it and then reads the stored
//! answer. Across processes the table's primary key lets only one transaction store an answer
//! for a key; the other's whole batch rolls back and its request is answered from the stored
//! row. A retry with a different body is refused.
//!
//! The stored answer is sealed (ChaCha20-Poly1305) with a key derived from the Idempotency-Key,
//! which is never stored, so the table holds no readable stream key; the request body is
//! compared by a hash keyed the same way, so it is no verifier of what the body held (a
//! camera's password) either. Rows expire after the configured TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key as CipherKey, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::error::ApiError;

const MAX_KEY_LEN: usize = 255;

/// One request's Idempotency-Key, as the table knows it: never the key itself.
#[derive(Clone)]
pub struct Key {
    key_hash: String,
    request_hash: String,
    cipher: ChaCha20Poly1305,
}

/// An answer sealed for the idempotency table, ready to be inserted.
pub struct Sealed {
    key_hash: String,
    request_hash: String,
    status: i32,
    nonce: Vec<u8>,
    body: Vec<u8>,
}

impl Key {
    /// `key` as `caller` sent it with `request` (the raw body).
    pub fn new(caller: &str, key: &str, request: &[u8]) -> Result<Self, ApiError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        let hash = |label: &[u8], extra: Option<&[u8]>| {
            let mut h = Sha256::new()
                .chain_update(label)
                .chain_update(caller.as_bytes())
                .chain_update(b"\0")
                .chain_update(key.as_bytes());
            if let Some(extra) = extra {
                h = h.chain_update(b"\0").chain_update(extra);
            }
            h.finalize()
        };
        let secret = hash(b"slotcast idempotency seal v1\0", None);
        Ok(Self {
            key_hash: hex::encode(hash(b"slotcast idempotency lookup v1\0", None)),
            // Keyed by the Idempotency-Key (never stored), so the stored value is no verifier
            // for what the body holds without it.
            request_hash: hex::encode(hash(b"slotcast idempotency request v2\0", Some(request))),
            cipher: ChaCha20Poly1305::new(CipherKey::from_slice(&secret)),
        })
    }

    /// Seals `body` (answered with `status`) for the table.
    pub fn seal(&self, status: u16, body: &serde_json::Value) -> Result<Sealed, ApiError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(body).map_err(ApiError::internal)?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| ApiError::internal(std::io::Error::other("answer does not seal")))?;
        Ok(Sealed {
            key_hash: self.key_hash.clone(),
            request_hash: self.request_hash.clone(),
            status: i32::from(status),
            nonce: nonce.to_vec(),
            body: sealed,
        })
    }

    /// The stored answer for this key, if one was committed; a different request under the same
    /// key is refused.
    pub async fn lookup(
        &self,
        pool: &PgPool,
    ) -> Result<Option<(u16, serde_json::Value)>, ApiError> {
        let row = sqlx::query(
            "SELECT request_hash, status, nonce, body FROM idempotency \
             WHERE key_hash = $1 AND status <> 0",
        )
        .bind(&self.key_hash)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row.try_get::<String, _>("request_hash")? != self.request_hash {
            return Err(reused());
        }
        let status: i32 = row.try_get("status")?;
        let nonce: Vec<u8> = row.try_get("nonce")?;
        let sealed: Vec<u8> = row.try_get("body")?;
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
            .map_err(|_| ApiError::BadRequest("stored answer does not open".into()))?;
        let body = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
        Ok(Some((u16::try_from(status).unwrap_or(500), body)))
    }
}

fn reused() -> ApiError {
    ApiError::Conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request".into(),
    )
}

/// Sealed answers column by column, for the store's insert (`unnest` takes one array per
/// column); it runs in the transaction that commits their decisions.
pub struct Columns {
    pub key_hash: Vec<String>,
    pub request_hash: Vec<String>,
    pub status: Vec<i32>,
    pub nonce: Vec<Vec<u8>>,
    pub body: Vec<Vec<u8>>,
}

impl Columns {
    pub fn of(answers: &[&Sealed]) -> Self {
        Self {
            key_hash: answers.iter().map(|a| a.key_hash.clone()).collect(),
            request_hash: answers.iter().map(|a| a.request_hash.clone()).collect(),
            status: answers.iter().map(|a| a.status).collect(),
            nonce: answers.iter().map(|a| a.nonce.clone()).collect(),
            body: answers.iter().map(|a| a.body.clone()).collect(),
        }
    }
}

/// The keys this process is deciding right now.
#[derive(Default)]
pub struct Inflight {
    keys: Mutex<HashMap<String, (String, watch::Receiver<()>)>>,
}

/// Whose turn it is for a key.
pub enum Turn {
    /// Decide; the key stays taken in this process until the [`Leader`] drops.
    Lead(Leader),
    /// Another request is deciding this key: wait for it to finish (the receiver's `changed`
    /// returns then), and look again.
    Wait(watch::Receiver<()>),
}

/// The request deciding a key. Dropping it (at the end of the decision, or if its task
/// panics) lets the waiters go.
pub struct Leader {
    inflight: Arc<Inflight>,
    key_hash: String,
    _done: watch::Sender<()>,
}

impl Inflight {
    /// Takes `key` for this request, or says who has it.
    pub fn enter(self: &Arc<Self>, key: &Key) -> Result<Turn, ApiError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((request_hash, done)) = keys.get(&key.key_hash) {
            if *request_hash != key.request_hash {
                return Err(reused());
            }
            return Ok(Turn::Wait(done.clone()));
        }
        let (tx, rx) = watch::channel(());
        keys.insert(key.key_hash.clone(), (key.request_hash.clone(), rx));
        Ok(Turn::Lead(Leader {
            inflight: self.clone(),
            key_hash: key.key_hash.clone(),
            _done: tx,
        }))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut keys = self.inflight.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&self.key_hash);
    }
}

/// Deletes answers older than `ttl`.
pub async fn expire(pool: &PgPool, ttl: Duration) -> Result<u64, ApiError> {
    let secs = ttl.as_secs_f64();
    Ok(
        sqlx::query("DELETE FROM idempotency WHERE created_at < now() - make_interval(secs => $1)")
            .bind(secs)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_request_with_the_key_waits_for_the_first_and_a_different_body_is_refused() {
        let inflight = Arc::new(Inflight::default());
        let key = Key::new("distributor:alice", "k1", b"{\"a\":1}").unwrap();
        let Ok(Turn::Lead(leader)) = inflight.enter(&key) else {
            panic!("the first request leads");
        };
        let same = Key::new("distributor:alice", "k1", b"{\"a\":1}").unwrap();
        let Ok(Turn::Wait(done)) = inflight.enter(&same) else {
            panic!("a retry waits");
        };
        let other = Key::new("distributor:alice", "k1", b"{\"a\":2}").unwrap();
        assert!(matches!(
            inflight.enter(&other),
            Err(ApiError::Conflict("idempotency_key_reused", _))
        ));
        // Another caller's identical key is another key.
        let bob = Key::new("distributor:bob", "k1", b"{\"a\":1}").unwrap();
        assert!(matches!(inflight.enter(&bob), Ok(Turn::Lead(_))));
        assert!(done.has_changed().is_ok(), "still deciding");
        drop(leader);
        assert!(done.has_changed().is_err(), "the waiter is let go");
        assert_eq!(inflight.len(), 0, "the key is free again");
    }

    #[test]
    fn sealed_answers_open_only_with_the_same_key() {
        let key = Key::new("c", "k", b"body").unwrap();
        let sealed = key
            .seal(201, &serde_json::json!({"stream_key": "s3cret"}))
            .unwrap();
        assert!(!String::from_utf8_lossy(&sealed.body).contains("s3cret"));
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), sealed.body.as_slice())
            .unwrap();
        assert!(String::from_utf8_lossy(&plain).contains("s3cret"));
        let other = Key::new("c", "k2", b"body").unwrap();
        assert!(other
            .cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), sealed.body.as_slice())
            .is_err());
        assert!(Key::new("c", "", b"").is_err());
        assert!(Key::new("c", "has space", b"").is_err());
    }
}
