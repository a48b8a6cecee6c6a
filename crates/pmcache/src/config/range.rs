//! The range of every numeric setting (counts, durations, sizes). A value outside its range stops
//! the start with one line naming the setting, the value and the range, rather than being
//! clamped quietly or failing every request later. docs/configuration.md lists the same ranges
//! (a test below compares them).

use std::time::Duration;

use pmcache_store::ByteSize;

use super::Config;

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// A year as durations are written (`1y`: 365.25 days).
const YEAR: Duration = Duration::from_secs(31_557_600);
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A value of a numeric setting, shown as operators write it.
trait Value: PartialOrd + Copy {
    fn show(self) -> String;
}

impl Value for u8 {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Value for u32 {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Value for usize {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Value for Duration {
    fn show(self) -> String {
        humantime::format_duration(self).to_string()
    }
}

impl Value for ByteSize {
    fn show(self) -> String {
        self.to_string()
    }
}

/// One numeric setting: its value and the values it may take.
#[derive(Debug, PartialEq, Eq)]
struct Bounded {
    /// `section.key`.
    key: &'static str,
    value: String,
    /// The range as the docs and the refusal state it: `1 to 1000000`.
    allowed: String,
    within: bool,
}

impl Bounded {
    /// `value` from `min` to `max`, both included.
    fn new<T: Value>(key: &'static str, value: T, min: T, max: T) -> Bounded {
        Bounded {
            key,
            value: value.show(),
            allowed: format!("{} to {}", min.show(), max.show()),
            within: min <= value && value <= max,
        }
    }
}

/// Refuses the first numeric setting of `config` outside its range.
pub(super) fn check(config: &Config) -> anyhow::Result<()> {
    match settings(config).into_iter().find(|setting| !setting.within) {
        Some(Bounded {
            key,
            value,
            allowed,
            ..
        }) => anyhow::bail!("{key} = {value} is out of range: it may be {allowed}"),
        None => Ok(()),
    }
}

/// Every numeric setting of `config`, with its range.
fn settings(config: &Config) -> Vec<Bounded> {
    let mut all = server(config);
    all.extend(storage(config));
    all.extend(upstream(config));
    all.extend(frontends(config));
    all.extend(policy(config));
    all
}

fn server(config: &Config) -> Vec<Bounded> {
    let server = &config.server;
    vec![
        Bounded::new(
            "server.max_connections",
            server.max_connections,
            1,
            1_000_000,
        ),
        // Not bounded by max_connections: lowering that alone must not make the default of
        // this one an error; above it, this limit never bites.
        Bounded::new(
            "server.max_connections_per_client",
            server.max_connections_per_client,
            1,
            1_000_000,
        ),
        // Under a second cuts off clients on any slow link, or mid TLS handshake.
        Bounded::new(
            "server.header_read_timeout",
            server.header_read_timeout,
            SECOND,
            HOUR,
        ),
        // The shortest useful request line and headers (`GET /pypi/simple/x/`, Host, Accept);
        // the most that hyper's read buffer of each connection is allowed to hold.
        Bounded::new(
            "server.max_uri_length",
            server.max_uri_length,
            ByteSize(256),
            ByteSize(MIB),
        ),
        Bounded::new(
            "server.max_header_size",
            server.max_header_size,
            ByteSize(KIB),
            ByteSize(MIB),
        ),
        Bounded::new("server.max_headers", server.max_headers, 8, 1000),
        Bounded::new(
            "server.body_read_timeout",
            server.body_read_timeout,
            SECOND,
            HOUR,
        ),
        Bounded::new("server.idle_timeout", server.idle_timeout, SECOND, DAY),
        Bounded::new(
            "server.max_concurrent_streams",
            server.max_concurrent_streams,
            1,
            10_000,
        ),
    ]
}

fn storage(config: &Config) -> Vec<Bounded> {
    let storage = &config.storage;
    // Unset is unbounded; 0 would evict every blob as soon as it is stored.
    let max_size = Bounded {
        key: "storage.max_size",
        value: storage
            .max_size
            .map_or_else(|| "unset".to_owned(), |size| size.to_string()),
        allowed: "1B or more, or unset".to_owned(),
        within: storage.max_size.is_none_or(|size| size.0 >= 1),
    };
    vec![
        max_size,
        Bounded::new(
            "storage.low_water_percent",
            storage.low_water_percent,
            1,
            100,
        ),
        // 0s would run maintenance without pause.
        Bounded::new("storage.gc_interval", storage.gc_interval, SECOND, 30 * DAY),
        // Shorter would sweep the temp files of fills that are still being written.
        Bounded::new(
            "storage.temp_max_age",
            storage.temp_max_age,
            MINUTE,
            30 * DAY,
        ),
    ]
}

fn upstream(config: &Config) -> Vec<Bounded> {
    let upstream = &config.upstream;
    vec![
        Bounded::new(
            "upstream.connect_timeout",
            upstream.connect_timeout,
            100 * MILLISECOND,
            10 * MINUTE,
        ),
        Bounded::new(
            "upstream.read_timeout",
            upstream.read_timeout,
            100 * MILLISECOND,
            HOUR,
        ),
        Bounded::new(
            "upstream.document_timeout",
            upstream.document_timeout,
            SECOND,
            HOUR,
        ),
        // 0s: a request with a stale copy never waits for the upstream.
        Bounded::new(
            "upstream.stale_timeout",
            upstream.stale_timeout,
            Duration::ZERO,
            HOUR,
        ),
        // 0s would let every made-up artifact name reach the upstream.
        Bounded::new(
            "upstream.refetch_floor",
            upstream.refetch_floor,
            100 * MILLISECOND,
            DAY,
        ),
        Bounded::new(
            "upstream.max_document_size",
            upstream.max_document_size,
            ByteSize(KIB),
            ByteSize(4 * GIB),
        ),
        // 0 disables the breaker.
        Bounded::new(
            "upstream.breaker_threshold",
            upstream.breaker_threshold,
            0,
            1000,
        ),
        Bounded::new(
            "upstream.breaker_cooldown",
            upstream.breaker_cooldown,
            SECOND,
            HOUR,
        ),
    ]
}

/// 0s revalidates on every request.
fn frontends(config: &Config) -> Vec<Bounded> {
    [
        ("pypi.metadata_ttl", config.pypi.metadata_ttl),
        ("npm.metadata_ttl", config.npm.metadata_ttl),
        ("rubygems.metadata_ttl", config.rubygems.metadata_ttl),
        ("packagist.metadata_ttl", config.packagist.metadata_ttl),
    ]
    .into_iter()
    .map(|(key, ttl)| Bounded::new(key, ttl, Duration::ZERO, YEAR))
    .collect()
}

/// `0s` turns the age rule off; beyond a year, nothing new would ever be served. A section's
/// unset value is [policy]'s, checked there (shown as `0s`, within range).
fn policy(config: &Config) -> Vec<Bounded> {
    let mut all = vec![Bounded::new(
        "policy.min_release_age",
        config.policy.min_release_age,
        Duration::ZERO,
        YEAR,
    )];
    all.extend(
        [
            (
                "pypi.policy.min_release_age",
                config.pypi.policy.min_release_age,
            ),
            (
                "npm.policy.min_release_age",
                config.npm.policy.min_release_age,
            ),
            (
                "rubygems.policy.min_release_age",
                config.rubygems.policy.min_release_age,
            ),
            (
                "packagist.policy.min_release_age",
                config.packagist.policy.min_release_age,
            ),
        ]
        .into_iter()
        .map(|(key, age)| Bounded::new(key, age.unwrap_or_default(), Duration::ZERO, YEAR)),
    );
    all
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    #[test]
    fn the_defaults_are_within_their_ranges() {
        let outside: Vec<Bounded> = settings(&Config::default())
            .into_iter()
            .filter(|setting| !setting.within)
            .collect();
        assert_eq!(outside, []);
        assert!(check(&Config::default()).is_ok());
    }

    /// Each setting just outside its range, and at its edges.
    #[test]
    fn values_past_either_end_are_refused_naming_setting_value_and_range() {
        let refused = |change: fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            check(&config).unwrap_err().to_string()
        };
        let passes = |change: fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            check(&config).is_ok()
        };
        assert_eq!(
            refused(|c| c.server.max_connections = 0),
            "server.max_connections = 0 is out of range: it may be 1 to 1000000"
        );
        assert!(passes(|c| c.server.max_connections = 1));
        assert_eq!(
            refused(|c| c.server.header_read_timeout = Duration::from_millis(500)),
            "server.header_read_timeout = 500ms is out of range: it may be 1s to 1h"
        );
        assert_eq!(
            refused(|c| c.server.max_uri_length = ByteSize(2 * MIB)),
            "server.max_uri_length = 2MiB is out of range: it may be 256B to 1MiB"
        );
        assert_eq!(
            refused(|c| c.storage.low_water_percent = 150),
            "storage.low_water_percent = 150 is out of range: it may be 1 to 100"
        );
        assert_eq!(
            refused(|c| c.storage.max_size = Some(ByteSize(0))),
            "storage.max_size = 0B is out of range: it may be 1B or more, or unset"
        );
        assert_eq!(
            refused(|c| c.upstream.max_document_size = ByteSize(5 * GIB)),
            "upstream.max_document_size = 5GiB is out of range: it may be 1KiB to 4GiB"
        );
        assert_eq!(
            refused(|c| c.npm.metadata_ttl = 2 * YEAR),
            "npm.metadata_ttl = 2years is out of range: it may be 0s to 1year"
        );
        assert!(passes(|c| c.pypi.metadata_ttl = Duration::ZERO));
        assert!(passes(|c| c.policy.min_release_age = YEAR));
        assert_eq!(
            refused(|c| c.npm.policy.min_release_age = Some(2 * YEAR)),
            "npm.policy.min_release_age = 2years is out of range: it may be 0s to 1year"
        );
        assert!(passes(|c| c.upstream.stale_timeout = Duration::ZERO));
        assert!(passes(|c| c.upstream.breaker_threshold = 0));
        for change in [
            (|c: &mut Config| c.server.max_connections_per_client = 0) as fn(&mut Config),
            |c| c.server.body_read_timeout = Duration::ZERO,
            |c| c.server.idle_timeout = 2 * DAY,
            |c| c.server.max_concurrent_streams = 10_001,
            |c| c.server.max_headers = 7,
            |c| c.server.max_header_size = ByteSize(KIB - 1),
            |c| c.storage.low_water_percent = 0,
            |c| c.storage.gc_interval = Duration::ZERO,
            |c| c.storage.temp_max_age = 59 * SECOND,
            |c| c.upstream.connect_timeout = Duration::ZERO,
            |c| c.upstream.read_timeout = 99 * MILLISECOND,
            |c| c.upstream.document_timeout = Duration::ZERO,
            |c| c.upstream.stale_timeout = 2 * HOUR,
            |c| c.upstream.refetch_floor = Duration::ZERO,
            |c| c.upstream.breaker_threshold = 1001,
            |c| c.upstream.breaker_cooldown = Duration::ZERO,
            |c| c.rubygems.metadata_ttl = 2 * YEAR,
            |c| c.packagist.metadata_ttl = 2 * YEAR,
            |c| c.policy.min_release_age = 2 * YEAR,
            |c| c.pypi.policy.min_release_age = Some(2 * YEAR),
        ] {
            let message = refused(change);
            assert!(
                message.contains(" is out of range: it may be "),
                "{message}"
            );
        }
    }

