//! Content-addressed blob storage and the embedded index: the only durable state pmcache keeps.
//!
//! Blobs are files named by their sha256 under `blobs/`, written first to `tmp/` on the same
//! filesystem, fsynced and renamed into place, so a reader never sees a partial blob. The index
//! (redb, a crash-safe copy-on-write B-tree) is updated only after the rename: after a crash at
//! any instant it points at complete blobs or at nothing, never at a missing or partial one.
//! Temp files left by a crash are swept when the store opens. This crate knows nothing of HTTP or
//! of any package ecosystem: records are opaque JSON owned by the callers.
//!
//! The store stays bounded while serving: [`Store::maintain`] evicts the least recently used
//! blobs above `storage.max_size` and collects blobs no record names. Deleting a blob first
//! drops (or detaches, see [`Schema`]) the records naming it, in one index transaction, while
//! [`Hold`]s keep a blob being committed out of reach until its record is written: an index
//! entry never names a deleted blob, whatever runs at once.

mod access;
mod blob;
mod config;
mod digest;
mod error;
mod hold;
mod hot;
mod index;
mod layout;
mod maintain;
mod size;
mod stats;

pub use access::Access;
pub use blob::{TempBlob, read_cached_at};
pub use config::Config;
pub use digest::{Digest, Sha256Writer};
pub use error::{Error, Result};
pub use hold::Hold;
pub use index::{RemovedRecords, Schema, Table};
pub use layout::LAYOUT_VERSION;
pub use maintain::{Freed, GcReport, VerifyReport};
pub use size::ByteSize;
pub use stats::Stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A handle to one data directory; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    blobs: blob::Blobs,
    index: index::Index,
    access: access::AccessLog,
    holds: Arc<hold::Holds>,
    counters: stats::Counters,
    /// Woken when commits take the store over its cap.
    over_cap: tokio::sync::Notify,
    /// One maintenance or verify pass at a time (the background one, `pmcache gc`, ...).
    maintenance: std::sync::Mutex<()>,
}

/// A committed blob, as [`Store::blob_content`] hands it out.
pub enum BlobContent {
    /// The whole blob, small enough to keep in memory.
    Memory(bytes::Bytes),
    /// The open blob file.
    File(std::fs::File),
}

/// A blob made durable, held (see [`Hold`]) until the caller has recorded it.
pub struct Committed {
    /// The blob's sha256, which is also its name in the store.
    pub digest: Digest,
    /// The blob's length in bytes.
    pub size: u64,
    /// Keep until the index record naming the blob is written.
    pub hold: Hold,
}

