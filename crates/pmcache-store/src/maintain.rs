//! Keeping the store bounded and sound while it serves: eviction of the least recently used
//! blobs above the cap, collection of blobs no record names and of stale temp files, and
//! verification that moves corrupt blobs to quarantine.
//!
//! Every deletion goes through [`Store::delete_blobs`]: claim the digests (skipping those a
//! commit holds), drop or detach the records naming them in one index transaction, then remove
//! the files. A crash between the transaction and the file removal leaves unnamed files, which
//! the next collection removes; never a record naming a missing file.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use crate::Store;
use crate::config::Config;
use crate::digest::{self, Digest};
use crate::error::Result;
use crate::index::{Purge, Schema, Table};
use crate::stats::Counters;

/// How many blobs one deletion transaction handles: bounds how long commits of those digests
/// may wait.
const BATCH: usize = 256;

/// What a maintenance pass (`pmcache gc`) did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Blobs evicted (least recently used first) to get under the cap.
    pub evicted_blobs: u64,
    /// Bytes of the evicted blobs.
    pub evicted_bytes: u64,
    /// Index records dropped or detached because a blob they named was evicted.
    pub detached_records: u64,
    /// Blobs no record named (e.g. replaced renderings of a document), removed.
    pub orphan_blobs: u64,
    /// Bytes of the removed orphan blobs.
    pub orphan_bytes: u64,
    /// Stale temp files removed (left by fills that never finished).
    pub temp_files: u64,
    /// Bytes of the removed temp files.
    pub temp_bytes: u64,
    /// Bytes of blobs in the store afterwards.
    pub size_bytes: u64,
    /// The cap, if any.
    pub max_size_bytes: Option<u64>,
}

impl GcReport {
    /// Blobs and temp files removed in all.
    pub fn freed_bytes(&self) -> u64 {
        self.evicted_bytes + self.orphan_bytes + self.temp_bytes
    }
}

/// What `Store::verify` found, and what it repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// Blob files read and re-hashed.
    pub blobs: u64,
    /// Blob files whose content does not hash to their name.
    pub corrupt_blobs: Vec<String>,
    /// Of those, the ones moved to `quarantine/` (the records naming them dropped, so the next
    /// request fetches them again).
    pub quarantined: Vec<String>,
    /// Index entries checked.
    pub entries: u64,
    /// Index entries naming a blob that is missing.
    pub dangling_entries: Vec<String>,
    /// Index records dropped or detached by the repair.
    pub repaired_entries: u64,
    /// Files left in the temp directory.
    pub temp_files: u64,
}

impl VerifyReport {
    /// True when every blob hashes to its name and every index entry points at a blob.
    pub fn is_consistent(&self) -> bool {
        self.corrupt_blobs.is_empty() && self.dangling_entries.is_empty()
    }
}

/// What [`Store::free_unnamed`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Freed {
    /// Blob files removed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What one deletion removed.
#[derive(Default)]
struct Deleted {
    blobs: u64,
    bytes: u64,
    records: u64,
}

impl Store {
    /// One maintenance pass: records pending access times, evicts down to the low-water mark
    /// when over `config.max_size`, then removes unnamed blobs and stale temp files. Safe while
    /// serving.
    pub fn maintain(&self, schema: &Schema, config: &Config) -> Result<GcReport> {
        let _one_at_a_time = self.exclusive();
        self.flush_access()?;
        let mut report = GcReport {
            max_size_bytes: config.max_size.map(|size| size.0),
            ..GcReport::default()
        };
        if let (Some(max), Some(low)) = (config.max_size, config.low_water()) {
            self.evict(schema, max.0, low, &mut report)?;
        }
        // After eviction, which may leave a document's other renderings unnamed.
        self.collect_orphans(schema, &mut report)?;
        let swept = self.inner.blobs.sweep_stale_temp(config.temp_max_age)?;
        report.temp_files = swept.files;
        report.temp_bytes = swept.bytes;
        report.size_bytes = self.recount()?;
        self.count(&report);
        Ok(report)
    }

