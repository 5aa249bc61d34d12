//! The RTMP publishing dialogue of one connection, sans-IO: the handshake, `connect` to the
//! application, `publish` of `<reservation_id>?key=<stream_key>`, then the tracks' sequence
//! headers and one FLV tag per frame (`flv`), and `deleteStream` at the end.
//!
//! Contract: the same shape as the RTSP [`Dialogue`](super::session::Dialogue), so the edge
//! drives either: it writes what [`RtmpDialogue::take_output`] returns, feeds what it reads
//! to [`RtmpDialogue::handle_input`] and reads [`RtmpDialogue::state`] after each call.
//! rml_rtmp does the handshake, the chunking and the commands; what the streamer's refusal
//! means is ours: an error status (`onStatus` `NetStream.Publish.Denied`, or `_error`) whose
//! description reads `<code>: <reason>` (docs/publishing.md), the code deciding, as the
//! `Slotcast-Refusal` header does over RTSP. A panic inside rml_rtmp
//! fails this connection, never the terminal. Input is bounded as the RTSP dialogue's is.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use slotcast_domain::contract::RefusalCode;

use super::session::{State, MAX_INPUT};
use super::{flv, Codec, Frame};

/// The RTMP application the streamer takes publishers on.
pub const APP: &str = "live";
/// FLV's video codec id of H.264 and audio codec id of AAC, for `onMetaData`.
const META_AVC: u32 = 7;
const META_AAC: u32 = 10;

pub(super) struct RtmpDialogue {
    /// Until the handshake is complete.
    handshake: Option<Handshake>,
    session: ClientSession,
    /// What `publish` names: `<reservation_id>?key=<stream_key>`.
    stream: String,
    tracks: Vec<Codec>,
    state: State,
    output: Vec<u8>,
    /// Bytes read before going live.
    read_before_live: usize,
    /// The first frame's decode time in milliseconds: RTMP timestamps count from it.
    origin_ms: Option<i64>,
    /// The server's error statuses, read beside the session (which keeps only their code).
    watch: StatusWatch,
}

/// Reads the server's messages a second time, for what rml_rtmp's client session does not
/// hand on: the description of an `onStatus` at level `error` (the streamer's refusal, its
/// cut-off). It follows the chunk size as the session does.
struct StatusWatch {
    chunks: ChunkDeserializer,
    /// The latest error status: its code and description.
    error: Option<(String, String)>,
    broken: bool,
}

