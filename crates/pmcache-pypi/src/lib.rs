//! The PyPI frontend: the simple repository API (PEP 503 HTML, PEP 691 JSON, PEP 658/714 core
//! metadata, PEP 700 fields) under `/pypi/`, so that pip, uv and Poetry install through pmcache
//! with nothing but an index URL.
//!
//! Upstream pages are asked for as JSON (falling back to whatever the upstream speaks), parsed
//! into one model, and rendered once per upstream version into both formats with every file URL
//! rewritten to the root-relative `/pypi/files/<id>/<filename>`, where `id` derives from the
//! upstream URL. Root-relative links make one stored page right for every Host a client uses.
//! Each rendered page records, per file, its upstream URL and published hash as an artifact
//! source: file requests resolve only through those records, so a client can never make
//! pmcache fetch a URL of its choosing, and every file is verified against its published hash.

pub mod config;
pub mod discover;
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
const MOUNT: &str = "/pypi";

/// The `/pypi/` frontend over one upstream simple index.
pub struct Frontend {
    proxy: Proxy,
    /// The upstream index base, ending in `/`.
    upstream: Url,
    ttl: Duration,
    mount: &'static str,
}

impl Frontend {
    /// A frontend serving `upstream` (a simple-index base URL ending in `/`).
    pub fn new(proxy: Proxy, upstream: Url, config: &Config) -> Frontend {
        Frontend {
            proxy,
            upstream,
            ttl: config.metadata_ttl,
            mount: MOUNT,
        }
    }
}
