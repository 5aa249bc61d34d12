//! The recordings on disk: the writer that stores what playouts produce, the reader that
//! serves their segments back, and the sweeper that removes recordings past their retention.
//!
//! Contract: the only code that writes under the recordings directory. A recording is
//! `<dir>/<reservation_id>/`, holding:
//! - its init segments (`init.mp4`, `init-<n>.mp4`), each written whole to a temporary name
//!   and renamed;
//! - `segments.m4s`, every complete segment back to back, and `segments.idx`, which locates
//!   segment `msn` in 16 bytes at `16 * msn` (offset, then length, little-endian; a length of
//!   0 is a segment not written);
//! - `index.m3u8`: while live, a journal ([`crate::playlist::Journal`]) that lists each
//!   segment once its media and index entry are written, so a streamer that stops without
//!   ending the recording leaves it readable up to there (as an EVENT playlist without an
//!   end); at the window's close, the final playlist, written whole and renamed over it.
//!
//! - `title.txt`: the reservation's title, when it has one, written whole at the end
//!   ([`read_title`] gives it back, if a page may still show it).
//!
//! A recording a stopped streamer left without its end is found at start ([`unfinished`]):
//! a playout made for it appends to its files, and one whose slot is over gets its final
//! playlist.
//!
//! A live recording's files stay open, so a segment costs one vectored write of its parts'
//! pieces, one write for its index entry and one for its journal lines; no file is made or
//! renamed per segment. The writer drains a bounded queue on one blocking thread, in the
//! order playouts queued their writes; it ends when every sender is gone. A write that
//! fails, or panics, is logged and costs only that write.
//!
//! Durability, so a power cut loses no segment a playlist lists: the writer takes every
//! batch waiting in the queue, writes their segments' media and index entries, syncs each
//! recording it wrote to once (`fdatasync`, so the syncs are batched: one per recording per
//! round, however many segments it got), and only then writes the journal lines that list
//! them. Init segments and the final playlist are written to a temporary name, synced,
//! renamed, and the directory synced; the final playlist only after the recording's last
//! segments are synced.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::caching::Validators;
use crate::config::StreamerConfig;
use crate::media::Pieces;
use crate::playlist::{self, Journal, Playlist};
use crate::playout::DiskWrite;

const MEDIA: &str = "segments.m4s";
const INDEX: &str = "segments.idx";
const PLAYLIST: &str = "index.m3u8";
/// Bytes per segment in `segments.idx`.
const ENTRY: u64 = 16;
/// Recordings held open at once (three descriptors each), at most: past it, one is closed
/// to open another, and reopened when next written. 768 descriptors: a streamer carrying
/// more than a couple of hundred publishers needs a descriptor limit above the usual 1,024.
const OPEN_LIMIT: usize = 256;
/// A segment longer than this in the index is taken for a damaged index, not read.
const SEGMENT_LIMIT: u64 = 256 << 20;

/// Files of one reservation's recording to write.
#[derive(Debug)]
pub struct DiskBatch {
    pub reservation_id: String,
    pub writes: Vec<DiskWrite>,
}

/// Writes every batch, in order, until the last sender is gone.
pub async fn write(dir: PathBuf, batches: mpsc::Receiver<DiskBatch>) {
    let writer = Writer::new(dir);
    if let Err(err) = tokio::task::spawn_blocking(move || writer.run(batches)).await {
        tracing::error!(%err, "recording writer panicked");
    }
}

/// A live recording's files, open while it is live: a file made and renamed per segment cost
/// ten times the CPU (docs/perf-log.md, Run 6).
struct Open {
    media: File,
    index: File,
    journal: File,
    /// Where the next segment goes in `segments.m4s`.
    media_len: u64,
    /// Where the next journal lines go in `index.m3u8`.
    journal_len: u64,
}

