//! The whole configuration: the embedded `config/default.toml`, overlaid by a `--config` file,
//! then by `PMCACHE_*` environment variables, then by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pmcache_npm as npm;
use pmcache_packagist as packagist;
use pmcache_policy as policy;
use pmcache_proxy as proxy;
use pmcache_pypi as pypi;
use pmcache_rubygems as rubygems;
use pmcache_store as store;
use pmcache_store::ByteSize;
use url::Url;

use crate::auth::AuthConfig;
use crate::frontend::Ecosystem;
use crate::tls::TlsConfig;

mod range;

/// The built-in configuration, compiled into the binary.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Top-level keys that environment variables may set (`PMCACHE_<KEY>`).
/// `routes` takes a TOML array of inline tables.
const TOP_LEVEL_KEYS: [&str; 4] = ["listen", "data_dir", "public_url", "routes"];
/// Sections besides the frontends' that environment variables may set
/// (`PMCACHE_<SECTION>_<KEY>`).
const SECTIONS: [&str; 7] = [
    "auth", "log", "policy", "server", "storage", "tls", "upstream",
];
/// The subsection of each frontend's section that environment variables may set
/// (`PMCACHE_<ECOSYSTEM>_POLICY_<KEY>`).
const FRONTEND_POLICY: &str = "policy";
const ENV_PREFIX: &str = "PMCACHE_";

/// Everything pmcache can be told.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Address to serve on. Default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// Directory for blobs, temp files and the index. Default `pmcache-data`.
    pub data_dir: PathBuf,
    /// The URL clients reach pmcache at, if not what they send as Host. Default unset.
    pub public_url: Option<Url>,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub storage: store::Config,
    pub upstream: proxy::Config,
    pub pypi: pypi::Config,
    pub npm: npm::Config,
    pub rubygems: rubygems::Config,
    pub packagist: packagist::Config,
    /// HTTPS on `listen`. Default unset: plain HTTP.
    pub tls: TlsConfig,
    /// The fleet's supply-chain policy; each frontend's `[<ecosystem>.policy]` overrides it key
    /// by key. Default: off.
    pub policy: policy::Config,
    /// `[[routes]]`: names sent to another upstream than their ecosystem's, or to none; the
    /// first entry taking a name wins. Default none.
    pub routes: Vec<policy::RouteConfig>,
}

/// The `[log]` section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,pmcache_proxy=debug`; `RUST_LOG` wins when set.
    /// Default `info`.
    pub filter: String,
}

/// The `[server]` section: limits on what clients may send and hold, so that no client can make
/// pmcache hang, buffer without bound, or run out of connections for the others.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Connections served at once; more are answered 503 and closed. Default `1024`.
    pub max_connections: usize,
    /// Connections served at once from one client (an IPv4 address, or an IPv6 /64); more are
    /// answered 503 and closed. Clients in `trusted_networks` are not limited. Default `256`.
    pub max_connections_per_client: usize,
    /// Networks (CIDRs) whose clients may use an eighth of `max_connections` kept for them and
    /// are not limited per client: the operator and the trusted runners. Default none.
    pub trusted_networks: Vec<String>,
    /// Networks (CIDRs) of the reverse proxies in front of pmcache: only from these peers are
    /// `Forwarded` and `X-Forwarded-*` believed (the origin pmcache writes into documents);
    /// from anyone else they are removed. Default none.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send its first bytes, then again to complete a request's headers,
    /// counted on kept-alive connections from the end of the previous response (so it also
    /// closes idle ones). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest request target (path and query) answered; longer ones get 414. Default `8KiB`.
    pub max_uri_length: ByteSize,
    /// Largest request header block (names and values); larger ones get 431. Default `32KiB`.
    pub max_header_size: ByteSize,
    /// Most request header fields on HTTP/1; more get 431. Default `100`.
    pub max_headers: usize,
    /// Time a request body (npm audit, Composer advisories) has to arrive whole once its
    /// headers are in; a slower one gets 408. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress (HTTP/2: no open stream)
    /// before it is closed. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Requests at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). Default
    /// `128`.
    pub max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 1024,
            max_connections_per_client: 256,
            trusted_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(30),
            max_uri_length: ByteSize(8 << 10),
            max_header_size: ByteSize(32 << 10),
            max_headers: 100,
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 128,
        }
    }
}

