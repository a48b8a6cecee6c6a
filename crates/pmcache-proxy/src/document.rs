//! Metadata documents (index pages, packuments, …): fetched, rendered once per upstream version
//! into the variants pmcache serves, stored as blobs, kept fresh by TTL and conditional
//! revalidation, and served stale when the upstream fails. Serving a cached document reads a
//! blob: it never parses or rewrites anything.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use pmcache_store::{Digest, Hold, Store, Table};
use url::Url;

use crate::Proxy;
use crate::advertised::{self, Advertised};
use crate::body::Body;
use crate::error::{Error, Result};
use crate::freshness;
use crate::metrics::Answer;
use crate::serve::{
    self, BlobAnswer, CACHE_HEADER, CacheStatus, ClientRequest, Ranges, STALE_HEADER,
};
use crate::splice::{self, StoredOrigin};
use crate::upstream;

/// Identifies the renderer: a new pmcache renders every document again.
const RENDERER: &str = env!("CARGO_PKG_VERSION");

/// Bodies smaller than this are not worth a gzip copy.
const GZIP_THRESHOLD: usize = 1024;

/// How long an upstream "no such document" (404/410) is believed without asking again, at most
/// (never longer than the request's TTL): long enough that a resolver asking for the same
/// missing name many times in one run costs one upstream request, short enough that a name
/// published meanwhile appears within the minute.
const NOT_FOUND_TTL: Duration = Duration::from_secs(60);

/// How much larger a gzip-encoded document is once inflated, for the render budget (JSON and
/// HTML indexes compress five- to tenfold).
const GZIP_RATIO_ESTIMATE: u64 = 6;

/// Which document to get and how.
pub struct DocumentRequest {
    /// Keeps ecosystems' keys apart.
    pub ecosystem: &'static str,
    /// The document's identity within the ecosystem (e.g. the normalised project name).
    pub key: String,
    pub url: Url,
    /// The `Accept` header sent upstream.
    pub accept: &'static str,
    /// How long a fetched copy is served without asking the upstream.
    pub ttl: Duration,
    pub allow_redirect: Arc<dyn Fn(&Url) -> bool + Send + Sync>,
    /// A cached copy for which this holds is current whatever its age (a frontend may know so
    /// from another document). Requests that come while a refetch is under way join it rather
    /// than each fetching again.
    pub known_current: Option<KnownCurrent>,
}

/// Which cached documents a frontend knows to be current.
pub type KnownCurrent = Arc<dyn Fn(&Document) -> bool + Send + Sync>;

/// An upstream document as received (decompressed), handed to the frontend's renderer.
pub struct UpstreamDocument {
    /// The URL that answered, after redirects: relative links resolve against it.
    pub url: Url,
    pub content_type: String,
    /// The upstream's response headers (digests a renderer may check the body against).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a frontend renders from one upstream version of a document.
pub struct Rendering {
    pub variants: Vec<Variant>,
    /// The artifacts the rendered document advertises, by the id in their pmcache URL.
    pub sources: Vec<Advertised>,
}

/// One representation pmcache serves (e.g. PEP 503 HTML or PEP 691 JSON).
pub struct Variant {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The entity tag to serve (quoted), when the protocol fixes one; else pmcache's own.
    pub etag: Option<String>,
    /// Whether a gzip copy may be served to clients that accept it.
    pub compress: bool,
    /// The origin the body is stored with where it holds [`ORIGIN_PLACEHOLDER`](crate::ORIGIN_PLACEHOLDER) (see
    /// [`Variant::with_origin`]).
    pub origin: Option<String>,
}

impl Variant {
    /// A variant with pmcache's entity tag, compressed for clients that accept gzip.
    pub fn new(name: &'static str, content_type: &'static str, body: Vec<u8>) -> Variant {
        Variant {
            name,
            content_type,
            body,
            etag: None,
            compress: true,
            origin: None,
        }
    }

    /// The body names the client's origin as [`ORIGIN_PLACEHOLDER`](crate::ORIGIN_PLACEHOLDER) (absolute URLs back to
    /// pmcache): it is stored with `origin` there, answered as stored (gzip copy included) to
    /// clients of that origin, and with their own origin spliced in to others
    /// ([`Proxy::respond_for_origin`]).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Variant {
        self.origin = Some(origin.into());
        self
    }

