//! A whole publish session over arbitrary input: the first bytes choose how the rest is cut
//! into reads (and which reads are UDP datagrams and timeouts), so requests split anywhere and
//! media interleave with them. The session never panics, answers only requests, and once it
//! has said `Close` says nothing more.
#![no_main]

use std::time::{Duration, Instant};

use slotcast_domain::contract::RefusalCode;
use slotcast_streamer::rtsp::{
    Admission, Credential, Host, Output, Refusal, Session, SessionConfig,
};

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

    fn offers_digest(&mut self, reservation_id: &str) -> bool {
        reservation_id == "r1"
    }

    fn bind_udp(&mut self, track: usize) -> Result<(u16, u16), String> {
        if track > 8 {
            return Err("no ports".into());
        }
        let rtp = 20_000 + 2 * track as u16;
        Ok((rtp, rtp + 1))
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&plan, rest)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let config = SessionConfig {
        digest_nonce: (plan & 1 == 1).then(|| "0123456789abcdef".to_string()),
        ..SessionConfig::default()
    };
    let mut session = Session::new(config, start);
    let mut host = Gate;
    let chunk = 1 + usize::from(plan >> 1);
    let mut closed = false;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 10);
        match piece[0] % 16 {
            0 => session.handle_udp(now, usize::from(piece[0] >> 4), false, piece),
            1 => session.handle_timeout(now + Duration::from_secs(120)),
            _ => session.handle_input(now, piece, &mut host),
        }
        while let Some(output) = session.poll_output() {
            assert!(!closed, "output after Close: {output:?}");
            if matches!(output, Output::Close(_)) {
                closed = true;
            }
        }
    }
});
