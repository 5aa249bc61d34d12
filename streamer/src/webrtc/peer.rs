//! The peer driver: one str0m [`Rtc`] and the UDP socket it speaks on, whatever the peer does
//! with media (receives it for WHIP, sends it for WHEP).
//!
//! Contract: the only code that feeds an `Rtc` and writes its datagrams. [`Peer::poll`] reads
//! what the socket holds (at most [`DATAGRAMS_PER_POLL`]), feeds each datagram, then the
//! timeout if it is due, and after each drains the `Rtc` to its next timeout (str0m's rule:
//! every mutation is followed by a full drain): datagrams to send go out at once (one the
//! kernel cannot take is dropped and counted, as the network would), events wait in a queue
//! for [`Peer::poll_event`]. A holder that mutates the `Rtc` itself ([`Peer::rtc`]: a
//! `writer(mid)` to send media or ask for a keyframe) calls [`Peer::drain`] right after.
//! Events are bounded by what one poll read; the holder takes them after every poll. No
//! clock (time is passed in), no tokio: the socket is anything that reads and writes
//! datagrams without blocking ([`Datagrams`]: a non-blocking std socket polled on a grid, or a
//! tokio socket a task awaits).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::StreamerError;

/// Datagrams one poll reads at most, so one busy peer cannot hold its poller: at 25 ms polls,
/// 256 datagrams of 1,200 bytes are about 100 Mbit/s.
pub const DATAGRAMS_PER_POLL: usize = 256;
/// The largest datagram read whole (a WebRTC peer keeps under the path MTU, about 1,200).
pub const DATAGRAM_MAX: usize = 2048;

/// A socket that reads and writes datagrams without blocking.
pub trait Datagrams {
    /// A datagram and who sent it; `WouldBlock` when none waits.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Sends one datagram now, or fails with `WouldBlock`.
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A std socket set non-blocking ([`Peer::new`] does).
impl Datagrams for std::net::UdpSocket {
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(buf, to)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        std::net::UdpSocket::local_addr(self)
    }
}

impl Datagrams for tokio::net::UdpSocket {
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf)
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::try_send_to(self, buf, to)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Datagrams read and fed.
    pub datagrams: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// One WebRTC peer: its `Rtc`, its socket, and the events it has produced.
pub struct Peer<S: Datagrams = std::net::UdpSocket> {
    rtc: Rtc,
    socket: S,
    local: SocketAddr,
    events: VecDeque<Event>,
    /// When the `Rtc` next wants a timeout.
    due: Instant,
    /// Datagrams the kernel would not take at once (dropped).
    dropped: u64,
}

impl Peer<std::net::UdpSocket> {
    /// A peer on a std socket, which is made non-blocking.
    pub fn on_std(
        config: RtcConfig,
        socket: std::net::UdpSocket,
        now: Instant,
    ) -> Result<Self, StreamerError> {
        socket.set_nonblocking(true)?;
        Self::new(config, socket, now)
    }
}

