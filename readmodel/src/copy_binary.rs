//! Postgres's binary `COPY` format, both ways, for the bulk rebuild (and the audit's reader): rows encoded for
//! `COPY … FROM STDIN (FORMAT binary)` and tuples split out of `COPY … TO STDOUT (FORMAT
//! binary)`.
//!
//! Contract: pure (no I/O). Values are encoded exactly as sqlx binds them (a timestamp as
//! whole microseconds since 2000-01-01, cut toward zero as sqlx cuts it; `jsonb` as version 1
//! and the JSON text), so a row copied in equals the row the per-event SQL would have written.
//! The reader takes the stream in whatever chunks it comes, and answers "need more bytes"
//! (`None`) apart from "bad bytes" (an error naming what was wrong).

use chrono::{DateTime, NaiveDate, Utc};

/// The 11-byte signature, then flags and the header extension's length (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the data.
const TRAILER: &[u8] = &[0xff, 0xff];

/// Rows for one `COPY … FROM STDIN (FORMAT binary)`.
pub(crate) struct CopyIn {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyIn {
    pub fn new() -> Self {
        Self {
            buf: HEADER.to_vec(),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // A field longer than 2 GiB cannot be a read-model value (text is bounded by the
        // domain); Postgres would refuse the row anyway.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.field(&[u8::from(value)])
    }

    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.field(&micros_since_2000(value).to_be_bytes())
    }

