//! A publisher's TCP socket, as every ingest edge (RTSP in `crate::ingest`, RTMP in
//! `crate::rtmp_edge`) holds it: read on readiness while the publisher proves its key, on the
//! poll grid ([`crate::poller`]) once media flows.
//!
//! Contract: the only code that reads or writes a publisher's TCP socket. Reads hand each
//! piece to the caller's closure and stop when the kernel holds no more (or after a given
//! number of reads); writes the kernel cannot take at once wait here, bounded in bytes
//! ([`UNSENT_MAX`]) and in time ([`WRITE_TIMEOUT`]); past either the publisher is over. No
//! protocol here: what the bytes mean is the session's business. [`accept`] takes each new
//! connection only if the per-source limits before authentication let it in
//! ([`crate::ingest_limits`]), whichever protocol the listener speaks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::ingest_limits::{Limits, Place};
use crate::rtsp::CloseReason;

/// A publisher that cannot take a response within this long is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers waiting for a publisher to read them, at most: past this the connection goes. While
/// any wait, nothing more is read from it, so only requests already read can add to them.
pub(crate) const UNSENT_MAX: usize = 256 * 1024;
/// Reads of the buffer per poll at most, so one fast publisher cannot hold its poller shard:
/// with the shard's 64 KiB buffer, 1 MiB per poll, 335 Mbit/s at the default 25 ms period.
const READS_PER_POLL: usize = 16;
/// Before RECORD, one read of the exchange's 16 KiB buffer per wake: whatever it holds is
/// answered (and the answers written, or the reading stops) before the next.
const READS_PER_EXCHANGE: usize = 1;

/// A connection just accepted, with its place among those not yet publishing.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub place: Place,
}

/// The next connection on the `carrier` listener `socket` that `limits` lets in; `None` at
/// `shutdown`. One turned away is closed without a word, as a full listen queue would, and
/// counted (logged at most once per hush period).
pub(crate) async fn accept(
    hub: &Hub,
    limits: &Arc<Limits>,
    carrier: &str,
    socket: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<Accepted> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = socket.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%carrier, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match limits.admit(remote.ip()) {
            Ok((place, took)) => {
                if took {
                    hub.metrics().refused("unauth_evicted");
                }
                return Some(Accepted {
                    stream,
                    remote,
                    place,
                });
            }
            Err(turned) => {
                hub.metrics().refused(turned.label());
                if let Some(held_back) = hub.hush(turned.label()) {
                    tracing::warn!(%carrier, %remote, held_back,
                        why = turned.label(), "connection turned away before publishing");
                }
            }
        }
    }
}

/// Where a connection stands with its publisher's socket.
pub(crate) enum Polled {
    /// Read what was there (maybe nothing); the connection goes on.
    Open,
    /// The connection is over, for this reason.
    Closed(CloseReason),
}

/// A publisher's TCP socket: read on readiness during the RTSP exchange, on the poll grid once
/// media flows.
///
/// While registered with tokio's reactor, every burst the publisher sends wakes a worker: right
/// for the exchange before RECORD, where each answer is awaited, but about one wake per video
/// frame per publisher once media flows. [`IngestSocket::poll_from_now`] takes the socket out of
/// the reactor; from then on a poller shard reads it once per period, with every other
/// connection it holds ([`crate::poller`]). Writes (RTSP responses) that the kernel cannot
/// take at once wait in `out` for the next read, bounded by `WRITE_TIMEOUT`.
pub(crate) struct IngestSocket {
    stream: Stream,
    pub(crate) out: Vec<u8>,
    /// Since when `out` has waited for the publisher to read.
    out_since: Option<Instant>,
}

enum Stream {
    Registered(TcpStream),
    Polled(std::net::TcpStream),
    /// Lost while being taken out of the reactor.
    Gone,
}

