//! A broadcaster's terminal for the tests: the built `slotcast` with a home of its own (so
//! its profiles and setting files are the test's), a fixed time zone, and its runs' output.
//!
//! Contract: every command gets a clean environment (PATH, HOME, TZ only); the home goes
//! with the guard.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BIN;

/// A terminal: its own home (config and data dirs), a fixed time zone.
pub struct Terminal {
    pub home: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {}", self.stdout))
    }

    /// The summary of a `slotcast --json live` that went on to the window's close.
    pub fn closed_summary(&self) -> Value {
        ok(self, "live");
        let summary = self.json();
        assert_eq!(
            summary["ended"], "the window closed",
            "{summary}\n{}",
            self.stderr
        );
        summary
    }
}

/// The reservation id from `slotcast book`'s answer (`Booked <id> …`).
pub fn booked_id(run: &Run) -> String {
    ok(run, "book");
    run.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("Booked <id>: {}", run.stdout))
        .to_string()
}

impl Terminal {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("home"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TZ", "Asia/Tokyo")
            .env("SLOTCAST_LOG", "error");
        cmd
    }

    /// The command under libfaketime with its clock shifted by `skew` (e.g. "-3s"); the
    /// monotonic clock is left alone, as a real skewed machine's would be.
    pub fn faketime(&self, skew: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("faketime");
        cmd.args(["-f", skew, BIN])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TZ", "Asia/Tokyo")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("SLOTCAST_LOG", "error");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        output(self.command(args))
    }

    /// Runs `args` with `input` on standard input, closed after it (as Ctrl-D closes a paste).
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        let mut cmd = self.command(args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run slotcast");
        if let Some(mut stdin) = child.stdin.take() {
            // A command that refuses before reading closes the pipe: its output says why.
            let _ = stdin.write_all(input);
        }
        ran(child.wait_with_output().expect("output"))
    }

    pub fn profiles(&self) -> PathBuf {
        self.home.path().join(".config/slotcast/profiles.toml")
    }

    pub fn setting(&self, id: &str) -> PathBuf {
        self.home
            .path()
            .join(format!(".local/share/slotcast/reservations/{id}.json"))
    }
}

pub fn output(mut cmd: Command) -> Run {
    ran(cmd.output().expect("run slotcast"))
}

fn ran(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd` to its end within `limit` (killed and failing the test past it).
pub fn finish(cmd: Command, limit: Duration) -> Run {
    start(cmd).finish(limit)
}

/// Starts `cmd` with its output kept for [`Running::finish`].
pub fn start(mut cmd: Command) -> Running {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run slotcast");
    Running { child: Some(child) }
}

/// A command still running; killed if dropped before [`Running::finish`] (a failed test).
pub struct Running {
    child: Option<std::process::Child>,
}

impl Running {
    /// Waits (bounded) for its end; past `limit` kills it and fails the test with its output.
    pub fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().expect("finished once");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "slotcast still running after {limit:?}:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ran(child.wait_with_output().expect("output"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn ok(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
}
