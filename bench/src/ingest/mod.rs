//! `slotcast-bench ingest`: what ingest costs the streamer per stream (CPU, memory) with 1, 10
//! and 50 concurrent RTSP (or RTMP or SRT: `--protocol`) publishers of one pre-encoded clip,
//! beside ffmpeg's own remux of the same input, taken by the same protocol, to HLS in the same
//! run, and how long a frame waits to be announced in the playlist (from the streamer's
//! part-latency histogram); prints figures, asserts none.
//!
//! Contract: the streamer is a `slotcast server streamer` child of this process (so its CPU and
//! memory are read from `/proc/<pid>` apart from the publishers'), on loopback ports this
//! process picks, ready when its `/readyz` says so, with a NATS prefix of its own
//! (`bench<k>_<hex>`, streams deleted at the end, on error and on Ctrl-C too) and its
//! recordings in this run's temporary directory. Gates are opened as the NATS contract says a
//! scheduler opens them: an `opened` slot message per reservation, its window covering the
//! run, its key's SHA-256 as the api would announce it. Every child (streamer, ffmpeg
//! publishers and listeners) is killed when its guard drops; every wait is bounded. A stream
//! that produced no segment, or a child that died during the measured window, fails the run:
//! a broken run never reports figures.

mod procfs;
mod prometheus;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use slotcast_domain::contract::Names;
use tokio::process::Command;

use crate::nats::new_stream_key;
use crate::report::{machine, print_report, until_interrupted};
use crate::slotcast::{free_ports, wait_ready, Proc, Slotcast};
use procfs::{listening, mib, udp_bound, Memory, Snapshot};
use prometheus::{scalar, Histogram};

/// The streamer's LL-HLS settings for the run (set explicitly, so the report can name them).
const PART_MS: u64 = 200;
const SEGMENT_MS: u64 = 1000;
/// The targets the issue sets: our CPU per stream at most this share of ffmpeg's...
const CPU_RATIO_TARGET: f64 = 1.0 / 3.0;
/// ...and part latency p95 at most the part duration plus this.
const LATENCY_SLACK_MS: f64 = 50.0;
/// The server id the bench's streamer is.
const SERVER_ID: &str = "bench-ingest";
/// The histogram the latency figures come from.
const LATENCY_METRIC: &str = "slotcast_streamer_part_latency_seconds";
/// How long the publishers and the ffmpeg listeners get to come up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Streamer ingest cost (CPU and RSS per stream) with N concurrent ffmpeg RTSP publishers of
/// one clip, beside N ffmpeg RTSP-listen→HLS remuxers fed the same way; and part latency
/// p50/p95 from the streamer's histogram. Needs ffmpeg and NATS with JetStream. Use a release
/// build: a debug build's CPU figures mean nothing.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Scenarios: concurrent publishers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50",
        value_parser = clap::value_parser!(u32).range(1..=200))]
    streams: Vec<u32>,
    /// Seconds measured per run (each scenario is two runs: slotcast, then ffmpeg).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=3600))]
    seconds: u64,
    /// Seconds every publisher streams before the measured window opens.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    warm_up_s: u64,
    /// Publish this clip (H.264 without B-frames plus AAC, MP4 or MPEG-TS) instead of the
    /// generated one (10 s of testsrc2 1280x720 at 30 fps, x264 at 2 Mbit/s, AAC 128k).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// NATS with JetStream, for the streamer and the slot messages that open its gates.
    #[arg(long, env = "NATS_URL", default_value = crate::nats::DEFAULT_URL)]
    nats_url: String,
    /// How the publishers publish (to the streamer, and to the ffmpeg listeners beside it).
    #[arg(long, value_enum, default_value_t = Protocol::Rtsp)]
    protocol: Protocol,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    /// `-f rtsp -rtsp_transport tcp`; ffmpeg listens with `-rtsp_flags listen`.
    Rtsp,
    /// `-f flv rtmp://…`; ffmpeg listens with `-listen 1`.
    Rtmp,
    /// `-f mpegts srt://…?streamid=#!::r=<id>,k=<key>`; ffmpeg listens with `mode=listener`.
    Srt,
}

