//! The origin clients reach pmcache at, for documents whose URLs must be absolute (npm tarballs,
//! Composer dists): `public_url` when configured, else the host and scheme a proxy in front
//! reports in `Forwarded` or `X-Forwarded-Host`/`-Proto`, else the request's own `Host`. The
//! binary removes those fields from every peer that is not a trusted proxy before a request
//! gets here (`server.trusted_proxies`).

use std::sync::Arc;

use http::header::{self, HeaderMap};
use url::Url;

/// Which redirect targets an upstream fetch may follow.
pub type RedirectPolicy = Arc<dyn Fn(&Url) -> bool + Send + Sync>;

/// Redirects only within the origin (scheme, host, port) of `url`.
pub fn same_origin(url: &Url) -> RedirectPolicy {
    let origin = url.origin();
    Arc::new(move |next: &Url| next.origin() == origin)
}

/// An upstream base URL as configured or discovered: http(s) only, with the trailing slash that
/// relative joins need (`…/simple` + `name/` must not lose `simple`).
pub fn base_url(text: &str) -> Option<Url> {
    let mut url = Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

/// Whether `url`'s host is in `hosts`, as operators list them: `host` (any port) or
/// `host:port`, lower case.
pub fn host_listed(hosts: &[String], url: &Url) -> bool {
    let bare = url.host_str().unwrap_or("").to_ascii_lowercase();
    let with_port = match url.port() {
        Some(port) => format!("{bare}:{port}"),
        None => bare.clone(),
    };
    hosts.iter().any(|host| *host == with_port || *host == bare)
}

/// `scheme://host[:port]` without a trailing slash, or None when the request names no usable
/// host. The host comes from a proxy's `Forwarded: host=` or `X-Forwarded-Host`, else from
/// `Host`, else from the request target's authority (HTTP/2's `:authority`, or an absolute-form
/// request line); the scheme from a proxy's `Forwarded: proto=` or `X-Forwarded-Proto`, else
/// `http`.
pub fn client_origin(
    headers: &HeaderMap,
    authority: Option<&str>,
    public_url: Option<&Url>,
) -> Option<String> {
    if let Some(public) = public_url {
        return Some(public.as_str().trim_end_matches('/').to_owned());
    }
    let from_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let host = match forwarded(headers, "host") {
        Some(host) => host,
        None => from_header.or(authority)?.trim().to_owned(),
    };
    if !is_host(&host) {
        return None;
    }
    let scheme = forwarded_proto(headers).unwrap_or("http");
    Some(format!("{scheme}://{host}"))
}

/// Letters, digits, `.-:` and IPv6 brackets only: anything else could smuggle a path or a
/// second URL into every rewritten link.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn forwarded_proto(headers: &HeaderMap) -> Option<&'static str> {
    match forwarded(headers, "proto")?.to_ascii_lowercase().as_str() {
        "https" => Some("https"),
        "http" => Some("http"),
        _ => None,
    }
}

/// The `parameter` (`host`, `proto`) a proxy reported: from `Forwarded` (RFC 7239 §4), else
/// from `X-Forwarded-<parameter>`. Of several elements or values, the last: the one the nearest
/// proxy, pmcache's trusted peer, added; the others came from further away, and a client may
/// have written them.
fn forwarded(headers: &HeaderMap, parameter: &str) -> Option<String> {
    let from_forwarded = last_element(headers, header::FORWARDED.as_str()).and_then(|element| {
        element
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(parameter))
            .map(|(_, value)| value.trim().trim_matches('"').to_owned())
    });
    from_forwarded
        .or_else(|| {
            last_element(headers, &format!("x-forwarded-{parameter}"))
                .map(|value| value.trim().to_owned())
        })
        .filter(|value| !value.is_empty())
}

