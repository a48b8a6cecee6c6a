//! The Packagist frontend: a Composer v2 repository under `/packagist/`, so that
//! `composer install`, `update`, `require` and `audit` work through pmcache and CI machines stop
//! hitting code hosts' rate limits.
//!
//! `packages.json` is rewritten so that every URL in it leads back to pmcache, absolute (Composer
//! uses some of them as they are); the upstream URL behind each is kept with the rendering. p2
//! files are rewritten so that every `dist.url` is the pmcache URL
//! `<origin>/packagist/dists/<package>/<reference>.<type>`, minified lists expanded and minified
//! again. Both are rendered once per upstream version, with a placeholder where the client's
//! origin goes, and served with the origin each client reached pmcache at. Dists resolve only
//! through what a rendering recorded for their own package; they are stored by package and reference, verified against a published `shasum`,
//! else pinned to the bytes first seen. Search, the security advisories API and notify-batch are
//! relayed.
//!
//! The fleet's policy is applied when a document is rendered: versions it refuses (judged by
//! their `time`) are removed from p2 files and inline packages, while their dists stay recorded
//! with their publish time, so that the core answers a request for one with the rule's reason.
//! A package refused whole gets 403 for its p2 files before anything is fetched.

mod batch;
pub mod config;
pub mod error;
pub mod minified;
pub mod name;
pub mod path;
#[cfg(test)]
mod properties;
pub mod release_time;
pub mod rewrite;
mod routes;

pub use config::Config;
pub use error::{Error, Result};
pub use routes::document_keys;

use std::time::Duration;

use pmcache_proxy::Proxy;
use url::Url;

/// Where the frontend is mounted.
const MOUNT: &str = "/packagist";

/// The `/packagist/` frontend over one upstream Composer repository.
pub struct Frontend {
    proxy: Proxy,
    /// The upstream repository base, ending in `/`: its root file is `packages.json` there.
    upstream: Url,
    ttl: Duration,
    /// Hosts dists may come from; empty: any the upstream's metadata names.
    dist_hosts: Vec<String>,
    /// The URL clients reach pmcache at, when configured; else their `Host`.
    public_url: Option<Url>,
    /// Keep versions' `source` in the metadata.
    keep_source: bool,
}

impl Frontend {
    /// A frontend serving `upstream` (a repository base URL ending in `/`).
    pub fn new(proxy: Proxy, upstream: Url, config: &Config, public_url: Option<Url>) -> Frontend {
        // The operator named these hosts for dists: they may be on the LAN or this machine.
        for host in &config.extra.dist_hosts {
            if !proxy.trust_listed(host) {
                tracing::warn!(
                    host,
                    "packagist.dist_hosts entry is no host or host:port; ignored"
                );
            }
        }
        Frontend {
            proxy,
            upstream,
            ttl: config.metadata_ttl,
            dist_hosts: config
                .extra
                .dist_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            public_url,
            keep_source: config.extra.keep_source,
        }
    }
}
