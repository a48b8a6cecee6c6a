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
mod advertised;
mod artifact;
mod artifact_record;
mod body;
mod breaker;
mod budget;
mod checksum;
mod config;
mod document;
mod egress;
mod error;
mod first_connection;
mod freshness;
mod inflate;
mod inflight;
mod metrics;
mod origin;
mod passthrough;
pub mod percent;
mod policy;
#[cfg(test)]
mod properties;
mod purge;
mod refreshes;
mod render_pool;
mod role;
mod route;
mod section;
mod serve;
mod splice;
mod spool;
mod tls;
mod upstream;

/// Internals that the cargo-fuzz targets in `fuzz/` drive directly; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::serve::{RangeRequest, parse_range};
}

pub use advertised::{Advertised, Advertisement, Recency};
pub use artifact::{ArtifactRequest, ArtifactSource, Release};
pub use artifact_record::{ArtifactRecord, StoredBy};
pub use body::{Body, empty, full};
pub use checksum::{Algorithm, Checksum};
pub use config::Config;
pub use document::{
    Document, DocumentRequest, KnownCurrent, Rendering, Serving, UpstreamDocument, Variant,
};
pub use error::{BoxError, Classify, Error, Refusal, Result, chain};
pub use freshness::{Freshness, assess};
pub use origin::{RedirectPolicy, base_url, client_origin, host_listed, same_origin};
pub use passthrough::PassThrough;
pub use pmcache_store::Digest;
pub use purge::{PurgeReport, PurgeTarget, purge};
pub use role::{ANONYMOUS_POPULATE, Caller, ReadMisses, Role};
pub use route::Routing;
pub use section::{FrontendConfig, FrontendDefaults};
pub use serve::{CACHE_HEADER, CacheStatus, ClientRequest, STALE_HEADER};
pub use splice::ORIGIN_PLACEHOLDER;
pub use upstream::Upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pmcache_store::{Schema, Store, Table};

/// The proxy core: the store, the upstream client, fills and document locks. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    upstream: Upstream,
    fills: Arc<inflight::Fills>,
    refreshes: Arc<refreshes::Refreshes>,
    not_found: document::RecentNotFound,
    /// Documents rendered for read-role requests, kept in memory (never in the store).
    relayed: document::Relayed,
    budgets: budget::Budgets,
    render_pools: render_pool::RenderPools,
    /// Gzip copies of documents spliced for origins other than their stored one.
    derived: splice::Derived,
    /// How long a request with a cached copy waits for its refresh (`upstream.stale_timeout`).
    stale_timeout: std::time::Duration,
    /// The longest a whole document fetch may take (`upstream.document_timeout`).
    document_timeout: std::time::Duration,
    /// How old advertising documents must be before an artifact they do not list makes
    /// pmcache fetch them again (`upstream.refetch_floor`).
    refetch_floor: std::time::Duration,
    /// `[auth] read_misses = "refuse"`: read-role artifact misses are refused, not relayed.
    refuse_read_misses: AtomicBool,
    /// The fleet's supply-chain policy (`[policy]`, `[<ecosystem>.policy]`, `[[routes]]`).
    policy: std::sync::RwLock<Arc<policy::InForce>>,
    metrics: metrics::ProxyMetrics,
}

impl Proxy {
    /// Builds the core over an opened store.
    pub fn new(store: Store, config: &Config) -> Result<Proxy> {
        let metrics = metrics::ProxyMetrics::default();
        Ok(Proxy {
            inner: Arc::new(Inner {
                upstream: Upstream::new(config, metrics.clone())?,
                store,
                fills: Arc::default(),
                refreshes: Arc::default(),
                not_found: document::RecentNotFound::default(),
                relayed: document::Relayed::default(),
                budgets: budget::Budgets::default(),
                render_pools: render_pool::RenderPools::start()?,
                derived: splice::Derived::default(),
                stale_timeout: config.stale_timeout,
                document_timeout: config.document_timeout,
                refetch_floor: config.refetch_floor,
                refuse_read_misses: AtomicBool::new(false),
                policy: std::sync::RwLock::default(),
                metrics,
            }),
        })
    }