impl IngestSocket {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream: Stream::Registered(stream),
            out: Vec::new(),
            out_since: None,
        }
    }

    pub(crate) fn is_polled(&self) -> bool {
        !matches!(self.stream, Stream::Registered(_))
    }

    /// Takes the socket out of the reactor: from now on it is read only when polled. On an
    /// error the socket is gone.
    pub(crate) fn poll_from_now(&mut self) -> std::io::Result<()> {
        if let Stream::Registered(stream) = std::mem::replace(&mut self.stream, Stream::Gone) {
            let stream = stream.into_std()?;
            stream.set_nonblocking(true)?;
            self.stream = Stream::Polled(stream);
        }
        Ok(())
    }

    /// Waits until the registered socket can be read, or written while `out` waits. A polled
    /// socket never wakes its task by itself: this then waits forever (the poll timer wakes it).
    pub(crate) async fn ready(&self) {
        match &self.stream {
            // While answers wait, only the publisher reading them wakes the task.
            Stream::Registered(stream) if self.out.is_empty() => {
                let _ = stream.readable().await;
            }
            Stream::Registered(stream) => {
                let _ = stream.writable().await;
            }
            Stream::Polled(_) | Stream::Gone => std::future::pending().await,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &self.stream {
            Stream::Registered(stream) => stream.try_read(buf),
            Stream::Polled(stream) => std::io::Read::read(&mut &*stream, buf),
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.stream {
            Stream::Registered(stream) => stream.try_write(bytes),
            Stream::Polled(stream) => std::io::Write::write(&mut &*stream, bytes),
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// [`IngestSocket::read`] as many times as the socket's stage allows: once on readiness
    /// ([`READS_PER_EXCHANGE`]), [`READS_PER_POLL`] times at a poll.
    pub(crate) fn read_available(&mut self, buf: &mut [u8], input: impl FnMut(&[u8])) -> Polled {
        let reads = if self.is_polled() {
            READS_PER_POLL
        } else {
            READS_PER_EXCHANGE
        };
        self.read(buf, reads, input)
    }

    /// Reads into `buf` until the kernel holds no more (or `reads` reads), handing each piece
    /// to `input`.
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        reads: usize,
        mut input: impl FnMut(&[u8]),
    ) -> Polled {
        for _ in 0..reads {
            match self.try_read(buf) {
                Ok(0) => return Polled::Closed(CloseReason::PeerClosed),
                Ok(n) => {
                    input(&buf[..n]);
                    // A read that did not fill the buffer took everything there was.
                    if n < buf.len() {
                        return Polled::Open;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Polled::Open,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Polled::Closed(CloseReason::Ended(format!("read: {err}"))),
            }
        }
        Polled::Open
    }

    /// Queues `bytes` behind anything still unsent and writes what the kernel takes; past
    /// [`UNSENT_MAX`] unsent, the publisher is over.
    pub(crate) fn send(&mut self, now: Instant, bytes: &[u8]) -> Polled {
        self.out.extend_from_slice(bytes);
        let polled = self.flush(now);
        if self.out.len() > UNSENT_MAX {
            return Polled::Closed(CloseReason::Ended(
                "the publisher does not read its answers".into(),
            ));
        }
        polled
    }

    /// Writes what waits; a publisher that has taken nothing for `WRITE_TIMEOUT` is over.
    pub(crate) fn flush(&mut self, now: Instant) -> Polled {
        while !self.out.is_empty() {
            match self.try_write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                    self.out_since = Some(now);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Polled::Closed(CloseReason::Ended(format!("write: {err}"))),
            }
        }
        if self.out.is_empty() {
            self.out_since = None;
            return Polled::Open;
        }
        let since = *self.out_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= WRITE_TIMEOUT {
            return Polled::Closed(CloseReason::Ended("the publisher stopped reading".into()));
        }
        Polled::Open
    }

    /// Writes what the kernel takes at once of what waits, then closes.
    pub(crate) fn close(mut self) {
        let _ = self.flush(Instant::now());
        self.shutdown();
    }

    /// Closes both directions; what the publisher sent and we did not read is discarded.
    pub(crate) fn shutdown(self) {
        let stream = match self.stream {
            Stream::Registered(stream) => stream.into_std(),
            Stream::Polled(stream) => Ok(stream),
            Stream::Gone => return,
        };
        if let Ok(stream) = stream {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair on loopback: our end (registered, as accepted) and the publisher's.
    async fn pair() -> (IngestSocket, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let publisher = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(addr));
        let (ours, _) = listener.accept().await.unwrap();
        (IngestSocket::new(ours), publisher.await.unwrap().unwrap())
    }

    /// Polls until `want` bytes came in or the publisher closed; bounded.
    fn poll_for(socket: &mut IngestSocket, want: usize) -> (Vec<u8>, Option<CloseReason>) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..500 {
            if let Polled::Closed(reason) =
                socket.read(&mut buf, READS_PER_POLL, |b| got.extend_from_slice(b))
            {
                return (got, Some(reason));
            }
            if got.len() >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (got, None)
    }

    #[tokio::test]
    async fn the_exchange_is_read_on_readiness_and_media_on_the_poll_grid() {
        use std::io::Write;
        let (mut socket, mut publisher) = pair().await;
        assert!(!socket.is_polled());

        // Registered: the socket wakes its task when the publisher writes.
        publisher.write_all(b"OPTIONS").unwrap();
        tokio::time::timeout(Duration::from_secs(5), socket.ready())
            .await
            .expect("a registered socket wakes when the publisher writes");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        assert!(matches!(
            socket.read(&mut buf, READS_PER_POLL, |b| got.extend_from_slice(b)),
            Polled::Open
        ));
        assert_eq!(got, b"OPTIONS");

        // Out of the reactor: what is sent is read when polled, none of it lost.
        publisher.write_all(b"RECORD").unwrap();
        socket.poll_from_now().unwrap();
        assert!(socket.is_polled());
        let sent: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        publisher.write_all(&sent).unwrap();
        let (got, closed) = poll_for(&mut socket, 6 + sent.len());
        assert_eq!(&got[..6], b"RECORD");
        assert_eq!(
            &got[6..],
            &sent[..],
            "one poll takes more than a buffer in several reads"
        );
        assert!(closed.is_none());
        // A polled socket never wakes its task by itself.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), socket.ready())
                .await
                .is_err()
        );

        publisher.write_all(b"last words").unwrap();
        drop(publisher);
        let (got, closed) = poll_for(&mut socket, usize::MAX);
        assert_eq!(got, b"last words");
        assert!(
            matches!(closed, Some(CloseReason::PeerClosed)),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn a_publisher_that_stops_reading_is_dropped_after_the_write_timeout() {
        use std::io::Read;
        let (mut socket, mut publisher) = pair().await;
        socket.poll_from_now().unwrap();
        let start = Instant::now();
        // Fill what the kernel buffers between the two ends until some waits in `out`.
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..1024 {
            assert!(matches!(socket.send(start, &chunk), Polled::Open));
            if !socket.out.is_empty() {
                break;
            }
        }
        assert!(!socket.out.is_empty(), "the kernel took 64 MiB");
        let waiting = socket.out.len();

        // Still within the timeout: kept, and nothing is lost.
        let later = start + WRITE_TIMEOUT - Duration::from_millis(1);
        assert!(matches!(socket.flush(later), Polled::Open));

        // The publisher reads a little: that is progress, so the clock starts again. It reads
        // what is there until some of `out` has gone (bounded), all at `later`.
        publisher.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        for _ in 0..200 {
            let _ = publisher.read(&mut sink);
            std::thread::sleep(Duration::from_millis(5));
            assert!(matches!(socket.flush(later), Polled::Open));
            if socket.out.len() < waiting {
                break;
            }
        }
        assert!(
            socket.out.len() < waiting,
            "the flush wrote what the publisher made room for"
        );
        // Keep some waiting, so the clock has something to time.
        for _ in 0..1024 {
            if !socket.out.is_empty() {
                break;
            }
            assert!(matches!(socket.send(later, &chunk), Polled::Open));
        }
        assert_eq!(socket.out_since, Some(later));
        assert!(matches!(
            socket.flush(later + WRITE_TIMEOUT - Duration::from_millis(1)),
            Polled::Open
        ));

        // Then nothing for the whole timeout: dropped, and said why.
        match socket.flush(later + WRITE_TIMEOUT) {
            Polled::Closed(CloseReason::Ended(why)) => {
                assert_eq!(why, "the publisher stopped reading")
            }
            Polled::Closed(other) => panic!("closed for {other}"),
            Polled::Open => panic!("kept a publisher that read nothing for the timeout"),
        }
    }

    #[tokio::test]
    async fn a_publisher_whose_unread_answers_pass_the_cap_is_dropped() {
        let (mut socket, _publisher) = pair().await;
        let now = Instant::now();
        let answer = vec![b'a'; 1024];
        let mut sent = 0usize;
        let closed = loop {
            match socket.send(now, &answer) {
                Polled::Open => sent += answer.len(),
                Polled::Closed(reason) => break reason,
            }
            assert!(sent < 256 << 20, "256 MiB sent and never dropped");
        };
        match closed {
            CloseReason::Ended(why) => assert_eq!(why, "the publisher does not read its answers"),
            other => panic!("closed for {other}"),
        }
        assert!(socket.out.len() <= UNSENT_MAX + answer.len());
    }
}
