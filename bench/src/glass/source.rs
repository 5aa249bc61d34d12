//! The camera of `slotcast-bench glass`: ffmpeg coding and publishing what two tasks of this
//! process hand it in real time, 640x360 frames at 30 fps on its stdin (each carrying the
//! server clock's time as it is handed over, `code.rs`) and, unless left out, a 440 Hz tone as
//! 48 kHz mono PCM on a FIFO in the run's directory.
//!
//! Contract: both tasks keep one schedule from one start, a frame and 1/30 s of sound per
//! tick; a tick due while the last write still blocks is written late, never skipped (ffmpeg
//! times raw input by its count), and late video frames are counted. The sound is handed over
//! `audio_lead` ahead of the pictures: ffmpeg's command line takes its inputs in timestamp
//! order and holds a frame until the audio encoder has output sound up to the same time, so
//! audio handed over in step with the pictures would make ffmpeg, not slotcast, hold each
//! frame back (docs/perf-log.md says by how much). Both tasks stop at [`Camera::stop`], or
//! with an error when ffmpeg stops reading; ffmpeg itself is the caller's [`Proc`].

use std::f64::consts::TAU;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::{ChildStdin, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::code;
use crate::slotcast::Proc;

pub const FPS: u64 = 30;
const SAMPLE_RATE: u64 = 48_000;
const SAMPLES_PER_FRAME: u64 = SAMPLE_RATE / FPS;
const TONE_HZ: f64 = 440.0;
/// A fifth of full scale.
const TONE_AMPLITUDE: f64 = 0.2 * i16::MAX as f64;

/// How the publisher codes the video: what a broadcaster's low-latency x264 settings look
/// like (no lookahead, no B-frames, a keyframe each second). The bitrate is added apart.
pub const X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-g",
    "30",
    "-bf",
    "0",
    "-pix_fmt",
    "yuv420p",
];

/// What the camera did: every frame it wrote, and those it wrote late.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SourceStats {
    pub frames: u64,
    /// Frames handed over more than a frame interval after their turn.
    pub late: u64,
    pub max_behind_ms: f64,
}

/// The camera's two tasks.
pub struct Camera {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SourceStats>>,
    video: JoinHandle<Result<()>>,
    audio: Option<JoinHandle<Result<()>>>,
}

impl Camera {
    /// ffmpeg publishing to `url` by RTSP over TCP, and the tasks feeding it; `now_ms` is the
    /// server clock, `audio_lead` `None` leaves the sound out. ffmpeg's log goes in `dir`.
    pub async fn start(
        url: &str,
        bitrate_kbps: u32,
        audio_lead: Option<Duration>,
        now_ms: impl Fn() -> u64 + Send + 'static,
        dir: &Path,
    ) -> Result<(Proc, Self)> {
        let fifo = dir.join("audio.pcm");
        // Opened for reading and writing, the FIFO is there for ffmpeg to open (for reading)
        // whenever it gets to it, and no write waits for that.
        let sound = match audio_lead {
            Some(_) => {
                make_fifo(&fifo).await?;
                let sender = pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&fifo)
                    .with_context(|| format!("open {}", fifo.display()))?;
                Some(sender)
            }
            None => None,
        };
        let (publisher, stdin) = Proc::spawn_piped(
            command(url, bitrate_kbps, sound.is_some().then_some(&*fifo)),
            "ffmpeg publishing",
            &dir.join("ffmpeg.log"),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let stats = Arc::new(Mutex::new(SourceStats::default()));
        let video = tokio::spawn(pictures(stdin, now_ms, start, stats.clone(), stop.clone()));
        let audio = sound.zip(audio_lead).map(|(sender, lead)| {
            let lead_samples = lead.as_millis() as u64 * SAMPLE_RATE / 1000;
            tokio::spawn(sound_of(sender, lead_samples, start, stop.clone()))
        });
        Ok((
            publisher,
            Self {
                stop,
                stats,
                video,
                audio,
            },
        ))
    }

