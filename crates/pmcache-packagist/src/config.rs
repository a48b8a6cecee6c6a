//! The `[packagist]` config section: the keys every frontend has (`enabled`, `upstream`,
//! `metadata_ttl`), and Packagist's own beside them.

use std::time::Duration;

/// Settings of the `/packagist/` frontend. `upstream` is the base URL of the upstream Composer
/// repository, where its `packages.json` is; `metadata_ttl` is how long fetched metadata
/// (`packages.json`, `p2/*.json`) is served without asking the upstream.
pub type Config = pmcache_proxy::FrontendConfig<Extra>;

/// Packagist's own keys, and its defaults: `upstream = "https://repo.packagist.org/"`,
/// `metadata_ttl = "5m"`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Extra {
    /// Hosts (`host` or `host:port`) dist archives may be downloaded from. Empty: any host the
    /// upstream's metadata names. Redirects are held to the same list.
    pub dist_hosts: Vec<String>,
    /// Keep each version's `source` (its VCS URL) in the metadata. Composer clones it when a
    /// dist download fails (pmcache refusing changed bytes, or a host outside `dist_hosts`) and
    /// with `--prefer-source`; `false` removes it, so that code only ever comes through
    /// pmcache's verified dists. Default `true`.
    pub keep_source: bool,
}

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            dist_hosts: Vec::new(),
            keep_source: true,
        }
    }
}

impl pmcache_proxy::FrontendDefaults for Extra {
    const UPSTREAM: &'static str = "https://repo.packagist.org/";
    const METADATA_TTL: Duration = Duration::from_secs(300);
}
