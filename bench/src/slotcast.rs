//! slotcast as the benchmarks run it: the built `slotcast` binary as child processes
//! (`server api|scheduler|streamer`, `admin token create`), and the other programs they run
//! beside it (ffmpeg).
//!
//! Contract: every child is killed (SIGKILL) when its guard drops, and its stderr goes to a
//! log file whose tail explains a failure. A slotcast child starts with a cleared environment
//! plus what the benchmark sets, so a developer's `SLOTCAST_*` variables cannot change what is
//! measured. A server is ready when its `/readyz` on a port the benchmark picked answers 200,
//! never by what it prints; every wait is bounded.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tokio::process::{Child, ChildStdin, Command};

/// An NTP server address where nothing answers: a slotcast role given only this runs on the
/// system clock and asks no one outside (an empty list would mean the default pool).
pub const NO_NTP: &str = "127.0.0.1:9";
/// A NATS URL where nothing answers: an api given it keeps its consumers idle, as an api
/// without NATS would (it stays ready; booking does not need NATS).
pub const NO_NATS: &str = "nats://127.0.0.1:9";
/// How long a slotcast server gets to become ready.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// The `slotcast` binary the benchmarks run.
pub struct Slotcast {
    exe: PathBuf,
}

impl Slotcast {
    /// `explicit` (`--slotcast` / `SLOTCAST_BIN`), else `slotcast` beside this executable
    /// (both are built into the same `target/<profile>/`).
    pub fn locate(explicit: Option<PathBuf>) -> Result<Self> {
        let exe = match explicit {
            Some(path) => path,
            None => std::env::current_exe()
                .context("cannot find where slotcast-bench runs from")?
                .with_file_name("slotcast"),
        };
        if !exe.is_file() {
            bail!(
                "no slotcast binary at {}: build it with cargo build --release -p slotcast \
                 (or name another with --slotcast PATH or SLOTCAST_BIN)",
                exe.display()
            );
        }
        Ok(Self { exe })
    }

    /// `slotcast <args>` with nothing of this process's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).env_clear();
        cmd
    }

    /// A new bearer token of `role` (`operator` or `distributor`) for `name`, as an operator
    /// makes one: `slotcast admin token create` (which migrates the database first).
    pub async fn token(&self, database_url: &str, role: &str, name: &str) -> Result<String> {
        let mut cmd = self.command(&["admin", "token", "create", "--role", role, "--name", name]);
        cmd.env("DATABASE_URL", database_url)
            .env("SLOTCAST_LOG", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(START_LIMIT, cmd.output())
            .await
            .map_err(|_| anyhow!("slotcast admin token create took over 60 s"))?
            .context("run slotcast admin token create")?;
        ensure!(
            out.status.success(),
            "slotcast admin token create failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "slotcast admin token create printed no token"
        );
        Ok(token)
    }

    /// `slotcast server api` on `options.database_url` (which it migrates), ready; its log
    /// and configuration file go to `dir`.
    pub async fn api(
        &self,
        options: &ApiOptions<'_>,
        dir: &Path,
        http: &reqwest::Client,
    ) -> Result<Api> {
        let port = free_port()?;
        let mut cmd = self.command(&["server", "api"]);
        cmd.env("DATABASE_URL", options.database_url)
            .env("SLOTCAST_API_ADDR", format!("127.0.0.1:{port}"))
            .env("SLOTCAST_NTP_SERVERS", ntp_list(options.ntp))
            .env("NATS_URL", NO_NATS)
            .env(
                "SLOTCAST_INLINE_PROJECTION",
                options.inline_projection.to_string(),
            )
            .env("SLOTCAST_LOG", "warn");
        if !options.catch_up {
            cmd.env("SLOTCAST_CATCH_UP_INTERVAL_MS", "0");
        }
        if let Some(n) = options.connections {
            // The pool size has no environment variable: it is `database.connections`.
            let config = dir.join("api.toml");
            std::fs::write(&config, format!("[database]\nconnections = {n}\n"))
                .with_context(|| format!("write {}", config.display()))?;
            cmd.env("SLOTCAST_CONFIG", config);
        }
        let mut proc = Proc::spawn(cmd, "slotcast server api", &dir.join("api.log"))?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(http, &base, &mut proc).await?;
        Ok(Api { proc, base })
    }
}

