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
    /// Longest time a whole metadata document fetch may take, headers and body: an upstream
    /// that drips a document a byte at a time (each within `read_timeout`) is cut off then.
    /// Default `2m`.
    #[serde(with = "humantime_serde")]
    pub document_timeout: Duration,
    /// How long a request waits for the upstream when pmcache has a copy of the document past
    /// its TTL; then the copy is served (marked stale) and the refresh goes on in the
    /// background. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub stale_timeout: Duration,
    /// How old the cached documents that list artifacts (packuments, p2 files, `/info` files)
    /// must be before a request for an artifact they do not list makes pmcache fetch them
    /// again (a lockfile may name a release newer than the cached copy). Bounds how often
    /// made-up artifact names can send pmcache to the upstream. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub refetch_floor: Duration,
    /// Largest metadata document accepted from an upstream, after decompression. Default
    /// `128MiB`: five times the largest real packument measured (25 MB).
    pub max_document_size: ByteSize,
    /// Connect to loopback, private and link-local addresses even when a host is not a
    /// configured upstream's (metadata may name any host). Default `false`.
    pub allow_private_addresses: bool,
    /// Hosts (`host` or `host:port`) that may be on loopback, private or link-local addresses
    /// although no upstream is configured there: a code host or file server mirrored on the LAN.
    /// Configured upstreams are trusted on their own port already. Default empty.
    pub trusted_hosts: Vec<String>,
    /// A PEM file of extra root certificates to trust for upstream TLS, added to the system's:
    /// an upstream behind a private CA. Default unset.
    pub ca_file: Option<std::path::PathBuf>,
    /// Timeouts in a row (connecting or waiting for an answer), to one upstream origin, after
    /// which requests to it fail at once until a probe succeeds; `0` disables. Default `5`.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before letting one probe request through. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            document_timeout: Duration::from_secs(120),
            stale_timeout: Duration::from_secs(2),
            refetch_floor: Duration::from_secs(10),
            max_document_size: ByteSize(128 << 20),
            allow_private_addresses: false,
            trusted_hosts: Vec::new(),
            ca_file: None,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}
