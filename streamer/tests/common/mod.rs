//! What the tests that check the media path against a real ffmpeg share: a scratch directory,
//! running ffmpeg, writing the segmenter's output as files with a VOD playlist, and decoding
//! that playlist back.
//!
//! Contract: every directory is removed on drop (also when the test panics); a missing
//! ffmpeg (with libx264) fails the test, it does not skip.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use slotcast_streamer::media::segmenter::SegmenterOutput;

/// A scratch directory removed on drop (also when the test panics).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("slotcast-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ffmpeg(dir: &Path, args: &[&str]) -> std::process::Output {
    match Command::new("ffmpeg").current_dir(dir).args(args).output() {
        Ok(out) => out,
        Err(err) => panic!(
            "this test needs ffmpeg (with libx264) on the PATH, e.g. `apt-get install ffmpeg`: \
             running it failed: {err}"
        ),
    }
}

pub fn generate(dir: &Path, args: &[&str]) {
    let out = ffmpeg(dir, args);
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What [`write_hls`] wrote.
pub struct Written {
    pub playlist: String,
    /// The codecs of each init written.
    pub inits: Vec<String>,
    pub segments: usize,
    /// Bytes of parts after the last segment end (none after a flush).
    pub unfinished: usize,
}

/// The segmenter's outputs as `init.mp4`, `seg-<n>.m4s` (the concatenation of its parts) and
/// an ended playlist, `index.m3u8`, in `dir`.
pub fn write_hls(dir: &Path, outputs: &[SegmenterOutput]) -> Written {
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    let (mut inits, mut segments) = (Vec::new(), 0);
    let mut segment = Vec::new();
    let mut segment_duration = Duration::ZERO;
    for output in outputs {
        match output {
            SegmenterOutput::Init { data, codecs, .. } => {
                std::fs::write(dir.join("init.mp4"), data).expect("write init");
                inits.push(codecs.clone());
            }
            SegmenterOutput::Part { data, duration, .. } => {
                segment.extend_from_slice(&data.concat());
                segment_duration += *duration;
            }
            SegmenterOutput::SegmentEnd => {
                let name = format!("seg-{segments}.m4s");
                std::fs::write(dir.join(&name), &segment).expect("write segment");
                let _ = write!(
                    playlist,
                    "#EXTINF:{:.3},\n{name}\n",
                    segment_duration.as_secs_f64()
                );
                segment.clear();
                segment_duration = Duration::ZERO;
                segments += 1;
            }
        }
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), &playlist).expect("write playlist");
    Written {
        playlist,
        inits,
        segments,
        unfinished: segment.len(),
    }
}

/// ffmpeg decodes every frame of `dir/index.m3u8` (framemd5): the video frames' pts in
/// decode order, and the number of audio frames. Fails on any word from ffmpeg.
pub fn decode(dir: &Path) -> (Vec<i64>, usize) {
    let out = ffmpeg(
        dir,
        &["-v", "error", "-i", "index.m3u8", "-f", "framemd5", "-"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg complained: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One line per frame: stream index, dts, pts, duration, size, md5.
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();
    let video = lines
        .iter()
        .filter(|f| f[0] == "0")
        .map(|f| f[2].parse().expect("pts"))
        .collect();
    let audio = lines.iter().filter(|f| f[0] == "1").count();
    (video, audio)
}
