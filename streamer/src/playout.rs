//! One reservation's playout, its HLS output: its playlist, init segments, the newest parts and segments
//! in memory, and what must be written to disk for the recording.
//!
//! Contract: sans-IO. The segmenter's outputs go in ([`Playout::apply`]); files to write come
//! out as [`DiskWrite`]s for the disk writer, and every change bumps a version that blocked
//! playlist and part requests wait on. Memory is bounded: parts for the newest
//! [`Playlist::PART_SEGMENTS`] + 1 segments and the newest [`Playout::MEMORY_SEGMENTS`]
//! segments; older media is served from disk. A file served from memory is a [`Held`]: its
//! pieces as ingest made them (ingest never joins them), joined once, when a viewer first
//! asks, into the one buffer every later viewer shares.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use slotcast_http::MappedFiles;

use crate::media::segmenter::SegmenterOutput;
use crate::media::Pieces;
use crate::playlist::{self, parse_part, parse_segment, Journal, Part, Playlist, Readiness};

/// What a viewer sees of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayoutState {
    /// No media yet.
    Waiting,
    Live,
    /// The window closed (or the slot was cancelled): the playlist has `EXT-X-ENDLIST`.
    Ended,
}

/// What the recording writer must do for one reservation, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskWrite {
    /// An init segment, a small file written whole under its URI.
    Init { name: String, data: Bytes },
    /// A complete segment (its parts, in order), and what `index.m3u8` needs for it.
    Segment {
        msn: u64,
        /// The playout's first segment on disk: the reservation's recording starts over.
        start: bool,
        parts: Vec<Pieces>,
        journal: Journal,
    },
    /// The window closed: `index.m3u8` is replaced by the final playlist, and the
    /// recording's files are closed. `start`: no segment of this playout reached the disk
    /// queue, so what the directory held before is not part of it.
    End { playlist: String, start: bool },
    /// The reservation's title, kept beside its recording ([`crate::recording::TITLE_FILE`])
    /// so the recording's page still names it once the streamer has forgotten the slot.
    Title { title: String },
}

/// How many times media could not be mapped for `sendfile` (see [`Held::served`]).
static MAP_FAILURES: AtomicU64 = AtomicU64::new(0);

/// An init segment or a part in memory, as viewers are served it.
#[derive(Debug)]
pub struct Held {
    pieces: Pieces,
    /// The pieces joined, made by the first caller that asks (`OnceLock`: once, whoever
    /// races); shared by every later one.
    joined: OnceLock<Bytes>,
    /// The pieces joined into a file the kernel sends from ([`Held::served`]), made by the
    /// first viewer that asks; shared by every later answer.
    mapped: OnceLock<Bytes>,
    len: usize,
    /// When it was made (server clock): its `Last-Modified`.
    pub made: DateTime<Utc>,
}

impl Held {
    fn new(pieces: Pieces, made: DateTime<Utc>) -> Self {
        let len = pieces.iter().map(Bytes::len).sum();
        Self {
            pieces,
            joined: OnceLock::new(),
            mapped: OnceLock::new(),
            len,
            made,
        }
    }

    /// Its bytes in one buffer: joined (a copy) on the first call, shared after.
    pub fn bytes(&self) -> Bytes {
        self.joined
            .get_or_init(|| match self.pieces.iter().as_slice() {
                [one] => one.clone(),
                many => Bytes::from(many.concat()),
            })
            .clone()
    }

