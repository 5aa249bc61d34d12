//! NATS as `docs/nats-contract.md` defines it, from the benchmarks' side: a client, the slot
//! stream with the contract's settings, the `opened` messages that let a benchmark's
//! publishers in, and removing a run's streams.
//!
//! Contract: every benchmark works under NATS prefixes of its own (`Names`), so it never sees
//! a deployment's messages; it deletes their streams at the end, also on error and Ctrl-C.
//! Every call is bounded by the client's request timeout.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context, stream};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use slotcast_domain::contract::{self, IngestMode, Names, SlotKind, SlotMessage};

/// `NATS_URL`'s default, as slotcast's.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// A connected client and its JetStream context; fails at once if NATS does not answer.
pub async fn connect(url: &str) -> Result<(async_nats::Client, jetstream::Context)> {
    let client = async_nats::ConnectOptions::new()
        .name("slotcast-bench")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("NATS is not reachable at {url} (run scripts/services)"))?;
    let jetstream = jetstream::new(client.clone());
    Ok((client, jetstream))
}

/// The slot stream of `names`, made (or set) as slotcast makes it: file storage, messages
/// kept 30 days, a duplicate window of an hour over the message ids.
pub async fn slots_stream(js: &jetstream::Context, names: &Names) -> Result<stream::Stream> {
    let name = names.slots_stream();
    js.create_or_update_stream(stream::Config {
        name: name.clone(),
        subjects: vec![names.slot_subjects()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(30 * 86_400),
        duplicate_window: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create the stream {name}"))?;
    js.get_stream(&name)
        .await
        .with_context(|| format!("cannot open the stream {name}"))
}

/// Deletes the slot and ingest streams of every prefix in `all` (a missing one is fine).
pub async fn delete_streams(js: &jetstream::Context, all: &[Names]) -> Result<()> {
    let mut failed = Vec::new();
    for names in all {
        for stream in [names.slots_stream(), names.ingest_stream()] {
            let deleted =
                tokio::time::timeout(Duration::from_secs(10), js.delete_stream(&stream)).await;
            match deleted {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if not_found(&e) => {}
                Ok(Err(e)) => failed.push(format!("{stream}: {e}")),
                Err(_) => failed.push(format!("{stream}: no answer within 10 s")),
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "cannot delete the benchmark's NATS streams: {}",
            failed.join("; ")
        )
    }
}

fn not_found(err: &context::DeleteStreamError) -> bool {
    matches!(err.kind(), context::DeleteStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// A fresh prefix for run `k`, `bench<k>_<8 hex>`, and the names under it.
pub fn fresh_prefix(k: usize) -> (String, Names) {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{k}_{}", &hex[..8]);
    let names = Names::new(&prefix).expect("letters, digits and _ make a valid prefix");
    (prefix, names)
}

/// A new stream key as the api mints them: 128 random bits, lower-case hex.
pub fn new_stream_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a slot message carries instead of the key (`docs/nats-contract.md`, `stream_key_hash`):
/// lower-case hex SHA-256.
pub fn stream_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Publishes an `opened` message for each `(reservation, stream key)` on `server_id` under
/// `names`, each window covering the run (from a minute ago to two hours on), and waits until
/// JetStream has stored them all.
pub async fn open_gates(
    js: &jetstream::Context,
    names: &Names,
    server_id: &str,
    reservations: &[(String, String)],
) -> Result<()> {
    let now = Utc::now();
    let opens = now - chrono::Duration::minutes(1);
    let closes = now + chrono::Duration::hours(2);
    let mut acks = Vec::new();
    for (id, key) in reservations {
        let message = SlotMessage {
            schema: contract::SCHEMA,
            kind: SlotKind::Opened,
            reservation_id: id.clone(),
            server_id: server_id.to_string(),
            revision: 1,
            opens_at: opens,
            closes_at: closes,
            start: opens,
            end: closes,
            stream_key_hash: stream_key_hash(key),
            stream_key_digest: None,
            ingest: IngestMode::Push { carriers: vec![] },
            title: None,
            due_at: opens,
            published_at: now,
            late_ms: 0.0,
        };
        let publish = PublishMessage::build()
            .payload(serde_json::to_vec(&message)?.into())
            .message_id(contract::slot_message_id(id, SlotKind::Opened, 1));
        let subject = names.slot_subject(server_id, id);
        acks.push(js.send_publish(subject, publish).await?);
    }
    for ack in acks {
        ack.await
            .context("JetStream did not store a slot message")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_a_prefix_of_its_own() {
        let ((a, names), (b, _)) = (fresh_prefix(3), fresh_prefix(3));
        assert_ne!(a, b);
        assert!(a.starts_with("bench3_"));
        assert_eq!(names.slot_subjects(), format!("{a}.slot.>"));
        assert_eq!(names.slots_stream(), format!("{}_SLOTS", a.to_uppercase()));
    }
}