impl Store {
    /// Opens (creating if needed) the store under `root`, sweeping temp files left by a crash.
    /// Only the one process that serves from the store may open it this way.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store::inspect(root)?;
        let swept = store.inner.blobs.sweep_temp()?;
        if swept > 0 {
            tracing::info!(swept, "removed temp files left by an earlier run");
        }
        Ok(store)
    }

    /// Opens the store without touching its temp files, for checks.
    pub fn inspect(root: &Path) -> Result<Store> {
        layout::check(root)?;
        let blobs = blob::Blobs::open(root)?;
        let index = index::Index::open(&root.join("index.redb"))?;
        let counters = stats::Counters::default();
        let size = index.blob_rows()?.iter().map(|row| row.size).sum();
        counters.size.store(size, Ordering::Relaxed);
        Ok(Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                index,
                access: access::AccessLog::default(),
                holds: Arc::default(),
                counters,
                over_cap: tokio::sync::Notify::new(),
                maintenance: std::sync::Mutex::new(()),
            }),
        })
    }

    /// Sets the cap above which commits wake [`Store::over_cap`]; None: unbounded.
    pub fn set_max_size(&self, max: Option<ByteSize>) {
        let bytes = max.map_or(0, |ByteSize(bytes)| bytes);
        self.inner.counters.max_size.store(bytes, Ordering::Relaxed);
    }

    /// Resolves when commits have taken the store over its cap since the last call.
    pub async fn over_cap(&self) {
        self.inner.over_cap.notified().await;
    }

    /// The store's counters, for metrics.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Whether the last store write failed for lack of space (until one succeeds again).
    /// Index writes that can wait should: a failed one costs a reopen of the index, which a
    /// full disk may refuse, and until then nothing cached can be read.
    pub fn is_full(&self) -> bool {
        self.inner.counters.is_full()
    }

    /// Records a failed store write: a full disk is logged (rate-limited) and shown in
    /// [`Stats::full`] until a write succeeds again.
    pub fn storage_failed(&self, error: &Error) {
        self.inner.counters.failed(error);
    }

    /// Counts a fill that reached its clients without being stored.
    pub fn fill_served_not_stored(&self) {
        self.inner.counters.uncommitted();
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Starts a new blob: a temp file that becomes a blob only through [`Store::commit`].
    pub fn create_temp(&self) -> Result<TempBlob> {
        self.inner.blobs.create_temp()
    }

    /// Makes a finished temp file a blob: fsync, rename to its digest, fsync the directory.
    /// The caller records it in the index afterwards, so the index never names a missing blob,
    /// and keeps the returned hold until then, so eviction cannot delete it in between.
    pub fn commit(&self, temp: TempBlob) -> Result<Committed> {
        let committed = self.inner.blobs.commit(temp, &self.inner.holds)?;
        self.inner
            .index
            .touch_blob(&committed.digest, committed.size, access::now_millis())?;
        self.inner.counters.writable();
        if committed.new {
            self.grew(committed.size);
        }
        Ok(Committed {
            digest: committed.digest,
            size: committed.size,
            hold: committed.hold,
        })
    }

    fn grew(&self, bytes: u64) {
        let counters = &self.inner.counters;
        let size = counters.size.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let max = counters.max_size.load(Ordering::Relaxed);
        if max > 0 && size > max {
            self.inner.over_cap.notify_one();
        }
    }

    /// Holds an already stored blob about to be named by a record written again (see
    /// [`Hold`]); waits while a deletion of it is under way. Check that it still exists after.
    pub fn hold(&self, digest: Digest) -> Hold {
        self.inner.holds.hold(digest)
    }

    /// Stores a small in-memory body (a rewritten metadata document) as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Committed> {
        let mut temp = self.create_temp()?;
        temp.write_all(bytes)?;
        self.commit(temp)
    }

    /// The path of a committed blob, if it exists.
    pub fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.inner.blobs.path(digest);
        path.is_file().then_some(path)
    }

    /// Opens a committed blob for reading and notes the access for eviction (batched).
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<std::fs::File>> {
        self.open_blob_as(digest, Access::Note)
    }

    /// Opens a committed blob for reading; notes the access for eviction when `access` says so.
    pub fn open_blob_as(&self, digest: &Digest, access: Access) -> Result<Option<std::fs::File>> {
        match std::fs::File::open(self.inner.blobs.path(digest)) {
            Ok(file) => {
                if access == Access::Note {
                    self.inner.access.note(*digest);
                }
                Ok(Some(file))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: self.inner.blobs.path(digest),
                source,
            }),
        }
    }

    /// A committed blob to serve: its bytes when it is small (from the hot-blob cache, or read
    /// now and kept there), else the open file; notes the access for eviction when `access`
    /// says so. A cached blob is served only while its file is there: one removed behind
    /// pmcache's back (an operator freeing space by hand) is gone, as the index will find.
    pub fn blob_content(&self, digest: &Digest, access: Access) -> Result<Option<BlobContent>> {
        if let Some(bytes) = self.inner.blobs.hot.get(digest) {
            if self.inner.blobs.path(digest).is_file() {
                if access == Access::Note {
                    self.inner.access.note(*digest);
                }
                return Ok(Some(BlobContent::Memory(bytes)));
            }
            self.inner.blobs.hot.remove(digest);
        }
        let Some(file) = self.open_blob_as(digest, access)? else {
            return Ok(None);
        };
        let path = || self.inner.blobs.path(digest);
        let size = file
            .metadata()
            .map_err(|source| Error::Io {
                path: path(),
                source,
            })?
            .len();
        if size > hot::HOT_BLOB_MAX {
            return Ok(Some(BlobContent::File(file)));
        }
        let mut bytes = vec![0u8; size as usize];
        if size == 0 || read_cached_at(&file, &mut bytes, 0) != Some(bytes.len()) {
            // Not (wholly) in the page cache: the caller reads it where it may wait for the disk.
            return Ok(Some(BlobContent::File(file)));
        }
        let bytes = bytes::Bytes::from(bytes);
        self.inner.blobs.hot.insert(*digest, bytes.clone());
        Ok(Some(BlobContent::Memory(bytes)))
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        self.inner.index.get(table, key)
    }

    /// Reads the records of `keys`, in order (None where there is none), all at one moment.
    pub fn get_many<T: DeserializeOwned>(
        &self,
        table: Table,
        keys: &[String],
    ) -> Result<Vec<Option<T>>> {
        self.inner.index.get_many(table, keys)
    }

    /// Writes records in one transaction.
    pub fn put_all<T: Serialize>(&self, table: Table, records: &[(String, T)]) -> Result<()> {
        self.inner.index.put_all(table, records)
    }

    /// Writes one record.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, record: &T) -> Result<()> {
        self.inner.index.put_all(table, &[(key.to_owned(), record)])
    }

    /// Removes one record.
    pub fn remove(&self, table: Table, key: &str) -> Result<()> {
        self.inner.index.remove(table, key)
    }

    /// The records of `table` whose keys start with `prefix`, in key order.
    pub fn records_with_prefix<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>> {
        self.inner
            .index
            .entries_with_prefix(table, prefix)?
            .into_iter()
            .map(|(key, bytes)| {
                let record = serde_json::from_slice(&bytes).map_err(|source| Error::Record {
                    table: table.name(),
                    key: key.clone(),
                    source,
                })?;
                Ok((key, record))
            })
            .collect()
    }

    /// Removes the records of `keys` in one transaction, answering those that existed with
    /// their stored bytes (for [`Schema::referenced`]). The blobs they named stay until
    /// [`Store::free_unnamed`] or a maintenance pass finds nobody names them any more.
    pub fn remove_records(&self, table: Table, keys: &[String]) -> Result<RemovedRecords> {
        let mut removed = self.remove_records_in(&[(table, keys)])?;
        Ok(removed.pop().unwrap_or_default())
    }

    /// As [`Store::remove_records`] for several tables at once, in one transaction: readers see
    /// all of the records or none. Answers the removed records table by table.
    pub fn remove_records_in(
        &self,
        removals: &[(Table, &[String])],
    ) -> Result<Vec<RemovedRecords>> {
        self.inner.index.remove_all(removals)
    }

    /// Writes the batched last-access times to the index; called every few seconds and at shutdown.
    pub fn flush_access(&self) -> Result<()> {
        // Bookkeeping can wait for space: a failed index write costs a reopen of the index.
        if self.inner.counters.is_full() {
            return Ok(());
        }
        let batch = self.inner.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.index.record_access(&batch)
    }
}
