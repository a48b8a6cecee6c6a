//! The `[rubygems]` config section: the keys every frontend has (`enabled`, `upstream`,
//! `metadata_ttl`), with RubyGems' defaults.

use std::time::Duration;

/// Settings of the `/rubygems/` frontend. `upstream` is the base URL of the upstream gem server
/// (it may carry a path prefix).
pub type Config = pmcache_proxy::FrontendConfig<Extra>;

/// RubyGems' own keys (none) and defaults: `upstream = "https://rubygems.org/"`,
/// `metadata_ttl = "5m"`: how long fetched index files (`/versions`, `/info/NAME`, `/names`,
/// the `.4.8.gz` indexes) are served without asking the upstream. An `/info/NAME` whose MD5
/// matches the one a fresh `/versions` lists is current whatever its age. rubygems.org's own
/// max-age is one minute, but `/versions` is tens of megabytes that change with every push, and
/// a CI mirror gains little from fetching it every minute.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Extra {}

impl pmcache_proxy::FrontendDefaults for Extra {
    const UPSTREAM: &'static str = "https://rubygems.org/";
    const METADATA_TTL: Duration = Duration::from_secs(300);
}
