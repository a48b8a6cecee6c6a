//! Blob files on disk: temp files, the atomic commit into `blobs/`, the sweep of leftovers.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, Sha256Writer};
use crate::error::{Result, io};
use crate::hold::{Hold, Holds};
use crate::hot::HotBlobs;

const TEMP_SUFFIX: &str = ".part";

pub(crate) struct Blobs {
    blobs: PathBuf,
    temp: PathBuf,
    quarantine: PathBuf,
    /// Temp files of fills in progress in this process: never swept, whatever their age.
    live: Arc<Mutex<HashSet<PathBuf>>>,
    /// Small blobs served lately, in memory.
    pub(crate) hot: HotBlobs,
}

/// A blob made durable by [`Blobs::commit`].
pub(crate) struct Committed {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) hold: Hold,
    /// False when the same content was already stored.
    pub(crate) new: bool,
}

/// What a sweep of stale temp files removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// A blob being written. Readers may share the file (see [`TempBlob::shared_file`]) and read what
/// has been written so far with positional reads; the file stays valid for them after the commit
/// renames it. Dropping a `TempBlob` without committing it deletes the file.
pub struct TempBlob {
    path: PathBuf,
    file: Arc<File>,
    hasher: Sha256Writer,
    written: u64,
    committed: bool,
    live: Arc<Mutex<HashSet<PathBuf>>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Blobs {
    pub(crate) fn open(root: &Path) -> Result<Blobs> {
        let blobs = root.join("blobs");
        let temp = root.join("tmp");
        for dir in [root, &blobs, &temp] {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(Blobs {
            blobs,
            temp,
            quarantine: root.join("quarantine"),
            live: Arc::default(),
            hot: HotBlobs::default(),
        })
    }

    /// `blobs/ab/cd/abcd…`: two fan-out levels keep directories small with millions of blobs.
    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    pub(crate) fn create_temp(&self) -> Result<TempBlob> {
        let name = format!(
            "{}-{}-{}{TEMP_SUFFIX}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos_now()
        );
        let path = self.temp.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        lock(&self.live).insert(path.clone());
        Ok(TempBlob {
            path,
            file: Arc::new(file),
            hasher: Sha256Writer::default(),
            written: 0,
            committed: false,
            live: Arc::clone(&self.live),
        })
    }

    /// fsync, hold the digest (see [`crate::hold`]), then rename into place unless the same
    /// content is already there.
    pub(crate) fn commit(&self, mut temp: TempBlob, holds: &Arc<Holds>) -> Result<Committed> {
        temp.file.sync_all().map_err(io(&temp.path))?;
        let digest = std::mem::take(&mut temp.hasher).finish();
        let size = temp.written;
        let target = self.path(&digest);
        let parent = target
            .parent()
            .expect("a blob path always has a fan-out parent");
        let hold = holds.hold(digest);
        // A reader that read a quarantined (corrupt) file before it was moved may have put its
        // bytes in memory after the quarantine dropped them: the committed file is the truth.
        self.hot.remove(&digest);
        self.create_fan_out(parent)?;
        if target.is_file() {
            // Same content already stored: content addressing makes the new copy redundant.
            temp.remove();
            return Ok(Committed {
                digest,
                size,
                hold,
                new: false,
            });
        }
        fs::rename(&temp.path, &target).map_err(io(&target))?;
        temp.forget();
        sync_dir(parent)?;
        Ok(Committed {
            digest,
            size,
            hold,
            new: true,
        })
    }

    /// Deletes a blob file; its size, or None when it was not there.
    pub(crate) fn delete(&self, digest: &Digest) -> Result<Option<u64>> {
        self.hot.remove(digest);
        let path = self.path(digest);
        let size = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(&path)(source)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(size)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io(&path)(source)),
        }
    }

    /// Moves a blob whose content does not match its name to `quarantine/`, for a person to
    /// look at; the next request for it fetches it again.
    pub(crate) fn quarantine(&self, digest: &Digest) -> Result<PathBuf> {
        self.hot.remove(digest);
        fs::create_dir_all(&self.quarantine).map_err(io(&self.quarantine))?;
        let target = self
            .quarantine
            .join(format!("{}-{}", digest.to_hex(), nanos_now()));
        let source = self.path(digest);
        fs::rename(&source, &target).map_err(io(&source))?;
        Ok(target)
    }

