//! Purging one package (all its versions, or one) from the store: its documents, the sources
//! they advertised and the artifacts stored from those sources go, and the blobs nothing else
//! names are freed, so that the next request fetches and verifies everything again.
//!
//! The proxy knows no package names: the frontend says which document keys belong to the
//! package, and the sources a rendering recorded say which package and version each artifact
//! belongs to ([`Advertised::package`](crate::Advertised::package)). Sources recorded by a
//! pmcache that did not keep the package yet are not found; their artifacts stay until evicted.

use pmcache_store::{Digest, Store, Table};
use url::Url;

use crate::Proxy;
use crate::advertised::{SourceRecord, source_key};
use crate::artifact::artifact_key;
use crate::error::{Error, Result};

/// What to purge, named as the frontend normalises it.
#[derive(Clone, Debug)]
pub struct PurgeTarget {
    /// `pypi`, `npm`, `rubygems` or `packagist`: the prefix of the ecosystem's keys.
    pub ecosystem: &'static str,
    /// The package's normalised name, as its sources record it.
    pub package: String,
    /// One version only; None: every version.
    pub version: Option<String>,
    /// The keys (within the ecosystem) of the package's documents, as the frontend stores
    /// them (`project/demo`); shared documents such as index roots are not among them.
    pub documents: Vec<String>,
    /// The upstream URL of an artifact stored next to each advertised one without being
    /// advertised itself (a `.gem`'s gemspec), if the ecosystem has such.
    pub companion: Option<fn(&Url) -> Option<Url>>,
}

/// What a purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeReport {
    /// The ecosystem purged in.
    pub ecosystem: String,
    /// The package, normalised.
    pub package: String,
    /// The version purged, or null for all of them.
    pub version: Option<String>,
    /// Document records removed.
    pub documents: u64,
    /// Artifact records removed (pins included).
    pub artifacts: u64,
    /// Artifact source records removed.
    pub sources: u64,
    /// Blob files removed because no record names them any more.
    pub blobs: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Documents and sources forgotten from the memory of read-role answers (0 when no
    /// server runs).
    #[serde(default)]
    pub relayed: u64,
}

impl Proxy {
    /// Purges `target` from the store (see the module comment), off the async runtime.
    /// The documents and sources relayed to read-role requests are forgotten too (they are
    /// only in memory).
    pub async fn purge(&self, mut target: PurgeTarget) -> Result<PurgeReport> {
        let routed = self.routed_keys(target.ecosystem, &target.package, &target.documents);
        target.documents.extend(routed);
        let store = self.inner.store.clone();
        let forget = target.clone();
        let mut report = tokio::task::spawn_blocking(move || purge(&store, &target))
            .await
            .map_err(|e| Error::failed("purge task failed", e))??;
        let keys = document_keys(&forget);
        // A 404 remembered from before the purge must not answer the refetch it asks for.
        for key in &keys {
            self.inner.not_found.found(key);
        }
        let (documents, sources) = self.inner.relayed.forget(
            &keys,
            &source_key(forget.ecosystem, ""),
            &forget.package,
            forget.version.as_deref(),
        );
        report.relayed = count_usize(documents + sources);
        Ok(report)
    }
}

