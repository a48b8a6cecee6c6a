//! Errors of the proxy core, classified by whose fault they are: the upstream's (502/503/504),
//! the client's (4xx) or ours (500). `Display` is the one-line reason a person reads.

use std::time::Duration;

use http::StatusCode;

use crate::checksum::Checksum;

/// A proxy failure with the URL or key involved.
///
/// `Display` is the one line a client reads; what caused it is the [`source`] chain, which only
/// the log gets whole (see [`chain`]).
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection to the upstream: DNS, a refused connection, the TLS handshake.
    #[error("upstream {url} could not be reached")]
    Connect {
        /// The upstream URL asked for.
        url: String,
        /// The connector's or client's error.
        #[source]
        source: BoxError,
    },
    /// The upstream did not connect, send its headers, or send its body's next chunk in time.
    #[error("upstream {url} did not answer within {timeout:?}")]
    Timeout {
        /// The upstream URL asked for.
        url: String,
        /// The timeout that ran out (the connect, the read or the whole-document timeout).
        timeout: Duration,
    },
    /// Refreshing a cached document outlasted `upstream.stale_timeout`; the refresh goes on.
    #[error(
        "upstream {url} did not finish within upstream.stale_timeout ({waited:?}); its refresh goes on in the background"
    )]
    Slow {
        /// The document's upstream URL.
        url: String,
        /// How long the request waited for the refresh (`upstream.stale_timeout`).
        waited: Duration,
    },
    /// The upstream answered with an error status (404 and 410 are [`Error::NotFound`]).
    #[error("upstream {url} answered {status}")]
    Status {
        /// The upstream URL asked for.
        url: String,
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's `Retry-After`, passed on to the client.
        retry_after: Option<Duration>,
    },
    /// Requests to an upstream that keeps timing out fail at once until the breaker lets one
    /// through again, instead of each waiting for the timeout.
    #[error(
        "circuit open: upstream {origin} failed {failures} times in a row (timeouts); pmcache tries it again in {}s", retry_after.as_secs().max(1)
    )]
    CircuitOpen {
        /// The upstream's origin (`scheme://host:port`).
        origin: String,
        /// The consecutive timeouts that opened the circuit.
        failures: u32,
        /// How long until the next attempt is let through.
        retry_after: Duration,
    },
    /// The address policy's refusal ([`Refusal`]) is the reason itself, so it is in the line.
    #[error("pmcache will not fetch {url}: {refusal}")]
    Refused {
        /// The URL pmcache was asked to fetch.
        url: String,
        /// Which address was refused, and why.
        refusal: Refusal,
    },
    /// The upstream answered 404 (or 410): it has no such document or artifact.
    #[error("upstream has no {url} (404)")]
    NotFound {
        /// The upstream URL asked for.
        url: String,
    },
    /// The upstream's body ended in an error (connection reset, protocol error).
    #[error("upstream {url} broke off the transfer")]
    Body {
        /// The upstream URL asked for.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: BoxError,
    },
    /// The upstream's body was shorter or longer than its `Content-Length`: a cut transfer.
    #[error("upstream {url} sent {actual} bytes where it announced {announced}")]
    Length {
        /// The upstream URL asked for.
        url: String,
        /// The `Content-Length` it announced.
        announced: u64,
        /// The bytes it sent.
        actual: u64,
    },
    /// A metadata document grew past the size limit, compressed or decoded: refused so that
    /// no upstream can exhaust memory or disk.
    #[error("upstream document {url} is larger than the {limit}-byte limit")]
    TooLarge {
        /// The document's upstream URL.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A gzip-encoded metadata document expanded further than any real index does (a gzip
    /// bomb): refused before it costs more disk.
    #[error("upstream document {url} expands more than {ratio}-fold when decompressed")]
    Inflation {
        /// The document's upstream URL.
        url: String,
        /// The largest expansion accepted.
        ratio: u64,
    },
    /// The upstream redirected where the redirect policy does not allow, without a usable
    /// `Location`, or too many times.
    #[error("upstream {url} redirected to {location}, which pmcache will not follow")]
    Redirect {
        /// The URL that answered with the redirect.
        url: String,
        /// Its `Location` as sent, or what was wrong with it.
        location: String,
    },
    /// An artifact's bytes do not match the checksum its document published.
    #[error(
        "upstream {url} sent bytes with {actual} where {expected} was published; nothing was cached"
    )]
    Checksum {
        /// The artifact's upstream URL.
        url: String,
        /// The checksum a document published for it.
        expected: Checksum,
        /// The same algorithm's checksum of the bytes received.
        actual: Checksum,
    },
    /// An artifact with no published checksum changed since pmcache first stored it.
    #[error(
        "upstream {url} now sends bytes with {actual}, not the {pinned} pmcache pinned when it first fetched them; refused, nothing was cached"
    )]
    PinMismatch {
        /// The artifact's upstream URL.
        url: String,
        /// The sha256 recorded at the first fetch.
        pinned: Checksum,
        /// The sha256 of the bytes received now.
        actual: Checksum,
    },
    /// No document lists the artifact (404): clients reach only what a document advertised.
    #[error("no upstream document lists {artifact}")]
    NotAdvertised {
        /// The artifact asked for (`<ecosystem> artifact <id>`).
        artifact: String,
    },
    /// The fleet's policy does not serve this package or version (403); the reason names the
    /// rule.
    #[error("{refusal}")]
    Policy {
        /// The policy's refusal.
        refusal: Box<pmcache_policy::Refusal>,
    },
    /// A private name (`[[routes]]`) whose route has no upstream: pmcache answers 404 itself,
    /// and the public upstream never hears of it.
    #[error("pmcache: {subject} is private (routes[{index}]) and has no upstream")]
    Private {
        /// The package, normalised: `npm:@acme/tool`.
        subject: String,
        /// The route's place in `[[routes]]`.
        index: usize,
    },
    /// An artifact URL on a host trusted only as a private route's upstream, for a package not
    /// routed there: public metadata may not send pmcache into a private registry (403).
    #[error(
        "pmcache will not fetch {url}: its host is a private route's upstream, and only packages routed there are fetched from it"
    )]
    RouteHost {
        /// The URL pmcache was asked to fetch (or redirected to).
        url: String,
    },
    /// A read-role request missed an artifact under `read_misses = "refuse"` (403).
    #[error(
        "not cached, and a read-role request may not fill the cache (use a populate token, or wait until a trusted job has cached it): {url}"
    )]
    ReadMissRefused {
        /// The artifact's upstream URL.
        url: String,
    },
    /// The cached documents do not list the artifact and the upstream that could have a newer
    /// one is down: a 503, never a 404 (which tells clients the package does not exist).
    #[error(
        "the upstream cannot be reached and the cached documents do not list {artifact}; try again when it is back"
    )]
    AdvertiserDown {
        /// The artifact asked for (`<ecosystem> artifact <id>`).
        artifact: String,
    },
    /// A document the frontend (or the proxy) cannot read; `source` says what is wrong with it,
    /// typed by whoever parsed it.
    #[error("upstream document {url} is malformed")]
    Document {
        /// The document's upstream URL.
        url: String,
        /// The parser's error.
        #[source]
        source: BoxError,
    },
    /// An upstream URL (configured, or built from a document) that the HTTP client cannot send
    /// a request to.
    #[error("pmcache cannot use upstream URL {url}")]
    BadUpstreamUrl {
        /// The URL, as pmcache had it.
        url: String,
        /// Why it is unusable.
        #[source]
        source: BoxError,
    },
    /// The configured extra CA certificates could not be read or parsed.
    #[error("upstream.ca_file {} is unusable", path.display())]
    CaFile {
        /// The configured file.
        path: std::path::PathBuf,
        /// The read or PEM error.
        #[source]
        source: BoxError,
    },
    /// rustls refused the client configuration (protocol versions, root certificates).
    #[error("the upstream client's TLS settings are unusable")]
    Tls {
        /// rustls' error.
        #[source]
        source: BoxError,
    },
    /// The store failed (a full disk answers 503, anything else 500).
    #[error("pmcache storage failed{}", if .0.is_storage_full() { ": its disk is full" } else { "" })]
    Store(#[from] pmcache_store::Error),
    /// A stored document's blob went between reading its record and opening it (a purge or
    /// an eviction in between): a moment's race, asked again it is a miss.
    #[error("the cached copy was removed while it was being served; ask again")]
    BlobRemoved {
        /// The blob's digest.
        digest: String,
    },
    /// pmcache itself failed, with nothing underneath to blame.
    #[error("pmcache internal failure: {0}")]
    Internal(String),
    /// pmcache itself failed at `what`, because of `source` (a task that died, a file that
    /// could not be read back).
    #[error("pmcache internal failure: {what}")]
    Failed {
        /// What pmcache was doing.
        what: String,
        /// What failed underneath.
        #[source]
        source: BoxError,
    },
    /// One failure reported to every client waiting on the same fill or document.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

/// Whatever failed underneath an [`Error`]: an I/O, TLS, HTTP or parse error, or for a fault
/// with no deeper cause, its one-line description.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the address policy refused to connect: a loopback, private or link-local address that
/// is no configured upstream's. Travels inside the connector's I/O error
/// ([`std::io::ErrorKind::PermissionDenied`]) and is found there again by downcasting.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "{place} is a loopback, private or link-local address and not a configured upstream (set upstream.allow_private_addresses to allow it)"
)]
pub struct Refusal {
    /// The host (and the address it resolved to) as the message names it.
    pub place: String,
}

