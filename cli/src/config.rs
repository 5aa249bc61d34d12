//! Loading the one configuration: defaults, then the TOML file, then `SLOTCAST_*` / the usual
//! environment variables. Parsed once here and passed down as typed structs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use slotcast_api::clock::ClockConfig;
use slotcast_api::{ApiConfig, SchedulerRoleConfig};
use slotcast_domain::contract::Names;
use slotcast_domain::secret::SecretKey;
use slotcast_domain::signing::Signer;
use slotcast_nats::NatsConfig;
use slotcast_scheduler::SchedulerConfig;
use slotcast_streamer::StreamerConfig;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where slotcast keeps what it writes (recordings among it).
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub ntp: NtpSection,
    #[serde(default)]
    pub nats: NatsSection,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub streamer: StreamerSection,
}

/// What both public HTTP ports (the api's, the streamer's viewer port) allow each client.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub max_connections: Option<u64>,
    pub header_timeout_s: Option<u64>,
    pub request_timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamerSection {
    pub server_id: Option<String>,
    pub ingest_listeners: Option<String>,
    pub rtmp_listeners: Option<String>,
    pub srt_listeners: Option<String>,
    pub whip_listeners: Option<String>,
    pub srt_latency_ms: Option<u64>,
    pub hls_addr: Option<String>,
    pub whep_ip: Option<String>,
    pub whep_viewers: Option<u64>,
    pub recordings_dir: Option<String>,
    pub retention_s: Option<u64>,
    pub hls_js: Option<String>,
    pub hls_trusted_proxies: Option<String>,
    pub segment_ms: Option<u64>,
    pub part_ms: Option<u64>,
    pub session_timeout_s: Option<u64>,
    pub ingest_poll_ms: Option<u64>,
    pub camera_networks: Option<String>,
    pub ingest_max_unauth_per_addr: Option<u64>,
    pub ingest_max_unauth: Option<u64>,
    pub ingest_record_deadline_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub slots_duplicate_window_s: Option<u64>,
    pub max_age_s: Option<u64>,
    pub ack_timeout_ms: Option<u64>,
    pub replicas: Option<u64>,
    pub creds_file: Option<PathBuf>,
    pub nkey_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub replica: Option<String>,
    pub ops_addr: Option<String>,
    pub batch: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub addr: Option<String>,
    pub body_limit: Option<usize>,
    pub inline_projection: Option<bool>,
    pub catch_up_interval_ms: Option<u64>,
    pub idempotency_ttl_s: Option<u64>,
    pub booking_lanes: Option<u64>,
    pub booking_batch_max: Option<u64>,
    pub booking_batch_wait_ms: Option<u64>,
    pub audit_anchor_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
    pub connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpSection {
    pub servers: Option<Vec<String>>,
    pub interval_s: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub stale_after_s: Option<u64>,
    pub max_step_ms: Option<u64>,
    pub samples: Option<u32>,
}

/// The environment, captured once so the rest of the program never reads it.
pub struct Env(std::collections::HashMap<String, String>);

impl Env {
    pub fn capture() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Where slotcast keeps what it writes: `SLOTCAST_STATE_DIR` (or `state_dir`), else
/// `$XDG_STATE_HOME/slotcast`, else `~/.local/state/slotcast`. Never a path relative to the
/// working directory: a relative setting is refused, and a relative `XDG_STATE_HOME` is
/// ignored as the XDG base directory specification says.
pub fn state_dir(file: &FileConfig, env: &Env) -> Result<PathBuf> {
    let set = env
        .get("SLOTCAST_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| file.state_dir.clone());
    if let Some(dir) = set {
        if dir.is_relative() {
            bail!(
                "SLOTCAST_STATE_DIR / state_dir = {}: expected an absolute path",
                dir.display()
            );
        }
        return Ok(dir);
    }
    if let Some(xdg) = env.get("XDG_STATE_HOME").map(Path::new) {
        if xdg.is_absolute() {
            return Ok(xdg.join("slotcast"));
        }
    }
    match env.get("HOME").map(Path::new) {
        Some(home) if home.is_absolute() => Ok(home.join(".local/state/slotcast")),
        _ => bail!(
            "no state directory: set SLOTCAST_STATE_DIR (a service sets /var/lib/slotcast), \
             XDG_STATE_HOME or HOME"
        ),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("{key}={v}: expected true or false"),
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64> {
    v.parse()
        .with_context(|| format!("{key}={v}: expected a whole number"))
}

pub fn database_url(file: &FileConfig, env: &Env) -> String {
    env.get("DATABASE_URL")
        .map(str::to_string)
        .or_else(|| file.database.url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
}

pub fn read_file(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// The HTTP limits both public ports use, from the file and the environment.
pub fn http_limits(file: &FileConfig, env: &Env) -> Result<slotcast_http::Limits> {
    let mut limits = slotcast_http::Limits::default();
    let number = |key: &str, from_file: Option<u64>| -> Result<Option<u64>> {
        match env.get(key) {
            Some(v) => Ok(Some(parse_u64(key, v)?)),
            None => Ok(from_file),
        }
    };
    let section = &file.http;
    if let Some(n) = number("SLOTCAST_HTTP_MAX_CONNECTIONS", section.max_connections)? {
        limits.max_connections = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
    }
    if let Some(s) = number("SLOTCAST_HTTP_HEADER_TIMEOUT_S", section.header_timeout_s)? {
        limits.header_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(s) = number("SLOTCAST_HTTP_REQUEST_TIMEOUT_S", section.request_timeout_s)? {
        limits.request_timeout = Duration::from_secs(s.max(1));
    }
    Ok(limits)
}

/// The api's configuration from the file and the environment.
pub fn api_config(file: &FileConfig, env: &Env) -> Result<ApiConfig> {
    let mut config = ApiConfig::new(database_url(file, env));
    config.http = http_limits(file, env)?;
    let addr = env
        .get("SLOTCAST_API_ADDR")
        .map(str::to_string)
        .or_else(|| file.api.addr.clone());
    if let Some(addr) = addr {
        config.addr = addr.parse().with_context(|| {
            format!("SLOTCAST_API_ADDR / api.addr = {addr}: expected host:port")
        })?;
    }
    if let Some(n) = file.database.connections {
        config.db_connections = n.max(1);
    }
    if let Some(n) = file.api.body_limit {
        config.body_limit = n;
    }
    if let Some(s) = file.api.idempotency_ttl_s {
        config.idempotency_ttl = Duration::from_secs(s);
    }
    let inline = match env.get("SLOTCAST_INLINE_PROJECTION") {
        Some(v) => Some(parse_bool("SLOTCAST_INLINE_PROJECTION", v)?),
        None => file.api.inline_projection,
    };
    if let Some(inline) = inline {
        config.inline_projection = inline;
    }
    let pick = |key: &str, from_file: Option<u64>| -> Result<Option<u64>> {
        env.get(key)
            .map(|v| parse_u64(key, v))
            .transpose()
            .map(|v| v.or(from_file))
    };
    if let Some(n) = pick("SLOTCAST_BOOKING_LANES", file.api.booking_lanes)? {
        anyhow::ensure!(
            (1..=64).contains(&n),
            "SLOTCAST_BOOKING_LANES / api.booking_lanes = {n}: expected 1 to 64"
        );
        config.booking_lanes = n as usize;
    }
    if let Some(n) = pick("SLOTCAST_BOOKING_BATCH_MAX", file.api.booking_batch_max)? {
        anyhow::ensure!(
            (1..=4096).contains(&n),
            "SLOTCAST_BOOKING_BATCH_MAX / api.booking_batch_max = {n}: expected 1 to 4096"
        );
        config.booking_batch_max = n as usize;
    }
    if let Some(ms) = pick(
        "SLOTCAST_BOOKING_BATCH_WAIT_MS",
        file.api.booking_batch_wait_ms,
    )? {
        anyhow::ensure!(
            ms <= 1000,
            "SLOTCAST_BOOKING_BATCH_WAIT_MS / api.booking_batch_wait_ms = {ms}: expected 0 to 1000"
        );
        config.booking_batch_wait = Duration::from_millis(ms);
    }
    if let Some(ms) = pick(
        "SLOTCAST_AUDIT_ANCHOR_INTERVAL_MS",
        file.api.audit_anchor_interval_ms,
    )? {
        anyhow::ensure!(
            (100..=60_000).contains(&ms),
            "SLOTCAST_AUDIT_ANCHOR_INTERVAL_MS / api.audit_anchor_interval_ms = {ms}: expected \
             100 to 60000 (a chain head is anchored at least once a minute)"
        );
        config.audit_anchor_interval = Duration::from_millis(ms);
    }
    let catch_up = match env.get("SLOTCAST_CATCH_UP_INTERVAL_MS") {
        Some(v) => Some(parse_u64("SLOTCAST_CATCH_UP_INTERVAL_MS", v)?),
        None => file.api.catch_up_interval_ms,
    };
    if let Some(ms) = catch_up {
        config.catch_up_interval = (ms > 0).then(|| Duration::from_millis(ms));
    }
    config.clock = clock_config(file, env)?;
    config.nats = Some(nats_config(file, env)?);
    config.secret_key = secret_key(env)?;
    Ok(config)
}

/// `SLOTCAST_SECRET_KEY` (64 hex characters), or the file `SLOTCAST_SECRET_KEY_FILE` names:
/// the key the api seals Digest credentials with and the streamer opens them with. Only from
/// the environment, never the TOML file, so it does not end up in a config repository.
pub fn secret_key(env: &Env) -> Result<Option<SecretKey>> {
    let (text, from) = match (
        env.get("SLOTCAST_SECRET_KEY"),
        env.get("SLOTCAST_SECRET_KEY_FILE"),
    ) {
        (Some(_), Some(_)) => {
            bail!("set SLOTCAST_SECRET_KEY or SLOTCAST_SECRET_KEY_FILE, not both")
        }
        (Some(text), None) => (text.to_string(), "SLOTCAST_SECRET_KEY".to_string()),
        (None, Some(path)) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("SLOTCAST_SECRET_KEY_FILE={path}: cannot read it"))?,
            format!("SLOTCAST_SECRET_KEY_FILE={path}"),
        ),
        (None, None) => return Ok(None),
    };
    let key = text
        .parse()
        .map_err(|why| anyhow::anyhow!("{from}: {why}; make one with `openssl rand -hex 32`"))?;
    Ok(Some(key))
}

/// `slotcast server all`: the api with the scheduler inside.
pub fn all_config(file: &FileConfig, env: &Env) -> Result<ApiConfig> {
    let mut config = api_config(file, env)?;
    config.scheduler = Some(scheduler_config(file, env));
    Ok(config)
}

/// `slotcast server scheduler`.
pub fn scheduler_role_config(file: &FileConfig, env: &Env) -> Result<SchedulerRoleConfig> {
    let ops = env
        .get("SLOTCAST_SCHEDULER_OPS_ADDR")
        .map(str::to_string)
        .or_else(|| file.scheduler.ops_addr.clone());
    let ops_addr = ops
        .map(|a| {
            a.parse().with_context(|| {
                format!(
                    "SLOTCAST_SCHEDULER_OPS_ADDR / scheduler.ops_addr = {a}: expected host:port"
                )
            })
        })
        .transpose()?;
    Ok(SchedulerRoleConfig {
        database_url: database_url(file, env),
        clock: clock_config(file, env)?,
        nats: nats_config(file, env)?,
        scheduler: scheduler_config(file, env),
        ops_addr,
    })
}

/// The streamer's part of the configuration.
pub struct StreamerRoleConfig {
    pub streamer: StreamerConfig,
    pub clock: ClockConfig,
    pub nats: NatsConfig,
}

/// `slotcast server streamer`, and the streamer inside `server all`: `None` when no server id
/// is configured (then `server all` runs without a streamer, and `server streamer` refuses).
pub fn streamer_config(file: &FileConfig, env: &Env) -> Result<Option<StreamerRoleConfig>> {
    let section = &file.streamer;
    let pick = |key: &str, from_file: &Option<String>| {
        env.get(key)
            .map(str::to_string)
            .or_else(|| from_file.clone())
    };
    let Some(server_id) = pick("SLOTCAST_SERVER_ID", &section.server_id) else {
        return Ok(None);
    };
    let listeners_text = pick("SLOTCAST_INGEST_LISTENERS", &section.ingest_listeners)
        .unwrap_or_else(|| DEFAULT_INGEST_LISTENERS.to_string());
    let listeners = slotcast_streamer::parse_listeners(&listeners_text)
        .context("SLOTCAST_INGEST_LISTENERS / streamer.ingest_listeners")?;
    // The state directory is needed only where recordings are not placed explicitly.
    let recordings_dir = match pick("SLOTCAST_RECORDINGS_DIR", &section.recordings_dir) {
        Some(dir) => PathBuf::from(dir),
        None => state_dir(file, env)?.join("recordings"),
    };
    let mut config = StreamerConfig::new(server_id, listeners, recordings_dir);
    // RTMP is off unless listeners are given.
    if let Some(text) = pick("SLOTCAST_RTMP_LISTENERS", &section.rtmp_listeners) {
        config.rtmp_listeners = slotcast_streamer::parse_listeners(&text)
            .context("SLOTCAST_RTMP_LISTENERS / streamer.rtmp_listeners")?;
    }
    // SRT too.
    if let Some(text) = pick("SLOTCAST_SRT_LISTENERS", &section.srt_listeners) {
        config.srt_listeners = slotcast_streamer::parse_listeners(&text)
            .context("SLOTCAST_SRT_LISTENERS / streamer.srt_listeners")?;
    }
    // WHIP too.
    if let Some(text) = pick("SLOTCAST_WHIP_LISTENERS", &section.whip_listeners) {
        config.whip_listeners = slotcast_streamer::parse_listeners(&text)
            .context("SLOTCAST_WHIP_LISTENERS / streamer.whip_listeners")?;
    }
    if let Some(addr) = pick("SLOTCAST_HLS_ADDR", &section.hls_addr) {
        config.hls_addr = addr.parse().with_context(|| {
            format!("SLOTCAST_HLS_ADDR / streamer.hls_addr = {addr}: expected host:port")
        })?;
    }
    if let Some(ip) = pick("SLOTCAST_WHEP_IP", &section.whep_ip) {
        config.whep_ip = Some(ip.parse().with_context(|| {
            format!("SLOTCAST_WHEP_IP / streamer.whep_ip = {ip}: expected an IP address")
        })?);
    }
    if let Some(path) = pick("SLOTCAST_HLS_JS", &section.hls_js) {
        config.hls_js = path.into();
    }
    if let Some(proxies) = pick("SLOTCAST_HLS_TRUSTED_PROXIES", &section.hls_trusted_proxies) {
        config.trusted_proxies = slotcast_streamer::forwarded::TrustedProxies::parse(&proxies)
            .context("SLOTCAST_HLS_TRUSTED_PROXIES / streamer.hls_trusted_proxies")?;
    }
    let number = |key: &str, from_file: Option<u64>| -> Result<Option<u64>> {
        match env.get(key) {
            Some(v) => Ok(Some(parse_u64(key, v)?)),
            None => Ok(from_file),
        }
    };
    if let Some(s) = number("SLOTCAST_RECORDING_RETENTION_S", section.retention_s)? {
        config.retention = Duration::from_secs(s);
    }
    if let Some(ms) = number("SLOTCAST_SEGMENT_MS", section.segment_ms)? {
        config.segment_target = Duration::from_millis(ms);
    }
    if let Some(ms) = number("SLOTCAST_PART_MS", section.part_ms)? {
        config.part_target = Duration::from_millis(ms);
    }
    if let Some(s) = number("SLOTCAST_SESSION_TIMEOUT_S", section.session_timeout_s)? {
        config.session_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(ms) = number("SLOTCAST_INGEST_POLL_MS", section.ingest_poll_ms)? {
        config.ingest_poll = Duration::from_millis(ms);
    }
    if let Some(ms) = number("SLOTCAST_SRT_LATENCY_MS", section.srt_latency_ms)? {
        config.srt_latency = Duration::from_millis(ms.clamp(20, 8000));
    }
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(n) = number(
        "SLOTCAST_INGEST_MAX_UNAUTH_PER_ADDR",
        section.ingest_max_unauth_per_addr,
    )? {
        config.max_unauth_per_addr = count(n);
    }
    if let Some(n) = number("SLOTCAST_WHEP_VIEWERS", section.whep_viewers)? {
        config.whep_viewers = count(n);
    }
    if let Some(n) = number("SLOTCAST_INGEST_MAX_UNAUTH", section.ingest_max_unauth)? {
        config.max_unauth = count(n);
    }
    if let Some(s) = number(
        "SLOTCAST_INGEST_RECORD_DEADLINE_S",
        section.ingest_record_deadline_s,
    )? {
        config.record_deadline = Duration::from_secs(s);
    }
    if let Some(nets) = pick("SLOTCAST_CAMERA_NETWORKS", &section.camera_networks) {
        config.camera_networks = slotcast_streamer::config::parse_networks(&nets)
            .context("SLOTCAST_CAMERA_NETWORKS / streamer.camera_networks")?;
    }
    config.secret_key = secret_key(env)?;
    config.http = http_limits(file, env)?;
    config.validate().context("streamer configuration")?;
    Ok(Some(StreamerRoleConfig {
        streamer: config,
        clock: clock_config(file, env)?,
        nats: nats_config(file, env)?,
    }))
}

/// One carrier on loopback, for a single-machine demo.
pub const DEFAULT_INGEST_LISTENERS: &str = "carrier-a=127.0.0.1:8554";

pub fn nats_config(file: &FileConfig, env: &Env) -> Result<NatsConfig> {
    let url = env
        .get("NATS_URL")
        .map(str::to_string)
        .or_else(|| file.nats.url.clone())
        .unwrap_or_else(|| NatsConfig::DEFAULT_URL.to_string());
    // One server or a cluster's list: a bad entry stops the role here, named, login hidden.
    slotcast_nats::check_url(&url)?;
    let mut config = NatsConfig::new(url);
    let prefix = env
        .get("SLOTCAST_NATS_PREFIX")
        .map(str::to_string)
        .or_else(|| file.nats.prefix.clone());
    if let Some(prefix) = prefix {
        config.names = Names::new(&prefix).with_context(|| {
            format!(
                "SLOTCAST_NATS_PREFIX / nats.prefix = {prefix}: expected 1 to 32 letters, digits, - or _"
            )
        })?;
    }
    if let Some(s) = file.nats.slots_duplicate_window_s {
        config.slots_duplicate_window = Duration::from_secs(s.max(1));
    }
    if let Some(s) = file.nats.max_age_s {
        config.max_age = Duration::from_secs(s.max(60));
    }
    if let Some(ms) = file.nats.ack_timeout_ms {
        config.ack_timeout = Duration::from_millis(ms.max(10));
    }
    let replicas = match env.get("SLOTCAST_NATS_REPLICAS") {
        Some(v) => Some(parse_u64("SLOTCAST_NATS_REPLICAS", v)?),
        None => file.nats.replicas,
    };
    if let Some(n) = replicas {
        // JetStream keeps at most 5 copies of a stream, each on a server of its own.
        anyhow::ensure!(
            (1..=5).contains(&n),
            "SLOTCAST_NATS_REPLICAS / nats.replicas = {n}: expected 1 to 5 (at most the NATS \
             cluster's size; 1 for a single server)"
        );
        config.replicas = n as usize;
    }
    config.creds_file = env
        .get("SLOTCAST_NATS_CREDS_FILE")
        .map(PathBuf::from)
        .or_else(|| file.nats.creds_file.clone());
    config.nkey_file = env
        .get("SLOTCAST_NATS_NKEY_FILE")
        .map(PathBuf::from)
        .or_else(|| file.nats.nkey_file.clone());
    config.signer = secret_key(env)?.map(|key| Signer::new(&key));
    Ok(config)
}

fn scheduler_config(file: &FileConfig, env: &Env) -> SchedulerConfig {
    let replica = env
        .get("SLOTCAST_SCHEDULER_REPLICA")
        .map(str::to_string)
        .or_else(|| file.scheduler.replica.clone())
        .unwrap_or_else(default_replica);
    let mut config = SchedulerConfig::new(replica);
    if let Some(batch) = file.scheduler.batch {
        config.batch = batch.clamp(1, 10_000);
    }
    config
}

/// `host:pid`, which tells replicas apart in `slot_boundaries.published_by`.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!("{host}:{}", std::process::id())
}

fn clock_config(file: &FileConfig, env: &Env) -> Result<ClockConfig> {
    let mut clock = ClockConfig::default();
    let servers = match env.get("SLOTCAST_NTP_SERVERS") {
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => file.ntp.servers.clone(),
    };
    clock.servers = servers.unwrap_or_else(|| vec!["pool.ntp.org:123".to_string()]);
    let interval = match env.get("SLOTCAST_NTP_INTERVAL_S") {
        Some(v) => Some(parse_u64("SLOTCAST_NTP_INTERVAL_S", v)?),
        None => file.ntp.interval_s,
    };
    if let Some(s) = interval {
        clock.interval = Duration::from_secs(s.max(1));
    }
    if let Some(ms) = file.ntp.timeout_ms {
        clock.timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(s) = file.ntp.stale_after_s {
        clock.stale_after = Duration::from_secs(s.max(1));
    }
    let max_step = match env.get("SLOTCAST_NTP_MAX_STEP_MS") {
        Some(v) => Some(parse_u64("SLOTCAST_NTP_MAX_STEP_MS", v)?),
        None => file.ntp.max_step_ms,
    };
    if let Some(ms) = max_step {
        clock.max_step = Duration::from_millis(ms);
    }
    if let Some(n) = file.ntp.samples {
        clock.samples = n.clamp(1, 16);
    }
    Ok(clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "[api]\naddr = \"127.0.0.1:9000\"\ninline_projection = false\n[ntp]\nservers = [\"a:1\"]\n",
        )
        .unwrap();
        let c = api_config(&file, &env(&[("SLOTCAST_NTP_SERVERS", "b:2, c:3")])).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:9000");
        assert!(!c.inline_projection);
        assert_eq!(c.clock.servers, vec!["b:2", "c:3"]);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        let c = api_config(
            &FileConfig::default(),
            &env(&[("SLOTCAST_CATCH_UP_INTERVAL_MS", "0")]),
        )
        .unwrap();
        assert_eq!(c.catch_up_interval, None);
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn state_lives_under_the_state_dir_never_under_the_working_directory() {
        let file = FileConfig::default();
        let dir = |pairs: &[(&str, &str)]| state_dir(&file, &env(pairs));
        assert_eq!(
            dir(&[("HOME", "/home/ann")]).unwrap(),
            Path::new("/home/ann/.local/state/slotcast")
        );
        let xdg = [("HOME", "/home/ann"), ("XDG_STATE_HOME", "/x/state")];
        assert_eq!(dir(&xdg).unwrap(), Path::new("/x/state/slotcast"));
        let relative_xdg = [("HOME", "/home/ann"), ("XDG_STATE_HOME", "state")];
        assert_eq!(
            dir(&relative_xdg).unwrap(),
            Path::new("/home/ann/.local/state/slotcast")
        );
        let set = [
            ("XDG_STATE_HOME", "/x"),
            ("SLOTCAST_STATE_DIR", "/var/lib/slotcast"),
        ];
        assert_eq!(dir(&set).unwrap(), Path::new("/var/lib/slotcast"));
        let err = dir(&[("SLOTCAST_STATE_DIR", "data")]).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = dir(&[]).unwrap_err();
        assert!(err.to_string().contains("SLOTCAST_STATE_DIR"), "{err}");

        let streamer = |pairs: &[(&str, &str)]| {
            let mut all = vec![("SLOTCAST_SERVER_ID", "srv")];
            all.extend_from_slice(pairs);
            streamer_config(&file, &env(&all))
                .unwrap()
                .unwrap()
                .streamer
        };
        let config = streamer(&[("SLOTCAST_STATE_DIR", "/var/lib/slotcast")]);
        assert_eq!(
            config.recordings_dir,
            Path::new("/var/lib/slotcast/recordings")
        );
        assert!(config.hls_js.is_absolute(), "{}", config.hls_js.display());
        // Recordings placed explicitly need no state directory.
        let config = streamer(&[("SLOTCAST_RECORDINGS_DIR", "/srv/recordings")]);
        assert_eq!(config.recordings_dir, Path::new("/srv/recordings"));
        assert!(
            config.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        let config = streamer(&[
            ("SLOTCAST_RECORDINGS_DIR", "/srv/recordings"),
            ("SLOTCAST_HLS_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
        ]);
        let viewer = config.trusted_proxies.client(
            "127.0.0.1".parse().unwrap(),
            [&b"198.51.100.7, 10.0.0.3"[..]],
        );
        assert_eq!(viewer, "198.51.100.7".parse::<std::net::IpAddr>().unwrap());
        let err = streamer_config(
            &file,
            &env(&[
                ("SLOTCAST_SERVER_ID", "srv"),
                ("SLOTCAST_RECORDINGS_DIR", "/srv/recordings"),
                ("SLOTCAST_HLS_TRUSTED_PROXIES", "127.0.0.1,cache.example"),
            ]),
        )
        .err()
        .expect("a name is not an address");
        let shown = format!("{err:#}");
        assert!(
            shown.contains("SLOTCAST_HLS_TRUSTED_PROXIES") && shown.contains("cache.example"),
            "{shown}"
        );
    }

    #[test]
    fn rtmp_srt_and_whip_listeners_are_off_unless_given_in_the_file_or_the_environment() {
        let base = [
            ("SLOTCAST_SERVER_ID", "srv"),
            ("SLOTCAST_RECORDINGS_DIR", "/srv/recordings"),
        ];
        let streamer = |file: &FileConfig, pairs: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(pairs);
            streamer_config(file, &env(&all))
        };
        let none = FileConfig::default();
        let config = streamer(&none, &[]).unwrap().unwrap().streamer;
        assert!(config.rtmp_listeners.is_empty(), "RTMP is off by default");
        assert!(config.srt_listeners.is_empty(), "SRT is off by default");
        assert!(config.whip_listeners.is_empty(), "WHIP is off by default");
        let file: FileConfig =
            toml::from_str("[streamer]\nwhip_listeners = \"carrier-a=10.20.0.5:8889\"\n").unwrap();
        let config_whip = streamer(&file, &[]).unwrap().unwrap().streamer;
        assert_eq!(config_whip.whip_listeners[0].addr.port(), 8889);
        let bad = [("SLOTCAST_WHIP_LISTENERS", "carrier-a=whip.example:8889")];
        let err = streamer(&none, &bad)
            .err()
            .expect("a name is not an address");
        assert!(
            format!("{err:#}").contains("SLOTCAST_WHIP_LISTENERS"),
            "{err:#}"
        );
        let srt = [
            ("SLOTCAST_SRT_LISTENERS", "carrier-a=127.0.0.2:9000"),
            ("SLOTCAST_SRT_LATENCY_MS", "200"),
        ];
        let config_srt = streamer(&none, &srt).unwrap().unwrap().streamer;
        assert_eq!(config_srt.srt_listeners[0].addr.port(), 9000);
        assert_eq!(config_srt.srt_latency, Duration::from_millis(200));
        let file: FileConfig =
            toml::from_str("[streamer]\nrtmp_listeners = \"carrier-a=127.0.0.1:1935\"\n").unwrap();
        let config = streamer(&file, &[]).unwrap().unwrap().streamer;
        assert_eq!(config.rtmp_listeners[0].carrier, "carrier-a");
        assert_eq!(config.rtmp_listeners[0].addr.port(), 1935);
        let text = "carrier-a=127.0.0.2:1935, carrier-b=127.0.0.3:1935";
        let from_env = [("SLOTCAST_RTMP_LISTENERS", text)];
        let config = streamer(&file, &from_env).unwrap().unwrap().streamer;
        assert_eq!(config.rtmp_listeners.len(), 2, "the environment wins");
        let bad = [("SLOTCAST_RTMP_LISTENERS", "carrier-a=rtmp.example:1935")];
        let err = streamer(&none, &bad)
            .err()
            .expect("a name is not an address");
        let shown = format!("{err:#}");
        assert!(
            shown.contains("SLOTCAST_RTMP_LISTENERS") && shown.contains("not an ip:port"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_say_which_key() {
        let err = api_config(
            &FileConfig::default(),
            &env(&[("SLOTCAST_API_ADDR", "nope")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("SLOTCAST_API_ADDR"));
        let err = toml::from_str::<FileConfig>("[api]\nadress = 1\n").unwrap_err();
        assert!(err.to_string().contains("adress"));
    }

    #[test]
    fn nats_takes_a_list_of_servers_and_a_replica_count() {
        let file = FileConfig::default();
        let c = nats_config(&file, &env(&[])).unwrap();
        assert_eq!(c.url, NatsConfig::DEFAULT_URL);
        assert_eq!(c.replicas, 1);
        let list = "nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303";
        let c = nats_config(
            &file,
            &env(&[("NATS_URL", list), ("SLOTCAST_NATS_REPLICAS", "3")]),
        )
        .unwrap();
        assert_eq!((c.url.as_str(), c.replicas), (list, 3));
        let file: FileConfig =
            toml::from_str("[nats]\nurl = \"nats://a:4222,nats://b:4222\"\nreplicas = 2\n")
                .unwrap();
        assert_eq!(nats_config(&file, &env(&[])).unwrap().replicas, 2);
        // The environment wins over the file.
        let c = nats_config(&file, &env(&[("SLOTCAST_NATS_REPLICAS", "1")])).unwrap();
        assert_eq!(c.replicas, 1);

        for n in ["0", "6", "three"] {
            let err = nats_config(
                &FileConfig::default(),
                &env(&[("SLOTCAST_NATS_REPLICAS", n)]),
            )
            .unwrap_err();
            let shown = format!("{err:#}");
            assert!(shown.contains("SLOTCAST_NATS_REPLICAS"), "{shown}");
        }
        let err = nats_config(
            &FileConfig::default(),
            &env(&[("SLOTCAST_NATS_REPLICAS", "7")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("expected 1 to 5"), "{err:#}");
        let err = nats_config(
            &FileConfig::default(),
            &env(&[("NATS_URL", "nats://u:s3cret@a:4222,,nats://b:4222")]),
        )
        .unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            shown.contains("NATS_URL") && shown.contains("entry 2 is empty"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn the_secret_key_comes_from_the_environment_or_a_file_and_never_shows() {
        assert!(secret_key(&env(&[])).unwrap().is_none());
        let hex = "0f".repeat(32);
        let key = secret_key(&env(&[("SLOTCAST_SECRET_KEY", &hex)])).unwrap();
        assert!(key.is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        let path = path.display().to_string();
        assert!(secret_key(&env(&[("SLOTCAST_SECRET_KEY_FILE", &path)]))
            .unwrap()
            .is_some());
        let both = [
            ("SLOTCAST_SECRET_KEY", hex.as_str()),
            ("SLOTCAST_SECRET_KEY_FILE", &path),
        ];
        assert!(secret_key(&env(&both)).is_err());
        let short = "0f".repeat(8);
        let err = secret_key(&env(&[("SLOTCAST_SECRET_KEY", &short)])).unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            shown.contains("SLOTCAST_SECRET_KEY: must be 64 hex"),
            "{shown}"
        );
        assert!(!shown.contains(&short), "the value is not echoed: {shown}");
    }
}