    /// Removes those of `candidates` that no record names any more (records just removed named
    /// them, say): a narrow orphan collection. A blob another record names, or that a commit
    /// holds, stays: blobs are content-addressed and may be shared.
    pub fn free_unnamed(&self, schema: &Schema, candidates: &[Digest]) -> Result<Freed> {
        let _one_at_a_time = self.exclusive();
        let unique: BTreeSet<Digest> = candidates.iter().copied().collect();
        let unique: Vec<Digest> = unique.into_iter().collect();
        let mut freed = Freed::default();
        for batch in unique.chunks(BATCH) {
            let deleted = self.delete_blobs(batch, Purge::Orphans, schema)?;
            freed.blobs += deleted.blobs;
            freed.bytes += deleted.bytes;
        }
        let counters = &self.inner.counters;
        Counters::add(&counters.collected_files, freed.blobs);
        Counters::add(&counters.collected_bytes, freed.bytes);
        Ok(freed)
    }

    fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn evict(&self, schema: &Schema, max: u64, low: u64, report: &mut GcReport) -> Result<()> {
        let mut rows = self.inner.index.blob_rows()?;
        let total: u64 = rows.iter().map(|row| row.size).sum();
        if total <= max {
            return Ok(());
        }
        rows.sort_by_key(|row| (row.last_access_ms, row.digest));
        let mut excess = total - low;
        let mut victims = Vec::new();
        for row in rows {
            if excess == 0 {
                break;
            }
            if self.inner.holds.is_held(&row.digest) {
                continue;
            }
            victims.push(row.digest);
            excess = excess.saturating_sub(row.size);
        }
        for batch in victims.chunks(BATCH) {
            let deleted = self.delete_blobs(batch, Purge::Detach, schema)?;
            report.evicted_blobs += deleted.blobs;
            report.evicted_bytes += deleted.bytes;
            report.detached_records += deleted.records;
        }
        if report.evicted_blobs > 0 {
            tracing::info!(
                blobs = report.evicted_blobs,
                bytes = report.evicted_bytes,
                max,
                "evicted the least recently used blobs"
            );
        }
        Ok(())
    }

    fn collect_orphans(&self, schema: &Schema, report: &mut GcReport) -> Result<()> {
        let named = self.inner.index.referenced(schema)?;
        let mut candidates: BTreeSet<Digest> = self
            .inner
            .blobs
            .list()?
            .into_iter()
            .map(|(digest, _)| digest)
            .collect();
        candidates.extend(self.inner.index.blob_rows()?.iter().map(|row| row.digest));
        let orphans: Vec<Digest> = candidates
            .into_iter()
            .filter(|digest| !named.contains(digest))
            .collect();
        for batch in orphans.chunks(BATCH) {
            let deleted = self.delete_blobs(batch, Purge::Orphans, schema)?;
            report.orphan_blobs += deleted.blobs;
            report.orphan_bytes += deleted.bytes;
        }
        Ok(())
    }

    /// Deletes what it can claim of `digests` (see the module comment).
    fn delete_blobs(&self, digests: &[Digest], policy: Purge, schema: &Schema) -> Result<Deleted> {
        let claim = self.inner.holds.claim(digests.iter().copied());
        if claim.digests.is_empty() {
            return Ok(Deleted::default());
        }
        let purged = self.inner.index.purge(&claim.digests, policy, schema)?;
        let mut deleted = Deleted {
            records: purged.records,
            ..Deleted::default()
        };
        for (digest, recorded) in purged.blobs {
            Counters::subtract(&self.inner.counters.size, recorded);
            if let Some(size) = self.inner.blobs.delete(&digest)? {
                deleted.blobs += 1;
                deleted.bytes += size;
            }
        }
        Ok(deleted)
    }