impl StatusWatch {
    fn new() -> Self {
        Self {
            chunks: ChunkDeserializer::new(),
            error: None,
            broken: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.broken {
            let chunks = &mut self.chunks;
            let next = guarded(|| chunks.get_next_message(input));
            input = &[];
            let Ok(Some(payload)) = next else {
                self.broken = next.is_err();
                return;
            };
            match guarded(|| payload.to_rtmp_message()) {
                Ok(RtmpMessage::SetChunkSize { size }) => {
                    let chunks = &mut self.chunks;
                    self.broken = guarded(|| chunks.set_max_chunk_size(size as usize)).is_err();
                }
                Ok(RtmpMessage::Amf0Command {
                    command_name,
                    additional_arguments,
                    ..
                }) if command_name == "onStatus" => {
                    if let Some((level, code, description)) = status_of(&additional_arguments) {
                        if level == "error" {
                            self.error = Some((code, description));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Where `url` (`rtmp://host[:port]/live/<reservation_id>`) points: `host:port` (1935 when
/// it names none) and the reservation id.
pub fn address(url: &str) -> Result<(String, String), String> {
    let bad = || format!("{url} is not an rtmp://host[:port]/{APP}/<reservation_id> URL");
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    let host = parsed
        .host_str()
        .filter(|_| parsed.scheme() == "rtmp")
        .ok_or_else(bad)?;
    let id = parsed
        .path()
        .strip_prefix(&format!("/{APP}/"))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(bad)?;
    Ok((
        format!("{host}:{}", parsed.port().unwrap_or(1935)),
        id.to_string(),
    ))
}

impl RtmpDialogue {
    /// Starts the dialogue for `url` (see [`address`]): the handshake's first bytes are
    /// queued at once.
    pub fn new(url: &str, key: &str, tracks: Vec<Codec>) -> Result<Self, String> {
        let (host_port, id) = address(url)?;
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{host_port}/{APP}"));
        let (session, _) = ClientSession::new(config).map_err(|e| e.to_string())?;
        let mut handshake = Handshake::new(PeerType::Client);
        let first = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| e.to_string())?;
        let stream = format!(
            "{id}?key={}",
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
        );
        Ok(Self {
            handshake: Some(handshake),
            session,
            stream,
            tracks,
            state: State::Starting,
            output: first,
            read_before_live: 0,
            origin_ms: None,
            watch: StatusWatch::new(),
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Bytes to write, in order (empty when there is nothing).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Takes bytes read from the server.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Starting | State::Recording) {
            return;
        }
        if self.state == State::Starting {
            self.read_before_live += bytes.len();
            if self.read_before_live > MAX_INPUT {
                self.state = State::Failed(format!(
                    "the server sent over {MAX_INPUT} bytes without accepting the stream"
                ));
                return;
            }
        }
        let after_handshake = match self.handshake.as_mut() {
            None => bytes.to_vec(),
            Some(handshake) => match guarded(|| handshake.process_bytes(bytes)) {
                Err(why) => return self.fail(why),
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.output.extend_from_slice(&response_bytes);
                    return;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.output.extend_from_slice(&response_bytes);
                    self.handshake = None;
                    let session = &mut self.session;
                    match guarded(|| session.request_connection(APP.to_string())) {
                        Ok(result) => self.take(vec![result]),
                        Err(why) => return self.fail(why),
                    }
                    remaining_bytes
                }
            },
        };
        if after_handshake.is_empty() {
            return;
        }
        self.watch.feed(&after_handshake);
        let session = &mut self.session;
        match guarded(|| session.handle_input(&after_handshake)) {
            Ok(results) => self.take(results),
            Err(why) => self.fail(why),
        }
    }

    /// Queues one frame's tag (only while publishing). A frame of a track it does not know is
    /// left out.
    pub fn send_frame(&mut self, frame: &Frame) {
        if self.state != State::Recording {
            return;
        }
        let Some(codec) = self.tracks.get(frame.track) else {
            return;
        };
        let rate = codec.clock_rate();
        let decoded = flv::millis(frame.decoded, rate);
        let origin = *self.origin_ms.get_or_insert(decoded);
        // RTMP timestamps are 32-bit milliseconds and wrap after 49 days.
        let at = RtmpTimestamp::new((decoded - origin).max(0) as u32);
        let composition = flv::millis(frame.timestamp - frame.decoded, rate);
        let body = flv::frame(
            codec,
            frame.keyframe,
            i32::try_from(composition).unwrap_or(0),
            &frame.data,
        );
        let video = matches!(codec, Codec::H264 { .. });
        self.publish_tag(video, body, at);
    }

    /// Queues one tag body; whether the session took it (if not, the dialogue failed).
    fn publish_tag(&mut self, video: bool, body: Bytes, at: RtmpTimestamp) -> bool {
        let session = &mut self.session;
        let sent = guarded(|| {
            if video {
                session.publish_video_data(body, at, false)
            } else {
                session.publish_audio_data(body, at, false)
            }
        });
        match sent {
            Ok(result) => {
                self.take(vec![result]);
                true
            }
            Err(why) => {
                self.fail(why);
                false
            }
        }
    }

    /// `deleteStream`: the end of publishing.
    pub fn teardown(&mut self) {
        if self.state == State::Recording {
            let session = &mut self.session;
            if let Ok(results) = guarded(|| session.stop_publishing()) {
                self.take(results);
            }
        }
        self.state = State::Closed;
    }

    fn fail(&mut self, why: String) {
        self.state = State::Failed(format!("RTMP: {why}"));
    }

    /// Writes out what the session made, and acts on what it raised.
    fn take(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.output.extend_from_slice(&packet.bytes);
                }
                ClientSessionResult::RaisedEvent(event) => self.raised(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn raised(&mut self, event: ClientSessionEvent) {
        match event {
            ClientSessionEvent::ConnectionRequestAccepted => {
                let (session, stream) = (&mut self.session, self.stream.clone());
                match guarded(|| session.request_publishing(stream, PublishRequestType::Live)) {
                    Ok(result) => self.take(vec![result]),
                    Err(why) => self.fail(why),
                }
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                self.state = refused(None, &description);
            }
            ClientSessionEvent::PublishRequestAccepted => {
                self.state = State::Recording;
                self.start_tracks();
            }
            // The streamer answers a refused `publish` with `_error`: rml_rtmp does not
            // follow that transaction, so it arrives as one it does not know.
            ClientSessionEvent::UnknownTransactionResultReceived {
                additional_values, ..
            } => {
                if let Some((_, code, description)) = status_of(&additional_values) {
                    self.state = refused(Some(&code), &description);
                }
            }
            // An error status (the streamer's refusal is `NetStream.Publish.Denied`): refused
            // before going live; after, the server closes the connection, which says the rest.
            ClientSessionEvent::UnhandleableOnStatusCode { .. } => {
                if let (State::Starting, Some((code, description))) =
                    (&self.state, self.watch.error.take())
                {
                    self.state = refused(Some(&code), &description);
                }
            }
            _ => {}
        }
    }

    /// `onMetaData`, then each track's sequence header.
    fn start_tracks(&mut self) {
        let mut metadata = StreamMetadata::new();
        for codec in &self.tracks {
            match codec {
                Codec::H264 { .. } => metadata.video_codec_id = Some(META_AVC),
                Codec::Aac {
                    sample_rate,
                    channels,
                    ..
                } => {
                    metadata.audio_codec_id = Some(META_AAC);
                    metadata.audio_sample_rate = Some(*sample_rate);
                    metadata.audio_channels = Some(u32::from(*channels));
                }
            }
        }
        metadata.encoder = Some(concat!("slotcast/", env!("CARGO_PKG_VERSION")).to_string());
        let session = &mut self.session;
        match guarded(|| session.publish_metadata(&metadata)) {
            Ok(result) => self.take(vec![result]),
            Err(why) => return self.fail(why),
        }
        let headers: Vec<(bool, Bytes)> = self
            .tracks
            .iter()
            .filter_map(|c| Some((matches!(c, Codec::H264 { .. }), flv::sequence_header(c)?)))
            .collect();
        for (video, header) in headers {
            if !self.publish_tag(video, header, RtmpTimestamp::new(0)) {
                return;
            }
        }
    }
}

/// Runs a call into rml_rtmp: its error, or its panic, as words.
fn guarded<T, E: std::fmt::Display>(call: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the RTMP library failed on the server's answer".into()),
    }
}

/// The `level`, `code` and `description` of an `_error` or `onStatus` status object.
fn status_of(values: &[Amf0Value]) -> Option<(String, String, String)> {
    values.iter().find_map(|value| {
        let Amf0Value::Object(fields) = value else {
            return None;
        };
        let text = |name: &str| match fields.get(name) {
            Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
            _ => None,
        };
        let code = text("code")?;
        Some((
            text("level").unwrap_or_default(),
            code,
            text("description").unwrap_or_default(),
        ))
    })
}

/// A refusal as the RTSP dialogue states it: the streamer's code (the start of its
/// `description`, `<code>: <reason>`), the status RTSP would have given it, and the words.
fn refused(status_code: Option<&str>, description: &str) -> State {
    let code = description
        .split_once(':')
        .and_then(|(code, _)| code.trim().parse::<RefusalCode>().ok());
    let status = match code {
        Some(RefusalCode::BadKey) => 401,
        Some(RefusalCode::Unknown) => 404,
        Some(_) => 403,
        None => 400,
    };
    let reason = match (description.is_empty(), status_code) {
        (false, _) => description.to_string(),
        (true, Some(code)) => code.to_string(),
        (true, None) => "refused".to_string(),
    };
    State::Refused {
        status,
        code,
        reason,
    }
}

#[cfg(test)]
#[path = "rtmp_tests.rs"]
mod tests;
