//! The RTSP publishing dialogue of one connection, sans-IO: ANNOUNCE the SDP, SETUP each
//! track over TCP interleaved (`interleaved=2i-2i+1`, `mode=record`), RECORD, then media as
//! `$` frames, a `GET_PARAMETER` keep-alive at half the server's session timeout, and
//! TEARDOWN at the end.
//!
//! Contract: the edge writes what [`Dialogue::take_output`] returns, feeds what it reads to
//! [`Dialogue::handle_input`], calls [`Dialogue::handle_timeout`] at
//! [`Dialogue::poll_timeout`], and reads [`Dialogue::state`] after each call. The core never
//! blocks, reads a clock or touches a socket; times come in as `Instant`s. A 401 is answered
//! once per request with the stream key as credentials (Digest when offered, else Basic;
//! user `slotcast`); any other error status ends the dialogue as [`State::Refused`] with the
//! server's reason, and its code from the `Slotcast-Refusal` header when the server sent one
//! (docs/publishing.md). Input is bounded: more than [`MAX_INPUT`] bytes without a whole message
//! ends it as [`State::Failed`].

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rtsp_types::{headers, Message, ParseError};
use slotcast_domain::contract::{RefusalCode, REFUSAL_HEADER};
use slotcast_domain::secret::{md5_hex, DIGEST_USERNAME as USER};

/// Bytes held while waiting for the end of a message from the server.
pub(super) const MAX_INPUT: usize = 256 * 1024;
const USER_AGENT: &str = concat!("slotcast/", env!("CARGO_PKG_VERSION"));
/// Keep-alive when the server names no timeout (RFC 2326's default is 60 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// ANNOUNCE, SETUP and RECORD under way.
    Starting,
    /// RECORD accepted: media may be sent.
    Recording,
    /// The server said no: its status, its refusal code (`None`: no `Slotcast-Refusal`
    /// header, or a code this build does not know) and its reason (the body, else the reason
    /// phrase), for people only.
    Refused {
        status: u16,
        code: Option<RefusalCode>,
        reason: String,
    },
    /// The server broke the protocol.
    Failed(String),
    /// TEARDOWN sent.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Announce,
    Setup(usize),
    Record,
    KeepAlive,
    Teardown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Auth {
    None,
    Basic,
    Digest {
        realm: String,
        nonce: String,
        opaque: Option<String>,
    },
}

