//! Advertised artifact sources: which upstream URL and published checksum stand behind the id
//! in an artifact's pmcache URL, as learnt from the documents that list it (packuments, p2
//! files, `/info` files, project pages).
//!
//! A client can only reach artifacts a fetched document advertised: an id no document lists
//! is unknown (404), never a URL pmcache makes up. A lockfile written elsewhere may name a
//! release newer than the cached document, so an unknown id makes pmcache fetch the document
//! again, but at most once per `upstream.refetch_floor`, so that made-up ids cannot send it to
//! the upstream at will. While the upstream is down, an id the cached copy does not list may
//! just be newer than that copy: the answer is "upstream down" (503), never 404.

use std::future::Future;
use std::time::{Duration, SystemTime};

use pmcache_store::{Store, Table};
use url::Url;

use crate::Proxy;
use crate::artifact::{ArtifactSource, Release};
use crate::checksum::Checksum;
use crate::document::Document;
use crate::error::{Error, Result};
use crate::role::Role;
use crate::serve::CacheStatus;

/// One artifact a rendered document lists, as the frontend read it from the upstream document.
/// The proxy records it as the artifact's source when it stores the rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertised {
    /// The id in the artifact's pmcache URL (unique within the ecosystem).
    pub id: String,
    /// The upstream URL, absolute, without fragment.
    pub url: Url,
    /// The checksum the upstream published for it, if any.
    pub checksum: Option<Checksum>,
    /// The package it belongs to, its name as the frontend normalises it: what a purge of the
    /// package finds it by.
    pub package: String,
    /// The version it belongs to, when the frontend can tell: what a purge of one version
    /// finds it by.
    pub version: Option<String>,
    /// When the upstream says that version was published, if it says: what the policy's age
    /// rule judges a request for the artifact by.
    pub published: Option<SystemTime>,
}

/// What pmcache knows of an artifact's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advertisement {
    /// A document advertised it.
    Known(ArtifactSource),
    /// No document lists it, as the upstream confirmed within the refetch floor.
    Unknown {
        /// The artifact asked for, for the error message (`<ecosystem> artifact <id>`).
        artifact: String,
    },
    /// The cached documents do not list it and the upstream cannot be asked whether newer ones
    /// do.
    UpstreamDown {
        /// The artifact asked for, for the error message (`<ecosystem> artifact <id>`).
        artifact: String,
    },
}

impl Advertisement {
    /// The source, or the error a client gets: 404 for [`Advertisement::Unknown`], 503 with
    /// `Retry-After` for [`Advertisement::UpstreamDown`].
    pub fn into_source(self) -> Result<ArtifactSource> {
        match self {
            Advertisement::Known(source) => Ok(source),
            Advertisement::Unknown { artifact } => Err(Error::NotAdvertised { artifact }),
            Advertisement::UpstreamDown { artifact } => Err(Error::AdvertiserDown { artifact }),
        }
    }
}

/// How recent a copy of an advertising document must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recency {
    /// Whatever its usual TTL allows.
    Usual,
    /// No older than this (`upstream.refetch_floor`): the artifact may be newer than the
    /// cached copy.
    Floor(Duration),
}

impl Recency {
    /// The TTL to load the document with, given its usual one.
    pub fn ttl(self, usual: Duration) -> Duration {
        match self {
            Recency::Usual => usual,
            Recency::Floor(floor) => floor.min(usual),
        }
    }
}

impl Proxy {
    /// The source of artifact `id` as far as the documents pmcache holds go, without asking the
    /// upstream: for artifacts whose advertising document cannot be told from their id (a
    /// PyPI file), which clients always read first.
    pub fn advertised(&self, ecosystem: &str, id: &str, role: Role) -> Result<Advertisement> {
        Ok(match self.recorded_source(ecosystem, id, role)? {
            Some(source) => Advertisement::Known(source),
            None => Advertisement::Unknown {
                artifact: describe(ecosystem, id),
            },
        })
    }

