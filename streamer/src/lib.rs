//! The distribution server: RTSP, RTMP, SRT and WHIP ingest on the dedicated network inside
//! the reserved window, served to viewers as low-latency HLS.
//!
//! Contract: protocol and media code here is sans-IO (bytes and events in, bytes and events
//! out, time passed in): `rtsp`, `rtmp`, `mpegts`, `webrtc` (over str0m), `media`,
//! `playlist`, `playout`, `gates`, `control`. Sockets and files live in thin edges: `ingest`
//! (RTSP publishers), `rtmp_edge` (RTMP publishers, through the same gate), `srt_edge` (SRT
//! callers, the same gate decided before their handshake completes), `whip_edge` (WHIP
//! publishers' requests and WebRTC peers, the same gate), `camera` (RTSP cameras
//! pulled with retina), `http` (viewers), `nats_edge` (NATS), `recording` (disk); `hub`
//! carries out `control`'s decisions. [`run`] starts them all
//! and stops them when `shutdown` fires.

pub mod caching;
pub mod camera;
pub mod config;
pub mod control;
pub mod error;
pub mod forwarded;
pub mod gates;
pub mod hls_viewers;
pub mod http;
pub mod hub;
pub mod hush;
pub mod ingest;
pub mod ingest_limits;
pub mod ingest_meter;
mod ingest_socket;
pub mod live_tap;
pub mod media;
pub mod media_path;
pub mod metrics;
pub mod mpegts;
pub mod nats_edge;
pub mod playlist;
pub mod playout;
pub mod poller;
mod publisher_edge;
pub mod recording;
pub mod refusals;
pub mod rtmp;
mod rtmp_edge;
pub mod rtsp;
mod srt_edge;
#[cfg(test)]
mod testing;
pub mod webrtc;
pub mod whep;
mod whip_edge;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poller::Poller;
use slotcast_domain::time::Clock;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{parse_listeners, Listener, StreamerConfig};
pub use error::{Result, StreamerError};
pub use hub::Hub;
pub use nats_edge::NatsLink;

/// Where a started streamer listens.
#[derive(Clone, Debug)]
pub struct Bound {
    pub hls: SocketAddr,
    /// `(carrier, address)` of each RTSP listener.
    pub ingest: Vec<(String, SocketAddr)>,
    /// `(carrier, address)` of each RTMP listener.
    pub rtmp: Vec<(String, SocketAddr)>,
    /// `(carrier, address)` of each SRT listener (UDP).
    pub srt: Vec<(String, SocketAddr)>,
    /// `(carrier, address)` of each WHIP listener (HTTP).
    pub whip: Vec<(String, SocketAddr)>,
}

/// Binds each of `listeners` (`what` they are for), failing with the address that could not
/// be bound.
async fn bind_all(listeners: &[Listener], what: &str) -> Result<Vec<(Listener, TcpListener)>> {
    let mut bound = Vec::new();
    for listener in listeners {
        let socket =
            TcpListener::bind(listener.addr)
                .await
                .map_err(|source| StreamerError::Listen {
                    what: format!("for carrier {} ({what})", listener.carrier),
                    addr: listener.addr,
                    source,
                })?;
        bound.push((listener.clone(), socket));
    }
    Ok(bound)
}

/// `(carrier, address)` of each bound listener.
fn addresses(bound: &[(Listener, TcpListener)]) -> std::io::Result<Vec<(String, SocketAddr)>> {
    bound
        .iter()
        .map(|(l, s)| Ok((l.carrier.clone(), s.local_addr()?)))
        .collect()
}