/// How the benchmark runs `slotcast server api`.
pub struct ApiOptions<'a> {
    pub database_url: &'a str,
    /// NTP servers of its server clock; none: the system clock.
    pub ntp: &'a [String],
    pub inline_projection: bool,
    pub catch_up: bool,
    /// Connections in its database pool; `None`: its default.
    pub connections: Option<u32>,
}

/// A running, ready `slotcast server api`.
pub struct Api {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// `SLOTCAST_NTP_SERVERS` for `servers`; none: [`NO_NTP`].
pub fn ntp_list(servers: &[String]) -> String {
    if servers.is_empty() {
        NO_NTP.to_string()
    } else {
        servers.join(",")
    }
}

/// `n` distinct loopback ports free a moment ago, for children to listen on: each is held
/// until all are picked, then released (the children bind them right after).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("pick free ports")?;
    held.iter()
        .map(|l| Ok(l.local_addr().context("pick free ports")?.port()))
        .collect()
}

/// One port as [`free_ports`] picks them.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Until `GET <base>/readyz` answers 200; fails at [`START_LIMIT`] or if `proc` exits first,
/// with its log's tail.
pub async fn wait_ready(http: &reqwest::Client, base: &str, proc: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let ready = http
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if let Some(exited) = proc.exited() {
            bail!("{exited} before it was ready\n{}", proc.log_tail());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} was not ready at {base}/readyz within {} s\n{}",
                proc.what,
                START_LIMIT.as_secs(),
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process, killed (SIGKILL) when dropped, its stderr in a log file.
pub struct Proc {
    child: Child,
    pub pid: u32,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with no stdin or stdout and its stderr to `log`; `what` names it in errors.
    pub fn spawn(cmd: Command, what: &str, log: &Path) -> Result<Self> {
        Self::start(cmd, Stdio::null(), what, log)
    }

    /// [`Proc::spawn`], with a pipe into its stdin for the caller to write.
    pub fn spawn_piped(cmd: Command, what: &str, log: &Path) -> Result<(Self, ChildStdin)> {
        let mut proc = Self::start(cmd, Stdio::piped(), what, log)?;
        let stdin = proc
            .child
            .stdin
            .take()
            .with_context(|| format!("{what} has no stdin"))?;
        Ok((proc, stdin))
    }

    fn start(mut cmd: Command, stdin: Stdio, what: &str, log: &Path) -> Result<Self> {
        let err = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {what}"))?;
        let pid = child.id().with_context(|| format!("{what} has no pid"))?;
        Ok(Self {
            child,
            pid,
            what: what.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Why it is gone, if it is.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.what)),
            Err(e) => Some(format!("{}: {e}", self.what)),
        }
    }

    /// The last 10 lines of its log, under its name.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!("--- {} ---\n{tail}", self.what)
    }

    /// SIGKILL now, as a crash, without waiting.
    pub fn start_kill(&mut self) -> Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("kill {}", self.what))
    }

    /// Kills it and waits (bounded) for it to be gone.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ntp_servers_means_none_that_answers_not_the_default_pool() {
        assert_eq!(ntp_list(&[]), NO_NTP);
        let two = ["127.0.0.1:11124".to_string(), "[::1]:123".to_string()];
        assert_eq!(ntp_list(&two), "127.0.0.1:11124,[::1]:123");
    }

    #[test]
    fn free_ports_differ() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = Slotcast::locate(Some(PathBuf::from("/nonexistent/slotcast")))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("build it with cargo build --release -p slotcast"),
            "{err}"
        );
    }
}
