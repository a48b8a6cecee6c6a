//! Prometheus metrics served at `/metrics`: requests and connections answered, the store's size,
//! evictions, garbage collection and full-disk state, and upstreams whose circuit is open.

use std::sync::Mutex;

use pmcache_proxy::Proxy;
use pmcache_store::{Stats, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::Refused;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    ecosystem: String,
    cache: String,
    status: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Counters of what pmcache answered, and the store's figures.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Family<RefusalLabels, Counter>,
    store: Store,
    figures: StoreFigures,
    proxy: Proxy,
    open_circuits: Gauge,
    /// Renders one at a time: store counters are brought up to date by difference.
    rendering: Mutex<()>,
}

/// Counts a connection as open until dropped.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The store's figures, copied from [`Stats`] at each scrape.
#[derive(Default)]
struct StoreFigures {
    size: Gauge,
    max_size: Gauge,
    full: Gauge,
    evicted_blobs: Counter,
    evicted_bytes: Counter,
    gc_runs: Counter,
    collected_files: Counter,
    collected_bytes: Counter,
    quarantined: Counter,
    uncommitted_fills: Counter,
}

impl Metrics {
    pub(crate) fn new(store: Store, proxy: Proxy) -> Metrics {
        let mut registry = Registry::with_prefix("pmcache");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by ecosystem, cache result (hit, miss, stale, revalidated, none), status and role (read, populate, admin, none when refused before a role was granted)",
            requests.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections being served",
            connections_open.clone(),
        );
        let connections_refused = Family::<RefusalLabels, Counter>::default();
        // Both series from the start, at 0: a dashboard or an absent() alert sees them.
        for why in [Refused::ServerFull, Refused::ClientLimit] {
            drop(connections_refused.get_or_create(&RefusalLabels {
                reason: why.as_str(),
            }));
        }
        registry.register(
            "connections_refused",
            "Client connections answered 503 and closed, by reason: server_full (server.max_connections open) or client_limit (server.max_connections_per_client open from that client)",
            connections_refused.clone(),
        );
        let figures = StoreFigures::default();
        figures.register(&mut registry);
        let open_circuits = Gauge::default();
        registry.register(
            "upstream_open_circuits",
            "Upstream origins whose circuit breaker is open: requests to them fail at once",
            open_circuits.clone(),
        );
        proxy.register_metrics(&mut registry);
        Metrics {
            registry,
            requests,
            connections_open,
            connections_refused,
            store,
            figures,
            proxy,
            open_circuits,
            rendering: Mutex::new(()),
        }
    }

    /// Counts one more open connection, until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// Counts one connection refused for being over a limit.
    pub(crate) fn connection_refused(&self, why: Refused) {
        self.connections_refused
            .get_or_create(&RefusalLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts one answered request.
    pub(crate) fn observe(&self, ecosystem: &str, cache: &str, status: u16, role: &str) {
        let labels = RequestLabels {
            role: role.to_owned(),
            ecosystem: ecosystem.to_owned(),
            cache: cache.to_owned(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let _one_at_a_time = self.rendering.lock().unwrap_or_else(|p| p.into_inner());
        self.figures.update(&self.store.stats());
        let open = i64::try_from(self.proxy.open_circuits()).unwrap_or(i64::MAX);
        self.open_circuits.set(open);
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "could not encode metrics");
        }
        text
    }
}

impl StoreFigures {
    fn register(&self, registry: &mut Registry) {
        let store = registry.sub_registry_with_prefix("store");
        store.register(
            "size_bytes",
            "Bytes of blobs in the store",
            self.size.clone(),
        );
        store.register(
            "max_size_bytes",
            "The store's cap (storage.max_size); 0 when unbounded",
            self.max_size.clone(),
        );
        store.register(
            "full",
            "1 while the store's disk is full: misses stream through without being stored",
            self.full.clone(),
        );
        store.register(
            "evicted_blobs",
            "Blobs evicted (least recently used) to stay under the cap",
            self.evicted_blobs.clone(),
        );
        store.register(
            "evicted_bytes",
            "Bytes evicted to stay under the cap",
            self.evicted_bytes.clone(),
        );
        store.register(
            "gc_runs",
            "Maintenance passes (eviction and garbage collection) run",
            self.gc_runs.clone(),
        );
        store.register(
            "collected_files",
            "Unreferenced blobs and stale temp files removed",
            self.collected_files.clone(),
        );
        store.register(
            "collected_bytes",
            "Bytes of unreferenced blobs and stale temp files removed",
            self.collected_bytes.clone(),
        );
        store.register(
            "quarantined_blobs",
            "Corrupt blobs moved to quarantine by verify",
            self.quarantined.clone(),
        );
        store.register(
            "uncommitted_fills",
            "Artifacts served to clients but not stored because a store write failed",
            self.uncommitted_fills.clone(),
        );
    }

    fn update(&self, stats: &Stats) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.size.set(gauge(stats.size_bytes));
        self.max_size.set(gauge(stats.max_size_bytes));
        self.full.set(i64::from(stats.full));
        catch_up(&self.evicted_blobs, stats.evicted_blobs);
        catch_up(&self.evicted_bytes, stats.evicted_bytes);
        catch_up(&self.gc_runs, stats.gc_runs);
        catch_up(&self.collected_files, stats.collected_files);
        catch_up(&self.collected_bytes, stats.collected_bytes);
        catch_up(&self.quarantined, stats.quarantined_blobs);
        catch_up(&self.uncommitted_fills, stats.uncommitted_fills);
    }
}

/// Raises a counter to the store's running total.
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