    /// The source of artifact `id`, learnt from the documents that may list it: `load` gets
    /// (renders and stores) the document of one of `advertisers` at a recency, and says
    /// `Ok(None)` when the upstream has no such document. Each advertiser is loaded as its TTL
    /// allows, then, if none lists `id`, once more no older than `upstream.refetch_floor`.
    /// Errors of `load` other than "no such document" are returned as they are. A read-role
    /// caller (`role`) also finds what documents relayed to such callers advertised; `load`
    /// must load with the same role.
    pub async fn advertised_source<C, L, F, E>(
        &self,
        ecosystem: &str,
        id: &str,
        role: Role,
        advertisers: &[C],
        mut load: L,
    ) -> Result<Advertisement, E>
    where
        C: Clone,
        L: FnMut(C, Recency) -> F,
        F: Future<Output = Result<Option<Document>, E>>,
        E: From<Error>,
    {
        if let Some(source) = self.recorded_source(ecosystem, id, role)?
            && !self.needs_dating(ecosystem, &source)
        {
            return Ok(Advertisement::Known(source));
        }
        // Per advertiser: None once the upstream said it has no such document, else whether
        // the copy last loaded was served stale (the upstream failed or was too slow).
        let mut stale: Vec<Option<bool>> = vec![Some(false); advertisers.len()];
        for recency in [Recency::Usual, Recency::Floor(self.inner.refetch_floor)] {
            for (advertiser, stale) in advertisers.iter().zip(stale.iter_mut()) {
                // Gone upstream, or just served stale: asking again within this request would
                // only wait out the same fault a second time.
                if stale.is_none() || *stale == Some(true) {
                    continue;
                }
                *stale = load(advertiser.clone(), recency)
                    .await?
                    .map(|document| document.cache == CacheStatus::Stale);
                if let Some(source) = self.recorded_source(ecosystem, id, role)? {
                    return Ok(Advertisement::Known(source));
                }
            }
        }
        // A refresh left running in the background may have stored it meanwhile.
        if let Some(source) = self.recorded_source(ecosystem, id, role)? {
            return Ok(Advertisement::Known(source));
        }
        let artifact = describe(ecosystem, id);
        // A copy served because the upstream is down may just predate the release.
        Ok(match stale.contains(&Some(true)) {
            true => Advertisement::UpstreamDown { artifact },
            false => Advertisement::Unknown { artifact },
        })
    }

    /// The source recorded when a document advertising `id` was stored, or, for a read-role
    /// caller, relayed to one. A storing request only trusts stored documents: what a read-role
    /// request caused pmcache to fetch never decides what is stored.
    fn recorded_source(
        &self,
        ecosystem: &str,
        id: &str,
        role: Role,
    ) -> Result<Option<ArtifactSource>> {
        let key = source_key(ecosystem, id);
        let record: Option<SourceRecord> = self.inner.store.get(Table::Sources, &key)?;
        let stored = record.map(|record| {
            let release = Release {
                package: record.package,
                version: record.version,
                published: record.published,
            };
            ArtifactSource::advertised(record.url, record.checksum, Some(release))
                .recorded(record.other_versions, !record.dated)
        });
        Ok(match (stored, role.may_populate()) {
            (Some(stored), _) => Some(stored),
            (None, true) => None,
            (None, false) => self.inner.relayed.source(&key),
        })
    }
}

/// What the index keeps of an advertised source (table `sources`). Its own type, private to
/// the proxy, so that no one outside can make an [`ArtifactSource`] by deserializing one.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SourceRecord {
    pub(crate) url: Url,
    checksum: Option<Checksum>,
    /// The package it belongs to (absent from records an older pmcache wrote).
    #[serde(default)]
    pub(crate) package: String,
    /// The version it belongs to, if known.
    #[serde(default)]
    pub(crate) version: Option<String>,
    /// Other versions whose metadata named the very same artifact (a Composer tag and branch
    /// at one commit share one archive): a purge of any of them finds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) other_versions: Vec<String>,
    /// When the version was published, if the document said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) published: Option<SystemTime>,
    /// Written by a pmcache that keeps publish times (false in older records): `published`
    /// None then means the document gave none, not that it was never read.
    #[serde(default)]
    pub(crate) dated: bool,
}

