//! The HTTP edge both public ports share (the api's, and the streamer's viewer port): what a
//! stranger may cost them.
//!
//! Contract: [`serve`] accepts on its listener until `shutdown`, then lets the requests in
//! progress finish for up to [`Limits::grace`]. By [`Limits`]:
//!
//! - at most `max_connections` are open at once; one more is closed at once, unanswered, and
//!   counted through `on_full` (a full listen queue would do the same, later);
//! - a connection must send its first request's headers within `header_timeout`, and every
//!   later request's too (HTTP/1; a client that trickles them byte by byte is closed; the
//!   HTTP/2 preface is held to the same bound);
//! - a request is answered within `request_timeout` (408 after that);
//! - HTTP/2 runs at most `max_streams` requests at once per connection.
//!
//! Handlers see the peer as axum's `ConnectInfo<SocketAddr>`, and the connection as a
//! [`Conn`], through which a handler can cap what waits on one connection (long polls), not
//! per address: many viewers arrive through one cache. Given [`MappedFiles`], the bytes a
//! response holds from them leave by `sendfile` ([`sendfile`]).

pub mod sendfile;

pub use sendfile::MappedFiles;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

/// What one port allows each client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_streams: u32,
    /// How long requests in progress may take to finish after a shutdown.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_streams: 64,
            grace: Duration::from_secs(5),
        }
    }
}

/// One client connection, as its requests see it.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    waiting: Arc<AtomicUsize>,
}

impl Conn {
    /// A place among at most `max` requests waiting on this connection, given back when the
    /// [`Waiting`] drops; `None` when all are taken.
    pub fn wait(&self, max: usize) -> Option<Waiting> {
        let mut now = self.waiting.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match self.waiting.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Waiting {
                        waiting: self.waiting.clone(),
                    })
                }
                Err(actual) => now = actual,
            }
        }
    }
}

/// A request's place among those waiting on its connection.
#[derive(Debug)]
pub struct Waiting {
    waiting: Arc<AtomicUsize>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The HTTP/2 connection preface: a client that starts with a prefix of it is still choosing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on `listener` until `shutdown`, within `limits`; `on_full` is called for
/// each connection closed because `max_connections` were open. Response bytes held in
/// `files` are sent from them by the kernel.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    files: Option<Arc<MappedFiles>>,
    shutdown: CancellationToken,
    on_full: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<()> {
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(limits.header_timeout);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            on_full();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn::default();
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req.extensions_mut().insert(conn.clone());
                req
            });
        let builder = builder.clone();
        let files = files.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            if chose_within(&stream, header_timeout).await {
                let served = builder.serve_connection_with_upgrades(
                    TokioIo::new(sendfile::Connection::new(stream, files)),
                    TowerToHyperService::new(service),
                );
                if let Err(err) = watcher.watch(served.into_owned()).await {
                    tracing::debug!(%remote, %err, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after the shutdown grace; dropped");
    }
    Ok(())
}

/// Whether the client has said, within `limit`, whether it speaks HTTP/2 (the whole preface)
/// or HTTP/1 (anything else); a client that sends nothing, or trickles the preface, has not.
async fn chose_within(stream: &TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = 0;
    loop {
        // `timeout_at` gives the peek its answer even past the deadline when bytes are there.
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => n,
        };
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return true;
        }
        // A prefix of the preface: more must come. `peek` answers at once while the bytes
        // are there, so look again a little later, until the deadline.
        if n == seen {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
        }
        seen = n;
    }
}

/// How often a client trickling the HTTP/2 preface is looked at again.
const POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            );
        let shutdown = CancellationToken::new();
        let full = Arc::new(AtomicU64::new(0));
        let counted = full.clone();
        tokio::spawn(serve(
            listener,
            router,
            limits,
            None,
            shutdown.clone(),
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
            },
        ));
        (addr, shutdown, full)
    }

    /// Reads until the server closes (bounded; a reset counts as closed); what it sent.
    async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
        read.ok().map(|_| String::from_utf8_lossy(&got).to_string())
    }

    #[tokio::test]
    async fn requests_are_answered_with_their_peer() {
        let (addr, shutdown, _) = start(Limits::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&stream.local_addr().unwrap().to_string()));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_client_that_trickles_its_headers_is_closed_at_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, shutdown, _) = start(limits).await;
        // Silent; trickling HTTP/1 headers; trickling the HTTP/2 preface.
        for start in [&b""[..], b"GET /peer HTTP/1.1\r\nHo", b"PRI * HT"] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(start).await.unwrap();
            let closed = read_to_close(&mut stream, Duration::from_secs(10)).await;
            assert!(
                closed.is_some(),
                "{:?} kept open",
                String::from_utf8_lossy(start)
            );
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, shutdown, _) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .expect("closed while idle after its answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_slow_handler_is_answered_408_at_the_request_timeout() {
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, shutdown, _) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn one_connection_over_the_cap_is_closed_and_counted() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, shutdown, full) = start(limits).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            read_to_close(&mut c, Duration::from_secs(10)).await,
            Some(String::new())
        );
        assert_eq!(full.load(Ordering::Relaxed), 1);
        shutdown.cancel();
    }

    #[test]
    fn a_connection_holds_at_most_its_cap_of_waiting_requests() {
        let conn = Conn::default();
        let a = conn.wait(2).unwrap();
        let _b = conn.wait(2).unwrap();
        assert!(conn.wait(2).is_none());
        drop(a);
        assert!(conn.wait(2).is_some());
    }
}
