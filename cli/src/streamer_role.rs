//! `slotcast server streamer` (and the streamer inside `server all`): wires the NTP server
//! clock and NATS into the streamer crate.
//!
//! Contract: connects, makes sure the slot and ingest streams exist (retrying in the
//! background while NATS is away), and runs the streamer until `shutdown`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use slotcast_api::clock::ServerClock;
use slotcast_streamer::{Bound, NatsLink};
use tokio_util::sync::CancellationToken;

use crate::config::StreamerRoleConfig;

pub async fn run(
    config: StreamerRoleConfig,
    shutdown: CancellationToken,
    on_listen: impl FnOnce(&Bound),
) -> Result<()> {
    let clock = ServerClock::new(config.clock.clone());
    tokio::spawn(clock.clone().run(shutdown.clone()));
    let nats = slotcast_nats::connect(config.nats.clone(), "slotcast-streamer")
        .await
        .with_context(|| format!("cannot reach NATS at {}", config.nats.shown_url()))?;
    {
        let (nats, shutdown) = (nats.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let slots = nats.ensure_slots_stream().await;
                let ingest = nats.ensure_ingest_stream().await;
                match (slots, ingest) {
                    (Ok(_), Ok(_)) => return,
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "NATS streams not ready; retrying")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
    let link = NatsLink {
        jetstream: nats.jetstream.clone(),
        names: nats.config.names.clone(),
        ack_timeout: nats.config.ack_timeout,
        signer: nats.config.signer.clone(),
    };
    slotcast_streamer::run(config.streamer, Arc::new(clock), link, shutdown, on_listen)
        .await
        .context("streamer")
}

/// What the streamer prints when it is up: its viewer address, then each ingest listener as
/// `carrier=scheme://address` (RTSP listeners first, then RTMP, SRT, and WHIP as `whip://`),
/// comma-separated.
pub fn announce(bound: &Bound) {
    let rtsp = bound
        .ingest
        .iter()
        .map(|(carrier, addr)| (carrier, "rtsp", addr));
    let rtmp = bound
        .rtmp
        .iter()
        .map(|(carrier, addr)| (carrier, "rtmp", addr));
    let srt = bound
        .srt
        .iter()
        .map(|(carrier, addr)| (carrier, "srt", addr));
    let whip = bound
        .whip
        .iter()
        .map(|(carrier, addr)| (carrier, "whip", addr));
    let ingest: Vec<String> = rtsp
        .chain(rtmp)
        .chain(srt)
        .chain(whip)
        .map(|(carrier, scheme, addr)| format!("{carrier}={scheme}://{addr}"))
        .collect();
    println!(
        "slotcast streamer serving viewers on http://{}; ingest {}",
        bound.hls,
        ingest.join(", ")
    );
}
