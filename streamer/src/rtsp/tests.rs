//! Session transcripts on byte literals: what ffmpeg sends when publishing over TCP, the UDP
//! variant, and the timeout. The table of malformed inputs is in `tests_malformed.rs`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;

use super::sdp::tests::{ffmpeg_tracks, FFMPEG_SDP};
use super::*;

pub(super) const RESERVATION: &str = "res-1";
pub(super) const KEY: &str = "0123456789abcdef0123456789abcdef";
pub(super) const SESSION_ID: &str = "00c0ffee00c0ffee";
pub(super) const BASE: &str = "rtsp://10.9.0.1:8554/live/res-1";

/// Admits `RESERVATION` with `KEY`; from admission call number `refuse_after` on (0-based),
/// answers `refuse` instead.
#[derive(Clone, Debug, Default)]
pub(super) struct FakeHost {
    pub refuse: Option<Refusal>,
    pub refuse_after: usize,
    pub admitted: Vec<(String, String, String)>,
    pub bound: Vec<usize>,
    pub fail_bind: bool,
    /// The host holds no HA1 for the reservation: Digest is not offered.
    pub no_digest: bool,
}

impl FakeHost {
    pub(super) fn refusing(refusal: Refusal, after: usize) -> Self {
        Self {
            refuse: Some(refusal),
            refuse_after: after,
            ..Self::default()
        }
    }
}

impl Host for FakeHost {
    fn admit(&mut self, a: &Admission<'_>) -> Result<(), Refusal> {
        let call = self.admitted.len();
        let (shown, right) = match a.credential {
            Credential::Key(key) => (key.clone(), key == KEY),
            Credential::Digest(answer) => (
                format!("digest:{}", answer.method),
                answer.matches(&slotcast_domain::secret::digest_ha1(KEY)),
            ),
        };
        self.admitted
            .push((a.carrier.into(), a.reservation_id.into(), shown));
        match &self.refuse {
            Some(refusal) if call >= self.refuse_after => Err(refusal.clone()),
            _ if a.reservation_id != RESERVATION => {
                Err(Refusal::new(RefusalCode::Unknown, "unknown reservation"))
            }
            _ if !right => Err(Refusal::new(RefusalCode::BadKey, "wrong stream key")),
            _ => Ok(()),
        }
    }

    fn offers_digest(&mut self, _reservation_id: &str) -> bool {
        !self.no_digest
    }

    fn bind_udp(&mut self, track: usize) -> Result<(u16, u16), String> {
        if self.fail_bind {
            return Err("address in use".into());
        }
        self.bound.push(track);
        let port = 7000 + 2 * track as u16;
        Ok((port, port + 1))
    }
}

pub(super) fn config() -> SessionConfig {
    SessionConfig {
        carrier: "ingest-a".into(),
        ..SessionConfig::default()
    }
}

pub(super) fn session(now: Instant) -> Session {
    Session::new(config(), now).with_session_id(SESSION_ID)
}

