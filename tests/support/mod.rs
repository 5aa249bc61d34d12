//! Shared harness for the end-to-end tests: a database of each test's own, the built
//! `slotcast` binary as a child process, tokens, a real chrony, and an HTTP client.
//!
//! Contract: everything a test starts is stopped and removed when its guard drops (the
//! database too); every wait is bounded; only loopback addresses are used, or addresses in
//! network namespaces the test made itself (`netns`). No Postgres means a loud failure, never
//! a skip.
#![allow(dead_code)]

pub mod camera;
pub mod chrony;
pub mod nats;
pub mod nats_cluster;
pub mod netns;
pub mod nginx;
pub mod postgres;
pub mod streaming;
pub mod terminal;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

pub const BIN: &str = env!("CARGO_BIN_EXE_slotcast");

fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh database, dropped (forcibly) with the guard, and a NATS subject prefix of the
/// test's own, whose streams on the shared NATS go with the guard too.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
    /// `SLOTCAST_NATS_PREFIX` for every role this test starts.
    pub nats_prefix: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on(&base_url()).await
    }

    /// A fresh database on the Postgres at `admin_url` (a private one, say).
    pub async fn on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_string();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("slotcast_t_{id}");
        let nats_prefix = format!("t_{}", &id[..16]);
        let mut conn = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "these tests need Postgres at DATABASE_URL={admin_url} (run scripts/services): {e}"
            )
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = match admin_url.rfind('/') {
            Some(i) if admin_url[..i].contains("://") && admin_url[..i].len() > 10 => {
                let query = admin_url[i..]
                    .find('?')
                    .map(|q| &admin_url[i + q..])
                    .unwrap_or("");
                format!("{}/{name}{query}", &admin_url[..i])
            }
            _ => panic!("DATABASE_URL must name a database: {admin_url}"),
        };
        Self {
            name,
            url,
            admin_url,
            nats_prefix,
        }
    }

    /// The stream names of this test's prefix: `<base>_SLOTS`, `<base>_INGEST`, `<base>_AUDIT`.
    pub fn stream_base(&self) -> String {
        self.nats_prefix.to_ascii_uppercase()
    }

    pub fn slots_stream(&self) -> String {
        format!("{}_SLOTS", self.stream_base())
    }

    pub fn ingest_stream(&self) -> String {
        format!("{}_INGEST", self.stream_base())
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// Runs a query returning one JSON value (e.g. `SELECT json_agg(...)`).
    /// Loads `tests/fixtures/before_issue17.sql`: a database as slotcast wrote it before
    /// issue 17 (migrations, events and read model of that time).
    pub async fn load_before_issue17(&self) {
        let dump = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/before_issue17.sql"
        ))
        .expect("the fixture");
        // Its own connection: the dump empties the search_path.
        let mut conn = self.connect().await;
        sqlx::raw_sql(&dump)
            .execute(&mut conn)
            .await
            .expect("load the fixture");
        let _ = conn.close().await;
    }

    pub async fn json(&self, sql: &str) -> Value {
        let mut conn = self.connect().await;
        let v: Option<Value> = sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql);
        v.unwrap_or(Value::Null)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let mut conn = self.connect().await;
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let streams = self.stream_base();
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    nats::delete_streams(&nats::shared_url(), &streams).await;
                    if let Ok(mut conn) = PgConnection::connect(&admin).await {
                        let _ = conn
                            .execute(
                                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Runs `slotcast` to completion with `DATABASE_URL` set; returns (status, stdout, stderr).
pub fn slotcast(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("SLOTCAST_LOG", "error")
        .output()
        .expect("run slotcast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn token(db: &TestDb, role: &str, name: &str) -> String {
    let (code, out, err) = slotcast(
        db,
        &["admin", "token", "create", "--role", role, "--name", name],
    );
    assert_eq!(code, 0, "token create failed: {err}");
    out.trim().to_string()
}

/// Starts `slotcast server <role>` for `db` (its database, its NATS prefix, NTP at a closed
/// loopback port unless `env` says otherwise) and waits for the line starting `marker`;
/// returns the child and the rest of that line.
fn spawn_role(db: &TestDb, role: &str, env: &[(&str, &str)], marker: &str) -> (Role, String) {
    let (role, mut lines) = spawn_role_lines(db, role, env, &[marker]);
    (role, lines.remove(0))
}

/// [`spawn_role`] waiting for one line per marker (in any order); returns the rest of each,
/// in the order of `markers`.
pub(crate) fn spawn_role_lines(
    db: &TestDb,
    role: &str,
    env: &[(&str, &str)],
    markers: &[&str],
) -> (Role, Vec<String>) {
    spawn_role_lines_to(db, role, env, markers, Stdio::inherit())
}

/// [`spawn_role_lines`] with the process's log (stderr) sent to `stderr`.
pub(crate) fn spawn_role_lines_to(
    db: &TestDb,
    role: &str,
    env: &[(&str, &str)],
    markers: &[&str],
    stderr: Stdio,
) -> (Role, Vec<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", role])
        .env("DATABASE_URL", &db.url)
        .env("SLOTCAST_API_ADDR", "127.0.0.1:0")
        .env("SLOTCAST_SCHEDULER_OPS_ADDR", "127.0.0.1:0")
        .env("SLOTCAST_NTP_SERVERS", "127.0.0.1:9")
        .env("SLOTCAST_NATS_PREFIX", &db.nats_prefix)
        .env("NATS_URL", nats::shared_url())
        .env("SLOTCAST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let role_name = role;
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start slotcast server {role}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let wanted: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for (i, marker) in wanted.iter().enumerate() {
                if let Some(rest) = line.strip_prefix(marker.as_str()) {
                    let _ = tx.send((i, rest.to_string()));
                }
            }
        }
    });
    let nats_url = env
        .iter()
        .find(|(k, _)| *k == "NATS_URL")
        .map_or_else(nats::shared_url, |(_, v)| v.to_string());
    let role = Role {
        child,
        nats_url,
        stream_base: db.stream_base(),
    };
    let mut found: Vec<Option<String>> = vec![None; markers.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, rest)) => found[i] = Some(rest),
            Err(_) => panic!("slotcast server {role_name} did not start within 60 s"),
        }
    }
    (role, found.into_iter().flatten().collect())
}

