//! The `[packagist]` config section.

use std::time::Duration;

/// Settings of the `/packagist/` frontend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve a Composer repository under `/packagist/`. Default `true`.
    pub enabled: bool,
    /// Base URL of the upstream Composer repository, where its `packages.json` is. Default
    /// `https://repo.packagist.org/`.
    pub upstream: String,
    /// How long fetched metadata (`packages.json`, `p2/*.json`) is served without asking the
    /// upstream; `0s` revalidates on every request. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
    /// Hosts (`host` or `host:port`) dist archives may be downloaded from. Empty: any host the
    /// upstream's metadata names. Redirects are held to the same list.
    pub dist_hosts: Vec<String>,
    /// Keep each version's `source` (its VCS URL) in the metadata. Composer clones it when a
    /// dist download fails (pmcache refusing changed bytes, or a host outside `dist_hosts`) and
    /// with `--prefer-source`; `false` removes it, so that code only ever comes through
    /// pmcache's verified dists. Default `true`.
    pub keep_source: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: true,
            upstream: "https://repo.packagist.org/".to_owned(),
            metadata_ttl: Duration::from_secs(300),
            dist_hosts: Vec::new(),
            keep_source: true,
        }
    }
}
