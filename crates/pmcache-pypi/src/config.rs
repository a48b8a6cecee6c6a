//! The `[pypi]` config section: the keys every frontend has (`enabled`, `upstream`,
//! `metadata_ttl`), with PyPI's defaults.

use std::time::Duration;

/// Settings of the `/pypi/` frontend. `upstream` is the base URL of the upstream simple index
/// (PEP 503), e.g. `https://index.example/simple/`, or `auto`: the index the local pip would use
/// (its config files, `PIP_INDEX_URL`, then pip's built-in default).
pub type Config = pmcache_proxy::FrontendConfig<Extra>;

/// PyPI's own keys (none) and defaults: `upstream = "auto"`, `metadata_ttl = "10m"` (how long a
/// fetched project page is served without asking the upstream).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Extra {}

impl pmcache_proxy::FrontendDefaults for Extra {
    const UPSTREAM: &'static str = "auto";
    const METADATA_TTL: Duration = Duration::from_secs(600);
}