    /// Sets the size counter to what the index records.
    fn recount(&self) -> Result<u64> {
        let size = self
            .inner
            .index
            .blob_rows()?
            .iter()
            .map(|row| row.size)
            .sum();
        self.inner.counters.size.store(size, Ordering::Relaxed);
        Ok(size)
    }

    fn count(&self, report: &GcReport) {
        let counters = &self.inner.counters;
        Counters::add(&counters.gc_runs, 1);
        Counters::add(&counters.evicted_blobs, report.evicted_blobs);
        Counters::add(&counters.evicted_bytes, report.evicted_bytes);
        Counters::add(
            &counters.collected_files,
            report.orphan_blobs + report.temp_files,
        );
        Counters::add(
            &counters.collected_bytes,
            report.orphan_bytes + report.temp_bytes,
        );
    }

    /// Re-hashes every blob and checks that every digest the index names exists. With
    /// `repair`, corrupt blobs go to `quarantine/` and the records naming them, or naming
    /// missing blobs, are dropped or detached, so that the next request fetches them again.
    pub fn verify(&self, schema: &Schema, repair: bool) -> Result<VerifyReport> {
        let _one_at_a_time = self.exclusive();
        let mut report = VerifyReport {
            temp_files: self.inner.blobs.count_temp()?,
            ..VerifyReport::default()
        };
        let mut corrupt = Vec::new();
        for (digest, path) in self.inner.blobs.list()? {
            report.blobs += 1;
            if digest::hash_file(&path)? != digest {
                report.corrupt_blobs.push(digest.to_string());
                corrupt.push(digest);
            }
        }
        let mut missing = HashSet::new();
        for table in Table::RECORDS {
            for (key, value) in self.inner.index.entries(table)? {
                report.entries += 1;
                for digest in (schema.referenced)(table, &value) {
                    if self.blob_path(&digest).is_none() {
                        report
                            .dangling_entries
                            .push(format!("{}:{key} -> {digest}", table.name()));
                        missing.insert(digest);
                    }
                }
            }
        }
        if repair {
            self.quarantine(&corrupt, schema, &mut report)?;
            self.drop_dangling(missing, schema, &mut report)?;
        }
        Ok(report)
    }

    fn quarantine(
        &self,
        corrupt: &[Digest],
        schema: &Schema,
        report: &mut VerifyReport,
    ) -> Result<()> {
        for digest in corrupt {
            let claim = self.inner.holds.claim([*digest]);
            if claim.digests.is_empty() {
                continue;
            }
            let purged = self
                .inner
                .index
                .purge(&claim.digests, Purge::Detach, schema)?;
            report.repaired_entries += purged.records;
            for (_, recorded) in &purged.blobs {
                Counters::subtract(&self.inner.counters.size, *recorded);
            }
            let moved = self.inner.blobs.quarantine(digest)?;
            tracing::warn!(%digest, to = %moved.display(), "corrupt blob moved to quarantine");
            Counters::add(&self.inner.counters.quarantined_blobs, 1);
            report.quarantined.push(digest.to_string());
        }
        Ok(())
    }

    fn drop_dangling(
        &self,
        missing: HashSet<Digest>,
        schema: &Schema,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let claim = self.inner.holds.claim(missing);
        // Under the claim no commit can bring a file back; one that did before stays named.
        let still_missing: Vec<Digest> = claim
            .digests
            .iter()
            .copied()
            .filter(|digest| self.blob_path(digest).is_none())
            .collect();
        if still_missing.is_empty() {
            return Ok(());
        }
        let purged = self
            .inner
            .index
            .purge(&still_missing, Purge::Detach, schema)?;
        report.repaired_entries += purged.records;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::size::ByteSize;

    /// Test records: JSON `{"blob": "<hex>" | null, "pin": "<hex>"}`; detaching keeps the pin.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Record {
        blob: Option<Digest>,
        pin: Digest,
    }

    fn referenced(_: Table, bytes: &[u8]) -> Vec<Digest> {
        serde_json::from_slice::<Record>(bytes)
            .ok()
            .and_then(|record| record.blob)
            .into_iter()
            .collect()
    }