impl Protocol {
    /// Where a publisher sends reservation `path` (`<id>?key=<key>`, or any name for ffmpeg)
    /// on `addr`.
    fn url(self, addr: &str, path: &str) -> String {
        match self {
            Self::Rtsp => format!("rtsp://{addr}/live/{path}"),
            Self::Rtmp => format!("rtmp://{addr}/live/{path}"),
            Self::Srt => match path.split_once("?key=") {
                Some((id, key)) => format!("srt://{addr}?streamid=#!::r={id},k={key}"),
                // To ffmpeg's own listener: no stream id.
                None => format!("srt://{addr}"),
            },
        }
    }

    /// What ffmpeg's remux to fMP4 HLS needs besides `-c copy`: AAC from MPEG-TS comes in
    /// ADTS frames, which MP4 does not hold (ffmpeg refuses them without the filter).
    fn remux_flags(self) -> &'static [&'static str] {
        match self {
            Self::Srt => &["-bsf:a", "aac_adtstoasc"],
            Self::Rtsp | Self::Rtmp => &[],
        }
    }

    /// Where ffmpeg listens for one publisher on `addr`.
    fn listen_url(self, addr: &str) -> String {
        match self {
            Self::Srt => format!("srt://{addr}?mode=listener"),
            Self::Rtsp | Self::Rtmp => self.url(addr, "x"),
        }
    }

    /// ffmpeg's options that make its input listen for one publisher (SRT's is in its URL).
    fn listen_flags(self) -> &'static [&'static str] {
        match self {
            Self::Rtsp => &["-rtsp_flags", "listen"],
            Self::Rtmp => &["-listen", "1"],
            Self::Srt => &[],
        }
    }

    /// ffmpeg's output options for a publisher.
    fn output_flags(self) -> &'static [&'static str] {
        match self {
            Self::Rtsp => &["-f", "rtsp", "-rtsp_transport", "tcp"],
            Self::Rtmp => &["-f", "flv"],
            Self::Srt => &["-f", "mpegts"],
        }
    }
}

/// CPU and memory of one side's processes over the measured window.
#[derive(Debug, Serialize)]
struct Cost {
    processes: usize,
    /// utime + stime of the side's processes over the window, in seconds...
    cpu_s: f64,
    /// ...of which stime (in the kernel on the processes' behalf).
    system_s: f64,
    /// `cpu_s` over the window, per stream, in % of one core.
    cpu_pct_per_stream: f64,
    /// VmRSS summed over the side's processes at the end of the window.
    rss_mib: f64,
    /// VmHWM (peak RSS) summed over the side's processes.
    peak_rss_mib: f64,
    /// PSS summed over the side's processes at the end of the window: unlike RSS, it counts
    /// the pages processes share (the ffmpeg libraries) once, split among them.
    pss_mib: f64,
    /// The load generator: the N ffmpeg publishers, in % of one core (all of them together).
    publishers_cpu_pct: f64,
    /// The whole machine over the window, in % of all its cores (from /proc/stat).
    machine_busy_pct: f64,
    /// The fewest `#EXTINF` lines any stream's playlist had at the end.
    fewest_segments: usize,
}