impl Open {
    /// A new recording: what the directory held is replaced.
    fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            media: writable(dir, MEDIA, true)?,
            index: writable(dir, INDEX, true)?,
            journal: writable(dir, PLAYLIST, true)?,
            media_len: 0,
            journal_len: 0,
        })
    }

    /// A recording the writer let go of (too many open): continued where it stands.
    fn reopen(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let media = writable(dir, MEDIA, false)?;
        let journal = writable(dir, PLAYLIST, false)?;
        Ok(Self {
            media_len: media.metadata()?.len(),
            media,
            index: writable(dir, INDEX, false)?,
            journal_len: journal.metadata()?.len(),
            journal,
        })
    }

    /// Media, then its index entry, then the journal: the journal never names a segment
    /// that cannot be read. A failed media write leaves `media_len` where it was, so the
    /// next segment takes its place; failed journal lines are cut off again, so the next
    /// ones do not continue a torn line.
    fn append_media(&mut self, msn: u64, parts: &[Pieces]) -> std::io::Result<()> {
        let at = msn
            .checked_mul(ENTRY)
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "segment number"))?;
        let pieces = parts.iter().flat_map(Pieces::iter);
        let end = self.media_len + write_pieces_at(&self.media, pieces, self.media_len)?;
        let mut entry = [0u8; ENTRY as usize];
        entry[..8].copy_from_slice(&self.media_len.to_le_bytes());
        entry[8..].copy_from_slice(&(end - self.media_len).to_le_bytes());
        self.index.write_all_at(&entry, at)?;
        self.media_len = end;
        Ok(())
    }

    /// The media and index on disk: what the journal may list from now on.
    fn sync(&self) -> std::io::Result<()> {
        self.media.sync_data()?;
        self.index.sync_data()
    }

    /// Journal lines after their segments' media ([`Open::append_media`], [`Open::sync`]).
    fn append_journal(&mut self, dir: &Path, journal: &Journal) -> std::io::Result<()> {
        match journal {
            Journal::Append(lines) => {
                if let Err(err) = self
                    .journal
                    .write_all_at(lines.as_bytes(), self.journal_len)
                {
                    let _ = self.journal.set_len(self.journal_len);
                    return Err(err);
                }
                self.journal_len += lines.len() as u64;
            }
            Journal::Replace(whole) => {
                write_whole(dir, PLAYLIST, whole.as_bytes())?;
                // The old descriptor holds the file the rename replaced.
                self.journal = writable(dir, PLAYLIST, false)?;
                self.journal_len = whole.len() as u64;
            }
        }
        Ok(())
    }
}

struct Writer {
    dir: PathBuf,
    open: HashMap<String, Open>,
    /// Journal lines whose segments are written but not yet synced, in queue order.
    unlisted: Vec<(String, Journal)>,
}

/// Batches taken from the queue before a sync round at most: bounds how long the first
/// segment of a round waits to be listed.
const ROUND_MAX: usize = 64;

