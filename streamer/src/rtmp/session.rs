//! The per-connection RTMP publish session: bytes in, answers and media out.
//!
//! Contract: see the module doc in `mod.rs` for the edge's side. The course of a publisher,
//! and what each step is answered:
//!
//! | case | answer | then |
//! | --- | --- | --- |
//! | a handshake the crate refuses | none | Close(Malformed), label `rtmp_handshake` |
//! | bytes that are not RTMP chunks, a chunk size of 0 or over 16 MiB, AMF0 over 64 KiB or nested over 16 levels | none | Close(Malformed), label `malformed` |
//! | input the crate panics on | none | Close(Malformed), label `rtmp_panic` |
//! | more than `max_bytes_before_publish` bytes or `max_messages_before_publish` messages before the publish is admitted | none | Close(Malformed), label `rtmp_before_publish` |
//! | `connect` to an application other than `live` | `_error` `NetConnection.Connect.Rejected` | Close(Refused), label `malformed` |
//! | `connect` to `live` | window, bandwidth, chunk size, `_result` `NetConnection.Connect.Success` | |
//! | `createStream` after `connect` | `_result` with stream id 1 | |
//! | `publish` whose name is not `<reservation-id>?key=<stream-key>` | `onStatus` error `NetStream.Publish.BadName` | Close(Refused), label `malformed` |
//! | `publish` the host refuses | `onStatus` error `NetStream.Publish.Denied`, `<code>: <reason>` | Close(Refused) (the host counted it) |
//! | `publish` the host admits | Stream Begin, `onStatus` `NetStream.Publish.Start` | probing |
//! | `play` | `onStatus` error `NetStream.Play.Failed` | Close(Refused), label `malformed` |
//! | `connect`, `createStream` or `publish` out of turn (before `connect`, or again once publishing) | none | Close(Malformed), label `malformed` |
//! | a codec other than H.264 / AAC (in `onMetaData` or a tag) | `onStatus` error `NetStream.Failed`, `unsupported: …` | Close(Unsupported), label `unsupported_codec` |
//! | no sequence header within `probe_wait` / `probe_bytes` of publishing | `onStatus` error `NetStream.Failed` | Close(Unsupported), label `unsupported_codec` |
//! | the codecs are known (see `probe.rs`) | | Publish, the held frames, then every frame |
//! | `FCUnpublish`, `deleteStream`, `closeStream` once publishing | | Close(Unpublished) |
//! | no message for `timeout` | none | Close(Timeout), label `timeout` |
//! | the edge closes it once publishing (window closed, cut off, shutdown) | `onStatus` error `NetConnection.Connect.Closed`, the reason | Close |
//!
//! Other commands (`releaseStream`, `FCPublish`, `_checkbw`...) and control messages are
//! ignored; media before the publish is admitted is dropped. Acknowledgements are sent when
//! the peer set a window. Activity (for the timeout) is any whole message.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use slotcast_domain::contract::RefusalCode;
use tracing::info;

use super::flv::FlvFramer;
use super::probe::{Probe, Tag, Verdict};
use super::rml::{Incoming, Rml, RmlError};
use super::stream_key::{self, HOW};
use super::{Admission, CloseReason, Credential, Host, Output, RtmpConfig, State};

/// The one stream a publisher gets (`createStream`'s answer).
const STREAM_ID: u32 = 1;
const APP: &str = "live";

pub struct Session {
    config: RtmpConfig,
    rml: Rml,
    state: State,
    outputs: VecDeque<Output>,
    last_activity: Instant,
    /// Bytes received in all.
    received: u64,
    /// Whole messages received before the publish was admitted.
    messages_before_publish: u32,
    /// The peer's acknowledgement window, and `received` at the last acknowledgement.
    ack_window: Option<u64>,
    acknowledged: u64,
    /// The message stream the publisher publishes on.
    stream: u32,
    reservation_id: Option<String>,
    /// While probing: since when, and what came.
    probe: Option<(Instant, Probe)>,
    framer: Option<FlvFramer>,
    /// The metric label of a close the session decided on (not the host's refusals, which
    /// the host counts).
    label: Option<&'static str>,
    /// Messages ignored (other commands, control, media before publishing).
    ignored: u64,
}