impl<S: Datagrams> Peer<S> {
    /// A peer whose `Rtc` is built from `config` at `now`, with its socket's address as its one
    /// host candidate (the socket must be bound to the address the other peer can reach, not
    /// to an unspecified one). `config` must carry a crypto provider and a certificate
    /// ([`super::Crypto::rtc_config`]).
    pub fn new(config: RtcConfig, socket: S, now: Instant) -> Result<Self, StreamerError> {
        let local = socket.local_addr()?;
        if local.ip().is_unspecified() {
            return Err(StreamerError::WebRtc(format!(
                "a peer's socket must be bound to an address peers can reach, not {local}"
            )));
        }
        let mut rtc = config.build(now);
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| StreamerError::WebRtc(format!("host candidate {local}: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut peer = Self {
            rtc,
            socket,
            local,
            events: VecDeque::new(),
            due: now,
            dropped: 0,
        };
        peer.drain(now)?;
        Ok(peer)
    }

    /// The `Rtc`, to negotiate (`sdp_api`) or to send (`writer(mid)`). Call [`Peer::drain`]
    /// after changing it.
    pub fn rtc(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// The address of the peer's host candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// When the `Rtc` wants to be polled even if nothing arrives.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Whether the `Rtc` still runs (not disconnected, DTLS not closed).
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// Datagrams dropped so far because the kernel would not take them at once.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Says goodbye (RTCP BYE, DTLS close_notify) and sends it at `now`: the other peer
    /// learns the session is over without waiting for its ICE checks to fail.
    pub fn close(&mut self, now: Instant) {
        if self.rtc.close().is_ok() {
            let _ = self.drain(now);
        }
    }

    /// The next event the peer produced, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Reads what the socket holds into `scratch` (at least [`DATAGRAM_MAX`] bytes) and feeds
    /// it, then the timeout if it is due by `now`; events wait for [`Peer::poll_event`]. An
    /// error means the peer is over.
    pub fn poll(&mut self, now: Instant, scratch: &mut [u8]) -> Result<Polled, StreamerError> {
        let mut polled = Polled::default();
        while polled.datagrams < DATAGRAMS_PER_POLL {
            let (n, source) = match self.socket.try_recv_from(scratch) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP "port unreachable" for an earlier send: not this socket's end.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            };
            polled.datagrams += 1;
            polled.bytes += n;
            self.feed(now, source, &scratch[..n])?;
        }
        if now >= self.due {
            self.rtc
                .handle_input(Input::Timeout(now))
                .map_err(rtc_error)?;
            self.drain(now)?;
        }
        Ok(polled)
    }

    /// One datagram from `source`, received at `now`. Bytes that are no WebRTC datagram (not
    /// STUN, DTLS, RTP or RTCP) are ignored; so are datagrams the `Rtc` does not take (another
    /// peer's STUN, a stranger's noise).
    pub fn feed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), StreamerError> {
        let Ok(contents) = datagram.try_into() else {
            return Ok(());
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if !self.rtc.accepts(&input) {
            return Ok(());
        }
        self.rtc.handle_input(input).map_err(rtc_error)?;
        self.drain(now)
    }

    /// Drains the `Rtc` to its next timeout: datagrams out, events queued. After every change
    /// of the `Rtc` made through [`Peer::rtc`].
    pub fn drain(&mut self, now: Instant) -> Result<(), StreamerError> {
        loop {
            match self.rtc.poll_output().map_err(rtc_error)? {
                Output::Timeout(due) => {
                    // A deadline in the past is due at the next poll, not in a busy loop.
                    self.due = due.max(now);
                    return Ok(());
                }
                Output::Transmit(t) => match self.socket.try_send_to(&t.contents, t.destination) {
                    Ok(_) => {}
                    Err(e) if is_transient(&e) => self.dropped += 1,
                    Err(e) => return Err(e.into()),
                },
                Output::Event(event) => self.events.push_back(event),
            }
        }
    }
}

/// A send error that loses one datagram, not the peer: a full buffer, or the ICMP answer to
/// an earlier one.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
    )
}

