//! A Postgres of the test's own, to stop and start at will: `initdb` in a temporary directory,
//! its own port on 127.0.0.1, trust auth, Debian's packaged server binaries. Never the shared
//! server, which other tests are using.
//!
//! Contract: the server is stopped (immediately) and its directory removed when the guard
//! drops; every start and stop waits for `pg_ctl` (bounded by its own `-t`). As root, the
//! binaries run as the `postgres` user (Postgres refuses to run as root). A missing binary
//! fails the test loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::nats::free_tcp_port;

/// How `pg_ctl stop` ends the server: `Fast` as an operator's restart (clients are told
/// `57P01 admin_shutdown`), `Immediate` as a crash (no shutdown checkpoint; recovery replays
/// the WAL at the next start).
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Fast,
    Immediate,
}

pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `initdb` and start; returns once the server accepts connections.
    pub fn start() -> Self {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("slotcast-pg-")
            .tempdir()
            .expect("a directory for the private Postgres");
        let as_postgres = is_root();
        if as_postgres {
            // Its data and socket directories must belong to the user it runs as.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the private Postgres's directory");
        }
        let pg = Self {
            bin,
            dir,
            port: free_tcp_port(),
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.pg_ctl_start();
        pg
    }

    /// The server's admin URL (database `postgres`), for `TestDb::on`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`Fast` or `Immediate`) and waits until it is gone.
    pub fn stop(&self, how: Stop) {
        let mode = match how {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        };
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        );
    }

    /// Starts the server again on the same port; returns once it accepts connections.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `program` of the server's binaries, run as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if Path::new(&self.data()).join("postmaster.pid").exists() {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Where the server binaries are: `pg_config --bindir`, else Debian's newest
/// `/usr/lib/postgresql/*/bin`, else the first `initdb` on the path.
fn bindir() -> PathBuf {
    let has_both = |dir: &PathBuf| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort_by_key(|dir| {
        let version = dir.parent().and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    let path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = pg_config
        .into_iter()
        .chain(debian.into_iter().rev())
        .chain(path)
        .find(has_both);
    found.unwrap_or_else(|| {
        panic!("this test needs Postgres's initdb and pg_ctl (scripts/services installs them)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