impl Session {
    pub fn new(config: RtmpConfig, now: Instant) -> Self {
        Self {
            config,
            rml: Rml::new(),
            state: State::Handshake,
            outputs: VecDeque::new(),
            last_activity: now,
            received: 0,
            messages_before_publish: 0,
            ack_window: None,
            acknowledged: 0,
            stream: STREAM_ID,
            reservation_id: None,
            probe: None,
            framer: None,
            label: None,
            ignored: 0,
        }
    }

    /// Bytes read from the TCP connection.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8], host: &mut dyn Host) {
        if self.state == State::Closed || bytes.is_empty() {
            return;
        }
        self.received = self.received.saturating_add(bytes.len() as u64);
        if self.before_publish() && self.received > self.config.max_bytes_before_publish as u64 {
            let why = format!(
                "more than {} bytes before publishing",
                self.config.max_bytes_before_publish
            );
            return self.fail("rtmp_before_publish", CloseReason::Malformed(why));
        }
        if self.state == State::Handshake {
            match self.rml.handshake(bytes) {
                Ok(handshaking) => {
                    if !handshaking.response.is_empty() {
                        self.outputs.push_back(Output::Send(handshaking.response));
                    }
                    if let Some(rest) = handshaking.rest {
                        self.last_activity = now;
                        self.state = State::Connecting;
                        self.chunks(now, &rest, host);
                    }
                }
                Err(err) => {
                    let label = match err {
                        RmlError::Panicked => "rtmp_panic",
                        RmlError::Bad(_) => "rtmp_handshake",
                    };
                    let why = format!("RTMP handshake: {err}");
                    self.fail(label, CloseReason::Malformed(why));
                }
            }
        } else {
            self.chunks(now, bytes, host);
        }
        self.acknowledge();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((since, _)) = &self.probe {
            if now.saturating_duration_since(*since) >= self.config.probe_wait {
                let waited = format!("within {} s", self.config.probe_wait.as_secs_f32());
                self.go_live(&waited);
            }
        }
        if self.state != State::Closed
            && now.saturating_duration_since(self.last_activity) >= self.config.timeout
        {
            self.fail("timeout", CloseReason::Timeout);
        }
    }

    /// When to call [`Session::handle_timeout`]; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let idle = self.last_activity.checked_add(self.config.timeout);
        let probe = self
            .probe
            .as_ref()
            .and_then(|(since, _)| since.checked_add(self.config.probe_wait));
        match (idle, probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The edge ends the session (window closed, cut off, shutdown, peer gone): a publisher is
    /// told why, then `Close` is queued. Idempotent.
    pub fn close(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Probing | State::Live) {
            let answer = self.rml.on_status(
                self.stream,
                "error",
                "NetConnection.Connect.Closed",
                &reason.to_string(),
            );
            self.send(answer);
        }
        self.end(reason);
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The reservation of an admitted publish.
    pub fn reservation_id(&self) -> Option<&str> {
        self.reservation_id.as_deref()
    }

    /// The metric label of the close, when the session decided it (a limit, bad input, an
    /// unsupported codec, the timeout); `None` for a host's refusal and the edge's closes.
    pub fn close_label(&self) -> Option<&'static str> {
        self.label
    }

    fn before_publish(&self) -> bool {
        matches!(
            self.state,
            State::Handshake | State::Connecting | State::Connected
        )
    }

    fn end(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        info!(
            reservation = self.reservation_id().unwrap_or("-"),
            %reason,
            ignored = self.ignored,
            "RTMP session closed"
        );
        self.state = State::Closed;
        self.probe = None;
        self.outputs.push_back(Output::Close(reason));
    }

    fn fail(&mut self, label: &'static str, reason: CloseReason) {
        if self.state != State::Closed {
            self.label = Some(label);
        }
        self.end(reason);
    }

    /// Queues an answer; an answer the crate could not write ends the session.
    fn send(&mut self, answer: Result<Bytes, RmlError>) {
        match answer {
            Ok(bytes) => self.outputs.push_back(Output::Send(bytes)),
            Err(err) => self.rml_failed(err),
        }
    }

    fn rml_failed(&mut self, err: RmlError) {
        let label = match err {
            RmlError::Panicked => "rtmp_panic",
            RmlError::Bad(_) => "malformed",
        };
        self.fail(label, CloseReason::Malformed(format!("RTMP: {err}")));
    }

    fn chunks(&mut self, now: Instant, input: &[u8], host: &mut dyn Host) {
        let mut input = input;
        while self.state != State::Closed {
            let message = match self.rml.next_message(input) {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(err) => return self.rml_failed(err),
            };
            input = &[];
            self.last_activity = now;
            if self.before_publish() {
                self.messages_before_publish += 1;
                if self.messages_before_publish > self.config.max_messages_before_publish {
                    let why = format!(
                        "more than {} messages before publishing",
                        self.config.max_messages_before_publish
                    );
                    return self.fail("rtmp_before_publish", CloseReason::Malformed(why));
                }
            }
            self.on_message(now, message, host);
        }
    }

    fn out_of_turn(&mut self, what: &str) {
        let when = match self.state {
            State::Probing | State::Live => "while publishing",
            State::Connected => "after connect",
            _ => "before connect",
        };
        self.fail(
            "malformed",
            CloseReason::Malformed(format!("{what} {when}")),
        );
    }

    fn on_message(&mut self, now: Instant, message: Incoming, host: &mut dyn Host) {
        match message {
            Incoming::SetChunkSize(size) => {
                if let Err(err) = self.rml.set_peer_chunk_size(size) {
                    self.rml_failed(err);
                }
            }
            Incoming::WindowAckSize(size) => {
                self.ack_window = (size > 0).then_some(u64::from(size));
            }
            Incoming::Connect { transaction, app } => {
                if self.state != State::Connecting {
                    return self.out_of_turn("connect");
                }
                let app = app.unwrap_or_default();
                if app.trim_end_matches('/') == APP {
                    match self.rml.connect_success(transaction) {
                        Ok(answers) => {
                            let sends = answers.into_iter().map(Output::Send);
                            self.outputs.extend(sends);
                            self.state = State::Connected;
                        }
                        Err(err) => self.rml_failed(err),
                    }
                } else {
                    let why = format!("publish to rtmp://<host>:<port>/{APP}, not to {app:?}");
                    let answer =
                        self.rml
                            .error(transaction, "NetConnection.Connect.Rejected", &why);
                    self.send(answer);
                    self.fail("malformed", CloseReason::Refused(why));
                }
            }
            Incoming::CreateStream { transaction } => {
                if self.state != State::Connected {
                    return self.out_of_turn("createStream");
                }
                let answer = self.rml.stream_created(transaction, STREAM_ID);
                self.send(answer);
            }
            Incoming::Publish { stream, name, .. } => {
                if self.state != State::Connected {
                    return self.out_of_turn("publish");
                }
                self.stream = stream;
                self.publish(now, name.as_deref().unwrap_or(""), host);
            }
            Incoming::Play { stream, .. } => {
                let why = "this is a publish server: viewers watch over HLS";
                let answer = self
                    .rml
                    .on_status(stream, "error", "NetStream.Play.Failed", why);
                self.send(answer);
                self.fail("malformed", CloseReason::Refused(why.to_owned()));
            }
            Incoming::Unpublish => {
                if matches!(self.state, State::Probing | State::Live) {
                    self.end(CloseReason::Unpublished);
                } else {
                    self.ignored += 1;
                }
            }
            Incoming::Metadata { video, audio } => match &mut self.probe {
                Some((_, probe)) => {
                    let verdict = probe.metadata(video.as_ref(), audio.as_ref());
                    self.probed(verdict);
                }
                None => self.ignored += 1,
            },
            Incoming::Video { timestamp, data } => self.media((true, timestamp, data)),
            Incoming::Audio { timestamp, data } => self.media((false, timestamp, data)),
            Incoming::OtherCommand | Incoming::OtherData | Incoming::Control => self.ignored += 1,
        }
    }

    /// A `publish` of `name`: the host decides.
    fn publish(&mut self, now: Instant, name: &str, host: &mut dyn Host) {
        let name = match stream_key::parse(name) {
            Ok(name) => name,
            Err(why) => {
                let answer =
                    self.rml
                        .on_status(self.stream, "error", "NetStream.Publish.BadName", &why);
                self.send(answer);
                return self.fail("malformed", CloseReason::Refused(why));
            }
        };
        let credential = Credential::Key(name.key.clone().unwrap_or_default());
        let admitted = host.admit(&Admission {
            carrier: &self.config.carrier,
            reservation_id: &name.reservation_id,
            credential: &credential,
        });
        match admitted {
            Ok(()) => {
                let begin = self.rml.stream_begin(self.stream);
                self.send(begin);
                let what = format!("publishing {}", name.reservation_id);
                let start =
                    self.rml
                        .on_status(self.stream, "status", "NetStream.Publish.Start", &what);
                self.send(start);
                if self.state != State::Closed {
                    self.state = State::Probing;
                    self.probe = Some((now, Probe::default()));
                    self.reservation_id = Some(name.reservation_id);
                }
            }
            Err(mut refusal) => {
                if name.key.is_none() && refusal.code == RefusalCode::BadKey {
                    refusal.reason = format!("no stream key: {HOW}");
                }
                let description = refusal.coded();
                let answer = self.rml.on_status(
                    self.stream,
                    "error",
                    "NetStream.Publish.Denied",
                    &description,
                );
                self.send(answer);
                self.end(CloseReason::Refused(description));
            }
        }
    }

    fn media(&mut self, tag: Tag) {
        match self.state {
            State::Probing => {
                if let Some((_, probe)) = &mut self.probe {
                    let verdict = probe.push(tag);
                    self.probed(verdict);
                }
            }
            State::Live => {
                let Some(framer) = self.framer.as_mut() else {
                    return;
                };
                let (is_video, timestamp, body) = tag;
                let framed = if is_video {
                    framer.video(timestamp, &body)
                } else {
                    framer.audio(timestamp, &body)
                };
                match framed {
                    Ok(Some(frame)) => self.outputs.push_back(Output::Frame(frame)),
                    Ok(None) => {}
                    Err(err) => self.outputs.push_back(Output::BadMedia(err)),
                }
            }
            _ => self.ignored += 1,
        }
    }

    fn probed(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Ready => self.go_live(""),
            Verdict::Unsupported(why) => self.unsupported(why),
            Verdict::Wait => {
                let full = self
                    .probe
                    .as_ref()
                    .is_some_and(|(_, probe)| probe.bytes() >= self.config.probe_bytes);
                if full {
                    let waited = format!("in the first {} bytes", self.config.probe_bytes);
                    self.go_live(&waited);
                }
            }
        }
    }

    fn unsupported(&mut self, why: String) {
        let description = format!("unsupported: {why}");
        let answer = self
            .rml
            .on_status(self.stream, "error", "NetStream.Failed", &description);
        self.send(answer);
        self.fail("unsupported_codec", CloseReason::Unsupported(why));
    }

    /// The probe is over: live with the headers that came, and the frames held.
    fn go_live(&mut self, waited: &str) {
        let Some((_, probe)) = self.probe.take() else {
            return;
        };
        let (framer, tags) = match probe.finish(waited) {
            Ok(found) => found,
            Err(why) => return self.unsupported(why),
        };
        let (tracks, params) = framer.tracks();
        self.outputs.push_back(Output::Publish {
            reservation_id: self.reservation_id.clone().unwrap_or_default(),
            tracks,
            params,
        });
        self.state = State::Live;
        self.framer = Some(framer);
        for tag in tags {
            self.media(tag);
        }
    }

    fn acknowledge(&mut self) {
        let Some(window) = self.ack_window else {
            return;
        };
        if self.state == State::Closed || self.received - self.acknowledged < window {
            return;
        }
        self.acknowledged = self.received;
        let ack = self.rml.acknowledgement(self.received);
        self.send(ack);
    }
}