    /// Counts frames afresh from now (the start, while ffmpeg connects, is not watched).
    pub fn restart_stats(&self) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = SourceStats::default();
    }

    /// Stops both tasks; what the video task did since [`Camera::restart_stats`], or why a
    /// task failed.
    pub async fn stop(self) -> Result<SourceStats> {
        self.stop.store(true, Ordering::Relaxed);
        let joined = async {
            let stats = self.video.await;
            let sound = match self.audio {
                Some(task) => Some(task.await),
                None => None,
            };
            (stats, sound)
        };
        let Ok((stats, sound)) = tokio::time::timeout(Duration::from_secs(5), joined).await else {
            bail!("the camera's tasks did not stop within 5 s");
        };
        stats.map_err(|e| anyhow!("the frame writer: {e}"))??;
        if let Some(sound) = sound {
            sound.map_err(|e| anyhow!("the sound writer: {e}"))??;
        }
        Ok(*self.stats.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// ffmpeg taking raw frames on stdin and, with `fifo`, raw sound from it, as they come.
fn command(url: &str, bitrate_kbps: u32, fifo: Option<&Path>) -> Command {
    let size = format!("{}x{}", code::WIDTH, code::HEIGHT);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size])
        .args(["-framerate", &FPS.to_string(), "-i", "pipe:0"]);
    if let Some(fifo) = fifo {
        cmd.args([
            "-f",
            "s16le",
            "-ar",
            &SAMPLE_RATE.to_string(),
            "-ac",
            "1",
            "-i",
        ])
        .arg(fifo)
        .args(["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "96k"]);
    }
    let bitrate = format!("{bitrate_kbps}k");
    cmd.args(X264)
        .args(["-b:v", &bitrate])
        .args(["-f", "rtsp", "-rtsp_transport", "tcp", url]);
    cmd
}

async fn make_fifo(path: &Path) -> Result<()> {
    let out = Command::new("mkfifo")
        .arg(path)
        .kill_on_drop(true)
        .output()
        .await
        .context("run mkfifo")?;
    ensure!(
        out.status.success(),
        "mkfifo {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Tick `n` of the schedule that starts at `start`.
fn tick(start: Instant, n: u64) -> Instant {
    start + Duration::from_nanos(n * 1_000_000_000 / FPS)
}

async fn pictures(
    mut stdin: ChildStdin,
    now_ms: impl Fn() -> u64,
    start: Instant,
    stats: Arc<Mutex<SourceStats>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut frame = vec![0; code::FRAME_BYTES];
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = tick(start, n);
        tokio::time::sleep_until(due).await;
        let behind = due.elapsed();
        code::render(&mut frame, now_ms(), n);
        stdin
            .write_all(&frame)
            .await
            .context("ffmpeg stopped taking frames")?;
        let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.frames += 1;
        if behind > Duration::from_nanos(1_000_000_000 / FPS) {
            stats.late += 1;
        }
        stats.max_behind_ms = stats.max_behind_ms.max(behind.as_secs_f64() * 1000.0);
    }
    Ok(())
}

async fn sound_of(
    mut sender: pipe::Sender,
    lead_samples: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut pcm = Vec::new();
    let mut written = 0;
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(tick(start, n)).await;
        let upto = lead_samples + n * SAMPLES_PER_FRAME;
        tone(&mut pcm, written, upto);
        sender
            .write_all(&pcm)
            .await
            .context("ffmpeg stopped taking sound")?;
        written = upto;
    }
    Ok(())
}

/// Samples `from..to` of the tone, as s16le, into `pcm` (cleared first).
fn tone(pcm: &mut Vec<u8>, from: u64, to: u64) {
    pcm.clear();
    for i in from..to {
        let t = i as f64 / SAMPLE_RATE as f64;
        let sample = (TONE_AMPLITUDE * (TAU * TONE_HZ * t).sin()).round() as i16;
        pcm.extend_from_slice(&sample.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_goes_on_where_it_stopped() {
        let (mut whole, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
        tone(&mut whole, 0, 3200);
        tone(&mut a, 0, 1234);
        tone(&mut b, 1234, 3200);
        assert_eq!(whole.len(), 6400);
        assert_eq!([a, b].concat(), whole);
        let peak = whole
            .chunks(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs())
            .max();
        assert_eq!(peak, Some(TONE_AMPLITUDE.round() as u16));
    }

    #[test]
    fn a_tick_of_sound_is_a_frame_long() {
        assert_eq!(SAMPLES_PER_FRAME, 1600);
        let start = Instant::now();
        assert_eq!(tick(start, 30) - start, Duration::from_secs(1));
        assert_eq!(tick(start, 1) - start, Duration::from_nanos(33_333_333));
    }
}
