//! The RTMP dialogue against rml_rtmp's own server session: what a streamer sees of it, and
//! what it makes of the streamer's answers.

use super::*;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// A streamer's side, as far as these tests need one: how it answers `publish`.
struct Server {
    handshake: Option<Handshake>,
    session: ServerSession,
    refuse: Option<&'static str>,
    /// Refuse as the streamer does: an `onStatus` error, not the library's `_error`.
    by_status: bool,
    /// `publish`'s stream name, then what was published: (video?, timestamp ms, tag body).
    published: Option<String>,
    tags: Vec<(bool, u32, Bytes)>,
    /// What the session says first (its chunk size and window), sent after the handshake.
    opening: Vec<u8>,
}

impl Server {
    fn new(refuse: Option<&'static str>) -> Self {
        let (session, opening) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let opening = opening
            .into_iter()
            .flat_map(|r| match r {
                ServerSessionResult::OutboundResponse(p) => p.bytes,
                _ => vec![],
            })
            .collect();
        Self {
            opening,
            handshake: Some(Handshake::new(PeerType::Server)),
            session,
            refuse,
            by_status: false,
            published: None,
            tags: Vec::new(),
        }
    }

    /// Takes the client's bytes; its answer.
    fn input(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let rest = match self.handshake.as_mut() {
            Some(h) => match h.process_bytes(bytes).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => return response_bytes,
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.handshake = None;
                    out.extend(response_bytes);
                    out.append(&mut self.opening);
                    remaining_bytes
                }
            },
            None => bytes.to_vec(),
        };
        let mut results = self.session.handle_input(&rest).unwrap();
        while let Some(result) = (!results.is_empty()).then(|| results.remove(0)) {
            match result {
                ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                ServerSessionResult::RaisedEvent(event) => results.extend(self.raised(event)),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        out
    }

    fn raised(&mut self, event: ServerSessionEvent) -> Vec<ServerSessionResult> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                assert_eq!(app_name, APP);
                self.session.accept_request(request_id).unwrap()
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                self.published = Some(stream_key);
                match self.refuse {
                    None => self.session.accept_request(request_id).unwrap(),
                    Some(description) if self.by_status => vec![on_status_error(description)],
                    Some(description) => self
                        .session
                        .reject_request(request_id, "NetStream.Publish.Denied", description)
                        .unwrap(),
                }
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.tags.push((true, timestamp.value, data));
                vec![]
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.tags.push((false, timestamp.value, data));
                vec![]
            }
            _ => vec![],
        }
    }
}

/// `onStatus` at level `error`, `NetStream.Publish.Denied`, as a chunk of its own.
fn on_status_error(description: &str) -> ServerSessionResult {
    let status = [
        ("level", "error"),
        ("code", "NetStream.Publish.Denied"),
        ("description", description),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
    .collect();
    let message = rml_rtmp::messages::RtmpMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), 1)
        .unwrap();
    // In the server session's chunk size (the client already follows it).
    let mut serializer = rml_rtmp::chunk_io::ChunkSerializer::new();
    let chunk_size = ServerSessionConfig::new().chunk_size;
    let _ = serializer.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0));
    let packet = serializer.serialize(&payload, true, false).unwrap();
    ServerSessionResult::OutboundResponse(packet)
}

fn tracks() -> Vec<Codec> {
    vec![
        Codec::H264 {
            sps: vec![0x67, 0x64, 0x00, 0x1f, 0xac],
            pps: vec![0x68, 0xee, 0x3c, 0x80],
            length_size: 4,
        },
        Codec::Aac {
            config: vec![0x11, 0x90],
            sample_rate: 48_000,
            channels: 2,
        },
    ]
}

/// Runs the dialogue with `server` until neither side has more to say (bounded).
fn converse(d: &mut RtmpDialogue, server: &mut Server) {
    for _ in 0..50 {
        let out = d.take_output();
        if out.is_empty() {
            return;
        }
        let answer = server.input(&out);
        d.handle_input(&answer);
    }
    panic!("the dialogue did not settle");
}

const URL: &str = "rtmp://127.0.0.2:1935/live/r-1";

