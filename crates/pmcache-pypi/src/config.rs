//! The `[pypi]` config section.

use std::time::Duration;

/// Settings of the `/pypi/` frontend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve the PyPI simple API under `/pypi/`. Default `true`.
    pub enabled: bool,
    /// Base URL of the upstream simple index (PEP 503), e.g. `https://index.example/simple/`, or
    /// `auto`: the index the local pip would use (its config files, `PIP_INDEX_URL`, then pip's
    /// built-in default). Default `auto`.
    pub upstream: String,
    /// How long a fetched project page is served without asking the upstream; `0s` revalidates
    /// on every request. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: true,
            upstream: "auto".to_owned(),
            metadata_ttl: Duration::from_secs(600),
        }
    }
}
