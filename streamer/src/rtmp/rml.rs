//! The one module that calls `rml_rtmp` (pinned `=0.8.0`; tests and fuzz entry points
//! aside): the handshake, RTMP chunking and AMF0 commands, as bytes in and our own
//! [`Incoming`] messages out, and the few answers a publish server sends.
//!
//! Contract: every call into the crate that reads or writes bytes runs inside `catch_unwind`
//! (only its constructors do not), because its chunk deserializer panics on some inputs (a
//! type-1 header that shrinks a message underflows a length; an extended timestamp below the
//! 24-bit escape underflows; a command of fewer than three values makes `Vec::drain` panic;
//! see docs/dependencies.md). A panic is [`RmlError::Panicked`] and ends that connection
//! only. AMF0 messages are checked before the crate decodes them ([`super::amf`]): its
//! decoder recurses once per nesting level, so a deeply nested value from a stranger would
//! overflow the stack, which no `catch_unwind` catches. Nothing of the crate's types leaves
//! this module.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{
    MessagePayload, PeerBandwidthLimitType, RtmpMessage, UserControlEventType,
};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;

use super::amf;

/// The chunk size we write with (the peer is told at connect).
const OUR_CHUNK_SIZE: u32 = 4096;
/// The largest chunk size a peer may announce: RTMP allows up to 2^31 − 1, but a message is
/// at most 16 MiB, so nothing larger means anything.
pub(super) const MAX_PEER_CHUNK_SIZE: u32 = 16 << 20;
/// What we ask the peer to acknowledge after, and the bandwidth we tell it (bytes).
const WINDOW: u32 = 5_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RmlError {
    /// The bytes are not RTMP (the crate's own words).
    Bad(String),
    /// The crate panicked on them.
    Panicked,
}

impl std::fmt::Display for RmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bad(why) => f.write_str(why),
            Self::Panicked => f.write_str("the RTMP library failed on this input"),
        }
    }
}

#[cfg(fuzzing)]
thread_local! {
    /// Inside [`guarded`]: a panic now is one it catches (the fuzz targets' panic hook, which
    /// aborts on any other, asks).
    pub(super) static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into [`RmlError::Panicked`] and an error into its words.
pub(super) fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, RmlError> {
    #[cfg(fuzzing)]
    GUARDED.with(|g| g.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    #[cfg(fuzzing)]
    GUARDED.with(|g| g.set(false));
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(RmlError::Bad(err.to_string())),
        Err(_) => Err(RmlError::Panicked),
    }
}

/// A codec as `onMetaData` names it: FLV's number, or a FourCC some encoders write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CodecId {
    Number(u32),
    Name(String),
}

/// One message from the publisher, in the terms the session needs.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Incoming {
    Connect {
        transaction: f64,
        /// `None` when the command object has no string `app`.
        app: Option<String>,
    },
    CreateStream {
        transaction: f64,
    },
    Publish {
        transaction: f64,
        stream: u32,
        /// The publishing name (`None` when it is not a string).
        name: Option<String>,
    },
    /// `FCUnpublish`, `deleteStream` or `closeStream`: the publisher is done.
    Unpublish,
    Play {
        transaction: f64,
        stream: u32,
    },
    /// A command we do not act on (`releaseStream`, `FCPublish`, `_checkbw`...).
    OtherCommand,
    /// `@setDataFrame onMetaData` (or a bare `onMetaData`).
    Metadata {
        video: Option<CodecId>,
        audio: Option<CodecId>,
    },
    /// Other AMF data.
    OtherData,
    Audio {
        timestamp: u32,
        data: Bytes,
    },
    Video {
        timestamp: u32,
        data: Bytes,
    },
    SetChunkSize(u32),
    /// The peer wants an acknowledgement after this many bytes.
    WindowAckSize(u32),
    /// Control messages we need not act on.
    Control,
}

/// The handshake, then the chunk streams, of one connection.
pub(super) struct Rml {
    handshake: Option<Handshake>,
    deserializer: ChunkDeserializer,
    serializer: ChunkSerializer,
}

/// Where the handshake stands after some input.
pub(super) struct Handshaking {
    /// To write to the peer.
    pub response: Bytes,
    /// `Some` once complete: what came after it (the first chunks).
    pub rest: Option<Vec<u8>>,
}

impl Rml {
    pub fn new() -> Self {
        Self {
            handshake: Some(Handshake::new(PeerType::Server)),
            deserializer: ChunkDeserializer::new(),
            serializer: ChunkSerializer::new(),
        }
    }