#[test]
fn it_publishes_the_reservation_with_its_key_then_headers_then_frames() {
    let mut d = RtmpDialogue::new(URL, "k y/z", tracks()).unwrap();
    let mut server = Server::new(None);
    converse(&mut d, &mut server);
    assert_eq!(d.state(), &State::Recording);
    assert_eq!(server.published.as_deref(), Some("r-1?key=k%20y%2Fz"));
    // B-frame order: shown at 80 ms, decoded at 40 ms.
    let video = |timestamp, decoded, keyframe| Frame {
        track: 0,
        timestamp,
        decoded,
        due: None,
        keyframe,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    };
    d.send_frame(&video(9_000, 9_000, true));
    d.send_frame(&video(16_200, 12_600, false));
    d.send_frame(&Frame {
        track: 1,
        // 1.1 s on the audio clock: 1 s after the first frame, on one clock for both.
        timestamp: 48_000 + 4_800,
        decoded: 48_000 + 4_800,
        due: None,
        keyframe: true,
        data: Bytes::from_static(&[1, 2, 3]),
    });
    converse(&mut d, &mut server);
    let kinds: Vec<(bool, u32, &[u8])> = server
        .tags
        .iter()
        .map(|(video, at, body)| (*video, *at, &body[..2]))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (true, 0, &[0x17, 0][..]),  // the AVC sequence header
            (false, 0, &[0xaf, 0][..]), // the AAC one
            (true, 0, &[0x17, 1][..]),  // the keyframe, at the origin
            (true, 40, &[0x27, 1][..]), // decoded 40 ms later
            (false, 1000, &[0xaf, 1][..]),
        ]
    );
    // Its composition time: shown 40 ms after it is decoded.
    assert_eq!(&server.tags[3].2[2..5], &[0, 0, 40]);
    d.teardown();
    assert_eq!(d.state(), &State::Closed);
}

#[test]
fn a_refusal_is_read_by_its_code_as_over_rtsp() {
    for (description, status, code) in [
        (
            "bad_key: the stream key is not the reservation's",
            401,
            Some(RefusalCode::BadKey),
        ),
        (
            "not_open: the window opens at 12:00:00Z",
            403,
            Some(RefusalCode::NotOpen),
        ),
        (
            "busy: another publisher is live",
            403,
            Some(RefusalCode::Busy),
        ),
        (
            "unknown: no such reservation here",
            404,
            Some(RefusalCode::Unknown),
        ),
        ("no code here", 400, None),
    ] {
        // By `_error` (the library's way) and by `onStatus` (the streamer's).
        for by_status in [false, true] {
            let mut d = RtmpDialogue::new(URL, "k", tracks()).unwrap();
            let mut server = Server::new(Some(description));
            server.by_status = by_status;
            converse(&mut d, &mut server);
            assert_eq!(
                d.state(),
                &State::Refused {
                    status,
                    code,
                    reason: description.to_string()
                },
                "by status: {by_status}"
            );
        }
    }
}

#[test]
fn urls_that_are_not_a_reservations_rtmp_address_are_refused_before_connecting() {
    assert_eq!(
        address("rtmp://h/live/r-1").unwrap(),
        ("h:1935".to_string(), "r-1".to_string())
    );
    assert_eq!(
        address("rtmp://[::1]:19350/live/r-1").unwrap().0,
        "[::1]:19350"
    );
    for bad in [
        "rtsp://h/live/r-1",
        "rtmp://h/other/r-1",
        "rtmp://h/live/",
        "rtmp://h/live/a/b",
    ] {
        assert!(RtmpDialogue::new(bad, "k", tracks()).is_err(), "{bad}");
    }
}

#[test]
fn a_server_that_talks_without_end_before_accepting_fails_the_connection() {
    let mut d = RtmpDialogue::new(URL, "k", tracks()).unwrap();
    let _ = d.take_output();
    // Not a handshake the library can take, or more than the bound: either way, failed.
    for _ in 0..(MAX_INPUT / 4096 + 2) {
        d.handle_input(&[0x03; 4096]);
    }
    assert!(matches!(d.state(), State::Failed(_)), "{:?}", d.state());
}