#[derive(Debug, Serialize)]
struct Latency {
    /// Parts announced over the window.
    parts: u64,
    /// Upper bounds of the histogram buckets the percentiles fall in.
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    mean_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Scenario {
    streams: usize,
    window_s: f64,
    slotcast: Cost,
    /// The streamer's RSS once ready, before any publisher.
    slotcast_idle_rss_mib: f64,
    /// RTP bytes the streamer received over the window, per stream, in Mbit/s.
    ingest_mbps_per_stream: f64,
    ffmpeg: Cost,
    /// slotcast CPU per stream ÷ ffmpeg CPU per stream.
    cpu_ratio: Option<f64>,
    /// The histogram's change over the measured window.
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Host {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    clk_tck: u64,
    clk_tck_assumed: bool,
    ffmpeg: String,
    nats_server: String,
}

#[derive(Debug, Serialize)]
struct Report {
    protocol: Protocol,
    clip: String,
    clip_mbps: f64,
    seconds: u64,
    warm_up_s: u64,
    part_ms: u64,
    segment_ms: u64,
    scenarios: Vec<Scenario>,
    cpu_ratio_target: f64,
    latency_p95_target_ms: f64,
    host: Host,
}

pub async fn ingest(args: IngestArgs, slotcast: &Slotcast) -> Result<()> {
    let ffmpeg = tool_version("ffmpeg")
        .await
        .context("ffmpeg is needed (scripts/services installs it)")?;
    let (client, jetstream) = crate::nats::connect(&args.nats_url).await?;
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-ingest-")
        .tempdir()
        .context("create a temporary directory")?;
    let (clk_tck, clk_tck_assumed) = clock_ticks().await;
    let bench = Bench {
        args: &args,
        slotcast,
        client,
        jetstream,
        dir: dir.path().to_path_buf(),
        clk_tck: clk_tck as f64,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        prefixes: Mutex::new(Vec::new()),
    };
    let outcome = until_interrupted(bench.run(ffmpeg, clk_tck, clk_tck_assumed)).await;
    // Children die with their guards (dropped above); then the NATS streams, then the files.
    let cleaned = bench.delete_streams().await;
    drop(dir);
    print_report(&outcome?, args.json, text)?;
    cleaned
}

struct Bench<'a> {
    args: &'a IngestArgs,
    slotcast: &'a Slotcast,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    dir: PathBuf,
    clk_tck: f64,
    http: reqwest::Client,
    /// NATS prefixes whose streams are deleted at the end.
    prefixes: Mutex<Vec<Names>>,
}

impl Bench<'_> {
    async fn run(&self, ffmpeg: String, clk_tck: u64, clk_tck_assumed: bool) -> Result<Report> {
        let (clip, about) = match &self.args.clip {
            Some(path) => (path.clone(), path.display().to_string()),
            None => (self.make_clip().await?, GENERATED_CLIP.to_string()),
        };
        let clip_mbps = clip_bitrate(&clip).await? / 1e6;
        let mut scenarios = Vec::new();
        for (k, &n) in self.args.streams.iter().enumerate() {
            scenarios.push(self.scenario(k, n as usize, &clip).await?);
        }
        let m = machine(String::new());
        Ok(Report {
            protocol: self.args.protocol,
            clip: about,
            clip_mbps,
            seconds: self.args.seconds,
            warm_up_s: self.args.warm_up_s,
            part_ms: PART_MS,
            segment_ms: SEGMENT_MS,
            scenarios,
            cpu_ratio_target: CPU_RATIO_TARGET,
            latency_p95_target_ms: PART_MS as f64 + LATENCY_SLACK_MS,
            host: Host {
                cpus: m.cpus,
                cpu_model: m.cpu_model,
                kernel: m.kernel,
                clk_tck,
                clk_tck_assumed,
                ffmpeg,
                nats_server: self.client.server_info().version,
            },
        })
    }

    async fn make_clip(&self) -> Result<PathBuf> {
        make_clip(&self.dir, 10).await
    }

    /// One scenario: N publishers into the streamer, then N into N ffmpeg remuxers.
    async fn scenario(&self, k: usize, n: usize, clip: &Path) -> Result<Scenario> {
        let work = self.dir.join(format!("n{n}-{k}"));
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let ours = self.slotcast_run(k, n, clip, &work).await?;
        let ffmpeg = self.ffmpeg_run(n, clip, &work).await?;
        // What was written is not needed any more; 50 streams write ~10 MB/s.
        let _ = std::fs::remove_dir_all(&work);
        let cpu_ratio = (ffmpeg.cpu_pct_per_stream > 0.0)
            .then(|| ours.cost.cpu_pct_per_stream / ffmpeg.cpu_pct_per_stream);
        Ok(Scenario {
            streams: n,
            window_s: ours.window_s,
            slotcast: ours.cost,
            slotcast_idle_rss_mib: ours.idle_rss_mib,
            ingest_mbps_per_stream: ours.ingest_mbps_per_stream,
            ffmpeg,
            cpu_ratio,
            latency: ours.latency,
        })
    }

