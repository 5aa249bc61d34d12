//! Connecting to NATS (one server or a cluster) and making sure the JetStream streams of the
//! contract exist.
//!
//! Contract: [`connect`] never fails on an unreachable server: the client keeps retrying in
//! the background, across every server of the list (so a role can start before NATS does,
//! and rides out the loss of a cluster node), and its state is readable through
//! [`Nats::connected`]. Stream settings live here and only here; `ensure_*` create the stream
//! or update it to these settings, replicas included. A login in `NATS_URL` is never shown:
//! [`shown_url`] hides it in every entry of the list.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use serde::Serialize;
use slotcast_domain::contract::Names;
use slotcast_domain::signing::Signer;

/// What can go wrong reaching NATS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NATS creds file {}: {source}", .path.display())]
    CredsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("NATS nkey file {}: {source}", .path.display())]
    NkeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("NATS_URL = {shown}: {why}")]
    Url { shown: String, why: String },
    #[error("cannot connect to {shown}: {source}")]
    Connect {
        shown: String,
        source: async_nats::ConnectError,
    },
    #[error("stream {name}: {source}")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How slotcast reaches NATS.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `NATS_URL`, default `nats://127.0.0.1:4222`: one server, or the servers of a cluster
    /// separated by commas (`nats://a:4222,nats://b:4222`). May carry a login
    /// (`nats://user:password@host:port`, `nats://token@host:port`), the same one on every
    /// entry that has one, since a client logs in to whichever server it reaches the same
    /// way. Never printed as is: see [`NatsConfig::shown_url`].
    pub url: String,
    /// `SLOTCAST_NATS_CREDS_FILE`: a `.creds` file (user JWT and nkey seed).
    pub creds_file: Option<std::path::PathBuf>,
    /// `SLOTCAST_NATS_NKEY_FILE`: a file holding an nkey seed (`SU…`).
    pub nkey_file: Option<std::path::PathBuf>,
    /// Subject and stream names (`SLOTCAST_NATS_PREFIX`, default `slotcast`).
    pub names: Names,
    /// How long JetStream remembers slot message ids: a boundary published twice within it
    /// (two replicas, or a crash between publish and commit) is stored once.
    pub slots_duplicate_window: Duration,
    /// How long messages stay in the streams.
    pub max_age: Duration,
    /// How long a publish waits for JetStream's acknowledgement.
    pub ack_timeout: Duration,
    /// `SLOTCAST_NATS_REPLICAS`: copies of each stream, on as many servers of a cluster
    /// (1 to 5, at most the cluster's size; 1 for a single server).
    pub replicas: usize,
    /// With `SLOTCAST_SECRET_KEY`: what this role publishes is signed, and what it consumes
    /// must be (`slotcast_domain::signing`).
    pub signer: Option<Signer>,
}

impl NatsConfig {
    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    pub fn new(url: String) -> Self {
        Self {
            url,
            creds_file: None,
            nkey_file: None,
            names: Names::default(),
            slots_duplicate_window: Duration::from_secs(3600),
            max_age: Duration::from_secs(30 * 86_400),
            ack_timeout: Duration::from_secs(2),
            replicas: 1,
            signer: None,
        }
    }
}

impl NatsConfig {
    /// The URL without any login in it, for logs, errors and `/readyz`.
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }
}

/// A login written into `NATS_URL`.
#[derive(Debug, PartialEq, Eq)]
enum Login {
    UserPassword(String, String),
    Token(String),
}

/// The entries of a `NATS_URL` list, trimmed (an empty entry is kept, for
/// [`check_url`] to refuse).
fn entries(url: &str) -> impl Iterator<Item = &str> {
    url.split(',').map(str::trim)
}

/// The servers of `url` without their logins, and the one login they carry. Refuses an
/// empty entry, an address async-nats would not take, and two different logins (a client
/// has one login for every server it may reach).
fn split_servers(url: &str) -> Result<(Vec<async_nats::ServerAddr>, Option<Login>)> {
    let refuse = |why: String| Error::Url {
        shown: shown_url(url),
        why,
    };
    let mut servers = Vec::new();
    let mut login: Option<Login> = None;
    for (i, entry) in entries(url).enumerate() {
        if entry.is_empty() {
            return Err(refuse(format!(
                "entry {} is empty (expected URLs separated by commas)",
                i + 1
            )));
        }
        let (bare, this) = split_login(entry);
        let addr = bare.parse::<async_nats::ServerAddr>().map_err(|e| {
            refuse(format!(
                "entry {} ({bare}) is not a NATS server address: {e}",
                i + 1
            ))
        })?;
        servers.push(addr);
        match (&login, this) {
            (_, None) => {}
            (None, Some(this)) => login = Some(this),
            (Some(seen), Some(this)) if *seen == this => {}
            (Some(_), Some(_)) => {
                return Err(refuse(
                    "the entries carry different logins; give every server the same one"
                        .to_string(),
                ))
            }
        }
    }
    Ok((servers, login))
}