/// The last comma-separated element of the last `name` field.
fn last_element<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let field = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    field.rsplit(',').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn base_urls_get_a_trailing_slash() {
        let url = base_url("http://127.0.0.1:4873/prefix").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:4873/prefix/");
        assert_eq!(base_url("undefined"), None);
        assert_eq!(base_url("file:///tmp/x"), None);
    }

    fn client_origin_of(headers: &HeaderMap, public_url: Option<&Url>) -> Option<String> {
        client_origin(headers, None, public_url)
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let origin = client_origin(&HeaderMap::new(), Some("127.0.0.1:7878"), None);
        assert_eq!(origin.as_deref(), Some("http://127.0.0.1:7878"));
    }

    #[test]
    fn same_origin_and_listed_hosts() {
        let from = Url::parse("http://127.0.0.1:1/a.tgz").unwrap();
        assert!(same_origin(&from)(
            &Url::parse("http://127.0.0.1:1/b.tgz").unwrap()
        ));
        assert!(!same_origin(&from)(
            &Url::parse("https://blobs.example/a.tgz").unwrap()
        ));
        let listed = ["blobs.example".to_owned(), "127.0.0.2:8".to_owned()];
        assert!(host_listed(
            &listed,
            &Url::parse("https://BLOBS.example:9/a").unwrap()
        ));
        assert!(host_listed(
            &listed,
            &Url::parse("http://127.0.0.2:8/a").unwrap()
        ));
        assert!(!host_listed(
            &listed,
            &Url::parse("http://127.0.0.2:9/a").unwrap()
        ));
    }

    #[test]
    fn host_and_forwarded_scheme() {
        assert_eq!(
            client_origin_of(&headers(&[("host", "127.0.0.1:7878")]), None).as_deref(),
            Some("http://127.0.0.1:7878")
        );
        let behind_tls = headers(&[("host", "cache.ci.example"), ("x-forwarded-proto", "https")]);
        assert_eq!(
            client_origin_of(&behind_tls, None).as_deref(),
            Some("https://cache.ci.example")
        );
        let forwarded = headers(&[
            ("host", "cache.ci.example"),
            ("forwarded", "for=1.2.3.4;proto=https"),
        ]);
        assert_eq!(
            client_origin_of(&forwarded, None).as_deref(),
            Some("https://cache.ci.example")
        );
    }

    #[test]
    fn a_proxy_names_host_and_scheme_and_its_own_element_is_the_last() {
        let legacy = headers(&[
            ("host", "127.0.0.1:7878"),
            ("x-forwarded-host", "cache.ci.example"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            client_origin_of(&legacy, None).as_deref(),
            Some("https://cache.ci.example")
        );
        let standard = headers(&[
            ("host", "127.0.0.1:7878"),
            (
                "forwarded",
                "for=192.0.2.1;host=\"cache.ci.example:8443\";proto=https",
            ),
        ]);
        assert_eq!(
            client_origin_of(&standard, None).as_deref(),
            Some("https://cache.ci.example:8443")
        );
        // The client wrote the first element; the proxy appended its own.
        let appended = headers(&[
            ("host", "127.0.0.1:7878"),
            (
                "forwarded",
                "host=evil.example;proto=http, for=192.0.2.1;host=cache.ci.example;proto=https",
            ),
            ("x-forwarded-host", "evil.example, cache.ci.example"),
        ]);
        assert_eq!(
            client_origin_of(&appended, None).as_deref(),
            Some("https://cache.ci.example")
        );
        // A proxy reporting a host that could smuggle a path gets no origin, not its Host.
        let smuggling = headers(&[("host", "127.0.0.1"), ("x-forwarded-host", "a/b")]);
        assert_eq!(client_origin_of(&smuggling, None), None);
        // An empty report is no report.
        let empty = headers(&[("host", "127.0.0.1"), ("x-forwarded-host", "")]);
        assert_eq!(
            client_origin_of(&empty, None).as_deref(),
            Some("http://127.0.0.1")
        );
    }

    #[test]
    fn public_url_wins_and_bad_hosts_are_refused() {
        let public = Url::parse("https://pmcache.ci.example/").unwrap();
        let origin = client_origin_of(&headers(&[("host", "other")]), Some(&public));
        assert_eq!(origin.as_deref(), Some("https://pmcache.ci.example"));
        assert_eq!(client_origin_of(&headers(&[("host", "a/b")]), None), None);
        assert_eq!(client_origin_of(&headers(&[("host", "a\"b")]), None), None);
        assert_eq!(client_origin_of(&HeaderMap::new(), None), None);
    }
}
