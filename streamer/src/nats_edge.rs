//! The streamer's NATS edges: slot messages in (gates), ingest reports out.
//!
//! Contract (docs/nats-contract.md): at start the gate consumer
//! `slotcast-streamer-<server_id>` is deleted and created again with
//! `DeliverPolicy::LastPerSubject` on `slotcast.slot.<server_id>.>`, so the newest message of
//! every reservation rebuilds the gates, then everything new follows; `/readyz` says ready
//! once the backlog present at creation is applied. A lighter ordered consumer reads the
//! subjects (headers only) of every server's slots, so a publisher who dialled the wrong
//! server hears so. Reports go to `SLOTCAST_INGEST` in order, each with a unique
//! `Nats-Msg-Id`, retried until acknowledged; the queue in front is bounded.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use rand::RngCore;
use slotcast_domain::contract::{IngestMessage, Names, SlotMessage};
use slotcast_domain::signing::{self, Check, Signer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How the streamer reaches NATS.
#[derive(Clone, Debug)]
pub struct NatsLink {
    pub jetstream: jetstream::Context,
    pub names: Names,
    pub ack_timeout: Duration,
    /// Signs the reports and checks the slot messages (`slotcast_domain::signing`).
    pub signer: Option<Signer>,
}

pub fn consumer_name(server_id: &str) -> String {
    format!("slotcast-streamer-{server_id}")
}

/// Doubling delays from `min` to `max`.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

async fn sleep_or_stop(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Runs `once` again after every interruption, with backoff, until it ends cleanly (at
/// `shutdown`). An attempt that ran for a while was connected: the backoff starts over.
async fn keep_following<F, Fut>(
    what: &str,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
    mut once: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    while !shutdown.is_cancelled() {
        let began = tokio::time::Instant::now();
        match once().await {
            Ok(()) => return,
            Err(err) => tracing::warn!(%err, "{what} interrupted; retrying"),
        }
        if began.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        if !sleep_or_stop(backoff.next_delay(), shutdown).await {
            return;
        }
    }
}

async fn slots_stream(link: &NatsLink) -> Result<jetstream::stream::Stream, String> {
    let name = link.names.slots_stream();
    link.jetstream
        .get_stream(&name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))
}

/// Follows this server's slot messages into the hub's gates until `shutdown`.
pub async fn follow_gates(hub: Hub, link: NatsLink, shutdown: CancellationToken) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    keep_following("slot consumer", backoff, &shutdown, || async {
        let result = follow_gates_once(&hub, &link, &shutdown).await;
        if result.is_err() {
            hub.set_gates_ready(false);
        }
        result
    })
    .await;
}

async fn follow_gates_once(
    hub: &Hub,
    link: &NatsLink,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream_name = link.names.slots_stream();
    let stream = slots_stream(link).await?;
    let server_id = hub.config().server_id.clone();
    let name = consumer_name(&server_id);
    // A durable consumer that exists resumes where it stopped; the gates live in memory, so
    // start over from the newest message per reservation.
    match stream.delete_consumer(&name).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => tracing::debug!(error = %e, "deleting the old slot consumer"),
    }
    let mut consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("streamer {server_id}: ingest gates")),
            filter_subject: link.names.server_slot_subjects(&server_id),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_wait: Duration::from_secs(30),
            inactive_threshold: Duration::from_secs(24 * 3600),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    let mut backlog = consumer
        .info()
        .await
        .map_err(|e| format!("consumer {name} info: {e}"))?
        .num_pending;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consume {stream_name}: {e}"))?;
    if backlog == 0 {
        hub.set_gates_ready(true);
    }
    tracing::info!(consumer = %name, backlog, signed = link.signer.is_some(), "following slot messages");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(err)) => return Err(format!("receive: {err}")),
            None => return Err("the slot consumer's message stream ended".into()),
        };
        let check = link.signer.as_ref().map(|signer| {
            let header = message
                .headers
                .as_ref()
                .and_then(|h| h.get(signing::HEADER))
                .map(|v| v.as_str());
            signer.check(&message.subject, &message.payload, header)
        });
        let parsed = match check {
            Some(refused @ (Check::Unsigned | Check::Forged)) => {
                hub.metrics().refused(match refused {
                    Check::Unsigned => "nats_unsigned",
                    _ => "nats_bad_signature",
                });
                if let Some(held_back) = hub.hush(refused.label()) {
                    tracing::warn!(subject = %message.subject, why = refused.label(), held_back,
                        "slot message ignored: not signed with this deployment's key");
                }
                None
            }
            _ => Some(serde_json::from_slice::<SlotMessage>(&message.payload)),
        };
        match parsed {
            None => {}
            Some(Ok(slot)) => {
                tracing::debug!(kind = slot.kind.as_str(), reservation = %slot.reservation_id,
                    revision = slot.revision, "slot message");
                hub.apply_slot(&slot);
            }
            Some(Err(err)) => {
                tracing::warn!(subject = %message.subject, %err, "unusable slot message");
            }
        }
        message
            .ack_with(AckKind::Ack)
            .await
            .map_err(|e| format!("acknowledge: {e}"))?;
        if backlog > 0 {
            backlog -= 1;
            if backlog == 0 {
                hub.set_gates_ready(true);
                tracing::info!("gates rebuilt from NATS");
            }
        }
    }
}