/// Checks `NATS_URL` (one URL or a comma-separated list) as [`connect`] will read it, so
/// a mistake stops a role at start with the entry named and no login shown.
pub fn check_url(url: &str) -> Result<()> {
    split_servers(url).map(|_| ())
}

/// One URL without its login, and the login: `user:password@` or `token@` before the host
/// (percent-encoded characters decoded, so a password can hold `@`, `:` or `,` as `%40`,
/// `%3A`, `%2C`).
fn split_login(url: &str) -> (String, Option<Login>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host_start = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_start].rfind('@') else {
        return (url.to_string(), None);
    };
    let sep = if scheme.is_empty() { "" } else { "://" };
    let bare = format!("{scheme}{sep}{}", &rest[at + 1..]);
    let login = match rest[..at].split_once(':') {
        Some((user, password)) => {
            Login::UserPassword(percent_decode(user), percent_decode(password))
        }
        None => Login::Token(percent_decode(&rest[..at])),
    };
    (bare, Some(login))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with the user, password or token between `//` and `@` replaced by `***`, in
/// every entry of a comma-separated list.
pub fn shown_url(url: &str) -> String {
    entries(url).map(shown_one).collect::<Vec<_>>().join(",")
}

fn shown_one(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}***@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self::new(Self::DEFAULT_URL.to_string())
    }
}

/// A connected (or connecting) client with its JetStream context.
#[derive(Clone, Debug)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: Arc<NatsConfig>,
}

/// Connects in the background: returns at once, even when NATS is down. With several
/// servers the client takes any of them and moves to another when its own goes away.
pub async fn connect(config: NatsConfig, name: &str) -> Result<Nats> {
    let shown = config.shown_url();
    let (servers, login) = split_servers(&config.url)?;
    let mut options = async_nats::ConnectOptions::new();
    match login {
        Some(Login::UserPassword(user, password)) => {
            options = options.user_and_password(user, password);
        }
        Some(Login::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| Error::CredsFile {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(path) = &config.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| Error::NkeyFile {
            path: path.clone(),
            source,
        })?;
        options = options.nkey(seed.trim().to_string());
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        // Back off to 2 s at most: an outage ends with a quick reconnect.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6) as u64).min(2000))
        })
        .connect(servers)
        .await
        .map_err(|source| Error::Connect { shown, source })?;
    let mut jetstream = jetstream::new(client.clone());
    jetstream.set_timeout(config.ack_timeout);
    Ok(Nats {
        client,
        jetstream,
        config: Arc::new(config),
    })
}

impl Nats {
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// `SLOTCAST_SLOTS`: every boundary, deduplicated by message id.
    pub async fn ensure_slots_stream(&self) -> Result<stream::Info> {
        let names = &self.config.names;
        self.ensure(stream::Config {
            name: names.slots_stream(),
            description: Some(
                "slotcast slot boundaries: opened, closed, changed, cancelled".into(),
            ),
            subjects: vec![names.slot_subjects()],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            max_age: self.config.max_age,
            duplicate_window: self.config.slots_duplicate_window,
            ..Default::default()
        })
        .await
    }