    async fn slotcast_run(&self, k: usize, n: usize, clip: &Path, work: &Path) -> Result<Ours> {
        let (prefix, names) = crate::nats::fresh_prefix(k);
        self.prefixes
            .lock()
            .expect("nothing panics holding it")
            .push(names.clone());
        crate::nats::slots_stream(&self.jetstream, &names).await?;
        let reservations: Vec<(String, String)> = (0..n)
            .map(|i| (format!("bench-{k}-{i:03}"), new_stream_key()))
            .collect();
        crate::nats::open_gates(&self.jetstream, &names, SERVER_ID, &reservations).await?;

        let recordings = work.join("recordings");
        let mut streamer = Streamer::start(self, &prefix, &recordings, &work.join("streamer.log"))
            .await
            .context("start the streamer")?;
        let idle = Memory::of(&[streamer.child.pid])?;

        let mut publishers = Vec::with_capacity(n);
        for (i, (id, key)) in reservations.iter().enumerate() {
            let url = self
                .args
                .protocol
                .url(&streamer.ingest, &format!("{id}?key={key}"));
            let log = work.join(format!("pub-{i}.log"));
            publishers.push(publish(self.args.protocol, clip, &url, &log)?);
        }
        // Every publisher recording before the warm-up counts.
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let metrics = self.metrics(&streamer).await?;
            if scalar(&metrics, "slotcast_streamer_sessions") >= Some(n as f64) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {n} publishers were recording after {} s\n{}",
                    scalar(&metrics, "slotcast_streamer_sessions").unwrap_or(0.0),
                    START_LIMIT.as_secs(),
                    logs(&mut publishers, std::slice::from_mut(&mut streamer.child))
                );
            }
            check_alive(&mut publishers, std::slice::from_mut(&mut streamer.child))?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(self.args.warm_up_s)).await;

        let sides = [streamer.child.pid];
        let loads: Vec<u32> = publishers.iter().map(|p| p.pid).collect();
        let metrics_before = self.metrics(&streamer).await?;
        let before = Snapshot::take(&sides, &loads)?;
        tokio::time::sleep(Duration::from_secs(self.args.seconds)).await;
        let after = Snapshot::take(&sides, &loads)?;
        let metrics_after = self.metrics(&streamer).await?;
        let memory = Memory::of(&sides)?;
        check_alive(&mut publishers, std::slice::from_mut(&mut streamer.child))?;

        let mut fewest = usize::MAX;
        let mut empty = Vec::new();
        for (id, _) in &reservations {
            let url = format!("{}/hls/{id}/index.m3u8", streamer.hls);
            let playlist = match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            let segments = count_segments(&playlist);
            fewest = fewest.min(segments);
            if segments == 0 {
                empty.push(id.as_str());
            }
        }
        if !empty.is_empty() {
            bail!(
                "{} of {n} streams have no segment in their playlist ({}): the figures would \
                 mean nothing\n{}",
                empty.len(),
                empty.join(", "),
                logs(&mut publishers, std::slice::from_mut(&mut streamer.child))
            );
        }
        drop(publishers);
        streamer.child.stop().await;

        let window_s = after.at.duration_since(before.at).as_secs_f64();
        let histogram = Histogram::parse(&metrics_after, LATENCY_METRIC)
            .delta(&Histogram::parse(&metrics_before, LATENCY_METRIC));
        let counted = |name: &str| {
            scalar(&metrics_after, name).unwrap_or(0.0)
                - scalar(&metrics_before, name).unwrap_or(0.0)
        };
        let ms = |s: f64| s * 1000.0;
        Ok(Ours {
            window_s,
            cost: self.cost(n, &before, &after, &memory, fewest),
            idle_rss_mib: mib(idle.rss_kib),
            ingest_mbps_per_stream: counted("slotcast_streamer_ingest_bytes_total") * 8.0
                / window_s
                / n as f64
                / 1e6,
            latency: Latency {
                parts: counted("slotcast_streamer_parts_total").max(0.0) as u64,
                p50_ms: histogram.quantile(0.50).map(ms),
                p95_ms: histogram.quantile(0.95).map(ms),
                mean_ms: (histogram.count > 0).then(|| ms(histogram.sum / histogram.count as f64)),
            },
        })
    }

    async fn ffmpeg_run(&self, n: usize, clip: &Path, work: &Path) -> Result<Cost> {
        let ports = free_ports(n)?;
        let mut listeners = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let out = work.join(format!("ffmpeg-{i}"));
            std::fs::create_dir_all(&out)?;
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
                .args(self.args.protocol.listen_flags())
                .arg("-i")
                .arg(self.args.protocol.listen_url(&format!("127.0.0.1:{port}")))
                .args(["-c", "copy"])
                .args(self.args.protocol.remux_flags())
                .args(["-f", "hls", "-hls_time", "1"])
                .args(["-hls_segment_type", "fmp4", "-hls_list_size", "0"])
                .arg(out.join("index.m3u8"));
            listeners.push(Proc::spawn(
                cmd,
                &format!("ffmpeg listener {i}"),
                &work.join(format!("listen-{i}.log")),
            )?);
        }
        let deadline = Instant::now() + START_LIMIT;
        let up = |port: u16| match self.args.protocol {
            Protocol::Srt => udp_bound(port),
            Protocol::Rtsp | Protocol::Rtmp => listening(port),
        };
        while !ports.iter().all(|&p| up(p)) {
            if Instant::now() >= deadline {
                bail!(
                    "the ffmpeg listeners did not listen within {} s",
                    START_LIMIT.as_secs()
                );
            }
            check_alive(&mut listeners, &mut [])?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut publishers = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let url = self.args.protocol.url(&format!("127.0.0.1:{port}"), "x");
            let log = work.join(format!("ffpub-{i}.log"));
            publishers.push(publish(self.args.protocol, clip, &url, &log)?);
        }
        let inits: Vec<PathBuf> = (0..n)
            .map(|i| work.join(format!("ffmpeg-{i}/init.mp4")))
            .collect();
        let deadline = Instant::now() + START_LIMIT;
        while !inits.iter().all(|p| p.exists()) {
            if Instant::now() >= deadline {
                bail!(
                    "not every ffmpeg listener wrote its init segment within {} s\n{}",
                    START_LIMIT.as_secs(),
                    logs(&mut publishers, &mut listeners)
                );
            }
            check_alive(&mut publishers, &mut listeners)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(self.args.warm_up_s)).await;

        let sides: Vec<u32> = listeners.iter().map(|p| p.pid).collect();
        let loads: Vec<u32> = publishers.iter().map(|p| p.pid).collect();
        let before = Snapshot::take(&sides, &loads)?;
        tokio::time::sleep(Duration::from_secs(self.args.seconds)).await;
        let after = Snapshot::take(&sides, &loads)?;
        let memory = Memory::of(&sides)?;
        check_alive(&mut publishers, &mut listeners)?;
        let counts: Vec<usize> = (0..n)
            .map(|i| {
                let playlist = work.join(format!("ffmpeg-{i}/index.m3u8"));
                count_segments(&std::fs::read_to_string(playlist).unwrap_or_default())
            })
            .collect();
        if let Some(i) = counts.iter().position(|&c| c == 0) {
            bail!("ffmpeg listener {i} wrote no segment: the figures would mean nothing");
        }
        drop(publishers);
        drop(listeners);
        let fewest = counts.into_iter().min().unwrap_or(0);
        Ok(self.cost(n, &before, &after, &memory, fewest))
    }

    async fn metrics(&self, streamer: &Streamer) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", streamer.hls))
            .send()
            .await
            .context("GET /metrics")?
            .error_for_status()
            .context("GET /metrics")?;
        Ok(response.text().await?)
    }

    fn cost(
        &self,
        n: usize,
        before: &Snapshot,
        after: &Snapshot,
        memory: &Memory,
        fewest_segments: usize,
    ) -> Cost {
        let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let seconds = |ticks: u64| ticks as f64 / self.clk_tck;
        let cpu_s = seconds(after.side.0.saturating_sub(before.side.0));
        let system_s = seconds(after.side.1.saturating_sub(before.side.1));
        let busy = after.busy.saturating_sub(before.busy) as f64;
        let total = after.total.saturating_sub(before.total).max(1) as f64;
        Cost {
            processes: after.processes,
            cpu_s,
            system_s,
            cpu_pct_per_stream: 100.0 * cpu_s / wall / n as f64,
            rss_mib: mib(memory.rss_kib),
            peak_rss_mib: mib(memory.hwm_kib),
            pss_mib: mib(memory.pss_kib),
            publishers_cpu_pct: 100.0 * seconds(after.load.saturating_sub(before.load)) / wall,
            machine_busy_pct: 100.0 * busy / total,
            fewest_segments,
        }
    }

    async fn delete_streams(&self) -> Result<()> {
        let prefixes =
            std::mem::take(&mut *self.prefixes.lock().expect("nothing panics holding it"));
        crate::nats::delete_streams(&self.jetstream, &prefixes).await
    }
}

