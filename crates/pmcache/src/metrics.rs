//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Metrics { registry, requests }
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