    /// Removes temp files older than `max_age` that no fill of this process is writing.
    pub(crate) fn sweep_stale_temp(&self, max_age: Duration) -> Result<Swept> {
        let mut swept = Swept::default();
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.temp).map_err(io(&self.temp))? {
            let path = entry.map_err(io(&self.temp))?.path();
            if lock(&self.live).contains(&path) {
                continue;
            }
            let Ok(metadata) = fs::metadata(&path) else {
                continue;
            };
            let age = metadata
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or_default();
            // Re-checked just before removal: a fill may have started since the listing.
            if age >= max_age && !lock(&self.live).contains(&path) {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        swept.files += 1;
                        swept.bytes += metadata.len();
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(io(&path)(source)),
                }
            }
        }
        Ok(swept)
    }

    /// Creates `blobs/ab/cd` and makes each new directory entry durable, so that after a power
    /// loss the index (which is fsynced) never names a blob whose directory vanished.
    fn create_fan_out(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let upper = dir.parent().expect("a fan-out directory has a parent");
        let upper_existed = upper.is_dir();
        fs::create_dir_all(dir).map_err(io(dir))?;
        sync_dir(upper)?;
        if !upper_existed {
            sync_dir(&self.blobs)?;
        }
        Ok(())
    }

    /// Removes every temp file; called at start, before anything else can write.
    pub(crate) fn sweep_temp(&self) -> Result<u64> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.temp).map_err(io(&self.temp))? {
            let path = entry.map_err(io(&self.temp))?.path();
            fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
        Ok(removed)
    }

    pub(crate) fn count_temp(&self) -> Result<u64> {
        let entries = fs::read_dir(&self.temp).map_err(io(&self.temp))?;
        Ok(entries.count() as u64)
    }

    /// Every blob file with the digest its name claims.
    pub(crate) fn list(&self) -> Result<Vec<(Digest, PathBuf)>> {
        let mut found = Vec::new();
        for first in read_dirs(&self.blobs)? {
            for second in read_dirs(&first)? {
                for entry in fs::read_dir(&second).map_err(io(&second))? {
                    let path = entry.map_err(io(&second))?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if let Ok(digest) = name.parse::<Digest>() {
                        found.push((digest, path));
                    }
                }
            }
        }
        Ok(found)
    }
}

/// Reads into `buffer` at `offset` only what the page cache already holds: `preadv2` with
/// `RWF_NOWAIT` never waits for the disk, so a serving thread may call it. The count of bytes
/// read (at least one), or `None` when nothing could be read that way: read on a thread that
/// may block instead, which also tells the end of the file and real errors.
pub fn read_cached_at(file: &File, buffer: &mut [u8], offset: u64) -> Option<usize> {
    use rustix::io::ReadWriteFlags;
    let mut slices = [std::io::IoSliceMut::new(buffer)];
    // Any refusal (EAGAIN, a kernel or sandbox without the flag) only means "not this way": the
    // ordinary read that follows reports real I/O errors. A zero-byte answer is not trusted as
    // the end of the file either (some filesystems give it instead of EAGAIN).
    match rustix::io::preadv2(file, &mut slices, offset, ReadWriteFlags::NOWAIT) {
        Ok(read) if read > 0 => Some(read),
        _ => None,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io(dir))
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

fn lock(live: &Mutex<HashSet<PathBuf>>) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

fn nanos_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}

impl TempBlob {
    /// Appends bytes (blocking I/O: call from a blocking context for large writes).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.written)
            .map_err(io(&self.path))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The sha256 of what has been written so far.
    pub fn digest_so_far(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Gives up the file (removing it) but keeps hashing: for a fill that goes on without the
    /// store once the disk is full.
    pub fn into_hasher(mut self) -> Sha256Writer {
        std::mem::take(&mut self.hasher)
    }

    /// The open file, for positional reads of the bytes written so far by concurrent readers.
    pub fn shared_file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Where the temp file lives (for logs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remove(&mut self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove temp file");
        }
        self.forget();
    }

    /// The file is gone from `tmp/` (renamed or removed): nothing left to clean up.
    fn forget(&mut self) {
        self.committed = true;
        lock(&self.live).remove(&self.path);
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.committed {
            self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_names_the_blob_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut temp = blobs.create_temp().unwrap();
        temp.write_all(b"hello ").unwrap();
        temp.write_all(b"world").unwrap();
        let committed = blobs.commit(temp, &Arc::default()).unwrap();
        let digest = committed.digest;
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(committed.size, 11);
        assert!(committed.new);
        assert_eq!(fs::read(blobs.path(&digest)).unwrap(), b"hello world");
        assert_eq!(blobs.count_temp().unwrap(), 0);
    }

    #[test]
    fn dropped_temp_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut temp = blobs.create_temp().unwrap();
        temp.write_all(b"partial").unwrap();
        drop(temp);
        assert_eq!(blobs.count_temp().unwrap(), 0);
        assert!(blobs.list().unwrap().is_empty());
    }

    #[test]
    fn readers_keep_their_file_across_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut temp = blobs.create_temp().unwrap();
        temp.write_all(b"abcdef").unwrap();
        let reader = temp.shared_file();
        drop(blobs.commit(temp, &Arc::default()).unwrap());
        let mut buffer = [0u8; 3];
        reader.read_exact_at(&mut buffer, 3).unwrap();
        assert_eq!(&buffer, b"def");
    }

    #[test]
    fn sweep_removes_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        fs::write(dir.path().join("tmp").join("leftover.part"), b"x").unwrap();
        assert_eq!(blobs.sweep_temp().unwrap(), 1);
        assert_eq!(blobs.count_temp().unwrap(), 0);
    }

    #[test]
    fn stale_sweep_spares_live_and_young_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut live = blobs.create_temp().unwrap();
        live.write_all(b"in flight").unwrap();
        fs::write(dir.path().join("tmp").join("leftover.part"), b"xy").unwrap();
        let young = blobs.sweep_stale_temp(Duration::from_secs(3600)).unwrap();
        assert_eq!(young, Swept::default());
        let swept = blobs.sweep_stale_temp(Duration::ZERO).unwrap();
        assert_eq!(swept, Swept { files: 1, bytes: 2 });
        assert!(live.path().is_file());
    }
}
