//! The streaming side under test: `slotcast server all` with the streamer in it (or a
//! streamer on its own), real publishers (ffmpeg, GStreamer), a raw RTSP client for exact
//! answers, and real HLS readers (ffmpeg; Chromium through tests/browser/watch.mjs).
//!
//! Contract: every process is killed when its guard drops; every wait is bounded; every
//! address is on loopback. A missing ffmpeg, GStreamer or Chromium fails the test loudly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use super::{spawn_role_lines, spawn_role_lines_to, token, ts, Api, Role, TestDb};

pub const STREAMER_LINE: &str = "slotcast streamer serving viewers on ";
const API_LINE: &str = "slotcast api listening on ";

/// Where a streamer listens, from its start-up line.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// `http://127.0.0.1:port`
    pub hls: String,
    /// RTSP listeners by carrier.
    pub ingest: BTreeMap<String, SocketAddr>,
    /// RTMP listeners by carrier.
    pub rtmp: BTreeMap<String, SocketAddr>,
    /// SRT listeners by carrier.
    pub srt: BTreeMap<String, SocketAddr>,
    /// WHIP listeners by carrier.
    pub whip: BTreeMap<String, SocketAddr>,
}

fn parse_endpoints(line: &str) -> Endpoints {
    // "http://127.0.0.1:8888; ingest carrier-a=rtsp://127.0.0.2:8554, carrier-a=rtmp://…"
    let (hls, listeners) = line.split_once("; ingest ").expect("streamer line");
    let mut ingest = BTreeMap::new();
    let mut rtmp = BTreeMap::new();
    let mut srt = BTreeMap::new();
    let mut whip = BTreeMap::new();
    for item in listeners.split(", ") {
        let (carrier, url) = item.split_once('=').expect("carrier=url");
        let (scheme, addr) = url.split_once("://").expect("scheme://address");
        let addr: SocketAddr = addr.parse().expect("socket address");
        let by_scheme = match scheme {
            "rtsp" => &mut ingest,
            "rtmp" => &mut rtmp,
            "srt" => &mut srt,
            "whip" => &mut whip,
            other => panic!("a listener of scheme {other} in {line:?}"),
        };
        by_scheme.insert(carrier.to_string(), addr);
    }
    Endpoints {
        hls: format!("http://{}", hls.trim_start_matches("http://")),
        ingest,
        rtmp,
        srt,
        whip,
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate is in the workspace")
        .to_path_buf()
}

/// The streamer's environment: its server id, listeners on ports of their own, recordings
/// in `dir`, a secret key of its own.
pub fn streamer_env(server_id: &str, listeners: &str, dir: &Path) -> Vec<(String, String)> {
    vec![
        ("SLOTCAST_SERVER_ID".into(), server_id.into()),
        ("SLOTCAST_INGEST_LISTENERS".into(), listeners.into()),
        ("SLOTCAST_HLS_ADDR".into(), "127.0.0.1:0".into()),
        ("SLOTCAST_RECORDINGS_DIR".into(), dir.display().to_string()),
        (
            "SLOTCAST_HLS_JS".into(),
            repo_root()
                .join("web/node_modules/hls.js/dist/hls.min.js")
                .display()
                .to_string(),
        ),
        ("SLOTCAST_SESSION_TIMEOUT_S".into(), "10".into()),
        // The test cameras are on loopback, which is refused unless listed.
        ("SLOTCAST_CAMERA_NETWORKS".into(), "127.0.0.0/8".into()),
        ("SLOTCAST_SECRET_KEY".into(), secret_key()),
    ]
}

/// A fresh `SLOTCAST_SECRET_KEY` for one test (the api and the streamer of a `Stack` share it).
pub fn secret_key() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// `slotcast server all` with a streamer for `server_id`, plus an operator and a distributor.
pub struct Stack {
    pub api: Api,
    pub streamer: Endpoints,
    pub recordings: tempfile::TempDir,
    pub operator: String,
    pub alice: String,
}

impl Stack {
    /// `listeners` as in SLOTCAST_INGEST_LISTENERS, with port 0 for a free port.
    pub fn start(db: &TestDb, server_id: &str, listeners: &str) -> Self {
        Self::start_to(db, server_id, listeners, &[], Stdio::inherit())
    }

    /// [`Stack::start`] with more environment, and the server's log sent to `log`.
    pub fn start_to(
        db: &TestDb,
        server_id: &str,
        listeners: &str,
        extra_env: &[(&str, &str)],
        log: Stdio,
    ) -> Self {
        let recordings = tempfile::tempdir().expect("recordings dir");
        let env = streamer_env(server_id, listeners, recordings.path());
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra_env);
        let (role, lines) = spawn_role_lines_to(db, "all", &env, &[API_LINE, STREAMER_LINE], log);
        Self {
            api: Api::from_role(role, lines[0].clone()),
            streamer: parse_endpoints(&lines[1]),
            recordings,
            operator: token(db, "operator", "ops"),
            alice: token(db, "distributor", "alice"),
        }
    }

    /// Registers a server with these carriers; its windows are exactly the booked slots.
    pub async fn register(&self, id: &str, carriers: &[&str]) {
        register(&self.api, &self.operator, id, carriers).await;
    }

    /// Books `[start, end)`; returns (reservation id, stream key).
    pub async fn book(
        &self,
        server: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> (String, String) {
        book(&self.api, &self.alice, server, start, end).await
    }

    pub fn rtsp(&self, carrier: &str) -> SocketAddr {
        self.streamer.ingest[carrier]
    }

    pub fn rtmp(&self, carrier: &str) -> SocketAddr {
        self.streamer.rtmp[carrier]
    }

    pub fn srt(&self, carrier: &str) -> SocketAddr {
        self.streamer.srt[carrier]
    }

    pub fn whip(&self, carrier: &str) -> SocketAddr {
        self.streamer.whip[carrier]
    }

    pub fn hls(&self, path: &str) -> String {
        format!("{}{path}", self.streamer.hls)
    }
}

/// Registers server `id` with these carriers through `api`; its windows are exactly the
/// booked slots, and it takes bookings at once.
pub async fn register(api: &Api, operator: &str, id: &str, carriers: &[&str]) {
    let carriers: Vec<Value> = carriers
        .iter()
        .map(|c| json!({"name": c, "ingest_url": format!("rtsp://{c}.example:8554")}))
        .collect();
    let body = json!({
        "id": id, "name": id, "capacity": 10,
        "min_lead_s": 0, "preroll_s": 0, "grace_s": 0, "carriers": carriers
    });
    let (status, body) = api.post("/v1/servers", operator, body).await;
    assert_eq!(status, 201, "{body}");
}

/// Books `[start, end)` on `server` as `distributor`; returns (reservation id, stream key).
pub async fn book(
    api: &Api,
    distributor: &str,
    server: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (String, String) {
    let body = json!({"server_id": server, "start": ts(start), "end": ts(end)});
    let (status, booked) = api.post("/v1/reservations", distributor, body).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().expect("id").to_string();
    let key = find_key(&booked).unwrap_or_else(|| panic!("no stream key in {booked}"));
    (id, key)
}

/// The stream key wherever the booking answer puts it.
pub fn find_key(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(k)) = map.get("stream_key") {
                return Some(k.clone());
            }
            map.values().find_map(find_key)
        }
        Value::Array(items) => items.iter().find_map(find_key),
        _ => None,
    }
}

