//! Answers whose bytes the kernel sends from a file, as nginx's `sendfile` does, instead of
//! copying them from our memory into the socket: for media many viewers fetch, that copy is
//! most of what serving costs (docs/perf-log.md, "Serving viewers").
//!
//! Contract: [`MappedFiles::hold`] copies bytes once into an unnamed file (on disk, or a sealed
//! memfd) and gives them back as `Bytes` mapped from it. [`Connection`], the IO under each HTTP connection, sends every
//! slice of such bytes with `sendfile(2)` from its file and everything else with `sendmsg`,
//! in order; what the client receives is byte for byte what it would have been. A region
//! is known exactly as long as its `Bytes` (or any slice of them) lives.
//!
//! hyper hands the IO the response head and each body buffer as separate slices (its queued
//! write strategy, chosen because [`Connection`] writes vectored), so a body buffer arrives
//! here as the very memory `hold` mapped, which is how it is recognised. Written here: no
//! maintained crate gives hyper a sendfile path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use memmap2::Mmap;
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The regions [`MappedFiles::hold`] made that are still alive, by start address.
#[derive(Debug, Default)]
pub struct MappedFiles {
    /// Where to make the files: a directory on disk, unnamed files in it (`O_TMPFILE`), whose
    /// page cache the kernel keeps in large folios as it does for nginx's files; `None`, or
    /// where that fails, sealed memfds (tmpfs pages, 4 KiB each unless shmem huge pages are on).
    dir: Option<PathBuf>,
    regions: RwLock<BTreeMap<usize, Region>>,
    /// Bytes the kernel sent from these files.
    sent: AtomicU64,
}

#[derive(Clone, Debug)]
struct Region {
    len: usize,
    file: Arc<File>,
}

/// The owner behind `hold`'s `Bytes`: the mapping, and its entry in the registry.
struct Mapped {
    map: Mmap,
    files: Arc<MappedFiles>,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        self.files
            .regions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.map.as_ptr() as usize));
    }
}