    /// Serves `etag` (quoted) as the entity tag of every encoding of this variant.
    pub fn with_etag(mut self, etag: String) -> Variant {
        self.etag = Some(etag);
        self
    }

    /// Never compressed in transit (files that are already compressed, and that clients
    /// decompress themselves).
    pub fn uncompressed(mut self) -> Variant {
        self.compress = false;
        self
    }
}

/// How a document variant is answered.
#[derive(Clone, Copy, Debug)]
pub struct Serving {
    /// The `Vary` header.
    pub vary: &'static str,
    /// Append-only files: `Range: bytes=N-` gets a 206 of the identity body (a range past the
    /// end gets the whole body, with 200), and `Repr-Digest`/`Digest` give the sha-256 of the
    /// identity body on every answer, gzip-encoded or not, as the RubyGems compact index does.
    pub appendable: bool,
}

impl Serving {
    /// Served whole, ranges ignored.
    pub fn whole(vary: &'static str) -> Serving {
        Serving {
            vary,
            appendable: false,
        }
    }

    /// Served as an append-only file (see [`Serving::appendable`]).
    pub fn appendable(vary: &'static str) -> Serving {
        Serving {
            vary,
            appendable: true,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct DocumentRecord {
    url: String,
    fetched_at: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When the rendered variants last changed (unix seconds; 0 in records written before
    /// this was kept): the `Last-Modified` served when the upstream sent none.
    #[serde(default)]
    changed_at: u64,
    /// sha256 of the upstream body this was rendered from, and the pmcache version that
    /// rendered it: an unchanged body is not rendered again, even from an upstream that sends
    /// no validators.
    #[serde(default)]
    rendered_from: Option<(Digest, String)>,
    variants: BTreeMap<String, StoredVariant>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredVariant {
    pub(crate) content_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) gzip: Option<StoredBlob>,
    /// The entity tag the frontend chose, quoted; None means pmcache's (the blob's sha256).
    #[serde(default)]
    pub(crate) etag: Option<String>,
    /// Where the client's origin stands in the body, for variants rendered with one.
    #[serde(default)]
    pub(crate) origin: Option<StoredOrigin>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredBlob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// A document ready to serve.
#[derive(Clone)]
pub struct Document {
    pub(crate) record: DocumentRecord,
    /// How it was obtained.
    pub cache: CacheStatus,
    ttl: Duration,
}

impl Document {
    /// How long ago the upstream last confirmed or supplied this copy.
    pub fn age(&self) -> Duration {
        Duration::from_secs(freshness::now_unix().saturating_sub(self.record.fetched_at))
    }

    /// Whether the upstream confirmed or supplied it within the TTL it was asked with.
    pub fn is_fresh(&self) -> bool {
        self.age() < self.ttl
    }

    /// The entity tag a frontend chose for `variant`, quoted.
    pub fn etag(&self, variant: &str) -> Option<&str> {
        self.record.variants.get(variant)?.etag.as_deref()
    }

    /// The sha256 of `variant`'s identity body.
    pub fn digest(&self, variant: &str) -> Option<Digest> {
        Some(self.record.variants.get(variant)?.digest)
    }
}

/// The documents the upstream said it does not have. Kept in memory, bounded: any client can
/// name made-up packages, and none of them may cost an index write.
#[derive(Default)]
pub(crate) struct RecentNotFound {
    missing: Mutex<HashMap<String, Missing>>,
}

/// An upstream 404/410 for a document pmcache has no copy of.
struct Missing {
    at: Instant,
    url: String,
}

/// How many upstream 404s are remembered at most.
const MISSING_CAPACITY: usize = 10_000;

impl RecentNotFound {
    /// The 404 for `key` if the upstream gave one within `max_age` (any age for `None`).
    fn missing(&self, key: &str, max_age: Option<Duration>) -> Option<Error> {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        let entry = missing.get(key)?;
        let recent = max_age.is_none_or(|max_age| entry.at.elapsed() < max_age);
        recent.then(|| Error::NotFound {
            url: entry.url.clone(),
        })
    }

    fn record_missing(&self, key: &str, url: &Url) {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if missing.len() >= MISSING_CAPACITY {
            missing.retain(|_, entry| entry.at.elapsed() < NOT_FOUND_TTL);
        }
        if missing.len() >= MISSING_CAPACITY
            && let Some(any) = missing.keys().next().cloned()
        {
            missing.remove(&any);
        }
        let entry = Missing {
            at: Instant::now(),
            url: url.to_string(),
        };
        missing.insert(key.to_owned(), entry);
    }

    fn found(&self, key: &str) {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.remove(key);
    }
}

impl Proxy {
    /// Gets a document: fresh from the cache, revalidated, fetched and rendered, or stale when
    /// the upstream fails or is slow. `render` runs on the blocking pool, once per upstream
    /// version.
    ///
    /// Concurrent requests for one document join one refresh, run on its own task (so a client
    /// that hangs up cannot cancel it half-way), and get its outcome. With a cached copy, a
    /// request waits for the refresh at most `upstream.stale_timeout`, then serves that copy
    /// marked stale while the refresh goes on in the background: an upstream that hangs must
    /// not make clients time out on what pmcache has (RFC 5861 stale-while-revalidate and
    /// stale-if-error, decided by pmcache for its clients).
    pub async fn document<R>(&self, request: DocumentRequest, render: R) -> Result<Document>
    where
        R: FnOnce(UpstreamDocument) -> Result<Rendering> + Send + 'static,
    {
        let key = format!("{}/{}", request.ecosystem, request.key);
        if let Some(document) = self.fresh(&key, &request)? {
            return Ok(document);
        }
        let cached = self.usable_record(&key)?;
        let ttl = request.ttl;
        let url = request.url.to_string();
        let proxy = self.clone();
        let task_key = key.clone();
        let refresh = self.inner.refreshes.join_or_start(&key, async move {
            proxy.refresh_unless_fresh(&task_key, request, render).await
        });
        let outcome = match &cached {
            Some(_) => {
                let deadline = self.inner.stale_timeout;
                let left = deadline.saturating_sub(refresh.started.elapsed());
                match tokio::time::timeout(left, refresh.outcome).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Arc::new(Error::Slow {
                        url,
                        waited: deadline,
                    })),
                }
            }
            None => refresh.outcome.await,
        };
        match (outcome, cached) {
            (Ok(mut document), _) => {
                document.ttl = ttl;
                Ok(document)
            }
            (Err(error), Some(record)) if error.is_upstream_fault() || error.is_storage_full() => {
                tracing::warn!(document = %key, %error, cache = "stale", "serving the cached copy");
                self.inner.metrics.stale_served(&error);
                // A stale copy must not be cached downstream as if it were fresh.
                Ok(Document {
                    record,
                    cache: CacheStatus::Stale,
                    ttl: Duration::ZERO,
                })
            }
            // The upstream said it has no such document when it last answered: still a 404
            // while it cannot be asked, never a 502 (resolvers stop at a 502).
            (Err(error), None) if error.is_upstream_fault() => {
                match self.inner.not_found.missing(&key, None) {
                    Some(not_found) => {
                        tracing::warn!(document = %key, %error, "answering the last 404 again");
                        Err(not_found)
                    }
                    None => Err(Error::Shared(error)),
                }
            }
            (Err(error), _) => Err(Error::Shared(error)),
        }
    }

    /// One refresh of a document, unless a refresh that finished just before this one started
    /// made it current.
    async fn refresh_unless_fresh<R>(
        &self,
        key: &str,
        request: DocumentRequest,
        render: R,
    ) -> Result<Document>
    where
        R: FnOnce(UpstreamDocument) -> Result<Rendering> + Send + 'static,
    {
        if let Some(document) = self.fresh(key, &request)? {
            return Ok(document);
        }
        let cached = self.usable_record(key)?;
        let outcome = self.refresh(key, &request, cached.as_ref(), render).await;
        if let Err(error) = &outcome {
            tracing::warn!(document = %key, %error, "upstream refresh failed");
        }
        outcome
    }

    /// The cached copy of a document, whatever its age, without asking the upstream: for
    /// frontends that know from another document whether it is current.
    pub fn cached_document(
        &self,
        ecosystem: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Document>> {
        let key = format!("{ecosystem}/{key}");
        Ok(self.usable_record(&key)?.map(|record| {
            let mut document = Document {
                record,
                cache: CacheStatus::Hit,
                ttl,
            };
            if !document.is_fresh() {
                document.cache = CacheStatus::Stale;
            }
            document
        }))
    }

    /// The cached copy, if it is younger than the TTL or the request knows it is current; a
    /// recent upstream 404 is answered again.
    fn fresh(&self, key: &str, request: &DocumentRequest) -> Result<Option<Document>> {
        let recent = Some(request.ttl.min(NOT_FOUND_TTL));
        if let Some(not_found) = self.inner.not_found.missing(key, recent) {
            return Err(not_found);
        }
        let Some(record) = self.usable_record(key)? else {
            return Ok(None);
        };
        let document = Document {
            record,
            cache: CacheStatus::Hit,
            ttl: request.ttl,
        };
        let current = document.is_fresh()
            || request
                .known_current
                .as_ref()
                .is_some_and(|known| known(&document));
        Ok(current.then_some(document))
    }

    /// The cached record, if all of its blobs are still there.
    fn usable_record(&self, key: &str) -> Result<Option<DocumentRecord>> {
        let store = &self.inner.store;
        let record = store.get::<DocumentRecord>(Table::Documents, key)?;
        Ok(record.filter(|record| {
            blobs_of(record)
                .iter()
                .all(|digest| store.blob_path(digest).is_some())
        }))
    }

    async fn refresh<R>(
        &self,
        key: &str,
        request: &DocumentRequest,
        cached: Option<&DocumentRecord>,
        render: R,
    ) -> Result<Document>
    where
        R: FnOnce(UpstreamDocument) -> Result<Rendering> + Send + 'static,
    {
        let headers = conditional_headers(request.accept, cached);
        let upstream = &self.inner.upstream;
        let fetched = upstream
            .get(&request.url, &headers, request.allow_redirect.as_ref())
            .await;
        let now = freshness::now_unix();
        let fetched = match fetched {
            // Remembered only where nothing is cached: a good copy stays the one served when
            // the upstream fails later (a 404 then may be a glitch of its own).
            Err(error @ Error::NotFound { .. }) if cached.is_none() => {
                self.inner.not_found.record_missing(key, &request.url);
                return Err(error);
            }
            other => other?,
        };
        self.inner.not_found.found(key);
        if fetched.status == StatusCode::NOT_MODIFIED {
            let Some(cached) = cached else {
                return Err(Error::Document {
                    url: request.url.to_string(),
                    source: "answered 304 to an unconditional request".into(),
                });
            };
            // RFC 9111 §4.3.4: a 304 carries the current validators; keep them for next time.
            let mut record = cached.clone();
            record.fetched_at = now;
            if let Some(etag) = fetched.header(header::ETAG) {
                record.etag = Some(etag.to_owned());
            }
            if let Some(last_modified) = fetched.header(header::LAST_MODIFIED) {
                record.last_modified = Some(last_modified.to_owned());
            }
            if self.inner.store.is_full() {
                // The new fetch time can wait: a failed index write would cost more.
                tracing::debug!(document = %key, "store full: revalidation not recorded");
            } else if let Err(error) = self.put_record(key, record.clone()).await {
                // A full disk cannot take the new fetch time: serve the confirmed copy anyway
                // (it is revalidated again next time).
                if !error.is_storage_full() {
                    return Err(error);
                }
                if let Error::Store(store_error) = &error {
                    self.inner.store.storage_failed(store_error);
                }
            }
            return Ok(Document {
                record,
                cache: CacheStatus::Revalidated,
                ttl: request.ttl,
            });
        }
        let etag = fetched.header(header::ETAG).map(str::to_owned);
        let last_modified = fetched.header(header::LAST_MODIFIED).map(str::to_owned);
        let content_type = fetched
            .header(header::CONTENT_TYPE)
            .unwrap_or("")
            .to_owned();
        let response_headers = fetched.headers.clone();
        let url = fetched.url.clone();
        // The body is received as it arrives, whatever else is waiting (see `budget`); only the
        // render waits for room in memory.
        let buffer = self.inner.budgets.body_buffer(&self.inner.store);
        let limit = upstream.max_document_size();
        let received = fetched.receive_document(limit, buffer).await?;
        let in_memory = if received.gzipped {
            received.body.len().saturating_mul(GZIP_RATIO_ESTIMATE)
        } else {
            received.body.len()
        };
        let permit = self.inner.budgets.render_permit(in_memory).await?;
        self.inner.metrics.render_waited(permit.waited);
        let gzipped = received.gzipped;
        let body = received.body;
        let store = self.inner.store.clone();
        let ecosystem = request.ecosystem;
        let record_key = key.to_owned();
        let cached = cached.cloned();
        // Rendering, compressing and the index writes (each an fsync) stay off the runtime, on
        // the render threads.
        let pool = self.inner.render_pools.for_size(in_memory);
        let (record, cache) = pool
            .run(move || {
                // Read back (if spilled) and decoded here: large allocations stay on these threads.
                let (body, _reservation) = body.into_bytes()?;
                let _permit = permit;
                let body = upstream::decode_document(&url, body, gzipped, limit)?;
                let document = UpstreamDocument {
                    url: url.clone(),
                    content_type,
                    headers: response_headers,
                    body,
                };
                let rendered_from = Some((Digest::of(&document.body), RENDERER.to_owned()));
                // Reused blobs are held like new ones: eviction must not take them before the
                // record naming them again is written.
                let reused = cached
                    .filter(|cached| cached.rendered_from == rendered_from)
                    .and_then(|cached| hold_blobs(&store, &cached).map(|holds| (cached, holds)));
                let (variants, changed_at, cache, holds) = match reused {
                    Some((cached, holds)) => (
                        cached.variants,
                        cached.changed_at,
                        CacheStatus::Revalidated,
                        holds,
                    ),
                    None => {
                        let rendering = render(document)?;
                        let (variants, holds) = store_rendering(&store, ecosystem, rendering)?;
                        (variants, now, CacheStatus::Miss, holds)
                    }
                };
                let record = DocumentRecord {
                    url: url.to_string(),
                    fetched_at: now,
                    etag,
                    last_modified,
                    changed_at,
                    rendered_from,
                    variants,
                };
                store.put(Table::Documents, &record_key, &record)?;
                // Only now may eviction take the new blobs: the record naming them is written.
                drop(holds);
                Ok::<_, Error>((record, cache))
            })
            .await?;
        tracing::debug!(
            ecosystem,
            document = key,
            cache = cache.as_str(),
            "document stored"
        );
        Ok(Document {
            record,
            cache,
            ttl: request.ttl,
        })
    }

    async fn put_record(&self, key: &str, record: DocumentRecord) -> Result<()> {
        let store = self.inner.store.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            // Evicted since it was read: nothing left to keep fresh.
            let Some(holds) = hold_blobs(&store, &record) else {
                return Ok(());
            };
            store.put(Table::Documents, &key, &record)?;
            drop(holds);
            Ok::<_, pmcache_store::Error>(())
        })
        .await
        .map_err(|e| Error::failed("index task failed", e))??;
        Ok(())
    }

    /// The bytes of one variant, for the rare routes that answer with a part of a document
    /// (they parse it; the hot paths serve stored bytes as they are).
    pub async fn variant_bytes(&self, document: &Document, variant: &str) -> Result<bytes::Bytes> {
        let stored = document.stored(variant)?;
        let path =
            self.inner.store.blob_path(&stored.digest).ok_or_else(|| {
                Error::Internal(format!("document blob {} vanished", stored.digest))
            })?;
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| Error::failed("read task failed", e))?
            .map_err(|e| Error::failed("reading a document blob", e))?;
        Ok(bytes.into())
    }

    /// Answers a client with one variant of a document: 304 when its `If-None-Match` names the
    /// variant (or its `If-Modified-Since` is no older than it), gzip when accepted and stored,
    /// ranges and digests as `serving` says, HEAD without a body.
    pub fn respond(
        &self,
        document: &Document,
        variant: &str,
        client: ClientRequest<'_>,
        serving: Serving,
    ) -> Result<Response<Body>> {
        let stored = document.stored(variant)?;
        // A 206 is a slice of the identity body: never compress a range request's answer.
        let ranged = serving.appendable && client.headers.contains_key(header::RANGE);
        let (blob, gzip) = match (&stored.gzip, client.accepts_gzip() && !ranged) {
            (Some(gzip), true) => ((gzip.digest, gzip.size), true),
            _ => ((stored.digest, stored.size), false),
        };
        let mut headers = document_headers(document, &stored.content_type, gzip, serving.vary);
        if serving.appendable {
            add_digests(&mut headers, &stored.digest);
        }
        let Some(file) = self.inner.store.open_blob(&blob.0)? else {
            return Err(Error::Internal(format!(
                "document blob {} vanished",
                blob.0
            )));
        };
        // A frontend's entity tag names the content whatever its encoding (RubyGems clients
        // compare it with the MD5 of the decoded file); ranges only ever apply to identity.
        let answer = BlobAnswer {
            size: blob.1,
            etag: stored
                .etag
                .clone()
                .unwrap_or_else(|| serve::etag_of(&blob.0)),
            last_modified: Some(last_modified(&document.record)),
            ranges: if serving.appendable && !gzip {
                Ranges::Append
            } else {
                Ranges::Ignore
            },
        };
        let response = serve::blob_response(file, &answer, client, headers)?;
        Ok(self.watch_abandon(response, Answer::document))
    }
}

impl Document {
    pub(crate) fn stored(&self, variant: &str) -> Result<&StoredVariant> {
        self.record.variants.get(variant).ok_or_else(|| {
            Error::Internal(format!(
                "document {} has no {variant} variant",
                self.record.url
            ))
        })
    }
}

/// When the served content last changed: the upstream's `Last-Modified`, or when pmcache last
/// rendered something different if that is later (a new rendering of an unchanged upstream
/// document, by a newer pmcache, must not look unmodified to clients that cached the old one).
pub(crate) fn last_modified(record: &DocumentRecord) -> SystemTime {
    let changed = if record.changed_at == 0 {
        record.fetched_at
    } else {
        record.changed_at
    };
    // Whole seconds, rounded up: a copy a client got earlier in the same second as a new
    // rendering (RubyGems sends its file's mtime as If-Modified-Since) must not look current.
    let rendered = UNIX_EPOCH + Duration::from_secs(changed + 1);
    let upstream = record
        .last_modified
        .as_deref()
        .and_then(|value| httpdate::parse_http_date(value).ok());
    upstream.map_or(rendered, |upstream| upstream.max(rendered))
}

/// RFC 9530 `Repr-Digest` and its predecessor `Digest` (RFC 3230), both sha-256 of the identity
/// body, which is what Bundler checks after appending a 206.
fn add_digests(headers: &mut HeaderMap, identity: &Digest) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(identity.as_bytes());
    headers.insert(
        "repr-digest",
        serve::header_value(&format!("sha-256=:{encoded}:")),
    );
    headers.insert("digest", serve::header_value(&format!("sha-256={encoded}")));
}

