//! The recordings on disk: the writer that stores what channels produce, and the sweeper
//! that removes recordings past their retention.
//!
//! Contract: the only code that writes under the recordings directory. Files are written
//! whole to a temporary name and renamed, so a viewer never reads half a segment or
//! playlist. The writer drains a bounded queue; it ends when every sender is gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::StreamerConfig;
use crate::hub::DiskBatch;

/// Recording directories remembered as made, at most (then the memory starts over).
const KNOWN_DIRS: usize = 4096;

pub async fn write(dir: PathBuf, mut batches: mpsc::Receiver<DiskBatch>) {
    let dir = Arc::new(dir);
    let mut made: HashSet<String> = HashSet::new();
    while let Some(batch) = batches.recv().await {
        // One hand-off to the blocking pool per batch, every file of it written there with
        // std::fs (a tokio::fs call per step cost a hand-off each).
        let known = made.contains(&batch.reservation_id);
        let id = batch.reservation_id.clone();
        let dir = dir.clone();
        match tokio::task::spawn_blocking(move || write_batch(&dir, batch, known)).await {
            Ok(true) => {
                if made.len() >= KNOWN_DIRS {
                    made.clear();
                }
                made.insert(id);
            }
            Ok(false) => {}
            Err(err) => tracing::error!(%err, "recording writer panicked"),
        }
    }
}

/// Writes one batch; `false` if its directory could not be made.
fn write_batch(dir: &Path, batch: DiskBatch, known: bool) -> bool {
    let target = dir.join(&batch.reservation_id);
    if !known {
        if let Err(err) = std::fs::create_dir_all(&target) {
            tracing::error!(dir = %target.display(), %err, "cannot create the recording directory");
            return false;
        }
    }
    for file in batch.writes {
        if let Err(err) = write_whole(&target, &file.name, &file.data) {
            tracing::error!(reservation = %batch.reservation_id, file = %file.name, %err,
                "recording write failed");
        }
    }
    true
}

fn write_whole(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
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
        let ended = std::fs::read_to_string(&playlist)
            .map(|text| text.contains("#EXT-X-ENDLIST"))
            .unwrap_or(false);
        if old && ended {
            std::fs::remove_dir_all(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
