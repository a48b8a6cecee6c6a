//! The `[npm]` config section.

use std::time::Duration;

/// Settings of the `/npm/` frontend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve the npm registry API under `/npm/`. Default `true`.
    pub enabled: bool,
    /// Base URL of the upstream registry (it may carry a path prefix), or `auto`: the registry
    /// the local npm would use (`npm config get registry`). Default `auto`.
    pub upstream: String,
    /// How long a fetched packument is served without asking the upstream; `0s` revalidates on
    /// every request. Default `5m` (the public registry's own max-age).
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: true,
            upstream: "auto".to_owned(),
            metadata_ttl: Duration::from_secs(300),
        }
    }
}
