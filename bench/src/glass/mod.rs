//! `slotcast-bench glass`: glass-to-glass latency, from the moment a frame is handed to the
//! encoder to the moment the watch page presents it in Chromium, by LL-HLS and by WHEP. Prints
//! figures, asserts none.
//!
//! Contract: this process is the broadcaster's camera (`source.rs`). It hands 640x360 frames
//! at 30 fps and a tone, in real time, to ffmpeg (x264 ultrafast, zerolatency, a keyframe a
//! second; AAC), which publishes them by RTSP over TCP into a `slotcast server streamer` child whose gate is opened as the NATS contract says a scheduler opens it (under
//! a NATS prefix of the run's own, deleted at the end, on error and on Ctrl-C too). Each frame
//! carries, as the code in `code.rs`, the server clock's time when it was handed over: the
//! local clock plus the offset measured NTP-style against `GET /v1/time` of a `slotcast server
//! api` child (on a throwaway database, dropped at the end), as the terminal measures it. The
//! viewer is `tests/browser/glass.mjs` under Node, which measures its own offset against the
//! same `/v1/time` and reads the code off every frame the page presents. The two ways of
//! watching run one after the other on the same stream. Every child is killed when its guard
//! drops and every wait is bounded; a viewer that reads no frame by LL-HLS, or a child that
//! died, fails the run, while WHEP refused is reported as unavailable with the server's answer.

mod code;
mod source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slotcast_domain::contract::Names;
use slotcast_domain::time::Exchange;
use tokio::process::Command;

use crate::nats::new_stream_key;
use crate::report::{machine, print_report, until_interrupted};
use crate::scratch::Scratch;
use crate::slotcast::{free_ports, ntp_list, wait_ready, ApiOptions, Proc, Slotcast};
use source::{Camera, SourceStats, FPS};

const SERVER_ID: &str = "bench-glass";
const RESERVATION: &str = "bench-glass-0";
/// The streamer's LL-HLS settings for the run (its defaults, set so the report can name them).
const PART_MS: u64 = 200;
const SEGMENT_MS: u64 = 1000;
/// The issue's goal for WHEP: the median below this on this machine.
const WHEP_GOAL_MS: f64 = 500.0;
/// GET /v1/time exchanges for the publisher's offset; the least round trip's is kept.
const CLOCK_SAMPLES: usize = 8;
/// How long the api's server clock gets to sync with the NTP servers given.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// Glass-to-glass latency in Chromium by LL-HLS and by WHEP: frames carrying the server
/// clock's time in a code, published by ffmpeg over RTSP, read back off the watch page by
/// tests/browser/glass.mjs. Needs ffmpeg, Node with web/node_modules (npm ci --prefix web),
/// Chromium, Postgres (for the api's /v1/time) and NATS with JetStream. Use a release build.
#[derive(clap::Args, Debug)]
pub struct GlassArgs {
    /// Seconds recorded per way of watching, from its first readable frame.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// Seconds a viewer gets to show its first readable frame.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=300))]
    start_limit: u64,
    /// Ways of watching, in order, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "hls,whep")]
    modes: Vec<Mode>,
    /// The video's bitrate, kbit/s.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=20_000))]
    bitrate_kbps: u32,
    /// How far ahead of the pictures the camera hands its sound to ffmpeg, ms (ffmpeg holds
    /// each frame until it has coded sound up to the same time).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=2000))]
    audio_lead_ms: u64,
    /// Publish video only (no AAC track).
    #[arg(long)]
    no_audio: bool,
    /// NTP servers for the server clock of the api and the streamer, comma-separated; none:
    /// the system clock.
    #[arg(long, value_delimiter = ',', env = "SLOTCAST_NTP_SERVERS")]
    ntp: Vec<String>,
    /// Admin connection, used to create and drop the throwaway database of the api.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true,
        default_value = crate::scratch::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// NATS with JetStream, for the streamer and the slot message that opens its gate.
    #[arg(long, env = "NATS_URL", default_value = crate::nats::DEFAULT_URL)]
    nats_url: String,
    /// The Chromium the viewer runs.
    #[arg(long, env = "CHROMIUM", default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// The viewer script (default: tests/browser/glass.mjs of the source tree this was built
    /// from).
    #[arg(long)]
    viewer: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A way of watching the watch page offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// LL-HLS by hls.js: `/watch/<id>`.
    Hls,
    /// WebRTC by WHEP: `/watch/<id>?mode=realtime`.
    Whep,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Hls => "LL-HLS",
            Mode::Whep => "WHEP",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Mode::Hls => "",
            Mode::Whep => "?mode=realtime",
        }
    }
}

