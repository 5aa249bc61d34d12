//! Hosts on networks of their own, for the tests: Linux network namespaces, one per host and
//! one per network (a bridge, the network's switch), joined by veth pairs; code and processes
//! run inside a host; a relay lets a host reach the shared Postgres and NATS on the machine's
//! loopback.
//!
//! Contract: needs root and iproute2's `ip` and `ss`; without them the test fails loudly,
//! never skips. Namespaces are named `slotcast-<pid>-<run>-<what>` and removed with the [`Lab`]
//! (their veths and bridges go with them), also when the test panics; those of a run that
//! was killed (its pid gone) are removed by the next [`Lab`]. Nothing is added to the
//! machine's own namespace: no interface, no address, no route, so the addresses inside
//! cannot collide with the machine's and no packet of a lab leaves it. IPv6 is off inside
//! (only the addresses a test gives exist) and every host has forwarding off. Every wait is
//! bounded.
//!
//! Entering a host: [`Host::run`] runs a closure on a thread of its own moved into the host's
//! namespace (setns(2) moves one thread). Sockets it opens and processes it starts are the
//! host's, and a started process stays there; work handed to threads made before (the
//! test's own runtime) is not inside, so async code runs through [`Host::block_on`], on a
//! runtime made inside.

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How long a probe waits for a connection before calling the address unreachable.
pub const PROBE: Duration = Duration::from_secs(2);

/// Connections a [`Relay`] carries at once; more wait for one to end.
const RELAY_CONNECTIONS: usize = 64;

/// The namespaces of one test run, removed on drop.
pub struct Lab {
    prefix: String,
    made: Mutex<Vec<String>>,
}

/// A network: a bridge in a namespace of its own, and its /24.
pub struct Network {
    pub name: String,
    ns: String,
    /// The first three octets of its addresses.
    subnet: [u8; 3],
}

/// A host: a namespace with an interface named after each network it is on.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    ns: String,
    /// (network, address) of each interface.
    addrs: Vec<(String, std::net::Ipv4Addr)>,
}