const GENERATED_CLIP: &str =
    "generated: 10 s of testsrc2 1280x720 30 fps, libx264 -b:v 2M -maxrate 2M -g 30 -bf 0, AAC 128k, MP4";

/// What the slotcast run measured.
struct Ours {
    window_s: f64,
    cost: Cost,
    idle_rss_mib: f64,
    ingest_mbps_per_stream: f64,
    latency: Latency,
}

/// `ffmpeg -re -stream_loop -1 -i clip -c copy -f rtsp -rtsp_transport tcp url` (`-f flv`
/// for RTMP).
fn publish(protocol: Protocol, clip: &Path, url: &str, log: &Path) -> Result<Proc> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
        .args(["-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-c", "copy"])
        .args(protocol.output_flags())
        .arg(url);
    Proc::spawn(cmd, &format!("ffmpeg publishing to {url}"), log)
}

/// Fails naming the first of `procs` (or `others`) that exited, with its log.
fn check_alive(procs: &mut [Proc], others: &mut [Proc]) -> Result<()> {
    for p in procs.iter_mut().chain(others.iter_mut()) {
        if let Some(what) = p.exited() {
            bail!("{what}\n{}", p.log_tail());
        }
    }
    Ok(())
}

/// The logs of the first few children that wrote anything (and every one that exited).
fn logs(procs: &mut [Proc], others: &mut [Proc]) -> String {
    let mut out = Vec::new();
    for p in procs.iter_mut().chain(others.iter_mut()) {
        let exited = p.exited();
        let tail = p.log_tail();
        if exited.is_some() || tail.lines().count() > 1 {
            out.push(format!(
                "{}{tail}",
                exited.map(|e| e + "\n").unwrap_or_default()
            ));
        }
        if out.len() >= 3 {
            break;
        }
    }
    out.join("\n")
}

