//! The embedded index (redb): opaque JSON records per table, plus blob sizes and last access.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::error::{Error, Result, index};

/// Removed records of one table: each key with the bytes it held.
pub type RemovedRecords = Vec<(String, Vec<u8>)>;

/// The record tables. Their records are JSON whose shape the proxy owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Metadata documents: validators, fetch time and the blobs of each rendered variant.
    Documents,
    /// Artifacts: upstream location → committed blob and what it was verified against.
    Artifacts,
    /// Artifact sources: a pmcache artifact path → the upstream URL and expected hash learnt
    /// from a document pmcache fetched.
    Sources,
}

impl Table {
    /// The tables whose records may name blobs.
    pub const RECORDS: [Table; 2] = [Table::Documents, Table::Artifacts];

    /// The table's name in the index file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Documents => "documents",
            Table::Artifacts => "artifacts",
            Table::Sources => "sources",
        }
    }

    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// How the store reads the records its callers own, to find and drop the ones naming a blob.
#[derive(Clone, Copy)]
pub struct Schema {
    /// The digests a record of a table refers to.
    pub referenced: fn(Table, &[u8]) -> Vec<Digest>,
    /// What to keep of a record once the blobs it names are gone: None removes it. A record may
    /// keep facts that must outlive the bytes (the sha256 an artifact is pinned to).
    pub detached: fn(Table, &[u8]) -> Option<Vec<u8>>,
}

/// What a deletion does with index records naming a candidate blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purge {
    /// The blob goes whoever names it: records naming it are detached first.
    Detach,
    /// Only blobs nobody names go; named ones are spared.
    Orphans,
}

/// A committed purge: the blobs whose rows were removed (with their recorded sizes) and how many
/// records were detached.
#[derive(Debug, Default)]
pub(crate) struct Purged {
    pub(crate) blobs: Vec<(Digest, u64)>,
    pub(crate) records: u64,
}

/// One blob row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlobRow {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) last_access_ms: u64,
}

/// A blob row as stored (JSON, so a field can be added without changing the layout).
#[derive(serde::Serialize, serde::Deserialize)]
struct BlobRecord {
    size: u64,
    /// Last access in whole seconds since the Unix epoch. Rows once had only this; it is still
    /// written so that an older pmcache opening the same data dir keeps ordering blobs.
    last_access: u64,
    /// Last access in milliseconds since the Unix epoch: blobs read within one second are
    /// ordered too. Absent from rows an older pmcache wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_access_ms: Option<u64>,
}

impl BlobRecord {
    fn new(size: u64, last_access_ms: u64) -> BlobRecord {
        BlobRecord {
            size,
            last_access: last_access_ms / 1000,
            last_access_ms: Some(last_access_ms),
        }
    }

    /// The last access in milliseconds, from the seconds of a row an older pmcache wrote.
    fn last_access_ms(&self) -> u64 {
        self.last_access_ms
            .unwrap_or_else(|| self.last_access.saturating_mul(1000))
    }
}

/// The index file. After a failed write (a full disk, say) redb refuses every later operation
/// until the database is opened again, so the handle is reopened at the next use (at most every
/// [`REOPEN_EVERY`]) rather than leaving pmcache without an index until it restarts.
pub(crate) struct Index {
    path: PathBuf,
    db: RwLock<Option<Database>>,
    broken: AtomicBool,
    last_reopen: Mutex<Option<Instant>>,
}

const REOPEN_EVERY: Duration = Duration::from_secs(2);

type Handle<'a> = RwLockReadGuard<'a, Option<Database>>;

impl Index {
    pub(crate) fn open(path: &Path) -> Result<Index> {
        let db = Database::create(path).map_err(index("opening the index"))?;
        Index::create_tables(&db)?;
        Ok(Index {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
        })
    }

    fn create_tables(db: &Database) -> Result<()> {
        let txn = db.begin_write().map_err(index("creating tables"))?;
        for table in [Table::Documents, Table::Artifacts, Table::Sources] {
            txn.open_table(table.definition())
                .map_err(index("creating tables"))?;
        }
        txn.open_table(BLOBS).map_err(index("creating tables"))?;
        txn.commit().map_err(index("creating tables"))
    }

