//! Documents fetched for read-role requests, which may not change the store: rendered into
//! memory, served from there, and kept a little while in a bounded cache of their own so that a
//! read-role install does not fetch every page once per artifact it lists. Nothing here ever
//! reaches the store, and nothing a populate request is served comes from here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pmcache_store::Digest;

use super::Document;
use crate::advertised::Advertised;
use crate::artifact::{ArtifactSource, Release};

/// The blobs of a rendering kept in memory, by digest (identity bodies, gzip copies, origin
/// offsets), as the store would hold them.
pub(crate) type RelayedBlobs = BTreeMap<Digest, Bytes>;

/// At most this many relayed documents are kept…
const MAX_DOCUMENTS: usize = 256;
/// …holding at most this many bytes of rendered blobs.
const MAX_BYTES: usize = 128 << 20;
/// At most this many advertised sources are kept (a few hundred bytes each).
const MAX_SOURCES: usize = 200_000;

/// The relayed documents and the sources they advertised.
#[derive(Default)]
pub(crate) struct Relayed {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Oldest first.
    documents: VecDeque<Entry>,
    bytes: usize,
    sources: HashMap<String, RelayedSource>,
    /// Source keys, oldest first, to bound `sources`.
    source_order: VecDeque<String>,
}

/// A source a relayed document advertised, with the package and version it belongs to (so
/// that a purge can forget it).
pub(crate) struct RelayedSource {
    source: ArtifactSource,
    package: String,
    version: Option<String>,
}

/// One relayed document.
struct Entry {
    /// The document's key (`ecosystem/key`).
    key: String,
    /// The relayed rendering, its variants in memory.
    document: Document,
    /// When it was fetched or revalidated: fresh for the TTL of the request asking.
    kept_at: Instant,
    /// The bytes of its variants, counted against the cache's bound.
    bytes: usize,
}

impl Relayed {
    /// The relayed copy of `key`, if it was fetched within `ttl`.
    pub(crate) fn fresh(&self, key: &str, ttl: Duration) -> Option<Document> {
        let kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = kept.documents.iter().rev().find(|entry| entry.key == key)?;
        (entry.kept_at.elapsed() < ttl).then(|| entry.document.clone())
    }

    /// Keeps `document` (replacing an older copy of `key`) and the sources it advertised
    /// (`source_key`, source), evicting the oldest beyond the bounds.
    pub(crate) fn keep(
        &self,
        key: &str,
        document: &Document,
        sources: Vec<(String, RelayedSource)>,
    ) {
        let bytes = document
            .relayed
            .as_ref()
            .map_or(0, |blobs| blobs.values().map(Bytes::len).sum());
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        kept.remove(key);
        if bytes <= MAX_BYTES {
            kept.bytes += bytes;
            kept.documents.push_back(Entry {
                key: key.to_owned(),
                document: document.clone(),
                kept_at: Instant::now(),
                bytes,
            });
        }
        while kept.documents.len() > MAX_DOCUMENTS || kept.bytes > MAX_BYTES {
            let Some(oldest) = kept.documents.pop_front() else {
                break;
            };
            kept.bytes -= oldest.bytes;
        }
        for (source_key, source) in sources {
            if kept.sources.insert(source_key.clone(), source).is_none() {
                kept.source_order.push_back(source_key);
            }
        }
        while kept.sources.len() > MAX_SOURCES {
            let Some(oldest) = kept.source_order.pop_front() else {
                break;
            };
            kept.sources.remove(&oldest);
        }
    }

    /// The source a relayed document advertised under `source_key`.
    pub(crate) fn source(&self, source_key: &str) -> Option<ArtifactSource> {
        let kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        kept.sources
            .get(source_key)
            .map(|relayed| relayed.source.clone())
    }

    /// Forgets the relayed copies of `documents` (store keys) and the sources relayed for
    /// `package` (one `version`, or all) among those whose keys start with `sources` (the
    /// ecosystem's), so that a purge reaches read-role answers too. Answers how many documents
    /// and sources were forgotten.
    pub(crate) fn forget(
        &self,
        documents: &[String],
        sources: &str,
        package: &str,
        version: Option<&str>,
    ) -> (usize, usize) {
        let prefix = sources;
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = kept.documents.len();
        for key in documents {
            kept.remove(key);
        }
        let documents = before - kept.documents.len();
        let before = kept.sources.len();
        kept.sources.retain(|key, relayed| {
            !key.starts_with(prefix)
                || relayed.package != package
                || version.is_some_and(|version| relayed.version.as_deref() != Some(version))
        });
        let sources = before - kept.sources.len();
        if sources > 0 {
            let Kept {
                sources: map,
                source_order,
                ..
            } = &mut *kept;
            source_order.retain(|key| map.contains_key(key));
        }
        (documents, sources)
    }
}

impl Kept {
    fn remove(&mut self, key: &str) {
        if let Some(at) = self.documents.iter().position(|entry| entry.key == key)
            && let Some(entry) = self.documents.remove(at)
        {
            self.bytes -= entry.bytes;
        }
    }
}