pub(super) struct Dialogue {
    /// The publish URL without its query (no key in it).
    url: String,
    key: String,
    sdp: String,
    tracks: usize,
    state: State,
    cseq: u32,
    /// The request awaiting its answer, and how many times it was already sent with
    /// credentials (a second time only when the server said the nonce was stale).
    pending: Option<(Step, u8)>,
    auth: Auth,
    session: Option<String>,
    keep_alive: Duration,
    next_keep_alive: Option<Instant>,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Dialogue {
    /// Starts the dialogue: the ANNOUNCE is queued at once.
    pub fn new(url: &str, key: &str, sdp: String, tracks: usize) -> Self {
        let mut d = Self {
            url: url
                .split('?')
                .next()
                .unwrap_or(url)
                .trim_end_matches('/')
                .to_string(),
            key: key.to_string(),
            sdp,
            tracks,
            state: State::Starting,
            cseq: 0,
            pending: None,
            auth: Auth::None,
            session: None,
            keep_alive: DEFAULT_TIMEOUT / 2,
            next_keep_alive: None,
            input: Vec::new(),
            output: Vec::new(),
        };
        d.request(Step::Announce, 0);
        d
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Bytes to write, in order (empty when there is nothing).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// Queues the RTP packets of track `track` as interleaved frames (only while recording).
    pub fn send_rtp(&mut self, track: usize, packets: &[Vec<u8>]) {
        if self.state != State::Recording {
            return;
        }
        let channel = (2 * track) as u8;
        for p in packets {
            let Ok(len) = u16::try_from(p.len()) else {
                continue;
            };
            self.output.push(b'$');
            self.output.push(channel);
            self.output.extend_from_slice(&len.to_be_bytes());
            self.output.extend_from_slice(p);
        }
    }

    /// Ends the session politely; nothing more is sent after the TEARDOWN.
    pub fn teardown(&mut self) {
        if self.session.is_some() && matches!(self.state, State::Recording | State::Starting) {
            self.request(Step::Teardown, 0);
        }
        self.state = State::Closed;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_keep_alive
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_keep_alive.is_some_and(|at| now >= at) {
            self.next_keep_alive = Some(now + self.keep_alive);
            match self.pending {
                Some((Step::KeepAlive, _)) => {
                    self.state = State::Failed(format!(
                        "no answer to a keep-alive in {} s",
                        self.keep_alive.as_secs()
                    ));
                }
                None if self.state == State::Recording => self.request(Step::KeepAlive, 0),
                _ => {}
            }
        }
    }

    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.input.extend_from_slice(bytes);
        loop {
            if !matches!(self.state, State::Starting | State::Recording) {
                self.input.clear();
                return;
            }
            match Message::<Vec<u8>>::parse(&self.input) {
                Ok((message, used)) => {
                    self.input.drain(..used);
                    if let Message::Response(response) = message {
                        self.on_response(&response, now);
                    }
                    // Interleaved data (RTCP receiver reports) and requests are not ours to
                    // answer: a publisher only records.
                }
                Err(ParseError::Incomplete(_)) => {
                    if self.input.len() > MAX_INPUT {
                        self.state = State::Failed(format!(
                            "the server sent {} bytes that are not a whole RTSP message",
                            self.input.len()
                        ));
                    }
                    return;
                }
                Err(ParseError::Error) => {
                    self.state = State::Failed("the server's answer is not RTSP".into());
                    return;
                }
            }
        }
    }

    fn on_response(&mut self, response: &rtsp_types::Response<Vec<u8>>, now: Instant) {
        // An answer to anything but the request in flight (a late one) changes nothing.
        let cseq = response
            .header(&headers::CSEQ)
            .and_then(|c| c.as_str().trim().parse::<u32>().ok());
        if cseq.is_some_and(|c| c != self.cseq) {
            return;
        }
        let Some((step, tries)) = self.pending.take() else {
            return;
        };
        let status = u16::from(response.status());
        if status == 401 && step != Step::KeepAlive {
            let challenges: Vec<&str> = response
                .headers()
                .filter(|(name, _)| **name == headers::WWW_AUTHENTICATE)
                .map(|(_, value)| value.as_str())
                .collect();
            let (auth, stale) = choose_auth(&challenges);
            if let (Some(auth), true) = (auth, tries == 0 || (tries == 1 && stale)) {
                self.auth = auth;
                self.request(step, tries + 1);
                return;
            }
            if tries == 0 {
                self.state = State::Refused {
                    status,
                    code: None,
                    reason: "the server asks for credentials in no way this client answers \
                             (neither Digest MD5 nor Basic)"
                        .into(),
                };
                return;
            }
        }
        if step == Step::KeepAlive {
            // The answer to a keep-alive matters only as a sign of life.
            return;
        }
        if !(200..300).contains(&status) {
            let body = String::from_utf8_lossy(response.body()).trim().to_string();
            let reason = if body.is_empty() {
                response.reason_phrase().to_string()
            } else {
                body
            };
            let code = response
                .headers()
                .find(|(name, _)| name.as_str().eq_ignore_ascii_case(REFUSAL_HEADER))
                .and_then(|(_, value)| value.as_str().trim().parse().ok());
            self.state = State::Refused {
                status,
                code,
                reason,
            };
            return;
        }
        if let Some(session) = response.header(&headers::SESSION) {
            let mut parts = session.as_str().split(';');
            let id = parts.next().unwrap_or_default().trim().to_string();
            if let Some(secs) = parts
                .filter_map(|p| p.trim().strip_prefix("timeout="))
                .find_map(|t| t.trim().parse::<u64>().ok())
            {
                self.keep_alive = Duration::from_secs(secs.clamp(2, 3600)) / 2;
            }
            self.session = Some(id);
        }
        match step {
            Step::Announce if self.tracks > 0 => self.request(Step::Setup(0), 0),
            Step::Setup(i) if i + 1 < self.tracks => self.request(Step::Setup(i + 1), 0),
            Step::Announce | Step::Setup(_) => self.request(Step::Record, 0),
            Step::Record => {
                self.state = State::Recording;
                self.next_keep_alive = Some(now + self.keep_alive);
            }
            Step::KeepAlive | Step::Teardown => {}
        }
    }

    /// Queues the request of `step`; `tries`: how many times it went with credentials before.
    fn request(&mut self, step: Step, tries: u8) {
        self.cseq += 1;
        let (method, uri) = match step {
            Step::Announce => ("ANNOUNCE", self.url.clone()),
            Step::Setup(i) => ("SETUP", format!("{}/trackID={i}", self.url)),
            Step::Record => ("RECORD", self.url.clone()),
            Step::KeepAlive => ("GET_PARAMETER", self.url.clone()),
            Step::Teardown => ("TEARDOWN", self.url.clone()),
        };
        let mut head = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: {USER_AGENT}\r\n",
            self.cseq
        );
        if let Some(auth) = self.authorization(method, &uri) {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        if let (Some(session), false) = (&self.session, step == Step::Announce) {
            head.push_str(&format!("Session: {session}\r\n"));
        }
        let body = match step {
            Step::Announce => {
                head.push_str("Content-Type: application/sdp\r\n");
                self.sdp.as_bytes()
            }
            Step::Setup(i) => {
                head.push_str(&format!(
                    "Transport: RTP/AVP/TCP;unicast;interleaved={}-{};mode=record\r\n",
                    2 * i,
                    2 * i + 1
                ));
                &[][..]
            }
            Step::Record => {
                head.push_str("Range: npt=0.000-\r\n");
                &[][..]
            }
            _ => &[][..],
        };
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.output.extend_from_slice(head.as_bytes());
        self.output.extend_from_slice(body);
        let tries = if self.auth == Auth::None {
            0
        } else {
            tries.max(1)
        };
        self.pending = Some((step, tries));
    }

    fn authorization(&self, method: &str, uri: &str) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{USER}:{}", self.key))
            )),
            Auth::Digest {
                realm,
                nonce,
                opaque,
            } => {
                let ha1 = md5_hex(&[USER, realm, &self.key]);
                let response = md5_hex(&[&ha1, nonce, &md5_hex(&[method, uri])]);
                let opaque = opaque
                    .as_ref()
                    .map_or(String::new(), |o| format!(", opaque=\"{o}\""));
                Some(format!(
                    "Digest username=\"{USER}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                     uri=\"{uri}\", response=\"{response}\", algorithm=MD5{opaque}"
                ))
            }
        }
    }
}