/// `slotcast server streamer` on its own (to restart it mid-window).
pub struct StreamerProcess {
    pub role: Role,
    pub endpoints: Endpoints,
}

impl StreamerProcess {
    pub fn start(db: &TestDb, env: &[(String, String)]) -> Self {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (role, lines) = spawn_role_lines(db, "streamer", &env, &[STREAMER_LINE]);
        Self {
            role,
            endpoints: parse_endpoints(&lines[0]),
        }
    }

    pub fn kill(mut self) {
        let _ = self.role.child.kill();
        let _ = self.role.child.wait();
    }
}

// ---- publishers ---------------------------------------------------------------------------

/// A child that is killed when dropped, with its stderr kept in a file for failure messages.
pub struct Publisher {
    pub child: Child,
    log: tempfile::NamedTempFile,
    what: String,
}

impl Publisher {
    fn spawn(mut cmd: Command, what: &str) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let err = log.reopen().expect("log handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {what} (is it installed? scripts/services installs it): {e}")
        });
        Self {
            child,
            log,
            what: what.to_string(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (bounded) for it to exit; its exit code, or None if still running at the limit.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn describe(&self) -> String {
        format!("{}:\n{}", self.what, self.log())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RTSP publish URL with the key in the query.
pub fn publish_url(addr: SocketAddr, reservation: &str, key: &str) -> String {
    format!("rtsp://{addr}/live/{reservation}?key={key}")
}

/// The RTMP publish URL as ffmpeg takes it: application `live`, and the stream name
/// `<reservation>?key=<key>` (OBS: server `rtmp://<addr>/live`, stream key the rest).
pub fn rtmp_url(addr: SocketAddr, reservation: &str, key: &str) -> String {
    format!("rtmp://{addr}/live/{reservation}?key={key}")
}

/// ffmpeg's arguments for `seconds` of a test pattern in H.264 (baseline, yuv420p, no B-frames,
/// a keyframe a second) and a 440 Hz tone in AAC; the output comes after.
fn test_pattern(cmd: &mut Command, seconds: u32) {
    cmd.args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
            "-g",
            "25",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"]);
}

/// ffmpeg publishing a live test pattern (H.264 without B-frames, AAC) for `seconds`.
pub fn ffmpeg_publish(url: &str, transport: &str, seconds: u32) -> Publisher {
    ffmpeg_publish_with(url, transport, seconds, &[])
}

/// [`ffmpeg_publish`] with more output options, which win over the test pattern's (e.g.
/// `-g 1000` for a keyframe every 40 s).
pub fn ffmpeg_publish_with(url: &str, transport: &str, seconds: u32, extra: &[&str]) -> Publisher {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    test_pattern(&mut cmd, seconds);
    cmd.args(extra);
    cmd.args(["-f", "rtsp", "-rtsp_transport", transport, url]);
    Publisher::spawn(cmd, &format!("ffmpeg publishing over {transport}"))
}

/// ffmpeg publishing the live test pattern by RTMP (FLV) to `url` for `seconds`, with more
/// output options in `extra` (which win over the test pattern's).
pub fn ffmpeg_publish_rtmp(url: &str, seconds: u32, extra: &[&str]) -> Publisher {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    test_pattern(&mut cmd, seconds);
    cmd.args(extra);
    cmd.args(["-f", "flv", url]);
    Publisher::spawn(cmd, "ffmpeg publishing by RTMP")
}

/// The SRT URL ffmpeg calls with: the reservation and key in the stream id, as written
/// (`#!::r=…,k=…`: ffmpeg 5.1 passes the query's value on without decoding it).
pub fn srt_url(addr: SocketAddr, reservation: &str, key: &str) -> String {
    format!("srt://{addr}?streamid=#!::r={reservation},k={key}")
}

/// ffmpeg publishing the live test pattern by SRT (MPEG-TS, caller mode) to `url` for
/// `seconds`, with more output options in `extra`.
pub fn ffmpeg_publish_srt(url: &str, seconds: u32, extra: &[&str]) -> Publisher {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    test_pattern(&mut cmd, seconds);
    cmd.args(extra);
    cmd.args(["-f", "mpegts", url]);
    Publisher::spawn(cmd, "ffmpeg publishing by SRT")
}

/// The WHIP endpoint of a reservation (the key goes as the bearer token).
pub fn whip_url(addr: SocketAddr, reservation: &str) -> String {
    format!("http://{addr}/whip/{reservation}")
}

/// GStreamer's webrtcbin publishing the live test pattern (H.264, Opus) by WHIP to `url` with
/// `key` for `seconds` once connected, then ending its session (`tests/support/whip_publish.py`,
/// through Debian's python3-gi; what it says is in its log).
pub fn gst_publish_whip(url: &str, key: &str, seconds: u32) -> Publisher {
    let script = repo_root().join("tests/support/whip_publish.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script)
        .args(["--url", url, "--key", key])
        .args(["--seconds", &seconds.to_string()]);
    Publisher::spawn(cmd, "webrtcbin publishing by WHIP")
}

/// GStreamer's rtspclientsink publishing a live test pattern, user `slotcast` and the key as
/// the password (Digest when the streamer offers it, else Basic).
pub fn gst_publish(addr: SocketAddr, reservation: &str, key: &str, seconds: u32) -> Publisher {
    let url = format!("rtsp://slotcast:{key}@{addr}/live/{reservation}");
    let buffers = (seconds * 25).to_string();
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "-e", "videotestsrc", "is-live=true"])
        .arg(format!("num-buffers={buffers}"))
        .args(["!", "video/x-raw,width=320,height=240,framerate=25/1"])
        .args(["!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast"])
        .args(["key-int-max=25", "bframes=0"])
        .args(["!", "video/x-h264,profile=baseline"])
        .args(["!", "rtspclientsink", "protocols=tcp"])
        .arg(format!("location={url}"));
    Publisher::spawn(cmd, "gst-launch-1.0 rtspclientsink")
}

/// An MP4 clip of `seconds` of the test pattern, made with ffmpeg into `dir`.
pub fn make_clip(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("clip.mp4");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
    test_pattern(&mut cmd, seconds);
    let out = cmd
        .arg(&path)
        .output()
        .expect("run ffmpeg (is it installed? scripts/services installs it)");
    assert!(
        out.status.success(),
        "ffmpeg made no clip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

// ---- raw RTSP -------------------------------------------------------------------------------

/// A minimal SDP like ffmpeg's for H.264.
pub const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=,aOvjyyLA; profile-level-id=64001F\r\n\
a=control:streamid=0\r\n";

/// A hand-driven RTSP connection: exact requests, exact answers.
pub struct RawRtsp {
    stream: StdTcpStream,
    cseq: u32,
}

impl RawRtsp {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self { stream, cseq: 0 }
    }

    /// Sends a request and returns (status, reason phrase, whole response).
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.stream
            .write_all(req.as_bytes())
            .expect("write request");
        self.read_response()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn read_response(&mut self) -> (u16, String, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let text = String::from_utf8_lossy(&buf[..end + 4 + length]).to_string();
                    let status_line = head.lines().next().unwrap_or_default().to_string();
                    let mut parts = status_line.splitn(3, ' ');
                    let _version = parts.next();
                    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let reason = parts.next().unwrap_or_default().to_string();
                    return (code, reason, text);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no RTSP answer in time: {:?}",
                String::from_utf8_lossy(&buf)
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return (
                        0,
                        "connection closed".into(),
                        String::from_utf8_lossy(&buf).to_string(),
                    )
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    return (
                        0,
                        format!("read error: {e}"),
                        String::from_utf8_lossy(&buf).to_string(),
                    )
                }
            }
        }
    }

    /// Whether the server closed the connection within `limit` (reads until EOF).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// ANNOUNCE as a publisher would, on a fresh connection: (status, reason).
pub fn announce(addr: SocketAddr, reservation: &str, key: &str) -> (u16, String) {
    let mut rtsp = RawRtsp::connect(addr);
    let url = format!("rtsp://{addr}/live/{reservation}?key={key}");
    let (code, reason, _) = rtsp.request("ANNOUNCE", &url, &[], SDP);
    (code, reason)
}

/// Waits (bounded) until the gate lets this publisher in.
pub fn wait_gate_open(addr: SocketAddr, reservation: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, reason) = announce(addr, reservation, key);
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gate did not open: {code} {reason}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- viewers ------------------------------------------------------------------------------

/// ffmpeg reading the HLS playlist back for up to `seconds` of media: (decoded video frames,
/// ffmpeg's error output).
pub fn ffmpeg_read_frames(url: &str, seconds: u32) -> (usize, String) {
    ffmpeg_read_stream(url, seconds, "0:v:0")
}

/// [`ffmpeg_read_frames`] for the stream `map` names (`0:a:0`: audio frames).
pub fn ffmpeg_read_stream(url: &str, seconds: u32, map: &str) -> (usize, String) {
    let out = Command::new("timeout")
        .arg(format!("{}", seconds + 30))
        .args([
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            url,
        ])
        .args([
            "-t",
            &seconds.to_string(),
            "-map",
            map,
            "-f",
            "framecrc",
            "-",
        ])
        .output()
        .expect("run ffmpeg (is it installed? scripts/services installs it)");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count();
    (frames, String::from_utf8_lossy(&out.stderr).to_string())
}

/// The media segments a playlist lists.
pub fn segments(playlist: &str) -> usize {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

/// Waits (bounded) for the playlist at `url` to end; returns it.
pub async fn wait_ended(url: &str, limit_s: u64) -> String {
    wait_for_text(url, "EXT-X-ENDLIST", Duration::from_secs(limit_s), |p| {
        p.contains("#EXT-X-ENDLIST")
    })
    .await
}

/// A window from `lead` seconds from now, `length` seconds long.
pub fn window(lead: i64, length: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc::now() + chrono::Duration::seconds(lead);
    (start, start + chrono::Duration::seconds(length))
}

/// Waits (bounded) for the live playlist at `url` to list three segments, and checks it is
/// LL-HLS and not ended; returns it.
pub async fn wait_live(url: &str) -> String {
    let live = wait_for_text(url, "three segments", Duration::from_secs(20), |p| {
        segments(p) >= 3
    })
    .await;
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-MAP:URI=\"init.mp4\"",
        ",INDEPENDENT=YES",
    ] {
        assert!(live.contains(tag), "live playlist lacks {tag}:\n{live}");
    }
    assert!(!live.contains("#EXT-X-ENDLIST"), "{live}");
    live
}

/// ffmpeg reads `seconds` of the stream `map` names (`0:v:0`, `0:a:0`) from the playlist at
/// `url`: at least `frames` decoded, and not a word of error. `what` names it in failures.
pub fn assert_plays(url: &str, seconds: u32, map: &str, frames: usize, what: &str) {
    let (decoded, errors) = ffmpeg_read_stream(url, seconds, map);
    assert!(
        decoded >= frames,
        "{what}: decoded {decoded} frames of {map}; errors: {errors}"
    );
    assert!(errors.trim().is_empty(), "{what}: ffmpeg said: {errors}");
}

/// GET a text resource: (status, body).
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Polls `url` until `check` holds on its body (bounded); returns the body.
pub async fn wait_for_text(
    url: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = get_text(url).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The streamer's ingest reports of a reservation, as recorded in its history, in order.
pub async fn ingest_reports(db: &TestDb, id: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT coalesce(json_agg(payload->'IngestReported' ORDER BY sequence), '[]') FROM events \
         WHERE event_type = 'IngestReported' AND payload->'IngestReported'->>'reservation_id' = '{id}'"
    );
    db.json(&sql).await.as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) for the history to hold a `connected` report of `id`, and returns it.
pub async fn connected(db: &TestDb, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reports = ingest_reports(db, id).await;
        if let Some(c) = reports.iter().find(|r| r["kind"] == "connected") {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no connected report for {id}: {reports:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- strangers ----------------------------------------------------------------------------

/// A TCP connection to `to` from the loopback address `from`.
pub async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// Whether the server closed `stream` within `limit`, reading (and discarding) what it sends.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A streamer metric's value from `/metrics` (0 when absent).
pub async fn metric(stack: &Stack, line_start: &str) -> f64 {
    let (_, text) = get_text(&stack.hls("/metrics")).await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Each stream's start time in the media at `url`, by ffprobe: (video, audio) in seconds.
pub fn start_times(url: &str) -> (f64, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time",
        ])
        .args(["-of", "csv=p=0", url])
        .output()
        .expect("ffprobe (scripts/services installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let start = |kind: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{kind},")))
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {kind} start time: {text}"))
    };
    (start("video"), start("audio"))
}