impl SourceRecord {
    /// Whether it belongs to `version` of its package.
    pub(crate) fn names_version(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version) || self.other_versions.iter().any(|v| v == version)
    }
}

/// The index key of an advertised source.
pub(crate) fn source_key(ecosystem: &str, id: &str) -> String {
    format!("{ecosystem}/{id}")
}

/// How errors name an artifact: `npm artifact tarball/left-pad/left-pad-1.3.0.tgz`.
fn describe(ecosystem: &str, id: &str) -> String {
    format!("{ecosystem} artifact {id}")
}

/// The index records of a rendering's advertised artifacts.
pub(crate) fn records(ecosystem: &str, advertised: Vec<Advertised>) -> Vec<(String, SourceRecord)> {
    advertised
        .into_iter()
        .map(|advertised| {
            let key = source_key(ecosystem, &advertised.id);
            let record = SourceRecord {
                url: advertised.url,
                checksum: advertised.checksum,
                package: advertised.package,
                version: advertised.version,
                other_versions: Vec::new(),
                published: advertised.published,
                dated: true,
            };
            (key, record)
        })
        .collect()
}

/// Carries into each new record the versions the record it replaces named for the same
/// artifact, so that the last rendering to name an artifact shared by two versions does not
/// hide it from a purge of the other.
pub(crate) fn with_earlier_versions(
    store: &Store,
    mut records: Vec<(String, SourceRecord)>,
) -> Result<Vec<(String, SourceRecord)>> {
    let keys: Vec<String> = records.iter().map(|(key, _)| key.clone()).collect();
    let earlier = store.get_many::<SourceRecord>(Table::Sources, &keys)?;
    for ((_, record), earlier) in records.iter_mut().zip(earlier) {
        let Some(earlier) = earlier else { continue };
        if earlier.url != record.url || earlier.package != record.package {
            continue;
        }
        let versions = earlier.version.into_iter().chain(earlier.other_versions);
        for version in versions {
            if !record.names_version(&version) {
                record.other_versions.push(version);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Config;
    use crate::document::{DocumentRequest, Rendering, Variant};
    use crate::error::Error;

    /// A document upstream on loopback: each answer lists the artifact ids in `listed`, one a
    /// line; `requests` counts what it was asked.
    struct Upstream {
        url: Url,
        listed: Arc<std::sync::Mutex<String>>,
        requests: Arc<AtomicUsize>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Upstream {
        async fn start(listed: &str) -> Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let listed = Arc::new(std::sync::Mutex::new(listed.to_owned()));
            let requests = Arc::new(AtomicUsize::new(0));
            let (body, count) = (Arc::clone(&listed), Arc::clone(&requests));
            let server = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = body.lock().expect("listed").clone();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
            });
            let url = Url::parse(&format!("http://{addr}/doc")).expect("url");
            Upstream {
                url,
                listed,
                requests,
                server,
            }
        }

        fn publish(&self, listed: &str) {
            *self.listed.lock().expect("listed") = listed.to_owned();
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        /// Stops listening: connections are refused from now on.
        async fn stop(&self) {
            self.server.abort();
            while !self.server.is_finished() {
                tokio::task::yield_now().await;
            }
        }
    }

    /// A proxy over a new store with `refetch_floor = floor`, trusting `upstream`.
    fn proxy(dir: &std::path::Path, floor: Duration, upstream: &Url) -> Proxy {
        let store = pmcache_store::Store::open(dir).expect("store");
        let config = Config {
            refetch_floor: floor,
            ..Config::default()
        };
        let proxy = Proxy::new(store, &config).expect("proxy");
        proxy.trust_upstream(upstream);
        proxy
    }

    /// Loads the test document (usual TTL one hour); each line of it advertises that id.
    async fn load(proxy: &Proxy, url: &Url, recency: Recency) -> Result<Option<Document>> {
        let request = DocumentRequest {
            ecosystem: "test",
            key: "doc".to_owned(),
            url: url.clone(),
            accept: "*/*",
            ttl: recency.ttl(Duration::from_secs(3600)),
            allow_redirect: crate::same_origin(url),
            known_current: None,
            role: Role::Populate,
        };
        let document = proxy
            .document(request, |upstream| {
                let text = String::from_utf8_lossy(&upstream.body).into_owned();
                let sources = text
                    .lines()
                    .map(|id| Advertised {
                        id: id.to_owned(),
                        url: upstream.url.join(id).expect("artifact url"),
                        checksum: None,
                        package: "doc".to_owned(),
                        version: Some(id.to_owned()),
                        published: None,
                    })
                    .collect();
                Ok(Rendering {
                    variants: vec![Variant::new("body", "text/plain", text.into_bytes())],
                    sources,
                    hidden_until: None,
                })
            })
            .await?;
        Ok(Some(document))
    }

    async fn source_of(proxy: &Proxy, url: &Url, id: &str) -> Result<Advertisement> {
        proxy
            .advertised_source("test", id, Role::Populate, &[()], |(), recency| {
                load(proxy, url, recency)
            })
            .await
    }

    #[tokio::test]
    async fn an_unlisted_artifact_is_unknown_without_asking_again_within_the_floor() {
        let upstream = Upstream::start("a\n").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy = proxy(dir.path(), Duration::from_secs(3600), &upstream.url);
        let known = source_of(&proxy, &upstream.url, "a").await.expect("a");
        let Advertisement::Known(source) = known else {
            panic!("a is listed: {known:?}")
        };
        assert_eq!(source.url().path(), "/a");
        assert_eq!(upstream.requests(), 1);

        upstream.publish("a\nb\n");
        let unknown = source_of(&proxy, &upstream.url, "b").await.expect("b");
        assert!(
            matches!(unknown, Advertisement::Unknown { .. }),
            "{unknown:?}"
        );
        // The cached copy is younger than the floor: the upstream is not asked again.
        assert_eq!(upstream.requests(), 1);
        let error = unknown.into_source().expect_err("unknown");
        assert_eq!(error.status(), http::StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_unlisted_artifact_refetches_a_document_older_than_the_floor_once() {
        let upstream = Upstream::start("a\n").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy = proxy(dir.path(), Duration::ZERO, &upstream.url);
        source_of(&proxy, &upstream.url, "a").await.expect("a");
        assert_eq!(upstream.requests(), 1);

        upstream.publish("a\nb\n");
        let found = source_of(&proxy, &upstream.url, "b").await.expect("b");
        assert!(matches!(found, Advertisement::Known(_)), "{found:?}");
        assert_eq!(
            upstream.requests(),
            2,
            "one refetch, under the usual TTL none"
        );
        // Known now: no further request.
        source_of(&proxy, &upstream.url, "b")
            .await
            .expect("b again");
        assert_eq!(upstream.requests(), 2);
    }

    #[tokio::test]
    async fn an_unlisted_artifact_while_the_upstream_is_down_is_a_503_never_a_404() {
        let upstream = Upstream::start("a\n").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy = proxy(dir.path(), Duration::ZERO, &upstream.url);
        source_of(&proxy, &upstream.url, "a").await.expect("a");
        upstream.stop().await;

        let down = source_of(&proxy, &upstream.url, "b").await.expect("b");
        assert!(
            matches!(down, Advertisement::UpstreamDown { .. }),
            "{down:?}"
        );
        let error = down.into_source().expect_err("down");
        assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.retry_after().is_some(), "{error}");
        // What the cached copy lists is still served.
        let known = source_of(&proxy, &upstream.url, "a").await.expect("a");
        assert!(matches!(known, Advertisement::Known(_)), "{known:?}");
    }

    #[tokio::test]
    async fn advertisers_the_upstream_does_not_have_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nowhere = Url::parse("http://127.0.0.1:9/").expect("url");
        let proxy = proxy(dir.path(), Duration::ZERO, &nowhere);
        let mut loads = Vec::new();
        let outcome = proxy
            .advertised_source(
                "test",
                "x",
                Role::Populate,
                &[1, 2],
                |advertiser, recency| {
                    loads.push((advertiser, recency));
                    async move { Ok::<_, Error>(None) }
                },
            )
            .await
            .expect("lookup");
        assert!(
            matches!(outcome, Advertisement::Unknown { .. }),
            "{outcome:?}"
        );
        assert_eq!(loads, [(1, Recency::Usual), (2, Recency::Usual)]);
    }

    /// Loads the test document afresh (TTL zero), rendered with one absolute URL per line and
    /// `origin` as the origin of the client asking.
    async fn load_for_client(proxy: &Proxy, url: &Url, origin: &str) -> Document {
        let request = DocumentRequest {
            ecosystem: "test",
            key: "spliced".to_owned(),
            url: url.clone(),
            accept: "*/*",
            ttl: Duration::ZERO,
            allow_redirect: crate::same_origin(url),
            known_current: None,
            role: Role::Populate,
        };
        let origin = origin.to_owned();
        proxy
            .document(request, move |upstream| {
                let text = String::from_utf8_lossy(&upstream.body)
                    .lines()
                    .map(|id| format!("{}/{id}\n", crate::ORIGIN_PLACEHOLDER))
                    .collect::<String>();
                let variant = Variant::new("body", "text/plain", text.into_bytes());
                Ok(Rendering {
                    variants: vec![variant.with_client_origin(origin)],
                    sources: Vec::new(),
                    hidden_until: None,
                })
            })
            .await
            .expect("document")
    }

    fn stored_origin(document: &Document) -> String {
        let variant = document.stored("body").expect("variant");
        variant.origin.as_ref().expect("stored origin").text.clone()
    }

    /// The first client's origin is stored; a new rendering caused by another client keeps it,
    /// even when a blob of the stored copy was evicted meanwhile.
    #[tokio::test]
    async fn a_new_rendering_keeps_the_stored_client_origin() {
        let dir = tempfile::tempdir().expect("temp dir");
        let upstream = Upstream::start("a").await;
        let proxy = proxy(dir.path(), Duration::ZERO, &upstream.url);
        let first = load_for_client(&proxy, &upstream.url, "http://fleet:8080").await;
        assert_eq!(stored_origin(&first), "http://fleet:8080");

        upstream.publish("a\nb");
        let again = load_for_client(&proxy, &upstream.url, "http://stray").await;
        assert_ne!(
            again.digest("body"),
            first.digest("body"),
            "not rendered again"
        );
        assert_eq!(stored_origin(&again), "http://fleet:8080");

        let blob = again.digest("body").expect("digest");
        let path = proxy.inner.store.blob_path(&blob).expect("blob on disk");
        std::fs::remove_file(path).expect("evict the blob");
        upstream.publish("a\nb\nc");
        let evicted = load_for_client(&proxy, &upstream.url, "http://stray").await;
        assert_eq!(stored_origin(&evicted), "http://fleet:8080");
        upstream.stop().await;
    }

    #[test]
    fn the_floor_never_lengthens_a_ttl() {
        let (floor, usual) = (Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(Recency::Usual.ttl(usual), usual);
        assert_eq!(Recency::Floor(floor).ttl(usual), floor);
        assert_eq!(Recency::Floor(floor).ttl(Duration::ZERO), Duration::ZERO);
    }
}
