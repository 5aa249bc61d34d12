//! What the streamer's unit tests share: instants on a fixed epoch, stream keys, and slot
//! messages as the scheduler publishes them.

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use slotcast_domain::contract::{IngestMode, SlotKind, SlotMessage, SCHEMA};

use crate::rtsp::Credential;

/// `s` seconds after a fixed instant.
pub fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .expect("a valid time")
}

/// A publisher's `?key=` credential.
pub fn key(k: &str) -> Credential {
    Credential::Key(k.to_owned())
}

/// The stream key's hash, as slot messages carry it.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A slot message of server `s1` for `id`, its window (and slot) from `opens` to `closes`.
pub fn slot(
    id: &str,
    kind: SlotKind,
    revision: u32,
    (opens, closes): (i64, i64),
    key: &str,
    ingest: IngestMode,
) -> SlotMessage {
    SlotMessage {
        schema: SCHEMA,
        kind,
        reservation_id: id.into(),
        server_id: "s1".into(),
        revision,
        opens_at: at(opens),
        closes_at: at(closes),
        start: at(opens),
        end: at(closes),
        stream_key_hash: key_hash(key),
        stream_key_digest: None,
        ingest,
        title: None,
        due_at: at(opens),
        published_at: at(opens),
        late_ms: 0.0,
    }
}

/// Pushed by a publisher on any of `carriers`.
pub fn pushed(carriers: &[&str]) -> IngestMode {
    IngestMode::Push {
        carriers: carriers.iter().map(|c| c.to_string()).collect(),
    }
}