pub(crate) fn document_headers(
    document: &Document,
    content_type: &str,
    gzip: bool,
    vary: &'static str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, serve::header_value(content_type));
    let max_age = format!("public, max-age={}", document.ttl.as_secs());
    headers.insert(header::CACHE_CONTROL, serve::header_value(&max_age));
    headers.insert(header::VARY, HeaderValue::from_static(vary));
    headers.insert(
        CACHE_HEADER,
        HeaderValue::from_static(document.cache.as_str()),
    );
    let modified = serve::http_date(last_modified(&document.record));
    headers.insert(header::LAST_MODIFIED, serve::header_value(&modified));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if document.cache == CacheStatus::Stale {
        headers.insert(STALE_HEADER, HeaderValue::from_static("1"));
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 pmcache \"Response is Stale\""),
        );
    }
    headers
}

fn conditional_headers(accept: &'static str, cached: Option<&DocumentRecord>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    if let Some(cached) = cached {
        if let Some(etag) = &cached.etag {
            headers.insert(header::IF_NONE_MATCH, serve::header_value(etag));
        }
        if let Some(last_modified) = &cached.last_modified {
            headers.insert(
                header::IF_MODIFIED_SINCE,
                serve::header_value(last_modified),
            );
        }
    }
    headers
}

/// Stores a rendering's blobs and sources; the holds keep the blobs until their record is
/// written.
fn store_rendering(
    store: &Store,
    ecosystem: &str,
    rendering: Rendering,
) -> Result<(BTreeMap<String, StoredVariant>, Vec<Hold>)> {
    let mut variants = BTreeMap::new();
    let mut holds = Vec::new();
    for variant in rendering.variants {
        let (body, origin) = match &variant.origin {
            Some(origin) => place_origin(store, &variant.body, origin, &mut holds)?,
            None => (variant.body, None),
        };
        let identity = store.put_bytes(&body)?;
        let (digest, size) = (identity.digest, identity.size);
        holds.push(identity.hold);
        let gzip = if variant.compress && body.len() >= GZIP_THRESHOLD {
            let compressed = store.put_bytes(&gzip(&body))?;
            let blob = StoredBlob {
                digest: compressed.digest,
                size: compressed.size,
            };
            holds.push(compressed.hold);
            Some(blob)
        } else {
            None
        };
        let stored = StoredVariant {
            content_type: variant.content_type.to_owned(),
            digest,
            size,
            gzip,
            etag: variant.etag,
            origin,
        };
        variants.insert(variant.name.to_owned(), stored);
    }
    store.put_all(
        Table::Sources,
        &advertised::records(ecosystem, rendering.sources),
    )?;
    Ok((variants, holds))
}

