//! The RTMP session driven by `rml_rtmp`'s own client (handshake, chunking and commands as
//! a publisher sends them), with a fake host, in simulated time; the server's answers are
//! read back with the crate's deserializer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use slotcast_domain::contract::RefusalCode;

use super::*;
use crate::media::h264::tests::{avcc, PPS, SPS};
use crate::media::TrackKind;

/// AAC-LC, 48 kHz, stereo.
const ASC: &[u8] = &[0x11, 0x90];

/// Admits what it is told to, and remembers what it was asked.
struct FakeHost {
    answer: Result<(), Refusal>,
    asked: Vec<(String, String, String)>,
}

impl FakeHost {
    fn admitting() -> Self {
        Self {
            answer: Ok(()),
            asked: Vec::new(),
        }
    }

    fn refusing(code: RefusalCode, reason: &str) -> Self {
        Self {
            answer: Err(Refusal::new(code, reason)),
            asked: Vec::new(),
        }
    }
}

impl Host for FakeHost {
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal> {
        let Credential::Key(key) = request.credential else {
            panic!("RTMP offers keys only");
        };
        self.asked.push((
            request.carrier.to_owned(),
            request.reservation_id.to_owned(),
            key.clone(),
        ));
        self.answer.clone()
    }
}

/// What the server wrote, read back: each message, with the chunk size it set.
struct Reader {
    deserializer: ChunkDeserializer,
}

impl Reader {
    fn messages(&mut self, bytes: &[u8]) -> Vec<RtmpMessage> {
        let mut out = Vec::new();
        let mut input = bytes;
        while let Some(payload) = self.deserializer.get_next_message(input).unwrap() {
            input = &[];
            let message = payload.to_rtmp_message().unwrap();
            if let RtmpMessage::SetChunkSize { size } = message {
                self.deserializer.set_max_chunk_size(size as usize).unwrap();
            }
            out.push(message);
        }
        out
    }
}