/// What glass.mjs prints (its comment says what each field is).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Viewed {
    ok: bool,
    count: u64,
    median_ms: Option<f64>,
    p95_ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    unreadable: u64,
    frames: u64,
    skipped: u64,
    windows_ms: Vec<f64>,
    offset_ms: Option<f64>,
    offset_delay_ms: Option<f64>,
    first_frame_s: Option<f64>,
    buffer_ahead_ms: Option<f64>,
    /// How far the watch page moved a late LL-HLS start forward, if it did.
    caught_up_ms: Option<f64>,
    hls_latency_ms: Option<f64>,
    hls_target_latency_ms: Option<f64>,
    playback_rate: Option<f64>,
    webrtc: Option<WebRtcView>,
    size: Option<String>,
    engine: Option<String>,
    player: Option<String>,
    browser: Option<String>,
    whep_answers: Vec<WhepAnswer>,
    errors: Vec<serde_json::Value>,
    console_errors: Vec<String>,
    reason: Option<String>,
}

/// The real-time player's video receiver over the window, from its own counters.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WebRtcView {
    jitter_buffer_ms: Option<f64>,
    jitter_buffer_target_ms: Option<f64>,
    processing_ms: Option<f64>,
    decode_ms: Option<f64>,
    frames_decoded: f64,
    frames_dropped: f64,
    packets_lost: f64,
    nacks: f64,
    plis: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WhepAnswer {
    status: u16,
    body: String,
}

#[derive(Debug, Serialize)]
struct Watched {
    mode: Mode,
    /// The 1, 5 and 15 minute load averages as the viewer started.
    load_before: String,
    /// Why there are no figures (the server's answer to WHEP), when there are none.
    unavailable: Option<String>,
    viewed: Viewed,
}

#[derive(Debug, Serialize)]
struct Report {
    seconds: u64,
    width: usize,
    height: usize,
    fps: u64,
    bitrate_kbps: u32,
    /// How far ahead of the pictures the sound was handed over; `None`: no sound.
    audio_lead_ms: Option<u64>,
    part_ms: u64,
    segment_ms: u64,
    clock: String,
    publisher_offset_ms: f64,
    publisher_offset_delay_ms: f64,
    source: SourceStats,
    watched: Vec<Watched>,
    whep_goal_ms: f64,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    ffmpeg: String,
    node: String,
    load_before: String,
}

pub async fn glass(args: GlassArgs, slotcast: &Slotcast) -> Result<()> {
    let viewer = args.viewer.clone().unwrap_or_else(default_viewer);
    if !viewer.is_file() {
        bail!("no viewer script at {} (--viewer PATH)", viewer.display());
    }
    if !args.chromium.is_file() {
        bail!(
            "no Chromium at {} (scripts/services installs it; --chromium PATH)",
            args.chromium.display()
        );
    }
    let ffmpeg = crate::ingest::tool_version("ffmpeg").await?;
    let node = node_version().await?;
    let (client, jetstream) = crate::nats::connect(&args.nats_url).await?;
    let (prefix, names) = crate::nats::fresh_prefix(0);
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-glass-")
        .tempdir()
        .context("create a temporary directory")?;
    let scratch = Scratch::create(&args.database_url).await?;
    let outcome = until_interrupted(run(
        &args,
        slotcast,
        &viewer,
        &scratch,
        &jetstream,
        (&prefix, &names),
        dir.path(),
        (ffmpeg, node),
    ))
    .await;
    let cleaned = crate::nats::delete_streams(&jetstream, std::slice::from_ref(&names)).await;
    let dropped = scratch.drop_database().await;
    drop(client);
    drop(dir);
    print_report(&outcome?, args.json, text)?;
    cleaned?;
    dropped
}

