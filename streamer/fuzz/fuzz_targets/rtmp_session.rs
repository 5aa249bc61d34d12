//! A whole RTMP connection over arbitrary input. The first byte chooses how far a real
//! publisher got before the arbitrary bytes (nowhere, the handshake, `connect`, or an
//! admitted `publish`, each made with `rml_rtmp`'s own writer) and how the rest is cut into
//! reads and timeouts, so chunks, AMF, FLV tags and the probe all see arbitrary bytes. The
//! session never lets a panic out (the crate's own, which the session catches and turns into
//! a close, are let through the panic hook), and once it has said `Close` says nothing more.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;
use slotcast_domain::contract::RefusalCode;
use slotcast_streamer::rtmp::{Admission, Credential, Host, Output, Refusal, RtmpConfig, Session};

/// Admits reservation `r1` with key `k`, refuses anything else as the gates would.
struct Gate;

impl Host for Gate {
    fn admit(&mut self, request: &Admission<'_>) -> Result<(), Refusal> {
        if request.reservation_id != "r1" {
            return Err(Refusal::new(RefusalCode::Unknown, "unknown reservation"));
        }
        match request.credential {
            Credential::Key(key) if key == "k" => Ok(()),
            _ => Err(Refusal::new(RefusalCode::BadKey, "wrong stream key")),
        }
    }
}

/// A publisher's messages up to `stage` (1: connect, 2: and createStream and publish).
fn prelude(stage: u8) -> Vec<u8> {
    let mut serializer = ChunkSerializer::new();
    let mut bytes = Vec::new();
    let mut command = |name: &str, stream: u32, object: Amf0Value, args: Vec<Amf0Value>| {
        let message = RtmpMessage::Amf0Command {
            command_name: name.to_owned(),
            transaction_id: 1.0,
            command_object: object,
            additional_arguments: args,
        };
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), stream)
            .expect("a command serializes");
        let packet = serializer
            .serialize(&payload, false, false)
            .expect("chunks");
        bytes.extend_from_slice(&packet.bytes);
    };
    let app = HashMap::from([("app".to_owned(), Amf0Value::Utf8String("live".into()))]);
    command("connect", 0, Amf0Value::Object(app), Vec::new());
    if stage >= 2 {
        command("createStream", 0, Amf0Value::Null, Vec::new());
        let name = Amf0Value::Utf8String("r1?key=k".into());
        let kind = Amf0Value::Utf8String("live".into());
        command("publish", 1, Amf0Value::Null, vec![name, kind]);
    }
    bytes
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcast_streamer::rtmp::fuzz::let_rml_panics_unwind();
    let Some((&plan, rest)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let mut session = Session::new(RtmpConfig::default(), start);
    let mut host = Gate;
    let mut closed = false;
    let mut drain = |session: &mut Session| {
        while let Some(output) = session.poll_output() {
            assert!(!closed, "output after Close: {output:?}");
            if matches!(output, Output::Close(_)) {
                closed = true;
            }
        }
    };
    let stage = plan & 3;
    if stage > 0 {
        let mut client = Handshake::new(PeerType::Client);
        let c0c1 = client.generate_outbound_p0_and_p1().expect("C0 and C1");
        session.handle_input(start, &c0c1, &mut host);
        let mut s0s1s2 = Vec::new();
        while let Some(output) = session.poll_output() {
            if let Output::Send(bytes) = output {
                s0s1s2.extend_from_slice(&bytes);
            }
        }
        let Ok(HandshakeProcessResult::Completed { response_bytes, .. }) =
            client.process_bytes(&s0s1s2)
        else {
            panic!("the session's handshake did not complete a client's");
        };
        session.handle_input(start, &response_bytes, &mut host);
        if stage > 1 {
            session.handle_input(start, &prelude(stage - 1), &mut host);
        }
        drain(&mut session);
    }
    let chunk = 1 + usize::from(plan >> 2) * 16;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 10);
        if piece[0] == 0xff && piece.len() == 1 {
            session.handle_timeout(now + Duration::from_secs(3));
        } else {
            session.handle_input(now, piece, &mut host);
        }
        drain(&mut session);
    }
});