/// `body` with `origin` in place of the placeholder, and the stored offsets blob (held) of a
/// body that holds any.
fn place_origin(
    store: &Store,
    body: &[u8],
    origin: &str,
    holds: &mut Vec<Hold>,
) -> Result<(Vec<u8>, Option<StoredOrigin>)> {
    let (placed, offsets) = splice::place(body, origin);
    if offsets.is_empty() {
        return Ok((placed, None));
    }
    let blob = store.put_bytes(&splice::encode_offsets(&offsets))?;
    let stored = StoredOrigin {
        text: origin.to_owned(),
        offsets: blob.digest,
    };
    holds.push(blob.hold);
    Ok((placed, Some(stored)))
}

/// The stored gzip copy. The fastest level: a cold page's render is mostly spent compressing,
/// and index pages (long runs of similar links) lose little ratio at it.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let output = Vec::with_capacity(body.len() / 4);
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .expect("compressing into memory cannot fail")
}

/// The blobs a stored record refers to, for `verify` and garbage collection.
pub(crate) fn referenced(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<DocumentRecord>(bytes)
        .map(|record| blobs_of(&record))
        .unwrap_or_default()
}

fn blobs_of(record: &DocumentRecord) -> Vec<Digest> {
    record
        .variants
        .values()
        .flat_map(|variant| {
            let gzip = variant.gzip.as_ref().map(|gzip| gzip.digest);
            let offsets = variant.origin.as_ref().map(|origin| origin.offsets);
            std::iter::once(variant.digest).chain(gzip).chain(offsets)
        })
        .collect()
}

/// Holds every blob `record` names (see [`Hold`]) for writing it again; None when one is gone.
fn hold_blobs(store: &Store, record: &DocumentRecord) -> Option<Vec<Hold>> {
    let digests = blobs_of(record);
    let holds: Vec<Hold> = digests.iter().map(|digest| store.hold(*digest)).collect();
    // Checked under the holds: no deletion of these can be under way now.
    digests
        .iter()
        .all(|digest| store.blob_path(digest).is_some())
        .then_some(holds)
}