pub(super) fn drain(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

pub(super) fn feed(
    s: &mut Session,
    host: &mut FakeHost,
    now: Instant,
    bytes: &[u8],
) -> Vec<Output> {
    s.handle_input(now, bytes, host);
    drain(s)
}

/// The same bytes, one `handle_input` call per byte.
pub(super) fn feed_bytewise(
    s: &mut Session,
    host: &mut FakeHost,
    now: Instant,
    bytes: &[u8],
) -> Vec<Output> {
    for b in bytes {
        s.handle_input(now, std::slice::from_ref(b), host);
    }
    drain(s)
}

pub(super) fn text(output: &Output) -> &str {
    match output {
        Output::Send(bytes) => std::str::from_utf8(bytes).expect("responses are ASCII"),
        other => panic!("expected Send, got {other:?}"),
    }
}

pub(super) fn basic(user: &str, password: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

pub(super) fn announce(cseq: u32, url: &str, authorization: Option<&str>, sdp: &str) -> Vec<u8> {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "ANNOUNCE {url} RTSP/1.0\r\nContent-Type: application/sdp\r\nCSeq: {cseq}\r\n\
         User-Agent: Lavf60.16.100\r\n{auth}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

pub(super) fn setup(cseq: u32, url: &str, transport: &str, session: Option<&str>) -> Vec<u8> {
    let session = session.map_or(String::new(), |s| format!("Session: {s}\r\n"));
    format!(
        "SETUP {url} RTSP/1.0\r\nTransport: {transport}\r\nCSeq: {cseq}\r\n\
         User-Agent: Lavf60.16.100\r\n{session}\r\n"
    )
    .into_bytes()
}

pub(super) fn request(method: &str, cseq: u32, url: &str, session: Option<&str>) -> Vec<u8> {
    let session = session.map_or(String::new(), |s| format!("Session: {s}\r\n"));
    format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: Lavf60.16.100\r\n{session}\r\n")
        .into_bytes()
}

/// An RTP packet: version 2, the given payload type and sequence number, 4 payload bytes.
pub(super) fn rtp(pt: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![
        0x80,
        pt,
        (seq >> 8) as u8,
        seq as u8,
        0,
        0,
        0x0b,
        0xb8,
        0x12,
        0x34,
        0x56,
        0x78,
    ];
    p.extend_from_slice(&[0x65, 0x88, 0x84, 0x00]);
    p
}

pub(super) fn interleaved(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![b'$', channel];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Everything ffmpeg sends for `ffmpeg -re -i in.mp4 -c copy -f rtsp -rtsp_transport tcp
/// rtsp://publisher:KEY@10.9.0.1:8554/live/res-1`, a few media frames included, with the
/// answers we owe it.
fn ffmpeg_tcp_transcript() -> Vec<(Vec<u8>, Vec<Output>)> {
    let video = rtp(96, 1);
    let audio = rtp(97, 1);
    let rtcp_sr = [0x80, 200, 0, 6, 0x12, 0x34, 0x56, 0x78];
    let public = "Public: OPTIONS, ANNOUNCE, SETUP, RECORD, GET_PARAMETER, SET_PARAMETER, TEARDOWN";
    let send = |s: &str| Output::Send(Bytes::from(s.to_owned()));
    let why_401 = "stream key required: ?key=<key> in the URL, or as the password";
    vec![
        (
            request("OPTIONS", 1, BASE, None),
            vec![send(&format!(
                "RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: slotcast\r\n{public}\r\n\r\n"
            ))],
        ),
        (
            announce(2, BASE, None, FFMPEG_SDP),
            vec![send(&format!(
                "RTSP/1.0 401 Unauthorized ({why_401})\r\nCSeq: 2\r\nServer: slotcast\r\n\
                 WWW-Authenticate: Basic realm=\"slotcast\"\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n{why_401}\n",
                why_401.len() + 1
            ))],
        ),
        (
            announce(3, BASE, Some(&basic("publisher", KEY)), FFMPEG_SDP),
            vec![send(
                "RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: slotcast\r\n\r\n",
            )],
        ),
        (
            setup(
                4,
                &format!("{BASE}/streamid=0"),
                "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
                None,
            ),
            vec![send(&format!(
                "RTSP/1.0 200 OK\r\nCSeq: 4\r\nServer: slotcast\r\n\
                 Session: {SESSION_ID};timeout=60\r\n\
                 Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n"
            ))],
        ),
        (
            setup(
                5,
                &format!("{BASE}/streamid=1"),
                "RTP/AVP/TCP;unicast;interleaved=2-3;mode=record",
                Some(SESSION_ID),
            ),
            vec![send(&format!(
                "RTSP/1.0 200 OK\r\nCSeq: 5\r\nServer: slotcast\r\n\
                 Session: {SESSION_ID};timeout=60\r\n\
                 Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\n\r\n"
            ))],
        ),
        (
            // Interleaved data before RECORD is dropped.
            interleaved(0, &video),
            vec![],
        ),
        (
            format!(
                "RECORD {BASE} RTSP/1.0\r\nRange: npt=0.000-\r\nCSeq: 6\r\n\
                 User-Agent: Lavf60.16.100\r\nSession: {SESSION_ID}\r\n\r\n"
            )
            .into_bytes(),
            vec![
                send(&format!(
                    "RTSP/1.0 200 OK\r\nCSeq: 6\r\nServer: slotcast\r\n\
                     Session: {SESSION_ID};timeout=60\r\n\r\n"
                )),
                Output::Publish {
                    reservation_id: RESERVATION.into(),
                    tracks: ffmpeg_tracks(),
                    transport: Transport::Tcp,
                },
            ],
        ),
        (
            [
                interleaved(0, &video),
                interleaved(1, &rtcp_sr),
                interleaved(2, &audio),
                interleaved(4, &video),      // nobody's channel
                interleaved(0, &[0x00; 12]), // not RTP version 2
            ]
            .concat(),
            vec![
                Output::Rtp {
                    track: 0,
                    packet: Bytes::from(video.clone()),
                },
                Output::Rtp {
                    track: 1,
                    packet: Bytes::from(audio.clone()),
                },
            ],
        ),
        (
            request("GET_PARAMETER", 7, BASE, Some(SESSION_ID)),
            vec![send(&format!(
                "RTSP/1.0 200 OK\r\nCSeq: 7\r\nServer: slotcast\r\n\
                 Session: {SESSION_ID};timeout=60\r\n\r\n"
            ))],
        ),
        (
            request("TEARDOWN", 8, BASE, Some(SESSION_ID)),
            vec![
                send(&format!(
                    "RTSP/1.0 200 OK\r\nCSeq: 8\r\nServer: slotcast\r\n\
                     Session: {SESSION_ID};timeout=60\r\n\r\n"
                )),
                Output::Close(CloseReason::Teardown),
            ],
        ),
        (
            // Nothing after the close.
            request("OPTIONS", 9, BASE, None),
            vec![],
        ),
    ]
}

#[test]
fn ffmpeg_publishes_over_tcp() {
    let now = Instant::now();
    let mut s = session(now);
    let mut host = FakeHost::default();
    for (step, (input, want)) in ffmpeg_tcp_transcript().into_iter().enumerate() {
        let got = feed(&mut s, &mut host, now, &input);
        assert_eq!(
            got,
            want,
            "step {step}: {}",
            String::from_utf8_lossy(&input)
        );
        match step {
            2 => {
                assert_eq!(s.state(), State::Announced);
                assert_eq!(s.reservation_id(), Some(RESERVATION));
                assert_eq!(s.session_id(), None);
            }
            4 => {
                assert_eq!(s.state(), State::Ready);
                assert_eq!(s.setup_tracks(), vec![0, 1]);
            }
            6 => assert_eq!(s.state(), State::Recording),
            _ => {}
        }
    }
    assert_eq!(s.state(), State::Closed);
    // Asked at ANNOUNCE (with the key from Basic) and again at RECORD.
    let asked = (
        "ingest-a".to_owned(),
        RESERVATION.to_owned(),
        KEY.to_owned(),
    );
    assert_eq!(host.admitted, vec![asked.clone(), asked]);
    assert!(host.bound.is_empty());
    // The early frame, the unknown channel and the non-RTP one.
    assert_eq!(s.dropped_packets(), 3);
}

#[test]
fn one_call_byte_at_a_time_and_one_call_per_request_agree() {
    let transcript = ffmpeg_tcp_transcript();
    let want: Vec<Output> = transcript.iter().flat_map(|(_, out)| out.clone()).collect();
    let all: Vec<u8> = transcript
        .iter()
        .flat_map(|(input, _)| input.clone())
        .collect();
    let now = Instant::now();

    let mut s = session(now);
    assert_eq!(feed(&mut s, &mut FakeHost::default(), now, &all), want);

    let mut s = session(now);
    assert_eq!(
        feed_bytewise(&mut s, &mut FakeHost::default(), now, &all),
        want
    );

    // Odd-sized chunks that cut every message somewhere else.
    let mut s = session(now);
    let mut host = FakeHost::default();
    let mut got = Vec::new();
    for chunk in all.chunks(7) {
        got.extend(feed(&mut s, &mut host, now, chunk));
    }
    assert_eq!(got, want);
}

#[test]
fn publishes_over_udp_with_the_key_in_the_url() {
    let now = Instant::now();
    let mut s = session(now);
    let mut host = FakeHost::default();
    let url = format!("{BASE}?key={KEY}");
    let out = feed(&mut s, &mut host, now, &announce(1, &url, None, FFMPEG_SDP));
    assert_eq!(
        text(&out[0]),
        "RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: slotcast\r\n\r\n"
    );

    // ffmpeg appends the control to the whole URL, query included.
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(
            2,
            &format!("{url}/streamid=0"),
            "RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record",
            None,
        ),
    );
    assert_eq!(
        text(&out[0]),
        format!(
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\nServer: slotcast\r\nSession: {SESSION_ID};timeout=60\r\n\
             Transport: RTP/AVP/UDP;unicast;client_port=5000-5001;server_port=7000-7001;mode=record\r\n\r\n"
        )
    );
    assert_eq!(host.bound, vec![0]);
    assert_eq!(s.udp_client_ports(0), Some((5000, 5001)));

    // One transport per session.
    let audio_url = format!("{BASE}/streamid=1?key={KEY}");
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(
            3,
            &audio_url,
            "RTP/AVP/TCP;unicast;interleaved=2-3",
            Some(SESSION_ID),
        ),
    );
    assert!(text(&out[0]).starts_with(
        "RTSP/1.0 461 Unsupported Transport (every track must use the same transport)\r\n"
    ));
    // GStreamer's spelling: plain RTP/AVP, quoted upper-case mode; echoed as written.
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(
            4,
            &audio_url,
            "RTP/AVP;unicast;client_port=5002-5003;mode=\"RECORD\"",
            Some(SESSION_ID),
        ),
    );
    assert!(text(&out[0]).contains(
        "Transport: RTP/AVP;unicast;client_port=5002-5003;server_port=7002-7003;mode=record\r\n"
    ));

    let out = feed(
        &mut s,
        &mut host,
        now,
        &request("RECORD", 5, &url, Some(SESSION_ID)),
    );
    assert_eq!(out.len(), 2);
    assert!(text(&out[0]).starts_with("RTSP/1.0 200 OK\r\nCSeq: 5\r\n"));
    assert_eq!(
        out[1],
        Output::Publish {
            reservation_id: RESERVATION.into(),
            tracks: ffmpeg_tracks(),
            transport: Transport::Udp,
        }
    );

    let video = rtp(96, 7);
    s.handle_udp(now, 0, false, &video);
    s.handle_udp(now, 0, true, &[0x80, 200, 0, 6, 0, 0, 0, 0]); // RTCP: not media
    s.handle_udp(now, 1, false, &rtp(97, 9));
    s.handle_udp(now, 5, false, &video); // no such track
    s.handle_udp(now, 0, false, b"short"); // not RTP
                                           // Interleaved frames are not a UDP session's media.
    s.handle_input(now, &interleaved(0, &video), &mut host);
    assert_eq!(
        drain(&mut s),
        vec![
            Output::Rtp {
                track: 0,
                packet: Bytes::from(video),
            },
            Output::Rtp {
                track: 1,
                packet: Bytes::from(rtp(97, 9)),
            },
        ]
    );
    assert_eq!(s.dropped_packets(), 3);
}

#[test]
fn udp_bind_failure_is_a_500_and_tcp_still_works() {
    let now = Instant::now();
    let mut s = session(now);
    let mut host = FakeHost {
        fail_bind: true,
        ..FakeHost::default()
    };
    let auth = basic("x", KEY);
    feed(
        &mut s,
        &mut host,
        now,
        &announce(1, BASE, Some(&auth), FFMPEG_SDP),
    );
    let track = format!("{BASE}/streamid=0");
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(2, &track, "RTP/AVP;unicast;client_port=5000-5001", None),
    );
    assert!(text(&out[0]).starts_with(
        "RTSP/1.0 500 Internal Server Error (could not bind UDP ports; try RTSP over TCP)\r\nCSeq: 2\r\n"
    ));
    assert_eq!(s.state(), State::Announced);
    // No interleaved= given: the server picks the first free pair.
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(3, &track, "RTP/AVP/TCP;unicast", None),
    );
    assert!(
        text(&out[0]).contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n")
    );
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(
            4,
            &format!("{BASE}/streamid=1"),
            "RTP/AVP/TCP",
            Some(SESSION_ID),
        ),
    );
    assert!(
        text(&out[0]).contains("Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\n")
    );
}