impl ServerConfig {
    /// Refuses networks that are no CIDR (the numbers are checked with every other setting's).
    fn check(&self) -> anyhow::Result<()> {
        for (key, networks) in [
            ("trusted_networks", &self.trusted_networks),
            ("trusted_proxies", &self.trusted_proxies),
        ] {
            for network in networks {
                crate::network::Network::parse(network)
                    .map_err(|error| anyhow::anyhow!("server.{key}: {error}"))?;
            }
        }
        Ok(())
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("pmcache-data"),
            public_url: None,
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            storage: store::Config::default(),
            upstream: proxy::Config::default(),
            pypi: pypi::Config::default(),
            npm: npm::Config::default(),
            rubygems: rubygems::Config::default(),
            packagist: packagist::Config::default(),
            tls: TlsConfig::default(),
            policy: policy::Config::default(),
            routes: Vec::new(),
        }
    }
}

impl Config {
    /// The supply-chain policy these settings describe: `[policy]`, each frontend's
    /// `[<ecosystem>.policy]` and `[[routes]]`, checked. [`load`] has checked it once already,
    /// so on a loaded configuration this fails only if the configuration was changed since.
    pub(crate) fn policy(&self) -> Result<policy::Policy, policy::Error> {
        policy::Policy::new(
            &self.policy,
            &[
                (policy::Ecosystem::Pypi, &self.pypi.policy),
                (policy::Ecosystem::Npm, &self.npm.policy),
                (policy::Ecosystem::Rubygems, &self.rubygems.policy),
                (policy::Ecosystem::Packagist, &self.packagist.policy),
            ],
            &self.routes,
        )
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// Command-line flags that override every other source.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// A configuration and the `PMCACHE_*` variables that named no setting.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub config: Config,
    /// Variables such as `PMCACHE_BIN` (a wrapper script's) or `PMCACHE_PORT` (which Kubernetes
    /// injects for a service named pmcache): not settings, so reported and ignored rather than
    /// fatal. A variable naming a section (`PMCACHE_PYPI_TTL`) is a typo and stays an error.
    pub ignored_env: Vec<String>,
}

/// Builds the configuration from its four layers. `env` is the process environment (tests pass
/// their own list instead of mutating the real one).
pub(crate) fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    flags: &Overrides,
) -> anyhow::Result<Loaded> {
    let mut table: toml::Table =
        toml::from_str(DEFAULT_TOML).context("the embedded default config is invalid")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let layer: toml::Table = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        merge(&mut table, layer);
    }
    let mut ignored_env = Vec::new();
    for (name, value) in env.iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)) {
        if !apply_env(&mut table, name, value) {
            ignored_env.push(name.clone());
        }
    }
    // toml puts the key on a line of its own; pmcache's start errors are one line.
    let mut config: Config = toml::Value::Table(table).try_into().map_err(|error| {
        let message = error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        anyhow::anyhow!("invalid configuration: {message}")
    })?;
    if let Some(listen) = flags.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = &flags.data_dir {
        config.data_dir = data_dir.clone();
    }
    range::check(&config)?;
    config.server.check()?;
    crate::frontend::check_upstreams(&config)?;
    config.policy()?;
    crate::frontend::check_route_upstreams(&config)?;
    config.tls.check()?;
    config.auth.read_tokens_file()?;
    config.auth.check()?;
    Ok(Loaded {
        config,
        ignored_env,
    })
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_section)), toml::Value::Table(section)) => {
                merge(base_section, section);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `PMCACHE_PYPI_METADATA_TTL=1m` sets `[pypi] metadata_ttl = "1m"`. False when the name is
/// neither a top-level key nor in a section.
fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> bool {
    let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    let value = env_value(value);
    if TOP_LEVEL_KEYS.contains(&key.as_str()) {
        table.insert(key, value);
        return true;
    }
    let frontends = Ecosystem::ALL.map(Ecosystem::key);
    // `PMCACHE_NPM_POLICY_DENY` sets `[npm.policy] deny`, not a key `policy_deny` of `[npm]`.
    for frontend in frontends {
        let field = key
            .strip_prefix(frontend)
            .and_then(|k| k.strip_prefix('_'))
            .and_then(|k| k.strip_prefix(FRONTEND_POLICY))
            .and_then(|k| k.strip_prefix('_'));
        if let Some(field) = field {
            let section = subtable(table, frontend);
            subtable(section, FRONTEND_POLICY).insert(field.to_owned(), value);
            return true;
        }
    }
    for section in SECTIONS.into_iter().chain(frontends) {
        if let Some(field) = key.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(section_table) = entry {
                section_table.insert(field.to_owned(), value);
                return true;
            }
        }
    }
    false
}

