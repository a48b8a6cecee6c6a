//! Errors of the RubyGems frontend: paths and names a client sent that pmcache cannot serve,
//! and upstream index files it cannot read.

/// What went wrong, classified by whose fault it is: [`Error::NoRoute`] and
/// [`Error::InvalidName`] are the client's (4xx); the proxy's errors say whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A gem name RubyGems could not have published.
    #[error("invalid gem name {name:?}: {reason}")]
    InvalidName {
        /// The name as the client sent it.
        name: String,
        /// Why it is invalid, one line.
        reason: &'static str,
    },
    /// A path below `/rubygems` that is no gem server route.
    #[error(
        "no RubyGems route {path}: pmcache serves /rubygems/versions, /rubygems/info/NAME, /rubygems/gems/NAME-VERSION.gem and the legacy indexes"
    )]
    NoRoute {
        /// The request path, below the mount point.
        path: String,
    },
    /// The proxy core failed (upstream fault, checksum mismatch, storage).
    #[error(transparent)]
    Proxy(#[from] pmcache_proxy::Error),
    /// pmcache is a read-only mirror.
    #[error(
        "method {method} not allowed: pmcache is a read-only mirror; push and yank gems on the upstream directly"
    )]
    MethodNotAllowed {
        /// The request's method, e.g. `POST` from `gem push`.
        method: String,
    },
    /// The dependency API, which rubygems.org removed.
    #[error(
        "the dependency API is gone (as on rubygems.org): Bundler and RubyGems use the compact index at /rubygems/versions and /rubygems/info/NAME"
    )]
    DependencyApiGone,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status a client gets.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Error::InvalidName { .. } => StatusCode::BAD_REQUEST,
            Error::NoRoute { .. } | Error::DependencyApiGone => StatusCode::NOT_FOUND,
            Error::Proxy(error) => error.status(),
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

    /// Whether the upstream said it has no such thing.
    pub fn is_not_found(&self) -> bool {
        self.status() == http::StatusCode::NOT_FOUND
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
