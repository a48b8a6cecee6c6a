//! The embedded index (redb): opaque JSON records per table, plus blob sizes and last access.

use std::collections::HashSet;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::error::{Error, Result, index};

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
    pub(crate) last_access: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BlobRecord {
    size: u64,
    last_access: u64,
}

pub(crate) struct Index {
    db: Database,
}

impl Index {
    pub(crate) fn open(path: &Path) -> Result<Index> {
        let db = Database::create(path).map_err(index("opening the index"))?;
        let txn = db.begin_write().map_err(index("creating tables"))?;
        for table in [Table::Documents, Table::Artifacts, Table::Sources] {
            txn.open_table(table.definition())
                .map_err(index("creating tables"))?;
        }
        txn.open_table(BLOBS).map_err(index("creating tables"))?;
        txn.commit().map_err(index("creating tables"))?;
        Ok(Index { db })
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(index("reading"))?;
        let opened = txn
            .open_table(table.definition())
            .map_err(index("reading"))?;
        let Some(value) = opened.get(key).map_err(index("reading"))? else {
            return Ok(None);
        };
        decode(table, key, value.value()).map(Some)
    }

    pub(crate) fn put_all<T: Serialize>(
        &self,
        table: Table,
        records: &[(String, T)],
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(index("writing"))?;
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
        txn.commit().map_err(index("committing"))
    }

    pub(crate) fn remove(&self, table: Table, key: &str) -> Result<()> {
        let txn = self.db.begin_write().map_err(index("removing"))?;
        txn.open_table(table.definition())
            .and_then(|mut opened| opened.remove(key).map(|_| ()).map_err(Into::into))
            .map_err(index("removing"))?;
        txn.commit().map_err(index("committing"))
    }

    pub(crate) fn entries(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(index("listing"))?;
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

    pub(crate) fn touch_blob(&self, digest: &Digest, size: u64, now: u64) -> Result<()> {
        let txn = self.db.begin_write().map_err(index("recording a blob"))?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index("recording a blob"))?;
            let record = BlobRecord {
                size,
                last_access: now,
            };
            let bytes = serde_json::to_vec(&record).expect("a blob record always serialises");
            blobs
                .insert(digest.to_hex().as_str(), bytes.as_slice())
                .map_err(index("recording a blob"))?;
        }
        txn.commit().map_err(index("committing"))
    }

    /// Every blob row.
    pub(crate) fn blob_rows(&self) -> Result<Vec<BlobRow>> {
        let txn = self.db.begin_read().map_err(index("listing blobs"))?;
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
                last_access: record.last_access,
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
        let txn = self.db.begin_write().map_err(index("purging"))?;
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
        txn.commit().map_err(index("committing"))?;
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

    /// One write transaction for a whole batch of last-access times.
    pub(crate) fn record_access(&self, batch: &[(Digest, u64)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(index("recording access"))?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index("recording access"))?;
            for (digest, when) in batch {
                let key = digest.to_hex();
                let existing = blobs
                    .get(key.as_str())
                    .map_err(index("recording access"))?
                    .and_then(|value| serde_json::from_slice::<BlobRecord>(value.value()).ok());
                let Some(mut record) = existing else { continue };
                record.last_access = record.last_access.max(*when);
                let bytes = serde_json::to_vec(&record).expect("a blob record always serialises");
                blobs
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(index("recording access"))?;
            }
        }
        txn.commit().map_err(index("committing"))
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
    fn access_batches_update_known_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let known = Digest::of(b"known");
        index.touch_blob(&known, 5, 100).unwrap();
        index
            .record_access(&[(known, 200), (Digest::of(b"unknown"), 300)])
            .unwrap();
        let txn = index.db.begin_read().unwrap();
        let blobs = txn.open_table(BLOBS).unwrap();
        assert_eq!(blobs.len().unwrap(), 1);
        let value = blobs.get(known.to_hex().as_str()).unwrap().unwrap();
        let record: BlobRecord = serde_json::from_slice(value.value()).unwrap();
        assert_eq!(record.last_access, 200);
    }
}
