//! NATS as `docs/nats-contract.md` defines it, from the benchmarks' side: a client, the slot
//! stream with the contract's settings, and removing a run's streams.
//!
//! Contract: every benchmark works under NATS prefixes of its own (`Names`), so it never sees
//! a deployment's messages; it deletes their streams at the end, also on error and Ctrl-C.
//! Every call is bounded by the client's request timeout.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, context, stream};
use slotcast_domain::contract::Names;

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