/// Purges `target` from `store`, blocking; for a store no server has open (`pmcache purge`
/// without a running server) and for [`Proxy::purge`].
pub fn purge(store: &Store, target: &PurgeTarget) -> Result<PurgeReport> {
    let ecosystem = target.ecosystem;
    let (source_keys, artifact_keys) = package_sources(store, target)?;
    // One transaction: a reader never finds the documents without their sources (it would
    // not look for the artifacts again within the refetch floor) or the other way round.
    let removed = store.remove_records_in(&[
        (Table::Sources, &source_keys),
        (Table::Documents, &document_keys(target)),
        (Table::Artifacts, &artifact_keys),
    ])?;
    let [sources, documents, artifacts] = <[_; 3]>::try_from(removed)
        .map_err(|_| Error::Internal("a purge removed from other tables".to_owned()))?;
    let named: Vec<Digest> = documents
        .iter()
        .map(|record| (Table::Documents, record))
        .chain(artifacts.iter().map(|record| (Table::Artifacts, record)))
        .flat_map(|(table, (_, bytes))| crate::referenced_digests(table, bytes))
        .collect();
    let freed = store.free_unnamed(&crate::SCHEMA, &named)?;
    let report = PurgeReport {
        ecosystem: ecosystem.to_owned(),
        package: target.package.clone(),
        version: target.version.clone(),
        documents: count(&documents),
        artifacts: count(&artifacts),
        sources: count(&sources),
        blobs: freed.blobs,
        freed_bytes: freed.bytes,
        relayed: 0,
    };
    tracing::info!(
        ecosystem,
        package = %target.package,
        version = target.version.as_deref(),
        documents = report.documents,
        artifacts = report.artifacts,
        sources = report.sources,
        freed_bytes = report.freed_bytes,
        "purged"
    );
    Ok(report)
}

/// The keys of the package's source records, and of the artifact records stored from them:
/// an artifact is stored under its upstream URL, or under the key the frontend chose (Packagist
/// uses the source id), so both are candidates.
fn package_sources(store: &Store, target: &PurgeTarget) -> Result<(Vec<String>, Vec<String>)> {
    let ecosystem = target.ecosystem;
    let prefix = source_key(ecosystem, "");
    let mut sources = Vec::new();
    let mut artifacts = Vec::new();
    for (key, record) in store.records_with_prefix::<SourceRecord>(Table::Sources, &prefix)? {
        if !belongs(&record, target) {
            continue;
        }
        artifacts.push(artifact_key(ecosystem, &record.url));
        if let Some(url) = target
            .companion
            .and_then(|companion| companion(&record.url))
        {
            artifacts.push(artifact_key(ecosystem, &url));
        }
        artifacts.push(key.clone());
        sources.push(key);
    }
    artifacts.sort();
    artifacts.dedup();
    Ok((sources, artifacts))
}

/// The store keys of the target's documents.
fn document_keys(target: &PurgeTarget) -> Vec<String> {
    let ecosystem = target.ecosystem;
    target
        .documents
        .iter()
        .map(|key| format!("{ecosystem}/{key}"))
        .collect()
}

fn belongs(record: &SourceRecord, target: &PurgeTarget) -> bool {
    record.package == target.package
        && match &target.version {
            None => true,
            Some(version) => record.names_version(version),
        }
}

fn count<T>(records: &[T]) -> u64 {
    count_usize(records.len())
}