/// `(command, code, description)` of an `onStatus`, `_result` or `_error`.
fn status_of(message: &RtmpMessage) -> Option<(String, String, String)> {
    let RtmpMessage::Amf0Command {
        command_name,
        additional_arguments,
        ..
    } = message
    else {
        return None;
    };
    let field = |key: &str| {
        additional_arguments.iter().find_map(|v| match v {
            Amf0Value::Object(o) => match o.get(key) {
                Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
    };
    Some((
        command_name.clone(),
        field("code").unwrap_or_default(),
        field("description").unwrap_or_default(),
    ))
}

/// A publisher (rml's client) talking to a session, all in memory.
struct Rig {
    session: Session,
    host: FakeHost,
    client: ClientSession,
    reader: Reader,
    now: Instant,
    /// Everything the session output except `Send`s, in order.
    outputs: Vec<Output>,
    /// The statuses the server sent, in order.
    statuses: Vec<(String, String, String)>,
    /// What the client made of the server's answers.
    events: Vec<ClientSessionEvent>,
}

impl Rig {
    fn new(host: FakeHost) -> Self {
        Self::with_config(host, RtmpConfig::default())
    }

    fn with_config(host: FakeHost, config: RtmpConfig) -> Self {
        let now = Instant::now();
        let (client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        Self {
            session: Session::new(config, now),
            host,
            client,
            reader: Reader {
                deserializer: ChunkDeserializer::new(),
            },
            now,
            outputs: Vec::new(),
            statuses: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Feeds the session and collects its outputs; returns what it sent.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session.handle_input(self.now, bytes, &mut self.host);
        self.drain()
    }

    fn drain(&mut self) -> Vec<u8> {
        let mut sent = Vec::new();
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Send(bytes) => sent.extend_from_slice(&bytes),
                other => {
                    assert!(
                        !self.outputs.iter().any(|o| matches!(o, Output::Close(_))),
                        "{other:?} after Close"
                    );
                    self.outputs.push(other);
                }
            }
        }
        sent
    }

    /// [`Rig::drain`], and the statuses among what was sent.
    fn drain_statuses(&mut self) -> Vec<(String, String, String)> {
        let sent = self.drain();
        let messages = self.reader.messages(&sent);
        messages.iter().filter_map(status_of).collect()
    }

    /// The handshake, as a client does it; what the client sends after C2 follows it.
    fn handshake(&mut self) {
        let mut client = Handshake::new(PeerType::Client);
        let c0c1 = client.generate_outbound_p0_and_p1().unwrap();
        let s0s1s2 = self.feed(&c0c1);
        let HandshakeProcessResult::Completed { response_bytes, .. } =
            client.process_bytes(&s0s1s2).unwrap()
        else {
            panic!("the client's handshake did not complete");
        };
        let after = self.feed(&response_bytes);
        assert!(after.is_empty());
        assert_eq!(self.session.state(), State::Connecting);
    }

    /// Client results: packets to the server, events kept.
    fn client_results(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.send(&packet.bytes),
                ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Bytes from the client to the server, and the server's answers back to the client.
    fn send(&mut self, bytes: &[u8]) {
        let answer = self.feed(bytes);
        if answer.is_empty() {
            return;
        }
        for message in self.reader.messages(&answer) {
            if let Some(status) = status_of(&message) {
                self.statuses.push(status);
            }
        }
        let results = self.client.handle_input(&answer).unwrap_or_default();
        self.client_results(results);
    }

    fn connect(&mut self, app: &str) {
        self.handshake();
        let request = self.client.request_connection(app.to_owned()).unwrap();
        self.client_results(vec![request]);
    }

    fn publish(&mut self, name: &str) {
        self.connect("live");
        assert!(self
            .events
            .contains(&ClientSessionEvent::ConnectionRequestAccepted));
        let request = self
            .client
            .request_publishing(name.to_owned(), PublishRequestType::Live)
            .unwrap();
        self.client_results(vec![request]);
    }

    fn metadata(&mut self, video: Option<u32>, audio: Option<u32>) {
        let mut metadata = StreamMetadata::new();
        metadata.video_codec_id = video;
        metadata.audio_codec_id = audio;
        let packet = self.client.publish_metadata(&metadata).unwrap();
        self.client_results(vec![packet]);
    }

    fn video(&mut self, ms: u32, body: Bytes) {
        self.media(true, ms, body);
    }

    fn audio(&mut self, ms: u32, body: Bytes) {
        self.media(false, ms, body);
    }

    fn media(&mut self, video: bool, ms: u32, body: Bytes) {
        let at = RtmpTimestamp::new(ms);
        let packet = if video {
            self.client.publish_video_data(body, at, false)
        } else {
            self.client.publish_audio_data(body, at, false)
        };
        self.client_results(vec![packet.unwrap()]);
    }

    fn closed(&self) -> Option<&CloseReason> {
        self.outputs.iter().find_map(|o| match o {
            Output::Close(reason) => Some(reason),
            _ => None,
        })
    }

    fn frames(&self) -> Vec<&crate::media::Frame> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Frame(frame) => Some(frame),
                _ => None,
            })
            .collect()
    }
}

/// One message in one chunk with a full header, whatever was sent before it.
fn chunk(message: RtmpMessage) -> Vec<u8> {
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), 0)
        .unwrap();
    let mut serializer = rml_rtmp::chunk_io::ChunkSerializer::new();
    serializer.serialize(&payload, true, false).unwrap().bytes
}

fn avc_header() -> Bytes {
    let mut tag = vec![0x17, 0, 0, 0, 0];
    tag.extend_from_slice(&avcc(3, SPS, PPS));
    tag.into()
}

fn avc_frame(key: bool, cts_ms: i32) -> Bytes {
    let mut tag = vec![if key { 0x17 } else { 0x27 }, 1];
    tag.extend_from_slice(&cts_ms.to_be_bytes()[1..]);
    let nal: &[u8] = if key {
        &[0x65, 0x88, 0x84]
    } else {
        &[0x41, 0x9a, 0x02]
    };
    tag.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    tag.extend_from_slice(nal);
    tag.into()
}

fn aac_header() -> Bytes {
    let mut tag = vec![0xaf, 0];
    tag.extend_from_slice(ASC);
    tag.into()
}

fn aac_frame() -> Bytes {
    Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x04])
}

