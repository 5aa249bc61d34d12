//! `slotcast-bench hls`: how fast the streamer serves viewers. The same segments and parts,
//! fetched with plain GETs from the streamer (from memory, as viewers of a live stream get
//! them) and from nginx serving the same bytes as files, side by side; and, apart, how long
//! blocking playlist reloads wait and how far apart the viewers waiting on one part are
//! answered. Prints figures, asserts none.
//!
//! Contract: the streamer is a `slotcast server streamer` child, its gate opened as the NATS
//! contract says a scheduler opens it (an `opened` slot message under a NATS prefix of the
//! run's own, deleted at the end, on error and on Ctrl-C too); one ffmpeg publishes a
//! generated clip into it. nginx (`/usr/sbin/nginx`, from `scripts/services`) is a child too,
//! with a configuration file in the run's temporary directory, and is stopped at the end.
//! Rounds alternate between the two servers, so a change of load on the machine falls on
//! both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use slotcast_domain::contract::Names;
use tokio::process::Command;

use crate::hls_load::{self, Measured, Target};
use crate::nats::new_stream_key;
use crate::report::{machine, print_report, until_interrupted};
use crate::slotcast::{free_ports, wait_ready, Proc, Slotcast};

const SERVER_ID: &str = "bench-hls";
const NGINX: &str = "/usr/sbin/nginx";
/// The targets the issue sets: the streamer's rate at least this share of nginx's...
const RATE_TARGET: f64 = 0.8;
/// ...and its p99 at most this multiple of nginx's.
const P99_TARGET: f64 = 2.0;

/// Serving viewers: segments and parts from the streamer's memory beside nginx serving the
/// same bytes as files (plain keep-alive GETs, N connections), and blocking playlist reload
/// latency with N viewers waiting on each part. Needs ffmpeg, nginx (scripts/services
/// installs both) and NATS with JetStream. Use a release build.
#[derive(clap::Args, Debug)]
pub struct HlsArgs {
    /// Concurrent connections fetching.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// Seconds per round per server.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Rounds per server and kind of file (they alternate: streamer, nginx, streamer...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// Viewers waiting on each part in the blocking-reload measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    waiters: u64,
    /// Seconds of blocking reloads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=600))]
    blocking_s: u64,
    /// NATS with JetStream, for the streamer and the slot message that opens its gate.
    #[arg(long, env = "NATS_URL", default_value = crate::nats::DEFAULT_URL)]
    nats_url: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Comparison {
    /// What was fetched: `segments` or `parts`.
    kind: &'static str,
    files: usize,
    mean_bytes: usize,
    streamer: Vec<Measured>,
    nginx: Vec<Measured>,
    /// Mean streamer rate ÷ mean nginx rate.
    rate_ratio: f64,
    /// Mean streamer p99 ÷ mean nginx p99, over the rounds.
    p99_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Blocking {
    waiters: u64,
    /// Blocking reloads answered.
    answers: usize,
    /// Parts the waiters were answered for.
    parts: usize,
    /// From sending a blocking reload to its whole answer (includes waiting for the part).
    wait_p50_ms: f64,
    wait_p99_ms: f64,
    /// For each part, how long after the first waiter each other waiter was answered.
    spread_p50_ms: f64,
    spread_p99_ms: f64,
    spread_max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    connections: u64,
    seconds: u64,
    rounds: u64,
    comparisons: Vec<Comparison>,
    blocking: Blocking,
    rate_target: f64,
    p99_target: f64,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    nginx: String,
}

pub async fn hls(args: HlsArgs, slotcast: &Slotcast) -> Result<()> {
    let nginx_version = nginx_version().await?;
    let (client, jetstream) = crate::nats::connect(&args.nats_url).await?;
    let (prefix, names) = crate::nats::fresh_prefix(0);
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-hls-")
        .tempdir()
        .context("create a temporary directory")?;
    let outcome = until_interrupted(run(
        &args,
        slotcast,
        &jetstream,
        &prefix,
        &names,
        dir.path(),
        nginx_version,
    ))
    .await;
    let cleaned = crate::nats::delete_streams(&jetstream, std::slice::from_ref(&names)).await;
    drop(client);
    drop(dir);
    print_report(&outcome?, args.json, text)?;
    cleaned
}

async fn run(
    args: &HlsArgs,
    slotcast: &Slotcast,
    jetstream: &async_nats::jetstream::Context,
    prefix: &str,
    names: &Names,
    dir: &Path,
    nginx_version: String,
) -> Result<Report> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    crate::nats::slots_stream(jetstream, names).await?;
    let (id, key) = ("bench-hls-0".to_string(), new_stream_key());
    crate::nats::open_gates(jetstream, names, SERVER_ID, &[(id.clone(), key.clone())]).await?;
    let clip = crate::ingest::make_clip(dir, 20).await?;

    let ports = free_ports(3)?;
    let (hls_addr, rtsp, nginx_addr) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
        format!("127.0.0.1:{}", ports[2]),
    );
    let mut cmd = slotcast.command(&["server", "streamer"]);
    cmd.env("SLOTCAST_SERVER_ID", SERVER_ID)
        .env("SLOTCAST_INGEST_LISTENERS", format!("carrier-a={rtsp}"))
        .env("SLOTCAST_HLS_ADDR", &hls_addr)
        .env("SLOTCAST_NATS_PREFIX", prefix)
        .env("SLOTCAST_RECORDINGS_DIR", dir.join("recordings"))
        .env("SLOTCAST_NTP_SERVERS", crate::slotcast::NO_NTP)
        .env("NATS_URL", &args.nats_url)
        .env("SLOTCAST_LOG", "warn");
    let mut streamer = Proc::spawn(cmd, "slotcast server streamer", &dir.join("streamer.log"))?;
    let base = format!("http://{hls_addr}");
    wait_ready(&http, &base, &mut streamer).await?;