/// Binds every listener (failing fast with the address that could not be bound), then runs
/// the streamer until `shutdown`.
pub async fn run(
    config: StreamerConfig,
    clock: Arc<dyn Clock>,
    nats: NatsLink,
    shutdown: CancellationToken,
    on_listen: impl FnOnce(&Bound),
) -> Result<()> {
    config.validate()?;
    let ingest = bind_all(&config.listeners, "RTSP").await?;
    let rtmp = bind_all(&config.rtmp_listeners, "RTMP").await?;
    let whip = bind_all(&config.whip_listeners, "WHIP").await?;

    let hls = TcpListener::bind(config.hls_addr)
        .await
        .map_err(|source| StreamerError::Listen {
            what: "for viewers".into(),
            addr: config.hls_addr,
            source,
        })?;
    let config = Arc::new(config);
    let (reports_tx, reports_rx) = mpsc::channel(4096);
    let (disk_tx, disk_rx) = mpsc::channel(1024);
    // Media and viewers stop first; reports and the disk writer drain after them.
    let edges = shutdown.child_token();
    let hub = Hub::new(
        config.clone(),
        clock,
        reports_tx,
        disk_tx,
        camera::start_pull,
        edges.clone(),
    );
    // One book for every listener: the limits hold for the streamer in all.
    let limits = ingest_limits::Limits::new(config.max_unauth_per_addr, config.max_unauth);
    // SRT listeners are bound with their gates, which need the hub.
    let mut srt = Vec::new();
    for listener in &config.srt_listeners {
        let gate = Arc::new(srt_edge::SrtGate::new(
            hub.clone(),
            listener.carrier.clone(),
            limits.clone(),
        ));
        let bound = slotcast_srt::Listener::bind(listener.addr, config.srt_latency, gate.clone())
            .map_err(|err| StreamerError::Listen {
            what: format!("for carrier {} (SRT)", listener.carrier),
            addr: listener.addr,
            source: std::io::Error::other(err.to_string()),
        })?;
        srt.push((listener.carrier.clone(), gate, bound));
    }
    let bound = Bound {
        hls: hls.local_addr()?,
        ingest: addresses(&ingest)?,
        rtmp: addresses(&rtmp)?,
        srt: srt
            .iter()
            .map(|(carrier, _, l)| (carrier.clone(), l.local_addr()))
            .collect(),
        whip: addresses(&whip)?,
    };

    // Recordings a stopped streamer left unfinished go on (or end) as their slots say: found
    // before a publisher can connect and before the gates are followed.
    let (dir, segment, part) = (
        config.recordings_dir.clone(),
        config.segment_target,
        config.part_target,
    );
    match tokio::task::spawn_blocking(move || recording::unfinished(&dir, segment, part)).await {
        Ok(Ok(found)) => {
            if !found.is_empty() {
                tracing::info!(count = found.len(), "unfinished recordings found");
            }
            hub.found_unfinished(found);
        }
        Ok(Err(err)) => tracing::warn!(%err, "looking for unfinished recordings failed"),
        Err(err) => tracing::error!(%err, "looking for unfinished recordings panicked"),
    }

    let mut tasks = JoinSet::new();
    let poller = Poller::new(hub.started(), config.ingest_poll, edges.clone());
    for (listener, socket) in ingest {
        tasks.spawn(ingest::serve_listener(
            hub.clone(),
            poller.clone(),
            limits.clone(),
            listener,
            socket,
            edges.clone(),
        ));
    }
    // RTMP connections on a grid of their own, in the same book of connections before
    // authentication as RTSP's.
    let rtmp_poller = Poller::new(hub.started(), config.ingest_poll, edges.clone());
    for (listener, socket) in rtmp {
        tasks.spawn(rtmp_edge::serve_listener(
            hub.clone(),
            rtmp_poller.clone(),
            limits.clone(),
            listener,
            socket,
            edges.clone(),
        ));
    }
    // SRT callers on a grid of their own too; each listener's accepts on a thread of its own.
    let srt_poller = Poller::new(hub.started(), config.ingest_poll, edges.clone());
    let mut srt_threads = Vec::new();
    for (_, gate, listener) in srt {
        let runtime = tokio::runtime::Handle::current();
        let thread = srt_edge::serve_listener(
            hub.clone(),
            srt_poller.clone(),
            gate,
            listener,
            runtime,
            edges.clone(),
        )?;
        srt_threads.push(thread);
    }
    // WHIP publishers' peers on a grid of their own too, in the same book before their key.
    if !whip.is_empty() {
        let whip_poller = Poller::new(hub.started(), config.ingest_poll, edges.clone());
        let crypto = webrtc::Crypto::shared()?;
        let edge = whip_edge::WhipEdge::new(hub.clone(), whip_poller, limits.clone(), crypto);
        for (listener, socket) in whip {
            tasks.spawn(whip_edge::serve_listener(
                edge.clone(),
                listener,
                socket,
                edges.clone(),
            ));
        }
    }
    {
        let (hub, edges) = (hub.clone(), edges.clone());
        tasks.spawn(async move {
            if let Err(err) = http::serve(hls, hub, edges).await {
                tracing::error!(%err, "the viewer side stopped");
            }
        });
    }
    tasks.spawn(nats_edge::follow_gates(
        hub.clone(),
        nats.clone(),
        edges.clone(),
    ));
    tasks.spawn(nats_edge::follow_directory(
        hub.clone(),
        nats.clone(),
        edges.clone(),
    ));
    tasks.spawn(ticks(hub.clone(), edges.clone()));
    tasks.spawn(recording::sweep(config.clone(), edges.clone()));
    let drain = CancellationToken::new();
    let mut tail = JoinSet::new();
    tail.spawn(nats_edge::publish_reports(nats, reports_rx, drain.clone()));
    tail.spawn(recording::write(config.recordings_dir.clone(), disk_rx));
    on_listen(&bound);
    tracing::info!(server = %config.server_id, hls = %bound.hls, ingest = ?bound.ingest,
        rtmp = ?bound.rtmp, srt = ?bound.srt, whip = ?bound.whip, "streamer running");

    shutdown.cancelled().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    // The SRT accept threads see the shutdown within their accept's wait.
    for thread in srt_threads {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    // Camera pulls hang up with the edges; their last parts and reports go out before the
    // queues drain.
    hub.pulls_done(Duration::from_secs(5)).await;
    drop(hub);
    drain.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tail.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Closes gates on time, sends the refusal reports due, and forgets ended playouts.
async fn ticks(hub: Hub, shutdown: CancellationToken) {
    let mut expire = tokio::time::interval(Duration::from_millis(100));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forget = tokio::time::interval(Duration::from_secs(120));
    forget.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = expire.tick() => {
                hub.tick();
            }
            _ = forget.tick() => hub.forget_ended(),
        }
    }
}
