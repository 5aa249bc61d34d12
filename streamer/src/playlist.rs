//! The LL-HLS media playlist writer (RFC 8216bis, with low-latency parts), sans-IO.
//!
//! Contract: a [`Playlist`] is told what the segmenter produced (`push_part`,
//! `finish_segment`, `discontinuity`, `end`) and renders `index.m3u8` text from that alone:
//! no clock, no files, no sockets. It is an EVENT playlist: segments are never dropped, so
//! the recording stays playable as VOD at the same URL once `EXT-X-ENDLIST` is written. Parts
//! are listed for the last [`Playlist::PART_SEGMENTS`] segments only, as the spec advises.
//! [`Playlist::readiness`] answers a blocking reload (`_HLS_msn` / `_HLS_part`).

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// One partial segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub duration: Duration,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// A segment: complete, or the one being cut (its parts so far).
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
    /// Set once complete.
    duration: Option<Duration>,
    /// Wall time of its first frame, on the server clock.
    program_date_time: DateTime<Utc>,
    /// The publisher reconnected (or the source changed) before this segment.
    discontinuity: bool,
    /// Which init segment (`EXT-X-MAP`) its media needs.
    init: u32,
}

/// What a blocking playlist request should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist holds the requested segment or part: answer now.
    Ready,
    /// Not yet: hold the request until the next change (bounded by the caller).
    Wait,
    /// More than two segments ahead of the live edge, or a part without a segment: 400.
    TooFarAhead,
}

#[derive(Clone, Debug)]
pub struct Playlist {
    /// Nominal segment length (`EXT-X-TARGETDURATION` is at least its ceiling).
    target: Duration,
    part_target: Duration,
    segments: Vec<Segment>,
    /// The target duration the recording's journal declares, once written.
    journal_target: Option<u64>,
    pending_discontinuity: bool,
    init: u32,
    ended: bool,
}

impl Playlist {
    /// How many of the newest segments list their parts.
    pub const PART_SEGMENTS: usize = 3;

    pub fn new(target: Duration, part_target: Duration) -> Self {
        Self {
            target,
            part_target,
            segments: Vec::new(),
            journal_target: None,
            pending_discontinuity: false,
            init: 0,
            ended: false,
        }
    }