    /// Handshake input (C0, C1, C2).
    pub fn handshake(&mut self, input: &[u8]) -> Result<Handshaking, RmlError> {
        let handshake = self
            .handshake
            .as_mut()
            .ok_or_else(|| RmlError::Bad("the handshake is over".into()))?;
        match guarded(|| handshake.process_bytes(input))? {
            HandshakeProcessResult::InProgress { response_bytes } => Ok(Handshaking {
                response: response_bytes.into(),
                rest: None,
            }),
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                self.handshake = None;
                Ok(Handshaking {
                    response: response_bytes.into(),
                    rest: Some(remaining_bytes),
                })
            }
        }
    }

    /// The next whole message, `input` first added to what is buffered (pass `&[]` to take
    /// the next one already buffered). `Ok(None)`: more bytes are needed.
    pub fn next_message(&mut self, input: &[u8]) -> Result<Option<Incoming>, RmlError> {
        let deserializer = &mut self.deserializer;
        let Some(payload) = guarded(|| deserializer.get_next_message(input))? else {
            return Ok(None);
        };
        decode(&payload).map(Some)
    }

    /// The peer's chunk size, from its SetChunkSize.
    pub fn set_peer_chunk_size(&mut self, size: u32) -> Result<(), RmlError> {
        if size == 0 || size > MAX_PEER_CHUNK_SIZE {
            return Err(RmlError::Bad(format!("chunk size {size}")));
        }
        let deserializer = &mut self.deserializer;
        guarded(|| deserializer.set_max_chunk_size(size as usize))
    }

    fn serialize(&mut self, message: RtmpMessage, stream: u32) -> Result<Bytes, RmlError> {
        let serializer = &mut self.serializer;
        guarded(|| {
            let payload = message
                .into_message_payload(RtmpTimestamp::new(0), stream)
                .map_err(|e| e.to_string())?;
            serializer
                .serialize(&payload, false, false)
                .map(|packet| Bytes::from(packet.bytes))
                .map_err(|e| e.to_string())
        })
    }

    fn command(
        &mut self,
        name: &str,
        transaction: f64,
        stream: u32,
        object: Amf0Value,
        arguments: Vec<Amf0Value>,
    ) -> Result<Bytes, RmlError> {
        let message = RtmpMessage::Amf0Command {
            command_name: name.to_owned(),
            transaction_id: transaction,
            command_object: object,
            additional_arguments: arguments,
        };
        self.serialize(message, stream)
    }

    /// Accepts `connect`: window, bandwidth, our chunk size, then `_result`
    /// `NetConnection.Connect.Success`.
    pub fn connect_success(&mut self, transaction: f64) -> Result<Vec<Bytes>, RmlError> {
        let window = self.serialize(RtmpMessage::WindowAcknowledgement { size: WINDOW }, 0)?;
        let bandwidth = self.serialize(
            RtmpMessage::SetPeerBandwidth {
                size: WINDOW,
                limit_type: PeerBandwidthLimitType::Dynamic,
            },
            0,
        )?;
        let serializer = &mut self.serializer;
        let chunk_size = guarded(|| {
            serializer
                .set_max_chunk_size(OUR_CHUNK_SIZE, RtmpTimestamp::new(0))
                .map(|packet| Bytes::from(packet.bytes))
        })?;
        let mut properties = HashMap::new();
        properties.insert("fmsVer".to_owned(), string("FMS/3,0,1,123"));
        properties.insert("capabilities".to_owned(), Amf0Value::Number(31.0));
        let mut info = status("status", "NetConnection.Connect.Success", "connected");
        info.insert("objectEncoding".to_owned(), Amf0Value::Number(0.0));
        let result = self.command(
            "_result",
            transaction,
            0,
            Amf0Value::Object(properties),
            vec![Amf0Value::Object(info)],
        )?;
        Ok(vec![window, bandwidth, chunk_size, result])
    }

    /// `_error` to a command (e.g. `connect` to the wrong application).
    pub fn error(
        &mut self,
        transaction: f64,
        code: &str,
        description: &str,
    ) -> Result<Bytes, RmlError> {
        let info = status("error", code, description);
        self.command(
            "_error",
            transaction,
            0,
            Amf0Value::Null,
            vec![Amf0Value::Object(info)],
        )
    }

    /// `_result` to `createStream`: the stream id.
    pub fn stream_created(&mut self, transaction: f64, stream: u32) -> Result<Bytes, RmlError> {
        self.command(
            "_result",
            transaction,
            0,
            Amf0Value::Null,
            vec![Amf0Value::Number(f64::from(stream))],
        )
    }

    /// `onStatus` on `stream`: `level` is `status` or `error`.
    pub fn on_status(
        &mut self,
        stream: u32,
        level: &str,
        code: &str,
        description: &str,
    ) -> Result<Bytes, RmlError> {
        let info = status(level, code, description);
        self.command(
            "onStatus",
            0.0,
            stream,
            Amf0Value::Null,
            vec![Amf0Value::Object(info)],
        )
    }

    /// Stream Begin for `stream`, which goes before `NetStream.Publish.Start`.
    pub fn stream_begin(&mut self, stream: u32) -> Result<Bytes, RmlError> {
        let message = RtmpMessage::UserControl {
            event_type: UserControlEventType::StreamBegin,
            stream_id: Some(stream),
            buffer_length: None,
            timestamp: None,
        };
        self.serialize(message, 0)
    }

    /// Acknowledgement of `received` bytes (the count wraps at 2^32, as RTMP's does).
    pub fn acknowledgement(&mut self, received: u64) -> Result<Bytes, RmlError> {
        let sequence_number = (received % (1 << 32)) as u32;
        self.serialize(RtmpMessage::Acknowledgement { sequence_number }, 0)
    }
}

