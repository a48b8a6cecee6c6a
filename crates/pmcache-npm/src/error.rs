//! Errors of the npm frontend: names and paths a client sent that pmcache cannot serve, and
//! upstream documents it cannot read.

/// What went wrong, classified by whose fault it is: [`Error::InvalidName`] and
/// [`Error::BadPath`] are the client's (answer 4xx), [`Error::Document`] is the upstream's
/// (answer 502 unless a stale copy exists).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A package name that npm could not have published, so no packument can hold it.
    #[error("invalid package name {name:?}: {reason}")]
    InvalidName {
        /// The name as the client sent it, percent-decoded.
        name: String,
        /// Why it is invalid, one line.
        reason: &'static str,
    },
    /// A request path below `/npm` that is no registry route, or that tries to escape one.
    #[error("bad npm path {path:?}: {reason}")]
    BadPath {
        /// The path as the client sent it.
        path: String,
        /// Why it is refused, one line.
        reason: &'static str,
    },
    /// An upstream packument that pmcache cannot serve.
    #[error("malformed upstream packument {url}")]
    Document {
        /// The packument URL it came from.
        url: String,
        /// What is wrong with it.
        #[source]
        source: crate::rewrite::Malformed,
    },
    /// The proxy core failed (upstream fault, checksum mismatch, storage).
    #[error(transparent)]
    Proxy(#[from] pmcache_proxy::Error),
    /// pmcache is a read-only mirror.
    #[error(
        "method {method} not allowed: pmcache is a read-only mirror; publish to the upstream registry directly"
    )]
    MethodNotAllowed {
        /// The request's method, e.g. `PUT` from `npm publish`.
        method: String,
    },
    /// Absolute tarball URLs need the origin the client used.
    #[error("no usable Host header: send one, or set public_url in pmcache's config")]
    NoHost,
    /// An endpoint the upstream registry does not offer.
    #[error("the upstream registry does not offer {what} (it answered {status})")]
    UpstreamLacks {
        /// The endpoint's name for the client, e.g. "search".
        what: &'static str,
        /// The status the upstream answered it with (404, 405 or 501).
        status: u16,
    },
    /// The package was unpublished upstream.
    #[error("{package} was unpublished from the upstream registry")]
    Unpublished {
        /// The package's name, scope included.
        package: String,
    },
    /// A version or dist-tag the packument does not have.
    #[error("{package} has no version or dist-tag {version:?} upstream")]
    NoSuchVersion {
        /// The package's name, scope included.
        package: String,
        /// The version or dist-tag the client asked for, as sent.
        version: String,
    },
    /// An audit body pmcache cannot read while private routes are set: relaying it could tell
    /// the public registry the private names it holds.
    #[error(
        "pmcache cannot read this audit request ({reason}), so it is not relayed: it may name private packages ([[routes]])"
    )]
    UnreadableAudit {
        /// What was wrong with the body.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the upstream is at fault (a gateway error), rather than the client.
    pub fn is_upstream(&self) -> bool {
        match self {
            Error::Document { .. } => true,
            Error::Proxy(error) => error.is_upstream_fault(),
            _ => false,
        }
    }

    /// The status a client gets.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            // Not 404 for names and paths: pacote retries a 404 for the full document, and
            // there is nothing to find.
            Error::InvalidName { .. }
            | Error::BadPath { .. }
            | Error::NoHost
            | Error::UnreadableAudit { .. } => StatusCode::BAD_REQUEST,
            Error::Document { .. } => StatusCode::BAD_GATEWAY,
            Error::Proxy(error) => error.status(),
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NoSuchVersion { .. } | Error::Unpublished { .. } => StatusCode::NOT_FOUND,
            Error::UpstreamLacks { .. } => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The `Retry-After` to send, where waiting may help.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Proxy(error) => error.retry_after(),
            _ => None,
        }
    }
}

impl pmcache_proxy::Classify for Error {
    fn status(&self) -> http::StatusCode {
        Error::status(self)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        Error::retry_after(self)
    }
}
