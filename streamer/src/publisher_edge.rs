//! What the RTSP edge (`crate::ingest`) and the RTMP edge (`crate::rtmp_edge`) do alike
//! with a publisher's connection, whatever its protocol: its course from the accept to its
//! end ([`follow`]: on readiness until it publishes, within the record deadline, then on the
//! poll grid), and the pieces of each poll (when input arrived, the cut-off, the end of a
//! step, media past what the path tolerates).
//!
//! Contract: the session and what it asks for stay each edge's; this reads and writes no
//! socket itself (the connection's poll does), and touches only the hub's metrics and the
//! connection's entry.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, SessionEntry};
use crate::ingest_limits::Place;
use crate::ingest_socket::{IngestSocket, Polled};
use crate::poller::{Adopted, Pollable, Poller};
use crate::rtsp::CloseReason;
use crate::StreamerError;

/// When input read `now` arrived. On readiness: now. At a poll: after the poll before it
/// (`last_poll`, moved to `now`), so frames are stamped with that earlier instant and the
/// part latency measured from them includes the wait for the poll.
pub(crate) fn arrival(socket: &IngestSocket, last_poll: &mut Instant, now: Instant) -> Instant {
    let arrived = if socket.is_polled() { *last_poll } else { now };
    *last_poll = now;
    arrived
}

/// `len` bytes came from the publisher at `now`: it is alive, and they are counted.
pub(crate) fn received(hub: &Hub, entry: &SessionEntry, now: Instant, len: usize) {
    hub.touch(entry, now);
    hub.metrics().ingest_bytes.inc_by(len as u64);
}

/// The end of a connection's step, once its session's outputs are carried out (`outputs`:
/// `Some` if they ended it) and its socket was `read`: over if either says so (the outputs
/// first: what the publisher sent before it went is still handled); once `live`, the socket
/// leaves the reactor for the poll grid.
pub(crate) fn end_of_step(
    socket: &mut IngestSocket,
    outputs: Option<CloseReason>,
    read: Polled,
    live: bool,
) -> Option<CloseReason> {
    if outputs.is_some() {
        return outputs;
    }
    if let Polled::Closed(reason) = read {
        return Some(reason);
    }
    if live && !socket.is_polled() {
        if let Err(err) = socket.poll_from_now() {
            return Some(CloseReason::Ended(format!("socket: {err}")));
        }
    }
    None
}

/// Why the publisher must stop now, the first time it must: the hub cut it off (window
/// closed, reservation cancelled, key rotated, taken over), or the streamer is shutting down.
pub(crate) fn cut_off(
    entry: &SessionEntry,
    stopping: &mut bool,
    shutting_down: bool,
) -> Option<String> {
    if *stopping || !(entry.cancel.is_cancelled() || shutting_down) {
        return None;
    }
    *stopping = true;
    Some(if shutting_down {
        "the streamer is shutting down".to_owned()
    } else {
        entry.reason().unwrap_or("ended by the server").to_owned()
    })
}

/// Media past what the connection's path tolerates: counted, and why the connection goes,
/// with whether that is a failure (a stream without keyframes is not: it ends).
pub(crate) fn media_failed(hub: &Hub, err: &StreamerError) -> (CloseReason, bool) {
    if matches!(err, StreamerError::NoKeyframe { .. }) {
        hub.metrics().refused("no_keyframe");
        return (CloseReason::NoKeyframe, false);
    }
    hub.metrics().refused("bad_media");
    (CloseReason::Malformed(format!("media: {err}")), true)
}

/// A publisher's connection as the course both edges share ([`follow`]) sees it.
pub(crate) trait Publishing: Pollable<Over = CloseReason> {
    /// What the publisher must reach to be publishing, for the words (`RECORD`, `publish`).
    const PUBLISHING: &'static str;
    /// The read buffer before publishing (the poller lends its own after).
    const EXCHANGE_BUFFER: usize;
    /// Before publishing, how often the connection is polled when nothing else wakes it (for
    /// its session's timers and its writes').
    const EXCHANGE_TICK: Duration;

    fn socket(&self) -> &IngestSocket;
    /// The session was told to close (cut off, or shutdown).
    fn stopping(&self) -> bool;
    /// Waits until the socket is ready (readable, or writable while answers wait) or
    /// something else the connection listens to came, which it handles itself.
    fn ready(&mut self) -> impl Future<Output = ()> + Send;
}

/// The course of a publisher's connection to its end: polled on readiness (every answer is
/// awaited: it waits for the publisher, not the grid) until it publishes or is over, within
/// the record deadline of its accept and only while no newcomer takes its `place`; the place
/// then given back; then polled on the grid until it is over. The connection back with why,
/// or `None` if it was lost with its poller's thread (a bug, logged there).
pub(crate) async fn follow<C: Publishing>(
    mut conn: C,
    hub: &Hub,
    entry: &SessionEntry,
    poller: &Poller<C>,
    shutdown: &CancellationToken,
    place: Place,
) -> Option<(C, CloseReason)> {
    let exchanged = exchange(&mut conn, hub, entry, shutdown, &place).await;
    // Publishing, or over: either way the place is free for someone else.
    drop(place);
    match exchanged {
        Some(reason) => Some((conn, reason)),
        None => match poller.adopt(conn).await {
            Adopted::Over(back, reason) => Some((back, reason)),
            Adopted::Refused(back, why) => Some((back, CloseReason::Ended(why))),
            Adopted::Lost => None,
        },
    }
}

/// [`follow`] before publishing: `Some` once over, `None` once publishing (its socket then
/// out of the reactor, for the poller).
async fn exchange<C: Publishing>(
    conn: &mut C,
    hub: &Hub,
    entry: &SessionEntry,
    shutdown: &CancellationToken,
    place: &Place,
) -> Option<CloseReason> {
    let mut buf = vec![0u8; C::EXCHANGE_BUFFER];
    let allowed = hub.config().record_deadline;
    let deadline = tokio::time::Instant::now() + allowed;
    let ended = entry.cancel.cancelled();
    let shutting_down = shutdown.cancelled();
    let evicted = place.evicted().cancelled();
    tokio::pin!(ended, shutting_down, evicted);
    loop {
        if let Some(reason) = conn.poll(Instant::now(), &mut buf, shutdown.is_cancelled()) {
            return Some(reason);
        }
        if conn.socket().is_polled() {
            return None;
        }
        if place.evicted().is_cancelled() {
            return Some(CloseReason::Ended(
                "made room for a connection from another address".into(),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            hub.metrics().refused("record_deadline");
            return Some(CloseReason::Ended(format!(
                "no {} within {} s",
                C::PUBLISHING,
                allowed.as_secs()
            )));
        }
        let stopping = conn.stopping();
        tokio::select! {
            () = conn.ready() => {}
            () = &mut ended, if !stopping => {}
            () = &mut shutting_down, if !stopping => {}
            () = &mut evicted => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = tokio::time::sleep(C::EXCHANGE_TICK) => {}
        }
    }
}
