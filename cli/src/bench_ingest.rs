//! `slotcast bench ingest`: what ingest costs the streamer per stream (CPU, memory) with 1, 10
//! and 50 concurrent RTSP publishers of one pre-encoded clip, beside ffmpeg's own remux of the
//! same input to HLS in the same run, and how long a frame waits to be announced in the
//! playlist (from the streamer's part-latency histogram); prints figures, asserts none.
//!
//! Contract: the streamer is a `slotcast server streamer` child of this process (so its CPU and
//! memory are read from `/proc/<pid>` apart from the publishers'), on loopback ports it picks
//! itself, with a NATS prefix of its own (`bench<k>_<hex>`, streams deleted at the end, on error
//! and on Ctrl-C too) and its recordings in this run's temporary directory. Gates are opened by
//! publishing `opened` slot messages directly, with a window covering the run. Every child
//! (streamer, ffmpeg publishers and listeners) is killed when its guard drops; every wait is
//! bounded. A stream that produced no segment, or a child that died during the measured
//! window, fails the run: a broken run never reports figures.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream::message::PublishMessage;
use chrono::Utc;
use serde::Serialize;
use slotcast_domain::contract::{self, IngestMode, Names, SlotKind, SlotMessage};
use slotcast_nats::{Nats, NatsConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::bench::{machine, print_report, until_interrupted};

/// The streamer's LL-HLS settings for the run (set explicitly, so the report can name them).
const PART_MS: u64 = 200;
const SEGMENT_MS: u64 = 1000;
/// The targets the issue sets: our CPU per stream at most this share of ffmpeg's...
const CPU_RATIO_TARGET: f64 = 1.0 / 3.0;
/// ...and part latency p95 at most the part duration plus this.
const LATENCY_SLACK_MS: f64 = 50.0;
/// The server id the bench's streamer is.
const SERVER_ID: &str = "bench-ingest";
/// What `slotcast server streamer` prints when it is up (`streamer_role::announce`).
const STREAMER_LINE: &str = "slotcast streamer serving viewers on ";
/// The histogram the latency figures come from.
const LATENCY_METRIC: &str = "slotcast_streamer_part_latency_seconds";
/// How long the streamer and the publishers get to come up.
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
    #[arg(long, env = "NATS_URL", default_value = NatsConfig::DEFAULT_URL)]
    nats_url: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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

pub async fn ingest(args: IngestArgs) -> Result<()> {
    let ffmpeg = tool_version("ffmpeg")
        .await
        .context("ffmpeg is needed (scripts/services installs it)")?;
    let nats =
        slotcast_nats::connect(NatsConfig::new(args.nats_url.clone()), "slotcast-bench").await?;
    for _ in 0..100 {
        if nats.connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !nats.connected() {
        bail!(
            "NATS is not reachable at {} (run scripts/services)",
            args.nats_url
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-ingest-")
        .tempdir()
        .context("create a temporary directory")?;
    let (clk_tck, clk_tck_assumed) = clock_ticks().await;
    let bench = Bench {
        args: &args,
        nats,
        dir: dir.path().to_path_buf(),
        exe: std::env::current_exe().context("find the slotcast binary")?,
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
    nats: Nats,
    dir: PathBuf,
    exe: PathBuf,
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
                nats_server: self.nats.client.server_info().version,
            },
        })
    }

    async fn make_clip(&self) -> Result<PathBuf> {
        let clip = self.dir.join("clip.mp4");
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "10", "-c:v", "libx264", "-preset", "veryfast"])
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
        let hex = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("bench{k}_{}", &hex[..8]);
        let names = Names::new(&prefix).expect("a valid prefix");
        let nats = Nats {
            config: std::sync::Arc::new(NatsConfig {
                names: names.clone(),
                ..(*self.nats.config).clone()
            }),
            ..self.nats.clone()
        };
        self.prefixes
            .lock()
            .expect("nothing panics holding it")
            .push(names.clone());
        nats.ensure_slots_stream().await?;
        nats.ensure_ingest_stream().await?;
        let reservations: Vec<(String, String)> = (0..n)
            .map(|i| {
                let id = format!("bench-{k}-{i:03}");
                let key = slotcast_api::auth::new_stream_key(&id, None).key;
                (id, key)
            })
            .collect();
        self.open_gates(&nats, &reservations).await?;

        let recordings = work.join("recordings");
        let mut streamer = Streamer::start(self, &prefix, &recordings, &work.join("streamer.log"))
            .await
            .context("start the streamer")?;
        self.wait_ready(&streamer).await?;
        let idle = Memory::of(&[streamer.child.pid])?;

        let mut publishers = Vec::with_capacity(n);
        for (i, (id, key)) in reservations.iter().enumerate() {
            let url = format!("rtsp://{}/live/{id}?key={key}", streamer.rtsp);
            publishers.push(publish(clip, &url, &work.join(format!("pub-{i}.log")))?);
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
        // Hold every port until all are picked, so they differ; ffmpeg binds them right after.
        let ports: Vec<u16> = {
            let held = (0..n)
                .map(|_| TcpListener::bind("127.0.0.1:0"))
                .collect::<std::io::Result<Vec<_>>>()
                .context("pick free ports")?;
            held.iter()
                .map(|l| Ok(l.local_addr()?.port()))
                .collect::<std::io::Result<_>>()?
        };
        let mut listeners = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let out = work.join(format!("ffmpeg-{i}"));
            std::fs::create_dir_all(&out)?;
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
                .args(["-rtsp_flags", "listen", "-i"])
                .arg(format!("rtsp://127.0.0.1:{port}/live/x"))
                .args(["-c", "copy", "-f", "hls", "-hls_time", "1"])
                .args(["-hls_segment_type", "fmp4", "-hls_list_size", "0"])
                .arg(out.join("index.m3u8"));
            listeners.push(Proc::spawn(
                cmd,
                &format!("ffmpeg listener {i}"),
                &work.join(format!("listen-{i}.log")),
            )?);
        }
        let deadline = Instant::now() + START_LIMIT;
        while !ports.iter().all(|&p| listening(p)) {
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
            let url = format!("rtsp://127.0.0.1:{port}/live/x");
            publishers.push(publish(clip, &url, &work.join(format!("ffpub-{i}.log")))?);
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

    /// Publishes an `opened` message per reservation, its window covering the run.
    async fn open_gates(&self, nats: &Nats, reservations: &[(String, String)]) -> Result<()> {
        let now = Utc::now();
        let opens = now - chrono::Duration::minutes(1);
        let closes = now + chrono::Duration::hours(2);
        let mut acks = Vec::new();
        for (id, key) in reservations {
            let message = SlotMessage {
                schema: contract::SCHEMA,
                kind: SlotKind::Opened,
                reservation_id: id.clone(),
                server_id: SERVER_ID.to_string(),
                revision: 1,
                opens_at: opens,
                closes_at: closes,
                start: opens,
                end: closes,
                stream_key_hash: slotcast_api::auth::sha256_hex(key.as_bytes()),
                stream_key_digest: None,
                ingest: IngestMode::Push { carriers: vec![] },
                due_at: opens,
                published_at: now,
                late_ms: 0.0,
            };
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(&message)?.into())
                .message_id(contract::slot_message_id(id, SlotKind::Opened, 1));
            let subject = nats.config.names.slot_subject(SERVER_ID, id);
            acks.push(nats.jetstream.send_publish(subject, publish).await?);
        }
        for ack in acks {
            ack.await
                .context("JetStream did not store a slot message")?;
        }
        Ok(())
    }

    /// Until `/readyz` says the gates are applied.
    async fn wait_ready(&self, streamer: &Streamer) -> Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", streamer.hls))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the streamer was not ready within {} s:\n{}",
                    START_LIMIT.as_secs(),
                    streamer.child.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let mut failed = Vec::new();
        for names in prefixes {
            for stream in [names.slots_stream(), names.ingest_stream()] {
                let deleted = tokio::time::timeout(
                    Duration::from_secs(10),
                    self.nats.jetstream.delete_stream(&stream),
                )
                .await;
                match deleted {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.to_string().contains("not found") => {}
                    Ok(Err(e)) => failed.push(format!("{stream}: {e}")),
                    Err(_) => failed.push(format!("{stream}: no answer within 10 s")),
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!(
                "cannot delete the bench's NATS streams: {}",
                failed.join("; ")
            )
        }
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

/// A child process, killed (SIGKILL) when dropped, its stderr in a log file.
struct Proc {
    child: Child,
    pid: u32,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Self> {
        let err = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
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

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.what)),
            Err(e) => Some(format!("{}: {e}", self.what)),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!("--- {} ---\n{tail}", self.what)
    }

    /// Kills it and waits (bounded) for it to be gone.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// `ffmpeg -re -stream_loop -1 -i clip -c copy -f rtsp -rtsp_transport tcp url`.
fn publish(clip: &Path, url: &str, log: &Path) -> Result<Proc> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
        .args(["-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url]);
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
    hls: String,
    rtsp: SocketAddr,
    /// Kept open so the streamer never writes to a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Streamer {
    async fn start(bench: &Bench<'_>, prefix: &str, recordings: &Path, log: &Path) -> Result<Self> {
        let err = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = Command::new(&bench.exe)
            .args(["server", "streamer"])
            .env("SLOTCAST_SERVER_ID", SERVER_ID)
            .env("SLOTCAST_INGEST_LISTENERS", "carrier-a=127.0.0.1:0")
            .env("SLOTCAST_HLS_ADDR", "127.0.0.1:0")
            .env("SLOTCAST_NATS_PREFIX", prefix)
            .env("SLOTCAST_RECORDINGS_DIR", recordings)
            .env("SLOTCAST_PART_MS", PART_MS.to_string())
            .env("SLOTCAST_SEGMENT_MS", SEGMENT_MS.to_string())
            // A closed port: the streamer runs on the system clock and asks no one outside.
            .env("SLOTCAST_NTP_SERVERS", "127.0.0.1:9")
            .env("NATS_URL", &bench.args.nats_url)
            .env("SLOTCAST_LOG", "warn")
            // Every publisher comes from 127.0.0.1 and they all start at once: more than the
            // default 8 per address may be before RECORD together.
            .env("SLOTCAST_INGEST_MAX_UNAUTH_PER_ADDR", "1024")
            .env_remove("SLOTCAST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .context("start slotcast server streamer")?;
        let pid = child.id().context("the streamer has no pid")?;
        let stdout = child.stdout.take().context("the streamer's stdout")?;
        let child = Proc {
            child,
            pid,
            what: "slotcast server streamer".to_string(),
            log: log.to_path_buf(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_LIMIT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => bail!(
                "the streamer did not start within {} s\n{}",
                START_LIMIT.as_secs(),
                child.log_tail()
            ),
        };
        let (hls, rtsp) = parse_announce(&line)
            .with_context(|| format!("unexpected start-up line from the streamer: {line}"))?;
        Ok(Self {
            child,
            hls,
            rtsp,
            _stdout: lines,
        })
    }
}

/// `(http://hls, first rtsp address)` from "slotcast streamer serving viewers on
/// http://A; ingest carrier-a=rtsp://B".
fn parse_announce(line: &str) -> Option<(String, SocketAddr)> {
    let rest = line.strip_prefix(STREAMER_LINE)?;
    let (hls, ingest) = rest.split_once("; ingest ")?;
    let first = ingest.split(", ").next()?;
    let (_, url) = first.split_once('=')?;
    let rtsp = url.strip_prefix("rtsp://")?.parse().ok()?;
    Some((hls.to_string(), rtsp))
}

/// CPU tick counters at one moment: a side's processes, the load generator's, the machine's.
struct Snapshot {
    at: Instant,
    processes: usize,
    /// (utime + stime, stime) of the side's processes.
    side: (u64, u64),
    load: u64,
    busy: u64,
    total: u64,
}

impl Snapshot {
    fn take(side: &[u32], load: &[u32]) -> Result<Self> {
        let sum = |pids: &[u32]| {
            pids.iter().try_fold((0, 0), |(all, system), &p| {
                let (u, s) = cpu_ticks(p)?;
                Ok::<_, anyhow::Error>((all + u + s, system + s))
            })
        };
        let (busy, total) = machine_ticks()?;
        Ok(Self {
            at: Instant::now(),
            processes: side.len(),
            side: sum(side)?,
            load: sum(load)?.0,
            busy,
            total,
        })
    }
}

/// (utime, stime) of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (did the process exit?)"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// Memory of some processes, summed, in KiB.
#[derive(Debug, Default)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    pss_kib: u64,
}

impl Memory {
    /// VmRSS and VmHWM from `/proc/<pid>/status`, Pss from `/proc/<pid>/smaps_rollup`.
    fn of(pids: &[u32]) -> Result<Self> {
        let mut sum = Self::default();
        for pid in pids {
            let read = |file: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .with_context(|| format!("read /proc/{pid}/{file} (did the process exit?)"))
            };
            let (status, rollup) = (read("status")?, read("smaps_rollup")?);
            match (
                kib_field(&status, "VmRSS:"),
                kib_field(&status, "VmHWM:"),
                kib_field(&rollup, "Pss:"),
            ) {
                (Some(rss), Some(hwm), Some(pss)) => {
                    sum.rss_kib += rss;
                    sum.hwm_kib += hwm;
                    sum.pss_kib += pss;
                }
                _ => bail!("no VmRSS, VmHWM or Pss for process {pid}"),
            }
        }
        Ok(sum)
    }
}

/// `Name:   1234 kB` from a /proc file.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat.
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    parse_machine_ticks(&stat).context("unexpected /proc/stat")
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp: connecting would use
/// up ffmpeg's one RTSP listen).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
    })
}

