//! The four frontends behind one type: the wiring table (each ecosystem's names, path rule and
//! upstream discovery), how a frontend is built from its config section (an upstream set to a
//! URL must be usable, or pmcache does not start; only `auto` may leave a frontend off), and
//! how a request reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::request::Parts;
use pmcache_npm as npm;
use pmcache_packagist as packagist;
use pmcache_proxy::{Body, Classify, Proxy};
use pmcache_pypi as pypi;
use pmcache_rubygems as rubygems;
use tokio::sync::watch;
use url::Url;

use crate::config::Config;

/// The `upstream` setting that asks for discovery.
const AUTO: &str = "auto";
/// The `upstream` of a route that goes to no upstream.
const ROUTE_NONE: &str = "none";
/// npm's audit body: the whole dependency tree of a lockfile (a few MiB for the largest).
const NPM_AUDIT_BODY: usize = 8 << 20;
/// Composer's advisories query: a form naming the packages of a project.
const ADVISORIES_BODY: usize = 1 << 20;
/// Composer's notify-batch: the names and versions just installed.
const NOTIFY_BODY: usize = 256 << 10;

/// An ecosystem pmcache serves: a row of the wiring table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ecosystem {
    Pypi,
    Npm,
    Rubygems,
    Packagist,
}

/// Finds the upstream the local client would use (and where that setting came from), given
/// what counts as this pmcache itself; or says why there is none.
type Discover = fn(&dyn Fn(&Url) -> bool) -> Result<(Url, String), String>;

/// How an ecosystem is wired.
struct Wiring {
    /// Its config section, mount segment, and label in metrics and logs (`pypi`).
    key: &'static str,
    /// How people write it (`PyPI`).
    label: &'static str,
    /// Whether its routes take a percent-encoded `/` inside a segment: npm scoped names
    /// (`@scope%2fname`) and Composer dist references (branch names such as `feature/x`).
    encoded_slash: bool,
    /// How `upstream = "auto"` is resolved.
    discover: Discover,
}

impl Ecosystem {
    /// Every ecosystem, in the order they are built and listed.
    pub(crate) const ALL: [Ecosystem; 4] = [
        Ecosystem::Pypi,
        Ecosystem::Npm,
        Ecosystem::Rubygems,
        Ecosystem::Packagist,
    ];

    fn wiring(self) -> Wiring {
        match self {
            Ecosystem::Pypi => Wiring {
                key: "pypi",
                label: "PyPI",
                encoded_slash: false,
                discover: |is_self| pypi::discover::discover(is_self).map(|f| (f.url, f.source)),
            },
            Ecosystem::Npm => Wiring {
                key: "npm",
                label: "npm",
                encoded_slash: true,
                discover: |is_self| npm::discover::discover(is_self).map(|f| (f.url, f.source)),
            },
            // There is no client setting to discover: the default is rubygems.org itself.
            Ecosystem::Rubygems => Wiring {
                key: "rubygems",
                label: "RubyGems",
                encoded_slash: false,
                discover: |_| {
                    Err("RubyGems has no auto discovery; name a gem server URL".to_owned())
                },
            },
            // There is no client setting to discover: the default is Packagist itself.
            Ecosystem::Packagist => Wiring {
                key: "packagist",
                label: "Packagist",
                encoded_slash: true,
                discover: |_| {
                    Err(
                        "Packagist has no auto discovery; name a Composer repository URL"
                            .to_owned(),
                    )
                },
            },
        }
    }