    /// The playlist a recording's journal ([`Self::journal`]) lists, to go on from after a
    /// restart: its complete segments, in order, up to the first line it cannot take (a line
    /// torn by the crash, a gap in the numbers). `None` if it lists no segment. The next
    /// media gets a new init and a discontinuity ([`Self::new_init`]).
    pub fn resume(target: Duration, part_target: Duration, journal: &str) -> Option<Self> {
        let mut playlist = Self::new(target, part_target);
        // A last line without its newline may be torn.
        let whole = journal.rsplit_once('\n').map_or("", |(whole, _)| whole);
        let (mut discontinuity, mut init, mut date) = (false, 0u32, None);
        let mut duration = None;
        for line in whole.lines() {
            if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=") {
                match parse_init_uri(uri.trim_matches('"')) {
                    Some(n) => init = n,
                    None => break,
                }
            } else if let Some(at) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                match DateTime::parse_from_rfc3339(at) {
                    Ok(at) => date = Some(at.with_timezone(&Utc)),
                    Err(_) => break,
                }
            } else if let Some(extinf) = line.strip_prefix("#EXTINF:") {
                match extinf.trim_end_matches(',').parse::<f64>() {
                    Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 3600.0 => {
                        duration = Some(Duration::from_secs_f64(secs));
                    }
                    _ => break,
                }
            } else if let Some(msn) = parse_segment(line) {
                let (Some(d), true) = (duration.take(), msn == playlist.next_msn()) else {
                    break;
                };
                // A segment's date is written only where the timeline starts over.
                let after_last = playlist
                    .segments
                    .last()
                    .and_then(|s| Some(s.program_date_time + s.duration?));
                let Some(program_date_time) = date.take().or(after_last) else {
                    break;
                };
                playlist.segments.push(Segment {
                    msn,
                    parts: Vec::new(),
                    duration: Some(d),
                    program_date_time,
                    discontinuity: std::mem::take(&mut discontinuity),
                    init,
                });
            }
        }
        playlist.init = playlist.segments.last()?.init;
        Some(playlist)
    }

    /// A part was cut. The first part of a segment opens it, stamped `at` (server clock).
    pub fn push_part(&mut self, part: Part, at: DateTime<Utc>) {
        if self.ended {
            return;
        }
        let open = matches!(self.segments.last(), Some(s) if s.duration.is_none());
        if !open {
            let msn = self.next_msn();
            self.segments.push(Segment {
                msn,
                parts: Vec::new(),
                duration: None,
                program_date_time: at,
                discontinuity: std::mem::take(&mut self.pending_discontinuity),
                init: self.init,
            });
        }
        if let Some(segment) = self.segments.last_mut() {
            segment.parts.push(part);
        }
    }

    /// The open segment is complete; its duration is the sum of its parts.
    pub fn finish_segment(&mut self) {
        if let Some(segment) = self.segments.last_mut() {
            if segment.duration.is_none() {
                segment.duration = Some(segment.parts.iter().map(|p| p.duration).sum());
            }
        }
    }

    /// The next segment starts a new timeline (the publisher reconnected).
    pub fn discontinuity(&mut self) {
        self.finish_segment();
        if !self.segments.is_empty() {
            self.pending_discontinuity = true;
        }
    }

    /// The media from the next part on needs a new init segment (a publisher connected, or
    /// its codec parameters changed): a discontinuity with its own `EXT-X-MAP`. Returns the
    /// init's number, for [`init_uri`].
    pub fn new_init(&mut self) -> u32 {
        if self.segments.is_empty() {
            return self.init;
        }
        self.discontinuity();
        self.init += 1;
        self.init
    }

    /// The window closed: finish what is open and write `EXT-X-ENDLIST` from now on.
    pub fn end(&mut self) {
        self.finish_segment();
        self.ended = true;
    }

    /// Whether any segment (complete or being cut) is listed.
    pub fn has_segments(&self) -> bool {
        !self.segments.is_empty()
    }

    /// The number after the newest listed segment's (the next segment's, once the newest
    /// is complete).
    pub fn next_msn(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.msn + 1)
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next part the segmenter will write, as `(msn, part index)`: the preload hint.
    fn next_part(&self) -> (u64, usize) {
        match self.segments.last() {
            Some(s) if s.duration.is_none() => (s.msn, s.parts.len()),
            Some(s) => (s.msn + 1, 0),
            None => (0, 0),
        }
    }

    /// Whether a request for `msn` (and `part` of it, if given) can be answered.
    pub fn readiness(&self, msn: u64, part: Option<usize>) -> Readiness {
        if self.ended {
            return Readiness::Ready;
        }
        let (next_msn, next_part) = self.next_part();
        if msn > next_msn + 2 {
            return Readiness::TooFarAhead;
        }
        // Every segment before the one being cut is complete.
        let there = match part {
            None => msn < next_msn,
            Some(p) => msn < next_msn || (msn == next_msn && p < next_part),
        };
        if there {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// `index.m3u8`.
    pub fn render(&self) -> String {
        let longest = self.longest();
        let mut out = String::with_capacity(256 + self.segments.len() * 64);
        self.head(&mut out, longest, true);
        let with_parts = self.segments.len().saturating_sub(Self::PART_SEGMENTS);
        for i in 0..self.segments.len() {
            self.segment_lines(&mut out, i, i >= with_parts && !self.ended);
        }
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        } else {
            let (msn, p) = self.next_part();
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                part_uri(msn, p)
            );
        }
        out
    }

    /// What the recording's `index.m3u8` needs now that the newest segment is complete
    /// (`None` while it is still being cut). While live, that file is a journal: an EVENT
    /// playlist without parts, which the writer appends each segment's lines to. It is
    /// written whole instead ([`Journal::Replace`]) for the first segment, for a segment
    /// longer than the target duration the journal declares, and when `rewrite` asks (a
    /// batch of the recording was lost). [`Self::render`] replaces it at the close.
    pub fn journal(&mut self, rewrite: bool) -> Option<Journal> {
        let last = self.segments.len().checked_sub(1)?;
        let duration = self.segments[last].duration?;
        let needed = whole_seconds(duration);
        match self.journal_target {
            Some(target) if !rewrite && needed <= target => {
                let mut lines = String::with_capacity(128);
                self.segment_lines(&mut lines, last, false);
                Some(Journal::Append(lines))
            }
            _ => {
                let longest = self.longest();
                self.journal_target = Some(whole_seconds(longest));
                let mut out = String::with_capacity(256 + self.segments.len() * 64);
                self.head(&mut out, longest, false);
                for i in 0..self.segments.len() {
                    self.segment_lines(&mut out, i, false);
                }
                Some(Journal::Replace(out))
            }
        }
    }

    /// The longest complete segment, or the nominal target if longer.
    fn longest(&self) -> Duration {
        self.segments
            .iter()
            .filter_map(|s| s.duration)
            .chain([self.target])
            .max()
            .unwrap_or(self.target)
    }

    fn head(&self, out: &mut String, longest: Duration, low_latency: bool) {
        let target = whole_seconds(longest);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        if low_latency {
            let part = self.part_target.as_secs_f64();
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part:.3}");
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
                part * 3.0
            );
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0");
    }

    /// Segment `i`'s lines: its discontinuity, map and date where they change, its parts if
    /// asked, and its `EXTINF` once complete.
    fn segment_lines(&self, out: &mut String, i: usize, with_parts: bool) {
        let s = &self.segments[i];
        if s.discontinuity {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if i == 0 || self.segments[i - 1].init != s.init {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(s.init));
        }
        if i == 0 || s.discontinuity {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                s.program_date_time
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
        if with_parts {
            for (p, part) in s.parts.iter().enumerate() {
                let independent = if part.independent {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.3},URI=\"{}\"{independent}",
                    part.duration.as_secs_f64(),
                    part_uri(s.msn, p)
                );
            }
        }
        if let Some(d) = s.duration {
            let _ = writeln!(out, "#EXTINF:{:.3},", d.as_secs_f64());
            let _ = writeln!(out, "{}", segment_uri(s.msn));
        }
    }
}