    fn detached(table: Table, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut record: Record = serde_json::from_slice(bytes).ok()?;
        record.blob = None;
        (table == Table::Artifacts).then(|| serde_json::to_vec(&record).ok())?
    }

    const SCHEMA: Schema = Schema {
        referenced,
        detached,
    };

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    /// Stores `body` as a blob named by an artifact record `key`, last accessed at `when`
    /// (milliseconds since the Unix epoch).
    fn artifact(store: &Store, key: &str, body: &[u8], when: u64) -> Digest {
        let committed = store.put_bytes(body).unwrap();
        let record = Record {
            blob: Some(committed.digest),
            pin: committed.digest,
        };
        store.put(Table::Artifacts, key, &record).unwrap();
        store
            .inner
            .index
            .touch_blob(&committed.digest, committed.size, when)
            .unwrap();
        committed.digest
    }

    fn capped(max: u64) -> Config {
        Config {
            max_size: Some(ByteSize(max)),
            ..Config::default()
        }
    }

    fn served(store: &Store, digest: &Digest) -> Option<Vec<u8>> {
        match store.blob_content(digest, crate::Access::Note).unwrap()? {
            crate::BlobContent::Memory(bytes) => Some(bytes.to_vec()),
            crate::BlobContent::File(file) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut bytes).unwrap();
                Some(bytes)
            }
        }
    }

    #[test]
    fn small_blobs_in_memory_follow_deletion_quarantine_and_a_new_commit() {
        let (_dir, store) = store();
        let digest = artifact(&store, "a/small", b"small wheel", 1000);
        assert_eq!(
            served(&store, &digest).as_deref(),
            Some(&b"small wheel"[..])
        );
        assert!(
            store.inner.blobs.hot.get(&digest).is_some(),
            "kept in memory"
        );
        // Removed behind the store's back: not served from memory.
        std::fs::remove_file(store.inner.blobs.path(&digest)).unwrap();
        assert_eq!(served(&store, &digest), None);
        assert!(store.inner.blobs.hot.get(&digest).is_none());

        // A corrupt copy read into memory just as verify quarantines it: the good bytes
        // committed after the quarantine are what is served.
        let digest = artifact(&store, "a/other", b"good bytes", 1000);
        std::fs::write(store.inner.blobs.path(&digest), b"rotten bits").unwrap();
        store.inner.blobs.quarantine(&digest).unwrap();
        store
            .inner
            .blobs
            .hot
            .insert(digest, bytes::Bytes::from_static(b"rotten bits"));
        store.put_bytes(b"good bytes").unwrap();
        assert_eq!(served(&store, &digest).as_deref(), Some(&b"good bytes"[..]));
    }

    #[test]
    fn eviction_takes_least_recently_used_down_to_the_low_water_mark() {
        let (_dir, store) = store();
        let digests: Vec<Digest> = (0..10u8)
            .map(|i| artifact(&store, &format!("a/{i}"), &[i; 100], 1000 + u64::from(i)))
            .collect();
        // Blob 0 is the oldest by its row, but read since: the pending access counts.
        store.open_blob(&digests[0]).unwrap().unwrap();
        let report = store.maintain(&SCHEMA, &capped(800)).unwrap();
        // 1000 bytes over a cap of 800: down to at most 720, so three blobs go.
        assert_eq!(report.evicted_blobs, 3);
        assert_eq!(report.evicted_bytes, 300);
        assert_eq!(report.size_bytes, 700);
        for (i, digest) in digests.iter().enumerate() {
            let evicted = (1..=3).contains(&i);
            assert_eq!(store.blob_path(digest).is_none(), evicted, "blob {i}");
        }
        assert_eq!(store.stats().evicted_blobs, 3);
        assert!(store.verify(&SCHEMA, false).unwrap().is_consistent());
    }

    #[test]
    fn a_quiet_read_leaves_the_eviction_order_as_it_was() {
        let (_dir, store) = store();
        let digests: Vec<Digest> = (0..10u8)
            .map(|i| artifact(&store, &format!("a/{i}"), &[i; 100], 1000 + u64::from(i)))
            .collect();
        // A read-role hit on the oldest blob: served, but not counted as a use.
        store
            .open_blob_as(&digests[0], crate::Access::Quiet)
            .unwrap()
            .unwrap();
        store.flush_access().unwrap();
        let report = store.maintain(&SCHEMA, &capped(800)).unwrap();
        assert_eq!(report.evicted_blobs, 3);
        for (i, digest) in digests.iter().enumerate() {
            assert_eq!(store.blob_path(digest).is_none(), i < 3, "blob {i}");
        }
    }

    #[test]
    fn under_the_cap_nothing_is_evicted() {
        let (_dir, store) = store();
        artifact(&store, "a/1", b"small", 1);
        let report = store.maintain(&SCHEMA, &capped(1000)).unwrap();
        assert_eq!(report.evicted_blobs, 0);
        assert_eq!(report.size_bytes, 5);
    }

    #[test]
    fn eviction_detaches_records_and_keeps_pins() {
        let (_dir, store) = store();
        let digest = artifact(&store, "pinned", b"first bytes", 1);
        let document = Record {
            blob: Some(digest),
            pin: digest,
        };
        store.put(Table::Documents, "doc", &document).unwrap();
        store.maintain(&SCHEMA, &capped(1)).unwrap();
        assert!(store.blob_path(&digest).is_none());
        // The document is dropped; the artifact keeps its pin without its blob.
        assert!(
            store
                .get::<Record>(Table::Documents, "doc")
                .unwrap()
                .is_none()
        );
        let kept: Record = store.get(Table::Artifacts, "pinned").unwrap().unwrap();
        assert_eq!((kept.blob, kept.pin), (None, digest));
        assert!(store.verify(&SCHEMA, false).unwrap().is_consistent());
    }

    #[test]
    fn a_held_blob_is_neither_evicted_nor_collected_until_recorded() {
        let (_dir, store) = store();
        let committed = store.put_bytes(b"being recorded").unwrap();
        store.maintain(&SCHEMA, &capped(1)).unwrap();
        assert!(store.blob_path(&committed.digest).is_some());
        let record = Record {
            blob: Some(committed.digest),
            pin: committed.digest,
        };
        store.put(Table::Artifacts, "k", &record).unwrap();
        drop(committed.hold);
        store.maintain(&SCHEMA, &Config::default()).unwrap();
        assert!(
            store.blob_path(&record.pin).is_some(),
            "named: not an orphan"
        );
        store.maintain(&SCHEMA, &capped(1)).unwrap();
        assert!(store.blob_path(&record.pin).is_none());
    }

    #[test]
    fn orphans_and_stale_temp_files_are_collected() {
        let (dir, store) = store();
        let named = artifact(&store, "a/1", b"named", 1);
        let orphan = store.put_bytes(b"replaced rendering").unwrap();
        let orphan_digest = orphan.digest;
        drop(orphan.hold);
        std::fs::write(dir.path().join("tmp").join("old.part"), b"abc").unwrap();
        let mut live = store.create_temp().unwrap();
        live.write_all(b"in flight").unwrap();
        let config = Config {
            temp_max_age: Duration::ZERO,
            ..Config::default()
        };
        let report = store.maintain(&SCHEMA, &config).unwrap();
        assert_eq!((report.orphan_blobs, report.orphan_bytes), (1, 18));
        assert_eq!((report.temp_files, report.temp_bytes), (1, 3));
        assert!(store.blob_path(&orphan_digest).is_none());
        assert!(store.blob_path(&named).is_some());
        assert!(live.path().is_file());
        assert_eq!(store.stats().gc_runs, 1);
    }

    #[test]
    fn commits_racing_eviction_never_leave_a_dangling_record() {
        let (_dir, store) = store();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                let (store, stop) = (store.clone(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut round = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        // Few distinct contents: writers keep committing digests being evicted.
                        let body = format!("content {}", round % 4);
                        let committed = store.put_bytes(body.as_bytes()).unwrap();
                        let record = Record {
                            blob: Some(committed.digest),
                            pin: committed.digest,
                        };
                        let key = format!("w{writer}/{}", round % 8);
                        store.put(Table::Documents, &key, &record).unwrap();
                        drop(committed.hold);
                        round += 1;
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            store.maintain(&SCHEMA, &capped(1)).unwrap();
            let report = store.verify(&SCHEMA, false).unwrap();
            assert!(report.dangling_entries.is_empty(), "{report:?}");
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(store.verify(&SCHEMA, false).unwrap().is_consistent());
    }

    #[test]
    fn verify_quarantines_corrupt_blobs_and_drops_their_records() {
        let (dir, store) = store();
        let digest = artifact(&store, "a/1", b"good bytes", 1);
        std::fs::write(store.blob_path(&digest).unwrap(), b"bad bytes!").unwrap();
        let report = store.verify(&SCHEMA, true).unwrap();
        assert_eq!(report.corrupt_blobs, vec![digest.to_string()]);
        assert_eq!(report.quarantined, vec![digest.to_string()]);
        assert_eq!(report.repaired_entries, 1);
        assert!(store.blob_path(&digest).is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            1
        );
        let again = store.verify(&SCHEMA, true).unwrap();
        assert!(again.is_consistent(), "{again:?}");
    }

    #[test]
    fn verify_repairs_records_naming_missing_blobs() {
        let (_dir, store) = store();
        let digest = artifact(&store, "a/1", b"vanishing", 1);
        std::fs::remove_file(store.blob_path(&digest).unwrap()).unwrap();
        let report = store.verify(&SCHEMA, true).unwrap();
        assert_eq!(report.dangling_entries.len(), 1);
        assert_eq!(report.repaired_entries, 1);
        assert!(store.verify(&SCHEMA, false).unwrap().is_consistent());
    }

    #[test]
    fn freeing_after_removing_records_spares_blobs_another_record_names() {
        let (_dir, store) = store();
        let shared = artifact(&store, "a/shared-1", b"shared bytes", 1);
        artifact(&store, "a/shared-2", b"shared bytes", 1);
        let own = artifact(&store, "a/own", b"own bytes", 1);
        let before = store.stats().size_bytes;
        let removed = store
            .remove_records(
                Table::Artifacts,
                &["a/shared-1".to_owned(), "a/own".to_owned()],
            )
            .unwrap();
        let named: Vec<Digest> = removed
            .iter()
            .flat_map(|(_, bytes)| referenced(Table::Artifacts, bytes))
            .collect();
        assert_eq!(named, [shared, own]);
        let freed = store.free_unnamed(&SCHEMA, &named).unwrap();
        assert_eq!(freed, Freed { blobs: 1, bytes: 9 });
        assert!(store.blob_path(&own).is_none());
        assert!(
            store.blob_path(&shared).is_some(),
            "still named by a/shared-2"
        );
        assert_eq!(store.stats().size_bytes, before - 9);
        assert!(store.verify(&SCHEMA, false).unwrap().is_consistent());
    }

    #[test]
    fn a_held_blob_is_not_freed() {
        let (_dir, store) = store();
        let digest = artifact(&store, "a/1", b"being committed again", 1);
        store
            .remove_records(Table::Artifacts, &["a/1".to_owned()])
            .unwrap();
        let hold = store.hold(digest);
        assert_eq!(
            store.free_unnamed(&SCHEMA, &[digest]).unwrap(),
            Freed::default()
        );
        drop(hold);
        assert_eq!(store.free_unnamed(&SCHEMA, &[digest]).unwrap().blobs, 1);
    }
}
