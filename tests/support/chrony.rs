//! A real chrony NTP server on a loopback port of its own, for tests.
//!
//! Contract: `chronyd -x` never touches the system clock; the process and its files go with
//! the guard. Answers with stratum [`LOCAL_STRATUM`] from its first packet.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const LOCAL_STRATUM: u8 = 8;

pub struct Chrony {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// A UDP port on 127.0.0.1 free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("local addr").port()
}

impl Chrony {
    pub fn start() -> Self {
        Self::start_shifted(None)
    }

    /// A chrony whose clock reads `shift` from the real one (libfaketime's form, e.g. `+5s`),
    /// so the time it serves is shifted too; `None` for the real clock.
    pub fn start_shifted(shift: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("create tempdir");
        let port = free_udp_port();
        let child = spawn(dir.path(), port, shift);
        Self { child, port, dir }
    }

    /// Stops this chrony and starts another on the same port, its clock read `shift` from the
    /// real one: an NTP server whose time jumps.
    pub fn restart_shifted(&mut self, shift: Option<&str>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path(), self.port, shift);
    }

    /// `host:port` for SLOTCAST_NTP_SERVERS.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chronyd.log")).unwrap_or_default()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chronyd on `127.0.0.1:port` with its files in `dir`, under libfaketime when `shift`.
fn spawn(dir: &std::path::Path, port: u16, shift: Option<&str>) -> Child {
    let chronyd = std::env::var_os("CHRONYD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/chronyd"));
    let conf = dir.join("chrony.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nlocal stratum {LOCAL_STRATUM}\n\
             allow 127.0.0.1\ncmdport 0\nbindcmdaddress /\n\
             pidfile {d}/chronyd.pid\ndriftfile {d}/drift\n"
        ),
    )
    .expect("write chrony.conf");
    let log = std::fs::File::create(dir.join("chronyd.log")).expect("create log");
    // -x: never set the clock; -d: foreground. -U lifts chronyd's "must be root" check and
    // -u root stops it dropping to `_chrony` when it is root (it could then not write in
    // our tempdir): together they work as root and as a normal user. `cmdport 0` and
    // `bindcmdaddress /` close both command sockets, so nothing is shared with a system
    // chronyd.
    let mut cmd = Command::new(&chronyd);
    if let Some(shift) = shift {
        // libfaketime (scripts/services installs it) preloaded into chronyd itself: the
        // `faketime` wrapper would fork, and killing it would leave chronyd running.
        cmd.env("LD_PRELOAD", libfaketime()).env("FAKETIME", shift);
    }
    cmd.args(["-x", "-d", "-U", "-u", "root", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (install chrony and faketime: scripts/services)",
                chronyd.display()
            )
        })
}

/// Where Debian's libfaketime is, whatever the architecture.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found.expect("libfaketime is not installed (scripts/services installs faketime)")
}