    let mut publish = Command::new("ffmpeg");
    publish
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-re",
            "-i",
        ])
        .arg(&clip)
        .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"])
        .arg(format!("rtsp://{rtsp}/live/{id}?key={key}"));
    let mut publisher = Proc::spawn(publish, "ffmpeg publishing", &dir.join("ffmpeg.log"))?;
    let playlist_url = format!("{base}/hls/{id}/index.m3u8");
    wait_segments(
        &http,
        &playlist_url,
        3,
        &mut [&mut publisher, &mut streamer],
    )
    .await?;

    // While it is live: blocking reloads.
    let blocking = blocking_reloads(&playlist_url, args.waiters, args.blocking_s).await?;

    // The publisher's clip ends; the newest segments and their parts stay in memory.
    let deadline = Instant::now() + Duration::from_secs(60);
    while publisher.exited().is_none() {
        if Instant::now() >= deadline {
            bail!("the publisher did not finish its clip within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let playlist = http.get(&playlist_url).send().await?.text().await?;
    let (segments, parts) = newest_files(&playlist, 3);
    if segments.is_empty() || parts.is_empty() {
        bail!("the playlist lists no parts of complete segments:\n{playlist}");
    }
    // The same bytes as files for nginx, under the same paths.
    let www = dir.join("www");
    let files = www.join("hls").join(&id);
    std::fs::create_dir_all(&files)?;
    let mut sets = Vec::new();
    for (kind, names) in [("segments", &segments), ("parts", &parts)] {
        let mut targets = Vec::new();
        for name in names {
            let path = format!("/hls/{id}/{name}");
            let bytes = http
                .get(format!("{base}{path}"))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            std::fs::write(files.join(name), &bytes)?;
            targets.push(Target {
                path,
                len: bytes.len(),
            });
        }
        sets.push((kind, targets));
    }
    let nginx = start_nginx(dir, &www, &nginx_addr).await?;

    let length = Duration::from_secs(args.seconds);
    let connections = args.connections as usize;
    let mut comparisons = Vec::new();
    for (kind, targets) in &sets {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            ours.push(hls_load::run(&hls_addr, targets, connections, length).await?);
            theirs.push(hls_load::run(&nginx_addr, targets, connections, length).await?);
        }
        let mean =
            |m: &[Measured], f: fn(&Measured) -> f64| m.iter().map(f).sum::<f64>() / m.len() as f64;
        comparisons.push(Comparison {
            kind,
            files: targets.len(),
            mean_bytes: targets.iter().map(|t| t.len).sum::<usize>() / targets.len(),
            rate_ratio: mean(&ours, |m| m.per_s) / mean(&theirs, |m| m.per_s),
            p99_ratio: mean(&ours, |m| m.p99_ms) / mean(&theirs, |m| m.p99_ms),
            streamer: ours,
            nginx: theirs,
        });
    }
    if let Some(exited) = streamer.exited() {
        bail!("{exited}\n{}", streamer.log_tail());
    }
    drop(nginx);
    streamer.stop().await;
    let m = machine(String::new());
    Ok(Report {
        connections: args.connections,
        seconds: args.seconds,
        rounds: args.rounds,
        comparisons,
        blocking,
        rate_target: RATE_TARGET,
        p99_target: P99_TARGET,
        cpus: m.cpus,
        cpu_model: m.cpu_model,
        kernel: m.kernel,
        nginx: nginx_version,
    })
}

/// Until the playlist lists `n` segments; fails if a child exits first.
pub(crate) async fn wait_segments(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    children: &mut [&mut Proc],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(url).send().await {
            if let Ok(text) = resp.text().await {
                if text.lines().filter(|l| l.starts_with("#EXTINF")).count() >= n {
                    return Ok(());
                }
            }
        }
        for child in children.iter_mut() {
            if let Some(exited) = child.exited() {
                bail!("{exited}\n{}", child.log_tail());
            }
        }
        if Instant::now() >= deadline {
            bail!("the playlist did not list {n} segments within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The newest `n` complete segments that list their parts, and those parts.
fn newest_files(playlist: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let mut done: Vec<(String, Vec<String>)> = Vec::new();
    let mut parts = Vec::new();
    for line in playlist.lines() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            if let Some(uri) = attrs
                .split("URI=\"")
                .nth(1)
                .and_then(|u| u.split('"').next())
            {
                parts.push(uri.to_string());
            }
        } else if !line.starts_with('#') && line.ends_with(".m4s") {
            done.push((line.to_string(), std::mem::take(&mut parts)));
        }
    }
    let listed: Vec<_> = done.into_iter().filter(|(_, p)| !p.is_empty()).collect();
    let newest = &listed[listed.len().saturating_sub(n)..];
    (
        newest.iter().map(|(s, _)| s.clone()).collect(),
        newest.iter().flat_map(|(_, p)| p.clone()).collect(),
    )
}

/// `waiters` viewers each asking, again and again, for the part the playlist hints at next
/// (`_HLS_msn` / `_HLS_part`), for `seconds`.
async fn blocking_reloads(url: &str, waiters: u64, seconds: u64) -> Result<Blocking> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..waiters {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(1)
                .build()?;
            let mut text = http.get(&url).send().await?.text().await?;
            let mut answers = Vec::new();
            while Instant::now() < until {
                let (msn, part) =
                    preload_hint(&text).ok_or_else(|| anyhow!("no preload hint in {text}"))?;
                let sent = Instant::now();
                let resp = http
                    .get(format!("{url}?_HLS_msn={msn}&_HLS_part={part}"))
                    .send()
                    .await?
                    .error_for_status()?;
                text = resp.text().await?;
                answers.push(((msn, part), sent, Instant::now()));
            }
            anyhow::Ok(answers)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a waiter panicked")??);
    }
    let mut waits: Vec<f64> = all
        .iter()
        .map(|(_, sent, got)| got.duration_since(*sent).as_secs_f64() * 1000.0)
        .collect();
    let mut first: std::collections::HashMap<(u64, u64), Instant> = Default::default();
    for (part, _, got) in &all {
        let e = first.entry(*part).or_insert(*got);
        *e = (*e).min(*got);
    }
    let mut spreads: Vec<f64> = all
        .iter()
        .map(|(part, _, got)| got.duration_since(first[part]).as_secs_f64() * 1000.0)
        .collect();
    Ok(Blocking {
        waiters,
        answers: all.len(),
        parts: first.len(),
        wait_p50_ms: percentile(&mut waits, 0.5),
        wait_p99_ms: percentile(&mut waits, 0.99),
        spread_p50_ms: percentile(&mut spreads, 0.5),
        spread_p99_ms: percentile(&mut spreads, 0.99),
        spread_max_ms: percentile(&mut spreads, 1.0),
    })
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 - 1.0) * q).round() as usize]
}

