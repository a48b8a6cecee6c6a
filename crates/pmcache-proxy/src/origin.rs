//! The origin clients reach pmcache at, for documents whose URLs must be absolute (npm tarballs,
//! Composer dists): `public_url` when configured, else the request's `Host` and the scheme a
//! TLS-terminating proxy reports in `X-Forwarded-Proto` or `Forwarded`.

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

/// `scheme://host[:port]` without a trailing slash, or None when the request names no usable
/// host (HTTP/1.0 without `Host`, or a value that is not a host name).
pub fn client_origin(headers: &HeaderMap, public_url: Option<&Url>) -> Option<String> {
    if let Some(public) = public_url {
        return Some(public.as_str().trim_end_matches('/').to_owned());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    if !is_host(host) {
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
    let from_forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| {
            value
                .split([';', ','])
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("proto"))
                .map(|(_, proto)| proto.trim().trim_matches('"').to_owned())
        });
    let proto = from_forwarded.or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
    })?;
    match proto.to_ascii_lowercase().as_str() {
        "https" => Some("https"),
        "http" => Some("http"),
        _ => None,
    }
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

    #[test]
    fn host_and_forwarded_scheme() {
        assert_eq!(
            client_origin(&headers(&[("host", "127.0.0.1:7878")]), None).as_deref(),
            Some("http://127.0.0.1:7878")
        );
        let behind_tls = headers(&[("host", "cache.ci.example"), ("x-forwarded-proto", "https")]);
        assert_eq!(
            client_origin(&behind_tls, None).as_deref(),
            Some("https://cache.ci.example")
        );
        let forwarded = headers(&[
            ("host", "cache.ci.example"),
            ("forwarded", "for=1.2.3.4;proto=https"),
        ]);
        assert_eq!(
            client_origin(&forwarded, None).as_deref(),
            Some("https://cache.ci.example")
        );
    }

    #[test]
    fn public_url_wins_and_bad_hosts_are_refused() {
        let public = Url::parse("https://pmcache.ci.example/").unwrap();
        let origin = client_origin(&headers(&[("host", "other")]), Some(&public));
        assert_eq!(origin.as_deref(), Some("https://pmcache.ci.example"));
        assert_eq!(client_origin(&headers(&[("host", "a/b")]), None), None);
        assert_eq!(client_origin(&headers(&[("host", "a\"b")]), None), None);
        assert_eq!(client_origin(&HeaderMap::new(), None), None);
    }
}