    /// `SLOTCAST_INGEST`: what streamers report about publishers and pulls.
    pub async fn ensure_ingest_stream(&self) -> Result<stream::Info> {
        let names = &self.config.names;
        self.ensure(stream::Config {
            name: names.ingest_stream(),
            description: Some("slotcast ingest reports: connected, disconnected, failed".into()),
            subjects: vec![names.ingest_subjects()],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            max_age: self.config.max_age,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
    }

    /// `SLOTCAST_AUDIT`: each server's event-chain anchors, kept with no age limit (the
    /// last 1,000 per server: the latest anchor alone covers the whole chain before it).
    pub async fn ensure_audit_stream(&self) -> Result<stream::Info> {
        let names = &self.config.names;
        self.ensure(stream::Config {
            name: names.audit_stream(),
            description: Some("slotcast audit: each server's event-chain head".into()),
            subjects: vec![names.audit_subjects()],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            max_messages_per_subject: 1000,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await
    }

    async fn ensure(&self, config: stream::Config) -> Result<stream::Info> {
        let name = config.name.clone();
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map_err(|source| Error::Stream { name, source })
    }
}

/// One component's view of its NATS link, for `/readyz`.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentHealth {
    pub ok: bool,
    pub detail: String,
    pub since: DateTime<Utc>,
}

/// What the NATS-facing components of this process report. Cheap to clone; a std mutex,
/// since nothing awaits while holding it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<&'static str, ComponentHealth>>>,
}

impl Health {
    /// Records `name`'s state; `since` moves only when `ok` flips.
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(name) {
            Some(c) if c.ok == ok => c.detail = detail,
            _ => {
                map.insert(
                    name,
                    ComponentHealth {
                        ok,
                        detail,
                        since: Utc::now(),
                    },
                );
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, ComponentHealth> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `name` is registered and fine.
    pub fn is_ok(&self, name: &str) -> Option<bool> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|c| c.ok)
    }
}

/// Exponential backoff with a cap, for retry loops.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max,
        }
    }

    /// The delay before the next try, doubling up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_in_the_url_is_taken_out_of_it() {
        assert_eq!(
            split_login("nats://slot:p%40ss%3Aw@127.0.0.1:4222"),
            (
                "nats://127.0.0.1:4222".to_string(),
                Some(Login::UserPassword("slot".into(), "p@ss:w".into()))
            )
        );
        assert_eq!(
            split_login("nats://t0k3n@host:4222"),
            (
                "nats://host:4222".to_string(),
                Some(Login::Token("t0k3n".into()))
            )
        );
        assert_eq!(
            split_login("nats://host:4222"),
            ("nats://host:4222".to_string(), None)
        );
    }

    #[test]
    fn a_login_in_the_url_is_never_shown() {
        for (url, shown) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "nats://alice:s3cret@127.0.0.1:4222",
                "nats://***@127.0.0.1:4222",
            ),
            (
                "nats://tok3n@nats.example:4222",
                "nats://***@nats.example:4222",
            ),
            ("tls://a:b@[::1]:4222", "tls://***@[::1]:4222"),
            ("u:p@host:4222", "***@host:4222"),
            ("nats://host:4222/x@y", "nats://host:4222/x@y"),
            (
                "nats://a:p@n1:4222,nats://n2:4222, nats://t@n3:4222",
                "nats://***@n1:4222,nats://n2:4222,nats://***@n3:4222",
            ),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_list_of_servers_is_read_entry_by_entry_with_one_login() {
        let hosts = |url: &str| -> Vec<String> {
            let (servers, _) = split_servers(url).unwrap();
            servers
                .iter()
                .map(|s| format!("{}:{}", s.host(), s.port()))
                .collect()
        };
        assert_eq!(hosts("nats://127.0.0.1:4222"), ["127.0.0.1:4222"]);
        assert_eq!(
            hosts("nats://127.0.0.1:4301, nats://127.0.0.1:4302,127.0.0.1:4303"),
            ["127.0.0.1:4301", "127.0.0.1:4302", "127.0.0.1:4303"]
        );
        // A login given once is the client's, whichever server it reaches.
        let (servers, login) = split_servers("nats://slot:p%2Cw@a:4222,nats://b:4222").unwrap();
        assert_eq!(
            login,
            Some(Login::UserPassword("slot".into(), "p,w".into()))
        );
        assert!(servers.iter().all(|s| s.username().is_none()));
        let (_, login) = split_servers("nats://t0k@a:4222,nats://t0k@b:4222").unwrap();
        assert_eq!(login, Some(Login::Token("t0k".into())));
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_entry_and_never_the_login() {
        for (url, said) in [
            ("nats://a:4222,,nats://b:4222", "entry 2 is empty"),
            ("nats://a:4222,", "entry 2 is empty"),
            ("", "entry 1 is empty"),
            (
                "nats://a:4222,http://b:4222",
                "entry 2 (http://b:4222) is not a NATS",
            ),
            (
                "nats://ann:s3cret@a:4222,nats://bob:hunter2@b:4222",
                "different logins",
            ),
        ] {
            let err = check_url(url).unwrap_err().to_string();
            assert!(err.contains(said), "{url}: {err}");
            for secret in ["s3cret", "hunter2", "ann", "bob"] {
                assert!(!err.contains(secret), "{url}: {err}");
            }
        }
        assert!(check_url("nats://u:p@a:4222, tls://b:4222").is_ok());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn health_keeps_since_while_the_state_holds() {
        let h = Health::default();
        assert_eq!(h.is_ok("scheduler"), None);
        h.set("scheduler", false, "nats down");
        let since = h.snapshot()["scheduler"].since;
        h.set("scheduler", false, "still down");
        assert_eq!(h.snapshot()["scheduler"].since, since);
        assert_eq!(h.snapshot()["scheduler"].detail, "still down");
        h.set("scheduler", true, "publishing");
        assert_eq!(h.is_ok("scheduler"), Some(true));
    }
}