#[test]
fn a_publisher_is_admitted_probed_and_goes_live_with_its_frames() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=0123abcd");
    assert_eq!(
        rig.host.asked,
        [(
            "default".to_owned(),
            "res-1".to_owned(),
            "0123abcd".to_owned()
        )]
    );
    assert!(rig
        .events
        .contains(&ClientSessionEvent::PublishRequestAccepted));
    let codes: Vec<&str> = rig.statuses.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        codes,
        [
            "NetConnection.Connect.Success",
            "",
            "NetStream.Publish.Start"
        ]
    );
    assert_eq!(rig.session.state(), State::Probing);

    // As ffmpeg does: metadata, both sequence headers, then frames.
    rig.metadata(Some(7), Some(10));
    rig.video(0, avc_header());
    assert!(rig.outputs.is_empty(), "still waiting for the audio header");
    rig.audio(0, aac_header());
    let Some(Output::Publish {
        reservation_id,
        tracks,
        params,
    }) = rig.outputs.first()
    else {
        panic!("not live: {:?}", rig.outputs);
    };
    assert_eq!(reservation_id, "res-1");
    assert_eq!(crate::media::frames::codec_names(tracks), "h264,aac");
    assert_eq!(tracks[1].clock_rate, 48_000);
    assert_eq!(params[0].codec(), "avc1.42C00D");
    assert_eq!(rig.session.state(), State::Live);

    rig.video(40, avc_frame(true, 0));
    rig.audio(42, aac_frame());
    rig.video(80, avc_frame(false, 40));
    let frames = rig.frames();
    assert_eq!(frames.len(), 3);
    assert_eq!(
        (frames[0].track, frames[0].dts, frames[0].keyframe),
        (0, 3600, true)
    );
    assert!(frames[0].params.is_some());
    assert_eq!((frames[1].track, frames[1].dts), (1, 42 * 48));
    assert_eq!((frames[2].dts, frames[2].pts), (7200, 10_800));
    assert_eq!(&frames[2].data[..], &[0, 0, 0, 3, 0x41, 0x9a, 0x02]);

    // The publisher stops: FCUnpublish and deleteStream.
    let stop = rig.client.stop_publishing().unwrap();
    rig.client_results(stop);
    assert!(
        matches!(rig.closed(), Some(CloseReason::Unpublished)),
        "{:?}",
        rig.outputs
    );
    assert_eq!(rig.session.close_label(), None);
}

#[test]
fn without_metadata_the_first_frame_after_the_header_decides_and_frames_held_follow() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    rig.video(0, avc_header());
    rig.video(0, avc_frame(true, 0));
    assert!(matches!(rig.outputs[0], Output::Publish { ref tracks, .. } if tracks.len() == 1));
    assert_eq!(rig.frames().len(), 1, "the held frame comes after Publish");
    assert_eq!(rig.frames()[0].track, 0);
    // Audio nobody announced is dropped, not an error.
    rig.audio(10, aac_frame());
    assert_eq!(rig.outputs.len(), 2);
}

#[test]
fn the_probe_ends_at_its_deadline_with_what_came_or_refuses_without_a_header() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    rig.metadata(Some(7), Some(10));
    rig.video(0, avc_header());
    let due = rig.session.poll_timeout().unwrap();
    assert_eq!(due, rig.now + Duration::from_secs(2));
    rig.session.handle_timeout(due - Duration::from_millis(1));
    assert!(rig.drain().is_empty() && rig.outputs.is_empty());
    rig.session.handle_timeout(due);
    rig.drain();
    assert!(
        matches!(rig.outputs[0], Output::Publish { ref tracks, .. } if tracks[0].kind == TrackKind::Video && tracks.len() == 1),
        "live with the video that came: {:?}",
        rig.outputs
    );

    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    rig.session.handle_timeout(rig.now + Duration::from_secs(2));
    let statuses = rig.drain_statuses();
    assert_eq!(statuses[0].1, "NetStream.Failed");
    assert!(
        statuses[0]
            .2
            .contains("no H.264 or AAC sequence header within 2 s"),
        "{statuses:?}"
    );
    assert!(matches!(rig.closed(), Some(CloseReason::Unsupported(_))));
    assert_eq!(rig.session.close_label(), Some("unsupported_codec"));
}

