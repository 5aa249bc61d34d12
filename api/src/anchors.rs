//! Anchoring each server's event-chain head outside the rows it covers: in `audit_anchors` and
//! on NATS (`<prefix>.audit.<server_id>`, stream `SLOTCAST_AUDIT`), as `docs/audit.md` says.
//!
//! Contract: every round (at most a minute apart), each server whose latest event has no anchor
//! yet gets one in `audit_anchors` (idempotent: replicas may race, one row wins), and the
//! anchors this process wrote are published on NATS with `Nats-Msg-Id` `<server>:<sequence>`
//! (signed when a secret key is set); a publish that fails is tried again next round (the
//! newest per server, for at most 10,000 servers). Nothing here blocks a booking: a round that
//! fails is logged and the next one starts over from the database.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use slotcast_domain::contract::AuditAnchor;
use slotcast_domain::signing;
use slotcast_domain::ServerSchedule;
use slotcast_nats::Nats;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Servers whose anchor waits for NATS at most; beyond, the oldest are dropped (the table
/// holds them, and the next event of the server is anchored anew).
const PENDING: usize = 10_000;

/// Anchors until `shutdown`, every `interval`.
pub async fn run(
    pool: PgPool,
    nats: Option<Nats>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut pending: BTreeMap<String, AuditAnchor> = BTreeMap::new();
    let mut stream_ready = false;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match anchor_heads(&pool).await {
            Ok(written) => {
                for anchor in written {
                    pending.insert(anchor.server_id.clone(), anchor);
                }
            }
            Err(err) => tracing::warn!(%err, "could not anchor the event chains this round"),
        }
        let Some(nats) = &nats else {
            pending.clear();
            continue;
        };
        if !stream_ready {
            match nats.ensure_audit_stream().await {
                Ok(_) => stream_ready = true,
                Err(err) => {
                    tracing::warn!(%err, "the audit stream is not there yet");
                    continue;
                }
            }
        }
        publish(nats, &mut pending).await;
        while pending.len() > PENDING {
            pending.pop_first();
        }
    }
}

/// Writes an anchor for every server whose latest event has none; returns those written.
pub async fn anchor_heads(pool: &PgPool) -> Result<Vec<AuditAnchor>, sqlx::Error> {
    let rows: Vec<(String, i64, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO audit_anchors (aggregate_id, sequence, hash) \
         SELECT s.aggregate_id, e.sequence, e.hash \
         FROM rm.streams s \
         CROSS JOIN LATERAL ( \
             SELECT sequence, hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = s.aggregate_id \
             ORDER BY sequence DESC LIMIT 1) e \
         ON CONFLICT (aggregate_id, sequence) DO NOTHING \
         RETURNING aggregate_id, sequence, hash, anchored_at",
    )
    .bind(ServerSchedule::TYPE)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AuditAnchor::from_row).collect())
}

/// Publishes what is pending; what is acknowledged leaves the map.
async fn publish(nats: &Nats, pending: &mut BTreeMap<String, AuditAnchor>) {
    let names = &nats.config.names;
    let mut acked = Vec::new();
    for anchor in pending.values() {
        let Ok(payload) = serde_json::to_vec(anchor) else {
            continue;
        };
        let subject = names.audit_subject(&anchor.server_id);
        let mut message =
            PublishMessage::build().message_id(format!("{}:{}", anchor.server_id, anchor.sequence));
        if let Some(signer) = &nats.config.signer {
            message = message.header(signing::HEADER, signer.sign(&subject, &payload));
        }
        let sent = nats
            .jetstream
            .send_publish(subject, message.payload(payload.into()))
            .await;
        let answer = match sent {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match answer {
            Ok(()) => acked.push((anchor.server_id.clone(), anchor.sequence)),
            Err(err) => {
                tracing::warn!(%err, server_id = %anchor.server_id, "an anchor was not published; next round");
                break;
            }
        }
    }
    for (server_id, sequence) in acked {
        if pending
            .get(&server_id)
            .is_some_and(|a| a.sequence == sequence)
        {
            pending.remove(&server_id);
        }
    }
}
