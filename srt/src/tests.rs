//! Against the real libsrt, on loopback: what a publisher and the listener each see.

use super::*;
use std::sync::Mutex;
use std::time::Instant;

/// Admits the stream ids it was given; refuses the others with 1403; says what it saw.
struct Gate {
    admit: &'static str,
    seen: Mutex<Vec<(SocketAddr, String)>>,
}

impl Gatekeeper for Gate {
    fn check(&self, peer: SocketAddr, stream_id: &str) -> std::result::Result<(), i32> {
        self.seen
            .lock()
            .unwrap()
            .push((peer, stream_id.to_string()));
        match stream_id {
            "panic" => panic!("a gatekeeper bug"),
            "low" => Err(7),
            id if id == self.admit => Ok(()),
            _ => Err(1403),
        }
    }
}

fn listen(admit: &'static str) -> (Listener, Arc<Gate>) {
    let gate = Arc::new(Gate {
        admit,
        seen: Mutex::new(Vec::new()),
    });
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind(loopback, Duration::from_millis(120), gate.clone()).unwrap();
    assert_ne!(listener.local_addr().port(), 0);
    (listener, gate)
}

const WAIT: Duration = Duration::from_secs(5);

/// Accepts, polling up to the deadline.
fn accept(listener: &Listener) -> Accepted {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(accepted) = listener.accept(Duration::from_millis(100)).unwrap() {
            return accepted;
        }
    }
    panic!("nothing accepted in {WAIT:?}");
}

#[test]
fn an_admitted_caller_is_accepted_with_its_stream_id_and_its_messages_arrive_in_order() {
    let (listener, gate) = listen("#!::r=r-1,k=key");
    let addr = listener.local_addr();
    let caller = std::thread::spawn(move || {
        let socket = connect(addr, "#!::r=r-1,k=key", Duration::from_millis(120), WAIT).unwrap();
        for i in 0..20u8 {
            socket.send(&[i; 1316]).unwrap();
        }
        socket
    });
    let accepted = accept(&listener);
    assert_eq!(accepted.stream_id, "#!::r=r-1,k=key");
    assert_eq!(accepted.peer.ip().to_string(), "127.0.0.1");
    assert_eq!(
        gate.seen.lock().unwrap()[0],
        (accepted.peer, accepted.stream_id.clone())
    );
    let _caller_socket = caller.join().unwrap();

    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + WAIT;
    while got.len() < 20 && Instant::now() < deadline {
        match accepted.socket.recv(&mut buf).unwrap() {
            Some(n) => {
                assert_eq!(n, 1316);
                got.push(buf[0]);
            }
            // Nothing waiting: recv does not block, so the test polls.
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
}

#[test]
fn a_refused_caller_gets_the_gatekeepers_code_and_is_never_accepted() {
    let (listener, gate) = listen("#!::r=r-1,k=key");
    let addr = listener.local_addr();
    for (stream_id, code) in [
        ("#!::r=r-1,k=wrong", 1403),
        ("", 1403),
        // Below the application's range: raised to its floor, never one of libsrt's own.
        ("low", REJECT_APPLICATION_MIN),
        // A gatekeeper that panics refuses, and the process goes on.
        ("panic", REJECT_INTERNAL),
    ] {
        let refused = connect(addr, stream_id, Duration::from_millis(120), WAIT);
        assert_eq!(
            refused.err(),
            Some(SrtError::Rejected(code)),
            "{stream_id:?}"
        );
    }
    assert!(listener
        .accept(Duration::from_millis(200))
        .unwrap()
        .is_none());
    let seen: Vec<String> = gate
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(seen, ["#!::r=r-1,k=wrong", "", "low", "panic"]);
}

#[test]
fn a_caller_that_leaves_is_seen_closed() {
    let (listener, _) = listen("x");
    let caller = connect(listener.local_addr(), "x", Duration::from_millis(120), WAIT).unwrap();
    let accepted = accept(&listener);
    drop(caller);
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + WAIT;
    let closed = loop {
        match accepted.socket.recv(&mut buf) {
            Err(SrtError::Closed) => break true,
            _ if Instant::now() >= deadline => break false,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(closed, "still connected after the caller closed");
    assert!(!accepted.socket.is_connected());
}

#[test]
fn nobody_listening_and_bad_stream_ids_are_errors_not_hangs() {
    // A port nobody listens on: the connect timeout, not a hang.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let err = connect(
        addr,
        "x",
        Duration::from_millis(120),
        Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(
        matches!(err, SrtError::Call { .. } | SrtError::Rejected(_)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < WAIT,
        "connect waited {:?}",
        started.elapsed()
    );
    let long = "x".repeat(513);
    assert_eq!(
        connect(addr, &long, Duration::ZERO, WAIT).unwrap_err(),
        SrtError::BadStreamId
    );
}

#[test]
fn the_gatekeeper_is_let_go_with_its_listener_and_a_port_taken_keeps_nothing() {
    let (listener, gate) = listen("x");
    let addr = listener.local_addr();
    assert_eq!(Arc::strong_count(&gate), 2, "the test's and the listener's");
    drop(listener);
    assert_eq!(
        Arc::strong_count(&gate),
        1,
        "the listener held on to its gatekeeper"
    );
    // A bind that fails keeps nothing either.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port_taken = taken.local_addr().unwrap();
    let err = Listener::bind(port_taken, Duration::from_millis(120), gate.clone()).unwrap_err();
    assert!(matches!(err, SrtError::Call { .. }), "{err:?}");
    assert_eq!(Arc::strong_count(&gate), 1);
    // And a caller to the closed listener is not admitted.
    assert!(connect(
        addr,
        "x",
        Duration::from_millis(120),
        Duration::from_millis(500)
    )
    .is_err());
}