fn count_segments(playlist: &str) -> usize {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

/// An unlabelled sample (`name value`) from Prometheus text.
fn scalar(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A Prometheus histogram: cumulative bucket counts by upper bound.
#[derive(Debug, Default, PartialEq)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Self {
        let mut h = Self::default();
        let bucket = format!("{name}_bucket{{le=\"");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                let parsed = rest.split_once("\"} ").and_then(|(le, v)| {
                    Some((
                        le.parse::<f64>().ok()?,
                        v.trim().parse::<f64>().ok()? as u64,
                    ))
                });
                if let Some(b) = parsed {
                    h.buckets.push(b);
                }
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h.sum = scalar(text, &format!("{name}_sum")).unwrap_or(0.0);
        h.count = scalar(text, &format!("{name}_count")).unwrap_or(0.0) as u64;
        h
    }

    /// What was observed since `earlier`.
    fn delta(&self, earlier: &Self) -> Self {
        let before: BTreeMap<u64, u64> = earlier
            .buckets
            .iter()
            .map(|&(le, c)| (le.to_bits(), c))
            .collect();
        Self {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    (
                        le,
                        c.saturating_sub(*before.get(&le.to_bits()).unwrap_or(&0)),
                    )
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The upper bound of the first bucket holding the `p` quantile (nearest rank), in the
    /// histogram's unit; `None` with no observations, infinite past the last finite bucket.
    fn quantile(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|&&(_, c)| c >= rank)
            .map(|&(le, _)| le)
    }
}

/// `ffmpeg -version`'s version word.
async fn tool_version(tool: &str) -> Result<String> {
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
        "slotcast bench ingest: clip {:.2} Mbit/s ({}); {} s measured after {} s of warm-up; \
         parts {} ms, segments {} ms\n\n",
        r.clip_mbps, r.clip, r.seconds, r.warm_up_s, r.part_ms, r.segment_ms
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some((1234, 567)));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((161, 1181)));
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
    }

    #[test]
    fn the_start_up_line_names_both_addresses() {
        let line = "slotcast streamer serving viewers on http://127.0.0.1:40001; ingest \
                    carrier-a=rtsp://127.0.0.1:40002, carrier-b=rtsp://127.0.0.2:8554";
        let (hls, rtsp) = parse_announce(line).unwrap();
        assert_eq!(hls, "http://127.0.0.1:40001");
        assert_eq!(rtsp, "127.0.0.1:40002".parse().unwrap());
        assert!(parse_announce("something else").is_none());
    }

    #[test]
    fn histogram_percentiles_are_bucket_upper_bounds_of_the_window() {
        let metric = |counts: [u64; 4], sum: f64| {
            format!(
                "# TYPE m histogram\nm_sum {sum}\nm_count {}\n\
                 m_bucket{{le=\"0.005\"}} {}\nm_bucket{{le=\"0.01\"}} {}\n\
                 m_bucket{{le=\"0.015\"}} {}\nm_bucket{{le=\"+Inf\"}} {}\n",
                counts[3], counts[0], counts[1], counts[2], counts[3]
            )
        };
        let before = Histogram::parse(&metric([5, 5, 5, 5], 0.01), "m");
        let after = Histogram::parse(&metric([5, 55, 100, 105], 1.0), "m");
        assert_eq!(before.count, 5);
        let window = after.delta(&before);
        assert_eq!(window.count, 100);
        assert_eq!(window.quantile(0.50), Some(0.01));
        assert_eq!(window.quantile(0.95), Some(0.015));
        assert_eq!(window.quantile(0.99), Some(f64::INFINITY));
        assert!((window.sum - 0.99).abs() < 1e-9);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn scalars_skip_labelled_and_longer_names() {
        let text = "s_total{a=\"b\"} 3\ns_total_x 4\ns_total 7\n";
        assert_eq!(scalar(text, "s_total"), Some(7.0));
        assert_eq!(scalar(text, "missing"), None);
    }

    #[test]
    fn proc_memory_fields_are_kib() {
        let status = "Name:\tslotcast\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(10240));
        assert_eq!(kib_field(status, "VmHWM:"), Some(20480));
        assert_eq!(kib_field("Pss_Anon: 5 kB\nPss: 7 kB\n", "Pss:"), Some(7));
        assert_eq!(kib_field(status, "Pss:"), None);
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
