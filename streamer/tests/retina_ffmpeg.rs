//! The retina adapter against a real peer: ffmpeg encodes 3 s of H.264 (libx264) and AAC,
//! and separately 3 s of H.265 (libx265), sends it as RTP over loopback UDP and writes the
//! SDP; the tests parse the SDP into `TrackSpec`s, feed every received packet through
//! `retina_adapter::Depacketizer`, and check the frames an HLS viewer would get.
//!
//! docs/dependencies.md requires this test: retina's push-side API is hidden and changes
//! between patch releases, so a retina bump must prove itself on real ffmpeg output. Without
//! ffmpeg the test fails, it never skips.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use slotcast_streamer::media::retina_adapter::Depacketizer;
use slotcast_streamer::media::{CodecParams, Frame, TrackKind, TrackSpec};

/// Gives up on ffmpeg after this long (it needs about 3.2 s with `-re`).
const FFMPEG_DEADLINE: Duration = Duration::from_secs(20);

/// Receives datagrams on `socket` until `done` is set and the socket has been quiet for a
/// read timeout.
fn receive(socket: UdpSocket, done: Arc<AtomicBool>) -> std::io::Result<Vec<Vec<u8>>> {
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => packets.push(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if done.load(Ordering::Acquire) {
                    return Ok(packets);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// ffmpeg sends RTCP to the RTP port + 1, which may be the other track's socket. RTCP packet
/// types are 200..=206 in the second byte, where RTP has marker + payload type 96/97.
fn is_rtcp(packet: &[u8]) -> bool {
    packet.get(1).is_some_and(|pt| (200..=206).contains(pt))
}

/// Just the lines of ffmpeg's SDP the tracks need: `m=`, `a=rtpmap`, `a=fmtp`, `a=control`.
fn parse_sdp(sdp: &str) -> Vec<TrackSpec> {
    let mut tracks: Vec<TrackSpec> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let fields: Vec<&str> = m.split_whitespace().collect();
            let media = fields[0].to_owned();
            let kind = match media.as_str() {
                "video" => TrackKind::Video,
                "audio" => TrackKind::Audio,
                other => panic!("unexpected media {other} in SDP:\n{sdp}"),
            };
            tracks.push(TrackSpec {
                kind,
                media,
                encoding_name: String::new(),
                payload_type: fields[3].parse().expect("payload type in m= line"),
                clock_rate: 0,
                channels: None,
                fmtp: None,
                control: None,
            });
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
            let track = tracks.last_mut().expect("a=rtpmap after m=");
            let (_pt, map) = rtpmap.split_once(' ').expect("a=rtpmap:<pt> <map>");
            let mut parts = map.split('/');
            track.encoding_name = parts.next().expect("encoding name").to_owned();
            track.clock_rate = parts
                .next()
                .and_then(|r| r.parse().ok())
                .expect("clock rate");
            track.channels = parts.next().map(|c| c.parse().expect("channels"));
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
            let track = tracks.last_mut().expect("a=fmtp after m=");
            let (_pt, params) = fmtp.split_once(' ').expect("a=fmtp:<pt> <params>");
            track.fmtp = Some(params.to_owned());
        } else if let Some(control) = line.strip_prefix("a=control:") {
            tracks.last_mut().expect("a=control after m=").control = Some(control.to_owned());
        }
    }
    tracks
}

/// Runs ffmpeg to completion with one RTP output per track, `args` being given the tracks'
/// UDP ports; returns the SDP and the packets received per track.
fn run_ffmpeg(
    name: &str,
    tracks: usize,
    args: impl Fn(&[u16]) -> Vec<String>,
) -> (String, Vec<Vec<Vec<u8>>>) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let sdp_path = tmp.join(format!("{name}_{}.sdp", std::process::id()));
    let log_path = tmp.join(format!("{name}_{}.log", std::process::id()));
    let sockets: Vec<UdpSocket> = (0..tracks)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket"))
        .collect();
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            let done = done.clone();
            thread::spawn(move || receive(socket, done))
        })
        .collect();

    // stderr goes to a file: a pipe nobody reads could fill and stall ffmpeg.
    let log = std::fs::File::create(&log_path).expect("create the ffmpeg log file");
    let mut child = match Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args(&ports))
        .args(["-sdp_file", sdp_path.to_str().expect("utf-8 temp path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "ffmpeg is not installed (not on PATH): this test needs a real ffmpeg with \
             libx264, libx265 and the native AAC encoder (docs/dependencies.md), e.g. \
             `apt-get install ffmpeg`"
        ),
        Err(e) => panic!("cannot start ffmpeg: {e}"),
    };

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ffmpeg") {
            break status;
        }
        if started.elapsed() > FFMPEG_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            done.store(true, Ordering::Release);
            panic!("ffmpeg still running after {FFMPEG_DEADLINE:?}; killed");
        }
        thread::sleep(Duration::from_millis(50));
    };
    done.store(true, Ordering::Release);
    let packets = receivers
        .into_iter()
        .map(|r| r.join().expect("receiver thread").expect("UDP receive"))
        .collect();
    let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    assert!(status.success(), "ffmpeg failed ({status}):\n{stderr}");
    let sdp = std::fs::read_to_string(&sdp_path).expect("ffmpeg wrote the SDP file");
    let _ = std::fs::remove_file(&sdp_path);
    (sdp, packets)
}