    /// Whether a serialised setting is a count, a duration or a size.
    fn is_numeric(value: &toml::Value) -> bool {
        match value {
            toml::Value::Integer(_) | toml::Value::Float(_) => true,
            toml::Value::String(text) => {
                humantime::parse_duration(text).is_ok() || text.parse::<ByteSize>().is_ok()
            }
            _ => false,
        }
    }

    /// A numeric setting added without a range fails here.
    #[test]
    fn every_numeric_setting_has_a_range() {
        let mut config = Config::default();
        // Optional settings serialise only when set.
        config.storage.max_size = Some(ByteSize(GIB));
        config.pypi.policy.min_release_age = Some(DAY);
        config.npm.policy.min_release_age = Some(DAY);
        config.rubygems.policy.min_release_age = Some(DAY);
        config.packagist.policy.min_release_age = Some(DAY);
        let serialised = toml::Value::try_from(&config).unwrap();
        let mut numeric = Vec::new();
        for (section, keys) in serialised.as_table().unwrap() {
            let Some(keys) = keys.as_table() else {
                assert!(!is_numeric(keys), "{section}");
                continue;
            };
            for (key, value) in keys {
                if is_numeric(value) {
                    numeric.push(format!("{section}.{key}"));
                }
                // Subsections (`[npm.policy]`).
                for (subkey, value) in value.as_table().into_iter().flatten() {
                    if is_numeric(value) {
                        numeric.push(format!("{section}.{key}.{subkey}"));
                    }
                }
            }
        }
        let ranged: Vec<&str> = settings(&config).iter().map(|s| s.key).collect();
        let missing: Vec<&String> = numeric
            .iter()
            .filter(|key| !ranged.contains(&key.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "numeric settings without a range: {missing:?}"
        );
        assert!(numeric.len() >= ranged.len(), "{numeric:?}");
    }

    /// The ranges table of docs/configuration.md: `| `section.key` | range |` rows.
    fn documented_ranges() -> BTreeMap<String, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let text = std::fs::read_to_string(path).unwrap();
        let table = text
            .split_once("### Ranges")
            .expect("docs/configuration.md has a Ranges section")
            .1;
        table
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_owned(), (*cells.get(2)?).replace('`', "")))
            })
            .collect()
    }

    #[test]
    fn the_docs_list_every_range() {
        let code: BTreeMap<String, String> = settings(&Config::default())
            .into_iter()
            .map(|setting| (setting.key.to_owned(), setting.allowed))
            .collect();
        assert_eq!(documented_ranges(), code);
    }
}
