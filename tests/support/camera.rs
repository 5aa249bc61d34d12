//! The camera stand-in (`tests/support/camera.py`: GStreamer's RTSP server through Debian's
//! python3-gi) on a loopback port, H.264 + AAC, Basic auth when given a login; killed when
//! its guard drops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::nats::free_tcp_port;

pub struct Camera {
    child: Child,
    pub port: u16,
    /// `rtsp://127.0.0.1:PORT/cam`, without the login.
    pub url: String,
}

impl Camera {
    /// On a free port, with this login.
    pub fn start(user: &str, password: &str) -> Self {
        Self::start_on(free_tcp_port(), Some((user, password)))
    }

    /// On `port`, with `login` if given. Returns once it listens.
    pub fn start_on(port: u16, login: Option<(&str, &str)>) -> Self {
        let script = super::streaming::repo_root().join("tests/support/camera.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(&script).args(["--port", &port.to_string()]);
        if let Some((user, password)) = login {
            cmd.args(["--user", user, "--password", password]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the camera stand-in (scripts/services installs python3-gi)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("camera stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("camera output");
        assert_eq!(line.trim(), "ready", "the camera stand-in did not start");
        Self {
            child,
            port,
            url: format!("rtsp://127.0.0.1:{port}/cam"),
        }
    }

    /// Kills it at once (SIGKILL), as a camera losing power.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