/// The streamer child and where it listens.
struct Streamer {
    child: Proc,
    /// `http://127.0.0.1:<port>`: LL-HLS, `/readyz`, `/metrics`.
    hls: String,
    /// `127.0.0.1:<port>`: its one listener for the run's protocol (carrier `carrier-a`).
    ingest: String,
}

impl Streamer {
    /// Starts `slotcast server streamer` on two free loopback ports and waits until its
    /// `/readyz` says the gates are applied.
    async fn start(bench: &Bench<'_>, prefix: &str, recordings: &Path, log: &Path) -> Result<Self> {
        let ports = free_ports(3)?;
        let (hls, rtsp, rtmp) = (
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[1]),
            format!("127.0.0.1:{}", ports[2]),
        );
        // SRT is UDP: the RTMP port's number, free over TCP, is taken again for it.
        let srt = rtmp.clone();
        let mut cmd = bench.slotcast.command(&["server", "streamer"]);
        cmd.env("SLOTCAST_SERVER_ID", SERVER_ID)
            .env("SLOTCAST_INGEST_LISTENERS", format!("carrier-a={rtsp}"))
            .env("SLOTCAST_RTMP_LISTENERS", format!("carrier-a={rtmp}"))
            .env("SLOTCAST_SRT_LISTENERS", format!("carrier-a={srt}"))
            .env("SLOTCAST_HLS_ADDR", &hls)
            .env("SLOTCAST_NATS_PREFIX", prefix)
            .env("SLOTCAST_RECORDINGS_DIR", recordings)
            .env("SLOTCAST_PART_MS", PART_MS.to_string())
            .env("SLOTCAST_SEGMENT_MS", SEGMENT_MS.to_string())
            .env("SLOTCAST_NTP_SERVERS", crate::slotcast::NO_NTP)
            .env("NATS_URL", &bench.args.nats_url)
            .env("SLOTCAST_LOG", "warn")
            // Every publisher comes from 127.0.0.1 and they all start at once: more than the
            // default 8 per address may be before RECORD together.
            .env("SLOTCAST_INGEST_MAX_UNAUTH_PER_ADDR", "1024");
        let mut child = Proc::spawn(cmd, "slotcast server streamer", log)?;
        let hls = format!("http://{hls}");
        wait_ready(&bench.http, &hls, &mut child).await?;
        let ingest = match bench.args.protocol {
            Protocol::Rtsp => rtsp,
            Protocol::Rtmp => rtmp,
            Protocol::Srt => srt,
        };
        Ok(Self { child, hls, ingest })
    }
}