/// The sources of a relayed rendering, keyed as the store keys them.
pub(crate) fn sources(
    ecosystem: &str,
    advertised: Vec<Advertised>,
) -> Vec<(String, RelayedSource)> {
    advertised
        .into_iter()
        .map(|advertised| {
            let key = crate::advertised::source_key(ecosystem, &advertised.id);
            let release = Release {
                package: advertised.package.clone(),
                version: advertised.version.clone(),
                published: advertised.published,
            };
            let relayed = RelayedSource {
                source: ArtifactSource::advertised(
                    advertised.url,
                    advertised.checksum,
                    Some(release),
                ),
                package: advertised.package,
                version: advertised.version,
            };
            (key, relayed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::record::DocumentRecord;
    use crate::serve::CacheStatus;
    use std::sync::Arc;

    fn document(size: usize) -> Document {
        let blob = Bytes::from(vec![b'x'; size]);
        let record = DocumentRecord {
            url: "http://127.0.0.1:1/doc".to_owned(),
            fetched_at: 0,
            etag: None,
            last_modified: None,
            changed_at: 0,
            rendered_from: None,
            variants: BTreeMap::new(),
            hidden_until: None,
        };
        Document {
            record,
            cache: CacheStatus::Relay,
            ttl: Duration::from_secs(60),
            relayed: Some(Arc::new(BTreeMap::from([(Digest::of(&blob), blob)]))),
        }
    }

    fn source(id: &str) -> (String, RelayedSource) {
        let (package, version) = id.split_once('-').unwrap_or((id, ""));
        let url = url::Url::parse(&format!("http://127.0.0.1:1/{id}")).expect("a test URL");
        let relayed = RelayedSource {
            source: ArtifactSource::advertised(url, None, None),
            package: package.to_owned(),
            version: Some(version.to_owned()),
        };
        (id.to_owned(), relayed)
    }

    #[test]
    fn documents_are_kept_within_their_ttl_and_their_bounds() {
        let relayed = Relayed::default();
        relayed.keep("pypi/a", &document(10), vec![source("pypi/a-1")]);
        assert!(relayed.fresh("pypi/a", Duration::from_secs(60)).is_some());
        assert!(relayed.fresh("pypi/a", Duration::ZERO).is_none());
        assert!(relayed.fresh("pypi/b", Duration::from_secs(60)).is_none());
        assert!(relayed.source("pypi/a-1").is_some());

        for n in 0..MAX_DOCUMENTS {
            relayed.keep(&format!("npm/{n}"), &document(10), Vec::new());
        }
        assert!(relayed.fresh("pypi/a", Duration::from_secs(60)).is_none());
        assert!(
            relayed.source("pypi/a-1").is_some(),
            "sources outlive their document"
        );

        relayed.keep("npm/big", &document(MAX_BYTES - 5), Vec::new());
        relayed.keep("npm/next", &document(10), Vec::new());
        assert!(relayed.fresh("npm/big", Duration::from_secs(60)).is_none());
        assert!(relayed.fresh("npm/next", Duration::from_secs(60)).is_some());
        let kept = relayed.inner.lock().expect("not poisoned");
        assert!(kept.bytes <= MAX_BYTES && kept.documents.len() <= MAX_DOCUMENTS);
    }

    #[test]
    fn a_purge_forgets_the_package_s_documents_and_sources_in_its_ecosystem() {
        let relayed = Relayed::default();
        let ttl = Duration::from_secs(60);
        let in_ecosystem = |ecosystem: &str, id: &str| {
            let (key, relayed) = source(id);
            (format!("{ecosystem}/{key}"), relayed)
        };
        relayed.keep(
            "npm/packument/a",
            &document(10),
            vec![in_ecosystem("npm", "a-1"), in_ecosystem("npm", "a-2")],
        );
        relayed.keep(
            "npm/packument/b",
            &document(10),
            vec![in_ecosystem("npm", "b-1")],
        );
        relayed.keep(
            "pypi/project/a",
            &document(10),
            vec![in_ecosystem("pypi", "a-1")],
        );
        let one = relayed.forget(&["npm/packument/a".to_owned()], "npm/", "a", Some("1"));
        assert_eq!(one, (1, 1));
        assert!(relayed.fresh("npm/packument/a", ttl).is_none());
        assert!(relayed.source("npm/a-1").is_none() && relayed.source("npm/a-2").is_some());
        assert_eq!(relayed.forget(&[], "npm/", "a", None), (0, 1));
        assert!(
            relayed.fresh("npm/packument/b", ttl).is_some() && relayed.source("npm/b-1").is_some()
        );
        assert!(
            relayed.source("pypi/a-1").is_some(),
            "a purge of npm's a forgot PyPI's a"
        );
        let kept = relayed.inner.lock().expect("not poisoned");
        assert_eq!(kept.source_order, ["npm/b-1", "pypi/a-1"]);
    }
}
