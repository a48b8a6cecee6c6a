//! The `[rubygems]` config section.

use std::time::Duration;

/// Settings of the `/rubygems/` frontend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve the RubyGems API under `/rubygems/`. Default `true`.
    pub enabled: bool,
    /// Base URL of the upstream gem server (it may carry a path prefix). Default
    /// `https://rubygems.org/`.
    pub upstream: String,
    /// How long fetched index files (`/versions`, `/info/NAME`, `/names`, the `.4.8.gz`
    /// indexes) are served without asking the upstream; `0s` revalidates on every request.
    /// An `/info/NAME` whose MD5 matches the one a fresh `/versions` lists is current whatever
    /// its age. Default `5m`: rubygems.org's own max-age is one minute, but `/versions` is tens
    /// of megabytes that change with every push, and a CI mirror gains little from fetching it
    /// every minute.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: true,
            upstream: "https://rubygems.org/".to_owned(),
            metadata_ttl: Duration::from_secs(300),
        }
    }
}
