//! Who may say where a request came from. `Forwarded` (RFC 7239) and the `X-Forwarded-*` fields
//! describe the client that a proxy in front of pmcache served, and the frontends build the
//! absolute URLs they write (npm tarballs, Composer dists) from them. They are believed only
//! from the peers in `server.trusted_proxies`: from any other peer they are removed before
//! anything reads them, so a client cannot make pmcache advertise another origin, to itself or,
//! through a stored rendering, to the others.

use std::net::IpAddr;

use http::HeaderValue;
use http::header::{self, HeaderMap, HeaderName};

use crate::config::ServerConfig;
use crate::network::Network;

/// The prefix of the de facto forwarding fields (`X-Forwarded-Proto`, `-Host`, `-For`, …).
const LEGACY_PREFIX: &str = "x-forwarded-";

/// The peers whose forwarding fields pmcache believes: `server.trusted_proxies`.
pub(crate) struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// The proxies of `settings`, whose networks were checked with the config.
    pub(crate) fn new(settings: &ServerConfig) -> anyhow::Result<TrustedProxies> {
        let networks = settings
            .trusted_proxies
            .iter()
            .map(|text| Network::parse(text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(TrustedProxies { networks })
    }

    /// Whether `peer`, the address a connection comes from, is a trusted proxy.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(peer))
    }
}

/// How a connection reached pmcache, which decides what its requests' forwarding fields are
/// worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    /// The peer is in `server.trusted_proxies`.
    pub from_proxy: bool,
    /// The connection is pmcache's own TLS.
    pub tls: bool,
}

impl Hop {
    /// Leaves in `headers` only what pmcache believes about where the request came from: the
    /// forwarding fields of a trusted proxy; none from anyone else. Over pmcache's own TLS the
    /// scheme is `https` (`X-Forwarded-Proto`, as a TLS-terminating proxy would say), unless a
    /// trusted proxy said which scheme its own clients used.
    pub(crate) fn settle(self, headers: &mut HeaderMap) {
        if !self.from_proxy {
            remove_forwarding(headers);
        }
        if self.tls {
            mark_secure(headers);
        }
    }
}

/// Removes `Forwarded` and every `X-Forwarded-*` field.
fn remove_forwarding(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| *name == header::FORWARDED || name.as_str().starts_with(LEGACY_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Tells the frontends that the client reached pmcache over HTTPS, so that the absolute URLs
/// they write say `https`. A trusted proxy's own field, when there is one, stands: it knows the
/// scheme its clients used.
fn mark_secure(headers: &mut HeaderMap) {
    if !headers.contains_key(header::FORWARDED) && !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        let settings = ServerConfig {
            trusted_proxies: networks.iter().map(|n| (*n).to_owned()).collect(),
            ..ServerConfig::default()
        };
        TrustedProxies::new(&settings).unwrap()
    }

    /// A request head as a client that claims another origin sends it.
    fn claiming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("pmcache:7878"));
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=192.0.2.1;host=evil.example;proto=https"),
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert("X-Forwarded-Port", HeaderValue::from_static("443"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn only_listed_networks_are_proxies() {
        let none = proxies(&[]);
        assert!(!none.trusts("127.0.0.1".parse().unwrap()));
        let listed = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        assert!(listed.trusts("10.1.2.3".parse().unwrap()));
        assert!(listed.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!listed.trusts("127.0.0.2".parse().unwrap()));
        assert!(!listed.trusts("fd00::1".parse().unwrap()));
    }

    #[test]
    fn forwarding_fields_from_anyone_else_are_removed() {
        let mut headers = claiming();
        Hop {
            from_proxy: false,
            tls: false,
        }
        .settle(&mut headers);
        assert_eq!(names(&headers), ["accept", "host"]);
    }

    #[test]
    fn a_trusted_proxy_keeps_its_fields() {
        let mut headers = claiming();
        let before = headers.clone();
        Hop {
            from_proxy: true,
            tls: false,
        }
        .settle(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn over_tls_the_scheme_is_https_unless_a_trusted_proxy_said_otherwise() {
        let mut direct = claiming();
        Hop {
            from_proxy: false,
            tls: true,
        }
        .settle(&mut direct);
        assert_eq!(direct["x-forwarded-proto"], "https");
        assert_eq!(names(&direct), ["accept", "host", "x-forwarded-proto"]);

        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        Hop {
            from_proxy: true,
            tls: true,
        }
        .settle(&mut proxied);
        assert_eq!(proxied["x-forwarded-proto"], "http");

        let mut plain = HeaderMap::new();
        Hop {
            from_proxy: true,
            tls: true,
        }
        .settle(&mut plain);
        assert_eq!(plain["x-forwarded-proto"], "https");
    }
}