/// `publisher`, publishing to reservation `id` over carrier-a, goes live (`connected` by its
/// `protocol`, its `codecs` as reports name them: `("rtmp", "h264,aac")`); ffmpeg plays the live video and audio without a word; once it is done and the
/// window closed, the recording plays, its tracks starting together (a publisher that stamps
/// them from one clock); the history has `connected` and `disconnected`, and one publisher by
/// key is counted.
pub async fn assert_live_then_recorded(
    stack: &Stack,
    db: &TestDb,
    id: &str,
    (protocol, codecs): (&str, &str),
    publisher: &mut Publisher,
) {
    let playlist_url = stack.hls(&format!("/hls/{id}/index.m3u8"));
    wait_live(&playlist_url).await;
    let report = connected(db, id).await;
    assert_eq!(report["codec"], codecs, "{report}");
    assert_eq!(report["carrier"], "carrier-a", "{report}");
    assert_eq!(report["protocol"], protocol, "{report}");
    assert_plays(&playlist_url, 3, "0:v:0", 50, "live video");
    assert_plays(&playlist_url, 3, "0:a:0", 100, "live audio");
    assert!(
        publisher.wait(Duration::from_secs(30)) == Some(0),
        "{}",
        publisher.describe()
    );
    let ended = wait_ended(&playlist_url, 30).await;
    assert!(segments(&ended) >= 10, "{ended}");
    assert_plays(&playlist_url, 60, "0:v:0", 250, "the recording");
    let (video, audio) = start_times(&playlist_url);
    assert!(
        (video - audio).abs() < 0.05,
        "video starts at {video} s, audio at {audio} s"
    );
    let reports = ingest_reports(db, id).await;
    let kinds: Vec<&str> = reports.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"connected") && kinds.contains(&"disconnected"),
        "{reports:?}"
    );
    let by_key = metric(stack, "slotcast_streamer_publishers_total{auth=\"key\"}").await;
    assert_eq!(by_key, 1.0);
}

