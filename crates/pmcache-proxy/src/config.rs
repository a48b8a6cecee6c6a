//! The `[upstream]` config section: how pmcache talks to every upstream registry.

use std::time::Duration;

use pmcache_store::ByteSize;

/// Upstream client settings shared by all frontends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time allowed to open a TCP (and TLS) connection to an upstream. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for response headers, and for each next piece of a body. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Largest metadata document accepted from an upstream, after decompression. Default `512MiB`.
    pub max_document_size: ByteSize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_document_size: ByteSize(512 << 20),
        }
    }
}