impl Error {
    /// pmcache failed at `what` because of `source`.
    pub fn failed(what: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// `error` and every cause under it on one line, joined by `: `: what the log gets.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Result with the proxy's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error that knows the answer it makes: the status, and the `Retry-After` where waiting
/// helps. The proxy's error and every frontend's implement it, so that the binary turns all of
/// them into responses (and logs their chains) in one place.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The status a client gets.
    fn status(&self) -> StatusCode;
    /// The `Retry-After` to send, where waiting may help.
    fn retry_after(&self) -> Option<Duration>;
}

impl Classify for Error {
    fn status(&self) -> StatusCode {
        Error::status(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// How long clients are told to wait after an upstream fault.
const RETRY_AFTER_UPSTREAM_FAULT: Duration = Duration::from_secs(30);

impl Error {
    /// The status a client gets. An upstream fault is never a 404: clients take 404 to mean
    /// "no such package" and stop looking.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Shared(inner) => inner.status(),
            Error::NotFound { .. } | Error::NotAdvertised { .. } | Error::Private { .. } => {
                StatusCode::NOT_FOUND
            }
            // Never a 404: the artifact may be newer than the cached documents.
            Error::AdvertiserDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::CircuitOpen { .. } | Error::BlobRemoved { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Refused { .. }
            | Error::RouteHost { .. }
            | Error::ReadMissRefused { .. }
            | Error::Policy { .. } => StatusCode::FORBIDDEN,
            Error::Timeout { .. } | Error::Slow { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Status { status, .. }
                if *status == StatusCode::SERVICE_UNAVAILABLE
                    || *status == StatusCode::TOO_MANY_REQUESTS =>
            {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The upstream refuses this client or this package: say so, rather than call it a
            // gateway fault that clients retry for a minute.
            Error::Status { status, .. }
                if [
                    StatusCode::UNAUTHORIZED,
                    StatusCode::FORBIDDEN,
                    StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
                ]
                .contains(status) =>
            {
                *status
            }
            // A full disk passes (space is freed, or eviction makes room): worth a retry.
            Error::Store(error) if error.is_storage_full() => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store(_) | Error::Internal(_) | Error::Failed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `Retry-After` to send, where waiting may help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Shared(inner) => inner.retry_after(),
            Error::CircuitOpen { retry_after, .. } => {
                Some((*retry_after).max(Duration::from_secs(1)))
            }
            Error::BlobRemoved { .. } => Some(Duration::from_secs(1)),
            Error::Status {
                retry_after: Some(after),
                ..
            } => Some(*after),
            Error::Status { status, .. }
                if status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS =>
            {
                None
            }
            Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Status { .. }
            | Error::AdvertiserDown { .. } => Some(RETRY_AFTER_UPSTREAM_FAULT),
            _ => None,
        }
    }

    /// True when the upstream was only slower than `upstream.stale_timeout`.
    pub fn is_slow(&self) -> bool {
        match self {
            Error::Shared(inner) => inner.is_slow(),
            Error::Slow { .. } => true,
            _ => false,
        }
    }

    /// True when the store's disk is full (so what is cached is served, and nothing new kept).
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Shared(inner) => inner.is_storage_full(),
            Error::Store(error) => error.is_storage_full(),
            _ => false,
        }
    }

    /// True when the upstream is failing (so a stale copy may be served instead).
    pub fn is_upstream_fault(&self) -> bool {
        if let Error::Shared(inner) = self {
            return inner.is_upstream_fault();
        }
        matches!(
            self,
            Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Slow { .. }
                | Error::CircuitOpen { .. }
                | Error::Body { .. }
                | Error::Length { .. }
                | Error::TooLarge { .. }
                | Error::Inflation { .. }
                | Error::Redirect { .. }
                | Error::Document { .. }
                | Error::AdvertiserDown { .. }
        ) || matches!(self, Error::Status { status, .. } if status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_answered(status: StatusCode) -> Error {
        Error::Status {
            url: "http://127.0.0.1:1/x".to_owned(),
            status,
            retry_after: None,
        }
    }

    #[test]
    fn a_blob_removed_while_served_is_retried_soon_and_no_upstream_fault() {
        let removed = Error::BlobRemoved {
            digest: "00".repeat(32),
        };
        assert_eq!(removed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(removed.retry_after(), Some(Duration::from_secs(1)));
        assert!(!removed.is_upstream_fault());
    }

    #[test]
    fn refusals_pass_through_and_faults_are_gateway_errors() {
        let forbidden = upstream_answered(StatusCode::FORBIDDEN);
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(forbidden.retry_after(), None);
        assert!(!forbidden.is_upstream_fault());
        let broken = upstream_answered(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(broken.status(), StatusCode::BAD_GATEWAY);
        assert!(broken.retry_after().is_some() && broken.is_upstream_fault());
        let busy = upstream_answered(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.retry_after().is_some());
        let gone = Error::NotFound {
            url: "http://127.0.0.1:1/x".to_owned(),
        };
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        assert!(!gone.is_upstream_fault());
    }
}