/// The table `key` of `table`, made empty if missing (or set to something other than a table,
/// which the layers below then replace).
fn subtable<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let entry = table
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("made a table just above")
}

/// An environment value as TOML when it reads as a TOML scalar (`true`, `8`), else a string.
fn env_value(text: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("value = {text}"))
        .ok()
        .and_then(|mut t| t.remove("value"));
    match parsed {
        Some(
            value @ (toml::Value::Boolean(_)
            | toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Array(_)),
        ) => value,
        _ => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn embedded_default_is_exactly_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            load(None, &[], &Overrides::default()).unwrap().config,
            Config::default()
        );
    }

    #[test]
    fn example_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let config = load(Some(&example), &[], &Overrides::default())
            .unwrap()
            .config;
        assert_eq!(config, Config::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pmcache.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[pypi]\nmetadata_ttl = \"1m\"\nupstream = \"http://127.0.0.1:1/simple/\"\n",
        )
        .unwrap();
        let environment = env(&[
            ("PMCACHE_PYPI_METADATA_TTL", "0s"),
            ("PMCACHE_DATA_DIR", "/var/cache/pmcache"),
            ("PMCACHE_PYPI_ENABLED", "false"),
            ("OTHER", "ignored"),
        ]);
        let flags = Overrides {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            data_dir: None,
        };
        let config = load(Some(&file), &environment, &flags).unwrap().config;
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.data_dir, PathBuf::from("/var/cache/pmcache"));
        assert_eq!(config.pypi.metadata_ttl, Duration::ZERO);
        assert_eq!(config.pypi.upstream, "http://127.0.0.1:1/simple/");
        assert!(!config.pypi.enabled);
    }

    #[test]
    fn server_limits_come_from_the_environment_and_useless_ones_are_refused() {
        let config = load(
            None,
            &env(&[
                ("PMCACHE_SERVER_MAX_CONNECTIONS", "7"),
                ("PMCACHE_SERVER_HEADER_READ_TIMEOUT", "2s"),
                ("PMCACHE_SERVER_MAX_URI_LENGTH", "1KiB"),
            ]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.server.max_uri_length, ByteSize(1024));
        let trusted = load(
            None,
            &env(&[
                (
                    "PMCACHE_SERVER_TRUSTED_NETWORKS",
                    r#"["10.20.0.0/16", "fd00::/8"]"#,
                ),
                ("PMCACHE_SERVER_MAX_CONNECTIONS_PER_CLIENT", "8"),
                (
                    "PMCACHE_SERVER_TRUSTED_PROXIES",
                    r#"["127.0.0.1", "10.9.0.0/24"]"#,
                ),
            ]),
            &Overrides::default(),
        )
        .unwrap()
        .config
        .server;
        assert_eq!(trusted.trusted_networks, ["10.20.0.0/16", "fd00::/8"]);
        assert_eq!(trusted.max_connections_per_client, 8);
        assert_eq!(trusted.trusted_proxies, ["127.0.0.1", "10.9.0.0/24"]);
        for (name, value) in [
            ("PMCACHE_SERVER_MAX_CONNECTIONS", "0"),
            ("PMCACHE_SERVER_MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("PMCACHE_SERVER_TRUSTED_NETWORKS", r#"["10.1.2.3/8"]"#),
            ("PMCACHE_SERVER_TRUSTED_NETWORKS", r#"["not-a-network"]"#),
            ("PMCACHE_SERVER_TRUSTED_PROXIES", r#"["10.0.0.1/33"]"#),
            ("PMCACHE_SERVER_TRUSTED_PROXIES", r#""10.0.0.1""#),
            ("PMCACHE_SERVER_HEADER_READ_TIMEOUT", "0s"),
            ("PMCACHE_SERVER_BODY_READ_TIMEOUT", "0s"),
            ("PMCACHE_SERVER_IDLE_TIMEOUT", "0s"),
            ("PMCACHE_UPSTREAM_DOCUMENT_TIMEOUT", "0s"),
            ("PMCACHE_STORAGE_LOW_WATER_PERCENT", "150"),
            ("PMCACHE_STORAGE_LOW_WATER_PERCENT", "0"),
            ("PMCACHE_STORAGE_GC_INTERVAL", "0s"),
            ("PMCACHE_SERVER_MAX_CONCURRENT_STREAMS", "0"),
            ("PMCACHE_SERVER_MAX_URI_LENGTH", "10"),
            ("PMCACHE_SERVER_MAX_HEADERS", "1"),
            ("PMCACHE_UPSTREAM_BREAKER_THRESHOLD", "5000"),
            ("PMCACHE_STORAGE_MAX_SIZE", "0"),
            ("PMCACHE_PYPI_METADATA_TTL", "2y"),
        ] {
            let error = load(None, &env(&[(name, value)]), &Overrides::default()).unwrap_err();
            assert!(
                ["server.", "upstream.", "storage.", "pypi."]
                    .iter()
                    .any(|section| format!("{error:#}").contains(section)),
                "{name}: {error:#}"
            );
        }
        let error = load(
            None,
            &env(&[("PMCACHE_UPSTREAM_READ_TIMEOUT", "50ms")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "upstream.read_timeout = 50ms is out of range: it may be 100ms to 1h"
        );
    }

    #[test]
    fn storage_cap_reads_from_the_environment() {
        let config = load(
            None,
            &env(&[("PMCACHE_STORAGE_MAX_SIZE", "20GiB")]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert_eq!(config.storage.max_size, Some(store::ByteSize(20 << 30)));
        assert_eq!(config.storage.low_water(), Some(18 << 30));
    }

    #[test]
    fn variables_naming_no_setting_are_ignored_but_typos_in_a_section_are_refused() {
        let loaded = load(
            None,
            &env(&[
                ("PMCACHE_PORT", "tcp://10.0.0.1:7878"),
                ("PMCACHE_BIN", "x"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(loaded.config, Config::default());
        assert_eq!(loaded.ignored_env, ["PMCACHE_PORT", "PMCACHE_BIN"]);
        let error = load(
            None,
            &env(&[("PMCACHE_PYPI_TTL", "1m")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("ttl"), "{error:#}");
    }

    #[test]
    fn tls_files_come_from_the_environment_both_or_neither() {
        let config = load(
            None,
            &env(&[
                ("PMCACHE_TLS_CERT_FILE", "/etc/pmcache/cert.pem"),
                ("PMCACHE_TLS_KEY_FILE", "/etc/pmcache/key.pem"),
            ]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert_eq!(
            config.tls.cert_file.as_deref(),
            Some(Path::new("/etc/pmcache/cert.pem"))
        );
        assert_eq!(
            config.tls.key_file.as_deref(),
            Some(Path::new("/etc/pmcache/key.pem"))
        );
        let error = load(
            None,
            &env(&[("PMCACHE_TLS_CERT_FILE", "cert.pem")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("tls.key_file"), "{error:#}");
    }

    #[test]
    fn frontend_sections_keep_their_own_keys_and_refuse_typos() {
        let config = load(
            None,
            &env(&[
                ("PMCACHE_PACKAGIST_KEEP_SOURCE", "false"),
                ("PMCACHE_PACKAGIST_DIST_HOSTS", "[\"dist.example\"]"),
                ("PMCACHE_RUBYGEMS_METADATA_TTL", "1m"),
            ]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert!(!config.packagist.extra.keep_source);
        assert_eq!(config.packagist.extra.dist_hosts, ["dist.example"]);
        assert_eq!(config.packagist.metadata_ttl, Duration::from_secs(300));
        assert_eq!(config.rubygems.metadata_ttl, Duration::from_secs(60));
        assert_eq!(config.npm, npm::Config::default());
        for (name, key) in [
            ("PMCACHE_PACKAGIST_DIST_HOST", "dist_host"),
            ("PMCACHE_NPM_KEEP_SOURCE", "keep_source"),
        ] {
            let error = load(None, &env(&[(name, "x")]), &Overrides::default()).unwrap_err();
            assert!(format!("{error:#}").contains(key), "{name}: {error:#}");
        }
    }

    #[test]
    fn auth_comes_from_the_environment_and_its_tokens_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.toml");
        std::fs::write(
            &file,
            "[[tokens]]\nname = \"gate\"\nrole = \"populate\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let config = load(
            None,
            &env(&[
                ("PMCACHE_AUTH_ANONYMOUS", "none"),
                ("PMCACHE_AUTH_READ_MISSES", "refuse"),
                ("PMCACHE_AUTH_TOKENS_FILE", path),
            ]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert_eq!(config.auth.anonymous, crate::auth::Anonymous::None);
        assert_eq!(config.auth.read_misses, proxy::ReadMisses::Refuse);
        assert_eq!(config.auth.tokens[0].name, "gate");
        let error = load(
            None,
            &env(&[("PMCACHE_AUTH_ANONYMOUS", "none")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("refuse every request"),
            "{error:#}"
        );
        let error = load(
            None,
            &env(&[("PMCACHE_AUTH_ANONYMOUS", "everyone")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("everyone"), "{error:#}");
    }

    #[test]
    fn policy_comes_from_the_file_and_the_environment_with_sections_overriding_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pmcache.toml");
        std::fs::write(
            &file,
            r#"
[policy]
min_release_age = "7d"
min_release_age_exclude = ["npm:@acme/*"]
deny = ["pypi:ctx"]

[npm]
metadata_ttl = "1m"

[npm.policy]
min_release_age = "3d"

[[routes]]
ecosystem = "npm"
names = ["@acme/*"]
upstream = "http://127.0.0.1:4873/"

[[routes]]
ecosystem = "pypi"
names = ["acme-*"]
upstream = "none"
"#,
        )
        .unwrap();
        let environment = env(&[
            ("PMCACHE_POLICY_UNKNOWN_RELEASE_TIME", "allow"),
            (
                "PMCACHE_POLICY_ALLOW_ONLY",
                r#"["npm:*", "pypi:*", "rubygems:*"]"#,
            ),
            ("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "1d"),
            ("PMCACHE_RUBYGEMS_POLICY_DENY", r#"["rest-client@1.6.13"]"#),
            ("PMCACHE_PACKAGIST_POLICY_ALLOW_ONLY", "[]"),
        ]);
        let loaded = load(Some(&file), &environment, &Overrides::default()).unwrap();
        assert_eq!(loaded.ignored_env, Vec::<String>::new());
        let config = loaded.config;
        const DAY: Duration = Duration::from_secs(86_400);
        assert_eq!(config.policy.min_release_age, 7 * DAY);
        assert_eq!(
            config.policy.unknown_release_time,
            policy::UnknownReleaseTime::Allow
        );
        assert_eq!(config.npm.metadata_ttl, Duration::from_secs(60));
        assert_eq!(config.npm.policy.min_release_age, Some(3 * DAY));
        assert_eq!(config.rubygems.policy.min_release_age, Some(DAY));
        assert_eq!(config.routes.len(), 2);
        let policy = config.policy().unwrap();
        use policy::Ecosystem::{Npm, Packagist, Pypi, Rubygems};
        assert_eq!(policy.min_release_age(Npm), 3 * DAY);
        assert_eq!(policy.min_release_age(Pypi), 7 * DAY);
        assert_eq!(policy.min_release_age(Rubygems), DAY);
        let now = std::time::SystemTime::now();
        let refused = |ecosystem, name, version, published| {
            policy
                .judge(ecosystem, name, version, published, now)
                .refusal()
                .map(|refusal| refusal.rule)
        };
        use policy::Rule;
        assert_eq!(refused(Pypi, "CTX", "0.1", None), Some(Rule::Deny));
        assert_eq!(
            refused(Rubygems, "rest-client", "1.6.13", None),
            Some(Rule::Deny)
        );
        assert_eq!(refused(Rubygems, "rails", "7.0", Some(now - 2 * DAY)), None);
        assert_eq!(
            refused(Npm, "left-pad", "1.0.0", Some(now - DAY)),
            Some(Rule::MinReleaseAge)
        );
        assert_eq!(refused(Npm, "@acme/tool", "1.0.0", Some(now)), None);
        // The environment's allow_only names no Composer package, but [packagist.policy]
        // emptied it.
        assert!(policy.judge_name(Packagist, "acme/tool").is_allowed());
        assert_eq!(policy.route(Npm, "@acme/tool").map(|r| r.index()), Some(0));
        assert_eq!(policy.route(Pypi, "Acme_Lib").map(|r| r.index()), Some(1));
        assert!(policy.route(Npm, "left-pad").is_none());
    }

    #[test]
    fn routes_come_from_the_environment_as_an_array_of_inline_tables() {
        let config = load(
            None,
            &env(&[(
                "PMCACHE_ROUTES",
                r#"[{ ecosystem = "rubygems", names = ["acme_*"], upstream = "none" }]"#,
            )]),
            &Overrides::default(),
        )
        .unwrap()
        .config;
        assert_eq!(config.routes[0].names, ["acme_*"]);
        assert!(
            config
                .policy()
                .unwrap()
                .route(policy::Ecosystem::Rubygems, "acme_x")
                .is_some()
        );
    }

    #[test]
    fn bad_policy_settings_stop_the_start_naming_them() {
        for (name, value, wanted) in [
            (
                "PMCACHE_POLICY_DENY",
                r#"["ctx"]"#,
                "policy.deny: \"ctx\" is not a pattern: it names no ecosystem",
            ),
            (
                "PMCACHE_POLICY_MIN_RELEASE_AGE_EXCLUDE",
                r#"["npm:@acme/x@1.0.0"]"#,
                "policy.min_release_age_exclude: \"npm:@acme/x@1.0.0\" is not a pattern: this setting takes names only",
            ),
            (
                "PMCACHE_NPM_POLICY_ALLOW_ONLY",
                r#"["pypi:requests"]"#,
                "npm.policy.allow_only: \"pypi:requests\" is not a pattern: it names pypi in a setting of the npm ecosystem",
            ),
            (
                "PMCACHE_POLICY_MIN_RELEASE_AGE",
                "2y",
                "policy.min_release_age = 2years is out of range: it may be 0s to 1year",
            ),
            (
                "PMCACHE_PYPI_POLICY_MIN_RELEASE_AGE",
                "2y",
                "pypi.policy.min_release_age = 2years is out of range: it may be 0s to 1year",
            ),
            ("PMCACHE_POLICY_MIN_RELEASE_AGE", "3x", "min_release_age"),
            (
                "PMCACHE_POLICY_UNKNOWN_RELEASE_TIME",
                "maybe",
                "unknown_release_time",
            ),
            (
                "PMCACHE_NPM_POLICY_UNKNOWN_RELEASE_TIME",
                "maybe",
                "unknown_release_time",
            ),
            ("PMCACHE_NPM_POLICY_MIN_AGE", "1d", "min_age"),
            (
                "PMCACHE_ROUTES",
                r#"[{ ecosystem = "crates", names = ["x"], upstream = "none" }]"#,
                "routes[0].ecosystem: \"crates\" is not an ecosystem",
            ),
            (
                "PMCACHE_ROUTES",
                r#"[{ ecosystem = "npm", names = ["@acme/*"], upstream = "http://0.0.0.0:4873/" }]"#,
                "routes[0].upstream = \"http://0.0.0.0:4873/\" cannot be used: its host is no address",
            ),
            (
                "PMCACHE_ROUTES",
                r#"[{ ecosystem = "npm", names = ["@acme/*"] }]"#,
                "upstream",
            ),
        ] {
            let Err(error) = load(None, &env(&[(name, value)]), &Overrides::default()) else {
                panic!("{name}={value} was accepted");
            };
            let message = format!("{error:#}");
            assert!(message.contains(wanted), "{name}={value}: {message}");
            assert_eq!(message.lines().count(), 1, "{name}={value}: {message}");
        }
    }
}