#[test]
fn absolute_control_urls_and_a_lone_track_without_control() {
    let now = Instant::now();
    let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=cam\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=control:rtsp://10.9.0.1:8554/live/res-1/trackID=1\r\n";
    let mut s = session(now);
    let mut host = FakeHost::default();
    let auth = basic("", KEY);
    assert!(
        text(&feed(&mut s, &mut host, now, &announce(1, BASE, Some(&auth), sdp))[0])
            .contains(" 200 OK")
    );
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(
            2,
            &format!("{BASE}/trackID=1"),
            "RTP/AVP/TCP;interleaved=0-1",
            None,
        ),
    );
    assert!(text(&out[0]).contains(" 200 OK"));

    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n";
    let mut s = session(now);
    feed(&mut s, &mut host, now, &announce(1, BASE, Some(&auth), sdp));
    let out = feed(
        &mut s,
        &mut host,
        now,
        &setup(2, BASE, "RTP/AVP/TCP;interleaved=0-1", None),
    );
    assert!(text(&out[0]).contains(" 200 OK"));
}

#[test]
fn times_out_without_requests_or_media() {
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let mut s = session(t0);
    let mut host = FakeHost::default();
    assert_eq!(s.poll_timeout(), Some(t0 + secs(60)));
    s.handle_timeout(t0 + secs(59));
    assert_eq!(drain(&mut s), vec![]);

    // A request resets the clock; half a request does not.
    feed(
        &mut s,
        &mut host,
        t0 + secs(30),
        &request("OPTIONS", 1, BASE, None),
    );
    assert_eq!(s.poll_timeout(), Some(t0 + secs(90)));
    feed(
        &mut s,
        &mut host,
        t0 + secs(80),
        b"OPTIONS rtsp://h/ RTSP/1.0\r\nCSe",
    );
    assert_eq!(s.poll_timeout(), Some(t0 + secs(90)));

    s.handle_timeout(t0 + secs(90));
    assert_eq!(drain(&mut s), vec![Output::Close(CloseReason::Timeout)]);
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + secs(200));
    s.close(CloseReason::PeerClosed);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn media_keeps_a_recording_session_alive() {
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let mut s = session(t0);
    let mut host = FakeHost::default();
    let url = format!("{BASE}?key={KEY}");
    feed(&mut s, &mut host, t0, &announce(1, &url, None, FFMPEG_SDP));
    feed(
        &mut s,
        &mut host,
        t0,
        &setup(
            2,
            &format!("{BASE}/streamid=0"),
            "RTP/AVP/TCP;interleaved=0-1",
            None,
        ),
    );
    feed(
        &mut s,
        &mut host,
        t0,
        &request("RECORD", 3, BASE, Some(SESSION_ID)),
    );
    assert_eq!(s.state(), State::Recording);
    for i in 1..=5u64 {
        feed(
            &mut s,
            &mut host,
            t0 + secs(50 * i),
            &interleaved(0, &rtp(96, i as u16)),
        );
        s.handle_timeout(t0 + secs(50 * i + 10));
    }
    assert_eq!(s.state(), State::Recording);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(310)));
    s.handle_timeout(t0 + secs(310));
    assert_eq!(drain(&mut s), vec![Output::Close(CloseReason::Timeout)]);
}