/// `EXT-X-TARGETDURATION` for segments up to `longest`: its whole seconds, rounded up.
fn whole_seconds(longest: Duration) -> u64 {
    longest.as_secs_f64().ceil().max(1.0) as u64
}

/// The recording's `index.m3u8` while live ([`Playlist::journal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Journal {
    /// Lines to append.
    Append(String),
    /// The whole journal, to write in place of the old one.
    Replace(String),
}

/// `init.mp4` for the first publisher, `init-<n>.mp4` after the n-th new init.
pub fn init_uri(n: u32) -> String {
    if n == 0 {
        "init.mp4".into()
    } else {
        format!("init-{n}.mp4")
    }
}

/// `init.mp4` → 0, `init-<n>.mp4` → n.
fn parse_init_uri(uri: &str) -> Option<u32> {
    if uri == "init.mp4" {
        return Some(0);
    }
    uri.strip_prefix("init-")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()
}

/// `seg-<msn>.m4s`.
pub fn segment_uri(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}

/// `part-<msn>.<index>.m4s`.
pub fn part_uri(msn: u64, index: usize) -> String {
    format!("part-{msn}.{index}.m4s")
}

/// `seg-<msn>.m4s` → msn.
pub fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".m4s")?
        .parse()
        .ok()
}

/// `part-<msn>.<i>.m4s` → (msn, i).
pub fn parse_part(name: &str) -> Option<(u64, usize)> {
    let (msn, index) = name
        .strip_prefix("part-")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((msn.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_900_000_000 + secs, 0).unwrap()
    }

    fn part(independent: bool) -> Part {
        Part {
            duration: ms(200),
            independent,
        }
    }

    /// `n` complete 1 s segments of five 200 ms parts, the first part of each a keyframe.
    fn with_segments(n: i64) -> Playlist {
        let mut p = Playlist::new(ms(1000), ms(200));
        for s in 0..n {
            for i in 0..5 {
                p.push_part(part(i == 0), t(s));
            }
            p.finish_segment();
        }
        p
    }

    #[test]
    fn a_live_playlist_lists_parts_and_hints_the_next_one() {
        let mut p = with_segments(1);
        p.push_part(part(true), t(1));
        p.push_part(part(false), t(1));
        let text = p.render();
        let expected = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-PLAYLIST-TYPE:EVENT
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2030-03-17T17:46:40.000Z
#EXT-X-PART:DURATION=0.200,URI=\"part-0.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"part-0.1.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"part-0.2.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"part-0.3.m4s\"
#EXT-X-PART:DURATION=0.200,URI=\"part-0.4.m4s\"
#EXTINF:1.000,
seg-0.m4s
#EXT-X-PART:DURATION=0.200,URI=\"part-1.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"part-1.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1.2.m4s\"
";
        assert_eq!(text, expected);
    }

    #[test]
    fn only_the_newest_segments_list_their_parts() {
        let p = with_segments(5);
        let text = p.render();
        assert!(!text.contains("part-1.0.m4s"));
        assert!(text.contains("part-2.0.m4s"));
        assert!(text.contains("seg-0.m4s") && text.contains("seg-4.m4s"));
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5.0.m4s\"\n"));
    }

    #[test]
    fn a_reconnect_is_a_discontinuity_with_its_own_date() {
        let mut p = with_segments(1);
        p.push_part(part(true), t(1));
        p.discontinuity();
        p.push_part(part(true), t(30));
        p.end();
        let text = p.render();
        let lines: Vec<&str> = text.lines().collect();
        let d = lines
            .iter()
            .position(|l| *l == "#EXT-X-DISCONTINUITY")
            .expect("a discontinuity");
        assert_eq!(lines[d - 1], "seg-1.m4s");
        assert_eq!(
            lines[d + 1],
            "#EXT-X-PROGRAM-DATE-TIME:2030-03-17T17:47:10.000Z"
        );
        assert_eq!(lines[d + 2], "#EXTINF:0.200,");
        assert_eq!(lines[d + 3], "seg-2.m4s");
        // Same init (the publisher sent the same parameters): no second EXT-X-MAP.
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
    }

    #[test]
    fn a_new_publisher_gets_its_own_init_after_the_discontinuity() {
        let mut p = with_segments(1);
        assert_eq!(p.new_init(), 1);
        p.push_part(part(true), t(30));
        p.end();
        let text = p.render();
        let lines: Vec<&str> = text.lines().collect();
        let maps: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("#EXT-X-MAP"))
            .collect();
        assert_eq!(maps.len(), 2, "{text}");
        assert_eq!(lines[maps[0]], "#EXT-X-MAP:URI=\"init.mp4\"");
        assert_eq!(lines[maps[1] - 1], "#EXT-X-DISCONTINUITY");
        assert_eq!(lines[maps[1]], "#EXT-X-MAP:URI=\"init-1.mp4\"");
        // Before any media there is nothing to start over from.
        assert_eq!(Playlist::new(ms(1000), ms(200)).new_init(), 0);
    }

    #[test]
    fn an_ended_playlist_is_vod_with_every_segment_and_no_parts() {
        let mut p = with_segments(4);
        p.push_part(part(true), t(4));
        p.end();
        p.push_part(part(true), t(5)); // after the end: ignored
        let text = p.render();
        assert!(text.ends_with("seg-4.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(!text.contains("#EXT-X-PART:"));
        assert!(!text.contains("PRELOAD-HINT"));
        assert_eq!(text.matches("#EXTINF:").count(), 5);
    }

    /// Applies what [`Playlist::journal`] asks to a journal text.
    fn journal_after(p: &mut Playlist, journal: &mut String, rewrite: bool) -> Journal {
        let step = p.journal(rewrite).expect("a complete segment");
        match &step {
            Journal::Append(lines) => journal.push_str(lines),
            Journal::Replace(whole) => *journal = whole.clone(),
        }
        step
    }

    /// The final playlist without its low-latency lines and its end.
    fn final_without_end(p: &Playlist) -> String {
        let low_latency = ["#EXT-X-PART-INF", "#EXT-X-SERVER-CONTROL", "#EXT-X-ENDLIST"];
        p.render()
            .lines()
            .filter(|l| !low_latency.iter().any(|tag| l.starts_with(tag)))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn the_journal_reads_as_the_final_playlist_without_its_end() {
        let mut p = Playlist::new(ms(1000), ms(200));
        let mut journal = String::new();
        let mut steps = Vec::new();
        for s in 0..4 {
            if s == 2 {
                p.new_init();
            }
            for i in 0..5 {
                p.push_part(part(i == 0), t(s));
                assert_eq!(
                    p.journal(false),
                    None,
                    "a segment being cut is not journaled"
                );
            }
            p.finish_segment();
            steps.push(journal_after(&mut p, &mut journal, false));
        }
        // The first segment writes the journal whole, with its head; the others append.
        assert!(matches!(&steps[0], Journal::Replace(j) if j.starts_with("#EXTM3U\n")));
        assert!(steps[1..].iter().all(|s| matches!(s, Journal::Append(_))));
        p.end();
        assert_eq!(journal, final_without_end(&p));
        assert!(journal.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""));
    }

    #[test]
    fn a_journal_left_unfinished_is_resumed_as_the_playlist_it_lists() {
        let mut p = with_segments(2);
        p.new_init();
        for i in 0..5 {
            p.push_part(part(i == 0), t(40));
        }
        p.finish_segment();
        let mut journal = String::new();
        journal_after(&mut p, &mut journal, true);
        let mut resumed = Playlist::resume(ms(1000), ms(200), &journal).expect("segments");
        assert_eq!(resumed.next_msn(), 3);
        // Ended, it is the playlist the first streamer would have ended with.
        let mut ended = p.clone();
        ended.end();
        let mut resumed_ended = resumed.clone();
        resumed_ended.end();
        assert_eq!(resumed_ended.render(), ended.render());

        // The next publisher's media: its own init, after a discontinuity, at the next number.
        assert_eq!(resumed.new_init(), 2);
        resumed.push_part(part(true), t(90));
        resumed.end();
        let text = resumed.render();
        assert!(
            text.ends_with(
                "seg-2.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-2.mp4\"\n\
                 #EXT-X-PROGRAM-DATE-TIME:2030-03-17T17:48:10.000Z\n#EXTINF:0.200,\nseg-3.m4s\n\
                 #EXT-X-ENDLIST\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_resumed_journal_stops_at_a_torn_line_or_a_gap_and_needs_a_segment() {
        let mut journal = String::new();
        let mut p = with_segments(3);
        journal_after(&mut p, &mut journal, true);
        let target = (ms(1000), ms(200));
        // The crash tore the last segment's name.
        let torn = journal.trim_end_matches("m4s\n");
        let resumed = Playlist::resume(target.0, target.1, torn).expect("two whole segments");
        assert_eq!(resumed.next_msn(), 2);
        // A gap in the numbers: what follows it is not taken.
        let gap = journal.replace("seg-1.m4s", "seg-7.m4s");
        assert_eq!(
            Playlist::resume(target.0, target.1, &gap).map(|p| p.next_msn()),
            Some(1)
        );
        // No segment (a head only, or nothing): nothing to go on from.
        let head = journal.split("#EXT-X-MAP").next().expect("a head");
        assert!(Playlist::resume(target.0, target.1, head).is_none());
        assert!(Playlist::resume(target.0, target.1, "").is_none());
        assert!(Playlist::resume(target.0, target.1, "garbage\n\u{0}\n").is_none());
    }

    #[test]
    fn a_longer_segment_or_a_lost_batch_rewrites_the_journal() {
        let mut p = with_segments(1);
        let mut journal = String::new();
        journal_after(&mut p, &mut journal, false);
        assert!(journal.contains("#EXT-X-TARGETDURATION:1\n"), "{journal}");
        // A 2.4 s GOP: the segment outgrows the declared target, so the head must change.
        for i in 0..12 {
            p.push_part(part(i == 0), t(1));
        }
        p.finish_segment();
        let step = journal_after(&mut p, &mut journal, false);
        assert!(matches!(step, Journal::Replace(_)));
        assert!(journal.contains("#EXT-X-TARGETDURATION:3\n"), "{journal}");
        assert!(journal.contains("#EXTINF:2.400,\nseg-1.m4s\n"), "{journal}");
        // Back to 1 s: appended under the larger target.
        p.push_part(part(true), t(4));
        p.finish_segment();
        assert!(matches!(
            journal_after(&mut p, &mut journal, false),
            Journal::Append(_)
        ));
        // The writer lost a batch: the next segment writes it all again.
        p.push_part(part(true), t(5));
        p.finish_segment();
        assert!(matches!(
            journal_after(&mut p, &mut journal, true),
            Journal::Replace(_)
        ));
        p.end();
        assert_eq!(journal, final_without_end(&p));
    }

    #[test]
    fn target_duration_covers_the_longest_segment() {
        let mut p = Playlist::new(ms(1000), ms(200));
        for _ in 0..12 {
            p.push_part(part(false), t(0));
        }
        p.finish_segment();
        assert!(p.render().contains("#EXT-X-TARGETDURATION:3\n"));
    }

    #[test]
    fn blocking_reload_answers_by_segment_and_part() {
        let mut p = with_segments(2); // msn 0 and 1 complete
        p.push_part(part(true), t(2)); // part 2.0
        assert_eq!(p.readiness(1, None), Readiness::Ready);
        assert_eq!(p.readiness(2, None), Readiness::Wait);
        assert_eq!(p.readiness(2, Some(0)), Readiness::Ready);
        assert_eq!(p.readiness(2, Some(1)), Readiness::Wait);
        assert_eq!(p.readiness(3, Some(0)), Readiness::Wait);
        assert_eq!(p.readiness(4, None), Readiness::Wait);
        assert_eq!(p.readiness(5, None), Readiness::TooFarAhead);
        p.end();
        assert_eq!(p.readiness(5, None), Readiness::Ready);
    }

    #[test]
    fn uris_parse() {
        assert_eq!(parse_segment("seg-12.m4s"), Some(12));
        assert_eq!(parse_part("part-12.3.m4s"), Some((12, 3)));
        assert_eq!(parse_part("part-12.m4s"), None);
        assert_eq!(parse_segment("../seg-1.m4s"), None);
    }
}
