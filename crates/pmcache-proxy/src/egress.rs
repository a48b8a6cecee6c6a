//! Where pmcache may connect: the connector under the upstream client resolves each host itself
//! and refuses loopback, private and link-local addresses unless the host is a configured
//! upstream's, so that hostile metadata (a tarball or dist URL, a redirect) cannot turn pmcache
//! into a way into the network it runs in.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

/// Whether `host` on `port` is in `list` (a port of None there: any).
fn listed(list: &[(String, Option<u16>)], host: &str, port: u16) -> bool {
    list.iter().any(|(trusted, trusted_port)| {
        trusted.eq_ignore_ascii_case(host) && trusted_port.is_none_or(|p| p == port)
    })
}

/// Which addresses connections may go to.
pub(crate) struct AddressPolicy {
    /// Connect anywhere (`upstream.allow_private_addresses`).
    allow_private: bool,
    /// Configured upstreams and operator-listed hosts, lower case, with their port (`None`:
    /// any): they may be private (a registry on the LAN or on this machine).
    trusted: RwLock<Vec<(String, Option<u16>)>>,
    /// Private routes' upstreams, lower case, with their port: they may be private too, but
    /// where nothing else is trusted only packages routed there are fetched from them.
    routes: RwLock<Vec<(String, Option<u16>)>>,
    /// Bounds name resolution like a connect.
    resolve_timeout: Duration,
}

impl AddressPolicy {
    pub(crate) fn new(allow_private: bool, resolve_timeout: Duration) -> AddressPolicy {
        AddressPolicy {
            allow_private,
            trusted: RwLock::default(),
            routes: RwLock::default(),
            resolve_timeout,
        }
    }

    /// Lets `host` on `port` (any port for `None`) be at a private address: a configured
    /// upstream, or a host the operator listed. Only that port: another service on the same
    /// machine is no more trusted than any other.
    pub(crate) fn trust(&self, host: &str, port: Option<u16>) {
        let entry = (bare_host(host).to_ascii_lowercase(), port);
        let mut trusted = self.trusted.write().unwrap_or_else(|p| p.into_inner());
        if !trusted.contains(&entry) {
            trusted.push(entry);
        }
    }

    /// Lets a private route's upstream, `host` on `port`, be at a private address.
    pub(crate) fn trust_route(&self, host: &str, port: Option<u16>) {
        let entry = (route_host(host), port);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if !routes.contains(&entry) {
            routes.push(entry);
        }
    }

    /// The routes' hosts (with their ports) that are no configured upstream's or listed
    /// host's: only packages routed there may be fetched from them.
    pub(crate) fn route_only(&self) -> Vec<(String, Option<u16>)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let trusted = self.trusted.read().unwrap_or_else(|p| p.into_inner());
        routes
            .iter()
            .filter(|(host, port)| !listed(&trusted, host, port.unwrap_or(0)))
            .cloned()
            .collect()
    }

    fn permits(&self, host: &str, port: u16, ip: IpAddr) -> bool {
        self.allow_private
            || is_public(ip)
            || listed(
                &self.trusted.read().unwrap_or_else(|p| p.into_inner()),
                host,
                port,
            )
            || listed(
                &self.routes.read().unwrap_or_else(|p| p.into_inner()),
                &route_host(host),
                port,
            )
    }

    /// The addresses `uri` may be reached at, in resolution order; an error saying why when
    /// there are none.
    async fn vet(&self, uri: &Uri) -> io::Result<Vec<SocketAddr>> {
        let host = bare_host(uri.host().unwrap_or_default());
        if host.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no host in URL",
            ));
        }
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let resolved = self.resolve(host, port).await?;
        let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
            .into_iter()
            .partition(|address| self.permits(host, port, address.ip()));
        match (permitted.is_empty(), refused.first()) {
            (false, _) => Ok(permitted),
            (true, Some(refused)) => {
                let place = match host.parse::<IpAddr>() {
                    Ok(_) => host.to_owned(),
                    Err(_) => format!("{host} (at {})", refused.ip()),
                };
                Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    crate::error::Refusal { place },
                ))
            }
            (true, None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            )),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = tokio::net::lookup_host((host, port));
        match tokio::time::timeout(self.resolve_timeout, lookup).await {
            Ok(Ok(addresses)) => Ok(addresses.collect()),
            Ok(Err(error)) => Err(io::Error::new(
                error.kind(),
                format!("cannot resolve {host}: {error}"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "resolving {host} took longer than {:?}",
                    self.resolve_timeout
                ),
            )),
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, as operators list hosts: host and port.
pub(crate) fn host_and_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// `[::1]` → `::1`: URIs bracket IPv6 literals.
fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `host` in the one spelling route hosts are compared in: lower case, without IPv6 brackets
/// or a DNS name's trailing dot (`Example.COM.` and `example.com` are one host).
pub(crate) fn route_host(host: &str) -> String {
    bare_host(host).trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `ip` is an address on the public internet rather than on this machine or its
/// networks. Documentation ranges (TEST-NET) count as public: nothing internal lives there,
/// and some sandboxes route registries through them.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // RFC 6598 carrier-grade NAT
    let this_network = a == 0;
    let benchmarking = a == 198 && (b == 18 || b == 19);
    let reserved = a >= 240;
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || shared
        || this_network
        || benchmarking
        || reserved)
}

