//! `Idempotency-Key` for bookings: a retry with the same key gets the first answer back and
//! books nothing new.
//!
//! Contract: the first request claims the key (a row with status 0) before deciding; a
//! concurrent retry waits (bounded) for the first answer; a retry with a different body is
//! refused. The stored answer is sealed (ChaCha20-Poly1305) with a key derived from the
//! Idempotency-Key, which is never stored, so the table holds no readable stream key; the
//! request body is compared by a hash keyed the same way, so it is no verifier of what the
//! body held (a camera's password) either.
//! Rows expire after the configured TTL.

use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::error::ApiError;

const MAX_KEY_LEN: usize = 255;
const WAIT_STEP: Duration = Duration::from_millis(50);
const WAIT_STEPS: u32 = 200;

/// A claimed key: the request goes ahead and must `finish` or `abandon` it.
pub struct Claim {
    key_hash: String,
    cipher: ChaCha20Poly1305,
}

pub enum Begin {
    Claimed(Claim),
    Replay {
        status: u16,
        body: serde_json::Value,
    },
}

fn derive(caller: &str, key: &str) -> (String, ChaCha20Poly1305) {
    let lookup = Sha256::new()
        .chain_update(b"slotcast idempotency lookup v1\0")
        .chain_update(caller.as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_bytes())
        .finalize();
    let secret = Sha256::new()
        .chain_update(b"slotcast idempotency seal v1\0")
        .chain_update(caller.as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_bytes())
        .finalize();
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&secret));
    (hex::encode(lookup), cipher)
}

/// What a retry's body is compared by: keyed by the Idempotency-Key (never stored), so the
/// stored value is no verifier for what the body holds (a camera's password) without it.
fn request_fingerprint(caller: &str, key: &str, request: &[u8]) -> String {
    let fingerprint = Sha256::new()
        .chain_update(b"slotcast idempotency request v2\0")
        .chain_update(caller.as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_bytes())
        .chain_update(b"\0")
        .chain_update(request)
        .finalize();
    hex::encode(fingerprint)
}

/// Claims `key` for this request, or returns the answer of the request that claimed it.
pub async fn begin(
    pool: &PgPool,
    caller: &str,
    key: &str,
    request: &[u8],
) -> Result<Begin, ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    let (key_hash, cipher) = derive(caller, key);
    let request_hash = request_fingerprint(caller, key, request);
    let claimed = sqlx::query(
        "INSERT INTO idempotency (key_hash, request_hash, status) VALUES ($1, $2, 0) \
         ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(&key_hash)
    .bind(&request_hash)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(Begin::Claimed(Claim { key_hash, cipher }));
    }
    for _ in 0..WAIT_STEPS {
        let row = sqlx::query(
            "SELECT request_hash, status, nonce, body FROM idempotency WHERE key_hash = $1",
        )
        .bind(&key_hash)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            // The first request failed and let go of the key: this one may claim it.
            return Box::pin(begin(pool, caller, key, request)).await;
        };
        if row.try_get::<String, _>("request_hash")? != request_hash {
            return Err(ApiError::Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request".into(),
            ));
        }
        let status: i32 = row.try_get("status")?;
        if status != 0 {
            let nonce: Vec<u8> = row.try_get("nonce")?;
            let sealed: Vec<u8> = row.try_get("body")?;
            let plain = cipher
                .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
                .map_err(|_| ApiError::BadRequest("stored answer does not open".into()))?;
            let body = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
            return Ok(Begin::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            });
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
    Err(ApiError::Conflict(
        "idempotency_key_in_flight",
        "a request with this Idempotency-Key is still being processed; retry shortly".into(),
    ))
}

impl Claim {
    /// Stores the answer for later retries.
    pub async fn finish(
        self,
        pool: &PgPool,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(body).map_err(ApiError::internal)?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| ApiError::BadRequest("answer does not seal".into()))?;
        sqlx::query(
            "UPDATE idempotency SET status = $2, nonce = $3, body = $4 WHERE key_hash = $1",
        )
        .bind(&self.key_hash)
        .bind(i32::from(status))
        .bind(nonce.as_slice())
        .bind(sealed)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Lets go of the key after a failure, so a retry decides afresh.
    pub async fn abandon(self, pool: &PgPool) {
        let result = sqlx::query("DELETE FROM idempotency WHERE key_hash = $1 AND status = 0")
            .bind(&self.key_hash)
            .execute(pool)
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, "could not release an idempotency key");
        }
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
