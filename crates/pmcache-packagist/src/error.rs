//! Errors of the Packagist frontend: paths and names a client sent that pmcache cannot serve,
//! dists it must not fetch, and upstream metadata it cannot read.

/// What went wrong, classified by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A package name Composer could not have published.
    #[error("invalid package name {name:?}: {reason}")]
    InvalidName {
        /// The name as the client sent it.
        name: String,
        /// Why it is invalid, one line.
        reason: &'static str,
    },
    /// A path below `/packagist` that is no repository route.
    #[error(
        "no Packagist route {path}: pmcache serves /packagist/packages.json, /packagist/p2/VENDOR/NAME.json and the dists they name"
    )]
    NoRoute {
        /// The request path, below the mount point.
        path: String,
    },
    /// The proxy core failed (upstream fault, checksum mismatch, storage).
    #[error(transparent)]
    Proxy(#[from] pmcache_proxy::Error),
    /// A method the route does not take.
    #[error(
        "method {method} not allowed here: pmcache is a read-only mirror (GET and HEAD; POST only for notify-batch and security advisories)"
    )]
    MethodNotAllowed {
        /// The request's method.
        method: String,
    },
    /// A dist on a host outside `packagist.dist_hosts`.
    #[error(
        "dist host {host} is not in packagist.dist_hosts; pmcache will not download {package} from it"
    )]
    DistHostNotAllowed {
        /// The package whose p2 file names the dist.
        package: String,
        /// The dist URL's host.
        host: String,
    },
    /// The upstream's packages.json names no URL for this endpoint.
    #[error("the upstream repository offers no {what}")]
    UpstreamLacks {
        /// The endpoint's key in `packages.json`, e.g. `search` or `providers-api`.
        what: String,
    },
    /// Absolute dist URLs need the origin the client used.
    #[error("no usable Host header: send one, or set public_url in pmcache's config")]
    NoHost,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status a client gets.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            // Composer takes a 404 as "not in this repository" and looks elsewhere; anything
            // else fails the run, so names that cannot exist are simply not here.
            Error::InvalidName { .. } | Error::NoRoute { .. } | Error::UpstreamLacks { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::Proxy(error) => error.status(),
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::DistHostNotAllowed { .. } => StatusCode::FORBIDDEN,
            Error::NoHost => StatusCode::BAD_REQUEST,
        }
    }

    /// The `Retry-After` to send, where waiting may help.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Proxy(error) => error.retry_after(),
            _ => None,
        }
    }

    /// Whether the upstream (or pmcache) says there is no such thing.
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
