//! Bearer tokens and who the caller is.
//!
//! Contract: tokens are 256-bit random strings shown once; only their SHA-256 is stored. The
//! `Caller` extractor turns `Authorization: Bearer …` into an `Actor`, through a short-lived
//! in-memory cache (std mutex, never held across an await) so a booking costs no extra query.
//! A token not of the form `sct_` + 64 hex digits is refused before the database is asked; a
//! well-formed token the database does not know is remembered as unknown for
//! a few seconds ([`crate::token_cache`]), so asking again with it costs no query either. A
//! token may expire; a revocation is announced on `slotcast_tokens`, and every api drops its
//! cache when it hears one ([`watch_revocations`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use slotcast_domain::secret::{self, SecretKey};
use slotcast_domain::{Actor, Role};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;
use crate::token_cache::TokenCache;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A freshly minted stream key and what is stored instead of it.
pub struct StreamKey {
    /// 128-bit random, lower-case hex: shown to the broadcaster once.
    pub key: String,
    /// SHA-256 of the key: what `?key=` and Basic auth are checked against.
    pub hash: String,
    /// The key's Digest HA1 sealed for the reservation, when a secret key is configured.
    pub digest: Option<String>,
}

/// A new stream key for `reservation_id`; `secret` seals its Digest credential.
pub fn new_stream_key(reservation_id: &str, secret: Option<&SecretKey>) -> StreamKey {
    let key = random_hex(16);
    let hash = sha256_hex(key.as_bytes());
    let digest = secret.map(|secret| {
        let mut nonce = [0u8; secret::NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        secret.seal(nonce, reservation_id, secret::digest_ha1(&key).as_bytes())
    });
    StreamKey { key, hash, digest }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Operator => "operator",
        Role::Distributor => "distributor",
        Role::Service => "service",
    }
}

/// Creates a token for `name` with `role`, valid until `expires_at` (never, when `None`);
/// returns the token, which is not stored.
pub async fn create_token_until(
    pool: &PgPool,
    role: Role,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<String, ApiError> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    sqlx::query(
        "INSERT INTO api_tokens (name, role, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(name)
    .bind(role_name(role))
    .bind(sha256_hex(token.as_bytes()))
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(token)
}

/// What every token starts with; the rest is 64 lower-case hex digits.
const TOKEN_PREFIX: &str = "sct_";

/// Whether `token` has the form [`create_token_until`] gives: anything else is refused before the
/// database is asked.
fn well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A stored token as `slotcast admin token list` shows it (never its hash).
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every token, oldest first.
pub async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenRow>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// The Postgres channel a revocation is announced on; every api drops its cache on it.
pub const TOKENS_CHANNEL: &str = "slotcast_tokens";

/// Revokes token `id`; `false` when there is no such token or it was revoked already. Every
/// api listening on [`TOKENS_CHANNEL`] forgets its cached tokens when this commits.
pub async fn revoke_token(pool: &PgPool, id: i64) -> Result<bool, ApiError> {
    let revoked: Option<i64> = sqlx::query_scalar(
        "WITH r AS (UPDATE api_tokens SET revoked_at = now() \
                    WHERE id = $1 AND revoked_at IS NULL RETURNING id) \
         SELECT r.id FROM r, (SELECT pg_notify($2, '')) AS n",
    )
    .bind(id)
    .bind(TOKENS_CHANNEL)
    .fetch_optional(pool)
    .await?;
    Ok(revoked.is_some())
}

/// Drops `cache` whenever a token is revoked anywhere, and whenever the listening connection
/// is (re)made (a revocation may have gone by unheard). Without it, a revoked token works on
/// an api until its cache entry ages out (`crate::token_cache`).
pub async fn watch_revocations(pool: PgPool, cache: Arc<TokenCache>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(TOKENS_CHANNEL).await?;
            cache.clear();
            loop {
                listener.recv().await?;
                cache.clear();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = listening => {
                if let Err(err) = ended {
                    tracing::warn!(%err, "token revocations not heard; retrying");
                }
                cache.clear();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Actor);

impl Caller {
    pub fn is_operator(&self) -> bool {
        self.0.role == Role::Operator
    }

    /// `role:name`, as recorded in event metadata.
    pub fn label(&self) -> String {
        format!("{}:{}", role_name(self.0.role), self.0.name)
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs an operator token"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized(
                    "missing Authorization: Bearer <token>",
                ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(ApiError::Unauthorized(
                "Authorization must be: Bearer <token>",
            ))?;
        if !well_formed(token) {
            return Err(ApiError::Unauthorized("that is not a slotcast token"));
        }
        let hash = sha256_hex(token.as_bytes());
        if let Some(actor) = state.tokens.get(&hash) {
            return Ok(Caller(actor));
        }
        const UNKNOWN: ApiError = ApiError::Unauthorized("unknown, expired or revoked token");
        if state.tokens.known_unknown(&hash) {
            return Err(UNKNOWN);
        }
        let row: Option<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT name, role, expires_at FROM api_tokens WHERE token_hash = $1 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(&hash)
        .fetch_optional(&state.pool)
        .await?;
        let Some((name, role, expires)) = row else {
            state.tokens.put_unknown(hash);
            return Err(UNKNOWN);
        };
        let role = match role.as_str() {
            "operator" => Role::Operator,
            _ => Role::Distributor,
        };
        let actor = Actor { role, name };
        state.tokens.put(hash, actor.clone(), expires);
        Ok(Caller(actor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_of_the_minted_form_are_looked_up() {
        let good = format!("{TOKEN_PREFIX}{}", "a".repeat(64));
        assert!(well_formed(&good));
        for bad in [
            "",
            "sct_",
            &format!("{TOKEN_PREFIX}{}", "A".repeat(64)),
            &format!("{TOKEN_PREFIX}{}", "a".repeat(63)),
            &"a".repeat(68),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
