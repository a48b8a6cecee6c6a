//! Getting a document fresh: from the cache within its TTL, by joining or starting the one
//! refresh under way, and rendering what the upstream sent: stored for a populate request,
//! kept in the in-memory relay cache for a read-role one.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use pmcache_store::{Digest, Table};

use super::not_found::NOT_FOUND_TTL;
use super::record::{DocumentRecord, blobs_of, hold_blobs, relay_rendering, store_rendering};
use super::relay::{self, RelayedBlobs};
use super::{Document, DocumentRequest, Rendering, UpstreamDocument};
use crate::Proxy;
use crate::advertised::Advertised;
use crate::error::{Error, Result};
use crate::freshness;
use crate::serve::{self, CacheStatus};

/// Identifies the renderer: a new pmcache renders every document again. The generation after
/// the version changes with the rendering rules (2: npm versions without a servable tarball are
/// dropped; 3: npm attestations and Composer sources not on another host are dropped; 4:
/// RubyGems `/info` files filtered by the policy, their `.gem`s recorded with publish times), so
/// that copies rendered by the old rules are not served on.
pub(crate) const RENDERER: &str = concat!(env!("CARGO_PKG_VERSION"), "+4");

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
        self.check_route_host(&request.url, Proxy::is_routed_key(&request.key))?;
        let key = format!("{}/{}", request.ecosystem, request.key);
        if let Some(document) = self.fresh(&key, &request)? {
            return Ok(document);
        }
        let cached = self.usable_record(&key)?;
        let ttl = request.ttl;
        let url = request.url.to_string();
        let proxy = self.clone();
        let task_key = key.clone();
        // Read-role requests share a refresh among themselves, apart from storing ones: a
        // storing request never gets a rendering that was not stored.
        let flight = match request.role.may_populate() {
            true => key.clone(),
            false => format!("relay:{key}"),
        };
        let refresh = self.inner.refreshes.join_or_start(&flight, async move {
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
                    relayed: None,
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

    /// Makes the stored rendering of a document due again, as if it hid a version that has come
    /// of age: the next request renders it from a fresh upstream copy. For a frontend whose
    /// rendering depends on other documents (RubyGems' `/versions` ends with a line for each
    /// filtered `/info`), when one of those changes.
    pub async fn expire_rendering(&self, ecosystem: &str, key: &str) -> Result<()> {
        let key = format!("{ecosystem}/{key}");
        let Some(mut record) = self
            .inner
            .store
            .get::<DocumentRecord>(Table::Documents, &key)?
        else {
            return Ok(());
        };
        record.hidden_until = Some(std::time::UNIX_EPOCH);
        self.put_record(&key, record).await
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
                relayed: None,
            };
            if !document.is_fresh() {
                document.cache = CacheStatus::Stale;
            }
            document
        }))
    }

    /// The cached copy, if it is younger than the TTL or the request knows it is current (for
    /// a read-role request, also a copy relayed to such a request within the TTL); a recent
    /// upstream 404 is answered again.
    fn fresh(&self, key: &str, request: &DocumentRequest) -> Result<Option<Document>> {
        let recent = Some(request.ttl.min(NOT_FOUND_TTL));
        if let Some(not_found) = self.inner.not_found.missing(key, recent) {
            return Err(not_found);
        }
        if let Some(record) = self.usable_record(key)? {
            let document = Document {
                record,
                cache: CacheStatus::Hit,
                ttl: request.ttl,
                relayed: None,
            };
            let current = (document.is_fresh()
                || request
                    .known_current
                    .as_ref()
                    .is_some_and(|known| known(&document)))
                && self.policy_current(request.ecosystem, &document.record);
            if current {
                return Ok(Some(document));
            }
        }
        if request.role.may_populate() {
            return Ok(None);
        }
        let relayed = self
            .inner
            .relayed
            .fresh(key, request.ttl)
            .filter(|document| self.policy_current(request.ecosystem, &document.record));
        // A relayed copy that names stored blobs (one the upstream confirmed) is only good
        // while they are there.
        Ok(relayed.filter(|document| {
            document.relayed.is_some()
                || blobs_of(&document.record)
                    .iter()
                    .all(|digest| self.inner.store.blob_path(digest).is_some())
        }))
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
        // A copy rendered under other rules, or hiding a version that has come of age since,
        // is made again: that takes the upstream's body, not a 304.
        let current = cached.filter(|cached| self.policy_current(request.ecosystem, cached));
        let headers = conditional_headers(request.accept, current);
        let upstream = &self.inner.upstream;
        // One deadline for the whole fetch: each read has its own timeout, but an upstream
        // dripping bytes just within it would otherwise hold every waiting client for ever.
        let timeout = self.inner.document_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let out_of_time = || Error::Timeout {
            url: request.url.to_string(),
            timeout,
        };
        let fetched = tokio::time::timeout_at(
            deadline,
            upstream.get(&request.url, &headers, request.allow_redirect.as_ref()),
        )
        .await
        .unwrap_or_else(|_| Err(out_of_time()));
        let now = freshness::now_unix();
        // What pmcache remembers of the upstream's 404s is answered to every role: only a
        // request that may change the cache changes it.
        let populate = request.role.may_populate();
        let fetched = match fetched {
            // Remembered only where nothing is cached: a good copy stays the one served when
            // the upstream fails later (a 404 then may be a glitch of its own).
            Err(error @ Error::NotFound { .. }) if cached.is_none() => {
                if populate {
                    self.inner.not_found.record_missing(key, &request.url);
                }
                return Err(error);
            }
            other => other?,
        };
        if populate {
            self.inner.not_found.found(key);
        }
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
            if !request.role.may_populate() {
                return Ok(self.relayed(key, record, request, None));
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
                relayed: None,
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
        let body = tokio::time::timeout_at(deadline, fetched.receive_document(limit, buffer))
            .await
            .map_err(|_| out_of_time())??;
        let in_memory = body.len();
        let permit = self.inner.budgets.render_permit(in_memory).await?;
        self.inner.metrics.render_waited(permit.waited);
        let store = self.inner.store.clone();
        let ecosystem = request.ecosystem;
        let record_key = key.to_owned();
        let cached = current.cloned();
        let renderer = self.renderer(ecosystem);
        // Read from the record as stored, even when some of its blobs were evicted (then
        // `cached` is None): the origin stays the fleet's whoever causes the next rendering.
        let stored_origins = self
            .inner
            .store
            .get::<DocumentRecord>(Table::Documents, key)?
            .map(|record| record.origins());
        // Rendering, compressing and the index writes (each an fsync) stay off the runtime, on
        // the render threads.
        let pool = self.inner.render_pools.for_size(in_memory);
        let (record, cache, relayed) = pool
            .run(move || {
                // Read back (if spilled) here: large allocations stay on these threads.
                let (body, _reservation) = body.into_bytes()?;
                let _permit = permit;
                let document = UpstreamDocument {
                    url: url.clone(),
                    content_type,
                    headers: response_headers,
                    body,
                };
                let rendered_from = Some((Digest::of(&document.body), renderer));
                // Reused blobs are held like new ones: eviction must not take them before the
                // record naming them again is written.
                let reused = cached
                    .filter(|cached| cached.rendered_from == rendered_from)
                    .and_then(|cached| hold_blobs(&store, &cached).map(|holds| (cached, holds)));
                let (variants, changed_at, cache, holds, relayed, hidden_until) = match reused {
                    Some((cached, holds)) => (
                        cached.variants,
                        cached.changed_at,
                        CacheStatus::Revalidated,
                        holds,
                        None,
                        cached.hidden_until,
                    ),
                    None => {
                        let mut rendering = render(document)?;
                        let hidden_until = rendering.hidden_until;
                        if let Some(stored) = &stored_origins {
                            rendering.keep_stored_origins(stored);
                        }
                        if populate {
                            let (variants, holds) = store_rendering(&store, ecosystem, rendering)?;
                            (variants, now, CacheStatus::Miss, holds, None, hidden_until)
                        } else {
                            let (variants, blobs, sources) = relay_rendering(rendering)?;
                            let relayed = Some((blobs, sources));
                            let cache = CacheStatus::Relay;
                            (variants, now, cache, Vec::new(), relayed, hidden_until)
                        }
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
                    hidden_until,
                };
                if populate {
                    store.put(Table::Documents, &record_key, &record)?;
                }
                // Only now may eviction take the new blobs: the record naming them is written.
                drop(holds);
                Ok::<_, Error>((record, cache, relayed))
            })
            .await?;
        if !populate {
            return Ok(self.relayed(key, record, request, relayed));
        }
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
            relayed: None,
        })
    }

    /// A document got for a read-role request, which the store does not keep: kept in memory
    /// for the next such request, with the sources its rendering (if new) advertised.
    fn relayed(
        &self,
        key: &str,
        record: DocumentRecord,
        request: &DocumentRequest,
        rendered: Option<(RelayedBlobs, Vec<Advertised>)>,
    ) -> Document {
        let (blobs, sources) = match rendered {
            Some((blobs, sources)) => (Some(Arc::new(blobs)), sources),
            None => (None, Vec::new()),
        };
        let document = Document {
            record,
            cache: CacheStatus::Relay,
            ttl: request.ttl,
            relayed: blobs,
        };
        let sources = relay::sources(request.ecosystem, sources);
        self.inner.relayed.keep(key, &document, sources);
        document
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
