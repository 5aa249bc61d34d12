//! RTSP/1.0 responses as bytes.
//!
//! Contract: every response carries `CSeq` (when the request had a usable one), `Server:
//! slotcast`, and `Session` once a session exists; an error carries its reason as a
//! `text/plain` body and after the standard reason phrase, where ffmpeg and GStreamer print
//! it. Everything that came from outside (a reason from the host, a client's value) is
//! reduced to printable ASCII here, so no response can be split by a stray CRLF. Written by
//! hand rather than with rtsp-types so the header order is the conventional one.

use std::fmt::Write;

use bytes::Bytes;

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    HeaderFieldsTooLarge,
    SessionNotFound,
    MethodNotValidInThisState,
    UnsupportedTransport,
    InternalServerError,
    NotImplemented,
    VersionNotSupported,
}

impl Status {
    pub(super) fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::HeaderFieldsTooLarge => 431,
            Self::SessionNotFound => 454,
            Self::MethodNotValidInThisState => 455,
            Self::UnsupportedTransport => 461,
            Self::InternalServerError => 500,
            Self::NotImplemented => 501,
            Self::VersionNotSupported => 505,
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::PayloadTooLarge => "Request Entity Too Large",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::SessionNotFound => "Session Not Found",
            Self::MethodNotValidInThisState => "Method Not Valid in This State",
            Self::UnsupportedTransport => "Unsupported Transport",
            Self::InternalServerError => "Internal Server Error",
            Self::NotImplemented => "Not Implemented",
            Self::VersionNotSupported => "RTSP Version Not Supported",
        }
    }
}

/// Longest reason shown after the standard phrase; the body carries it whole.
const MAX_PHRASE_REASON: usize = 120;

#[derive(Clone, Debug)]
pub(super) struct Response {
    status: Status,
    headers: Vec<(&'static str, String)>,
    /// Reason for an error, shown after the phrase and as the body.
    reason: Option<String>,
}

impl Response {
    pub(super) fn new(status: Status) -> Self {
        Self {
            status,
            headers: Vec::new(),
            reason: None,
        }
    }

    pub(super) fn status(&self) -> Status {
        self.status
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, printable(&value.into())));
        self
    }

    pub(super) fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(printable(&reason.into()));
        self
    }

    /// `session`: the id and its timeout in seconds, once a SETUP made one.
    pub(super) fn encode(&self, cseq: Option<u32>, session: Option<(&str, u64)>) -> Bytes {
        let mut out = String::with_capacity(256);
        let phrase = self.status.phrase();
        // Writing to a String cannot fail.
        let _ = match &self.reason {
            Some(reason) if !reason.is_empty() => {
                let short: String = reason.chars().take(MAX_PHRASE_REASON).collect();
                write!(
                    out,
                    "RTSP/1.0 {} {phrase} ({short})\r\n",
                    self.status.code()
                )
            }
            _ => write!(out, "RTSP/1.0 {} {phrase}\r\n", self.status.code()),
        };
        if let Some(cseq) = cseq {
            let _ = write!(out, "CSeq: {cseq}\r\n");
        }
        out.push_str("Server: slotcast\r\n");
        if let Some((id, timeout)) = session {
            let _ = write!(out, "Session: {id};timeout={timeout}\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        match &self.reason {
            Some(reason) if !reason.is_empty() => {
                let _ = write!(
                    out,
                    "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}\n",
                    reason.len() + 1
                );
            }
            _ => out.push_str("\r\n"),
        }
        Bytes::from(out)
    }
}

/// Printable ASCII only: anything else (CR, LF, non-ASCII) becomes a space or `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_whitespace() => ' ',
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ok() {
        let bytes = Response::new(Status::Ok)
            .header("Public", "OPTIONS, ANNOUNCE")
            .encode(Some(3), None);
        assert_eq!(
            &bytes[..],
            b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: slotcast\r\nPublic: OPTIONS, ANNOUNCE\r\n\r\n"
        );
    }

    #[test]
    fn long_reasons_are_cut_in_the_status_line_only() {
        let reason = "x".repeat(200);
        let bytes = Response::new(Status::Forbidden)
            .reason(reason.clone())
            .encode(None, None);
        let text = std::str::from_utf8(&bytes).unwrap();
        let status_line = text.split("\r\n").next().unwrap();
        assert_eq!(
            status_line,
            format!("RTSP/1.0 403 Forbidden ({})", "x".repeat(120))
        );
        assert!(text.ends_with(&format!("\r\n\r\n{reason}\n")));
    }

    #[test]
    fn error_with_reason_cannot_inject_headers() {
        let bytes = Response::new(Status::Forbidden)
            .reason("opens at 12:00\r\nX-Evil: 1")
            .encode(None, Some(("00ff", 60)));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "RTSP/1.0 403 Forbidden (opens at 12:00  X-Evil: 1)\r\nServer: slotcast\r\n\
             Session: 00ff;timeout=60\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n\r\n\
             opens at 12:00  X-Evil: 1\n"
        );
    }
}