/// tests/browser/glass.mjs in the source tree this was built from.
fn default_viewer() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("tests/browser/glass.mjs")
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &GlassArgs,
    slotcast: &Slotcast,
    viewer: &Path,
    scratch: &Scratch,
    jetstream: &async_nats::jetstream::Context,
    (prefix, names): (&str, &Names),
    dir: &Path,
    (ffmpeg, node): (String, String),
) -> Result<Report> {
    let load_before = load_average();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let api = slotcast
        .api(
            &ApiOptions {
                database_url: &scratch.url,
                ntp: &args.ntp,
                inline_projection: true,
                catch_up: false,
                connections: None,
            },
            dir,
            &http,
        )
        .await?;
    let time_url = format!("{}/v1/time", api.base);
    let (clock, describe) = server_clock(&http, &time_url, &args.ntp).await?;

    crate::nats::slots_stream(jetstream, names).await?;
    let key = new_stream_key();
    let gate = [(RESERVATION.to_string(), key.clone())];
    crate::nats::open_gates(jetstream, names, SERVER_ID, &gate).await?;
    let ports = free_ports(2)?;
    let (viewer_addr, rtsp) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let mut cmd = slotcast.command(&["server", "streamer"]);
    cmd.env("SLOTCAST_SERVER_ID", SERVER_ID)
        .env("SLOTCAST_INGEST_LISTENERS", format!("carrier-a={rtsp}"))
        .env("SLOTCAST_HLS_ADDR", &viewer_addr)
        .env("SLOTCAST_NATS_PREFIX", prefix)
        .env("SLOTCAST_RECORDINGS_DIR", dir.join("recordings"))
        .env("SLOTCAST_PART_MS", PART_MS.to_string())
        .env("SLOTCAST_SEGMENT_MS", SEGMENT_MS.to_string())
        .env("SLOTCAST_NTP_SERVERS", ntp_list(&args.ntp))
        .env("NATS_URL", &args.nats_url)
        .env("SLOTCAST_LOG", "warn");
    let mut streamer = Proc::spawn(cmd, "slotcast server streamer", &dir.join("streamer.log"))?;
    let base = format!("http://{viewer_addr}");
    wait_ready(&http, &base, &mut streamer).await?;

    let url = format!("rtsp://{rtsp}/live/{RESERVATION}?key={key}");
    let audio_lead = (!args.no_audio).then(|| Duration::from_millis(args.audio_lead_ms));
    let (mut publisher, source) = Camera::start(
        &url,
        args.bitrate_kbps,
        audio_lead,
        move || clock.now_ms(),
        dir,
    )
    .await?;
    let playlist = format!("{base}/hls/{RESERVATION}/index.m3u8");
    let live =
        crate::hls::wait_segments(&http, &playlist, 2, &mut [&mut publisher, &mut streamer]).await;
    if let Err(err) = live {
        return Err(source.stop().await.err().unwrap_or(err));
    }

    source.restart_stats();
    let mut watched = Vec::new();
    for &mode in &args.modes {
        let load_before = load_average();
        let page = format!("{base}/watch/{RESERVATION}{}", mode.query());
        let viewed = view(args, viewer, &page, &time_url, &dir.join("viewer.log")).await?;
        for child in [&mut publisher, &mut streamer] {
            if let Some(exited) = child.exited() {
                bail!("{exited} while the viewer watched\n{}", child.log_tail());
            }
        }
        let unavailable = if viewed.count > 0 {
            None
        } else if mode == Mode::Whep {
            Some(whep_unavailable(&viewed))
        } else {
            bail!(
                "the {} viewer read no frame: {}; page errors {:?} {:?}",
                mode.name(),
                viewed.reason.as_deref().unwrap_or("no reason given"),
                viewed.errors,
                viewed.console_errors
            );
        };
        watched.push(Watched {
            mode,
            load_before,
            unavailable,
            viewed,
        });
    }
    let source = source.stop().await?;
    publisher.stop().await;
    streamer.stop().await;
    api.proc.stop().await;

    let m = machine(String::new());
    Ok(Report {
        seconds: args.seconds,
        width: code::WIDTH,
        height: code::HEIGHT,
        fps: FPS,
        bitrate_kbps: args.bitrate_kbps,
        audio_lead_ms: (!args.no_audio).then_some(args.audio_lead_ms),
        part_ms: PART_MS,
        segment_ms: SEGMENT_MS,
        clock: describe,
        publisher_offset_ms: ms(clock.offset),
        publisher_offset_delay_ms: clock.delay_ms,
        source,
        watched,
        whep_goal_ms: WHEP_GOAL_MS,
        cpus: m.cpus,
        cpu_model: m.cpu_model,
        kernel: m.kernel,
        ffmpeg,
        node,
        load_before,
    })
}

/// The server clock as this process reads it: the local clock plus the offset of the
/// least-delay exchange with `GET /v1/time`, as the terminal measures it.
#[derive(Clone, Copy, Debug)]
struct ServerClock {
    offset: chrono::Duration,
    delay_ms: f64,
}

impl ServerClock {
    fn now_ms(&self) -> u64 {
        (Utc::now() + self.offset).timestamp_millis().max(0) as u64
    }
}

