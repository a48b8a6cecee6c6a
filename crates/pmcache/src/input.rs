//! Request input refused before any frontend sees it: targets over `server.max_uri_length`,
//! header blocks over `server.max_header_size`, `Host` fields that are doubled, malformed or
//! disagree with the target, and paths that could climb out of a mount or
//! mean one thing to pmcache and another to an upstream or a filesystem (`..`, `%2e%2e`, `//`,
//! backslashes, NUL, encoded slashes where no route takes one).

use std::time::Duration;

use http::StatusCode;
use http::request::Parts;

use crate::config::ServerConfig;

/// Longest stretch of a refused path quoted back in a reason.
const QUOTED_PATH: usize = 200;

/// The request size limits of `[server]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    max_uri_length: usize,
    max_header_size: usize,
    body_read_timeout: Duration,
}

impl Limits {
    pub(crate) fn new(settings: &ServerConfig) -> Limits {
        Limits {
            max_uri_length: usize::try_from(settings.max_uri_length.0).unwrap_or(usize::MAX),
            max_header_size: usize::try_from(settings.max_header_size.0).unwrap_or(usize::MAX),
            body_read_timeout: settings.body_read_timeout,
        }
    }

    /// How long a request body may take to arrive whole.
    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.body_read_timeout
    }
}

/// Why a request is refused: its status and a one-line reason.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

/// Checks a request's size against `limits` and its path; `encoded_slash` says whether the
/// mount it goes to takes `%2F` inside a segment.
pub(crate) fn check(parts: &Parts, limits: &Limits, encoded_slash: bool) -> Result<(), Refusal> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_length {
        return Err(Refusal {
            status: StatusCode::URI_TOO_LONG,
            reason: format!(
                "the request target is {target} bytes, over the {}-byte limit (server.max_uri_length)",
                limits.max_uri_length
            ),
        });
    }
    let headers = header_block_size(&parts.headers);
    if headers > limits.max_header_size {
        return Err(Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: format!(
                "the request headers are {headers} bytes, over the {}-byte limit (server.max_header_size)",
                limits.max_header_size
            ),
        });
    }
    check_host(parts).map_err(|why| Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: format!("refused Host: {why}"),
    })?;
    let path = parts.uri.path();
    check_path(path, encoded_slash).map_err(|why| Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: format!("refused path {}: {why}", quoted(path)),
    })
}

/// The one authority a request names (RFC 9112 §3.2, RFC 9113 §8.3.1): at most one `Host`
/// field, a well-formed authority, and the same as the absolute-form target or `:authority`
/// when there is one, so that every part of pmcache (and any proxy before it) reads the same
/// origin from the request.
fn check_host(parts: &Parts) -> Result<(), String> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host field".to_owned());
    }
    let Some(host) = host else {
        // RFC 9112 §3.2: an HTTP/1.1 request must name its host (HTTP/1.0 may not; HTTP/2
        // names it in `:authority`).
        if parts.version == http::Version::HTTP_11 {
            return Err("the request has no Host field (HTTP/1.1 requires one)".to_owned());
        }
        return Ok(());
    };
    let host = host
        .to_str()
        .ok()
        .filter(|host| is_authority(host))
        .ok_or_else(|| format!("{host:?} is not a host with an optional port"))?;
    match parts.uri.authority() {
        Some(target) if !same_origin(parts.uri.scheme_str(), target.as_str(), host) => {
            Err(format!(
                "Host {host:?} disagrees with the request's authority {:?}",
                target.as_str()
            ))
        }
        _ => Ok(()),
    }
}

/// Whether two authorities name the same host and port, the scheme's default port written or
/// not (`http://h:80/` with `Host: h`), whatever the case.
fn same_origin(scheme: Option<&str>, target: &str, host: &str) -> bool {
    let default = match scheme {
        Some("https") => ":443",
        _ => ":80",
    };
    let bare = |authority: &str| {
        let lower = authority.to_ascii_lowercase();
        match lower.strip_suffix(default) {
            Some(bare) => bare.to_owned(),
            None => lower,
        }
    };
    bare(target) == bare(host)
}

/// `host[:port]`: a registered name (letters, digits, `-`, `.`, `_`), an IPv4 address or a
/// bracketed IPv6 address, and a port of 1 to 5 digits up to 65535. No user info.
fn is_authority(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((v6, rest)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match rest {
                "" => return true,
                _ => match rest.strip_prefix(':') {
                    Some(port) => return is_port(port),
                    None => return false,
                },
            },
            _ => return false,
        },
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    name_ok && port.is_none_or(is_port)
}

