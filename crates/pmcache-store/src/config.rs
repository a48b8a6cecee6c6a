//! The `[storage]` section: how big the store may grow and how often it is tidied.

use std::time::Duration;

use crate::size::ByteSize;

/// The `[storage]` section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The most bytes of blobs kept, e.g. `"20GiB"`; above it the least recently used blobs are
    /// evicted. Default unset: unbounded (a full disk is then survived, not prevented).
    pub max_size: Option<ByteSize>,
    /// Eviction frees space down to this percentage of `max_size`, so that it does not run
    /// again at the next fill. Default `90`.
    pub low_water_percent: u8,
    /// How often eviction and garbage collection run in the background; they also run as soon
    /// as commits take the store over `max_size`. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Temp files older than this that no fill is writing are garbage (left by a killed
    /// process). Default `1h`.
    #[serde(with = "humantime_serde")]
    pub temp_max_age: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_size: None,
            low_water_percent: 90,
            gc_interval: Duration::from_secs(600),
            temp_max_age: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// The size eviction frees space down to, when there is a cap.
    pub fn low_water(&self) -> Option<u64> {
        let percent = u64::from(self.low_water_percent.clamp(1, 100));
        self.max_size.map(|ByteSize(max)| {
            u64::try_from(u128::from(max) * u128::from(percent) / 100).unwrap_or(max)
        })
    }
}