    /// Adds the proxy's metrics (upstream requests and latency, render waits, stale and
    /// abandoned answers) to `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// Marks `upstream` as a configured upstream: its host, on its port, may be on a private
    /// address.
    pub fn trust_upstream(&self, upstream: &url::Url) {
        self.inner.upstream.trust(upstream);
    }

    /// Lets a host an operator listed (`host` or `host:port`, as in `packagist.dist_hosts`) be on
    /// a private address; false when `listed` is no host.
    pub fn trust_listed(&self, listed: &str) -> bool {
        self.inner.upstream.trust_listed(listed)
    }

    /// What a read-role request that misses an artifact gets (`[auth] read_misses`).
    pub fn set_read_misses(&self, policy: ReadMisses) {
        let refuse = policy == ReadMisses::Refuse;
        self.inner
            .refuse_read_misses
            .store(refuse, Ordering::Relaxed);
    }

    pub(crate) fn read_misses(&self) -> ReadMisses {
        match self.inner.refuse_read_misses.load(Ordering::Relaxed) {
            true => ReadMisses::Refuse,
            false => ReadMisses::Relay,
        }
    }

    /// How many upstream origins have an open circuit breaker now.
    pub fn open_circuits(&self) -> usize {
        self.inner.upstream.open_circuits()
    }

    /// Writes batched bookkeeping (last-access times) to the index.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.flush_access()?)
    }
}

/// How the store reads the proxy's records: what `verify`, eviction and garbage collection
/// follow.
pub const SCHEMA: Schema = Schema {
    referenced: referenced_digests,
    detached,
};

/// The blobs a record of `table` refers to.
pub fn referenced_digests(table: Table, record: &[u8]) -> Vec<Digest> {
    match table {
        Table::Documents => document::referenced(record),
        Table::Artifacts => serde_json::from_slice::<ArtifactRecord>(record)
            .ok()
            .filter(|record| !record.pin_only)
            .map(|record| vec![record.digest])
            .unwrap_or_default(),
        Table::Sources => Vec::new(),
    }
}

/// What is kept of a record whose blobs are deleted: an artifact's pin (see
/// [`ArtifactRecord::pin_only`]); documents are simply fetched again.
fn detached(table: Table, record: &[u8]) -> Option<Vec<u8>> {
    match table {
        Table::Artifacts => serde_json::from_slice::<ArtifactRecord>(record)
            .ok()?
            .detached()
            .and_then(|kept| serde_json::to_vec(&kept).ok()),
        Table::Documents | Table::Sources => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verified: Option<Checksum>) -> Vec<u8> {
        let record = ArtifactRecord {
            url: "http://127.0.0.1:1/dist.zip".to_owned(),
            digest: Digest::of(b"dist"),
            size: 4,
            verified,
            pin_only: false,
            stored_by: None,
        };
        serde_json::to_vec(&record).expect("a record serialises")
    }

    #[test]
    fn evicted_pins_outlive_their_blob_and_name_nothing() {
        let pinned = record(None);
        let kept = (SCHEMA.detached)(Table::Artifacts, &pinned).expect("a pin is kept");
        let kept: ArtifactRecord = serde_json::from_slice(&kept).expect("still a record");
        assert!(kept.pin_only);
        assert_eq!(kept.digest, Digest::of(b"dist"));
        let kept = serde_json::to_vec(&kept).expect("a record serialises");
        assert!((SCHEMA.referenced)(Table::Artifacts, &kept).is_empty());
        let sha1 = Checksum {
            algorithm: Algorithm::Sha1,
            hex: "00".repeat(20),
        };
        assert!((SCHEMA.detached)(Table::Artifacts, &record(Some(sha1))).is_none());
    }
}
