//! The `[npm]` config section: the keys every frontend has (`enabled`, `upstream`,
//! `metadata_ttl`), with npm's defaults.

use std::time::Duration;

/// Settings of the `/npm/` frontend. `upstream` is the base URL of the upstream registry (it may
/// carry a path prefix), or `auto`: the registry the local npm would use (`npm config get
/// registry`).
pub type Config = pmcache_proxy::FrontendConfig<Extra>;

/// npm's own keys (none) and defaults: `upstream = "auto"`, `metadata_ttl = "5m"` (how long a
/// fetched packument is served without asking the upstream: the public registry's own max-age).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Extra {}

impl pmcache_proxy::FrontendDefaults for Extra {
    const UPSTREAM: &'static str = "auto";
    const METADATA_TTL: Duration = Duration::from_secs(300);
}
