//! Private routes (`[[routes]]`) applied in the core: which upstream a package's documents and
//! artifacts come from, the keys that keep a route's copies apart from the public upstream's,
//! and the 404 pmcache answers itself for a route to `none`.

use pmcache_policy::{Ecosystem, Upstream as RouteUpstream};
use pmcache_store::Digest;
use url::Url;

use crate::Proxy;
use crate::artifact::ArtifactSource;
use crate::error::{Error, Result};
use crate::origin::RedirectPolicy;

/// A host, lower case, and a port: where a route's upstream is.
pub(crate) type HostPort = (String, Option<u16>);

/// `url`'s host, in the spelling route hosts are compared in, and port.
fn host_port(url: &Url) -> Option<HostPort> {
    let host = crate::egress::route_host(url.host_str()?);
    Some((host, url.port_or_known_default()))
}

/// The `rule` label a route to `none` is counted under in `pmcache_policy_refusals_total`.
const ROUTE_RULE: &str = "routes";

/// Where one package's documents come from, and what its keys start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// The base URL (ending in `/`) its documents are fetched below: the ecosystem's upstream,
    /// or the route's.
    pub upstream: Url,
    /// What its document keys and artifact ids start with: empty for the ecosystem's upstream;
    /// for a route, a tag derived from the route's upstream URL, so that a copy fetched from
    /// one upstream is never served as another's when the routes change.
    pub prefix: String,
}

impl Routing {
    /// The ecosystem's own upstream, unprefixed keys.
    pub fn public(upstream: &Url) -> Routing {
        Routing {
            upstream: upstream.clone(),
            prefix: String::new(),
        }
    }

    /// A route's upstream, with keys of its own.
    pub fn private(upstream: &Url) -> Routing {
        Routing {
            upstream: upstream.clone(),
            prefix: prefix_of(upstream),
        }
    }

