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
    #[error("upstream {url} could not be reached")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("upstream {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error(
        "upstream {url} did not finish within upstream.stale_timeout ({waited:?}); its refresh goes on in the background"
    )]
    Slow { url: String, waited: Duration },
    #[error("upstream {url} answered {status}")]
    Status {
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error(
        "circuit open: upstream {origin} failed {failures} times in a row (timeouts); pmcache tries it again in {}s", retry_after.as_secs().max(1)
    )]
    CircuitOpen {
        origin: String,
        failures: u32,
        retry_after: Duration,
    },
    /// The address policy's refusal ([`Refusal`]) is the reason itself, so it is in the line.
    #[error("pmcache will not fetch {url}: {refusal}")]
    Refused { url: String, refusal: Refusal },
    #[error("upstream has no {url} (404)")]
    NotFound { url: String },
    #[error("upstream {url} broke off the transfer")]
    Body {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("upstream {url} sent {actual} bytes where it announced {announced}")]
    Length {
        url: String,
        announced: u64,
        actual: u64,
    },
    #[error("upstream document {url} is larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("upstream {url} redirected to {location}, which pmcache will not follow")]
    Redirect { url: String, location: String },
    #[error(
        "upstream {url} sent bytes with {actual} where {expected} was published; nothing was cached"
    )]
    Checksum {
        url: String,
        expected: Checksum,
        actual: Checksum,
    },
    #[error(
        "upstream {url} now sends bytes with {actual}, not the {pinned} pmcache pinned when it first fetched them; refused, nothing was cached"
    )]
    PinMismatch {
        url: String,
        pinned: Checksum,
        actual: Checksum,
    },
    #[error("no upstream document lists {artifact}")]
    NotAdvertised { artifact: String },
    #[error(
        "the upstream cannot be reached and the cached documents do not list {artifact}; try again when it is back"
    )]
    AdvertiserDown { artifact: String },
    /// A document the frontend (or the proxy) cannot read; `source` says what is wrong with it,
    /// typed by whoever parsed it.
    #[error("upstream document {url} is malformed")]
    Document {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("pmcache cannot use upstream URL {url}")]
    BadUpstreamUrl {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("upstream.ca_file {} is unusable", path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("the upstream client's TLS settings are unusable")]
    Tls {
        #[source]
        source: BoxError,
    },
    #[error("pmcache storage failed{}", if .0.is_storage_full() { ": its disk is full" } else { "" })]
    Store(#[from] pmcache_store::Error),
    /// pmcache itself failed, with nothing underneath to blame.
    #[error("pmcache internal failure: {0}")]
    Internal(String),
    /// pmcache itself failed at `what`, because of `source` (a task that died, a file that
    /// could not be read back).
    #[error("pmcache internal failure: {what}")]
    Failed {
        what: String,
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
            Error::NotFound { .. } | Error::NotAdvertised { .. } => StatusCode::NOT_FOUND,
            // Never a 404: the artifact may be newer than the cached documents.
            Error::AdvertiserDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Refused { .. } => StatusCode::FORBIDDEN,
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