/// A server role's process. Dropped while still running (the end of a test), it kills the
/// process and then deletes the test's NATS streams, which the process could have recreated
/// after the database guard deleted them. A role stopped or killed on purpose mid-test
/// leaves them to the others.
pub(crate) struct Role {
    pub(crate) child: Child,
    nats_url: String,
    stream_base: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if running {
            nats::delete_streams_blocking(self.nats_url.clone(), self.stream_base.clone());
        }
    }
}

/// Sends `signal` to `child` and waits (bounded) for it to exit; returns its status.
pub(crate) fn signal_and_wait(child: &mut Child, signal: &str) -> Option<i32> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args([signal, &pid]).status();
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `slotcast server scheduler`, with its ops endpoints on a port of its own.
pub struct Scheduler {
    role: Role,
    pub ops: String,
}

impl Scheduler {
    pub fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let (role, ops) = spawn_role(db, "scheduler", env, "slotcast scheduler running; ops on ");
        Self { role, ops }
    }

    /// SIGKILL: no clean-up, as a crash.
    pub fn kill(mut self) {
        let _ = self.role.child.kill();
        let _ = self.role.child.wait();
    }

    /// `GET /readyz` on the ops port: (status, body).
    pub async fn readyz(&self) -> (u16, Value) {
        let resp = reqwest::get(format!("{}/readyz", self.ops))
            .await
            .expect("scheduler readyz");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// `slotcast server api` (or `all`) on a port of its own.
pub struct Api {
    role: Role,
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Starts `slotcast server api`; see [`spawn_role`] for the environment.
    pub fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        Self::start_role(db, "api", env)
    }

    /// [`Api::start`] with the process's log (stderr) sent to `log`.
    pub fn start_to(db: &TestDb, env: &[(&str, &str)], log: Stdio) -> Self {
        let (role, mut lines) =
            spawn_role_lines_to(db, "api", env, &["slotcast api listening on "], log);
        Self::from_role(role, lines.remove(0))
    }

    /// `role` is `api` or `all` (the api with the scheduler inside).
    pub fn start_role(db: &TestDb, role: &str, env: &[(&str, &str)]) -> Self {
        let (role, base) = spawn_role(db, role, env, "slotcast api listening on ");
        Self {
            role,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// An api already started some other way (e.g. `server all` with a streamer).
    pub(crate) fn from_role(role: Role, base: String) -> Self {
        Self {
            role,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// The server process's id (to read its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.role.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Stops the api with SIGTERM and waits (bounded) for a clean exit; returns its status.
    pub fn stop(mut self) -> Option<i32> {
        signal_and_wait(&mut self.role.child, "-TERM")
    }

    /// SIGKILL: no clean-up, as a crash (or a power cut) would leave it.
    pub fn kill(mut self) {
        let _ = self.role.child.kill();
        let _ = self.role.child.wait();
    }
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
        .with_timezone(&Utc)
}

/// A server spec with two carriers.
pub fn server_body(id: &str, capacity: u32) -> Value {
    serde_json::json!({
        "id": id,
        "name": format!("Server {id}"),
        "capacity": capacity,
        "carriers": [
            {"name": "carrier-a", "ingest_url": "rtsp://127.0.0.2:8554"},
            {"name": "carrier-b", "ingest_url": "rtsp://127.0.0.3:8554"}
        ]
    })
}

/// The read model as canonical JSON, for comparing copies.
pub async fn dump_read_model(db: &TestDb) -> Value {
    let mut out = serde_json::Map::new();
    for (table, order) in [
        ("servers", "id"),
        ("reservations", "id"),
        ("schedule", "server_id, reservation_id"),
        ("streams", "aggregate_id"),
    ] {
        let sql = format!(
            "SELECT coalesce(json_agg(t ORDER BY {order}), '[]'::json)::jsonb FROM rm.{table} t"
        );
        out.insert(table.to_string(), db.json(&sql).await);
    }
    Value::Object(out)
}