    /// Its bytes as viewers are sent them: joined once into `files`, so that every answer
    /// leaves by `sendfile` without a copy of ours (`slotcast_http::sendfile`). Where a
    /// memfd cannot be made, the bytes of [`Held::bytes`].
    pub fn served(&self, files: &Arc<MappedFiles>) -> Bytes {
        self.mapped
            .get_or_init(|| {
                let pieces = self.pieces.iter().as_slice();
                files.hold(pieces).unwrap_or_else(|err| {
                    // Out of descriptors, say: viewers are still served, from memory. Said
                    // once, then every thousandth time, not once per part.
                    let failed = MAP_FAILURES.fetch_add(1, Ordering::Relaxed);
                    if failed.is_multiple_of(1000) {
                        tracing::warn!(%err, failed = failed + 1,
                            "cannot map media for sendfile; serving it from memory");
                    }
                    self.bytes()
                })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A file of the stream in memory: an init segment or a part (one [`Held`]), or a segment
/// (its parts).
#[derive(Clone, Debug)]
pub struct HeldFile {
    pub pieces: Vec<Arc<Held>>,
}

impl HeldFile {
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|h| h.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When its last piece was made: the file's `Last-Modified`.
    pub fn made(&self) -> Option<DateTime<Utc>> {
        self.pieces.iter().map(|h| h.made).max()
    }

    /// Its bytes as at most one buffer per piece (see [`Held::bytes`]).
    pub fn bytes(&self) -> Vec<Bytes> {
        self.pieces.iter().map(|h| h.bytes()).collect()
    }

    /// Its bytes as viewers are sent them, one buffer per piece (see [`Held::served`]).
    pub fn served(&self, files: &Arc<MappedFiles>) -> Vec<Bytes> {
        self.pieces.iter().map(|h| h.served(files)).collect()
    }
}

/// A part just announced, for the latency figures.
#[derive(Clone, Copy, Debug)]
pub struct Announced {
    pub first_arrival: Instant,
}

#[derive(Debug)]
pub struct Playout {
    playlist: Playlist,
    state: PlayoutState,
    /// Init segments by number (`init_uri`).
    inits: Vec<(u32, Arc<Held>)>,
    /// The init number the next parts use.
    init: u32,
    /// RFC 6381 codecs of the newest init (`avc1.64001f,mp4a.40.2`): what the stream is now.
    codecs: Option<String>,
    parts: VecDeque<((u64, usize), Arc<Held>)>,
    /// Complete segments as their parts: a segment is never copied into one buffer.
    segments: VecDeque<(u64, Vec<Arc<Held>>)>,
    /// Parts of the segment being cut: the segment once it completes.
    building: Vec<Arc<Held>>,
    /// No segment has reached the disk queue yet: the next one starts the recording over.
    start_pending: bool,
    /// A batch for the disk was lost: the next segment rewrites the journal and inits.
    disk_lost: bool,
    /// The msn and part index of the next part (mirrors the playlist's preload hint).
    next: (u64, usize),
    version: u64,
}

impl Playout {
    /// Complete segments kept in memory (older ones are read from disk).
    pub const MEMORY_SEGMENTS: usize = 6;

    pub fn new(segment_target: Duration, part_target: Duration) -> Self {
        Self::new_with(Playlist::new(segment_target, part_target))
    }

    /// A playout that goes on from a recording a stopped streamer left unfinished
    /// ([`Playlist::resume`]): its segments stay listed (served from disk), the next
    /// segment follows them after a discontinuity with an init of its own, and the
    /// recording's files are appended to, not started over.
    pub fn resume(recorded: Playlist) -> Self {
        let next = (recorded.next_msn(), 0);
        Self {
            start_pending: false,
            next,
            ..Self::new_with(recorded)
        }
    }

    fn new_with(playlist: Playlist) -> Self {
        Self {
            playlist,
            state: PlayoutState::Waiting,
            inits: Vec::new(),
            init: 0,
            codecs: None,
            parts: VecDeque::new(),
            segments: VecDeque::new(),
            building: Vec::new(),
            start_pending: true,
            disk_lost: false,
            next: (0, 0),
            version: 0,
        }
    }

    pub fn state(&self) -> PlayoutState {
        self.state
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The stream's codecs as an HLS `CODECS` attribute names them, once media has come.
    pub fn codecs(&self) -> Option<&str> {
        self.codecs.as_deref()
    }

    /// The disk queue refused these writes (it was full): the next segment makes up for
    /// them. It writes the inits and the whole journal again, and starts the recording over
    /// if the lost writes were to.
    pub fn disk_lost(&mut self, writes: &[DiskWrite]) {
        self.disk_lost = true;
        if writes
            .iter()
            .any(|w| matches!(w, DiskWrite::Segment { start: true, .. }))
        {
            self.start_pending = true;
        }
    }

    /// Takes one segmenter output; `at` is the server clock now (for the program date).
    pub fn apply(
        &mut self,
        output: SegmenterOutput,
        at: DateTime<Utc>,
        writes: &mut Vec<DiskWrite>,
    ) -> Option<Announced> {
        if self.state == PlayoutState::Ended {
            return None;
        }
        let mut announced = None;
        match output {
            SegmenterOutput::Init { data, codecs, .. } => {
                self.codecs = Some(codecs);
                // An init once media is listed (a publisher reconnected, its parameters
                // changed, or the playout resumed a recording) starts a discontinuity: the
                // segment being cut ends here.
                self.finish_segment(writes);
                self.init = self.playlist.new_init();
                writes.push(DiskWrite::Init {
                    name: playlist::init_uri(self.init),
                    data: data.clone(),
                });
                self.inits
                    .push((self.init, Arc::new(Held::new(Pieces::from(data), at))));
                // Only the newest two inits are needed in memory (the live one and the one
                // viewers may still be finishing).
                if self.inits.len() > 2 {
                    self.inits.remove(0);
                }
            }
            SegmenterOutput::Part {
                data,
                duration,
                independent,
                first_arrival,
                ..
            } => {
                if self.inits.is_empty() {
                    return None;
                }
                let key = self.next;
                self.playlist.push_part(
                    Part {
                        duration,
                        independent,
                    },
                    at,
                );
                let held = Arc::new(Held::new(data, at));
                self.building.push(held.clone());
                self.parts.push_back((key, held));
                self.next = (key.0, key.1 + 1);
                self.state = PlayoutState::Live;
                self.trim();
                announced = Some(Announced { first_arrival });
            }
            SegmenterOutput::SegmentEnd => self.finish_segment(writes),
        }
        self.version += 1;
        announced
    }

    fn finish_segment(&mut self, writes: &mut Vec<DiskWrite>) {
        if self.building.is_empty() {
            return;
        }
        self.playlist.finish_segment();
        let msn = self.next.0;
        let segment = std::mem::take(&mut self.building);
        let lost = std::mem::take(&mut self.disk_lost);
        if lost {
            for (n, held) in &self.inits {
                writes.push(DiskWrite::Init {
                    name: playlist::init_uri(*n),
                    data: held.bytes(),
                });
            }
        }
        // The journal on disk follows every complete segment, so a crash leaves the
        // recording readable up to there.
        if let Some(journal) = self.playlist.journal(lost) {
            writes.push(DiskWrite::Segment {
                msn,
                start: std::mem::take(&mut self.start_pending),
                parts: segment.iter().map(|h| h.pieces.clone()).collect(),
                journal,
            });
        }
        self.segments.push_back((msn, segment));
        while self.segments.len() > Self::MEMORY_SEGMENTS {
            self.segments.pop_front();
        }
        self.next = (msn + 1, 0);
        self.version += 1;
    }

    fn trim(&mut self) {
        let oldest = self
            .next
            .0
            .saturating_sub(Playlist::PART_SEGMENTS as u64 + 1);
        while matches!(self.parts.front(), Some(((msn, _), _)) if *msn < oldest) {
            self.parts.pop_front();
        }
    }

    /// The window closed or the slot was cancelled: the playlist gets `EXT-X-ENDLIST`.
    pub fn end(&mut self, writes: &mut Vec<DiskWrite>) {
        if self.state == PlayoutState::Ended {
            return;
        }
        self.finish_segment(writes);
        self.playlist.end();
        self.state = PlayoutState::Ended;
        self.parts.clear();
        writes.push(DiskWrite::End {
            playlist: self.playlist.render(),
            start: self.start_pending,
        });
        self.version += 1;
    }

    pub fn readiness(&self, msn: u64, part: Option<usize>) -> Readiness {
        self.playlist.readiness(msn, part)
    }

    /// `index.m3u8`, or `None` while it lists no segment (a player would see an empty list).
    pub fn playlist(&self) -> Option<String> {
        (self.playlist.has_segments() || self.state == PlayoutState::Ended)
            .then(|| self.playlist.render())
    }

    /// A file of the stream held in memory, by its URI (one piece for an init or a part,
    /// every part for a segment). Cheap: it shares what is held.
    pub fn file(&self, name: &str) -> Option<HeldFile> {
        let one = |held: &Arc<Held>| HeldFile {
            pieces: vec![held.clone()],
        };
        if let Some((_, held)) = self
            .inits
            .iter()
            .find(|(n, _)| playlist::init_uri(*n) == name)
        {
            return Some(one(held));
        }
        if let Some(msn) = parse_segment(name) {
            return self
                .segments
                .iter()
                .find(|(m, _)| *m == msn)
                .map(|(_, parts)| HeldFile {
                    pieces: parts.clone(),
                });
        }
        if let Some(key) = parse_part(name) {
            return self
                .parts
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, held)| one(held));
        }
        None
    }

    /// Whether `name` is the part (or segment) the stream will produce next, so a request for
    /// it (the preload hint) should wait rather than 404.
    pub fn is_coming(&self, name: &str) -> bool {
        if self.state == PlayoutState::Ended {
            return false;
        }
        if let Some((msn, index)) = parse_part(name) {
            return (msn, index) == self.next || (msn == self.next.0 + 1 && index == 0);
        }
        parse_segment(name) == Some(self.next.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid")
    }

    fn part(byte: u8, independent: bool) -> SegmenterOutput {
        SegmenterOutput::Part {
            data: Pieces::new(vec![Bytes::from(vec![byte; 1]), Bytes::from(vec![byte; 3])]),
            duration: Duration::from_millis(200),
            independent,
            first_arrival: Instant::now(),
            starts_segment: independent,
        }
    }

    fn init() -> SegmenterOutput {
        init_of("avc1.64001f")
    }

    fn init_of(codecs: &str) -> SegmenterOutput {
        SegmenterOutput::Init {
            data: Bytes::from_static(b"init"),
            codecs: codecs.into(),
            resolution: Some((320, 240)),
        }
    }

    fn kinds(writes: &[DiskWrite]) -> Vec<String> {
        writes
            .iter()
            .map(|w| match w {
                DiskWrite::Init { name, .. } => name.clone(),
                DiskWrite::Segment {
                    msn, start: true, ..
                } => format!("start {msn}"),
                DiskWrite::Segment { msn, .. } => format!("seg {msn}"),
                DiskWrite::End { .. } => "end".into(),
                DiskWrite::Title { .. } => "title".into(),
            })
            .collect()
    }

    #[test]
    fn the_codecs_are_the_newest_inits() {
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut w = Vec::new();
        assert_eq!(c.codecs(), None);
        c.apply(init(), at(), &mut w);
        assert_eq!(c.codecs(), Some("avc1.64001f"));
        // A publisher reconnects with audio as well.
        c.apply(init_of("avc1.42c01e,mp4a.40.2"), at(), &mut w);
        assert_eq!(c.codecs(), Some("avc1.42c01e,mp4a.40.2"));
    }

    #[test]
    fn parts_become_segments_and_files_on_disk() {
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut w = Vec::new();
        assert_eq!(c.playlist(), None);
        c.apply(init(), at(), &mut w);
        assert!(c.is_coming("part-0.0.m4s"));
        assert!(c.apply(part(1, true), at(), &mut w).is_some());
        assert_eq!(c.state(), PlayoutState::Live);
        c.apply(part(2, false), at(), &mut w);
        assert_eq!(
            c.file("part-0.1.m4s").map(|f| f.bytes().concat()),
            Some(vec![2u8; 4])
        );
        c.apply(SegmenterOutput::SegmentEnd, at(), &mut w);
        assert_eq!(kinds(&w), ["init.mp4", "start 0"]);
        let DiskWrite::Segment { parts, journal, .. } = &w[1] else {
            unreachable!("checked above")
        };
        let joined: Vec<u8> = parts.iter().flat_map(Pieces::concat).collect();
        assert_eq!(joined, [1, 1, 1, 1, 2, 2, 2, 2]);
        let Journal::Replace(journal) = journal else {
            panic!("the first segment writes the journal whole: {journal:?}")
        };
        assert!(journal.starts_with("#EXTM3U\n"), "{journal}");
        assert!(
            journal.ends_with("#EXTINF:0.400,\nseg-0.m4s\n"),
            "{journal}"
        );
        assert_eq!(
            c.file("seg-0.m4s").map(|f| f.bytes().concat()),
            Some(vec![1, 1, 1, 1, 2, 2, 2, 2])
        );
        assert!(c.is_coming("part-1.0.m4s"));
        assert!(!c.is_coming("part-5.0.m4s"));
    }

    #[test]
    fn a_file_in_memory_is_joined_once_and_shared_by_every_viewer() {
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut w = Vec::new();
        let made = at() + chrono::Duration::milliseconds(1500);
        c.apply(init(), at(), &mut w);
        c.apply(part(1, true), at(), &mut w);
        c.apply(part(2, false), made, &mut w);
        c.apply(SegmenterOutput::SegmentEnd, made, &mut w);
        let one = |name: &str| c.file(name).expect("held").bytes().remove(0);
        let (first, again) = (one("part-0.1.m4s"), one("part-0.1.m4s"));
        assert_eq!(first, vec![2u8; 4]);
        assert_eq!(first.as_ptr(), again.as_ptr(), "one buffer for both");
        // A segment is its parts' buffers, the same ones the parts are served from.
        let segment = c.file("seg-0.m4s").expect("held");
        assert_eq!((segment.len(), segment.made()), (8, Some(made)));
        let pieces = segment.bytes();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].as_ptr(), first.as_ptr());
        // An init is served as it came, without a copy.
        let init = c.file("init.mp4").expect("held").bytes();
        assert_eq!(init, vec![Bytes::from_static(b"init")]);
    }

    #[test]
    fn viewers_are_sent_one_mapped_copy_of_each_part_shared_by_its_segment() {
        let files = MappedFiles::new();
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut w = Vec::new();
        c.apply(init(), at(), &mut w);
        c.apply(part(1, true), at(), &mut w);
        c.apply(part(2, false), at(), &mut w);
        c.apply(SegmenterOutput::SegmentEnd, at(), &mut w);
        let one = |name: &str| c.file(name).expect("held").served(&files).remove(0);
        let (first, again) = (one("part-0.1.m4s"), one("part-0.1.m4s"));
        assert_eq!(first, vec![2u8; 4]);
        assert_eq!(first.as_ptr(), again.as_ptr(), "one mapping for both");
        let segment = c.file("seg-0.m4s").expect("held").served(&files);
        assert_eq!(segment.concat(), [1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(segment[1].as_ptr(), first.as_ptr());
        assert_eq!(one("init.mp4"), Bytes::from_static(b"init"));
        assert_eq!(
            files.len(),
            3,
            "the init and the two parts, each mapped once"
        );
    }

    #[test]
    fn a_second_publisher_gets_a_new_init_and_a_discontinuity() {
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut w = Vec::new();
        c.apply(init(), at(), &mut w);
        c.apply(part(1, true), at(), &mut w);
        c.apply(init(), at(), &mut w);
        c.apply(part(2, true), at(), &mut w);
        let mut end = Vec::new();
        c.end(&mut end);
        let text = c.playlist().expect("a playlist");
        assert!(text.contains("#EXT-X-DISCONTINUITY"), "{text}");
        assert!(text.contains("init-1.mp4"), "{text}");
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert_eq!(kinds(&w), ["init.mp4", "start 0", "init-1.mp4"]);
        assert_eq!(kinds(&end), ["seg 1", "end"]);
        assert!(matches!(&end[1], DiskWrite::End { playlist, start: false } if *playlist == text));
        assert_eq!(c.state(), PlayoutState::Ended);
        assert!(c.apply(part(3, true), at(), &mut end).is_none());
    }

    #[test]
    fn writes_the_disk_queue_refused_are_made_up_for_by_the_next_segment() {
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut lost = Vec::new();
        c.apply(init(), at(), &mut lost);
        c.apply(part(1, true), at(), &mut lost);
        c.apply(SegmenterOutput::SegmentEnd, at(), &mut lost);
        assert_eq!(kinds(&lost), ["init.mp4", "start 0"]);
        c.disk_lost(&lost);
        let mut w = Vec::new();
        c.apply(part(2, true), at(), &mut w);
        c.apply(SegmenterOutput::SegmentEnd, at(), &mut w);
        // The init again, the recording started over, the journal written whole.
        assert_eq!(kinds(&w), ["init.mp4", "start 1"]);
        assert!(
            matches!(&w[1], DiskWrite::Segment { journal: Journal::Replace(j), .. }
            if j.contains("seg-0.m4s") && j.contains("seg-1.m4s"))
        );
        let mut next = Vec::new();
        c.apply(part(3, true), at(), &mut next);
        c.apply(SegmenterOutput::SegmentEnd, at(), &mut next);
        assert_eq!(kinds(&next), ["seg 2"]);
        assert!(matches!(
            &next[0],
            DiskWrite::Segment {
                journal: Journal::Append(_),
                ..
            }
        ));
        // A playout whose first segment never reached the queue ends as a new recording.
        let mut c = Playout::new(Duration::from_secs(1), Duration::from_millis(200));
        let mut end = Vec::new();
        c.end(&mut end);
        assert!(matches!(&end[..], [DiskWrite::End { start: true, .. }]));
    }
}