fn count_segments(playlist: &str) -> usize {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

/// `ffmpeg -version`'s version word.
pub(crate) async fn tool_version(tool: &str) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(tool)
            .arg("-version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("{tool} -version did not answer within 10 s"))?
    .with_context(|| format!("run {tool}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_string())
}

/// The clip's overall bitrate in bit/s, from ffprobe.
async fn clip_bitrate(clip: &Path) -> Result<f64> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=bit_rate"])
            .args(["-of", "default=noprint_wrappers=1:nokey=1"])
            .arg(clip)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("ffprobe did not answer within 30 s"))?
    .context("run ffprobe")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("ffprobe cannot read the bitrate of {}", clip.display()))
}

/// `getconf CLK_TCK`, or 100 (Linux's USER_HZ) when it cannot be read; and whether assumed.
async fn clock_ticks() -> (u64, bool) {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        Command::new("getconf")
            .arg("CLK_TCK")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(out)) => match String::from_utf8_lossy(&out.stdout).trim().parse() {
            Ok(t) if t > 0 => (t, false),
            _ => (100, true),
        },
        _ => (100, true),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(_) => "> max".to_string(),
        None => "-".to_string(),
    }
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn text(r: &Report) -> String {
    let h = &r.host;
    let mut out = format!(
        "slotcast-bench ingest: {:?} publishers; clip {:.2} Mbit/s ({}); {} s measured after {} s \
         of warm-up; parts {} ms, segments {} ms\n\n",
        r.protocol, r.clip_mbps, r.clip, r.seconds, r.warm_up_s, r.part_ms, r.segment_ms
    );
    out.push_str(&format!(
        "CPU: utime+stime over the window in % of one core per stream (of it, stime); the ffmpeg \
         publishers (load generator) in % of one core, all together; the machine in % of all {} \
         CPUs; each load figure for the slotcast run / the ffmpeg run\n\n\
         streams | slotcast CPU/stream | ffmpeg CPU/stream | ratio | publishers CPU | machine busy\n\
         ------- | ------------------- | ----------------- | ----- | -------------- | ------------\n",
        h.cpus
    ));
    let cpu = |c: &Cost| {
        format!(
            "{:.2} % ({:.2})",
            c.cpu_pct_per_stream,
            c.cpu_pct_per_stream * c.system_s / c.cpu_s.max(1e-9)
        )
    };
    for s in &r.scenarios {
        let (o, f) = (&s.slotcast, &s.ffmpeg);
        let publishers = format!("{:.1} / {:.1}", o.publishers_cpu_pct, f.publishers_cpu_pct);
        let busy = format!("{:.0} / {:.0}", o.machine_busy_pct, f.machine_busy_pct);
        out.push_str(&format!(
            "{:>7} | {:>19} | {:>17} | {:>5} | {publishers:>14} | {busy:>12}\n",
            s.streams,
            cpu(o),
            cpu(f),
            opt(s.cpu_ratio, 2),
        ));
    }
    out.push_str(
        "\nmemory (MiB) at the end of the window: RSS counts shared library pages in every \
         process, PSS splits them among the processes sharing them\n\n\
         streams | slotcast RSS total (idle, peak) | RSS/stream | PSS/stream | ffmpeg RSS total (peak) | RSS/stream | PSS/stream\n\
         ------- | ------------------------------- | ---------- | ---------- | ----------------------- | ---------- | ----------\n",
    );
    for s in &r.scenarios {
        let (o, f) = (&s.slotcast, &s.ffmpeg);
        let n = s.streams as f64;
        let ours = format!(
            "{:.1} ({:.1}, {:.1})",
            o.rss_mib, s.slotcast_idle_rss_mib, o.peak_rss_mib
        );
        let theirs = format!("{:.1} ({:.1})", f.rss_mib, f.peak_rss_mib);
        out.push_str(&format!(
            "{:>7} | {ours:>31} | {:>10.1} | {:>10.1} | {theirs:>23} | {:>10.1} | {:>10.1}\n",
            s.streams,
            o.rss_mib / n,
            o.pss_mib / n,
            f.rss_mib / n,
            f.pss_mib / n,
        ));
    }
    out.push_str(
        "\nlatency (slotcast): a part's first frame arriving to the part announced, from the \
         histogram's change over the window; 5 ms buckets, a percentile is its bucket's upper \
         bound. Fewest segments: the shortest playlist at the end, slotcast / ffmpeg\n\n\
         streams | ingest Mbit/s/stream | parts | p50 ms | p95 ms | mean ms | fewest segments\n\
         ------- | -------------------- | ----- | ------ | ------ | ------- | ---------------\n",
    );
    for s in &r.scenarios {
        let l = &s.latency;
        let segments = format!(
            "{} / {}",
            s.slotcast.fewest_segments, s.ffmpeg.fewest_segments
        );
        out.push_str(&format!(
            "{:>7} | {:>20.2} | {:>5} | {:>6} | {:>6} | {:>7} | {segments:>15}\n",
            s.streams,
            s.ingest_mbps_per_stream,
            l.parts,
            opt(l.p50_ms, 0),
            opt(l.p95_ms, 0),
            opt(l.mean_ms, 1),
        ));
    }
    out.push('\n');
    for s in &r.scenarios {
        out.push_str(&format!(
            "target at {:>2} streams: slotcast CPU/stream <= 1/3 of ffmpeg's: ratio {} ({}); \
             part latency p95 <= {:.0} ms: {} ms ({})\n",
            s.streams,
            opt(s.cpu_ratio, 2),
            met(s.cpu_ratio.map(|v| v <= r.cpu_ratio_target)),
            r.latency_p95_target_ms,
            opt(s.latency.p95_ms, 0),
            met(s.latency.p95_ms.map(|v| v <= r.latency_p95_target_ms)),
        ));
    }
    out.push_str(&format!(
        "\nmachine: {} CPUs ({}), Linux {}, ffmpeg {}, nats-server {}; CLK_TCK {}{}; the streamer, \
         the ffmpeg listeners, the ffmpeg publishers and NATS share them\n",
        h.cpus,
        h.cpu_model,
        h.kernel,
        h.ffmpeg,
        h.nats_server,
        h.clk_tck,
        if h.clk_tck_assumed { " (assumed)" } else { "" },
    ));
    out
}

