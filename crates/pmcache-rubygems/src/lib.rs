//! The RubyGems frontend: a gem server under `/rubygems/`, so that `gem install` and
//! `bundle install` work through pmcache as a gem source or as Bundler's mirror of
//! rubygems.org.
//!
//! Index files are served verbatim, byte for byte as the upstream sent them: Bundler appends to
//! its own copies and checks them against `ETag` (the MD5 of the whole file) or `Repr-Digest`
//! (its sha-256), so the compact index is answered with both, with `Range: bytes=N-` appends,
//! and with 304s. pmcache keeps each cached `/info/NAME` coherent with the `/versions` it
//! serves: an `/info` whose MD5 differs from the one `/versions` lists is fetched again. `.gem`
//! files resolve through the `/info` line that lists them and are verified against its
//! `checksum:` before they are stored.
//!
//! The fleet's policy is applied when an `/info/NAME` is rendered: the lines of versions it
//! refuses are removed (judged, under the age rule, by each build's `created_at` from the
//! upstream's versions API, fetched only then), and their `.gem` files stay recorded with their
//! publish time, so that the core answers a request for one with the rule's reason. `/versions`
//! is the upstream's file followed by one line per gem whose served `/info` hides versions, in
//! the index's own syntax (`-VERSION`s and the served MD5), so that its readers see what `/info`
//! serves, and one per gem a private route takes (its versions and the MD5 of the `/info` served
//! from the route), so that Bundler asks for it. A gem refused whole gets 403 for its `/info` before anything is fetched.

pub mod compact;
pub mod config;
mod corrections;
pub mod error;
pub mod filter;
pub mod name;
pub mod path;
#[cfg(test)]
mod properties;
pub mod release_time;
mod routes;

pub use config::Config;
pub use error::{Error, Result};
pub use routes::{document_keys, gemspec_of};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corrections::NotedCorrection;
use pmcache_proxy::Proxy;
use url::Url;

/// The `/rubygems/` frontend over one upstream gem server.
pub struct Frontend {
    proxy: Proxy,
    /// The upstream base, ending in `/` (it may carry a path prefix).
    upstream: Url,
    ttl: Duration,
    /// The info MD5s of the last `/versions` read, by the sha256 of that file: parsed once per
    /// upstream version rather than on every `/info` request.
    info_checksums: tokio::sync::Mutex<Option<ParsedVersions>>,
    /// By gem: the `/versions` line that tells readers what its served `/info` hides, for each
    /// `/info` rendering seen that hides versions. The next `/versions` rendering ends with them.
    corrections: Mutex<HashMap<String, NotedCorrection>>,
    /// Bounds the versions API fetches in flight (rubygems.org rate-limits its API).
    versions_api: tokio::sync::Semaphore,
    /// By route upstream: the walk of its gems for `/versions` last done (see
    /// `note_routed_gems`), so that `/versions` requests do not each walk them again.
    walked_routes: Mutex<HashMap<Url, WalkedRoute>>,
}

/// One walk of a route's gems: the route server's `/versions` it read, the rules it was
/// judged by and when it ran.
struct WalkedRoute {
    versions: pmcache_proxy::Digest,
    policy: Arc<pmcache_policy::Policy>,
    at: std::time::Instant,
}

/// How many versions API fetches run at once.
const VERSIONS_API_CONCURRENCY: usize = 4;

/// The info MD5 of each gem in one `/versions` file, and that file's sha256.
struct ParsedVersions {
    digest: pmcache_proxy::Digest,
    checksums: Arc<HashMap<String, String>>,
}

impl Frontend {
    /// A frontend serving `upstream` (a gem server base URL ending in `/`).
    pub fn new(proxy: Proxy, upstream: Url, config: &Config) -> Frontend {
        Frontend {
            proxy,
            upstream,
            ttl: config.metadata_ttl,
            info_checksums: tokio::sync::Mutex::default(),
            corrections: Mutex::default(),
            versions_api: tokio::sync::Semaphore::new(VERSIONS_API_CONCURRENCY),
            walked_routes: Mutex::default(),
        }
    }
}