impl Writer {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: HashMap::new(),
            unlisted: Vec::new(),
        }
    }

    fn run(mut self, mut batches: mpsc::Receiver<DiskBatch>) {
        while let Some(batch) = batches.blocking_recv() {
            self.take(batch);
            for _ in 1..ROUND_MAX {
                match batches.try_recv() {
                    Ok(batch) => self.take(batch),
                    Err(_) => break,
                }
            }
            self.list_synced();
        }
    }

    fn take(&mut self, batch: DiskBatch) {
        let id = batch.reservation_id;
        for write in batch.writes {
            let applied = catch_unwind(AssertUnwindSafe(|| self.apply(&id, write)));
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(reservation = %id, %err, "recording write failed");
                }
                Err(_) => {
                    // What the writer knew of this recording may be half updated.
                    self.open.remove(&id);
                    self.unlisted.retain(|(other, _)| *other != id);
                    tracing::error!(reservation = %id, "recording write panicked");
                }
            }
        }
    }

    /// Syncs every recording with segments waiting to be listed, once each, then writes
    /// their journal lines; a recording whose sync fails gets none (its segments stay
    /// unlisted rather than listed and maybe lost).
    fn list_synced(&mut self) {
        let unlisted = std::mem::take(&mut self.unlisted);
        let mut synced: HashMap<String, bool> = HashMap::new();
        for (id, journal) in unlisted {
            let dir = self.dir.join(&id);
            let Some(open) = self.open.get_mut(&id) else {
                // Let go of (and synced) since: see `keep`.
                tracing::error!(reservation = %id, "journal lines for a closed recording");
                continue;
            };
            let ok = *synced
                .entry(id.clone())
                .or_insert_with(|| match open.sync() {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::error!(reservation = %id, %err, "recording sync failed");
                        false
                    }
                });
            if !ok {
                continue;
            }
            if let Err(err) = open.append_journal(&dir, &journal) {
                tracing::error!(reservation = %id, %err, "recording journal write failed");
            }
        }
    }

    fn apply(&mut self, id: &str, write: DiskWrite) -> std::io::Result<()> {
        let dir = self.dir.join(id);
        match write {
            DiskWrite::Init { name, data } => {
                std::fs::create_dir_all(&dir)?;
                write_whole(&dir, &name, &data)?;
            }
            DiskWrite::Segment {
                msn,
                start,
                parts,
                journal,
            } => {
                if start {
                    // What an earlier recording of the same id still had to list goes first.
                    self.list_synced();
                    self.open.remove(id);
                    let open = Open::create(&dir)?;
                    sync_dir(&dir)?;
                    self.keep(id, open);
                } else if !self.open.contains_key(id) {
                    let open = Open::reopen(&dir)?;
                    self.keep(id, open);
                }
                if let Some(open) = self.open.get_mut(id) {
                    open.append_media(msn, &parts)?;
                    self.unlisted.push((id.to_string(), journal));
                }
            }
            DiskWrite::Title { title } => {
                std::fs::create_dir_all(&dir)?;
                write_whole(&dir, TITLE_FILE, title.as_bytes())?;
            }
            DiskWrite::End { playlist, start } => {
                // The last segments synced and listed before the final playlist replaces them.
                self.list_synced();
                self.open.remove(id);
                if start {
                    Open::create(&dir)?;
                }
                std::fs::create_dir_all(&dir)?;
                write_whole(&dir, PLAYLIST, playlist.as_bytes())?;
            }
        }
        Ok(())
    }

    fn keep(&mut self, id: &str, open: Open) {
        if self.open.len() >= OPEN_LIMIT {
            // The one let go of may have segments waiting to be listed.
            self.list_synced();
            let other = self.open.keys().find(|k| *k != id).cloned();
            if let Some(other) = other {
                self.open.remove(&other);
            }
        }
        self.open.insert(id.to_string(), open);
    }
}

fn writable(dir: &Path, name: &str, truncate: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(dir.join(name))
}

/// `data` as `dir/name`, all or nothing, and on disk when this returns: written to a
/// temporary name and synced, renamed over `name`, and the directory synced.
fn write_whole(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = writable(dir, &format!(".{name}.tmp"), true)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Syncs a directory, so the names made or renamed in it survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file of a recording as read for a viewer: its bytes and their validators.
#[derive(Debug)]
pub struct Recorded {
    pub data: Vec<u8>,
    pub validators: Validators,
}

/// The file `name` of the recording in `dir` (`<recordings>/<reservation_id>`), a name the
/// caller has checked against the stream's patterns: a segment from `segments.m4s`, anything
/// else as the file of that name; `None` if there is none.
/// The file beside a recording that holds its reservation's title.
pub const TITLE_FILE: &str = "title.txt";

/// The title kept beside the recording in `dir`, if there is one a page may show.
pub fn read_title(dir: &Path) -> std::io::Result<Option<String>> {
    let Some(file) = read_whole(&dir.join(TITLE_FILE))? else {
        return Ok(None);
    };
    Ok(String::from_utf8(file.data)
        .ok()
        .filter(|t| crate::gates::page_safe(t)))
}

pub fn read_file(dir: &Path, name: &str) -> std::io::Result<Option<Recorded>> {
    match playlist::parse_segment(name) {
        Some(msn) => segment_file(dir, msn),
        None => read_whole(&dir.join(name)),
    }
}

/// The bytes of segment `msn` ([`read_file`] without the validators).
pub fn read_segment(dir: &Path, msn: u64) -> std::io::Result<Option<Vec<u8>>> {
    Ok(segment_file(dir, msn)?.map(|r| r.data))
}

/// Segment `msn`, `None` if it was never written. A recording from before segments shared
/// one file has a file per segment (and, if a streamer went on with it after a restart,
/// newer segments in the shared file).
fn segment_file(dir: &Path, msn: u64) -> std::io::Result<Option<Recorded>> {
    if let Some(data) = read_indexed(dir, msn)? {
        return Ok(Some(data));
    }
    read_whole(&dir.join(playlist::segment_uri(msn)))
}

fn read_whole(path: &Path) -> std::io::Result<Option<Recorded>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut data)?;
    // The time is taken after the bytes: a file changed before or while they were read (a
    // journal appended to) has a newer one, so old bytes and new never share a tag.
    let modified = file.metadata()?.modified()?;
    let validators = Validators::in_file(meta.ino(), modified, data.len() as u64);
    Ok(Some(Recorded { data, validators }))
}

