//! A NATS cluster of the test's own: `nats-server -js` nodes on loopback ports picked for
//! them, routed to each other, their stores in one temporary directory; and reading a stream
//! back from it while it may be electing a leader.
//!
//! Contract: every node is killed and the directory removed when the [`NatsCluster`] drops;
//! [`NatsCluster::kill`] is SIGKILL (a crash, nothing flushed) and [`NatsCluster::restart`]
//! brings the node back on the same ports and store, as a restarted machine would. Every wait
//! is bounded. The shared NATS on 4222 is never touched. `scripts/cluster` starts the same
//! cluster by hand.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use serde_json::Value;

use super::nats::{free_tcp_port, nats_server_bin, Stored};

/// One node: its ports (client, route, monitoring) and, while it runs, its process.
struct Node {
    name: String,
    client: u16,
    route: u16,
    monitor: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    cluster_name: String,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes and returns once every one of them is healthy (JetStream on, a
    /// meta leader elected).
    pub async fn start(size: usize) -> Self {
        // All the ports at once, held together, so no two of them are the same.
        let held: Vec<std::net::TcpListener> = (0..size * 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port"))
            .collect();
        let port = |i: usize| held[i].local_addr().expect("local addr").port();
        let nodes: Vec<Node> = (0..size)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: port(3 * i),
                route: port(3 * i + 1),
                monitor: port(3 * i + 2),
                child: None,
            })
            .collect();
        drop(held);
        let mut cluster = Self {
            nodes,
            cluster_name: format!("slotcast-test-{}", free_tcp_port()),
            dir: tempfile::tempdir().expect("create tempdir"),
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_healthy(i, Duration::from_secs(30)).await;
        }
        cluster
    }

    /// `NATS_URL` for the whole cluster: every node's URL, separated by commas.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// The node's server name (`n1`, `n2`, …), as JetStream names a stream's leader.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn spawn(&mut self, i: usize) {
        let bin = nats_server_bin();
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route))
            .collect();
        let node = &self.nodes[i];
        let log_path = self.dir.path().join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-n", &node.name])
            .args(["-p", &node.client.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .args(["--cluster_name", &self.cluster_name])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", node.route))
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(self.dir.path().join(&node.name))
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
        self.nodes[i].child = Some(child);
    }

    /// SIGKILL node `i`: a crash, with nothing flushed or said to the others.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store; returns once it is healthy again (back
    /// in the cluster, its streams caught up).
    pub async fn restart(&mut self, i: usize, limit: Duration) {
        assert!(self.nodes[i].child.is_none(), "{} is running", self.name(i));
        self.spawn(i);
        self.wait_healthy(i, limit).await;
    }

    /// Waits until node `i`'s `/healthz` answers 200: JetStream is up, the node is in touch
    /// with a meta leader, and its streams and consumers are current.
    pub async fn wait_healthy(&mut self, i: usize, limit: Duration) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].monitor);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited ({status}): {}", self.nodes[i].name, self.log(i));
                }
            }
            let last = match http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => format!(
                    "{}: {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {limit:?}: {last}",
                self.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `i`'s log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name)))
            .unwrap_or_default()
    }

    /// A JetStream client of the test's own, which may use any node.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.urls())
            .await
            .unwrap_or_else(|e| panic!("connect to the test cluster {}: {e}", self.url()));
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        js
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The name of the server leading `stream`, once it has one (bounded).
pub async fn stream_leader(js: &jetstream::Context, stream: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut handle) = js.get_stream(stream).await {
            if let Ok(info) = handle.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    return leader;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{stream} has no leader within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message in `stream`, in stream order, read again from the start while any read
/// fails (a leader election, a client moving to another node), within `limit`.
pub async fn read_stream(js: &jetstream::Context, stream: &str, limit: Duration) -> Vec<Stored> {
    let deadline = Instant::now() + limit;
    loop {
        match try_read_stream(js, stream).await {
            Ok(messages) => return messages,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cannot read {stream} within {limit:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn try_read_stream(js: &jetstream::Context, stream: &str) -> Result<Vec<Stored>, String> {
    let mut handle = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let state = handle
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let m = match handle.get_raw_message(sequence).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => continue, // deleted
            Err(e) => return Err(format!("message {sequence}: {e}")),
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
    Ok(out)
}
