//! Errors of the PyPI frontend: names a client sent that cannot be projects, and upstream
//! documents that cannot be read.

/// What went wrong, classified by whose fault it is: [`Error::InvalidName`] is the client's
/// (answer 4xx), [`Error::Document`] is the upstream's (answer 502 unless a stale copy exists).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A project name that PEP 503 cannot normalise, so no index can hold it.
    #[error("invalid project name {name:?}: {reason}")]
    InvalidName {
        /// The name as the client sent it.
        name: String,
        /// Why it is invalid, one line.
        reason: &'static str,
    },
    /// An upstream page that is not a simple-API document pmcache can serve.
    #[error("malformed upstream document {url}")]
    Document {
        /// The page it came from.
        url: String,
        /// What is wrong with it.
        #[source]
        source: crate::wire::Malformed,
    },
    /// The proxy core failed (upstream fault, checksum mismatch, storage).
    #[error(transparent)]
    Proxy(#[from] pmcache_proxy::Error),
    /// A path under `/pypi/` that is no simple-API route.
    #[error("no PyPI route {path}: pmcache serves /pypi/simple/ and /pypi/simple/<project>/")]
    NoRoute {
        /// The request path, below the mount point.
        path: String,
    },
    /// A file URL that no page pmcache served ever advertised.
    #[error("unknown file {filename}: fetch its project page through pmcache first")]
    UnknownFile {
        /// The file name from the request path.
        filename: String,
    },
    /// pmcache is a read-only mirror.
    #[error("method {method} not allowed: pmcache is a read-only mirror (GET and HEAD only)")]
    MethodNotAllowed {
        /// The request's method, e.g. `POST` from `twine upload`.
        method: String,
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
            Error::InvalidName { .. } => StatusCode::BAD_REQUEST,
            Error::Document { .. } => StatusCode::BAD_GATEWAY,
            Error::Proxy(error) => error.status(),
            Error::NoRoute { .. } | Error::UnknownFile { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
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