/// Segment `msn` from `segments.m4s`, where `segments.idx` places it.
fn read_indexed(dir: &Path, msn: u64) -> std::io::Result<Option<Recorded>> {
    let index = match File::open(dir.join(INDEX)) {
        Ok(index) => index,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(at) = msn.checked_mul(ENTRY) else {
        return Ok(None);
    };
    let mut entry = [0u8; ENTRY as usize];
    match index.read_exact_at(&mut entry, at) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (mut offset, mut len) = ([0u8; 8], [0u8; 8]);
    offset.copy_from_slice(&entry[..8]);
    len.copy_from_slice(&entry[8..]);
    let (offset, len) = (u64::from_le_bytes(offset), u64::from_le_bytes(len));
    if len == 0 {
        return Ok(None);
    }
    if len > SEGMENT_LIMIT {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("segments.idx gives segment {msn} {len} bytes"),
        ));
    }
    let media = File::open(dir.join(MEDIA))?;
    let meta = media.metadata()?;
    if offset.saturating_add(len) > meta.len() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("segments.idx places segment {msn} past the end of segments.m4s"),
        ));
    }
    let mut data = vec![0u8; len as usize];
    media.read_exact_at(&mut data, offset)?;
    // The time is taken after the bytes: a recording that started over (truncating the file)
    // before or while they were read has a newer one, so old bytes and new never share a tag.
    let modified = media.metadata()?.modified()?;
    let validators = Validators::in_shared_file(meta.ino(), modified, msn, offset, len);
    Ok(Some(Recorded { data, validators }))
}

/// Recordings under `dir` whose playlist has no end (a streamer stopped while they were
/// live), as the playlists their journals list ([`Playlist::resume`]), by reservation id.
/// A journal that lists no segment is left out: a playout for it starts the recording
/// over. Reads only the tail of ended playlists. A recording that cannot be read is logged
/// and skipped, so it costs no other its resume.
pub fn unfinished(
    dir: &Path,
    target: Duration,
    part_target: Duration,
) -> std::io::Result<Vec<(String, Playlist)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(id) = entry.file_name().into_string() else {
            continue;
        };
        let journal = match read_unfinished(&entry.path().join(PLAYLIST)) {
            Ok(Some(journal)) => journal,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(reservation = %id, %err, "a recording's playlist is unreadable");
                continue;
            }
        };
        match Playlist::resume(target, part_target, &String::from_utf8_lossy(&journal)) {
            Some(recorded) => found.push((id, recorded)),
            None => tracing::warn!(reservation = %id, "an unfinished recording lists no segment"),
        }
    }
    Ok(found)
}

/// The playlist at `path` if it has no end; `None` if it has one, or there is none.
fn read_unfinished(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if ends_with_endlist(&file)? {
        return Ok(None);
    }
    let mut journal = Vec::new();
    file.read_to_end(&mut journal)?;
    Ok(Some(journal))
}