#[test]
fn the_edge_closes() {
    let now = Instant::now();
    let mut s = session(now);
    s.close(CloseReason::Ended("window closed".into()));
    s.close(CloseReason::PeerClosed);
    assert_eq!(
        drain(&mut s),
        vec![Output::Close(CloseReason::Ended("window closed".into()))]
    );
    assert_eq!(
        CloseReason::Ended("window closed".into()).to_string(),
        "ended: window closed"
    );
    s.handle_input(
        now,
        &request("OPTIONS", 1, BASE, None),
        &mut FakeHost::default(),
    );
    assert_eq!(drain(&mut s), vec![]);
}

/// ffmpeg's Digest dance: the 401 offers Digest (with this connection's nonce) before Basic,
/// ffmpeg answers the Digest challenge, and RECORD re-checks the same answer.
#[test]
fn digest_auth_answers_the_connections_nonce() {
    const NONCE: &str = "6e6f6e63652d31";
    let now = Instant::now();
    let config = SessionConfig {
        digest_nonce: Some(NONCE.into()),
        ..config()
    };
    let mut s = Session::new(config, now).with_session_id(SESSION_ID);
    let mut host = FakeHost::default();
    let out = feed(&mut s, &mut host, now, &announce(1, BASE, None, FFMPEG_SDP));
    let challenge = text(&out[0]);
    assert!(
        challenge.starts_with("RTSP/1.0 401 Unauthorized"),
        "{challenge}"
    );
    let digest_at = challenge
        .find(&format!(
            "WWW-Authenticate: Digest realm=\"slotcast\", nonce=\"{NONCE}\", algorithm=MD5\r\n"
        ))
        .expect("a Digest challenge");
    let basic_at = challenge
        .find("WWW-Authenticate: Basic realm=\"slotcast\"\r\n")
        .expect("a Basic challenge");
    assert!(digest_at < basic_at, "Digest is offered first: {challenge}");

    let stale = auth::tests::digest_header(KEY, "ANNOUNCE", BASE, "an-old-nonce");
    let out = feed(
        &mut s,
        &mut host,
        now,
        &announce(2, BASE, Some(&stale), FFMPEG_SDP),
    );
    assert!(
        text(&out[0]).starts_with("RTSP/1.0 401 Unauthorized (stale Digest nonce"),
        "{}",
        text(&out[0])
    );

    let answer = auth::tests::digest_header(KEY, "ANNOUNCE", BASE, NONCE);
    let out = feed(
        &mut s,
        &mut host,
        now,
        &announce(3, BASE, Some(&answer), FFMPEG_SDP),
    );
    assert_eq!(
        text(&out[0]),
        "RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: slotcast\r\n\r\n"
    );
    let setup_url = format!("{BASE}/streamid=0");
    let transport = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record";
    feed(
        &mut s,
        &mut host,
        now,
        &setup(4, &setup_url, transport, None),
    );
    let out = feed(
        &mut s,
        &mut host,
        now,
        &request("RECORD", 5, BASE, Some(SESSION_ID)),
    );
    assert!(
        text(&out[0]).starts_with("RTSP/1.0 200 OK"),
        "{}",
        text(&out[0])
    );
    assert!(matches!(out[1], Output::Publish { .. }));
    let shown: Vec<&str> = host.admitted.iter().map(|a| a.2.as_str()).collect();
    assert_eq!(shown, ["digest:ANNOUNCE", "digest:ANNOUNCE"]);

    // A wrong key, answered correctly to the right nonce, is a wrong key.
    let mut s = Session::new(
        SessionConfig {
            digest_nonce: Some(NONCE.into()),
            ..self::config()
        },
        now,
    );
    let wrong = auth::tests::digest_header("not-the-key", "ANNOUNCE", BASE, NONCE);
    let out = feed(
        &mut s,
        &mut FakeHost::default(),
        now,
        &announce(1, BASE, Some(&wrong), FFMPEG_SDP),
    );
    assert!(text(&out[0]).starts_with("RTSP/1.0 401 Unauthorized (wrong stream key)"));
}

