//! What the viewer side tells caches (RFC 9110 §8.8 and §13, RFC 9111), sans-IO: the
//! `Cache-Control` of each kind of answer, strong validators for what it serves, and whether
//! a conditional request is answered 304.
//!
//! Contract: no I/O, no clock. A validator is derived from what identifies the bytes, never
//! from hashing them per request: a file in memory by its playout's identity, its name and
//! length (a name is never reused with other bytes inside one playout); a file on disk by
//! its inode and modification time (read after the bytes), and a segment's number, place
//! and length in it. Inode numbers are reused, so the time is what tells a recording that
//! started over (its files truncated and written again, at least a segment's duration after
//! the old one's last write) from the old one. Two answers with the same tag therefore have
//! the same bytes; the same bytes may carry two tags (from memory, then from disk), which
//! costs a cache one full answer, never a wrong one: a segment served from disk while its
//! recording still grows gets a new tag with every segment appended.

use std::time::{Duration, SystemTime};

/// Init segments, segments and parts never change under their name.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A live playlist changes with every part: a cache may keep it, but must ask again (a 304
/// when nothing changed) before each use.
pub const CACHE_LIVE: &str = "no-cache";
/// An ended playlist (the recording) no longer changes, unless the slot's streamer goes on
/// with it after a restart inside the window: a minute.
pub const CACHE_ENDED: &str = "public, max-age=60";
/// A blocking reload (`_HLS_msn` / `_HLS_part`) answers one viewer's wait: no cache may keep
/// it, so none serves it for a later wait.
pub const CACHE_BLOCKING: &str = "no-store";

/// The validators of one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validators {
    /// A strong entity tag, quotes included.
    pub etag: String,
    pub last_modified: SystemTime,
}

impl Validators {
    /// A file held in memory: `playout` identifies the playout (unique per process start and
    /// playout), `name` the file within it.
    pub fn in_memory(playout: &str, name: &str, len: usize, made: SystemTime) -> Self {
        Self {
            etag: format!("\"m{playout}.{name}.{len:x}\""),
            last_modified: made,
        }
    }

    /// A playlist rendered from a playout at `version`.
    pub fn rendered(playout: &str, version: u64, made: SystemTime) -> Self {
        Self {
            etag: format!("\"p{playout}.{version:x}\""),
            last_modified: made,
        }
    }

    /// A whole file on disk: its inode, modification time and length.
    pub fn in_file(inode: u64, modified: SystemTime, len: u64) -> Self {
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        Self {
            etag: format!("\"f{inode:x}.{nanos:x}.{len:x}\""),
            last_modified: modified,
        }
    }

    /// Segment `msn`, `len` bytes at `offset` in a file of many (its inode, and its
    /// modification time after the bytes were read).
    pub fn in_shared_file(
        inode: u64,
        modified: SystemTime,
        msn: u64,
        offset: u64,
        len: u64,
    ) -> Self {
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        Self {
            etag: format!("\"s{inode:x}.{nanos:x}.{msn:x}.{offset:x}.{len:x}\""),
            last_modified: modified,
        }
    }

    /// `Last-Modified` as an HTTP date.
    pub fn http_date(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// Whether a GET or HEAD with these conditional headers is answered 304 Not Modified (RFC
/// 9110 §13.2.2): `If-None-Match` decides when present (weak comparison, `*` matches); only
/// without it does `If-Modified-Since` count, at one-second precision. A header that cannot
/// be read counts as absent for `If-Modified-Since` and as no match for `If-None-Match`, so
/// a bad one costs a full answer, never a wrong 304. `if_none_match` is every field line
/// of the header, in order.
pub fn not_modified<'a>(
    validators: &Validators,
    if_none_match: impl IntoIterator<Item = &'a [u8]>,
    if_modified_since: Option<&[u8]>,
) -> bool {
    let mut lines = if_none_match.into_iter().peekable();
    if lines.peek().is_some() {
        return lines.any(|line| matches_any(&validators.etag, line));
    }
    let Some(since) = if_modified_since
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return false;
    };
    whole_seconds(validators.last_modified) <= whole_seconds(since)
}

fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether one `If-None-Match` line (`*`, or entity tags separated by commas) holds `etag`.
fn matches_any(etag: &str, line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    if line.trim() == "*" {
        return true;
    }
    let opaque = etag.trim_start_matches("W/");
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = tag.strip_prefix('"') else {
            return false;
        };
        let Some(end) = inner.find('"') else {
            return false;
        };
        if tag[..end + 2] == *opaque {
            return true;
        }
        rest = &inner[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn v() -> Validators {
        Validators::in_memory("18f3a", "seg-7.m4s", 259_000, at(1_800_000_000))
    }

    #[test]
    fn tags_name_what_identifies_the_bytes() {
        assert_eq!(v().etag, "\"m18f3a.seg-7.m4s.3f3b8\"");
        assert_eq!(
            Validators::rendered("18f3a", 255, at(0)).etag,
            "\"p18f3a.ff\""
        );
        let file = Validators::in_file(0x1234, at(1) + Duration::from_nanos(5), 0x20);
        assert_eq!(file.etag, "\"f1234.3b9aca05.20\"");
        let segment = Validators::in_shared_file(0x1234, at(1), 7, 0x10, 0x20);
        assert_eq!(segment.etag, "\"s1234.3b9aca00.7.10.20\"");
        assert_eq!(v().http_date(), "Fri, 15 Jan 2027 08:00:00 GMT");
    }

    #[test]
    fn if_none_match_decides_with_weak_comparison() {
        let tag = v().etag;
        let none: [&[u8]; 0] = [];
        let yes: &[&str] = &[
            &tag,
            "*",
            &format!("W/{tag}"),
            &format!("\"other\", {tag}"),
            &format!("\"a,b\" ,\t{tag}"),
        ];
        for line in yes {
            assert!(not_modified(&v(), [line.as_bytes()], None), "{line}");
        }
        // Split over two field lines.
        assert!(not_modified(&v(), [&b"\"x\""[..], tag.as_bytes()], None));
        for line in [
            "\"other\"",
            "",
            "m18f3a.seg-7.m4s.3f3b8",
            "\"m18f3a.seg-7.m4s.3f3b8",
            "W/",
        ] {
            assert!(!not_modified(&v(), [line.as_bytes()], None), "{line:?}");
        }
        assert!(!not_modified(&v(), [&b"\xff"[..]], None));
        // A tag that does not match wins over a date that would.
        let later = b"Sat, 16 Jan 2027 00:00:00 GMT";
        assert!(!not_modified(&v(), [&b"\"other\""[..]], Some(later)));
        assert!(not_modified(&v(), none, Some(later)));
    }

    #[test]
    fn if_modified_since_counts_whole_seconds_and_ignores_bad_dates() {
        let none: [&[u8]; 0] = [];
        let cases: &[(&str, bool)] = &[
            ("Fri, 15 Jan 2027 08:00:00 GMT", true),
            ("Fri, 15 Jan 2027 08:00:01 GMT", true),
            ("Fri, 15 Jan 2027 07:59:59 GMT", false),
            // The obsolete forms a recipient must read (RFC 9110 §5.6.7).
            ("Friday, 15-Jan-27 08:00:00 GMT", true),
            ("Fri Jan 15 08:00:00 2027", true),
            ("yesterday", false),
            ("", false),
        ];
        for (date, fresh) in cases {
            assert_eq!(
                not_modified(&v(), none, Some(date.as_bytes())),
                *fresh,
                "{date}"
            );
        }
        let made_mid_second =
            Validators::in_memory("a", "b", 1, at(1_800_000_000) + Duration::from_millis(700));
        assert!(not_modified(
            &made_mid_second,
            none,
            Some(b"Fri, 15 Jan 2027 08:00:00 GMT")
        ));
        assert!(!not_modified(&v(), none, None));
    }
}
