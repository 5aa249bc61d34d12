//! The api's NATS consumers: what the streamer reports (`SLOTCAST_INGEST`) and the slot
//! boundaries as delivered (`SLOTCAST_SLOTS`) become events on the reservation's server.
//!
//! Contract: one durable pull consumer per stream (`slotcast-api`), shared by every api
//! replica, with explicit acks and at most one message in flight. So each server's messages
//! are recorded in stream order, and a message is acknowledged only after its event is
//! committed (or it was found to be a redelivery, or unusable). The aggregate refuses a
//! message at or before the last one it recorded from that stream (`AlreadyRecorded`), which
//! makes redelivery record nothing new. Unusable messages (bad subject or JSON) are
//! terminated and logged, never retried; a failure to record is retried after a pause.
//!
//! The ack wait is short ([`ACK_WAIT`]) and a message being recorded is kept with progress
//! acks: a replica that dies holding the one message in flight stalls every replica's
//! history for one ack wait, not half a minute (tests/many.rs kills an api mid-run).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use slotcast_domain::contract::{IngestMessage, SlotKind, SlotMessage, StreamCursor};
use slotcast_domain::signing::{self, Check};
use slotcast_domain::{Actor, Command, CommandKind, NatsStream, Role};
use slotcast_nats::{Backoff, Nats};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Context;

/// The durable consumer name, on both streams.
pub const CONSUMER: &str = "slotcast-api";

/// How long JetStream waits for an ack before delivering the message again, to any replica.
/// With one message in flight this is how long the feed stalls when the replica holding it
/// dies; a replica still recording sends a progress ack every half of it.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// The `Health` component names.
fn component(source: NatsStream) -> &'static str {
    match source {
        NatsStream::Ingest => "ingest-consumer",
        NatsStream::Slots => "slot-consumer",
    }
}

/// Consumes both streams until `shutdown`.
pub async fn run(state: AppState, nats: Nats, shutdown: CancellationToken) {
    tokio::join!(
        consume(
            state.clone(),
            nats.clone(),
            NatsStream::Ingest,
            shutdown.clone()
        ),
        consume(state, nats, NatsStream::Slots, shutdown),
    );
}

/// What to do with a message once handled.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Recorded,
    /// A redelivery, or a kind the history already has: acknowledge, record nothing.
    Skipped,
    /// Can never be recorded: terminate (no redelivery).
    Unusable(String),
}

async fn consume(state: AppState, nats: Nats, source: NatsStream, shutdown: CancellationToken) {
    let name = component(source);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    state.health.set(name, false, "starting");
    while !shutdown.is_cancelled() {
        match consume_once(&state, &nats, source, &shutdown).await {
            Ok(()) => return,
            Err(err) => {
                let detail = if nats.connected() {
                    err
                } else {
                    format!("NATS unreachable at {}", nats.config.shown_url())
                };
                tracing::warn!(consumer = name, detail, "consumer interrupted; retrying");
                state.health.set(name, false, detail);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Binds the durable consumer and records messages until shutdown (`Ok`) or trouble.
async fn consume_once(
    state: &AppState,
    nats: &Nats,
    source: NatsStream,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let names = &nats.config.names;
    let info = match source {
        NatsStream::Ingest => nats.ensure_ingest_stream().await,
        NatsStream::Slots => nats.ensure_slots_stream().await,
    }
    .map_err(|e| e.to_string())?;
    let epoch_ms = info.created.timestamp_millis();
    let stream = nats
        .jetstream
        .get_stream(&info.config.name)
        .await
        .map_err(|e| format!("stream {}: {e}", info.config.name))?;
    let filter_subject = match source {
        NatsStream::Ingest => names.ingest_subjects(),
        NatsStream::Slots => names.slot_subjects(),
    };
    // Create or update: a consumer made by an older api (a 30 s ack wait) takes this one's.
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.to_string()),
            description: Some("the slotcast api records these in the history".into()),
            filter_subject,
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            // One at a time: each server's messages are recorded in stream order.
            max_ack_pending: 1,
            ack_wait: ACK_WAIT,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer {CONSUMER} on {}: {e}", info.config.name))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consume {}: {e}", info.config.name))?;
    let name = component(source);
    state
        .health
        .set(name, true, format!("consuming {}", info.config.name));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(err)) => return Err(format!("receive: {err}")),
            None => return Err("the consumer's message stream ended".into()),
        };
        let (sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(err) => {
                tracing::warn!(%err, "a message without JetStream metadata; dropping it");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let cursor = StreamCursor { epoch_ms, sequence };
        let ack = match recording(record(state, nats, source, &message, cursor), &message).await {
            Ok(Outcome::Recorded | Outcome::Skipped) => AckKind::Ack,
            Ok(Outcome::Unusable(why)) => {
                tracing::warn!(subject = %message.subject, sequence, why, "unusable message");
                AckKind::Term
            }
            Err(err) => {
                // Not recorded; try again (nothing after it is delivered meanwhile), backing
                // off to a minute. It is never dropped: a message that can never be recorded
                // holds the stream up, loudly.
                let delay = Duration::from_secs(1 << delivered.clamp(1, 7).saturating_sub(1))
                    .min(Duration::from_secs(60));
                if delivered >= 5 {
                    tracing::error!(subject = %message.subject, sequence, delivered, %err,
                        "cannot record this message; the stream waits for it");
                } else {
                    tracing::warn!(subject = %message.subject, sequence, %err, "not recorded yet");
                }
                AckKind::Nak(Some(delay))
            }
        };
        message
            .double_ack_with(ack)
            .await
            .map_err(|e| format!("acknowledge: {e}"))?;
    }
}

