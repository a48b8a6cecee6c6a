//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    ecosystem: String,
    cache: String,
    status: String,
}

/// Counters of what pmcache answered.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Counter,
}

/// Counts a connection as open until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pmcache");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by ecosystem, cache result (hit, miss, stale, revalidated, none) and status",
            requests.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections being served",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections answered 503 and closed because server.max_connections were open",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            requests,
            connections_open,
            connections_refused,
        }
    }

    /// Counts one more open connection, until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// Counts one connection refused for being over the limit.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts one answered request.
    pub fn observe(&self, ecosystem: &str, cache: &str, status: u16) {
        let labels = RequestLabels {
            ecosystem: ecosystem.to_owned(),
            cache: cache.to_owned(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "could not encode metrics");
        }
        text
    }
}