/// `-re`: ffmpeg paces its output in real time, because loopback UDP drops packets sent in a
/// burst (std cannot raise SO_RCVBUF).
fn lavfi_input(graph: &str) -> Vec<String> {
    ["-re", "-t", "3", "-f", "lavfi", "-i", graph]
        .map(String::from)
        .to_vec()
}

fn rtp_output(port: u16) -> Vec<String> {
    vec!["-f".into(), "rtp".into(), format!("rtp://127.0.0.1:{port}")]
}

/// Pushes every RTP packet and pulls every frame; any error fails the test.
fn depacketize(track: usize, spec: &TrackSpec, packets: &[Vec<u8>]) -> (Depacketizer, Vec<Frame>) {
    let mut d = Depacketizer::new(track, spec)
        .unwrap_or_else(|e| panic!("Depacketizer::new({spec:?}): {e}"));
    let mut frames = Vec::new();
    for (i, p) in packets.iter().filter(|p| !is_rtcp(p)).enumerate() {
        d.push_rtp(p)
            .unwrap_or_else(|e| panic!("track {track}, packet {i}: {e}"));
        while let Some(f) = d.pull().expect("pull") {
            frames.push(f);
        }
    }
    (d, frames)
}

/// Walks MP4 sample data: 4-byte big-endian lengths, each followed by a whole NAL unit.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .unwrap_or_else(|| panic!("{} stray bytes after the last NAL", rest.len()));
        let len = u32::from_be_bytes(*len) as usize;
        assert!(
            len > 0 && len <= after.len(),
            "NAL length {len} of {}",
            after.len()
        );
        types.push(after[0] & 0x1f);
        rest = &after[len..];
    }
    types
}

#[test]
fn retina_depacketizes_ffmpeg_h264_and_aac() {
    let (sdp, mut packets) = run_ffmpeg("retina_h264_aac", 2, |ports| {
        let mut args = lavfi_input("testsrc2=size=320x240:rate=25");
        args.extend(lavfi_input("sine=frequency=440:sample_rate=48000"));
        #[rustfmt::skip]
        args.extend(["-map", "0:v", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-profile:v", "baseline", "-bf", "0", "-g", "25"].map(String::from));
        args.extend(rtp_output(ports[0]));
        args.extend(["-map", "1:a", "-c:a", "aac"].map(String::from));
        args.extend(rtp_output(ports[1]));
        args
    });
    let audio_packets = packets.pop().expect("audio packets");
    let video_packets = packets.pop().expect("video packets");

    let tracks = parse_sdp(&sdp);
    assert_eq!(tracks.len(), 2, "SDP:\n{sdp}");
    let (video, audio) = (&tracks[0], &tracks[1]);
    assert_eq!(
        (video.kind, video.encoding_name.as_str()),
        (TrackKind::Video, "H264")
    );
    assert_eq!(
        (audio.kind, audio.encoding_name.as_str()),
        (TrackKind::Audio, "MPEG4-GENERIC")
    );

    // Video: 3 s at 25 fps.
    let (vd, frames) = depacketize(0, video, &video_packets);
    assert_eq!(
        vd.lost_packets(),
        0,
        "loopback should not lose packets with -re"
    );
    assert!(
        (72..=78).contains(&frames.len()),
        "{} video frames from {} packets",
        frames.len(),
        video_packets.len()
    );
    let first = &frames[0];
    assert!(first.keyframe, "first video frame is not a keyframe");
    assert_eq!(first.pts, 0);
    match &first.params {
        Some(CodecParams::H264 {
            avcc,
            width,
            height,
            codec,
        }) => {
            assert_eq!(avcc.first(), Some(&1), "avcC configurationVersion");
            assert_eq!(avcc.get(4).map(|b| b & 3), Some(3), "4-byte NAL lengths");
            assert_eq!((*width, *height), (320, 240));
            assert!(
                codec.starts_with("avc1.42"),
                "baseline codec string {codec}"
            );
        }
        other => panic!("first video frame params: {other:?}"),
    }
    assert_eq!(vd.params(), first.params.clone());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.track, 0);
        assert_eq!(f.dts, f.pts);
        let types = nal_types(&f.data);
        // Parameter sets live in avcC only, never in band.
        assert!(
            !types.iter().any(|t| *t == 7 || *t == 8),
            "frame {i}: NALs {types:?}"
        );
        assert_eq!(f.keyframe, types.contains(&5), "frame {i}: NALs {types:?}");
        if i > 0 {
            assert!(f.params.is_none(), "frame {i} repeats unchanged params");
        }
    }
    for w in frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 3600, "25 fps at 90 kHz");
    }
    let keyframes = frames.iter().filter(|f| f.keyframe).count();
    assert!(
        keyframes >= 3,
        "{keyframes} keyframes with -g 25 over 75 frames"
    );

    eprintln!(
        "video: {} packets, {} frames, {keyframes} keyframes",
        video_packets.len(),
        frames.len()
    );

    // Audio: 48 kHz AAC, 1024 samples a frame, about 141 frames in 3 s.
    let (ad, frames) = depacketize(1, audio, &audio_packets);
    assert_eq!(ad.lost_packets(), 0);
    assert!(
        (130..=150).contains(&frames.len()),
        "{} audio frames from {} packets",
        frames.len(),
        audio_packets.len()
    );
    let config = audio
        .fmtp
        .as_deref()
        .and_then(|f| f.split(';').find_map(|p| p.trim().strip_prefix("config=")))
        .expect("config= in the AAC fmtp");
    match &frames[0].params {
        Some(CodecParams::Aac {
            asc,
            sample_rate,
            channels,
            codec,
        }) => {
            // The AudioSpecificConfig is exactly the SDP's config= bytes.
            let hex: String = asc.iter().map(|b| format!("{b:02X}")).collect();
            assert_eq!(hex, config.to_ascii_uppercase());
            assert_eq!((*sample_rate, *channels), (48_000, 1));
            assert_eq!(codec, "mp4a.40.2");
        }
        other => panic!("first audio frame params: {other:?}"),
    }
    assert_eq!(frames[0].pts, 0);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.track, 1);
        assert!(f.keyframe);
        assert!(!f.data.is_empty(), "audio frame {i} is empty");
        // Raw AAC, not ADTS (whose sync word is 0xFFF).
        assert!(
            !(f.data.len() > 1 && f.data[0] == 0xff && f.data[1] & 0xf0 == 0xf0),
            "audio frame {i} looks like ADTS"
        );
        if i > 0 {
            assert!(f.params.is_none());
        }
    }
    for w in frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 1024);
    }
    eprintln!(
        "audio: {} packets, {} frames",
        audio_packets.len(),
        frames.len()
    );
}