    /// The open database, reopened first if a write failed since.
    fn handle(&self) -> Result<Handle<'_>> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen();
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(Error::Index {
                action: "opening the index again after a failed write",
                source: Box::new(std::io::Error::other(
                    "the index could not be reopened yet (is the disk still full?)",
                )),
            });
        }
        Ok(guard)
    }

    fn reopen(&self) {
        {
            let mut last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Dropped first: the file lock goes with the last handle.
        *db = None;
        match Database::create(&self.path) {
            Ok(reopened) => {
                *db = Some(reopened);
                self.broken.store(false, Ordering::Release);
                tracing::info!("index reopened after a failed write");
            }
            Err(error) => tracing::warn!(%error, "cannot reopen the index yet"),
        }
    }

    fn begin_write(&self, action: &'static str) -> Result<WriteTransaction> {
        let handle = self.handle()?;
        let db = handle.as_ref().expect("handle() returns an open database");
        db.begin_write().map_err(|error| {
            self.broken.store(true, Ordering::Release);
            index(action)(error)
        })
    }

    fn begin_read(&self, action: &'static str) -> Result<ReadTransaction> {
        let handle = self.handle()?;
        let db = handle.as_ref().expect("handle() returns an open database");
        db.begin_read().map_err(index(action))
    }

    fn commit(&self, txn: WriteTransaction) -> Result<()> {
        txn.commit().map_err(|error| {
            self.broken.store(true, Ordering::Release);
            index("committing")(error)
        })
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let txn = self.begin_read("reading")?;
        let opened = txn
            .open_table(table.definition())
            .map_err(index("reading"))?;
        let Some(value) = opened.get(key).map_err(index("reading"))? else {
            return Ok(None);
        };
        decode(table, key, value.value()).map(Some)
    }

    /// Reads the records of `keys`, in order, in one read transaction.
    pub(crate) fn get_many<T: DeserializeOwned>(
        &self,
        table: Table,
        keys: &[String],
    ) -> Result<Vec<Option<T>>> {
        let txn = self.begin_read("reading")?;
        let opened = txn
            .open_table(table.definition())
            .map_err(index("reading"))?;
        keys.iter()
            .map(
                |key| match opened.get(key.as_str()).map_err(index("reading"))? {
                    Some(value) => decode(table, key, value.value()).map(Some),
                    None => Ok(None),
                },
            )
            .collect()
    }

    pub(crate) fn put_all<T: Serialize>(
        &self,
        table: Table,
        records: &[(String, T)],
    ) -> Result<()> {
        let txn = self.begin_write("writing")?;
        {
            let mut opened = txn
                .open_table(table.definition())
                .map_err(index("writing"))?;
            for (key, record) in records {
                let bytes = serde_json::to_vec(record).map_err(|source| Error::Record {
                    table: table.name(),
                    key: key.clone(),
                    source,
                })?;
                opened
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(index("writing"))?;
            }
        }
        self.commit(txn)
    }

    pub(crate) fn remove(&self, table: Table, key: &str) -> Result<()> {
        let txn = self.begin_write("removing")?;
        txn.open_table(table.definition())
            .and_then(|mut opened| opened.remove(key).map(|_| ()).map_err(Into::into))
            .map_err(index("removing"))?;
        self.commit(txn)
    }

    pub(crate) fn entries(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.begin_read("listing")?;
        let opened = txn
            .open_table(table.definition())
            .map_err(index("listing"))?;
        let mut entries = Vec::new();
        for entry in opened.iter().map_err(index("listing"))? {
            let (key, value) = entry.map_err(index("listing"))?;
            entries.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(entries)
    }

    /// The records of `table` whose keys start with `prefix`, in key order. Keys sort as
    /// bytes, so the records of one prefix are one contiguous range.
    pub(crate) fn entries_with_prefix(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.begin_read("listing by prefix")?;
        let opened = txn
            .open_table(table.definition())
            .map_err(index("listing by prefix"))?;
        let mut entries = Vec::new();
        for entry in opened.range(prefix..).map_err(index("listing by prefix"))? {
            let (key, value) = entry.map_err(index("listing by prefix"))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            entries.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(entries)
    }

    /// Removes the records of each table's keys, all in one transaction; answers, per table,
    /// those that existed, with the values they had.
    pub(crate) fn remove_all(
        &self,
        removals: &[(Table, &[String])],
    ) -> Result<Vec<RemovedRecords>> {
        let txn = self.begin_write("removing records")?;
        let mut removed = Vec::with_capacity(removals.len());
        for (table, keys) in removals {
            let mut opened = txn
                .open_table(table.definition())
                .map_err(index("removing records"))?;
            let mut gone = Vec::new();
            for key in *keys {
                let value = opened
                    .remove(key.as_str())
                    .map_err(index("removing records"))?;
                if let Some(value) = value {
                    gone.push((key.clone(), value.value().to_vec()));
                }
            }
            removed.push(gone);
        }
        self.commit(txn)?;
        Ok(removed)
    }

    /// Records a committed blob of `size` bytes, last accessed at `now_ms` (milliseconds since
    /// the Unix epoch).
    pub(crate) fn touch_blob(&self, digest: &Digest, size: u64, now_ms: u64) -> Result<()> {
        let txn = self.begin_write("recording a blob")?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index("recording a blob"))?;
            let record = BlobRecord::new(size, now_ms);
            let bytes = serde_json::to_vec(&record).expect("a blob record always serialises");
            blobs
                .insert(digest.to_hex().as_str(), bytes.as_slice())
                .map_err(index("recording a blob"))?;
        }
        self.commit(txn)
    }

    /// Every blob row.
    pub(crate) fn blob_rows(&self) -> Result<Vec<BlobRow>> {
        let txn = self.begin_read("listing blobs")?;
        let blobs = txn.open_table(BLOBS).map_err(index("listing blobs"))?;
        let mut rows = Vec::new();
        for entry in blobs.iter().map_err(index("listing blobs"))? {
            let (key, value) = entry.map_err(index("listing blobs"))?;
            let (Ok(digest), Ok(record)) = (
                key.value().parse::<Digest>(),
                serde_json::from_slice::<BlobRecord>(value.value()),
            ) else {
                continue;
            };
            rows.push(BlobRow {
                digest,
                size: record.size,
                last_access_ms: record.last_access_ms(),
            });
        }
        Ok(rows)
    }

    /// Drops `candidates` from the index in one write transaction: records naming them are
    /// detached (or, for [`Purge::Orphans`], the named candidates are spared), then their blob
    /// rows are removed. Reading the records inside the write transaction sees every record
    /// committed before it, so nothing written earlier can be missed.
    pub(crate) fn purge(
        &self,
        candidates: &[Digest],
        policy: Purge,
        schema: &Schema,
    ) -> Result<Purged> {
        let mut doomed: HashSet<Digest> = candidates.iter().copied().collect();
        let txn = self.begin_write("purging")?;
        let mut purged = Purged::default();
        for table in Table::RECORDS {
            let mut opened = txn
                .open_table(table.definition())
                .map_err(index("purging"))?;
            let mut naming = Vec::new();
            for entry in opened.iter().map_err(index("purging"))? {
                let (key, value) = entry.map_err(index("purging"))?;
                let names: Vec<Digest> = (schema.referenced)(table, value.value())
                    .into_iter()
                    .filter(|digest| doomed.contains(digest))
                    .collect();
                if !names.is_empty() {
                    naming.push((key.value().to_owned(), value.value().to_vec(), names));
                }
            }
            for (key, value, names) in naming {
                match policy {
                    Purge::Orphans => names.iter().for_each(|digest| {
                        doomed.remove(digest);
                    }),
                    Purge::Detach => {
                        match (schema.detached)(table, &value) {
                            Some(kept) => opened.insert(key.as_str(), kept.as_slice()).map(drop),
                            None => opened.remove(key.as_str()).map(drop),
                        }
                        .map_err(index("purging"))?;
                        purged.records += 1;
                    }
                }
            }
        }
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index("purging"))?;
            for digest in candidates.iter().filter(|d| doomed.contains(d)) {
                let removed = blobs
                    .remove(digest.to_hex().as_str())
                    .map_err(index("purging"))?;
                let size = removed
                    .and_then(|value| serde_json::from_slice::<BlobRecord>(value.value()).ok())
                    .map_or(0, |record| record.size);
                purged.blobs.push((*digest, size));
            }
        }
        self.commit(txn)?;
        Ok(purged)
    }

    /// Every digest the records name.
    pub(crate) fn referenced(&self, schema: &Schema) -> Result<HashSet<Digest>> {
        let mut named = HashSet::new();
        for table in Table::RECORDS {
            for (_, value) in self.entries(table)? {
                named.extend((schema.referenced)(table, &value));
            }
        }
        Ok(named)
    }

    /// One write transaction for a whole batch of last-access times (milliseconds since the
    /// Unix epoch).
    pub(crate) fn record_access(&self, batch: &[(Digest, u64)]) -> Result<()> {
        let txn = self.begin_write("recording access")?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index("recording access"))?;
            for (digest, when) in batch {
                let key = digest.to_hex();
                let existing = blobs
                    .get(key.as_str())
                    .map_err(index("recording access"))?
                    .and_then(|value| serde_json::from_slice::<BlobRecord>(value.value()).ok());
                let Some(record) = existing else { continue };
                let record = BlobRecord::new(record.size, record.last_access_ms().max(*when));
                let bytes = serde_json::to_vec(&record).expect("a blob record always serialises");
                blobs
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(index("recording access"))?;
            }
        }
        self.commit(txn)
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Record {
        table: table.name(),
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let index = Index::open(&path).unwrap();
            index
                .put_all(Table::Sources, &[("pypi/abc".to_owned(), vec![1, 2, 3])])
                .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let value: Option<Vec<u8>> = index.get(Table::Sources, "pypi/abc").unwrap();
        assert_eq!(value, Some(vec![1, 2, 3]));
        assert_eq!(
            index.get::<Vec<u8>>(Table::Artifacts, "pypi/abc").unwrap(),
            None
        );
        index.remove(Table::Sources, "pypi/abc").unwrap();
        assert!(index.entries(Table::Sources).unwrap().is_empty());
    }

    #[test]
    fn prefix_listing_stops_at_the_first_key_past_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let keys = ["npm/a", "npm/b/c", "npm0", "npl/z", "pypi/a", "npm/"];
        let records: Vec<(String, u8)> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| ((*key).to_owned(), i as u8))
            .collect();
        index.put_all(Table::Sources, &records).unwrap();
        let listed: Vec<String> = index
            .entries_with_prefix(Table::Sources, "npm/")
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(listed, ["npm/", "npm/a", "npm/b/c"]);
        assert!(
            index
                .entries_with_prefix(Table::Documents, "npm/")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            index.entries_with_prefix(Table::Sources, "").unwrap().len(),
            6
        );
    }

    #[test]
    fn removing_records_answers_only_those_that_existed() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index
            .put_all(
                Table::Artifacts,
                &[("a".to_owned(), 1u8), ("b".to_owned(), 2u8)],
            )
            .unwrap();
        index
            .put_all(Table::Sources, &[("s".to_owned(), 3u8)])
            .unwrap();
        let removed = index
            .remove_all(&[
                (Table::Artifacts, &["b".to_owned(), "missing".to_owned()]),
                (Table::Sources, &["s".to_owned()]),
            ])
            .unwrap();
        assert_eq!(
            removed,
            [
                vec![("b".to_owned(), b"2".to_vec())],
                vec![("s".to_owned(), b"3".to_vec())]
            ]
        );
        let left: Vec<String> = index
            .entries(Table::Artifacts)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(left, ["a"]);
        assert_eq!(
            index.remove_all(&[(Table::Artifacts, &[])]).unwrap(),
            [Vec::new()]
        );
    }

    #[test]
    fn access_batches_update_known_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let known = Digest::of(b"known");
        index.touch_blob(&known, 5, 100).unwrap();
        index
            .record_access(&[(known, 200), (Digest::of(b"unknown"), 300)])
            .unwrap();
        let txn = index.begin_read("testing").unwrap();
        let blobs = txn.open_table(BLOBS).unwrap();
        assert_eq!(blobs.len().unwrap(), 1);
        let value = blobs.get(known.to_hex().as_str()).unwrap().unwrap();
        let record: BlobRecord = serde_json::from_slice(value.value()).unwrap();
        assert_eq!(record.last_access_ms(), 200);
    }

    #[test]
    fn rows_keep_milliseconds_and_whole_seconds_for_older_readers() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let digest = Digest::of(b"blob");
        index.touch_blob(&digest, 5, 1_700_000_000_123).unwrap();
        index.record_access(&[(digest, 1_700_000_000_456)]).unwrap();
        let txn = index.begin_read("testing").unwrap();
        let blobs = txn.open_table(BLOBS).unwrap();
        let value = blobs.get(digest.to_hex().as_str()).unwrap().unwrap();
        let stored: serde_json::Value = serde_json::from_slice(value.value()).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"size": 5, "last_access": 1_700_000_000u64, "last_access_ms": 1_700_000_000_456u64})
        );
    }

    #[test]
    fn rows_an_older_pmcache_wrote_read_in_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let (old, new) = (Digest::of(b"old"), Digest::of(b"new"));
        {
            let txn = index.begin_write("testing").unwrap();
            {
                let mut blobs = txn.open_table(BLOBS).unwrap();
                let row = br#"{"size":7,"last_access":1700000000}"#;
                blobs.insert(old.to_hex().as_str(), row.as_slice()).unwrap();
            }
            index.commit(txn).unwrap();
        }
        index.touch_blob(&new, 3, 1_700_000_000_500).unwrap();
        let mut rows = index.blob_rows().unwrap();
        rows.sort_by_key(|row| row.last_access_ms);
        let read: Vec<(Digest, u64, u64)> = rows
            .iter()
            .map(|row| (row.digest, row.size, row.last_access_ms))
            .collect();
        assert_eq!(
            read,
            [(old, 7, 1_700_000_000_000), (new, 3, 1_700_000_000_500)]
        );
    }
}