/// Remembers which server every reservation is on (subjects only) until `shutdown`.
pub async fn follow_directory(hub: Hub, link: NatsLink, shutdown: CancellationToken) {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    keep_following("slot directory", backoff, &shutdown, || {
        follow_directory_once(&hub, &link, &shutdown)
    })
    .await;
}

async fn follow_directory_once(
    hub: &Hub,
    link: &NatsLink,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream_name = link.names.slots_stream();
    let stream = slots_stream(link).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: link.names.slot_subjects(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("directory consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consume {stream_name}: {e}"))?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(err)) => return Err(format!("receive: {err}")),
            None => return Err("the directory's message stream ended".into()),
        };
        if let Some((server, reservation)) = link.names.parse_subject(&message.subject) {
            hub.note_elsewhere(reservation, server);
        }
    }
}

/// Publishes ingest reports in order until `shutdown` (then what is queued, for a moment).
pub async fn publish_reports(
    link: NatsLink,
    mut reports: mpsc::Receiver<IngestMessage>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let report = tokio::select! {
            report = reports.recv() => report,
            _ = shutdown.cancelled() => {
                // Reports made while stopping (publishers cut off) still go out, briefly.
                tokio::time::timeout(Duration::from_millis(500), reports.recv())
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(report) = report else { return };
        let subject = link
            .names
            .ingest_subject(&report.server_id, &report.reservation_id);
        let payload = match serde_json::to_vec(&report) {
            Ok(p) => bytes::Bytes::from(p),
            Err(err) => {
                tracing::error!(%err, "an ingest report that does not serialize");
                continue;
            }
        };
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let msg_id = format!(
            "{}:{}:{}",
            report.reservation_id,
            report.kind.as_str(),
            hex::encode(id)
        );
        // Retried with the same id, so JetStream stores it once.
        for attempt in 0u32.. {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            if let Some(signer) = &link.signer {
                headers.insert(signing::HEADER, signer.sign(&subject, &payload).as_str());
            }
            let sent = async {
                let ack = link
                    .jetstream
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(link.ack_timeout, ack)
                    .await
                    .map_err(|_| "no ack in time".to_string())?
                    .map_err(|e| e.to_string())
            }
            .await;
            match sent {
                Ok(_) => {
                    backoff.reset();
                    break;
                }
                Err(err) => {
                    if attempt == 0 || attempt % 10 == 9 {
                        tracing::warn!(%err, subject, attempt, "ingest report not stored yet; retrying");
                    }
                    if shutdown.is_cancelled() && attempt >= 3 {
                        tracing::error!(subject, "ingest report lost at shutdown");
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}
