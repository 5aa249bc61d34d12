//! Bearer tokens and who the caller is.
//!
//! Contract: tokens are 256-bit random strings shown once; only their SHA-256 is stored. The
//! `Caller` extractor turns `Authorization: Bearer …` into an `Actor`, through a short-lived
//! in-memory cache (std mutex, never held across an await) so a booking costs no extra query.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use slotcast_domain::secret::{self, SecretKey};
use slotcast_domain::{Actor, Role};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a looked-up token is trusted before asking the database again (revocation delay).
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

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

/// Creates a token for `name` with `role`; returns the token, which is not stored.
pub async fn create_token(pool: &PgPool, role: Role, name: &str) -> Result<String, ApiError> {
    let token = format!("sct_{}", random_hex(32));
    sqlx::query("INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(role_name(role))
        .bind(sha256_hex(token.as_bytes()))
        .execute(pool)
        .await?;
    Ok(token)
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Actor, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<Actor> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(actor, _)| actor.clone())
    }

    fn put(&self, hash: String, actor: Actor) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (actor, Instant::now()));
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
        let hash = sha256_hex(token.as_bytes());
        if let Some(actor) = state.tokens.get(&hash) {
            return Ok(Caller(actor));
        }
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT name, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(&state.pool)
        .await?;
        let (name, role) = row.ok_or(ApiError::Unauthorized("unknown or revoked token"))?;
        let role = match role.as_str() {
            "operator" => Role::Operator,
            _ => Role::Distributor,
        };
        let actor = Actor { role, name };
        state.tokens.put(hash, actor.clone());
        Ok(Caller(actor))
    }
}