/// Global unicast (`2000::/3`) only, and where an IPv4 address is embedded (IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), that address must be public too: a
/// NAT64 gateway would carry `64:ff9b::a9fe:a9fe` to the metadata service at 169.254.169.254.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let octets = ip.octets();
    let embedded =
        |at: usize| Ipv4Addr::new(octets[at], octets[at + 1], octets[at + 2], octets[at + 3]);
    if segments[..6] == [0; 6] {
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded(12));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(12));
    }
    if segments[0] == 0x2002 {
        return is_public_v4(embedded(2));
    }
    segments[0] & 0xe000 == 0x2000
}

/// The TCP connector of the upstream client, behind the [`AddressPolicy`]: it resolves once,
/// vets the addresses, and has hyper's connector connect to those only (its happy eyeballs and
/// connect timeout included), so a name cannot resolve to a public address for the check and a
/// private one for the connection. TLS, above it, still verifies the host name.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    connect_timeout: Duration,
    policy: Arc<AddressPolicy>,
}

impl GuardedConnector {
    pub(crate) fn new(connect_timeout: Duration, policy: Arc<AddressPolicy>) -> GuardedConnector {
        GuardedConnector {
            connect_timeout,
            policy,
        }
    }

    /// hyper's connector for one connection, resolving to `addresses` whatever the name.
    fn connector(&self, addresses: Vec<SocketAddr>) -> HttpConnector<Vetted> {
        let mut http = HttpConnector::new_with_resolver(Vetted(addresses));
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for GuardedConnector {
    type Response = <HttpConnector<Vetted> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let addresses = connector.policy.vet(&uri).await?;
            let mut http = connector.connector(addresses);
            http.call(uri).await.map_err(Into::into)
        })
    }
}

/// A resolver that answers every name with addresses already vetted. (hyper's connector does not
/// ask a resolver for IP literals; those were vetted as they are.)
#[derive(Clone)]
pub(crate) struct Vetted(Vec<SocketAddr>);

impl Service<Name> for Vetted {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a00:1::",
            "fec0::1",
        ] {
            assert!(!is_public(ip(internal)), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "203.0.113.80",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_trusted_or_allowed() {
        let uri: Uri = "http://127.0.0.2:9/x".parse().unwrap();
        let policy = AddressPolicy::new(false, Duration::from_secs(1));
        let error = policy.vet(&uri).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            error.to_string().contains("allow_private_addresses"),
            "{error}"
        );

        policy.trust("127.0.0.2", Some(10));
        assert!(
            policy.vet(&uri).await.is_err(),
            "another port of a trusted host"
        );
        policy.trust("127.0.0.2", Some(9));
        assert_eq!(policy.vet(&uri).await.unwrap().len(), 1);

        let open = AddressPolicy::new(true, Duration::from_secs(1));
        assert_eq!(open.vet(&uri).await.unwrap().len(), 1);
    }

    #[test]
    fn listed_hosts_read_with_or_without_a_port() {
        assert_eq!(
            host_and_port("Mirror.LAN"),
            Some(("mirror.lan".to_owned(), None))
        );
        assert_eq!(
            host_and_port("127.0.0.1:8080"),
            Some(("127.0.0.1".to_owned(), Some(8080)))
        );
        assert_eq!(
            host_and_port("[::1]:81"),
            Some(("::1".to_owned(), Some(81)))
        );
        assert_eq!(host_and_port("[::1]"), Some(("::1".to_owned(), None)));
        assert_eq!(host_and_port("host:port"), None);
        assert_eq!(host_and_port(""), None);
    }
}