/// Without a secret key (no nonce), or for a reservation whose HA1 the host lacks, Digest
/// cannot be checked: only Basic is offered, and a Digest answer anyway is asked for the key.
#[test]
fn without_a_nonce_or_an_ha1_only_basic_is_offered() {
    let now = Instant::now();
    let with_nonce = SessionConfig {
        digest_nonce: Some("n".into()),
        ..config()
    };
    let cases = [
        ("no secret key", config(), FakeHost::default()),
        (
            "no HA1 for the reservation",
            with_nonce,
            FakeHost {
                no_digest: true,
                ..FakeHost::default()
            },
        ),
    ];
    for (case, config, mut host) in cases {
        let mut s = Session::new(config, now);
        let answer = auth::tests::digest_header(KEY, "ANNOUNCE", BASE, "n");
        let out = feed(
            &mut s,
            &mut host,
            now,
            &announce(1, BASE, Some(&answer), FFMPEG_SDP),
        );
        let reply = text(&out[0]);
        assert!(
            reply.starts_with("RTSP/1.0 401 Unauthorized (stream key required"),
            "{case}: {reply}"
        );
        assert!(!reply.contains("Digest"), "{case}: {reply}");
        assert!(reply.contains("WWW-Authenticate: Basic"), "{case}: {reply}");
        assert!(host.admitted.is_empty(), "{case}");
    }
}
