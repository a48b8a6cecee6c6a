//! Answering a client from a stored document: headers, validators, origin and encoding.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use pmcache_store::Digest;

use super::record::DocumentRecord;
use super::{Document, Serving};
use crate::Proxy;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::metrics::Answer;
use crate::serve::{
    self, BlobAnswer, CACHE_HEADER, CacheStatus, ClientRequest, Content, Ranges, STALE_HEADER,
};

impl Proxy {
    /// The bytes of one variant, for the rare routes that answer with a part of a document
    /// (they parse it; the hot paths serve stored bytes as they are).
    pub async fn variant_bytes(&self, document: &Document, variant: &str) -> Result<bytes::Bytes> {
        let stored = document.stored(variant)?;
        if let Some(bytes) = document.relayed_blob(&stored.digest) {
            return Ok(bytes);
        }
        let path =
            self.inner
                .store
                .blob_path(&stored.digest)
                .ok_or_else(|| Error::BlobRemoved {
                    digest: stored.digest.to_hex(),
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
        let content = self.document_content(document, &blob.0, client)?;
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
        let response = serve::blob_response(content, &answer, client, headers)?;
        Ok(self.watch_abandon(response, Answer::document))
    }

    /// One blob of `document`: from memory for a relayed document, else opened in the store
    /// (counting as a use for eviction only when `client` may change the cache).
    pub(crate) fn document_content(
        &self,
        document: &Document,
        digest: &Digest,
        client: ClientRequest<'_>,
    ) -> Result<Content> {
        if let Some(bytes) = document.relayed_blob(digest) {
            return Ok(Content::Bytes(bytes));
        }
        super::blob_content(&self.inner.store, digest, client.access()).map(Content::from)
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
