//! The proxy core shared by every frontend; it knows no ecosystem.
//!
//! Frontends hand it two kinds of work. Metadata documents are mutable: they are fetched, given
//! to the frontend to render (rewrite) once per upstream version, stored as blobs and served
//! from there until their TTL passes, then revalidated; when the upstream fails, the stale copy
//! is served. Artifacts are immutable: they are fetched once, by a single-flight fill that
//! streams to every waiting client while it writes and hashes, and are committed to the store
//! only when their bytes match the checksum the upstream published. A client can only reach
//! artifacts whose source a fetched document advertised, never an arbitrary URL.

pub mod accept;
mod artifact;
mod body;
mod checksum;
mod config;
mod document;
mod error;
mod freshness;
mod inflight;
mod origin;
mod passthrough;
#[cfg(test)]
mod properties;
mod serve;
mod upstream;

/// Internals that the cargo-fuzz targets in `fuzz/` drive directly; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::serve::{RangeRequest, parse_range};
}

pub use artifact::{ArtifactRecord, ArtifactRequest, ArtifactSource};
pub use body::{Body, empty, full};
pub use checksum::{Algorithm, Checksum};
pub use config::Config;
pub use document::{
    Document, DocumentRequest, KnownCurrent, Rendering, Serving, UpstreamDocument, Variant,
};
pub use error::{Error, Result};
pub use freshness::{Freshness, assess};
pub use origin::{RedirectPolicy, base_url, client_origin, same_origin, same_origin_or_https};
pub use passthrough::PassThrough;
pub use pmcache_store::Digest;
pub use serve::{CACHE_HEADER, CacheStatus, ClientRequest, STALE_HEADER};
pub use upstream::Upstream;

use std::sync::Arc;

use pmcache_store::{Store, Table};

/// The proxy core: the store, the upstream client, fills and document locks. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    upstream: Upstream,
    fills: Arc<inflight::Fills>,
    document_locks: document::DocumentLocks,
    /// Documents being read and rendered at once.
    render_permits: tokio::sync::Semaphore,
}

/// How many upstream documents are read and rendered at once (each may be tens of megabytes,
/// several times that once parsed); more wait their turn.
const CONCURRENT_RENDERS: usize = 4;

impl Proxy {
    /// Builds the core over an opened store.
    pub fn new(store: Store, config: &Config) -> Result<Proxy> {
        Ok(Proxy {
            inner: Arc::new(Inner {
                upstream: Upstream::new(config)?,
                store,
                fills: Arc::default(),
                document_locks: document::DocumentLocks::default(),
                render_permits: tokio::sync::Semaphore::new(CONCURRENT_RENDERS),
            }),
        })
    }

    /// Writes batched bookkeeping (last-access times) to the index.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.flush_access()?)
    }
}

/// The blobs a record of `table` refers to: what `verify` and garbage collection follow.
pub fn referenced_digests(table: Table, record: &[u8]) -> Vec<Digest> {
    match table {
        Table::Documents => document::referenced(record),
        Table::Artifacts => serde_json::from_slice::<ArtifactRecord>(record)
            .map(|record| vec![record.digest])
            .unwrap_or_default(),
        Table::Sources => Vec::new(),
    }
}