/// Awaits `record`, telling JetStream every half [`ACK_WAIT`] that `message` is still being
/// worked on, so a slow record is not delivered again to another replica meanwhile.
async fn recording<T>(record: impl std::future::Future<Output = T>, message: &Message) -> T {
    tokio::pin!(record);
    let every = ACK_WAIT / 2;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut record => return done,
            _ = progress.tick() => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(%err, subject = %message.subject, "progress ack not sent");
                }
            }
        }
    }
}

/// Records one message as an event on its server.
async fn record(
    state: &AppState,
    nats: &Nats,
    source: NatsStream,
    message: &Message,
    cursor: StreamCursor,
) -> Result<Outcome, ApiError> {
    let subject = message.subject.as_str();
    if let Some(signer) = &nats.config.signer {
        let header = message
            .headers
            .as_ref()
            .and_then(|h| h.get(signing::HEADER))
            .map(|v| v.as_str());
        let check = signer.check(subject, &message.payload, header);
        if check != Check::Signed {
            state.metrics.nats_refused(check.label());
            return Ok(Outcome::Unusable(format!(
                "{}: not signed with this deployment's key",
                check.label()
            )));
        }
    }
    let Some((server_id, reservation_id)) = nats.config.names.parse_subject(subject) else {
        return Ok(Outcome::Unusable(format!("subject {subject}")));
    };
    let kind = match source {
        NatsStream::Ingest => match serde_json::from_slice::<IngestMessage>(&message.payload) {
            Ok(report) => {
                if report.server_id != server_id || report.reservation_id != reservation_id {
                    return Ok(Outcome::Unusable(
                        "payload ids differ from the subject".into(),
                    ));
                }
                CommandKind::RecordIngest { report, cursor }
            }
            Err(err) => return Ok(Outcome::Unusable(format!("payload: {err}"))),
        },
        NatsStream::Slots => match serde_json::from_slice::<SlotMessage>(&message.payload) {
            Ok(m) if !matches!(m.kind, SlotKind::Opened | SlotKind::Closed) => {
                return Ok(Outcome::Skipped)
            }
            Ok(m) => {
                if m.server_id != server_id || m.reservation_id != reservation_id {
                    return Ok(Outcome::Unusable(
                        "payload ids differ from the subject".into(),
                    ));
                }
                CommandKind::RecordWindow { message: m, cursor }
            }
            Err(err) => return Ok(Outcome::Unusable(format!("payload: {err}"))),
        },
    };
    let now = state.clock.now();
    let actor = Actor {
        role: Role::Service,
        name: component(source).to_string(),
    };
    let context = Context {
        actor: format!("service:{}", actor.name),
        request_id: format!("nats:{subject}:{}", cursor.sequence),
        recorded_at: now,
    };
    let command = Command { now, actor, kind };
    match state.store.execute(server_id, command, &context).await {
        Ok(_) => Ok(Outcome::Recorded),
        Err(ApiError::AlreadyRecorded) => Ok(Outcome::Skipped),
        Err(ApiError::NotFound(what)) => Ok(Outcome::Unusable(format!("no such {what}"))),
        Err(ApiError::Invalid(field, why)) => Ok(Outcome::Unusable(format!("{field}: {why}"))),
        Err(other) => Err(other),
    }
}
