//! The table of bad and awkward inputs with their exact answers: the status line of each
//! response, and whether the session closes. Every row is also fed one byte per call, and
//! must give exactly the same outputs.

use std::time::Instant;

use super::tests::*;
use super::*;

#[derive(Clone, Copy, Debug)]
enum Prelude {
    Fresh,
    /// ANNOUNCE of ffmpeg's SDP admitted.
    Announced,
    /// ... and its video track SETUP on interleaved 0-1.
    Ready,
}

struct Case {
    name: &'static str,
    host: FakeHost,
    prelude: Prelude,
    input: Vec<u8>,
    want: Vec<&'static str>,
    close: bool,
}

fn case(
    name: &'static str,
    prelude: Prelude,
    input: impl Into<Vec<u8>>,
    want: &[&'static str],
    close: bool,
) -> Case {
    Case {
        name,
        host: FakeHost::default(),
        prelude,
        input: input.into(),
        want: want.to_vec(),
        close,
    }
}

fn refused_by(host: FakeHost, c: Case) -> Case {
    Case { host, ..c }
}

const OK: &str = "RTSP/1.0 200 OK";
const SDP_H264_OPUS_DATA: &str = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n\
m=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=control:trackID=1\r\n\
m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\na=control:trackID=2\r\n";

fn with_key() -> String {
    basic("publisher", KEY)
}

fn cases() -> Vec<Case> {
    use Prelude::*;
    let track0 = format!("{BASE}/streamid=0");
    let track1 = format!("{BASE}/streamid=1");
    let tcp01 = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record";
    let sdp_vp8 = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
    let mut pad = b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nX-Pad: ".to_vec();
    pad.extend(std::iter::repeat_n(b'a', 9000));
    pad.extend_from_slice(b"\r\n\r\n");
    let ffmpeg_sdp = super::sdp::tests::FFMPEG_SDP;
    let wrong_key = basic("publisher", "ffffffffffffffffffffffffffffffff");
    vec![
        // Not RTSP at all.
        case("TLS client hello", Fresh, &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..],
            &["RTSP/1.0 400 Bad Request (not an RTSP request line)"], true),
        case("HTTP request", Fresh, &b"GET /live/res-1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &["RTSP/1.0 400 Bad Request (not an RTSP version)"], true),
        case("a response instead of a request", Fresh, &b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"[..],
            &["RTSP/1.0 400 Bad Request (not an RTSP request line)"], true),
        case("garbage after a good request", Fresh, [request("OPTIONS", 1, BASE, None), b"\x00\x01".to_vec()].concat(),
            &[OK, "RTSP/1.0 400 Bad Request (not an RTSP request line)"], true),
        case("header line without a colon", Fresh, &b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nnot a header\r\n\r\n"[..],
            &["RTSP/1.0 400 Bad Request (unparsable RTSP request)"], true),
        case("relative request URI", Fresh, &b"OPTIONS /live/res-1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"[..],
            &["RTSP/1.0 400 Bad Request (unparsable RTSP request)"], true),
        // Limits.
        case("headers over 8 KiB", Fresh, pad,
            &["RTSP/1.0 431 Request Header Fields Too Large (request line and headers over 8192 bytes)"], true),
        case("body over 16 KiB", Fresh, format!("ANNOUNCE {BASE} RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 20000\r\n\r\n"),
            &["RTSP/1.0 413 Request Entity Too Large (body of 20000 bytes over the limit of 16384 bytes)"], true),
        case("Content-Length not a number", Fresh, format!("ANNOUNCE {BASE} RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 12abc\r\n\r\n"),
            &["RTSP/1.0 400 Bad Request (bad Content-Length)"], true),
        case("two Content-Lengths", Fresh, format!("ANNOUNCE {BASE} RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            &["RTSP/1.0 400 Bad Request (bad Content-Length)"], true),
        // Requests we read but cannot take: the session carries on.
        case("missing CSeq, then a good request", Fresh,
            [&b"OPTIONS * RTSP/1.0\r\n\r\n"[..], &request("OPTIONS", 2, "*", None)].concat(),
            &["RTSP/1.0 400 Bad Request (missing or bad CSeq)", OK], false),
        case("CSeq not a number", Fresh, &b"OPTIONS * RTSP/1.0\r\nCSeq: one\r\n\r\n"[..],
            &["RTSP/1.0 400 Bad Request (missing or bad CSeq)"], false),
        case("RTSP/2.0", Fresh, &b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n"[..],
            &["RTSP/1.0 505 RTSP Version Not Supported (this server speaks RTSP/1.0)"], false),
        case("unknown method", Fresh, request("FLY", 1, BASE, None),
            &["RTSP/1.0 501 Not Implemented (unknown method)"], false),
        case("DESCRIBE", Fresh, request("DESCRIBE", 1, BASE, None),
            &["RTSP/1.0 405 Method Not Allowed (this server takes publishers only: ANNOUNCE, SETUP, RECORD)"], false),
        case("PLAY", Ready, request("PLAY", 9, BASE, Some(SESSION_ID)),
            &["RTSP/1.0 405 Method Not Allowed (this server takes publishers only: ANNOUNCE, SETUP, RECORD)"], false),
        case("wrong session id", Ready, request("RECORD", 9, BASE, Some("deadbeefdeadbeef")),
            &["RTSP/1.0 454 Session Not Found (no such session on this connection)"], false),
        case("session id before any SETUP", Fresh, request("OPTIONS", 1, BASE, Some(SESSION_ID)),
            &["RTSP/1.0 454 Session Not Found (no such session on this connection)"], false),
        // Order.
        case("SETUP before ANNOUNCE", Fresh, setup(1, &track0, tcp01, None),
            &["RTSP/1.0 455 Method Not Valid in This State (ANNOUNCE comes before SETUP)"], false),
        case("RECORD before ANNOUNCE", Fresh, request("RECORD", 1, BASE, None),
            &["RTSP/1.0 455 Method Not Valid in This State (SETUP comes before RECORD)"], false),
        case("RECORD before SETUP", Announced, request("RECORD", 9, BASE, None),
            &["RTSP/1.0 455 Method Not Valid in This State (SETUP comes before RECORD)"], false),
        case("ANNOUNCE twice", Announced, announce(9, BASE, Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 455 Method Not Valid in This State (already announced)"], false),
        case("SETUP of a track twice", Ready, setup(9, &track0, "RTP/AVP/TCP;interleaved=2-3", Some(SESSION_ID)),
            &["RTSP/1.0 455 Method Not Valid in This State (track already set up)"], false),
        case("RECORD twice", Ready,
            [request("RECORD", 9, BASE, Some(SESSION_ID)), request("RECORD", 10, BASE, Some(SESSION_ID))].concat(),
            &[OK, "RTSP/1.0 455 Method Not Valid in This State (already recording)"], false),
        case("SETUP after RECORD", Ready,
            [request("RECORD", 9, BASE, Some(SESSION_ID)), setup(10, &track1, "RTP/AVP/TCP;interleaved=2-3", Some(SESSION_ID))].concat(),
            &[OK, "RTSP/1.0 455 Method Not Valid in This State (already recording)"], false),
        // Transports.
        case("multicast", Announced, setup(9, &track0, "RTP/AVP;multicast;port=5000-5001", None),
            &["RTSP/1.0 461 Unsupported Transport (multicast is not supported)"], false),
        case("mode=play", Announced, setup(9, &track0, "RTP/AVP/TCP;unicast;interleaved=0-1;mode=play", None),
            &["RTSP/1.0 461 Unsupported Transport (mode=play is not supported: this server takes publishers (mode=record))"], false),
        case("no Transport header", Announced, request("SETUP", 9, &track0, None),
            &["RTSP/1.0 461 Unsupported Transport (Transport header required)"], false),
        case("odd interleaved channels", Announced, setup(9, &track0, "RTP/AVP/TCP;interleaved=1-2", None),
            &["RTSP/1.0 461 Unsupported Transport (interleaved=1-2 is not an even-odd channel pair)"], false),
        case("UDP without client_port", Announced, setup(9, &track0, "RTP/AVP;unicast", None),
            &["RTSP/1.0 461 Unsupported Transport (UDP transport without client_port)"], false),
        case("SRTP", Announced, setup(9, &track0, "RTP/SAVP;unicast;client_port=5000-5001", None),
            &["RTSP/1.0 461 Unsupported Transport (transport \"RTP/SAVP\" is not supported (use RTP/AVP))"], false),
        case("interleaved channels in use", Ready, setup(9, &track1, tcp01, Some(SESSION_ID)),
            &["RTSP/1.0 461 Unsupported Transport (interleaved=0-1 is in use)"], false),
        case("first alternative refused, second taken", Announced,
            setup(9, &track0, "RTP/AVP;multicast, RTP/AVP/TCP;unicast;interleaved=0-1", None), &[OK], false),
        // Paths and tracks.
        case("bad path", Fresh, announce(1, "rtsp://10.9.0.1:8554/vod/res-1", Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 404 Not Found (publish to rtsp://<host>:<port>/live/<reservation-id>)"], false),
        case("bad reservation id", Fresh, announce(1, "rtsp://10.9.0.1:8554/live/res.1", Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 404 Not Found (not a reservation id)"], false),
        case("ANNOUNCE to a track URL", Fresh, announce(1, &track0, Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 404 Not Found (ANNOUNCE the stream's base URL)"], false),
        case("SETUP of an unknown track", Announced, setup(9, &format!("{BASE}/streamid=9"), tcp01, None),
            &["RTSP/1.0 404 Not Found (no such track in the announced SDP)"], false),
        case("SETUP for another reservation", Announced, setup(9, "rtsp://10.9.0.1:8554/live/res-2/streamid=0", tcp01, None),
            &["RTSP/1.0 404 Not Found (SETUP for another reservation)"], false),
        // SDP.
        case("no supported codec", Fresh, announce(1, BASE, Some(&with_key()), sdp_vp8),
            &["RTSP/1.0 415 Unsupported Media Type (no supported track (video VP8/90000); slotcast takes H264 or H265 video and AAC (MPEG4-GENERIC, AAC-hbr) audio)"], false),
        case("not application/sdp", Fresh,
            format!("ANNOUNCE {BASE}?key={KEY} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"),
            &["RTSP/1.0 415 Unsupported Media Type (ANNOUNCE takes application/sdp)"], false),
        case("ANNOUNCE without a body", Fresh, request("ANNOUNCE", 1, &format!("{BASE}?key={KEY}"), None),
            &["RTSP/1.0 400 Bad Request (ANNOUNCE needs an SDP body)"], false),
        case("not SDP", Fresh, announce(1, BASE, Some(&with_key()), "hello"),
            &["RTSP/1.0 400 Bad Request (SDP: Invalid formatted line 1: \"Line not in key=value format\")"], false),
        case("SETUP of unsupported tracks", Fresh,
            [
                announce(1, BASE, Some(&with_key()), SDP_H264_OPUS_DATA),
                setup(2, &format!("{BASE}/trackID=1"), tcp01, None),
                setup(3, &format!("{BASE}/trackID=2"), tcp01, None),
                setup(4, &format!("{BASE}/trackID=0"), tcp01, None),
            ]
            .concat(),
            &[
                OK,
                "RTSP/1.0 415 Unsupported Media Type (audio opus/48000 is not supported)",
                "RTSP/1.0 415 Unsupported Media Type (application tracks are not supported)",
                OK,
            ],
            false),
        // Keys and admission.
        case("ANNOUNCE without a key", Fresh, announce(1, BASE, None, ffmpeg_sdp),
            &["RTSP/1.0 401 Unauthorized (stream key required: ?key=<key> in the URL, or as the password)"], false),
        case("Digest credentials are no key", Fresh, announce(1, BASE, Some("Digest username=\"a\""), ffmpeg_sdp),
            &["RTSP/1.0 401 Unauthorized (stream key required: ?key=<key> in the URL, or as the password)"], false),
        case("wrong key", Fresh, announce(1, BASE, Some(&wrong_key), ffmpeg_sdp),
            &["RTSP/1.0 401 Unauthorized (wrong stream key)"], false),
        case("oversized key is not asked about", Fresh, announce(1, BASE, Some(&basic("u", &"k".repeat(300))), ffmpeg_sdp),
            &["RTSP/1.0 401 Unauthorized (wrong stream key)"], false),
        case("unknown reservation", Fresh, announce(1, "rtsp://10.9.0.1:8554/live/res-9", Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 404 Not Found (unknown reservation)"], false),
        refused_by(FakeHost::refusing(Refusal::new(RefusalCode::NotOpen, "reservation not open: opens at 2030-01-01T10:00:00Z"), 0),
            case("not open", Fresh, announce(1, BASE, Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 403 Forbidden (reservation not open: opens at 2030-01-01T10:00:00Z)"], false)),
        refused_by(FakeHost::refusing(Refusal::new(RefusalCode::OtherServer, "the reservation is not on this server or carrier"), 0),
            case("not this server", Fresh, announce(1, BASE, Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 403 Forbidden (the reservation is not on this server or carrier)"], false)),
        refused_by(FakeHost::refusing(Refusal::new(RefusalCode::Busy, "another publisher is live on this reservation"), 0),
            case("busy", Fresh, announce(1, BASE, Some(&with_key()), ffmpeg_sdp),
            &["RTSP/1.0 403 Forbidden (another publisher is live on this reservation)"], false)),
        refused_by(FakeHost::refusing(Refusal::new(RefusalCode::Closed, "reservation not open: window closed at 11:00:00Z"), 1),
            case("refused at RECORD", Ready, request("RECORD", 9, BASE, Some(SESSION_ID)),
            &["RTSP/1.0 403 Forbidden (reservation not open: window closed at 11:00:00Z)"], true)),
        refused_by(FakeHost::refusing(Refusal::new(RefusalCode::BadKey, "wrong stream key"), 1),
            case("key revoked before RECORD", Ready, request("RECORD", 9, BASE, Some(SESSION_ID)),
            &["RTSP/1.0 401 Unauthorized (wrong stream key)"], true)),
        case("three failed ANNOUNCEs", Fresh,
            [
                announce(1, BASE, None, ffmpeg_sdp),
                announce(2, BASE, Some(&wrong_key), ffmpeg_sdp),
                announce(3, BASE, Some(&wrong_key), ffmpeg_sdp),
                announce(4, BASE, Some(&with_key()), ffmpeg_sdp),
            ]
            .concat(),
            &[
                "RTSP/1.0 401 Unauthorized (stream key required: ?key=<key> in the URL, or as the password)",
                "RTSP/1.0 401 Unauthorized (wrong stream key)",
                "RTSP/1.0 401 Unauthorized (wrong stream key)",
            ],
            true),
        // Framing that is fine.
        case("blank lines between requests", Fresh,
            [&b"\r\n\r\n"[..], &request("OPTIONS", 1, BASE, None), b"\r\n", &request("OPTIONS", 2, BASE, None)].concat(),
            &[OK, OK], false),
        case("interleaved data before anything", Fresh, interleaved(0, &rtp(96, 1)), &[], false),
        case("TEARDOWN at once", Fresh, request("TEARDOWN", 1, BASE, None), &[OK], true),
    ]
}

fn run(c: &Case, bytewise: bool) -> Vec<Output> {
    let now = Instant::now();
    let mut s = session(now);
    let mut host = c.host.clone();
    if !matches!(c.prelude, Prelude::Fresh) {
        let announce = announce(1, BASE, Some(&with_key()), super::sdp::tests::FFMPEG_SDP);
        let out = feed(&mut s, &mut host, now, &announce);
        assert!(
            text(&out[0]).starts_with(OK),
            "{}: prelude ANNOUNCE",
            c.name
        );
    }
    if matches!(c.prelude, Prelude::Ready) {
        let setup = setup(
            2,
            &format!("{BASE}/streamid=0"),
            "RTP/AVP/TCP;interleaved=0-1",
            None,
        );
        let out = feed(&mut s, &mut host, now, &setup);
        assert!(text(&out[0]).starts_with(OK), "{}: prelude SETUP", c.name);
    }
    if bytewise {
        feed_bytewise(&mut s, &mut host, now, &c.input)
    } else {
        feed(&mut s, &mut host, now, &c.input)
    }
}

#[test]
fn malformed_and_refused_inputs_get_exact_answers() {
    for c in cases() {
        let got = run(&c, false);
        assert_eq!(got, run(&c, true), "{}: byte-at-a-time differs", c.name);
        let (closes, rest): (Vec<_>, Vec<_>) =
            got.iter().partition(|o| matches!(o, Output::Close(_)));
        let lines: Vec<&str> = rest
            .iter()
            .filter(|o| !matches!(o, Output::Publish { .. }))
            .map(|o| text(o).split("\r\n").next().unwrap_or_default())
            .collect();
        assert_eq!(lines, c.want, "{}", c.name);
        assert_eq!(closes.len(), usize::from(c.close), "{}: close", c.name);
        if c.close {
            assert!(
                matches!(got.last(), Some(Output::Close(_))),
                "{}: close comes last",
                c.name
            );
        }
    }
}

#[test]
fn a_refusal_names_its_code_in_a_header_and_no_other_answer_does() {
    for &code in RefusalCode::ALL {
        let status = match code {
            RefusalCode::Unknown => "404 Not Found",
            RefusalCode::BadKey => "401 Unauthorized",
            _ => "403 Forbidden",
        };
        let at_announce = case(
            "",
            Prelude::Fresh,
            announce(1, BASE, Some(&with_key()), super::sdp::tests::FFMPEG_SDP),
            &[],
            false,
        );
        let at_record = case(
            "",
            Prelude::Ready,
            request("RECORD", 9, BASE, Some(SESSION_ID)),
            &[],
            true,
        );
        for (after, c) in [(0, at_announce), (1, at_record)] {
            let refusal = Refusal::new(code, "why");
            let out = run(&refused_by(FakeHost::refusing(refusal, after), c), false);
            let answer = text(&out[0]);
            assert!(
                answer.starts_with(&format!("RTSP/1.0 {status} (why)\r\n"))
                    && answer.contains(&format!("\r\nSlotcast-Refusal: {code}\r\n")),
                "{code} after {after} admissions: {answer}"
            );
            assert_eq!(
                answer.contains("WWW-Authenticate"),
                code == RefusalCode::BadKey,
                "{answer}"
            );
        }
    }
    // Asking for a key, a wrong path, a state error: answers, not refusals.
    for c in [
        case(
            "",
            Prelude::Fresh,
            announce(1, BASE, None, super::sdp::tests::FFMPEG_SDP),
            &[],
            false,
        ),
        case(
            "",
            Prelude::Fresh,
            announce(
                1,
                &format!("{BASE}/streamid=0"),
                Some(&with_key()),
                super::sdp::tests::FFMPEG_SDP,
            ),
            &[],
            false,
        ),
        case(
            "",
            Prelude::Fresh,
            request("RECORD", 1, BASE, None),
            &[],
            false,
        ),
    ] {
        let out = run(&c, false);
        let answer = text(&out[0]);
        assert!(
            answer.starts_with("RTSP/1.0 4") && !answer.contains("Slotcast-Refusal"),
            "{answer}"
        );
    }
}

#[test]
fn every_error_echoes_cseq_and_carries_its_reason_as_text() {
    let now = Instant::now();
    let mut s = session(now);
    let out = feed(
        &mut s,
        &mut FakeHost::default(),
        now,
        &request("DESCRIBE", 41, BASE, None),
    );
    let why = "this server takes publishers only: ANNOUNCE, SETUP, RECORD";
    assert_eq!(
        text(&out[0]),
        format!(
            "RTSP/1.0 405 Method Not Allowed ({why})\r\nCSeq: 41\r\nServer: slotcast\r\n\
             Allow: OPTIONS, ANNOUNCE, SETUP, RECORD, GET_PARAMETER, SET_PARAMETER, TEARDOWN\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{why}\n",
            why.len() + 1
        )
    );
    // A limit hit mid-head still echoes the CSeq it saw.
    let mut s = session(now);
    let mut big = b"OPTIONS * RTSP/1.0\r\nCSeq: 42\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9000));
    let out = feed(&mut s, &mut FakeHost::default(), now, &big);
    assert!(text(&out[0]).contains("\r\nCSeq: 42\r\n"));
    assert!(matches!(out[1], Output::Close(CloseReason::Malformed(_))));
}

#[test]
fn an_interleaved_frame_larger_than_the_buffer_closes_without_an_answer() {
    let now = Instant::now();
    let config = SessionConfig {
        max_buffered_bytes: 1000,
        ..config()
    };
    let mut s = Session::new(config, now);
    let frame = interleaved(0, &[0x80; 2000]);
    assert_eq!(
        feed(&mut s, &mut FakeHost::default(), now, &frame),
        vec![Output::Close(CloseReason::Malformed(
            "interleaved frame of 2000 bytes over the input buffer".into()
        ))]
    );
}

#[test]
fn a_large_read_is_taken_through_the_bounded_buffer() {
    // 1 MiB of media in one read, through a 256 KiB buffer: every packet comes out.
    let now = Instant::now();
    let mut s = session(now);
    let mut host = FakeHost::default();
    let url = format!("{BASE}?key={KEY}");
    feed(
        &mut s,
        &mut host,
        now,
        &announce(1, &url, None, super::sdp::tests::FFMPEG_SDP),
    );
    feed(
        &mut s,
        &mut host,
        now,
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
        now,
        &request("RECORD", 3, BASE, Some(SESSION_ID)),
    );
    let mut packet = rtp(96, 0);
    packet.resize(1400, 0xab);
    let frame = interleaved(0, &packet);
    let read: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 750)
        .collect();
    let out = feed(&mut s, &mut host, now, &read);
    assert_eq!(out.len(), 750);
    assert!(out
        .iter()
        .all(|o| matches!(o, Output::Rtp { track: 0, packet: p } if p.len() == 1400)));
}

#[test]
fn a_connection_that_keeps_asking_before_record_is_answered_then_closed() {
    let now = Instant::now();
    let mut s = session(now);
    let mut host = FakeHost::default();
    // 32 pipelined OPTIONS are answered; the 33rd gets a 400 saying why, and the close.
    let pipelined: Vec<u8> = (1..=40)
        .flat_map(|cseq| request("OPTIONS", cseq, BASE, None))
        .collect();
    let out = feed(&mut s, &mut host, now, &pipelined);
    let answers: Vec<String> = out
        .iter()
        .filter(|o| matches!(o, Output::Send(_)))
        .map(|o| text(o).to_string())
        .collect();
    assert_eq!(answers.len(), 33, "{answers:?}");
    assert!(answers[..32].iter().all(|a| a.contains(" 200 OK")));
    assert!(
        answers[32].starts_with("RTSP/1.0 400 ")
            && answers[32].contains("more than 32 requests before RECORD")
            && answers[32].contains("CSeq: 33"),
        "{}",
        answers[32]
    );
    assert!(matches!(
        out.last(),
        Some(Output::Close(CloseReason::Refused(_)))
    ));
    assert_eq!(s.state(), State::Closed);
}
