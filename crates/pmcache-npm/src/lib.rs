//! The npm frontend: the registry API under `/npm/`, so that npm, yarn and pnpm install through
//! pmcache with nothing but a registry URL.
//!
//! pmcache always fetches the full packument and derives the abbreviated ("corgi") document
//! itself, since some upstreams ignore the abbreviated media type. Both are rendered once per
//! upstream version with every `dist.tarball` rewritten to the conventional pmcache URL
//! `<registry>/<name>/-/<name>-<version>.tgz`. npm needs those URLs absolute: the renderings are
//! stored once, with the origin of the client that fetched them (or `public_url`), and the
//! proxy splices each client's own origin (the `Host` it sends) into them as they stream out, so
//! a new `Host` costs no upstream request and no stored copy. Each rendering records, per tarball, the upstream URL and the published digest (`integrity`, else
//! `shasum`): tarball requests resolve only through those records, cold ones by fetching the
//! packument first.

mod audit;
pub mod config;
pub mod discover;
mod dist_tags;
pub mod error;
pub mod name;
pub mod negotiate;
#[cfg(test)]
mod properties;
pub mod rewrite;
mod routes;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
pub use routes::document_keys;

use std::time::Duration;

use pmcache_proxy::Proxy;
use url::Url;

/// Where the frontend is mounted.
const MOUNT: &str = "/npm";

/// The `/npm/` frontend over one upstream registry.
pub struct Frontend {
    proxy: Proxy,
    /// The upstream registry base, ending in `/` (it may carry a path prefix).
    upstream: Url,
    ttl: Duration,
    /// The URL clients reach pmcache at, when configured; else their `Host`.
    public_url: Option<Url>,
    mount: &'static str,
}

impl Frontend {
    /// A frontend serving `upstream` (a registry base URL ending in `/`).
    pub fn new(proxy: Proxy, upstream: Url, config: &Config, public_url: Option<Url>) -> Frontend {
        Frontend {
            proxy,
            upstream,
            ttl: config.metadata_ttl,
            public_url,
            mount: MOUNT,
        }
    }
}
