//! Content-addressed blob storage and the embedded index: the only durable state pmcache keeps.
//!
//! Blobs are files named by their sha256 under `blobs/`, written first to `tmp/` on the same
//! filesystem, fsynced and renamed into place, so a reader never sees a partial blob. The index
//! (redb, a crash-safe copy-on-write B-tree) is updated only after the rename: after a crash at
//! any instant it points at complete blobs or at nothing, never at a missing or partial one.
//! Temp files left by a crash are swept when the store opens. This crate knows nothing of HTTP or
//! of any package ecosystem: records are opaque JSON owned by the callers.

mod access;
mod blob;
mod digest;
mod error;
mod index;
mod size;

pub use blob::TempBlob;
pub use digest::{Digest, Sha256Writer};
pub use error::{Error, Result};
pub use index::Table;
pub use size::ByteSize;

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

/// What `Store::verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blob files read and re-hashed.
    pub blobs: u64,
    /// Blob files whose content does not hash to their name.
    pub corrupt_blobs: Vec<String>,
    /// Index entries checked.
    pub entries: u64,
    /// Index entries naming a blob that is missing.
    pub dangling_entries: Vec<String>,
    /// Files left in the temp directory.
    pub temp_files: u64,
}

impl VerifyReport {
    /// True when every blob hashes to its name and every index entry points at a blob.
    pub fn is_consistent(&self) -> bool {
        self.corrupt_blobs.is_empty() && self.dangling_entries.is_empty()
    }
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
        let blobs = blob::Blobs::open(root)?;
        let index = index::Index::open(&root.join("index.redb"))?;
        Ok(Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                index,
                access: access::AccessLog::default(),
            }),
        })
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
    /// The caller records it in the index afterwards, so the index never names a missing blob.
    pub fn commit(&self, temp: TempBlob) -> Result<(Digest, u64)> {
        let (digest, size) = self.inner.blobs.commit(temp)?;
        self.inner
            .index
            .touch_blob(&digest, size, access::now_unix())?;
        Ok((digest, size))
    }

    /// Stores a small in-memory body (a rewritten metadata document) as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
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
        match std::fs::File::open(self.inner.blobs.path(digest)) {
            Ok(file) => {
                self.inner.access.note(*digest);
                Ok(Some(file))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: self.inner.blobs.path(digest),
                source,
            }),
        }
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        self.inner.index.get(table, key)
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

    /// Writes the batched last-access times to the index; called every few seconds and at shutdown.
    pub fn flush_access(&self) -> Result<()> {
        let batch = self.inner.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.index.record_access(&batch)
    }

    /// Re-hashes every blob and checks that every digest the index names exists.
    /// `referenced` extracts the digests a record of a table refers to.
    pub fn verify(&self, referenced: &dyn Fn(Table, &[u8]) -> Vec<Digest>) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            temp_files: self.inner.blobs.count_temp()?,
            ..VerifyReport::default()
        };
        for (digest, path) in self.inner.blobs.list()? {
            report.blobs += 1;
            let actual = digest::hash_file(&path)?;
            if actual != digest {
                report.corrupt_blobs.push(digest.to_string());
            }
        }
        for table in Table::RECORDS {
            for (key, value) in self.inner.index.entries(table)? {
                report.entries += 1;
                for digest in referenced(table, &value) {
                    if !self.inner.blobs.path(&digest).is_file() {
                        report
                            .dangling_entries
                            .push(format!("{}:{key} -> {digest}", table.name()));
                    }
                }
            }
        }
        Ok(report)
    }
}