/// `seconds` of a 720p test pattern with a tone, as a broadcaster's encoder sends it: about
/// 2 Mbit/s (a 1 s segment is about 250 KB), a keyframe a second, no B-frames, AAC; written as
/// `clip.mp4` in `dir`. Shared by the ingest and HLS benchmarks.
pub(crate) async fn make_clip(dir: &Path, seconds: u32) -> Result<PathBuf> {
    let clip = dir.join("clip.mp4");
    let seconds = seconds.to_string();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            seconds.as_str(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args(["-b:v", "2M", "-maxrate", "2M", "-bufsize", "4M"])
        .args([
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
        .args(["-movflags", "+faststart"])
        .arg(&clip);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| anyhow!("generating the clip took over 300 s"))?
        .context("run ffmpeg to generate the clip")?;
    if !out.status.success() {
        bail!(
            "ffmpeg could not generate the clip: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(clip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::stream_key_hash;

    #[test]
    fn a_stream_key_is_announced_by_its_sha256() {
        let key = new_stream_key();
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(key, new_stream_key());
        assert_eq!(
            stream_key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn playlists_count_their_segments() {
        assert_eq!(
            count_segments("#EXTM3U\n#EXTINF:1.0,\na.m4s\n#EXTINF:1.0,\nb.m4s\n"),
            2
        );
        assert_eq!(count_segments("#EXTM3U\n"), 0);
    }
}