/// `(msn, part)` of `#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-<msn>.<part>.m4s"`.
fn preload_hint(playlist: &str) -> Option<(u64, u64)> {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    let (msn, part) = uri
        .strip_prefix("part-")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

/// A running nginx: stopped with SIGTERM when dropped, which takes its workers with it (a
/// SIGKILL to the master would leave them running).
struct Nginx {
    proc: Proc,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.proc.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The guard inside kills what is left.
    }
}

/// nginx serving `www` as static files on `addr`, as one would for HLS files on disk.
async fn start_nginx(dir: &Path, www: &Path, addr: &str) -> Result<Nginx> {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path {d}/nginx-client;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    types {{ video/iso.segment m4s; video/mp4 mp4; }}
    server {{
        listen {addr};
        root {www};
        add_header Cache-Control \"public, max-age=31536000, immutable\";
    }}
}}
",
            www = www.display()
        ),
    )?;
    // Workers may run as an unprivileged user: the files must be readable by anyone.
    chmod_readable(dir)?;
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"));
    let mut nginx = Nginx {
        proc: Proc::spawn(cmd, "nginx", &dir.join("nginx.log"))?,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(exited) = nginx.proc.exited() {
            bail!("{exited}\n{}", nginx.proc.log_tail());
        }
        if Instant::now() >= deadline {
            bail!("nginx did not listen on {addr} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(nginx)
}

fn chmod_readable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path)?;
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

async fn nginx_version() -> Result<String> {
    let out = Command::new(NGINX)
        .arg("-v")
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("{NGINX} is needed (scripts/services installs it)"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text
        .split('/')
        .nth(1)
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "slotcast-bench hls: {} connections, {} s per round, {} rounds per server \
         (alternating); {} CPUs ({}), kernel {}, nginx {}\n",
        r.connections, r.seconds, r.rounds, r.cpus, r.cpu_model, r.kernel, r.nginx
    );
    for c in &r.comparisons {
        out.push_str(&format!(
            "\n{}: {} files, {} bytes on average\n  server   |  req/s  |  MiB/s |  p50 ms |  p99 ms |  max ms\n",
            c.kind, c.files, c.mean_bytes
        ));
        for (who, runs) in [("streamer", &c.streamer), ("nginx", &c.nginx)] {
            for m in runs {
                out.push_str(&format!(
                    "  {who:<8} | {:>7.0} | {:>6.1} | {:>7.2} | {:>7.2} | {:>7.2}\n",
                    m.per_s, m.mib_per_s, m.p50_ms, m.p99_ms, m.max_ms
                ));
            }
        }
        out.push_str(&format!(
            "  target: streamer rate >= {:.0}% of nginx's: {:.0}% ({}); p99 <= {}x nginx's: {:.2}x ({})\n",
            r.rate_target * 100.0,
            c.rate_ratio * 100.0,
            if c.rate_ratio >= r.rate_target { "met" } else { "NOT met" },
            r.p99_target,
            c.p99_ratio,
            if c.p99_ratio <= r.p99_target { "met" } else { "NOT met" },
        ));
    }
    let b = &r.blocking;
    out.push_str(&format!(
        "\nblocking reloads (live, {} viewers waiting on each next part): {} answers for {} parts; \
         wait p50 {:.1} ms, p99 {:.1} ms; answered after the part's first viewer: p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms\n",
        b.waiters, b.answers, b.parts, b.wait_p50_ms, b.wait_p99_ms, b.spread_p50_ms,
        b.spread_p99_ms, b.spread_max_ms
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_complete_segments_and_their_parts_are_picked() {
        let playlist = "#EXTM3U\n#EXTINF:1.0,\nseg-0.m4s\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part-1.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part-1.1.m4s\"\n#EXTINF:1.0,\nseg-1.m4s\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part-2.0.m4s\"\n#EXTINF:1.0,\nseg-2.m4s\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part-3.0.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-3.1.m4s\"\n";
        let (segments, parts) = newest_files(playlist, 3);
        assert_eq!(segments, ["seg-1.m4s", "seg-2.m4s"]);
        assert_eq!(parts, ["part-1.0.m4s", "part-1.1.m4s", "part-2.0.m4s"]);
        assert_eq!(preload_hint(playlist), Some((3, 1)));
    }
}