    pub fn opt_timestamptz(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// `jsonb`: the format version (1), then the JSON text.
    pub fn jsonb(&mut self, json: &str) -> &mut Self {
        let len = i32::try_from(json.len() + 1).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
        self
    }

    /// The whole data, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(TRAILER);
        self.buf
    }
}

/// Microseconds since 2000-01-01 00:00 UTC, as sqlx computes them (`TimeDelta::num_microseconds`,
/// which cuts toward zero). Out of its range (±292,000 years) it saturates; no slotcast time
/// comes near.
pub(crate) fn micros_since_2000(value: DateTime<Utc>) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2000-01-01 00:00 is a valid date and time");
    (value.naive_utc() - epoch)
        .num_microseconds()
        .unwrap_or(if value.naive_utc() < epoch {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// Why binary `COPY` output could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyOutError {
    #[error("COPY output does not start with the binary signature")]
    Signature,
    #[error("COPY output has a tuple of {got} fields where {want} were asked for")]
    Fields { want: usize, got: i16 },
    #[error("COPY output has a field of negative length {0}")]
    Length(i32),
    #[error("COPY output ends inside a tuple")]
    Truncated,
}

/// Splits binary `COPY … TO STDOUT` output into tuples of `fields` fields, as the bytes come.
pub struct CopyOut {
    fields: usize,
    buf: Vec<u8>,
    /// Where the next tuple starts in `buf`.
    at: usize,
    header_seen: bool,
    ended: bool,
}

/// One tuple: each field's bytes, `None` for NULL.
pub type Tuple<'a> = Vec<Option<&'a [u8]>>;

impl CopyOut {
    pub fn new(fields: usize) -> Self {
        Self {
            fields,
            buf: Vec::new(),
            at: 0,
            header_seen: false,
            ended: false,
        }
    }

    /// Appends a chunk as it came from the server.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > (1 << 20) {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the trailer has been read.
    #[cfg(test)]
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Checks that the data ended where a tuple could end, once the server is done.
    pub fn finish(&self) -> Result<(), CopyOutError> {
        if self.ended && self.at == self.buf.len() {
            Ok(())
        } else {
            Err(CopyOutError::Truncated)
        }
    }

    /// The next whole tuple, `Ok(None)` when more bytes are needed (or the trailer was read).
    pub fn next_tuple(&mut self) -> Result<Option<Tuple<'_>>, CopyOutError> {
        if self.ended {
            return Ok(None);
        }
        if !self.header_seen {
            // Signature (11), flags (4), extension length (4), then the extension.
            let Some(head) = self.buf.get(self.at..self.at + 19) else {
                return Ok(None);
            };
            if head[..11] != HEADER[..11] {
                return Err(CopyOutError::Signature);
            }
            let ext = i32::from_be_bytes([head[15], head[16], head[17], head[18]]);
            let ext = usize::try_from(ext).map_err(|_| CopyOutError::Length(ext))?;
            if self.buf.len() < self.at + 19 + ext {
                return Ok(None);
            }
            self.at += 19 + ext;
            self.header_seen = true;
        }
        let bytes = &self.buf[self.at..];
        let Some(count) = bytes.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.ended = true;
            self.at += 2;
            return Ok(None);
        }
        if usize::try_from(count).ok() != Some(self.fields) {
            return Err(CopyOutError::Fields {
                want: self.fields,
                got: count,
            });
        }
        let mut spans = Vec::with_capacity(self.fields);
        let mut pos = 2;
        for _ in 0..self.fields {
            let Some(len) = bytes.get(pos..pos + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            pos += 4;
            if len == -1 {
                spans.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| CopyOutError::Length(len))?;
            if bytes.len() < pos + len {
                return Ok(None);
            }
            spans.push(Some((pos, len)));
            pos += len;
        }
        let start = self.at;
        self.at += pos;
        let buf = &self.buf[start..start + pos];
        Ok(Some(
            spans
                .into_iter()
                .map(|span| span.map(|(p, l)| &buf[p..p + l]))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_timestamp_is_microseconds_since_2000_cut_toward_zero() {
        let t = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(micros_since_2000(t), 1_000_000);
        let t = Utc.timestamp_opt(946_684_800, 1_999).unwrap();
        assert_eq!(micros_since_2000(t), 1, "1.999 µs after the epoch");
        let t = Utc.timestamp_opt(946_684_799, 999_999_001).unwrap();
        assert_eq!(
            micros_since_2000(t),
            0,
            "0.999 µs before: toward zero, as sqlx"
        );
    }

    #[test]
    fn rows_are_framed_as_postgres_reads_them() {
        let mut copy = CopyIn::new();
        copy.row(3).text("ab").opt_text(None).bool(true);
        let bytes = copy.finish();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0, 3, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 1, 1, 0xff, 0xff]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn output_is_read_in_any_chunking() {
        let mut copy = CopyIn::new();
        copy.row(2).text("first").int8(7);
        copy.row(2).opt_text(None).jsonb("{}");
        let bytes = copy.finish();
        for split in 0..bytes.len() {
            let mut out = CopyOut::new(2);
            let mut got: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            for chunk in [&bytes[..split], &bytes[split..]] {
                out.push(chunk);
                while let Some(tuple) = out.next_tuple().unwrap() {
                    got.push(tuple.into_iter().map(|f| f.map(<[u8]>::to_vec)).collect());
                }
            }
            assert!(out.ended(), "split at {split}");
            out.finish().unwrap();
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0][0].as_deref(), Some(&b"first"[..]));
            assert_eq!(got[0][1].as_deref(), Some(&7i64.to_be_bytes()[..]));
            assert_eq!(got[1][0], None);
            assert_eq!(got[1][1].as_deref(), Some(&b"\x01{}"[..]));
        }
    }

    #[test]
    fn bad_output_is_named() {
        let mut out = CopyOut::new(2);
        out.push(b"PGCOPY\n\xff\r\n\0");
        assert_eq!(out.next_tuple(), Ok(None), "the header is not whole yet");
        let mut out = CopyOut::new(2);
        out.push(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        assert_eq!(out.next_tuple(), Err(CopyOutError::Signature));
        let mut out = CopyOut::new(2);
        out.push(HEADER);
        out.push(&[0, 3]);
        assert_eq!(
            out.next_tuple(),
            Err(CopyOutError::Fields { want: 2, got: 3 })
        );
        let mut out = CopyOut::new(1);
        out.push(HEADER);
        out.push(&[0, 1, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(out.next_tuple(), Err(CopyOutError::Length(-2)));
        let mut out = CopyOut::new(1);
        out.push(HEADER);
        out.push(&[0, 1, 0, 0, 0, 4, b'a']);
        assert_eq!(out.next_tuple(), Ok(None));
        assert_eq!(out.finish(), Err(CopyOutError::Truncated));
    }
}
