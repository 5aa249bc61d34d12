//! NATS for the tests: a private `nats-server -js` on a spare loopback port (for outage
//! tests), and reading a JetStream stream back message by message.
//!
//! Contract: a [`NatsServer`] and its store directory go with the guard; `stop` and `start`
//! reuse the same port and store, as a restarted server would. Every wait is bounded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;

/// The shared NATS the suite runs against (scripts/services starts it).
pub fn shared_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// The `nats-server` binary: `NATS_SERVER`, else the first on `PATH`, else Debian's.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    l.local_addr().expect("local addr").port()
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// More arguments for nats-server (a login, a config file).
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`NatsServer::start`] with more nats-server arguments, e.g. `--user u --pass p`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: free_tcp_port(),
            dir: tempfile::tempdir().expect("create tempdir"),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.resume();
        server
    }

    /// A directory of the server's own, removed with it (for its config file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and store; returns once it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = nats_server_bin();
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log file");
        let child = Command::new(&bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (install nats-server: scripts/services)",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash or an outage would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One stored message of a stream.
#[derive(Clone, Debug)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub message_id: Option<String>,
    pub payload: Value,
}

pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("these tests need NATS at {url} (run scripts/services): {e}"));
    jetstream::new(client)
}

/// Every message in `stream`, in stream order; empty when the stream does not exist.
pub async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let Ok(mut handle) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let info = handle.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if info.messages == 0 {
        return out;
    }
    for sequence in info.first_sequence..=info.last_sequence {
        let Ok(m) = handle.get_raw_message(sequence).await else {
            continue; // deleted
        };
        let message_id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string());
        out.push(Stored {
            sequence,
            subject: m.subject.to_string(),
            message_id,
            payload: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
        });
    }
    out
}

/// Reads `stream` until `done` holds for its messages, or panics after `limit`.
pub async fn wait_for_stream(
    js: &jetstream::Context,
    stream: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Stored]) -> bool,
) -> Vec<Stored> {
    let deadline = Instant::now() + limit;
    loop {
        let messages = read_stream(js, stream).await;
        if done(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; the stream has {} messages",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`delete_streams`] from synchronous code (a `Drop`), on a thread with its own runtime.
pub fn delete_streams_blocking(url: String, stream_base: String) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(delete_streams(&url, &stream_base));
        }
    })
    .join();
}

/// Deletes the streams of `prefix` (test clean-up; errors are ignored).
pub async fn delete_streams(url: &str, stream_base: &str) {
    let Ok(client) = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
    else {
        return;
    };
    let js = jetstream::new(client);
    for suffix in ["SLOTS", "INGEST", "AUDIT"] {
        let _ = js.delete_stream(format!("{stream_base}_{suffix}")).await;
    }
}