fn count_usize(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advertised::{self, Advertised};
    use crate::artifact_record::ArtifactRecord;

    fn advertised(package: &str, version: &str) -> Advertised {
        let url = format!("http://127.0.0.1:9/{package}-{version}.tgz");
        Advertised {
            id: format!("tarball/{package}-{version}.tgz"),
            url: Url::parse(&url).expect("url"),
            checksum: None,
            package: package.to_owned(),
            version: Some(version.to_owned()),
            published: None,
        }
    }

    /// Stores `advertised` as the ecosystem `test` would: a source and a stored artifact whose
    /// bytes are `body`.
    fn stored(store: &Store, advertised: &Advertised, body: &[u8]) -> Digest {
        let records = advertised::records("test", vec![advertised.clone()]);
        store.put_all(Table::Sources, &records).expect("sources");
        let committed = store.put_bytes(body).expect("blob");
        let record = ArtifactRecord {
            url: advertised.url.to_string(),
            digest: committed.digest,
            size: committed.size,
            verified: None,
            pin_only: false,
            stored_by: None,
        };
        let key = artifact_key("test", &advertised.url);
        store.put(Table::Artifacts, &key, &record).expect("record");
        committed.digest
    }

    fn target(package: &str, version: Option<&str>) -> PurgeTarget {
        PurgeTarget {
            ecosystem: "test",
            package: package.to_owned(),
            version: version.map(str::to_owned),
            documents: vec![format!("doc/{package}")],
            companion: None,
        }
    }

    #[test]
    fn one_version_goes_and_the_others_and_other_packages_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let one = stored(&store, &advertised("left", "1.0.0"), b"left one");
        let two = stored(&store, &advertised("left", "2.0.0"), b"left two");
        let other = stored(&store, &advertised("right", "1.0.0"), b"right");
        store
            .put(Table::Documents, "test/doc/left", &serde_json::json!({}))
            .expect("document");
        let report = purge(&store, &target("left", Some("1.0.0"))).expect("purge");
        assert_eq!(
            report,
            PurgeReport {
                ecosystem: "test".to_owned(),
                package: "left".to_owned(),
                version: Some("1.0.0".to_owned()),
                documents: 1,
                artifacts: 1,
                sources: 1,
                blobs: 1,
                freed_bytes: 8,
                relayed: 0,
            }
        );
        assert!(store.blob_path(&one).is_none());
        assert!(store.blob_path(&two).is_some() && store.blob_path(&other).is_some());
        let again = purge(&store, &target("left", None)).expect("purge all");
        assert_eq!((again.sources, again.artifacts, again.documents), (1, 1, 0));
        assert!(store.blob_path(&two).is_none());
        assert!(store.blob_path(&other).is_some());
        assert!(
            store
                .verify(&crate::SCHEMA, false)
                .expect("verify")
                .is_consistent()
        );
    }

    #[test]
    fn an_artifact_two_versions_share_goes_with_either() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let tag = advertised("tool", "v1.2.0");
        let digest = stored(&store, &tag, b"archive at one commit");
        // The branch's metadata, rendered later, names the very same archive.
        let branch = Advertised {
            version: Some("dev-main".to_owned()),
            ..tag.clone()
        };
        let records = advertised::records("test", vec![branch]);
        let records = advertised::with_earlier_versions(&store, records).expect("read");
        store.put_all(Table::Sources, &records).expect("sources");
        let report = purge(&store, &target("tool", Some("v1.2.0"))).expect("purge");
        assert_eq!((report.sources, report.artifacts), (1, 1));
        assert!(store.blob_path(&digest).is_none());
    }

    #[test]
    fn a_blob_another_package_names_is_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let shared = stored(&store, &advertised("left", "1.0.0"), b"same bytes");
        stored(&store, &advertised("right", "1.0.0"), b"same bytes");
        let report = purge(&store, &target("left", None)).expect("purge");
        assert_eq!((report.artifacts, report.blobs), (1, 0));
        assert!(store.blob_path(&shared).is_some());
    }

    #[test]
    fn sources_an_older_pmcache_recorded_read_but_belong_to_no_package() {
        let record: SourceRecord =
            serde_json::from_str(r#"{"url":"http://127.0.0.1:9/a.tgz","checksum":null}"#)
                .expect("an old record reads");
        assert!(!belongs(&record, &target("a", None)));
        assert!(record.package.is_empty() && record.version.is_none());
    }

    #[test]
    fn companions_of_purged_artifacts_go_with_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let gem = advertised("left", "1.0.0");
        stored(&store, &gem, b"gem");
        let spec = Url::parse("http://127.0.0.1:9/spec/left-1.0.0").expect("url");
        let committed = store.put_bytes(b"spec").expect("blob");
        let record = ArtifactRecord {
            url: spec.to_string(),
            digest: committed.digest,
            size: committed.size,
            verified: None,
            pin_only: false,
            stored_by: None,
        };
        let key = artifact_key("test", &spec);
        store.put(Table::Artifacts, &key, &record).expect("record");
        // Recorded: the commit's hold may go.
        let spec_blob = committed.digest;
        drop(committed);
        let target = PurgeTarget {
            companion: Some(|url| {
                let file = url.path().trim_start_matches('/').trim_end_matches(".tgz");
                Url::parse(&format!("http://127.0.0.1:9/spec/{file}")).ok()
            }),
            ..target("left", None)
        };
        let report = purge(&store, &target).expect("purge");
        assert_eq!((report.artifacts, report.blobs), (2, 2));
        assert!(store.blob_path(&spec_blob).is_none());
    }
}
