//! One relay per reservation with real-time viewers: the live tap's frames made into WebRTC
//! samples once (the AAC transcoded once, however many watch), shared by every viewer.
//!
//! Contract: [`Relays::subscribe`] gives a viewer the reservation's samples from now on,
//! starting its relay if none runs. A relay is a task: it reads the playout's tap, shapes
//! it with one [`Feed`], and broadcasts each sample (shared, at most [`RELAY_SAMPLES`]
//! queued; a viewer that falls behind is told by `Lagged` and must wait for a keyframe). It
//! stops when its last viewer has gone, when the stream stops being live, and at shutdown;
//! a viewer arriving as it stops starts a new one (the map is changed under one lock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::feed::{Feed, Sample};
use crate::hub::{Hub, PlayoutHandle};
use crate::playout::PlayoutState;

/// Samples a viewer may fall behind by: about four seconds of 30 fps video and Opus audio.
pub const RELAY_SAMPLES: usize = 512;
/// How often an idle relay checks that it is still wanted.
const IDLE_CHECK: Duration = Duration::from_secs(2);

type Sender = broadcast::Sender<Arc<Sample>>;

/// The relays running, by reservation.
#[derive(Debug, Default)]
pub struct Relays {
    running: Mutex<HashMap<String, Sender>>,
}

impl Relays {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Sender>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The samples of `id`'s stream from now on.
    pub fn subscribe(
        &self,
        hub: &Hub,
        id: &str,
        playout: &PlayoutHandle,
    ) -> broadcast::Receiver<Arc<Sample>> {
        let mut running = self.running();
        if let Some(sender) = running.get(id) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(RELAY_SAMPLES);
        running.insert(id.to_string(), sender.clone());
        let frames = playout.tap().subscribe();
        tokio::spawn(relay(hub.clone(), id.to_string(), frames, sender));
        receiver
    }

    /// Removes `sender` as `id`'s relay if nobody listens to it; whether it did.
    fn retire_if_unwatched(&self, id: &str, sender: &Sender) -> bool {
        let mut running = self.running();
        if sender.receiver_count() > 0 {
            return false;
        }
        if running.get(id).is_some_and(|s| s.same_channel(sender)) {
            running.remove(id);
        }
        true
    }

    /// Removes `sender` as `id`'s relay whoever listens (the stream is over).
    fn retire(&self, id: &str, sender: &Sender) {
        let mut running = self.running();
        if running.get(id).is_some_and(|s| s.same_channel(sender)) {
            running.remove(id);
        }
    }
}

/// One reservation's relay until it is not wanted, counted while it runs.
async fn relay(
    hub: Hub,
    id: String,
    mut frames: broadcast::Receiver<Arc<crate::live_tap::LiveFrame>>,
    sender: Sender,
) {
    let relays = &hub.whep().relays;
    let running = &hub.metrics().realtime_relays;
    running.inc();
    relay_until_unwatched(&hub, relays, &id, &mut frames, &sender).await;
    running.dec();
}

/// The relay's work: the tap's frames shaped into samples for every viewer, until nobody
/// watches, the stream is no longer live, or the streamer stops.
async fn relay_until_unwatched(
    hub: &Hub,
    relays: &Relays,
    id: &str,
    frames: &mut broadcast::Receiver<Arc<crate::live_tap::LiveFrame>>,
    sender: &Sender,
) {
    let shutdown = hub.shutdown_token();
    let mut feed = Feed::new(id);
    let mut samples = Vec::new();
    let mut idle = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    feed.push(&frame, &mut samples);
                    for sample in samples.drain(..) {
                        // No receiver: checked below.
                        let _ = sender.send(Arc::new(sample));
                    }
                }
                Err(RecvError::Lagged(lost)) => {
                    tracing::debug!(reservation = %id, lost, "WHEP relay fell behind the tap");
                    feed.lost();
                }
                Err(RecvError::Closed) => break,
            },
            _ = idle.tick() => {
                if hub.status(id) != PlayoutState::Live {
                    break;
                }
            }
        }
        if sender.receiver_count() == 0 && relays.retire_if_unwatched(id, sender) {
            return;
        }
    }
    relays.retire(id, sender);
}