fn string(value: &str) -> Amf0Value {
    Amf0Value::Utf8String(value.to_owned())
}

fn status(level: &str, code: &str, description: &str) -> HashMap<String, Amf0Value> {
    HashMap::from([
        ("level".to_owned(), string(level)),
        ("code".to_owned(), string(code)),
        ("description".to_owned(), string(description)),
    ])
}

/// A whole message as [`Incoming`]. AMF0 bodies are checked first (size, nesting).
fn decode(payload: &MessagePayload) -> Result<Incoming, RmlError> {
    let is_amf = matches!(payload.type_id, 15 | 17 | 18 | 20);
    if is_amf {
        amf::check(&payload.data).map_err(RmlError::Bad)?;
    }
    let message = guarded(|| payload.to_rtmp_message())?;
    let stream = payload.message_stream_id;
    Ok(match message {
        RtmpMessage::Amf0Command {
            command_name,
            transaction_id,
            command_object,
            additional_arguments,
        } => command(
            &command_name,
            transaction_id,
            stream,
            command_object,
            additional_arguments,
        ),
        RtmpMessage::Amf0Data { values } => data(values),
        RtmpMessage::AudioData { data } => Incoming::Audio {
            timestamp: payload.timestamp.value,
            data,
        },
        RtmpMessage::VideoData { data } => Incoming::Video {
            timestamp: payload.timestamp.value,
            data,
        },
        RtmpMessage::SetChunkSize { size } => Incoming::SetChunkSize(size),
        RtmpMessage::WindowAcknowledgement { size } => Incoming::WindowAckSize(size),
        RtmpMessage::Abort { .. }
        | RtmpMessage::Acknowledgement { .. }
        | RtmpMessage::SetPeerBandwidth { .. }
        | RtmpMessage::UserControl { .. }
        | RtmpMessage::Unknown { .. } => Incoming::Control,
    })
}

fn command(
    name: &str,
    transaction: f64,
    stream: u32,
    object: Amf0Value,
    arguments: Vec<Amf0Value>,
) -> Incoming {
    match name {
        "connect" => Incoming::Connect {
            transaction,
            app: match object {
                Amf0Value::Object(mut properties) => match properties.remove("app") {
                    Some(Amf0Value::Utf8String(app)) => Some(app),
                    _ => None,
                },
                _ => None,
            },
        },
        "createStream" => Incoming::CreateStream { transaction },
        "publish" => Incoming::Publish {
            transaction,
            stream,
            name: match arguments.into_iter().next() {
                Some(Amf0Value::Utf8String(name)) => Some(name),
                _ => None,
            },
        },
        "FCUnpublish" | "deleteStream" | "closeStream" => Incoming::Unpublish,
        "play" => Incoming::Play {
            transaction,
            stream,
        },
        _ => Incoming::OtherCommand,
    }
}

fn data(values: Vec<Amf0Value>) -> Incoming {
    let mut values = values.into_iter();
    let mut first = values.next();
    if matches!(&first, Some(Amf0Value::Utf8String(s)) if s == "@setDataFrame") {
        first = values.next();
    }
    if !matches!(&first, Some(Amf0Value::Utf8String(s)) if s == "onMetaData") {
        return Incoming::OtherData;
    }
    let Some(Amf0Value::Object(mut properties)) = values.next() else {
        return Incoming::Metadata {
            video: None,
            audio: None,
        };
    };
    let mut codec = |key: &str| match properties.remove(key) {
        Some(Amf0Value::Number(n)) if n >= 0.0 && n <= f64::from(u32::MAX) => {
            Some(CodecId::Number(n as u32))
        }
        Some(Amf0Value::Utf8String(name)) => Some(CodecId::Name(name.chars().take(16).collect())),
        _ => None,
    };
    Incoming::Metadata {
        video: codec("videocodecid"),
        audio: codec("audiocodecid"),
    }
}