#[test]
fn other_codecs_are_refused_by_name() {
    for (video, audio, says) in [
        (Some(2), Some(10), "video codec id 2"),
        (Some(7), Some(2), "audio codec id 2"),
    ] {
        let mut rig = Rig::new(FakeHost::admitting());
        rig.publish("res-1?key=k");
        rig.metadata(video, audio);
        let last = rig.statuses.last().unwrap();
        assert_eq!(last.1, "NetStream.Failed");
        assert!(
            last.2.starts_with("unsupported: ") && last.2.contains(says),
            "{last:?}"
        );
        assert_eq!(rig.session.close_label(), Some("unsupported_codec"));
    }
    // ffmpeg's flv defaults, without metadata: Sorenson video.
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    rig.video(0, Bytes::from_static(&[0x12, 0, 0]));
    assert!(rig.statuses.last().unwrap().2.contains("Sorenson H.263"));
}

#[test]
fn refusals_go_back_as_on_status_with_the_code_and_the_words() {
    let mut rig = Rig::new(FakeHost::refusing(
        RefusalCode::NotOpen,
        "reservation not open: it opens at 12:00:00Z",
    ));
    rig.publish("res-1?key=k");
    let last = rig.statuses.last().unwrap().clone();
    assert_eq!(
        last,
        (
            "onStatus".to_owned(),
            "NetStream.Publish.Denied".to_owned(),
            "not_open: reservation not open: it opens at 12:00:00Z".to_owned()
        )
    );
    assert!(
        matches!(rig.closed(), Some(CloseReason::Refused(why)) if why.starts_with("not_open: "))
    );
    assert_eq!(rig.session.close_label(), None, "the host counted it");

    // No key at all: refused as a wrong key, in words that say what is missing.
    let mut rig = Rig::new(FakeHost::refusing(RefusalCode::BadKey, "wrong stream key"));
    rig.publish("res-1");
    assert_eq!(rig.host.asked[0].2, "", "asked with an empty key");
    let last = rig.statuses.last().unwrap();
    assert!(
        last.2
            .starts_with("bad_key: no stream key: publish to rtmp://"),
        "{last:?}"
    );

    // A name that is no reservation: refused before the host is asked.
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("live/../x?key=k");
    assert!(rig.host.asked.is_empty());
    assert_eq!(rig.statuses.last().unwrap().1, "NetStream.Publish.BadName");
    assert_eq!(rig.session.close_label(), Some("malformed"));
}

#[test]
fn connect_to_another_application_is_rejected_with_how_to_publish() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.connect("app");
    let rejected = rig.events.iter().find_map(|e| match e {
        ClientSessionEvent::ConnectionRequestRejected { description } => Some(description),
        _ => None,
    });
    let description = rejected.expect("the client saw the rejection");
    assert!(
        description.contains("publish to rtmp://<host>:<port>/live, not to \"app\""),
        "{description}"
    );
    assert!(matches!(rig.closed(), Some(CloseReason::Refused(_))));
}

#[test]
fn once_live_the_edge_cut_off_is_told_to_the_publisher() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    rig.video(0, avc_header());
    rig.video(0, avc_frame(true, 0));
    rig.session
        .close(CloseReason::Ended("the window closed".into()));
    let statuses = rig.drain_statuses();
    assert_eq!(
        statuses,
        [(
            "onStatus".to_owned(),
            "NetConnection.Connect.Closed".to_owned(),
            "ended: the window closed".to_owned()
        )]
    );
    assert!(matches!(rig.closed(), Some(CloseReason::Ended(_))));
    // Nothing more, whatever comes.
    rig.video(40, avc_frame(false, 0));
    rig.session.close(CloseReason::Timeout);
    assert_eq!(rig.drain(), Vec::<u8>::new());
}

#[test]
fn commands_out_of_turn_close_the_connection() {
    // publish again while live.
    let mut rig = Rig::new(FakeHost::admitting());
    rig.publish("res-1?key=k");
    let mut again = ClientSession::new(ClientSessionConfig::new()).unwrap().0;
    let connect = again.request_connection("live".into()).unwrap();
    let ClientSessionResult::OutboundResponse(packet) = connect else {
        panic!()
    };
    // A second client's chunks on the same connection: its connect is out of turn.
    rig.feed(&packet.bytes);
    assert!(
        matches!(rig.closed(), Some(CloseReason::Malformed(why)) if why == "connect while publishing"),
        "{:?}",
        rig.outputs
    );
}