fn is_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|port| port <= 65_535)
}

/// The header block as it travels in HTTP/1: `name: value\r\n` per field.
fn header_block_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Refuses what no route of any mount takes. Frontends check their own grammar after this;
/// this is the one place that keeps traversal out whatever a frontend forgets.
pub(crate) fn check_path(path: &str, encoded_slash: bool) -> Result<(), &'static str> {
    let below = path.strip_prefix('/').ok_or("must start with '/'")?;
    let mut segments = below.split('/').peekable();
    while let Some(raw) = segments.next() {
        // A trailing slash is how PyPI project pages and mount roots are spelt.
        if raw.is_empty() && segments.peek().is_some() {
            return Err("has an empty segment ('//')");
        }
        let decoded =
            pmcache_proxy::percent::decode_strict(raw).ok_or("has a malformed percent-escape")?;
        if decoded.contains(&b'/') && !encoded_slash {
            return Err("has an encoded '/' (%2F) inside a segment");
        }
        check_decoded(&decoded)?;
    }
    Ok(())
}

/// One decoded segment; an encoded `/` splits it into parts that are checked like segments,
/// since an upstream URL or a log reader may take them as such.
fn check_decoded(decoded: &[u8]) -> Result<(), &'static str> {
    if decoded.contains(&b'\\') {
        return Err("contains a backslash");
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("contains a control character (such as NUL)");
    }
    if decoded
        .split(|&b| b == b'/')
        .any(|part| part == b"." || part == b"..")
    {
        return Err("has a '.' or '..' segment");
    }
    Ok(())
}