/// The credentials to answer with: Digest (MD5) when a challenge offers it, else Basic when
/// one offers that, else none; and whether the Digest challenge says the last nonce was
/// stale (so answering again is worth it).
fn choose_auth(challenges: &[&str]) -> (Option<Auth>, bool) {
    let mut basic = false;
    for challenge in challenges {
        // A parser may have joined several challenges into one value.
        let lower = challenge.to_ascii_lowercase();
        basic |= lower.trim_start().starts_with("basic") || lower.contains(", basic ");
        let mut from = 0;
        while let Some(at) = lower[from..].find("digest ") {
            let start = from + at + "digest ".len();
            let end = lower[start..]
                .find("basic ")
                .map_or(lower.len(), |e| start + e);
            let params = &challenge[start..end];
            let algorithm = param(params, "algorithm").unwrap_or_else(|| "MD5".into());
            if let (Some(realm), Some(nonce), true) = (
                param(params, "realm"),
                param(params, "nonce"),
                algorithm.eq_ignore_ascii_case("MD5"),
            ) {
                let stale = param(params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
                let opaque = param(params, "opaque");
                return (
                    Some(Auth::Digest {
                        realm,
                        nonce,
                        opaque,
                    }),
                    stale,
                );
            }
            from = start;
        }
    }
    (basic.then_some(Auth::Basic), false)
}

/// The value of `name=` (quoted or not) in a challenge's parameters.
fn param(params: &str, name: &str) -> Option<String> {
    params.split(',').find_map(|p| {
        let (key, value) = p.split_once('=')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "rtsp://127.0.0.2:8554/live/r1";

    fn reply(d: &mut Dialogue, text: &str, now: Instant) {
        d.handle_input(text.replace('\n', "\r\n").as_bytes(), now);
    }

    fn sent(d: &mut Dialogue) -> String {
        String::from_utf8(d.take_output()).unwrap()
    }

    #[test]
    fn announce_setup_record_then_media_and_keep_alive() {
        let now = Instant::now();
        let mut d = Dialogue::new(&format!("{URL}?key=secret"), "k", "v=0\r\n".into(), 2);
        let announce = sent(&mut d);
        assert!(announce.starts_with(&format!("ANNOUNCE {URL} RTSP/1.0\r\nCSeq: 1\r\n")));
        assert!(
            announce.ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")
        );
        assert!(
            !announce.contains("secret"),
            "the key never travels in the URL"
        );

        reply(&mut d, "RTSP/1.0 200 OK\nCSeq: 1\n\n", now);
        let setup = sent(&mut d);
        assert!(setup.starts_with(&format!("SETUP {URL}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\n")));
        assert!(setup.contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"));

        reply(
            &mut d,
            "RTSP/1.0 200 OK\nCSeq: 2\nSession: abc;timeout=10\n\n",
            now,
        );
        let setup = sent(&mut d);
        assert!(
            setup.contains("interleaved=2-3;mode=record") && setup.contains("Session: abc\r\n")
        );
        d.send_rtp(0, &[vec![1, 2, 3]]);
        assert_eq!(d.output_len(), 0, "no media before RECORD is accepted");

        reply(&mut d, "RTSP/1.0 200 OK\nCSeq: 3\nSession: abc\n\n", now);
        assert!(sent(&mut d).starts_with(&format!("RECORD {URL} RTSP/1.0\r\nCSeq: 4\r\n")));
        assert_eq!(d.state(), &State::Starting);
        reply(&mut d, "RTSP/1.0 200 OK\nCSeq: 4\nSession: abc\n\n", now);
        assert_eq!(d.state(), &State::Recording);

        d.send_rtp(1, &[vec![9; 300]]);
        let media = d.take_output();
        assert_eq!(&media[..4], &[b'$', 2, 1, 44]);
        assert_eq!(media.len(), 304);

        assert_eq!(d.poll_timeout(), Some(now + Duration::from_secs(5)));
        d.handle_timeout(now + Duration::from_secs(5));
        assert!(sent(&mut d).starts_with(&format!(
            "GET_PARAMETER {URL} RTSP/1.0\r\nCSeq: 5\r\nUser-Agent"
        )));
        // RTCP from the server and the keep-alive's answer, in one read.
        let mut input = vec![b'$', 1, 0, 2, 0x80, 0xc9];
        input.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 5\r\n\r\n");
        d.handle_input(&input, now);
        assert_eq!(d.state(), &State::Recording);

        d.teardown();
        assert!(sent(&mut d).starts_with(&format!("TEARDOWN {URL} RTSP/1.0\r\nCSeq: 6\r\n")));
        assert_eq!(d.state(), &State::Closed);
        d.send_rtp(0, &[vec![1]]);
        assert_eq!(d.output_len(), 0);
    }

    #[test]
    fn a_digest_challenge_is_answered_with_the_key_once() {
        let now = Instant::now();
        let mut d = Dialogue::new(URL, "key", "v=0\r\n".into(), 1);
        sent(&mut d);
        reply(
            &mut d,
            "RTSP/1.0 401 Unauthorized\nCSeq: 1\nWWW-Authenticate: Digest realm=\"slotcast\", nonce=\"n1\", algorithm=MD5\nWWW-Authenticate: Basic realm=\"slotcast\"\n\n",
            now,
        );
        let again = sent(&mut d);
        // RFC 2617 without qop: MD5(HA1:nonce:MD5(method:uri)).
        let ha1 = md5_hex(&["slotcast", "slotcast", "key"]);
        let expected = md5_hex(&[&ha1, "n1", &md5_hex(&["ANNOUNCE", URL])]);
        assert!(again.starts_with("ANNOUNCE ") && again.contains("CSeq: 2\r\n"));
        assert!(again.contains(&format!(
            "Authorization: Digest username=\"slotcast\", realm=\"slotcast\", nonce=\"n1\", uri=\"{URL}\", response=\"{expected}\""
        )));
        reply(&mut d, "RTSP/1.0 200 OK\nCSeq: 2\n\n", now);
        let setup = sent(&mut d);
        assert!(
            setup.contains("Authorization: Digest")
                && setup.contains(&format!("uri=\"{URL}/trackID=0\""))
        );
        reply(
            &mut d,
            "RTSP/1.0 401 Unauthorized\nCSeq: 3\nSlotcast-Refusal: bad_key\nContent-Length: 16\n\nwrong stream key",
            now,
        );
        assert_eq!(
            d.state(),
            &State::Refused {
                status: 401,
                code: Some(RefusalCode::BadKey),
                reason: "wrong stream key".into()
            },
            "a second 401 is the answer"
        );
    }

    #[test]
    fn basic_only_when_offered_and_digest_with_opaque_and_stale_nonces() {
        assert_eq!(
            choose_auth(&["Basic realm=\"x\""]),
            (Some(Auth::Basic), false)
        );
        assert_eq!(
            choose_auth(&[
                "digest realm=\"r\", nonce=\"n\", opaque=\"o\", stale=TRUE, basic realm=\"r\""
            ]),
            (
                Some(Auth::Digest {
                    realm: "r".into(),
                    nonce: "n".into(),
                    opaque: Some("o".into())
                }),
                true
            )
        );
        assert_eq!(
            choose_auth(&["Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256"]),
            (None, false),
            "never the key in clear unless Basic is asked for"
        );
        let mut d = Dialogue::new(URL, "key", String::new(), 1);
        sent(&mut d);
        reply(
            &mut d,
            "RTSP/1.0 401 Unauthorized\nCSeq: 1\nWWW-Authenticate: Basic realm=\"slotcast\"\n\n",
            Instant::now(),
        );
        assert!(sent(&mut d).contains("Authorization: Basic c2xvdGNhc3Q6a2V5\r\n"));

        // No challenge at all: refused, nothing sent.
        let mut d = Dialogue::new(URL, "key", String::new(), 1);
        sent(&mut d);
        reply(
            &mut d,
            "RTSP/1.0 401 Unauthorized\nCSeq: 1\n\n",
            Instant::now(),
        );
        assert!(
            matches!(d.state(), State::Refused { status: 401, .. }),
            "{:?}",
            d.state()
        );
        assert!(sent(&mut d).is_empty());

        // A stale nonce is answered once more, with the new nonce and the opaque back.
        let mut d = Dialogue::new(URL, "key", String::new(), 1);
        sent(&mut d);
        let challenge = |nonce: &str, stale: bool| {
            format!(
                "WWW-Authenticate: Digest realm=\"slotcast\", nonce=\"{nonce}\", opaque=\"op\"{}\n",
                if stale { ", stale=true" } else { "" }
            )
        };
        let now = Instant::now();
        reply(
            &mut d,
            &format!(
                "RTSP/1.0 401 Unauthorized\nCSeq: 1\n{}\n",
                challenge("n1", false)
            ),
            now,
        );
        assert!(sent(&mut d).contains("nonce=\"n1\""));
        reply(
            &mut d,
            &format!(
                "RTSP/1.0 401 Unauthorized\nCSeq: 2\n{}\n",
                challenge("n2", true)
            ),
            now,
        );
        let again = sent(&mut d);
        assert!(
            again.contains("nonce=\"n2\"") && again.contains("opaque=\"op\""),
            "{again}"
        );
        reply(
            &mut d,
            &format!(
                "RTSP/1.0 401 Unauthorized\nCSeq: 3\n{}\n",
                challenge("n3", true)
            ),
            now,
        );
        assert!(
            matches!(d.state(), State::Refused { status: 401, .. }),
            "no third try"
        );
    }

    #[test]
    fn an_unanswered_keep_alive_fails_the_session_and_late_answers_are_ignored() {
        let now = Instant::now();
        let mut d = Dialogue::new(URL, "k", String::new(), 1);
        for (cseq, extra) in [(1, ""), (2, "Session: s;timeout=4\n"), (3, "")] {
            reply(
                &mut d,
                &format!("RTSP/1.0 200 OK\nCSeq: {cseq}\n{extra}\n"),
                now,
            );
        }
        assert_eq!(d.state(), &State::Recording);
        d.handle_timeout(now + Duration::from_secs(2));
        assert!(sent(&mut d).contains("GET_PARAMETER"));
        // An answer to an older request does not count as the keep-alive's.
        reply(&mut d, "RTSP/1.0 200 OK\nCSeq: 3\n\n", now);
        d.handle_timeout(now + Duration::from_secs(4));
        assert!(
            matches!(d.state(), State::Failed(why) if why.contains("keep-alive")),
            "{:?}",
            d.state()
        );
    }

    #[test]
    fn refusals_carry_the_servers_code_and_reason_and_garbage_fails() {
        let now = Instant::now();
        let refused = |answer: &str| {
            let mut d = Dialogue::new(URL, "key", String::new(), 1);
            reply(&mut d, answer, now);
            d.state().clone()
        };
        assert_eq!(
            refused("RTSP/1.0 403 Forbidden (reservation not open: it opens at 2030-01-01T10:00:00Z)\nCSeq: 1\nSlotcast-Refusal: not_open\nContent-Type: text/plain\nContent-Length: 55\n\nreservation not open: it opens at 2030-01-01T10:00:00Z\n"),
            State::Refused {
                status: 403,
                code: Some(RefusalCode::NotOpen),
                reason: "reservation not open: it opens at 2030-01-01T10:00:00Z".into()
            }
        );
        // The code is read, whatever the words say; header names are case-insensitive.
        assert_eq!(
            refused("RTSP/1.0 403 Forbidden\nCSeq: 1\nslotcast-refusal:  busy \n\n"),
            State::Refused {
                status: 403,
                code: Some(RefusalCode::Busy),
                reason: "Forbidden".into()
            }
        );
        // No header, or a code this build does not know: no code.
        for answer in [
            "RTSP/1.0 404 Not Found\nCSeq: 1\n\n",
            "RTSP/1.0 403 Forbidden\nCSeq: 1\nSlotcast-Refusal: opens_later\n\n",
        ] {
            assert!(
                matches!(refused(answer), State::Refused { code: None, .. }),
                "{answer}"
            );
        }
        let mut d = Dialogue::new(URL, "key", String::new(), 1);
        d.handle_input(b"HTTP/1.1 400 Bad Request\r\n\r\n", now);
        assert!(matches!(d.state(), State::Failed(_)), "{:?}", d.state());
        let mut d = Dialogue::new(URL, "key", String::new(), 1);
        d.handle_input(
            format!("RTSP/1.0 200 OK\r\nX: {}", "a".repeat(MAX_INPUT)).as_bytes(),
            now,
        );
        assert!(matches!(d.state(), State::Failed(_)), "{:?}", d.state());
    }
}
