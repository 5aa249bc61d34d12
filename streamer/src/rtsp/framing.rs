//! Framing of the RTSP-over-TCP input: where the next message ends, or why it never will.
//!
//! Contract: [`parse`] looks only at the front of the buffer and answers "complete frame of
//! this length", "need more bytes" or "bad bytes". It never looks past the limits, and a
//! verdict of "bad" on some bytes is also the verdict on every longer input starting with
//! them, so feeding a connection byte by byte gives the same answers as feeding it at once.
//! It copies nothing; the session splits the buffer by the lengths given here. The request
//! itself is parsed later (by rtsp-types) on exactly the bytes framed here, which is why the
//! header-size limit and `Content-Length` are enforced here, before rtsp-types sees anything.

/// The limits framing enforces, already reconciled with the input-buffer bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_buffered_bytes: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parse {
    Complete(Frame),
    /// Need more bytes.
    Incomplete,
    Invalid(Invalid),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// Blank lines between messages (some clients send CRLF as a keep-alive): skip them.
    Skip(usize),
    /// `$ <channel> <len u16> <len bytes>`: 4 + `len` bytes in all.
    Interleaved { channel: u8, len: usize },
    /// A request: `head_len` bytes through the blank line, then `body_len` bytes of body.
    Request { head_len: usize, body_len: usize },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Invalid {
    /// Neither `$` framing nor the beginning of an RTSP request line.
    NotRtsp(&'static str),
    /// No blank line within the header limit.
    HeaderTooLarge,
    /// `Content-Length` over the body limit (the announced length).
    BodyTooLarge(usize),
    /// `Content-Length` that is not a number, or two that disagree.
    BadContentLength,
    /// An interleaved frame longer than the input buffer may hold.
    FrameTooLarge(usize),
}

const MAX_METHOD_LEN: usize = 32;

pub(super) fn parse(buf: &[u8], limits: &Limits) -> Parse {
    let Some(&first) = buf.first() else {
        return Parse::Incomplete;
    };
    match first {
        b'$' => interleaved(buf, limits),
        b'\r' => match buf.get(1) {
            None => Parse::Incomplete,
            Some(b'\n') => Parse::Complete(Frame::Skip(2)),
            Some(_) => Parse::Invalid(Invalid::NotRtsp("CR without LF")),
        },
        _ => request(buf, limits),
    }
}

fn interleaved(buf: &[u8], limits: &Limits) -> Parse {
    let [_, channel, hi, lo, ..] = *buf else {
        return Parse::Incomplete;
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if 4 + len > limits.max_buffered_bytes {
        return Parse::Invalid(Invalid::FrameTooLarge(len));
    }
    if buf.len() < 4 + len {
        return Parse::Incomplete;
    }
    Parse::Complete(Frame::Interleaved { channel, len })
}

fn request(buf: &[u8], limits: &Limits) -> Parse {
    // Everything about the head is decided within this window, so the verdict does not depend
    // on how much more the client has already sent.
    let head_limit = limits.max_header_bytes.min(limits.max_buffered_bytes);
    let window = &buf[..buf.len().min(head_limit)];
    let line_end = match request_line(window) {
        Err(why) => return Parse::Invalid(Invalid::NotRtsp(why)),
        Ok(end) => end,
    };
    // The blank line may start at the request line's own CRLF (a request without headers).
    let head_len =
        line_end.and_then(|end| find(&window[end - 2..], b"\r\n\r\n").map(|at| end - 2 + at + 4));
    let Some(head_len) = head_len else {
        return if window.len() >= head_limit {
            Parse::Invalid(Invalid::HeaderTooLarge)
        } else {
            Parse::Incomplete
        };
    };
    let body_len = match content_length(&buf[..head_len]) {
        Ok(len) => len,
        Err(invalid) => return Parse::Invalid(invalid),
    };
    let body_limit = limits
        .max_body_bytes
        .min(limits.max_buffered_bytes.saturating_sub(head_len));
    if body_len > body_limit {
        return Parse::Invalid(Invalid::BodyTooLarge(body_len));
    }
    if buf.len() < head_len + body_len {
        return Parse::Incomplete;
    }
    Parse::Complete(Frame::Request { head_len, body_len })
}

/// Checks that `buf` begins like `METHOD SP URI SP RTSP/1.0 CRLF` (or 2.0, which is answered
/// 505 later). `Ok(Some(n))`: the line is complete, `n` bytes with its CRLF; `Ok(None)`: fine
/// so far. Byte by byte, so a bad prefix is caught without waiting for the line to end.
fn request_line(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    #[derive(Clone, Copy)]
    enum Part {
        Method,
        Uri,
        Version,
        Lf,
    }
    let mut part = Part::Method;
    let mut n = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        match part {
            Part::Method if is_token(b) => {
                n += 1;
                if n > MAX_METHOD_LEN {
                    return Err("method name too long");
                }
            }
            Part::Method if b == b' ' && n > 0 => (part, n) = (Part::Uri, 0),
            Part::Method => return Err("not an RTSP request line"),
            Part::Uri if b.is_ascii_graphic() => n += 1,
            Part::Uri if b == b' ' && n > 0 => (part, n) = (Part::Version, 0),
            Part::Uri => return Err("bad character in the request URI"),
            Part::Version if n < 8 => {
                // "RTSP/1.0" and "RTSP/2.0" differ only at index 5.
                if b != b"RTSP/1.0"[n] && b != b"RTSP/2.0"[n] {
                    return Err("not an RTSP version");
                }
                n += 1;
            }
            Part::Version if b == b'\r' => part = Part::Lf,
            Part::Version => return Err("not an RTSP version"),
            Part::Lf if b == b'\n' => return Ok(Some(i + 1)),
            Part::Lf => return Err("request line not ended by CRLF"),
        }
    }
    Ok(None)
}

/// RFC 7230 token characters (method names, header names).
pub(super) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The complete header lines of a head (request line, blank line and any unfinished last line
/// excluded), as (name, value) with the value trimmed. Continuation lines are skipped: nothing
/// we read from the head ourselves (`Content-Length`, `CSeq`) may be folded.
pub(super) fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let complete = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    head[..complete]
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty() && line[0] != b' ' && line[0] != b'\t')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
}