impl MappedFiles {
    /// Files made as sealed memfds.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Files made unnamed in `dir` (a directory on the disk that keeps recordings, say).
    pub fn in_dir(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            dir: Some(dir),
            ..Self::default()
        })
    }

    /// `pieces`, joined into an unnamed file and mapped: one copy, made once; every answer that
    /// sends these bytes afterwards is sent by the kernel from the file.
    pub fn hold(self: &Arc<Self>, pieces: &[Bytes]) -> io::Result<Bytes> {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if len == 0 {
            return Ok(Bytes::new());
        }
        let unnamed = self.dir.as_ref().and_then(|dir| {
            let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
            rustix::fs::open(dir, flags, Mode::RUSR | Mode::WUSR).ok()
        });
        let (mut file, sealable) = match unnamed {
            Some(fd) => (File::from(fd), false),
            None => {
                let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
                (
                    File::from(rustix::fs::memfd_create("slotcast-media", flags)?),
                    true,
                )
            }
        };
        for piece in pieces {
            file.write_all(piece)?;
        }
        if sealable {
            rustix::fs::fcntl_add_seals(
                &file,
                SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
            )?;
        }
        // SAFETY: memmap2 asks that the file not change while mapped. The file has no name in
        // any file system and its one descriptor is ours; this process writes it before
        // mapping and never again. A memfd is also sealed against writes, shrinking and
        // growing (the seals themselves sealed). The unnamed file on disk could be changed
        // only through this process's descriptor table (`/proc/<pid>/fd`), which takes the
        // privileges that could change this process's memory anyway.
        let map = unsafe { Mmap::map(&file)? };
        let start = map.as_ptr() as usize;
        let region = Region {
            len,
            file: Arc::new(file),
        };
        self.regions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(start, region);
        Ok(Bytes::from_owner(Mapped {
            map,
            files: self.clone(),
        }))
    }

    /// The file and offset `slice` was mapped from, if `hold` made it.
    #[cfg(test)]
    fn find(&self, slice: &[u8]) -> Option<Source> {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        lookup(&regions, slice)
    }

    /// [`MappedFiles::find`] for each of `bufs`, under one lock; `None` (and nothing
    /// allocated) when none of them is mapped, as for every answer not from memory.
    fn locate(&self, bufs: &[IoSlice<'_>]) -> Option<Vec<Option<Source>>> {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        let first = bufs.iter().position(|b| lookup(&regions, b).is_some())?;
        let mut found = vec![None; first];
        found.extend(bufs[first..].iter().map(|b| lookup(&regions, b)));
        Some(found)
    }

    /// Bytes sent from these files by `sendfile` so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many regions are alive.
    pub fn len(&self) -> usize {
        self.regions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a mapped slice's bytes are: its file, and the offset there.
type Source = (Arc<File>, u64);

/// The region of `regions` that holds all of `slice`: its file, and the offset there.
fn lookup(regions: &BTreeMap<usize, Region>, slice: &[u8]) -> Option<Source> {
    if slice.is_empty() {
        return None;
    }
    let at = slice.as_ptr() as usize;
    let (start, region) = regions.range(..=at).next_back()?;
    let inside = at + slice.len() <= start + region.len;
    inside.then(|| (region.file.clone(), (at - start) as u64))
}

/// One HTTP connection's socket: writes slices of [`MappedFiles`] with `sendfile`, the rest
/// as usual. Without files, it is the socket.
pub struct Connection {
    stream: TcpStream,
    files: Option<Arc<MappedFiles>>,
}

impl Connection {
    pub fn new(stream: TcpStream, files: Option<Arc<MappedFiles>>) -> Self {
        Self { stream, files }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(found) = self.files.as_ref().and_then(|files| files.locate(bufs)) else {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        };
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let stream = &self.stream;
            let files = self.files.as_deref();
            match stream.try_io(Interest::WRITABLE, || send(stream, bufs, &found, files)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Sends `bufs` in order as far as the socket takes them without blocking: runs of plain
/// slices by `sendmsg` (flagged `MSG_MORE` when file bytes follow), each mapped slice by
/// `sendfile` from its file at `found`'s offset. Returns the bytes sent, or `WouldBlock`
/// when none could be.
fn send(
    stream: &TcpStream,
    bufs: &[IoSlice<'_>],
    found: &[Option<Source>],
    files: Option<&MappedFiles>,
) -> io::Result<usize> {
    let mut sent = 0;
    let mut i = 0;
    // An error after some bytes went is reported by the next call, with nothing sent.
    let partial = |sent: usize, err: io::Error| if sent > 0 { Ok(sent) } else { Err(err) };
    while i < bufs.len() {
        if let Some((file, offset)) = &found[i] {
            let want = bufs[i].len();
            let mut offset = *offset;
            let mut done = 0;
            while done < want {
                match rustix::fs::sendfile(stream, file, Some(&mut offset), want - done) {
                    Ok(0) => return partial(sent + done, io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        if let Some(files) = files {
                            files.sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(err) => return partial(sent + done, err.into()),
                }
            }
            sent += done;
            i += 1;
            continue;
        }
        let end = (i..bufs.len())
            .find(|&j| found[j].is_some())
            .unwrap_or(bufs.len());
        let want: usize = bufs[i..end].iter().map(|b| b.len()).sum();
        let mut flags = SendFlags::NOSIGNAL;
        if end < bufs.len() {
            flags |= SendFlags::MORE;
        }
        let mut control = SendAncillaryBuffer::default();
        match rustix::net::sendmsg(stream, &bufs[i..end], &mut control, flags) {
            Ok(n) => {
                sent += n;
                if n < want {
                    return Ok(sent);
                }
            }
            Err(err) => return partial(sent, err.into()),
        }
        i = end;
    }
    Ok(sent)
}

#[cfg(test)]
#[path = "sendfile_tests.rs"]
mod tests;