/// The path, cut to [`QUOTED_PATH`] bytes, for a reason line.
fn quoted(path: &str) -> String {
    if path.len() <= QUOTED_PATH {
        return path.to_owned();
    }
    format!("{}…", &path[..path.floor_char_boundary(QUOTED_PATH)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &str) -> &'static str {
        match check_path(path, false) {
            Err(reason) => reason,
            Ok(()) => panic!("{path:?} was accepted"),
        }
    }

    #[test]
    fn routes_of_every_mount_pass() {
        for path in [
            "/",
            "/healthz",
            "/pypi/simple/",
            "/pypi/simple/demo-app/",
            "/pypi/files/0123456789abcdef0123456789abcdef/demo_app-1.0-py3-none-any.whl.metadata",
            "/npm/left-pad/-/left-pad-1.3.0.tgz",
            "/npm/x/-/x-1.0.0%2Bbuild.5.tgz",
            "/rubygems/",
            "/rubygems/info/rails",
            "/rubygems/quick/Marshal.4.8/a-1.0.gemspec.rz",
            "/packagist/p2/acme/tool~dev.json",
        ] {
            assert_eq!(check_path(path, false), Ok(()), "{path}");
        }
        for path in [
            "/npm/@scope%2fname",
            "/npm/@scope%2Fname/-/name-1.0.0.tgz",
            "/packagist/dists/acme/tool/feature%2Fx.zip",
            "/packagist/dists/acme/tool/release%2F1.x%2Fnext.zip",
        ] {
            assert_eq!(check_path(path, true), Ok(()), "{path}");
        }
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for path in [
            "/pypi/../secret",
            "/pypi/simple/..",
            "/pypi/simple/./demo/",
            "/pypi/%2e%2e/secret",
            "/pypi/%2E%2E/secret",
            "/pypi/.%2e/secret",
            "/rubygems/info/%2e",
        ] {
            assert_eq!(refused(path), "has a '.' or '..' segment", "{path}");
        }
        assert_eq!(refused("//pypi/simple/"), "has an empty segment ('//')");
        assert_eq!(refused("/pypi//simple/"), "has an empty segment ('//')");
        assert_eq!(refused("/pypi/simple//"), "has an empty segment ('//')");
        assert_eq!(refused("/pypi/a\\..\\b"), "contains a backslash");
        assert_eq!(refused("/pypi/a%5c..%5Cb"), "contains a backslash");
        assert_eq!(
            refused("/pypi/a%00b"),
            "contains a control character (such as NUL)"
        );
        assert_eq!(
            refused("/pypi/a%7fb"),
            "contains a control character (such as NUL)"
        );
        assert_eq!(refused("/pypi/a%zz"), "has a malformed percent-escape");
        assert_eq!(refused("/pypi/a%2"), "has a malformed percent-escape");
        assert_eq!(refused("*"), "must start with '/'");
    }

    #[test]
    fn encoded_slashes_pass_only_where_routes_take_them() {
        assert_eq!(
            refused("/pypi/simple/a%2fb/"),
            "has an encoded '/' (%2F) inside a segment"
        );
        assert_eq!(
            refused("/rubygems/info/a%2Fb"),
            "has an encoded '/' (%2F) inside a segment"
        );
        // Allowed, they still may not hide a '..'.
        for path in [
            "/npm/@scope%2f..",
            "/packagist/dists/acme/tool/..%2F..%2Fsecret.zip",
            "/packagist/dists/acme/tool/a%2F.%2Fb.zip",
        ] {
            assert_eq!(
                check_path(path, true),
                Err("has a '.' or '..' segment"),
                "{path}"
            );
        }
    }

    #[test]
    fn decoding_happens_once() {
        // `%252e%252e` is the text `%2e%2e`, not `..`: no layer below decodes again.
        assert_eq!(check_path("/npm/%252e%252e", false), Ok(()));
    }

    fn parts(target: &str, headers: &[(&str, String)]) -> Parts {
        let mut request = http::Request::builder()
            .uri(target)
            .header(http::header::HOST, "pmcache:7878");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn size_limits_give_414_and_431() {
        let limits = Limits {
            max_uri_length: 100,
            max_header_size: 200,
            body_read_timeout: Duration::from_secs(1),
        };
        let long = format!("/pypi/simple/{}/", "a".repeat(100));
        let refusal = check(&parts(&long, &[]), &limits, false).unwrap_err();
        assert_eq!(refusal.status, StatusCode::URI_TOO_LONG);
        assert!(refusal.reason.contains("server.max_uri_length"));
        let big = [("accept", "x".repeat(300))];
        let refusal = check(&parts("/pypi/simple/", &big), &limits, false).unwrap_err();
        assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(refusal.reason.contains("server.max_header_size"));
        let fine = [("accept", "x".repeat(100))];
        assert_eq!(
            check(&parts("/pypi/simple/", &fine), &limits, false),
            Ok(())
        );
        let refusal = check(&parts("/pypi/%2e%2e/x", &[]), &limits, false).unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refusal.reason,
            "refused path /pypi/%2e%2e/x: has a '.' or '..' segment"
        );
    }

    #[test]
    fn long_paths_are_quoted_short() {
        let path = format!("/{}", "é".repeat(300));
        let quoted = quoted(&path);
        assert!(quoted.len() <= QUOTED_PATH + "…".len());
        assert!(quoted.ends_with('…'));
    }

    fn request(target: &str, hosts: &[&str]) -> Parts {
        let mut builder = http::Request::builder().uri(target);
        for host in hosts {
            builder = builder.header(http::header::HOST, *host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn one_well_formed_host_agreeing_with_the_target_passes() {
        for (target, hosts) in [
            ("/pypi/simple/", &["pmcache:7878"][..]),
            ("/pypi/simple/", &["127.0.0.1"]),
            ("/pypi/simple/", &["[::1]:7878"]),
            ("/pypi/simple/", &["cache.ci.example"]),
            ("http://pmcache:7878/pypi/simple/", &["PMCACHE:7878"]),
            ("http://pmcache:80/pypi/simple/", &["pmcache"]),
            ("https://pmcache/pypi/simple/", &["pmcache:443"]),
        ] {
            assert_eq!(
                check_host(&request(target, hosts)),
                Ok(()),
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn doubled_malformed_or_disagreeing_hosts_are_refused() {
        for (target, hosts) in [
            ("/", &["a.example", "b.example"][..]),
            ("/", &["a.example:"]),
            ("/", &["a.example:99999"]),
            ("/", &["a:b:c"]),
            ("/", &["[::1"]),
            ("/", &["[not-v6]:80"]),
            ("/", &["::1"]),
            ("/", &["user@a.example"]),
            ("/", &["a example"]),
            ("/", &[""]),
            ("http://a.example/pypi/simple/", &["b.example"]),
            ("http://a.example:8080/pypi/simple/", &["a.example"]),
        ] {
            assert!(
                check_host(&request(target, hosts)).is_err(),
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn only_http_1_1_requires_a_host() {
        let mut parts = request("/pypi/simple/", &[]);
        assert!(check_host(&parts).is_err(), "HTTP/1.1 without Host");
        for version in [http::Version::HTTP_10, http::Version::HTTP_2] {
            parts.version = version;
            assert_eq!(check_host(&parts), Ok(()), "{version:?} without Host");
        }
    }
}