    /// Its config section, mount segment, and label in metrics and logs (`pypi`).
    pub(crate) fn key(self) -> &'static str {
        self.wiring().key
    }

    /// Whether its routes take a percent-encoded `/` inside a segment.
    pub(crate) fn takes_encoded_slash(self) -> bool {
        self.wiring().encoded_slash
    }

    /// The most bytes of request body its route `rest` takes for `method`; None for the routes
    /// (all but three) that take none: npm's security audit, Composer's advisories API and
    /// notify-batch. Decided before a byte of the body is read.
    pub(crate) fn body_limit(self, method: &http::Method, rest: &str) -> Option<usize> {
        if *method != http::Method::POST {
            return None;
        }
        let path = rest.split('?').next().unwrap_or(rest);
        match self {
            // The whole dependency tree of a lockfile.
            Ecosystem::Npm if path.starts_with("/-/npm/v1/security/") => Some(NPM_AUDIT_BODY),
            Ecosystem::Packagist => match packagist::path::classify(path).ok()? {
                packagist::path::Route::Endpoint {
                    endpoint: packagist::path::Endpoint::NotifyBatch,
                    ..
                } => Some(NOTIFY_BODY),
                packagist::path::Route::Endpoint { endpoint, .. } if endpoint.takes_posts() => {
                    Some(ADVISORIES_BODY)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Splits `/pypi/simple/x/` into `(Pypi, "/simple/x/")`; None outside every mount.
    pub(crate) fn mounted_at(path: &str) -> Option<(Ecosystem, &str)> {
        Ecosystem::ALL.into_iter().find_map(|ecosystem| {
            let rest = path.strip_prefix('/')?.strip_prefix(ecosystem.key())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((ecosystem, rest))
        })
    }

    /// The keys of its config section that every frontend shares.
    fn section(self, config: &Config) -> (bool, &str) {
        match self {
            Ecosystem::Pypi => (config.pypi.enabled, &config.pypi.upstream),
            Ecosystem::Npm => (config.npm.enabled, &config.npm.upstream),
            Ecosystem::Rubygems => (config.rubygems.enabled, &config.rubygems.upstream),
            Ecosystem::Packagist => (config.packagist.enabled, &config.packagist.upstream),
        }
    }
}

/// A frontend of any ecosystem.
pub(crate) enum Frontend {
    Pypi(pypi::Frontend),
    Npm(npm::Frontend),
    Rubygems(rubygems::Frontend),
    Packagist(packagist::Frontend),
}

/// The error a frontend answered with, classified, with its whole chain of causes.
pub(crate) type Failure = Box<dyn Classify>;

impl Frontend {
    /// Answers one request below the frontend's mount (`rest` is the path after it).
    pub(crate) async fn handle(
        &self,
        parts: &Parts,
        body: Bytes,
        rest: &str,
    ) -> Result<Response<Body>, Failure> {
        match self {
            Frontend::Pypi(frontend) => frontend.handle(parts, rest).await.map_err(boxed),
            Frontend::Npm(frontend) => frontend.handle(parts, body, rest).await.map_err(boxed),
            Frontend::Rubygems(frontend) => frontend.handle(parts, rest).await.map_err(boxed),
            Frontend::Packagist(frontend) => {
                frontend.handle(parts, body, rest).await.map_err(boxed)
            }
        }
    }

    /// Mounts `ecosystem`'s frontend from its config section. A disabled frontend is off; one
    /// whose upstream is a URL is built now (a URL that cannot be used stops the start); one set
    /// to `auto` is built in the background, once discovery (which runs the local client, about
    /// a second) has found its upstream, so that pmcache listens at once.
    pub(crate) fn mount(
        ecosystem: Ecosystem,
        config: &Config,
        proxy: &Proxy,
        local: SocketAddr,
    ) -> anyhow::Result<Mount> {
        let Wiring {
            key,
            label,
            discover,
            ..
        } = ecosystem.wiring();
        let (enabled, setting) = ecosystem.section(config);
        if !enabled {
            return Ok(Mount::ready(
                ecosystem,
                Err(format!(
                    "the {label} frontend is disabled ({key}.enabled = false)"
                )),
            ));
        }
        let public_url = config.public_url.clone();
        let is_own = move |url: &Url| is_self(url, local, public_url.as_ref());
        if setting != AUTO {
            let upstream = configured_upstream(ecosystem, setting, &is_own)?;
            let frontend = Frontend::build(ecosystem, config, proxy, upstream);
            return Ok(Mount::ready(ecosystem, Ok(frontend)));
        }
        let (sender, mount) = Mount::pending(ecosystem);
        let (config, proxy) = (config.clone(), proxy.clone());
        tokio::spawn(async move {
            let built = discovered_upstream(ecosystem, move || discover(&is_own))
                .await
                .map(|upstream| Frontend::build(ecosystem, &config, &proxy, upstream));
            sender.send_replace(Some(built.map(Arc::new)));
        });
        Ok(mount)
    }

    /// Builds `ecosystem`'s frontend over `upstream`.
    fn build(ecosystem: Ecosystem, config: &Config, proxy: &Proxy, upstream: Url) -> Frontend {
        let Wiring { key, label, .. } = ecosystem.wiring();
        tracing::info!(%upstream, "{label} frontend on /{key}/");
        // A configured upstream may be on a private address; hosts its documents name may not.
        proxy.trust_upstream(&upstream);
        let proxy = proxy.clone();
        let public_url = config.public_url.clone();
        match ecosystem {
            Ecosystem::Pypi => Frontend::Pypi(pypi::Frontend::new(proxy, upstream, &config.pypi)),
            Ecosystem::Npm => {
                Frontend::Npm(npm::Frontend::new(proxy, upstream, &config.npm, public_url))
            }
            Ecosystem::Rubygems => {
                Frontend::Rubygems(rubygems::Frontend::new(proxy, upstream, &config.rubygems))
            }
            Ecosystem::Packagist => Frontend::Packagist(packagist::Frontend::new(
                proxy,
                upstream,
                &config.packagist,
                public_url,
            )),
        }
    }
}

/// How long a request waits for a frontend whose upstream is still being discovered before it
/// gets 503: discovery takes about a second, and a client retries a 503.
const DISCOVERY_WAIT: Duration = Duration::from_secs(10);
/// How long discovery may run the local client (pip, npm) before the frontend is left off: a
/// client that hangs must not leave its frontend answering "still being discovered" forever.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// A frontend as requests reach it: built, off (with the reason requests get), or not yet
/// known while `auto` discovery runs.
#[derive(Clone)]
pub(crate) struct Mount {
    ecosystem: Ecosystem,
    state: watch::Receiver<Option<Result<Arc<Frontend>, String>>>,
}

impl Mount {
    fn ready(ecosystem: Ecosystem, frontend: Result<Frontend, String>) -> Mount {
        Mount::pending_with(ecosystem, Some(frontend.map(Arc::new))).1
    }

    fn pending(ecosystem: Ecosystem) -> (MountSender, Mount) {
        Mount::pending_with(ecosystem, None)
    }

    fn pending_with(
        ecosystem: Ecosystem,
        state: Option<Result<Arc<Frontend>, String>>,
    ) -> (MountSender, Mount) {
        let (sender, state) = watch::channel(state);
        (sender, Mount { ecosystem, state })
    }

    /// The frontend, once known; else the one-line reason its requests get 503.
    pub(crate) async fn frontend(&self) -> Result<Arc<Frontend>, String> {
        let mut state = self.state.clone();
        let known = tokio::time::timeout(DISCOVERY_WAIT, state.wait_for(Option::is_some)).await;
        match known {
            Ok(Ok(known)) => known.clone().unwrap_or_else(|| Err(self.not_yet())),
            // The discovery task ended without an answer (it panicked): say so.
            Ok(Err(_)) => Err(format!(
                "the {} frontend's upstream discovery failed; see pmcache's log",
                self.ecosystem.wiring().label
            )),
            Err(_) => Err(self.not_yet()),
        }
    }

    fn not_yet(&self) -> String {
        let Wiring { key, label, .. } = self.ecosystem.wiring();
        format!(
            "the {label} upstream is still being discovered ({key}.upstream = \"auto\"); retry in a moment"
        )
    }
}

/// Where the discovery task puts a frontend's outcome.
type MountSender = watch::Sender<Option<Result<Arc<Frontend>, String>>>;

fn boxed(error: impl Classify) -> Failure {
    Box::new(error)
}

/// Checks the `upstream` of every enabled frontend that names a URL: one that cannot be used
/// stops the start (only `auto` may leave a frontend off). Whether it points back at pmcache
/// itself is known only once pmcache listens ([`Frontend::build`]).
pub(crate) fn check_upstreams(config: &Config) -> anyhow::Result<()> {
    for ecosystem in Ecosystem::ALL {
        match ecosystem.section(config) {
            (true, setting) if setting != AUTO => {
                configured_upstream(ecosystem, setting, &|_| false)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the `upstream` of every `[[routes]]` entry set to a URL as [`check_upstreams`] checks
/// frontends' (the policy has refused the rest already).
pub(crate) fn check_route_upstreams(config: &Config) -> anyhow::Result<()> {
    for (index, route) in config.routes.iter().enumerate() {
        if route.upstream != ROUTE_NONE {
            usable_upstream(&route.upstream).map_err(|why| {
                anyhow::anyhow!(
                    "routes[{index}].upstream = {:?} cannot be used: {why}",
                    route.upstream
                )
            })?;
        }
    }
    Ok(())
}

/// Refuses a `[[routes]]` upstream at pmcache's own address (known once it listens on
/// `local`): every request for its names would loop back.
pub(crate) fn check_routes_are_not_self(config: &Config, local: SocketAddr) -> anyhow::Result<()> {
    for (index, route) in config.routes.iter().enumerate() {
        let url = match route.upstream.as_str() {
            ROUTE_NONE => continue,
            text => usable_upstream(text).ok(),
        };
        if url.is_some_and(|url| is_self(&url, local, config.public_url.as_ref())) {
            anyhow::bail!(
                "routes[{index}].upstream = {:?} cannot be used: it is pmcache's own address: every request would loop back",
                route.upstream
            );
        }
    }
    Ok(())
}

/// `upstream = "auto"` resolved through the ecosystem's discovery; else the reason the
/// frontend is off, logged once, naming the key and variable to set.
async fn discovered_upstream(
    ecosystem: Ecosystem,
    discover: impl FnOnce() -> Result<(Url, String), String> + Send + 'static,
) -> Result<Url, String> {
    let Wiring { key, label, .. } = ecosystem.wiring();
    let variable = format!("PMCACHE_{}_UPSTREAM", key.to_ascii_uppercase());
    let blocking = tokio::task::spawn_blocking(discover);
    let discovered = match tokio::time::timeout(DISCOVERY_DEADLINE, blocking).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => Err(format!("discovery task failed: {error}")),
        Err(_) => Err(format!(
            "the local client did not answer within {}s",
            DISCOVERY_DEADLINE.as_secs()
        )),
    };
    match discovered {
        Ok((url, source)) => {
            tracing::info!(upstream = %url, %source, "{label} upstream discovered");
            Ok(url)
        }
        Err(reason) => {
            let message = format!(
                "the {label} frontend is off: no upstream found ({reason}); set {key}.upstream in the config or {variable}"
            );
            tracing::error!("{message}");
            Err(message)
        }
    }
}

/// An `upstream` set to a URL, as pmcache fetches below it; else one line naming the setting,
/// its value and why it cannot be used. `is_own` tells pmcache's own address.
fn configured_upstream(
    ecosystem: Ecosystem,
    setting: &str,
    is_own: &dyn Fn(&Url) -> bool,
) -> anyhow::Result<Url> {
    let key = ecosystem.key();
    usable_upstream(setting)
        .and_then(|url| match is_own(&url) {
            true => Err("it is pmcache's own address: every request would loop back".to_owned()),
            false => Ok(url),
        })
        .map_err(|why| anyhow::anyhow!("{key}.upstream = {setting:?} cannot be used: {why}"))
}

/// `text` as an upstream base URL; else why pmcache could not fetch from it.
fn usable_upstream(text: &str) -> Result<Url, String> {
    let url = pmcache_policy::upstream_url(text, AUTO)?;
    if url.port() == Some(0) {
        return Err("port 0 cannot be connected to".to_owned());
    }
    let unreachable = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
        Some(url::Host::Ipv6(ip)) => ip.is_unspecified() || ip.is_multicast(),
        Some(url::Host::Domain(_)) => false,
        None => true,
    };
    if unreachable {
        return Err("its host is no address a connection can be made to".to_owned());
    }
    pmcache_proxy::base_url(url.as_str()).ok_or_else(|| "it is not an http(s) URL".to_owned())
}

/// True when `url` points back at this pmcache (its listen address or public URL).
fn is_self(url: &Url, local: SocketAddr, public_url: Option<&Url>) -> bool {
    let same_port = url.port_or_known_default() == Some(local.port());
    let local_host = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || std::net::IpAddr::V4(ip) == local.ip(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || std::net::IpAddr::V6(ip) == local.ip(),
        None => false,
    };
    let public = public_url.is_some_and(|public| {
        public.host_str() == url.host_str()
            && public.port_or_known_default() == url.port_or_known_default()
    });
    (same_port && local_host) || public
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_to_pmcache_itself_is_refused() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let mut config = Config::default();
        config.routes.push(pmcache_policy::RouteConfig {
            ecosystem: "npm".to_owned(),
            names: vec!["@acme/*".to_owned()],
            upstream: "http://127.0.0.1:7878/npm/".to_owned(),
        });
        let error = check_routes_are_not_self(&config, local).unwrap_err();
        assert_eq!(
            error.to_string(),
            "routes[0].upstream = \"http://127.0.0.1:7878/npm/\" cannot be used: it is pmcache's own address: every request would loop back"
        );
        config.routes[0].upstream = "http://127.0.0.2:7879/npm/".to_owned();
        assert!(check_routes_are_not_self(&config, local).is_ok());
        config.routes[0].upstream = "none".to_owned();
        assert!(check_routes_are_not_self(&config, local).is_ok());
    }

    #[test]
    fn mounts_match_whole_segments() {
        assert_eq!(
            Ecosystem::mounted_at("/pypi/simple/"),
            Some((Ecosystem::Pypi, "/simple/"))
        );
        assert_eq!(Ecosystem::mounted_at("/pypi"), Some((Ecosystem::Pypi, "")));
        assert_eq!(Ecosystem::mounted_at("/pypifoo"), None);
        assert_eq!(
            Ecosystem::mounted_at("/npm/@scope%2fname"),
            Some((Ecosystem::Npm, "/@scope%2fname"))
        );
        assert_eq!(Ecosystem::mounted_at("/healthz"), None);
    }

    #[test]
    fn only_npm_and_packagist_take_encoded_slashes() {
        let taking: Vec<&str> = Ecosystem::ALL
            .into_iter()
            .filter(|ecosystem| ecosystem.takes_encoded_slash())
            .map(Ecosystem::key)
            .collect();
        assert_eq!(taking, ["npm", "packagist"]);
    }

    #[test]
    fn every_ecosystem_has_its_config_section() {
        let mut config = Config::default();
        config.rubygems.enabled = false;
        config.packagist.upstream = "http://127.0.0.1:1/repo/".to_owned();
        assert_eq!(
            Ecosystem::Rubygems.section(&config),
            (false, "https://rubygems.org/")
        );
        assert_eq!(
            Ecosystem::Packagist.section(&config),
            (true, "http://127.0.0.1:1/repo/")
        );
        assert_eq!(Ecosystem::Pypi.section(&config), (true, "auto"));
        assert_eq!(Ecosystem::Npm.section(&config), (true, "auto"));
    }

    #[test]
    fn usable_upstreams_get_their_trailing_slash() {
        for (text, url) in [
            (
                "https://index.example/simple",
                "https://index.example/simple/",
            ),
            (
                "http://127.0.0.1:3141/mirror/pypi/",
                "http://127.0.0.1:3141/mirror/pypi/",
            ),
            (" http://[::1]:8080/npm ", "http://[::1]:8080/npm/"),
            ("https://rubygems.org/", "https://rubygems.org/"),
        ] {
            assert_eq!(usable_upstream(text).unwrap().as_str(), url, "{text}");
        }
    }

    #[test]
    fn unusable_upstreams_say_why() {
        for (text, why) in [
            ("index.example/simple/", "is not a URL"),
            ("htp//index.example", "is not a URL"),
            ("Auto", "is not a URL"),
            ("", "is not a URL"),
            ("ftp://index.example/simple/", "scheme is ftp"),
            ("file:///srv/simple/", "scheme is file"),
            ("http://user:secret@index.example/", "user info"),
            ("https://token@index.example/", "user info"),
            ("https://index.example/simple/?token=x", "query or fragment"),
            ("https://index.example/simple/#x", "query or fragment"),
            ("http://index.example:0/", "port 0"),
            ("http://0.0.0.0:8080/", "no address"),
            ("http://[::]:8080/", "no address"),
            ("http://224.0.0.1/", "no address"),
            ("http://255.255.255.255/", "no address"),
            ("http://[ff02::1]/", "no address"),
        ] {
            let error = usable_upstream(text).unwrap_err();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn only_enabled_frontends_with_a_url_are_checked_and_a_bad_one_is_named() {
        let mut config = Config::default();
        assert!(check_upstreams(&config).is_ok(), "auto and the defaults");
        config.rubygems.upstream = "gems.internal".to_owned();
        let error = check_upstreams(&config).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "rubygems.upstream = \"gems.internal\" cannot be used: it is not a URL"
            ),
            "{error}"
        );
        assert_eq!(error.lines().count(), 1, "{error}");
        config.rubygems.enabled = false;
        assert!(check_upstreams(&config).is_ok(), "a disabled frontend");
    }

    #[test]
    fn an_upstream_that_is_pmcache_itself_is_refused() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let is_own = |url: &Url| is_self(url, local, None);
        let error = configured_upstream(Ecosystem::Npm, "http://localhost:7878/npm/", &is_own)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("npm.upstream = "), "{error}");
        assert!(error.contains("loop back"), "{error}");
        assert!(configured_upstream(Ecosystem::Npm, "http://127.0.0.1:4873/", &is_own).is_ok());
    }

    #[test]
    fn recognises_its_own_address() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let own = Url::parse("http://localhost:7878/pypi/simple/").unwrap();
        let other = Url::parse("http://127.0.0.1:7879/simple/").unwrap();
        assert!(is_self(&own, local, None));
        assert!(!is_self(&other, local, None));
        let public = Url::parse("https://cache.ci.example/").unwrap();
        let via_public = Url::parse("https://cache.ci.example/pypi/simple/").unwrap();
        assert!(is_self(&via_public, local, Some(&public)));
    }
}