#[test]
fn retina_depacketizes_ffmpeg_h265() {
    let (sdp, mut packets) = run_ffmpeg("retina_h265", 1, |ports| {
        let mut args = lavfi_input("testsrc2=size=320x240:rate=25");
        #[rustfmt::skip]
        args.extend(["-map", "0:v", "-c:v", "libx265", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-x265-params", "bframes=0:keyint=25:log-level=error"]
            .map(String::from));
        args.extend(rtp_output(ports[0]));
        args
    });
    let tracks = parse_sdp(&sdp);
    assert_eq!(tracks.len(), 1, "SDP:\n{sdp}");
    assert_eq!(tracks[0].encoding_name, "H265", "SDP:\n{sdp}");
    let video_packets = packets.pop().expect("video packets");

    let (d, frames) = depacketize(0, &tracks[0], &video_packets);
    assert_eq!(d.lost_packets(), 0);
    assert!(
        (72..=78).contains(&frames.len()),
        "{} H.265 frames from {} packets",
        frames.len(),
        video_packets.len()
    );
    let first = &frames[0];
    assert!(first.keyframe);
    match &first.params {
        Some(CodecParams::H265 {
            hvcc,
            width,
            height,
            codec,
        }) => {
            assert_eq!(hvcc.first(), Some(&1), "hvcC configurationVersion");
            assert_eq!((*width, *height), (320, 240));
            assert!(codec.starts_with("hvc1."), "codec string {codec}");
        }
        other => panic!("first H.265 frame params: {other:?}"),
    }
    for (i, f) in frames.iter().enumerate() {
        // Walk the 4-byte lengths; H.265 NAL type is bits 1..=6 of the first byte.
        let mut rest = &f.data[..];
        while let Some((len, after)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            assert!(len > 0 && len <= after.len(), "frame {i}: NAL length {len}");
            let nal_type = (after[0] >> 1) & 0x3f;
            assert!(
                !(32..=34).contains(&nal_type),
                "frame {i}: VPS/SPS/PPS in band"
            );
            rest = &after[len..];
        }
        assert!(rest.is_empty(), "frame {i}: stray bytes");
        if i > 0 {
            assert!(f.params.is_none(), "frame {i} repeats unchanged params");
        }
    }
    for w in frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 3600);
    }
}