fn ms(d: chrono::Duration) -> f64 {
    d.num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// The part of `GET /v1/time` read here.
#[derive(Debug, Deserialize)]
struct TimeAnswer {
    t_receive: DateTime<Utc>,
    t_transmit: DateTime<Utc>,
    state: String,
    source: String,
}

/// The server clock, once the api's has synced when NTP servers are given, and a sentence
/// describing it.
async fn server_clock(
    http: &reqwest::Client,
    url: &str,
    ntp: &[String],
) -> Result<(ServerClock, String)> {
    let deadline = tokio::time::Instant::now() + SYNC_LIMIT;
    loop {
        let mut best: Option<Exchange> = None;
        let mut last = None;
        for _ in 0..CLOCK_SAMPLES {
            let t1 = Utc::now();
            let answer: TimeAnswer = http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .with_context(|| format!("GET {url}"))?;
            let t4 = Utc::now();
            let exchange = Exchange {
                t1,
                t2: answer.t_receive,
                t3: answer.t_transmit,
                t4,
            };
            if best.is_none_or(|b| exchange.delay() < b.delay()) {
                best = Some(exchange);
            }
            last = Some(answer);
        }
        let (best, last) = (
            best.expect("CLOCK_SAMPLES > 0"),
            last.expect("CLOCK_SAMPLES > 0"),
        );
        if ntp.is_empty() || last.state == "synced" {
            let clock = ServerClock {
                offset: best.offset(),
                delay_ms: ms(best.delay()),
            };
            let describe = format!(
                "the api's /v1/time (source {}, {}; {})",
                last.source,
                last.state,
                if ntp.is_empty() {
                    "no NTP servers given".to_string()
                } else {
                    format!("NTP {}", ntp.join(","))
                }
            );
            return Ok((clock, describe));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the api's server clock did not sync with NTP {} within {} s (it is {})",
                ntp.join(","),
                SYNC_LIMIT.as_secs(),
                last.state
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// glass.mjs on `page`; its JSON line, whatever its exit code.
async fn view(
    args: &GlassArgs,
    viewer: &Path,
    page: &str,
    time_url: &str,
    log: &Path,
) -> Result<Viewed> {
    let mut cmd = Command::new("node");
    cmd.arg(viewer)
        .arg(page)
        .args(["--time-url", time_url])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--start-limit", &args.start_limit.to_string()])
        .env("CHROMIUM", &args.chromium)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // glass.mjs ends itself at seconds + start limit + 60 s.
    let limit = Duration::from_secs(args.seconds + args.start_limit + 90);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("the viewer took over {} s", limit.as_secs()))?
        .context("run node (scripts/services installs it)")?;
    std::fs::write(log, &out.stderr).with_context(|| format!("write {}", log.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let Some(line) = line else {
        bail!(
            "the viewer printed no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    serde_json::from_str(line).with_context(|| format!("the viewer's result: {line}"))
}

/// "WHEP unavailable: …", from the server's last answer to the page's offer.
fn whep_unavailable(viewed: &Viewed) -> String {
    let why = viewed.reason.as_deref().unwrap_or("no reason given");
    match viewed.whep_answers.last() {
        Some(a) if a.status >= 300 => format!(
            "POST /whep/<id> answered HTTP {}{}{} ({} of {} offers refused; {why})",
            a.status,
            if a.body.is_empty() { "" } else { ": " },
            a.body,
            viewed
                .whep_answers
                .iter()
                .filter(|a| a.status >= 300)
                .count(),
            viewed.whep_answers.len()
        ),
        Some(a) => format!(
            "POST /whep/<id> answered HTTP {} but no frame was read ({why})",
            a.status
        ),
        None => format!("the page sent no WHEP offer ({why})"),
    }
}

/// `node --version`, which also says Node is there.
async fn node_version() -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new("node")
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("node --version did not answer within 10 s"))?
    .context("run node (scripts/services installs it)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `v` with `digits` decimals, or "-".
fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "slotcast-bench glass: {}x{} at {} fps, x264 ultrafast zerolatency {} kbit/s, a keyframe \
         a second{}, RTSP over TCP; parts {} ms, segments {} ms; {} CPUs ({}), kernel {}, ffmpeg {}, Node {}; \
         load average before: {}\n",
        r.width,
        r.height,
        r.fps,
        r.bitrate_kbps,
        match r.audio_lead_ms {
            Some(lead) => format!(", a 440 Hz tone in AAC handed over {lead} ms ahead"),
            None => ", no audio".to_string(),
        },
        r.part_ms,
        r.segment_ms,
        r.cpus,
        r.cpu_model,
        r.kernel,
        r.ffmpeg,
        r.node,
        r.load_before
    );
    out.push_str(&format!(
        "server clock: {}; publisher's offset {:+.3} ms (round trip {:.3} ms)\n\
         source, while the viewers watched: {} frames handed to the encoder, {} late by over a \
         frame (at most {:.1} ms behind)\n",
        r.clock,
        r.publisher_offset_ms,
        r.publisher_offset_delay_ms,
        r.source.frames,
        r.source.late,
        r.source.max_behind_ms
    ));
    for w in &r.watched {
        let v = &w.viewed;
        out.push_str(&format!(
            "\n{} ({}; {}; load average before: {}):\n",
            w.mode.name(),
            match (v.engine.as_deref(), v.player.as_deref()) {
                (Some("hls.js"), Some(player)) => player,
                (Some(engine), _) => engine,
                (None, _) => "no engine",
            },
            v.browser
                .as_deref()
                .map_or("Chromium".to_string(), |b| format!("Chromium {b}")),
            w.load_before
        ));
        if let Some(why) = &w.unavailable {
            out.push_str(&format!("  WHEP unavailable: {why}\n"));
            continue;
        }
        out.push_str(&format!(
            "  glass-to-glass median {} ms, p95 {} ms, min {} ms, max {} ms\n  \
             {} frames read over {} s from the first ({} s after the page opened), {} \
             unreadable, {} presented without a callback; viewer's offset {:+.1} ms (round \
             trip {:.1} ms); medians by 5 s: {}{}\n",
            opt(v.median_ms, 0),
            opt(v.p95_ms, 0),
            opt(v.min_ms, 0),
            opt(v.max_ms, 0),
            v.count,
            r.seconds,
            v.first_frame_s
                .map_or("-".to_string(), |s| format!("{s:.1}")),
            v.unreadable,
            v.skipped,
            v.offset_ms.unwrap_or(f64::NAN),
            v.offset_delay_ms.unwrap_or(f64::NAN),
            v.windows_ms
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            v.buffer_ahead_ms.map_or(String::new(), |b| format!(
                "; buffered ahead of playback {b:.0} ms (median)"
            )),
        ));
        if let (Some(l), Some(t)) = (v.hls_latency_ms, v.hls_target_latency_ms) {
            out.push_str(&format!(
                "  hls.js's own view (medians): {l:.0} ms behind its live edge, aiming at {t:.0} \
                 ms, playing at {}x{}\n",
                v.playback_rate.unwrap_or(f64::NAN),
                v.caught_up_ms.map_or(String::new(), |c| format!(
                    "; the page moved its late start {c:.0} ms forward"
                )),
            ));
        }
        if let Some(rtc) = &v.webrtc {
            out.push_str(&format!(
                "  WebRTC's own view (means per frame): jitter buffer {} ms (its target {} ms), \
                 first packet to decoded {} ms, decoding {} ms; {} frames decoded, {} dropped, \
                 {} packets lost, {} NACKs, {} PLIs\n",
                opt(rtc.jitter_buffer_ms, 1),
                opt(rtc.jitter_buffer_target_ms, 1),
                opt(rtc.processing_ms, 1),
                opt(rtc.decode_ms, 1),
                rtc.frames_decoded,
                rtc.frames_dropped,
                rtc.packets_lost,
                rtc.nacks,
                rtc.plis
            ));
        }
        if w.mode == Mode::Whep {
            let met = v.median_ms.is_some_and(|m| m < r.whep_goal_ms);
            out.push_str(&format!(
                "  goal: median below {:.0} ms: {}\n",
                r.whep_goal_ms,
                if met { "met" } else { "NOT met" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whep_refused_is_said_with_the_servers_answer() {
        let viewed = Viewed {
            whep_answers: vec![WhepAnswer {
                status: 404,
                body: "Not Found".into(),
            }],
            reason: Some("3 WHEP offers refused and no frame".into()),
            ..Default::default()
        };
        assert_eq!(
            whep_unavailable(&viewed),
            "POST /whep/<id> answered HTTP 404: Not Found (1 of 1 offers refused; 3 WHEP \
             offers refused and no frame)"
        );
        assert_eq!(
            whep_unavailable(&Viewed::default()),
            "the page sent no WHEP offer (no reason given)"
        );
    }

    #[test]
    fn the_viewers_line_parses_with_fields_missing() {
        let v: Viewed = serde_json::from_str(
            r#"{"ok":true,"count":3,"median_ms":812.5,"p95_ms":900,"whep_answers":[],"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            (v.count, v.median_ms, v.p95_ms),
            (3, Some(812.5), Some(900.0))
        );
    }
}