fn rtc_error(e: str0m::RtcError) -> StreamerError {
    StreamerError::WebRtc(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webrtc::Crypto;
    use std::time::Duration;
    use str0m::media::{Direction, MediaKind, MediaTime, Mid};

    fn socket() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    /// Polls both peers every millisecond (of a real clock: sockets are real) until `done`
    /// holds on an event of `b`, for at most five seconds; the events of `a` are handed to
    /// `on_a`.
    fn run(
        a: &mut Peer,
        b: &mut Peer,
        mut on_a: impl FnMut(&mut Peer, Event),
        mut done: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut scratch = vec![0u8; DATAGRAM_MAX];
        while Instant::now() < deadline {
            let now = Instant::now();
            a.poll(now, &mut scratch).unwrap();
            while let Some(e) = a.poll_event() {
                on_a(a, e);
            }
            b.poll(now, &mut scratch).unwrap();
            while let Some(e) = b.poll_event() {
                if done(&e) {
                    return e;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("not within five seconds");
    }

    #[test]
    fn a_sending_peer_and_an_ice_lite_receiving_peer_connect_and_a_frame_crosses() {
        let crypto = Crypto::new().unwrap();
        let now = Instant::now();
        // The sender offers (as a WHIP publisher does); the receiver answers in ICE-lite (as
        // the streamer does).
        let mut a = Peer::on_std(crypto.rtc_config(), socket(), now).unwrap();
        let mut b = Peer::on_std(crypto.rtc_config().set_ice_lite(true), socket(), now).unwrap();
        let mut change = a.rtc().sdp_api();
        let mid: Mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("an offer");
        a.drain(now).unwrap();
        let answer = b.rtc().sdp_api().accept_offer(offer).unwrap();
        b.drain(now).unwrap();
        a.rtc().sdp_api().accept_answer(pending, answer).unwrap();
        a.drain(now).unwrap();

        // Once connected, the sender writes one Opus frame through its writer.
        let frame = b"an opus frame".to_vec();
        let sent = frame.clone();
        let mut written = false;
        let got = run(
            &mut a,
            &mut b,
            |a, event| {
                if matches!(event, Event::Connected) && !written {
                    let now = Instant::now();
                    let writer = a.rtc().writer(mid).expect("a writer for the mid");
                    let pt = writer.payload_params().next().expect("a codec").pt();
                    let at = MediaTime::from_millis(20);
                    writer.write(pt, now, at, sent.clone()).unwrap();
                    a.drain(now).unwrap();
                    written = true;
                }
            },
            |e| matches!(e, Event::MediaData(_)),
        );
        let Event::MediaData(data) = got else {
            unreachable!("run returns what `done` accepted")
        };
        assert_eq!(data.mid, mid);
        assert_eq!(&data.data[..], &frame[..]);
        assert!(a.is_alive() && b.is_alive());
        assert_eq!(a.dropped() + b.dropped(), 0);
    }

    #[tokio::test]
    async fn a_peer_on_a_tokio_socket_is_driven_by_awaiting_it() {
        // The shape of a task that holds a peer (a WHEP viewer's, say): await the socket or
        // the peer's deadline, then poll.
        let crypto = Crypto::new().unwrap();
        let now = Instant::now();
        let tokio_socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut a = Peer::on_std(crypto.rtc_config(), socket(), now).unwrap();
        let mut b = Peer::new(crypto.rtc_config().set_ice_lite(true), tokio_socket, now).unwrap();
        let mut change = a.rtc().sdp_api();
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("an offer");
        a.drain(now).unwrap();
        let answer = b.rtc().sdp_api().accept_offer(offer).unwrap();
        b.drain(now).unwrap();
        a.rtc().sdp_api().accept_answer(pending, answer).unwrap();
        a.drain(now).unwrap();
        let mut scratch = vec![0u8; DATAGRAM_MAX];
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                a.poll(Instant::now(), &mut scratch).unwrap();
                while a.poll_event().is_some() {}
                let due = tokio::time::Instant::from_std(b.due().min(a.due()));
                tokio::select! {
                    _ = b.socket().readable() => {}
                    () = tokio::time::sleep_until(due) => {}
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                b.poll(Instant::now(), &mut scratch).unwrap();
                while let Some(event) = b.poll_event() {
                    if matches!(event, Event::Connected) {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(connected.is_ok(), "not connected within 5 s");
    }

    #[test]
    fn a_socket_bound_to_no_address_in_particular_is_refused() {
        let crypto = Crypto::new().unwrap();
        let any = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let err = Peer::on_std(crypto.rtc_config(), any, Instant::now())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not 0.0.0.0:"), "{err}");
    }

    #[test]
    fn noise_from_a_stranger_is_ignored() {
        let crypto = Crypto::new().unwrap();
        let now = Instant::now();
        let mut peer = Peer::on_std(crypto.rtc_config().set_ice_lite(true), socket(), now).unwrap();
        let stranger = socket();
        for noise in [
            &b""[..],
            b"GET / HTTP/1.1\r\n\r\n",
            &[0x80; 40],
            &[0x16; 13],
        ] {
            stranger.send_to(noise, peer.local_addr()).unwrap();
        }
        let mut scratch = vec![0u8; DATAGRAM_MAX];
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut read = 0;
        while read < 4 && Instant::now() < deadline {
            read += peer.poll(Instant::now(), &mut scratch).unwrap().datagrams;
        }
        assert_eq!(read, 4);
        assert!(peer.is_alive());
        assert!(peer.poll_event().is_none());
    }
}
