//! Metadata documents (index pages, packuments, …): fetched, rendered once per upstream version
//! into the variants pmcache serves, stored as blobs, kept fresh by TTL and conditional
//! revalidation, and served stale when the upstream fails. Serving a cached document reads a
//! blob: it never parses or rewrites anything.
//!
//! This module holds the types frontends use; `refresh` gets a document fresh, `respond`
//! answers a client from it, `record` is what the index stores, and `not_found` remembers
//! what the upstream does not have.

mod not_found;
pub(crate) mod record;
mod refresh;
pub(crate) use refresh::RENDERER;
mod relay;
mod respond;

pub(crate) use not_found::RecentNotFound;
pub(crate) use record::{DocumentRecord, StoredVariant, gzip, referenced};
pub(crate) use relay::Relayed;
pub(crate) use respond::{document_headers, last_modified};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use pmcache_store::Digest;
use url::Url;

use crate::advertised::Advertised;
use crate::error::{Error, Result};
use crate::freshness;
use crate::role::Role;
use crate::serve::CacheStatus;

/// Which document to get and how.
pub struct DocumentRequest {
    /// Keeps ecosystems' keys apart.
    pub ecosystem: &'static str,
    /// The document's identity within the ecosystem (e.g. the normalised project name).
    pub key: String,
    /// Where the upstream publishes the document.
    pub url: Url,
    /// The `Accept` header sent upstream.
    pub accept: &'static str,
    /// How long a fetched copy is served without asking the upstream.
    pub ttl: Duration,
    /// Whether the fetch may follow an upstream redirect to this URL.
    pub allow_redirect: Arc<dyn Fn(&Url) -> bool + Send + Sync>,
    /// A cached copy for which this holds is current whatever its age (a frontend may know so
    /// from another document). Requests that come while a refetch is under way join it rather
    /// than each fetching again.
    pub known_current: Option<KnownCurrent>,
    /// The role of the client asking: a read-role request is served what the store has while
    /// it is fresh, and anything newer is fetched and rendered for it alone, never stored.
    pub role: Role,
}

/// Which cached documents a frontend knows to be current.
pub type KnownCurrent = Arc<dyn Fn(&Document) -> bool + Send + Sync>;

/// An upstream document as received (decompressed), handed to the frontend's renderer.
pub struct UpstreamDocument {
    /// The URL that answered, after redirects: relative links resolve against it.
    pub url: Url,
    /// The upstream's `Content-Type` (which format it answered in, e.g. PEP 691 JSON or HTML).
    pub content_type: String,
    /// The upstream's response headers (digests a renderer may check the body against).
    pub headers: HeaderMap,
    /// The document, decompressed.
    pub body: Bytes,
}

/// What a frontend renders from one upstream version of a document.
pub struct Rendering {
    /// The representations to store and serve, each under its own name.
    pub variants: Vec<Variant>,
    /// The artifacts the rendered document advertises, by the id in their pmcache URL (the
    /// policy's hidden versions' too: a request for one gets the policy's reason, not a 404).
    pub sources: Vec<Advertised>,
    /// When the first version the policy's age rule hid from this rendering comes of age: the
    /// rendering is made again then, whatever its TTL.
    pub hidden_until: Option<std::time::SystemTime>,
}

/// One representation pmcache serves (e.g. PEP 503 HTML or PEP 691 JSON).
pub struct Variant {
    /// What the frontend asks [`Proxy::respond`](crate::Proxy::respond) for (e.g. `json`).
    pub name: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The rendered bytes, stored as a blob.
    pub body: Vec<u8>,
    /// The entity tag to serve (quoted), when the protocol fixes one; else pmcache's own.
    pub etag: Option<String>,
    /// Whether a gzip copy may be served to clients that accept it.
    pub compress: bool,
    /// The origin the body is stored with where it holds [`ORIGIN_PLACEHOLDER`](crate::ORIGIN_PLACEHOLDER) (see
    /// [`Variant::with_origin`]).
    pub origin: Option<String>,
    /// Whether `origin` is only the origin of the client that happened to cause this rendering
    /// ([`Variant::with_client_origin`]), which gives way to the origin already stored.
    pub origin_from_client: bool,
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
            origin_from_client: false,
        }
    }

    /// The body names the client's origin as [`ORIGIN_PLACEHOLDER`](crate::ORIGIN_PLACEHOLDER) (absolute URLs back to
    /// pmcache): it is stored with `origin` there, answered as stored (gzip copy included) to
    /// clients of that origin, and with their own origin spliced in to others
    /// ([`Proxy::respond_for_origin`](crate::Proxy::respond_for_origin)).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Variant {
        self.origin = Some(origin.into());
        self.origin_from_client = false;
        self
    }

    /// As [`Variant::with_origin`], with the origin of the client whose request caused this
    /// rendering (no `public_url` is configured). A new rendering of a document already stored
    /// keeps the stored copy's origin instead: a stray or made-up `Host` that happens to ask
    /// when the upstream changed must not take the stored copies (gzip included) away from the
    /// origin the fleet uses.
    pub fn with_client_origin(mut self, origin: impl Into<String>) -> Variant {
        self.origin = Some(origin.into());
        self.origin_from_client = true;
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

/// A document ready to serve.
#[derive(Clone)]
pub struct Document {
    pub(crate) record: DocumentRecord,
    /// How it was obtained.
    pub cache: CacheStatus,
    ttl: Duration,
    /// The blobs of a rendering made for a read-role request, held in memory instead of the
    /// store; None for a stored document.
    pub(crate) relayed: Option<Arc<relay::RelayedBlobs>>,
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

impl Document {
    /// A blob of a relayed document, held in memory.
    pub(crate) fn relayed_blob(&self, digest: &Digest) -> Option<Bytes> {
        self.relayed.as_ref()?.get(digest).cloned()
    }

    /// Whether this copy was rendered for a read-role request and is held only in memory.
    pub(crate) fn is_relayed(&self) -> bool {
        self.relayed.is_some()
    }

    pub(crate) fn stored(&self, variant: &str) -> Result<&StoredVariant> {
        self.record.variants.get(variant).ok_or_else(|| {
            Error::Internal(format!(
                "document {} has no {variant} variant",
                self.record.url
            ))
        })
    }
}

/// A stored document blob to serve (see [`Store::blob_content`]); like [`open_blob`], a blob
/// its record named a moment ago may have been purged or evicted since.
///
/// [`Store::blob_content`]: pmcache_store::Store::blob_content
pub(crate) fn blob_content(
    store: &pmcache_store::Store,
    digest: &Digest,
    access: pmcache_store::Access,
) -> Result<pmcache_store::BlobContent> {
    store
        .blob_content(digest, access)?
        .ok_or_else(|| Error::BlobRemoved {
            digest: digest.to_hex(),
        })
}

/// Opens a stored document blob; one its record named a moment ago may have been purged or
/// evicted since (a 503 the client retries).
pub(crate) fn open_blob(
    store: &pmcache_store::Store,
    digest: &Digest,
    access: pmcache_store::Access,
) -> Result<std::fs::File> {
    store
        .open_blob_as(digest, access)?
        .ok_or_else(|| Error::BlobRemoved {
            digest: digest.to_hex(),
        })
}