/// The first refusal of reservation `not_open_id` (refused as not open) reached its history
/// as a `refused` report, and each of `reasons` is counted in the streamer's refusal metric.
pub async fn assert_refusals_recorded(
    stack: &Stack,
    db: &TestDb,
    not_open_id: &str,
    reasons: &[&str],
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reports = ingest_reports(db, not_open_id).await;
        if let Some(r) = reports.iter().find(|r| r["kind"] == "refused") {
            assert_eq!(r["refusals"]["not_open"], 1, "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "no refused report: {reports:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for reason in reasons {
        let line = format!("slotcast_streamer_refusals_total{{reason=\"{reason}\"}}");
        assert!(metric(stack, &line).await >= 1.0, "{reason} not counted");
    }
}

/// The reason in reservation `id`'s first `disconnected` report (which must be in its
/// history).
pub async fn disconnected_reason(db: &TestDb, id: &str) -> String {
    let reports = ingest_reports(db, id).await;
    let gone = reports
        .iter()
        .find(|r| r["kind"] == "disconnected")
        .unwrap_or_else(|| panic!("no disconnected report: {reports:?}"));
    gone["reason"].as_str().unwrap_or_default().to_owned()
}

/// A stranger at `from` takes its whole share (8, `SLOTCAST_INGEST_MAX_UNAUTH_PER_ADDR`) of
/// connections before authentication on the listener `at`: a 9th is closed at once, and so is
/// one to the RTSP listener `rtsp` (one book for every protocol), each counted. The eight,
/// still open.
pub async fn hold_a_strangers_share(
    stack: &Stack,
    from: Ipv4Addr,
    at: SocketAddr,
    rtsp: SocketAddr,
) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(from, at).await.expect("connect"));
    }
    let mut ninth = connect_from(from, at).await.expect("connect");
    assert!(closed_within(&mut ninth, Duration::from_secs(3)).await);
    let mut by_rtsp = connect_from(from, rtsp).await.expect("connect");
    assert!(
        closed_within(&mut by_rtsp, Duration::from_secs(3)).await,
        "RTSP and {at} share one book"
    );
    let per_source = "slotcast_streamer_refusals_total{reason=\"unauth_per_source\"}";
    assert!(metric(stack, per_source).await >= 2.0);
    held
}

/// Each of `held`, which never got as far as publishing, is closed by the record deadline (a
/// streamer's of 4 s: within 8 s), and counted.
pub async fn assert_closed_at_record_deadline(stack: &Stack, held: &mut [TcpStream]) {
    for (n, stream) in held.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(8)).await,
            "connection {n} outlived the record deadline"
        );
    }
    let deadline = "slotcast_streamer_refusals_total{reason=\"record_deadline\"}";
    assert!(metric(stack, deadline).await >= held.len() as f64);
}
