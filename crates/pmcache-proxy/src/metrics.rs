//! The proxy's metrics: upstream requests, their failures and latency per origin, how long
//! renders waited for memory, stale answers, and answers clients abandoned. The binary
//! registers them beside its own (see [`crate::Proxy::register_metrics`]).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Error;

/// What became of one upstream request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Prometheus users spell them
pub(crate) enum Outcome {
    /// Response headers arrived (any status).
    answered,
    /// No response headers within `upstream.read_timeout`, or no connection within
    /// `upstream.connect_timeout`.
    timeout,
    /// The connection failed (refused, reset, TLS, name unknown).
    connect_error,
    /// The address policy refused the address.
    refused,
    /// Not sent: the origin's circuit breaker is open.
    circuit_open,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    origin: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    origin: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: String,
}

/// Why a stale copy was served.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum StaleReason {
    /// The refresh took longer than `upstream.stale_timeout` (it goes on in the background).
    slow,
    /// The refresh failed: the upstream is down, broken, or its circuit is open.
    upstream_fault,
    /// The disk is full.
    storage_full,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StaleLabels {
    reason: StaleReason,
}

/// What a client stopped reading before its end.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Answer {
    document,
    artifact,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    kind: Answer,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    ecosystem: String,
    rule: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The proxy's counters and histograms; cheap to clone, all clones count together.
#[derive(Clone)]
pub(crate) struct ProxyMetrics {
    upstream_requests: Family<RequestLabels, Counter>,
    upstream_statuses: Family<StatusLabels, Counter>,
    upstream_latency: HistogramFamily<OriginLabels>,
    upstream_body_errors: Family<OriginLabels, Counter>,
    render_wait: Histogram,
    stale: Family<StaleLabels, Counter>,
    abandoned: Family<AnswerLabels, Counter>,
    policy_refusals: Family<PolicyLabels, Counter>,
}

/// Seconds: from a loopback answer (a millisecond) to a read timeout.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for ProxyMetrics {
    fn default() -> ProxyMetrics {
        ProxyMetrics {
            upstream_requests: Family::default(),
            upstream_statuses: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            upstream_body_errors: Family::default(),
            render_wait: latency_histogram(),
            stale: Family::default(),
            abandoned: Family::default(),
            policy_refusals: Family::default(),
        }
    }
}

impl ProxyMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let upstream = registry.sub_registry_with_prefix("upstream");
        upstream.register(
            "requests",
            "Requests sent (or refused before sending) to upstreams, by origin and outcome",
            self.upstream_requests.clone(),
        );
        upstream.register(
            "responses",
            "Upstream responses by origin and status class",
            self.upstream_statuses.clone(),
        );
        upstream.register(
            "response_seconds",
            "Time from sending an upstream request to its response headers, by origin",
            self.upstream_latency.clone(),
        );
        upstream.register(
            "body_errors",
            "Upstream bodies that broke off, stalled past the read timeout or were cut, by origin",
            self.upstream_body_errors.clone(),
        );
        registry.register(
            "render_wait_seconds",
            "Time a received upstream document waited for room in the render memory budget",
            self.render_wait.clone(),
        );
        registry.register(
            "stale_served",
            "Cached documents served stale, by reason (slow: the refresh took longer than upstream.stale_timeout)",
            self.stale.clone(),
        );
        registry.register(
            "policy_refusals",
            "Requests the supply-chain policy refused (403), by ecosystem and rule",
            self.policy_refusals.clone(),
        );
        registry.register(
            "abandoned",
            "Answers whose client stopped reading before the end of the body, by kind",
            self.abandoned.clone(),
        );
    }

    /// Counts one upstream request and, when it was answered, its latency and status.
    pub(crate) fn upstream_request(
        &self,
        origin: &str,
        outcome: Outcome,
        answered: Option<(http::StatusCode, Duration)>,
    ) {
        let labels = RequestLabels {
            origin: origin.to_owned(),
            outcome,
        };
        self.upstream_requests.get_or_create(&labels).inc();
        if let Some((status, latency)) = answered {
            let origin = OriginLabels {
                origin: origin.to_owned(),
            };
            self.upstream_latency
                .get_or_create(&origin)
                .observe(latency.as_secs_f64());
            let class = StatusLabels {
                origin: origin.origin,
                class: format!("{}xx", status.as_u16() / 100),
            };
            self.upstream_statuses.get_or_create(&class).inc();
        }
    }

    /// Counts one upstream body that failed part-way.
    pub(crate) fn upstream_body_error(&self, origin: &str) {
        let labels = OriginLabels {
            origin: origin.to_owned(),
        };
        self.upstream_body_errors.get_or_create(&labels).inc();
    }

    pub(crate) fn render_waited(&self, waited: Duration) {
        self.render_wait.observe(waited.as_secs_f64());
    }

    /// Counts a stale answer given because of `error`.
    pub(crate) fn stale_served(&self, error: &Error) {
        let reason = if error.is_storage_full() {
            StaleReason::storage_full
        } else if error.is_slow() {
            StaleReason::slow
        } else {
            StaleReason::upstream_fault
        };
        self.stale.get_or_create(&StaleLabels { reason }).inc();
    }

    /// A counter of abandoned answers of one kind, for [`crate::body::watch_abandon`].
    pub(crate) fn abandoned(&self, kind: Answer) -> Counter {
        self.abandoned.get_or_create(&AnswerLabels { kind }).clone()
    }

    /// Counts one request the policy refused.
    pub(crate) fn policy_refused(&self, ecosystem: &str, rule: &str) {
        let labels = PolicyLabels {
            ecosystem: ecosystem.to_owned(),
            rule: rule.to_owned(),
        };
        self.policy_refusals.get_or_create(&labels).inc();
    }
}