#[test]
fn a_connection_is_bounded_before_it_publishes() {
    // Bytes: a handshake and then junk past 64 KiB.
    let mut rig = Rig::new(FakeHost::admitting());
    rig.handshake();
    rig.feed(&vec![0u8; 64 << 10]);
    assert!(
        matches!(rig.closed(), Some(CloseReason::Malformed(why)) if why.contains("bytes before publishing"))
    );
    assert_eq!(rig.session.close_label(), Some("rtmp_before_publish"));

    // Messages: the 33rd, each a harmless command.
    let mut rig = Rig::new(FakeHost::admitting());
    rig.connect("live");
    for _ in 0..40 {
        let (name, args) = ("releaseStream".to_owned(), vec![Amf0Value::Null]);
        let message = RtmpMessage::Amf0Command {
            command_name: name,
            transaction_id: 2.0,
            command_object: Amf0Value::Null,
            additional_arguments: args,
        };
        rig.feed(&chunk(message));
    }
    assert!(
        matches!(rig.closed(), Some(CloseReason::Malformed(why)) if why == "more than 32 messages before publishing")
    );
}

#[test]
fn input_the_library_panics_on_closes_that_connection_only() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.handshake();
    // A 200-byte command on chunk stream 3 (its first 128-byte chunk), then a type-1 header
    // on the same stream saying 50 bytes: the crate's length arithmetic underflows.
    let mut bytes = vec![0x03, 0, 0, 0, 0, 0, 200, 20, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0x05; 128]);
    bytes.extend_from_slice(&[0x43, 0, 0, 0, 0, 0, 50, 20]);
    bytes.extend_from_slice(&[0x05; 60]);
    rig.feed(&bytes);
    assert_eq!(rig.session.close_label(), Some("rtmp_panic"));
    assert!(
        matches!(rig.closed(), Some(CloseReason::Malformed(why)) if why.contains("failed on this input"))
    );
}

#[test]
fn deeply_nested_amf_is_refused_before_it_is_decoded() {
    let mut rig = Rig::new(FakeHost::admitting());
    rig.handshake();
    // A command whose arguments nest 2000 strict arrays: 10 KB, which the decoder would
    // recurse into 2000 deep.
    let mut body = vec![0x02, 0, 7];
    body.extend_from_slice(b"connect");
    body.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..2000 {
        body.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
    }
    let message = RtmpMessage::Unknown {
        type_id: 20,
        data: body.into(),
    };
    rig.feed(&chunk(message));
    assert!(
        matches!(rig.closed(), Some(CloseReason::Malformed(why)) if why.contains("nested deeper than 16"))
    );
}

#[test]
fn a_silent_connection_times_out_and_the_window_is_acknowledged() {
    let config = RtmpConfig {
        timeout: Duration::from_secs(5),
        ..RtmpConfig::default()
    };
    let mut rig = Rig::with_config(FakeHost::admitting(), config);
    rig.publish("res-1?key=k");
    // The client asked for acknowledgements every 1000 bytes; a big frame earns one.
    rig.send(&chunk(RtmpMessage::WindowAcknowledgement { size: 1000 }));
    rig.video(0, avc_header());
    let mut big = avc_frame(true, 0).to_vec();
    big.truncate(5);
    let nal = vec![0x65; 3000];
    big.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    big.extend_from_slice(&nal);
    let packet = rig
        .client
        .publish_video_data(big.into(), RtmpTimestamp::new(0), false)
        .unwrap();
    let ClientSessionResult::OutboundResponse(packet) = packet else {
        panic!()
    };
    let answer = rig.feed(&packet.bytes);
    let acks: Vec<_> = rig
        .reader
        .messages(&answer)
        .into_iter()
        .filter(|m| matches!(m, RtmpMessage::Acknowledgement { .. }))
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");

    let due = rig.session.poll_timeout().unwrap();
    assert_eq!(due, rig.now + Duration::from_secs(5));
    rig.session.handle_timeout(due);
    rig.drain();
    assert!(matches!(rig.closed(), Some(CloseReason::Timeout)));
    assert_eq!(rig.session.close_label(), Some("timeout"));
}