impl Lab {
    /// A lab of no host yet. Fails the test, saying why, when not root or when a network
    /// namespace cannot be made.
    pub fn new() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "this test makes network namespaces and veth pairs, which needs root (uid 0; \
             this is uid {euid}): run it as root (CI does), see docs/testing.md"
        );
        sweep_killed_runs();
        let run = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("slotcast-{}-{}", std::process::id(), &run[..8]),
            made: Mutex::default(),
        }
    }

    /// A network `name` on `subnet`.0/24 with no host on it yet.
    pub fn network(&self, name: &str, subnet: [u8; 3]) -> Network {
        let ns = self.namespace(name);
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        Network {
            name: name.to_string(),
            ns,
            subnet,
        }
    }

    /// A host `name` on each of `on` as `subnet`.`last`: its interface there is named after
    /// the network, and its only routes are to those networks' /24s.
    pub fn host(&self, name: &str, on: &[(&Network, u8)]) -> Host {
        let ns = self.namespace(name);
        let mut addrs = Vec::new();
        for (net, last) in on {
            // Made right inside both namespaces: the machine's own never sees these names.
            ip(&[
                "link", "add", &net.name, "netns", &ns, "type", "veth", "peer", "name", name,
                "netns", &net.ns,
            ]);
            ip(&["-n", &net.ns, "link", "set", name, "master", "br0", "up"]);
            let [a, b, c] = net.subnet;
            let addr = std::net::Ipv4Addr::new(a, b, c, *last);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &net.name,
            ]);
            ip(&["-n", &ns, "link", "set", &net.name, "up"]);
            addrs.push((net.name.clone(), addr));
        }
        let host = Host {
            name: name.to_string(),
            ns,
            addrs,
        };
        host.run(|| {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("forwarding off");
            let on = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read it");
            assert_eq!(on.trim(), "0", "{name} forwards");
        });
        host
    }

    /// A namespace of this run, with loopback up and IPv6 off.
    fn namespace(&self, what: &str) -> String {
        let ns = format!("{}-{what}", self.prefix);
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs iproute2's `ip` (apt-get install iproute2): {e}")
            });
        assert!(
            out.status.success(),
            "cannot make the network namespace {ns} (this test needs root and network \
             namespaces, see docs/testing.md): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.made.lock().expect("not poisoned").push(ns.clone());
        in_namespace(&ns, || {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        });
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for ns in made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

impl Host {
    /// Its address on `network`.
    pub fn addr(&self, network: &Network) -> std::net::Ipv4Addr {
        self.addrs
            .iter()
            .find(|(n, _)| *n == network.name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{} is not on {}", self.name, network.name))
    }

    /// Runs `f` inside this host (see the module's doc); its panic is the caller's.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.ns, f)
    }

    /// Runs the future `make` returns on a runtime made inside this host.
    pub fn block_on<F: Future>(&self, make: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(make())
        })
    }

    /// Connects to `addr` from this host, waiting at most [`PROBE`]: `Ok` if it answered, or
    /// why not.
    pub fn connect(&self, addr: SocketAddr) -> Result<(), String> {
        self.run(|| {
            TcpStream::connect_timeout(&addr, PROBE)
                .map(drop)
                .map_err(|e| format!("{} to {addr}: {e}", self.name))
        })
    }

    /// The local addresses of its listening TCP sockets, as `ss` prints them.
    pub fn listening(&self) -> Vec<String> {
        let out = self
            .run(|| Command::new("ss").args(["-H", "-l", "-t", "-n"]).output())
            .unwrap_or_else(|e| panic!("this test needs iproute2's `ss`: {e}"));
        assert!(
            out.status.success(),
            "ss: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect()
    }

    /// Bytes sent so far from its interface on `network`.
    pub fn sent(&self, network: &Network) -> u64 {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns,
                "-j",
                "-s",
                "link",
                "show",
                "dev",
                &network.name,
            ])
            .output()
            .expect("run ip");
        let links: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ip -j: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        links[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx bytes in {links}"))
    }

    /// A relay that makes `url`'s server (on the machine's loopback, e.g. `DATABASE_URL` or
    /// `NATS_URL`) answer at the same address inside this host: a listener there, each
    /// connection forwarded from the machine's own namespace. The host's only way out, and
    /// one that joins no network: it carries only what is sent to that address. Call it from
    /// the test's thread (not inside a host).
    pub fn relay(&self, url: &str) -> Relay {
        let upstream = loopback_addr(url);
        let listener = self
            .run(|| std::net::TcpListener::bind(upstream))
            .unwrap_or_else(|e| panic!("relay: bind {upstream} in {}: {e}", self.name));
        listener.set_nonblocking(true).expect("non-blocking");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // This thread is made by the caller's, outside every host: what it connects to is
        // the machine's loopback.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let permits = Arc::new(tokio::sync::Semaphore::new(RELAY_CONNECTIONS));
                let forward = async {
                    loop {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let Ok((mut inside, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(async move {
                            let connect = tokio::net::TcpStream::connect(upstream);
                            if let Ok(Ok(mut outside)) =
                                tokio::time::timeout(Duration::from_secs(5), connect).await
                            {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                            }
                            drop(permit);
                        });
                    }
                };
                tokio::select! {
                    _ = stopped => {}
                    _ = forward => {}
                }
            });
            // The runtime goes here, and every connection task with it.
        });
        Relay {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A running [`Host::relay`]; dropping it closes the listener and every connection.
pub struct Relay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a thread of its own inside namespace `ns`.
fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let thread = s.spawn(|| {
            let path = format!("/run/netns/{ns}");
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid descriptor of a network namespace; setns moves only this
            // thread, which ends with the scope.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `ip ARGS`, failing the test with its error.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs iproute2's `ip`: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The loopback socket address of a `scheme://[user@]host:port[/…]` URL.
fn loopback_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let addr = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("no host:port in {url}"));
    assert!(
        addr.ip().is_loopback(),
        "the relay mirrors a server on this machine's loopback; {url} is not"
    );
    addr
}

/// Removes the namespaces of lab runs whose process is gone (killed before its drop).
fn sweep_killed_runs() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("slotcast-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        }
    }
}