/// Whether the playlist in `file` ends with `#EXT-X-ENDLIST`.
fn ends_with_endlist(file: &File) -> std::io::Result<bool> {
    const END: &[u8] = b"#EXT-X-ENDLIST\n";
    let len = file.metadata()?.len();
    let Some(at) = len.checked_sub(END.len() as u64) else {
        return Ok(false);
    };
    let mut tail = [0u8; END.len()];
    file.read_exact_at(&mut tail, at)?;
    Ok(tail == END)
}

/// Every ten minutes, removes ended recordings older than the retention.
pub async fn sweep(config: Arc<StreamerConfig>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let (dir, retention) = (config.recordings_dir.clone(), config.retention);
        match tokio::task::spawn_blocking(move || sweep_once(&dir, retention, SystemTime::now()))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "expired recordings removed"),
            Ok(Err(err)) => tracing::warn!(%err, "recording sweep failed"),
            Err(err) => tracing::error!(%err, "recording sweep panicked"),
        }
    }
}

/// Removes `<dir>/<id>/` whose playlist has ended and was last written before
/// `now - retention`. Returns how many it removed.
pub fn sweep_once(dir: &Path, retention: Duration, now: SystemTime) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        let playlist = path.join("index.m3u8");
        let Ok(meta) = std::fs::metadata(&playlist) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= retention);
        let ended = File::open(&playlist)
            .and_then(|file| ends_with_endlist(&file))
            .unwrap_or(false);
        if old && ended {
            std::fs::remove_dir_all(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes `pieces` one after another from `offset`, in one `writev` where the kernel takes
/// it all; returns how many bytes that was. std has no stable positioned vectored write, so
/// the file's cursor is moved first (the writer is the only user of its descriptors).
fn write_pieces_at<'a>(
    file: &File,
    pieces: impl Iterator<Item = &'a Bytes>,
    offset: u64,
) -> std::io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::segmenter::SegmenterOutput;
    use crate::playout::Playout;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("slotcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn writer(dir: &Path) -> Writer {
        Writer::new(dir.to_path_buf())
    }

    impl Writer {
        /// One write as a round of its own: written, synced, listed.
        fn write_now(&mut self, id: &str, write: DiskWrite) -> std::io::Result<()> {
            let written = self.apply(id, write);
            self.list_synced();
            written
        }
    }

    #[test]
    fn a_segment_is_listed_only_once_its_round_is_synced() {
        let dir = temp_dir("durable");
        let mut w = writer(&dir);
        w.apply("r1", segment(0, 1, 3000)).unwrap();
        w.apply("r1", segment(1, 2, 10)).unwrap();
        let journal = dir.join("r1").join(PLAYLIST);
        let before = std::fs::read_to_string(&journal).unwrap_or_default();
        assert!(
            !before.contains("seg-0.m4s"),
            "listed before its sync:\n{before}"
        );
        // The media is there already (the reader may serve it), only unlisted.
        assert_eq!(
            read_segment(&dir.join("r1"), 1).unwrap().map(|b| b.len()),
            Some(10)
        );
        w.list_synced();
        let after = std::fs::read_to_string(&journal).unwrap();
        assert!(
            after.contains("seg-0.m4s") && after.contains("seg-1.m4s"),
            "{after}"
        );
        assert!(w.unlisted.is_empty());
    }

    /// A segment of two parts, the first in two pieces; the first segment of a recording
    /// starts it, with the journal's head.
    fn segment(msn: u64, byte: u8, len: usize) -> DiskWrite {
        let data = Bytes::from(vec![byte; len]);
        let lines = format!("#EXTINF:1.000,\nseg-{msn}.m4s\n");
        DiskWrite::Segment {
            msn,
            start: msn == 0,
            parts: vec![
                Pieces::new(vec![data.slice(..len / 4), data.slice(len / 4..len / 2)]),
                data.slice(len / 2..).into(),
            ],
            journal: if msn == 0 {
                Journal::Replace(format!("#EXTM3U\n{lines}"))
            } else {
                Journal::Append(lines)
            },
        }
    }

    #[test]
    fn segments_are_read_back_and_the_journal_grows_until_the_final_playlist() {
        let dir = temp_dir("recording");
        let rec = dir.join("r1");
        let mut w = writer(&dir);
        w.write_now(
            "r1",
            DiskWrite::Init {
                name: "init.mp4".into(),
                data: Bytes::from_static(b"init"),
            },
        )
        .unwrap();
        w.write_now("r1", segment(0, 1, 3000)).unwrap();
        w.write_now("r1", segment(1, 2, 10)).unwrap();
        assert_eq!(std::fs::read(rec.join("init.mp4")).unwrap(), b"init");
        assert_eq!(read_segment(&rec, 0).unwrap(), Some(vec![1; 3000]));
        assert_eq!(read_segment(&rec, 1).unwrap(), Some(vec![2; 10]));
        assert_eq!(read_segment(&rec, 2).unwrap(), None);
        assert_eq!(read_segment(&rec, u64::MAX).unwrap(), None);
        assert_eq!(
            std::fs::read_to_string(rec.join(PLAYLIST)).unwrap(),
            "#EXTM3U\n#EXTINF:1.000,\nseg-0.m4s\n#EXTINF:1.000,\nseg-1.m4s\n"
        );

        // Let go of (as when too many are open), the recording continues where it stood.
        w.open.clear();
        w.write_now("r1", segment(3, 3, 5)).unwrap();
        assert_eq!(read_segment(&rec, 3).unwrap(), Some(vec![3; 5]));
        assert_eq!(
            read_segment(&rec, 2).unwrap(),
            None,
            "a segment never written"
        );
        assert_eq!(read_segment(&rec, 1).unwrap(), Some(vec![2; 10]));
        assert!(std::fs::read_to_string(rec.join(PLAYLIST))
            .unwrap()
            .ends_with("seg-1.m4s\n#EXTINF:1.000,\nseg-3.m4s\n"));

        // A lost batch is made up for by a journal written whole; appends go on after it.
        w.write_now(
            "r1",
            DiskWrite::Segment {
                msn: 4,
                start: false,
                parts: vec![Bytes::from_static(b"4").into()],
                journal: Journal::Replace("#EXTM3U\nall of it\n".into()),
            },
        )
        .unwrap();
        w.write_now("r1", segment(5, 5, 5)).unwrap();
        assert_eq!(
            std::fs::read_to_string(rec.join(PLAYLIST)).unwrap(),
            "#EXTM3U\nall of it\n#EXTINF:1.000,\nseg-5.m4s\n"
        );

        w.write_now(
            "r1",
            DiskWrite::End {
                playlist: "#EXTM3U\n#EXT-X-ENDLIST\n".into(),
                start: false,
            },
        )
        .unwrap();
        assert!(w.open.is_empty(), "an ended recording's files are closed");
        assert_eq!(
            std::fs::read_to_string(rec.join(PLAYLIST)).unwrap(),
            "#EXTM3U\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(read_segment(&rec, 0).unwrap(), Some(vec![1; 3000]));
        let tag = |name: &str| {
            read_file(&rec, name)
                .unwrap()
                .map(|r| r.validators.etag)
                .unwrap()
        };
        let (old, init) = (tag("seg-0.m4s"), tag("init.mp4"));
        assert_eq!(tag("seg-0.m4s"), old, "the same bytes, the same tag");
        assert_ne!(tag("seg-1.m4s"), old);
        assert!(
            old.starts_with("\"s") && init.starts_with("\"f"),
            "{old} {init}"
        );

        // A recording started over replaces the old one, and its tags. (Here the length
        // differs too; a start-over comes at least a segment after the old recording's last
        // write, so the file's modification time differs as well.)
        w.write_now("r1", segment(0, 9, 4)).unwrap();
        assert_eq!(read_segment(&rec, 0).unwrap(), Some(vec![9; 4]));
        assert_ne!(tag("seg-0.m4s"), old);
        assert_eq!(read_segment(&rec, 1).unwrap(), None);
        // So does a playout that ends before its first segment reached the disk.
        w.write_now(
            "r1",
            DiskWrite::End {
                playlist: "#EXTM3U\n#EXT-X-ENDLIST\n".into(),
                start: true,
            },
        )
        .unwrap();
        assert_eq!(read_segment(&rec, 0).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Feeds `outputs` to the playout and what it asks of the disk to the writer.
    fn record(c: &mut Playout, w: &mut Writer, outputs: Vec<SegmenterOutput>, end: bool) {
        let at = chrono::DateTime::from_timestamp(1_900_000_000, 0).expect("a date");
        let mut writes = Vec::new();
        for output in outputs {
            c.apply(output, at, &mut writes);
        }
        if end {
            c.end(&mut writes);
        }
        for write in writes {
            w.write_now("r1", write).expect("written");
        }
    }

    /// An init (`init`), then segments of two 500 ms parts, each of `len` bytes of `byte`.
    fn media(init: &'static [u8], segments: &[(u8, usize)]) -> Vec<SegmenterOutput> {
        let mut out = vec![SegmenterOutput::Init {
            data: Bytes::from_static(init),
            codecs: "avc1.64001f".into(),
            resolution: Some((320, 240)),
        }];
        for &(byte, len) in segments {
            for independent in [true, false] {
                out.push(SegmenterOutput::Part {
                    data: Bytes::from(vec![byte; len]).into(),
                    duration: Duration::from_millis(500),
                    independent,
                    first_arrival: std::time::Instant::now(),
                    starts_segment: independent,
                });
            }
            out.push(SegmenterOutput::SegmentEnd);
        }
        out
    }

    #[test]
    fn a_recording_a_stopped_streamer_left_goes_on_after_it_and_keeps_what_it_had() {
        let dir = temp_dir("recording-resume");
        let rec = dir.join("r1");
        let (segment, part) = (Duration::from_secs(1), Duration::from_millis(500));
        // Another recording, ended: nothing to go on from.
        let mut ended = Playout::new(segment, part);
        record(&mut ended, &mut writer(&dir), media(b"x", &[(7, 9)]), true);
        std::fs::rename(&rec, dir.join("ended")).unwrap();

        // The first streamer records two segments and stops without ending the recording.
        let mut first = Playout::new(segment, part);
        record(
            &mut first,
            &mut writer(&dir),
            media(b"init", &[(1, 40), (2, 30)]),
            false,
        );

        let found = unfinished(&dir, segment, part).unwrap();
        assert_eq!(found.len(), 1, "only the unfinished one");
        let (id, recorded) = found.into_iter().next().unwrap();
        assert_eq!((id.as_str(), recorded.next_msn()), ("r1", 2));

        // The next streamer's publisher goes on, then the window closes.
        let mut next = Playout::resume(recorded);
        assert!(
            next.playlist().is_some_and(|p| p.contains("seg-1.m4s")),
            "viewers see what was recorded before the publisher is back"
        );
        record(
            &mut next,
            &mut writer(&dir),
            media(b"init2", &[(3, 20)]),
            true,
        );

        assert_eq!(read_segment(&rec, 0).unwrap(), Some(vec![1; 80]));
        assert_eq!(read_segment(&rec, 1).unwrap(), Some(vec![2; 60]));
        assert_eq!(read_segment(&rec, 2).unwrap(), Some(vec![3; 40]));
        assert_eq!(std::fs::read(rec.join("init.mp4")).unwrap(), b"init");
        assert_eq!(std::fs::read(rec.join("init-1.mp4")).unwrap(), b"init2");
        let last = std::fs::read_to_string(rec.join(PLAYLIST)).unwrap();
        assert!(
            last.ends_with(
                "seg-1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n\
                 #EXT-X-PROGRAM-DATE-TIME:2030-03-17T17:46:40.000Z\n#EXTINF:1.000,\nseg-2.m4s\n\
                 #EXT-X-ENDLIST\n"
            ),
            "{last}"
        );
        assert!(unfinished(&dir, segment, part).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn more_live_recordings_than_may_stay_open_all_record() {
        let dir = temp_dir("recording-many");
        let mut w = writer(&dir);
        let ids: Vec<String> = (0..OPEN_LIMIT + 2).map(|i| format!("r{i}")).collect();
        for msn in 0..2 {
            for (i, id) in ids.iter().enumerate() {
                w.write_now(id, segment(msn, (i % 250) as u8 + msn as u8, 100 + i))
                    .unwrap();
                assert!(w.open.len() <= OPEN_LIMIT);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            for msn in 0..2 {
                let byte = (i % 250) as u8 + msn as u8;
                assert_eq!(
                    read_segment(&dir.join(id), msn).unwrap(),
                    Some(vec![byte; 100 + i]),
                    "{id} segment {msn}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recording_keeps_its_title_for_its_page() {
        let dir = temp_dir("recording-title");
        let mut w = writer(dir.parent().unwrap());
        let id = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(read_title(&dir).unwrap(), None, "no title yet");
        let title = "Évening news <live>";
        w.write_now(
            id,
            DiskWrite::Title {
                title: title.into(),
            },
        )
        .unwrap();
        assert_eq!(read_title(&dir).unwrap().as_deref(), Some(title));
        // What a page may not show (here, a control character) is not given back.
        std::fs::write(dir.join(TITLE_FILE), "bad\u{7}title").unwrap();
        assert_eq!(read_title(&dir).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn older_recordings_with_a_file_per_segment_still_play() {
        let dir = temp_dir("recording-legacy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seg-4.m4s"), b"four").unwrap();
        assert_eq!(read_segment(&dir, 4).unwrap(), Some(b"four".to_vec()));
        assert_eq!(read_segment(&dir, 5).unwrap(), None);
        // Gone on with after a restart: newer segments in the shared file, older ones still
        // from theirs.
        let mut w = writer(dir.parent().unwrap());
        let id = dir.file_name().unwrap().to_str().unwrap();
        w.write_now(
            id,
            DiskWrite::Segment {
                msn: 5,
                start: false,
                parts: vec![Bytes::from_static(b"five").into()],
                journal: Journal::Replace("#EXTM3U\n".into()),
            },
        )
        .unwrap();
        assert_eq!(read_segment(&dir, 5).unwrap(), Some(b"five".to_vec()));
        assert_eq!(read_segment(&dir, 4).unwrap(), Some(b"four".to_vec()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_index_is_an_error_not_an_allocation() {
        let dir = temp_dir("recording-damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let mut entry = [0u8; 16];
        entry[8..].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(dir.join(INDEX), entry).unwrap();
        std::fs::write(dir.join(MEDIA), b"").unwrap();
        let err = read_segment(&dir, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        // An entry past the end of the media file.
        entry[8..].copy_from_slice(&8u64.to_le_bytes());
        std::fs::write(dir.join(INDEX), entry).unwrap();
        assert!(read_segment(&dir, 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_ended_recordings_past_retention_go() {
        let dir = std::env::temp_dir().join(format!("slotcast-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (id, text) in [
            ("ended", "#EXTM3U\n#EXT-X-ENDLIST\n"),
            ("live", "#EXTM3U\n"),
        ] {
            std::fs::create_dir_all(dir.join(id)).unwrap();
            std::fs::write(dir.join(id).join("index.m3u8"), text).unwrap();
        }
        let now = SystemTime::now();
        assert_eq!(sweep_once(&dir, Duration::from_secs(3600), now).unwrap(), 0);
        let later = now + Duration::from_secs(7200);
        assert_eq!(
            sweep_once(&dir, Duration::from_secs(3600), later).unwrap(),
            1
        );
        assert!(!dir.join("ended").exists());
        assert!(dir.join("live").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