    /// Whether a route sends the package elsewhere than the ecosystem's upstream.
    pub fn is_routed(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// `key` (a document key or an artifact id) in this routing's own space.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// `routed/<16 hex digits of the upstream URL's SHA-256>/`: the tag of a route's copies. By
/// URL rather than by the route's place in `[[routes]]`, so that reordering routes keeps the
/// copies and pointing a route elsewhere does not serve the old upstream's.
fn prefix_of(upstream: &Url) -> String {
    let digest = Digest::of(upstream.as_str().as_bytes()).to_string();
    format!("{ROUTED}{}/", &digest[..16])
}

/// What every routed key starts with.
const ROUTED: &str = "routed/";

impl Proxy {
    /// Where the documents of `ecosystem`'s package `name` come from: `public` (the ecosystem's
    /// upstream) unless a route takes the name, in any spelling the ecosystem treats as the
    /// same; a route to `none` is a 404 pmcache answers itself ([`Error::Private`]).
    pub fn routing(&self, ecosystem: Ecosystem, name: &str, public: &Url) -> Result<Routing> {
        let policy = self.policy();
        let Some(route) = policy.route(ecosystem, name) else {
            return Ok(Routing::public(public));
        };
        match route.upstream() {
            RouteUpstream::Url(url) => Ok(Routing::private(url)),
            RouteUpstream::None => Err(self.private_refused(ecosystem, name, route.index())),
        }
    }

    /// Lets a route's upstream be on a private address, like a configured upstream's, but only
    /// for the packages routed there when no configured upstream or listed host is there too:
    /// a public document naming a URL on that host does not make pmcache fetch it.
    pub fn trust_route(&self, upstream: &Url) {
        self.inner.upstream.trust_route(upstream);
    }

    /// Refuses an artifact of `source` on a host only a route's upstream is trusted at, unless
    /// its package is routed to that host; gives the check every redirect of its fetch must
    /// pass too.
    pub(crate) fn route_host_guard(
        &self,
        ecosystem: &str,
        source: &ArtifactSource,
    ) -> Result<RedirectPolicy> {
        let route_hosts = self.inner.upstream.route_only_hosts();
        let routed_to = self.route_host_of(ecosystem, source);
        let allowed = move |url: &Url| {
            host_port(url).is_none_or(|place| {
                !route_hosts.contains(&place) || routed_to.as_ref() == Some(&place)
            })
        };
        if !allowed(source.url()) {
            return Err(Error::RouteHost {
                url: source.url().to_string(),
            });
        }
        Ok(std::sync::Arc::new(allowed))
    }

    /// Refuses a document fetch or a relay to `url` on a host only a route's upstream is
    /// trusted at, unless it is made for a routed package (`routed`): a public document's links
    /// (a Composer `metadata-url`, say) do not send pmcache into a private registry.
    pub(crate) fn check_route_host(&self, url: &Url, routed: bool) -> Result<()> {
        let on_route_host = host_port(url)
            .is_some_and(|place| self.inner.upstream.route_only_hosts().contains(&place));
        match on_route_host && !routed {
            true => Err(Error::RouteHost {
                url: url.to_string(),
            }),
            false => Ok(()),
        }
    }

    /// Whether a document `key` is a routed package's (see [`Routing::key`]).
    pub(crate) fn is_routed_key(key: &str) -> bool {
        key.starts_with(ROUTED)
    }

    /// Where the route that takes `source`'s package has its upstream, if one does.
    fn route_host_of(&self, ecosystem: &str, source: &ArtifactSource) -> Option<HostPort> {
        let ecosystem = ecosystem.parse::<Ecosystem>().ok()?;
        let package = &source.release()?.package;
        let policy = self.policy();
        match policy.route(ecosystem, package)?.upstream() {
            RouteUpstream::Url(url) => host_port(url),
            RouteUpstream::None => None,
        }
    }

    /// Whether a route takes `ecosystem`'s package `name`: it must not reach the public
    /// upstream, not even inside a batch request that names many packages.
    pub fn is_routed(&self, ecosystem: Ecosystem, name: &str) -> bool {
        self.policy().route(ecosystem, name).is_some()
    }

    /// `documents` (keys of `package`'s documents in `ecosystem`) as stored for the route that
    /// takes the package now, if it has an upstream: what a purge removes besides them.
    pub(crate) fn routed_keys(
        &self,
        ecosystem: &str,
        package: &str,
        documents: &[String],
    ) -> Vec<String> {
        let Ok(ecosystem) = ecosystem.parse::<Ecosystem>() else {
            return Vec::new();
        };
        let policy = self.policy();
        match policy
            .route(ecosystem, package)
            .map(|route| route.upstream())
        {
            Some(RouteUpstream::Url(url)) => {
                let routing = Routing::private(url);
                documents.iter().map(|key| routing.key(key)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Refuses an artifact of a package routed to `none`, stored copy or not.
    pub(crate) fn check_route(&self, ecosystem: Ecosystem, name: &str) -> Result<()> {
        let policy = self.policy();
        match policy.route(ecosystem, name) {
            Some(route) if *route.upstream() == RouteUpstream::None => {
                Err(self.private_refused(ecosystem, name, route.index()))
            }
            _ => Ok(()),
        }
    }

    fn private_refused(&self, ecosystem: Ecosystem, name: &str, index: usize) -> Error {
        let subject = format!("{}:{}", ecosystem.as_str(), ecosystem.normalize_name(name));
        tracing::info!(%subject, route = index, "private name with no upstream");
        self.inner
            .metrics
            .policy_refused(ecosystem.as_str(), ROUTE_RULE);
        Error::Private { subject, index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_keys_name_its_upstream() {
        let a = Url::parse("http://127.0.0.2:1/npm/").unwrap();
        let b = Url::parse("http://127.0.0.2:2/npm/").unwrap();
        let public = Routing::public(&a);
        assert!(!public.is_routed());
        assert_eq!(public.key("packument/x"), "packument/x");
        let private = Routing::private(&a);
        assert!(private.is_routed());
        let key = private.key("packument/x");
        assert!(
            key.starts_with("routed/") && key.ends_with("/packument/x"),
            "{key}"
        );
        assert_eq!(key.len(), "routed/".len() + 16 + "/packument/x".len());
        assert_ne!(key, Routing::private(&b).key("packument/x"));
    }

    #[test]
    fn a_private_name_is_a_404_naming_its_route() {
        let error = Error::Private {
            subject: "npm:@acme/tool".to_owned(),
            index: 0,
        };
        assert_eq!(
            error.to_string(),
            "pmcache: npm:@acme/tool is private (routes[0]) and has no upstream"
        );
        assert_eq!(error.status(), http::StatusCode::NOT_FOUND);
        assert!(!error.is_upstream_fault());
    }

    fn release_of(package: &str, url: &str) -> crate::ArtifactSource {
        let release = crate::Release {
            package: package.to_owned(),
            version: Some("1.0.0".to_owned()),
            published: None,
        };
        crate::ArtifactSource::advertised(Url::parse(url).unwrap(), None, Some(release))
    }

    #[test]
    fn a_route_host_serves_only_the_packages_routed_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = pmcache_store::Store::open(dir.path()).unwrap();
        let proxy = Proxy::new(store, &crate::Config::default()).unwrap();
        let private = Url::parse("http://127.0.0.2:7001/npm/").unwrap();
        let routes = [pmcache_policy::RouteConfig {
            ecosystem: "npm".to_owned(),
            names: vec!["@acme/*".to_owned()],
            upstream: private.to_string(),
        }];
        let config = pmcache_policy::Config::default();
        proxy.set_policy(pmcache_policy::Policy::new(&config, &[], &routes).unwrap());
        proxy.trust_route(&private);

        // A public packument naming a tarball on the private registry: refused, by URL and by
        // redirect.
        let public = release_of("left-pad", "http://127.0.0.2:7001/npm/secret.tgz");
        let Err(error) = proxy.route_host_guard("npm", &public) else {
            panic!("a public package's URL on the route's host is fetched");
        };
        assert!(matches!(error, Error::RouteHost { .. }), "{error}");
        assert_eq!(error.status(), http::StatusCode::FORBIDDEN);
        let elsewhere = release_of("left-pad", "https://cdn.example/left-pad.tgz");
        let redirects = proxy.route_host_guard("npm", &elsewhere).unwrap();
        assert!(!redirects(&Url::parse("http://127.0.0.2:7001/x").unwrap()));
        assert!(redirects(&Url::parse("http://127.0.0.2:7002/x").unwrap()));

        // The routed package's own tarball is fetched from there.
        let routed = release_of("@acme/tool", "http://127.0.0.2:7001/npm/tool.tgz");
        let redirects = proxy.route_host_guard("npm", &routed).unwrap();
        assert!(redirects(
            &Url::parse("http://127.0.0.2:7001/blob").unwrap()
        ));

        // Documents and relays: only those made for a routed package go there.
        let link = Url::parse("http://127.0.0.2:7001/npm/p2/left-pad.json").unwrap();
        assert!(proxy.check_route_host(&link, false).is_err());
        assert!(proxy.check_route_host(&link, true).is_ok());
        let key = Routing::private(&private).key("packument/@acme/tool");
        assert!(Proxy::is_routed_key(&key) && !Proxy::is_routed_key("packument/left-pad"));

        // Other spellings of the host are the same host.
        let dotted = release_of("left-pad", "http://127.0.0.2.:7001/npm/secret.tgz");
        assert!(proxy.route_host_guard("npm", &dotted).is_err());

        // A host that is also a configured upstream's is not the route's alone.
        proxy.trust_upstream(&private);
        assert!(proxy.route_host_guard("npm", &public).is_ok());

        // An IPv6 route upstream, bracketed in URLs.
        let v6 = Url::parse("http://[fd00::5]:7003/npm/").unwrap();
        let routes = [pmcache_policy::RouteConfig {
            ecosystem: "npm".to_owned(),
            names: vec!["@acme/*".to_owned()],
            upstream: v6.to_string(),
        }];
        proxy.set_policy(pmcache_policy::Policy::new(&config, &[], &routes).unwrap());
        proxy.trust_route(&v6);
        let public = release_of("left-pad", "http://[FD00::5]:7003/npm/secret.tgz");
        assert!(proxy.route_host_guard("npm", &public).is_err());
        let routed = release_of("@acme/tool", "http://[fd00::5]:7003/npm/tool.tgz");
        assert!(proxy.route_host_guard("npm", &routed).is_ok());
    }
}
