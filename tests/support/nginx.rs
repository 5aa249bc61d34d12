//! nginx from Debian (`/usr/sbin/nginx`) as a caching reverse proxy in front of a streamer's
//! viewer port, as a deployment would put one.
//!
//! Contract: each [`Nginx`] runs from a configuration file written into a temporary directory
//! of its own (its port on 127.0.0.1, its cache, pid, logs and temporary files all in that
//! directory, `daemon off`), and is killed, with its workers, when the guard drops. A
//! missing nginx fails the test loudly: `scripts/services` installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx caching what it proxies.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl Nginx {
    /// nginx on a free loopback port, proxying everything to `upstream`
    /// (`http://127.0.0.1:port`) through a cache that honours the upstream's
    /// `Cache-Control`, revalidates with its validators (`proxy_cache_revalidate`), sets
    /// `X-Forwarded-For` and says per answer whether it came from the cache
    /// (`X-Cache-Status`).
    pub fn proxy(upstream: &str) -> Self {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: scripts/services installs nginx-light"
        );
        let dir = tempfile::tempdir().expect("nginx dir");
        // Workers run as an unprivileged user when the tests run as root: they must be able
        // to write the cache and temporary files.
        for sub in ["cache", "temp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("nginx subdir");
            std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/temp/client;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=hls:4m max_size=256m inactive=10m use_temp_path=off;
    upstream streamer {{
        server {upstream_addr};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://streamer;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_cache hls;
            proxy_cache_revalidate on;
            proxy_cache_lock on;
            proxy_read_timeout 30s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
",
            upstream_addr = upstream.trim_start_matches("http://"),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("nginx log");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NGINX} (scripts/services installs it): {e}"));
        let mut nginx = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        nginx.wait_listening(SocketAddr::from(([127, 0, 0, 1], port)));
        nginx
    }

    fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nginx exited ({status}) before it listened:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr} within 15 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its error log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL to the master leaves its worker running: ask for a fast stop (SIGTERM),
        // which takes the workers with it, then make sure of the master.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