fn content_length(head: &[u8]) -> Result<usize, Invalid> {
    let mut found: Option<usize> = None;
    for (name, value) in header_lines(head) {
        if !name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        // Digits only (Rust's parser would also take a '+'), and few enough that the number
        // cannot overflow: any real length is far below the limits anyway.
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(Invalid::BadContentLength);
        }
        let len = value
            .iter()
            .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
        if found.is_some_and(|prev| prev != len) {
            return Err(Invalid::BadContentLength);
        }
        found = Some(len);
    }
    Ok(found.unwrap_or(0))
}

/// The `CSeq` of a head, complete or not, if it is there and a number: lets an answer to a
/// request we could not take still echo it.
pub(super) fn cseq_in(head: &[u8]) -> Option<u32> {
    header_lines(head)
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"cseq"))
        .find_map(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 64,
        max_body_bytes: 16,
        max_buffered_bytes: 128,
    };

    fn p(buf: &[u8]) -> Parse {
        parse(buf, &LIMITS)
    }

    #[test]
    fn complete_frames() {
        assert_eq!(
            p(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\nrest"),
            Parse::Complete(Frame::Request {
                head_len: 31,
                body_len: 0
            })
        );
        assert_eq!(
            p(b"OPTIONS * RTSP/1.0\r\n\r\n"),
            Parse::Complete(Frame::Request {
                head_len: 22,
                body_len: 0
            })
        );
        assert_eq!(
            p(b"SET_PARAMETER * RTSP/1.0\r\ncontent-length: 3\r\n\r\nabcd"),
            Parse::Complete(Frame::Request {
                head_len: 47,
                body_len: 3
            })
        );
        assert_eq!(
            p(b"$\x01\x00\x02ab$"),
            Parse::Complete(Frame::Interleaved { channel: 1, len: 2 })
        );
        assert_eq!(p(b"\r\nOPTIONS"), Parse::Complete(Frame::Skip(2)));
    }

    #[test]
    fn every_prefix_of_a_good_message_is_incomplete() {
        let msgs: [&[u8]; 3] = [
            b"SET_PARAMETER * RTSP/1.0\r\nContent-Length: 3\r\nCSeq: 2\r\n\r\nabc",
            b"$\x00\x00\x03abc",
            b"\r\n",
        ];
        for msg in msgs {
            for end in 0..msg.len() {
                assert_eq!(p(&msg[..end]), Parse::Incomplete, "{:?}", &msg[..end]);
            }
            assert!(matches!(p(msg), Parse::Complete(_)));
        }
    }

    #[test]
    fn bad_bytes_are_caught_early_and_stay_bad() {
        let table: [(&[u8], Invalid); 10] = [
            (
                b"\x16\x03\x01",
                Invalid::NotRtsp("not an RTSP request line"),
            ),
            (
                b"GET / HTTP/1.1\r\n",
                Invalid::NotRtsp("not an RTSP version"),
            ),
            (
                b"OPTIONS  *",
                Invalid::NotRtsp("bad character in the request URI"),
            ),
            (
                b"RTSP/1.0 200 OK\r\n",
                Invalid::NotRtsp("not an RTSP request line"),
            ),
            (
                b"OPTIONS * RTSP/1.0\n",
                Invalid::NotRtsp("not an RTSP version"),
            ),
            (
                b"OPTIONS * RTSP/1.0\rX",
                Invalid::NotRtsp("request line not ended by CRLF"),
            ),
            (b"\r\r", Invalid::NotRtsp("CR without LF")),
            (
                b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n",
                Invalid::BadContentLength,
            ),
            (
                b"OPTIONS * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Invalid::BadContentLength,
            ),
            (
                b"OPTIONS * RTSP/1.0\r\nContent-Length: 17\r\n\r\n",
                Invalid::BodyTooLarge(17),
            ),
        ];
        for (input, want) in table {
            assert_eq!(p(input), Parse::Invalid(want), "{:?}", input);
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"\r\n\r\nOPTIONS * RTSP/1.0\r\n\r\n");
            assert!(matches!(p(&longer), Parse::Invalid(_)), "{:?}", input);
        }
    }

    #[test]
    fn header_limit_is_decided_within_the_limit() {
        let mut head = b"OPTIONS * RTSP/1.0\r\nX-Pad: ".to_vec();
        head.resize(63, b'a');
        assert_eq!(p(&head), Parse::Incomplete);
        head.push(b'a');
        assert_eq!(p(&head), Parse::Invalid(Invalid::HeaderTooLarge));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(p(&head), Parse::Invalid(Invalid::HeaderTooLarge));
        // Exactly at the limit is fine.
        let mut fits = b"OPTIONS * RTSP/1.0\r\nX-Pad: ".to_vec();
        fits.resize(60, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            p(&fits),
            Parse::Complete(Frame::Request {
                head_len: 64,
                body_len: 0
            })
        );
    }

    #[test]
    fn interleaved_frames_are_bounded_by_the_buffer() {
        assert_eq!(p(b"$\x00\x00\x7c"), Parse::Incomplete);
        assert_eq!(
            p(b"$\x00\x00\x7d"),
            Parse::Invalid(Invalid::FrameTooLarge(125))
        );
    }

    #[test]
    fn cseq_is_found_in_partial_heads() {
        assert_eq!(cseq_in(b"OPTIONS * RTSP/1.0\r\ncseq:  7 \r\nX-A"), Some(7));
        // An unfinished line may be cut mid-number.
        assert_eq!(cseq_in(b"OPTIONS * RTSP/1.0\r\nCSeq: 1"), None);
        assert_eq!(cseq_in(b"OPTIONS * RTSP/1.0\r\nCSeq: x\r\n"), None);
        assert_eq!(cseq_in(b"OPTIONS * RTSP/1.0\r\n"), None);
    }
}
