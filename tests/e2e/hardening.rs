//! Bad client input, spoken as raw HTTP where clients would normalise it: traversal in every
//! mount, invalid names, over-long targets and headers, huge `Accept`s, malformed `Range`s,
//! slow clients and too many connections. Each gets a 4xx or a 503 with a one-line reason (or,
//! for a client too slow to send its request, a closed connection): never a file from outside
//! the store, never an upstream request for input that cannot be a package, never a hang.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use hyper::{Response, StatusCode};

use crate::support::fixture_server::{
    self, Body, FixtureServer, RequestLog, full_body, status_only,
};
use crate::support::raw_http::{self, RawResponse};
use crate::support::wait_until;

/// What the secret file next to the data dir holds: no response may ever contain it.
const SECRET: &str = "pmcache-e2e-secret-3f1d0c";
/// The one artifact the fixture publishes.
const FILE_NAME: &str = "demo-1.0.tar.gz";
const PEP_691_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// The artifact's bytes: long enough for ranges inside it, and different at every offset.
fn artifact() -> Bytes {
    Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// A fixture behind every mount at once (`/simple/`, `/npm/`, `/gems/`, `/composer/`) that
/// logs each request. It publishes one PyPI project and one npm package; everything else is
/// 404, so any request a test did not mean to cause shows up in the log.
struct Upstream {
    server: FixtureServer,
    log: Arc<RequestLog<String>>,
    /// While set, `/simple/demo/` is dripped like `/simple/drip/`.
    drip: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    fn start() -> Result<Upstream> {
        let bound = FixtureServer::bind("hardening-upstream", 1)?;
        let addr = bound.addrs()[0];
        let log = Arc::new(RequestLog::default());
        let drip = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = {
            let log = Arc::clone(&log);
            let drip = Arc::clone(&drip);
            fixture_server::handler(move |request| {
                let target = request.uri().to_string();
                log.push(target.clone());
                let dripping = target == "/simple/drip/"
                    || (target == "/simple/demo/"
                        && drip.load(std::sync::atomic::Ordering::SeqCst));
                async move {
                    match dripping {
                        true => dripped(answer(addr, "/simple/demo/")).await,
                        false => answer(addr, &target),
                    }
                }
            })
        };
        let server = bound.serve(vec![handler]);
        Ok(Upstream { server, log, drip })
    }

    fn url(&self, prefix: &str) -> String {
        format!("http://{}/{prefix}/", self.server.addr(0))
    }

    /// Fails, listing them, if the upstream saw requests after `mark`.
    fn ensure_untouched_since(&self, mark: usize, what: &str) -> Result<()> {
        let seen = self.log.since(mark);
        ensure!(
            seen.is_empty(),
            "{what} made pmcache ask the upstream for {seen:?}"
        );
        Ok(())
    }
}

fn answer(addr: SocketAddr, target: &str) -> Response<Body> {
    let data = artifact();
    match target {
        "/simple/demo/" => {
            let page = serde_json::json!({
                "meta": {"api-version": "1.1"},
                "name": "demo",
                "files": [{
                    "filename": FILE_NAME,
                    "url": format!("http://{addr}/files/{FILE_NAME}"),
                    "hashes": {"sha256": crate::support::sha256_hex(&data)},
                }],
            });
            json(PEP_691_JSON, &page)
        }
        "/npm/demo" => {
            use base64::Engine as _;
            use sha2::Digest as _;
            let integrity =
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&data));
            // Two versions whose tarballs are no http(s) URL: pmcache must drop them.
            let packument = serde_json::json!({
                "name": "demo",
                "dist-tags": {"latest": "1.0.0", "old": "0.9.0"},
                "versions": {
                    "0.9.0": {
                        "name": "demo",
                        "version": "0.9.0",
                        "dist": {"tarball": "file:///etc/passwd", "integrity": format!("sha512-{integrity}")},
                    },
                    "0.9.1": {
                        "name": "demo",
                        "version": "0.9.1",
                        "dist": {"tarball": "gopher://127.0.0.1:70/1demo", "integrity": format!("sha512-{integrity}")},
                    },
                    "1.0.0": {
                        "name": "demo",
                        "version": "1.0.0",
                        "dist": {
                            "tarball": format!("http://{addr}/npm/demo/-/demo-1.0.0.tgz"),
                            "integrity": format!("sha512-{integrity}"),
                        },
                    },
                },
            });
            json("application/json", &packument)
        }
        _ if target.starts_with("/simple/bomb") => gzip_bomb(target.ends_with("-low/")),
        _ if target == format!("/files/{FILE_NAME}") || target == "/npm/demo/-/demo-1.0.0.tgz" => {
            let mut response = Response::new(full_body(data));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        _ => status_only(StatusCode::NOT_FOUND),
    }
}

/// Inflated size of each gzip bomb: past the default `max_document_size` (128 MiB).
const BOMB_INFLATED_MIB: usize = 256;

/// A gzip-encoded project page inflating to [`BOMB_INFLATED_MIB`]: the same gzip member of one
/// MiB repeated (RFC 1952 allows many members in a row). A classic bomb is spaces, expanding
/// about 1,000-fold; a `low` one expands about 50-fold, like a real index, so that only the
/// size limit stops it, and only after it has been decoded far past the memory budgets.
fn gzip_bomb(low: bool) -> Response<Body> {
    static BOMBS: std::sync::OnceLock<[Bytes; 2]> = std::sync::OnceLock::new();
    let bombs = BOMBS.get_or_init(|| {
        let member = |block: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(block).expect("gzip in memory");
            encoder.finish().expect("gzip in memory")
        };
        let spaces = vec![b' '; 1 << 20];
        // Spaces with a pseudo-random letter every 32 bytes.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let sprinkled: Vec<u8> = (0..1usize << 20)
            .map(|i| match i % 32 {
                0 => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b'a' + (seed % 26) as u8
                }
                _ => b' ',
            })
            .collect();
        [member(&spaces), member(&sprinkled)]
            .map(|member| Bytes::from(member.repeat(BOMB_INFLATED_MIB)))
    });
    let mut response = Response::new(full_body(bombs[usize::from(low)].clone()));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(PEP_691_JSON),
    );
    headers.insert(
        hyper::header::CONTENT_ENCODING,
        hyper::header::HeaderValue::from_static("gzip"),
    );
    response
}

/// `response` with its body sent one byte every 200 ms: each byte well within any read timeout,
/// the whole body (about 300 bytes) a minute.
async fn dripped(response: Response<Body>) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let frames = futures_util::stream::unfold(0, move |offset| {
        let bytes = bytes.clone();
        async move {
            if offset >= bytes.len() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let frame = hyper::body::Frame::data(bytes.slice(offset..offset + 1));
            Some((Ok::<_, std::io::Error>(frame), offset + 1))
        }
    });
    let mut parts = parts;
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        http_body_util::combinators::BoxBody::new(http_body_util::StreamBody::new(frames)),
    )
}

fn json(content_type: &'static str, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full_body(Bytes::from(value.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// One test's world: a temp dir holding the data dir and, beside it, a secret file; the
/// fixture upstream; pmcache with every frontend pointed at the fixture.
type Case = crate::support::case::Case<Upstream>;

impl Case {
    fn start(settings: &[(&str, &str)]) -> Result<Case> {
        let case = Case::new(Upstream::start()?)?;
        // Beside the data dir, where `data/../secret.txt` would find it.
        std::fs::write(case.path("secret.txt"), SECRET)?;
        let (pypi, npm) = (case.upstream.url("simple"), case.upstream.url("npm"));
        let (gems, composer) = (case.upstream.url("gems"), case.upstream.url("composer"));
        let mut env = vec![
            ("PMCACHE_PYPI_UPSTREAM", pypi.as_str()),
            ("PMCACHE_NPM_UPSTREAM", npm.as_str()),
            ("PMCACHE_RUBYGEMS_UPSTREAM", gems.as_str()),
            ("PMCACHE_PACKAGIST_UPSTREAM", composer.as_str()),
        ];
        env.extend_from_slice(settings);
        case.serve(&env)
    }

    fn addr(&self) -> Result<SocketAddr> {
        let base = self.pmcache().base_url();
        let authority = base.strip_prefix("http://").context("pmcache URL")?;
        Ok(authority.parse()?)
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Result<RawResponse> {
        raw_http::get(self.addr()?, target, headers)
    }

    /// GETs `target` and fails unless the answer is `status` with a one-line reason, holds no
    /// secret, and the upstream heard nothing of it.
    fn ensure_refused(&self, target: &str, status: u16) -> Result<()> {
        let mark = self.upstream.log.mark();
        let response = self.get(target, &[])?;
        ensure!(
            response.status == status,
            "GET {target}: HTTP {} ({:?}), expected {status}",
            response.status,
            response.text()
        );
        response.ensure_one_line_reason(&format!("GET {target}"))?;
        ensure!(
            !response.text().contains(SECRET),
            "GET {target} served the secret"
        );
        self.upstream
            .ensure_untouched_since(mark, &format!("GET {target}"))
    }

    /// The file URL (path) pmcache's rendering of the demo page gives the artifact.
    fn artifact_path(&self) -> Result<String> {
        let page = self.get("/pypi/simple/demo/", &[("Accept", PEP_691_JSON)])?;
        ensure!(page.status == 200, "project page: HTTP {}", page.status);
        let page: serde_json::Value = serde_json::from_slice(&page.body)?;
        let url = page["files"][0]["url"]
            .as_str()
            .context("no file url in the page")?;
        Ok(url.to_owned())
    }
}

/// Traversal attempts that make sense below any mount.
fn traversals(mount: &str) -> Vec<String> {
    [
        "../secret.txt",
        "../../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E/%2e%2e/secret.txt",
        ".%2e/secret.txt",
        "./secret.txt",
        "x/../../secret.txt",
        "..%5csecret.txt",
        "..%5C..%5Csecret.txt",
        "secret.txt%00.json",
        "%00",
        "/secret.txt",
        "x//secret.txt",
        "x%zz",
    ]
    .iter()
    .map(|rest| format!("/{mount}/{rest}"))
    .collect()
}

#[test]
fn traversal_is_refused_below_every_mount_and_the_root() -> Result<()> {
    let case = Case::start(&[])?;
    for mount in ["pypi", "npm", "rubygems", "packagist"] {
        for target in traversals(mount) {
            case.ensure_refused(&target, 400)?;
        }
    }
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "//secret.txt",
        // Encoded slashes where no route takes one.
        "/pypi/simple/..%2fsecret.txt/",
        "/pypi/simple/a%2Fb/",
        "/rubygems/info/..%2F..%2Fsecret.txt",
        "/rubygems/gems/a%2fb-1.0.gem",
        // Mount-specific spellings.
        "/pypi/files/0123456789abcdef0123456789abcdef/..",
        "/pypi/files/0123456789abcdef0123456789abcdef/%2e%2e",
        "/pypi/simple/demo/%2e%2e/%2e%2e/secret.txt",
        "/npm/@scope%2f..",
        "/npm/@scope%2f..%2f..%2fsecret.txt",
        "/npm/@scope%2F%2e%2e%2Fsecret.txt",
        "/npm/demo/-/..%2f..%2fsecret.txt",
        "/npm/-/..%2f..%2fsecret.txt",
        "/packagist/dists/acme/tool/..%2F..%2F..%2Fsecret.txt",
        "/packagist/dists/acme/tool/feature%2F..%2F..%2Fx.zip",
        "/packagist/p2/..%2Fsecret.txt.json",
    ] {
        case.ensure_refused(target, 400)?;
    }
    Ok(())
}

#[test]
fn raw_backslashes_never_reach_a_frontend() -> Result<()> {
    let case = Case::start(&[])?;
    for target in [
        "/pypi/..\\secret.txt",
        "/npm/..\\..\\secret.txt",
        "/rubygems/info/..\\secret.txt",
        "/packagist/dists/acme/tool/..\\secret.txt",
    ] {
        let mark = case.upstream.log.mark();
        let response = case.get(target, &[])?;
        // hyper may refuse the request line itself (a bare 400); otherwise pmcache's check does.
        ensure!(
            response.status == 400,
            "GET {target}: HTTP {}",
            response.status
        );
        if !response.body.is_empty() {
            response.ensure_one_line_reason(target)?;
        }
        ensure!(!response.text().contains(SECRET));
        case.upstream.ensure_untouched_since(mark, target)?;
    }
    Ok(())
}

#[test]
fn legitimate_encoded_slashes_still_reach_the_upstream() -> Result<()> {
    let case = Case::start(&[])?;
    let mark = case.upstream.log.mark();
    // The fixture has no such package: a 404 from the upstream, not a 400 from the edge.
    let response = case.get("/npm/@demo%2fscoped", &[])?;
    ensure!(
        response.status == 404,
        "npm scoped name: HTTP {} {:?}",
        response.status,
        response.text()
    );
    let seen = case.upstream.log.since(mark);
    ensure!(
        seen.iter().any(|target| target == "/npm/@demo%2fscoped"),
        "the upstream was not asked for the scoped packument: {seen:?}"
    );
    let response = case.get("/packagist/dists/acme/tool/feature%2Fx.zip", &[])?;
    ensure!(
        response.status != 400,
        "a branch reference was refused at the edge: {:?}",
        response.text()
    );
    let seen = case.upstream.log.since(mark);
    ensure!(
        seen.iter().any(|target| target.starts_with("/composer/")),
        "the Packagist dist request never reached the upstream: {seen:?}"
    );
    Ok(())
}

#[test]
fn invalid_names_are_refused_without_asking_the_upstream() -> Result<()> {
    let case = Case::start(&[])?;
    let long_pypi = format!("/pypi/simple/{}/", "a".repeat(201));
    let long_npm = format!("/npm/{}", "a".repeat(215));
    let long_gem = format!("/rubygems/info/{}", "a".repeat(256));
    for (target, status) in [
        ("/pypi/simple/-demo/", 400),
        ("/pypi/simple/demo_/", 400),
        ("/pypi/simple/de%20mo/", 400),
        ("/pypi/simple/d%C3%A9mo/", 400),
        ("/pypi/simple/de$mo/", 400),
        (long_pypi.as_str(), 400),
        ("/npm/.hidden", 400),
        ("/npm/_private", 400),
        ("/npm/@scope", 400),
        ("/npm/@/name", 400),
        ("/npm/sp%20ace", 400),
        ("/npm/a%2Bb", 400),
        (long_npm.as_str(), 400),
        ("/npm/demo/-/demo-1.0.0.zip", 400),
        ("/rubygems/info/a%20b", 400),
        ("/rubygems/info/-", 400),
        ("/rubygems/gems/rails.gem", 400),
        ("/rubygems/gems/-1.0.gem", 400),
        (long_gem.as_str(), 400),
        // Composer takes a 404 as "not in this repository" and looks elsewhere.
        ("/packagist/p2/Acme/Tool.json", 404),
        ("/packagist/p2/acme.json", 404),
        ("/packagist/p2/acme/tool__x.json", 404),
        ("/packagist/p2/acme/tool/extra.json", 404),
        ("/packagist/providers/acme.json", 404),
        ("/packagist/dists/Acme/tool/abc.zip", 404),
    ] {
        case.ensure_refused(target, status)?;
    }
    Ok(())
}

#[test]
fn over_long_targets_and_header_blocks_get_414_and_431() -> Result<()> {
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    // Over pmcache's limits (8 KiB, 32 KiB) but within hyper's buffer: pmcache says why.
    let long_target = format!("/pypi/simple/{}/", "a".repeat(9 << 10));
    case.ensure_refused(&long_target, 414)?;
    let big_header = "x".repeat(40 << 10);
    let response = case.get("/healthz", &[("X-Filler", &big_header)])?;
    ensure!(
        response.status == 431,
        "40 KiB header: HTTP {}",
        response.status
    );
    response.ensure_one_line_reason("40 KiB header")?;
    // Far over: refused by hyper before pmcache sees a request, still promptly.
    // hyper answers and closes while the rest of the request is still arriving, so the kernel
    // may reset the connection before the client reads the answer: an answer, if any, is a
    // refusal, and the connection ends promptly either way.
    let huge_target = format!("/pypi/simple/{}/", "a".repeat(200 << 10));
    let huge_header = "x".repeat(1 << 20);
    for (what, target, headers) in [
        ("200 KiB target", huge_target.as_str(), vec![]),
        (
            "1 MiB header",
            "/healthz",
            vec![("X-Filler", huge_header.as_str())],
        ),
    ] {
        if let Some(response) = raw_http::attempt(addr, target, &headers)? {
            ensure!(
                matches!(response.status, 414 | 431),
                "{what}: HTTP {}",
                response.status
            );
        }
    }
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("X-Header-{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = raw_http::get(addr, "/healthz", &many)?;
    ensure!(
        response.status == 431,
        "150 headers: HTTP {}",
        response.status
    );
    // And pmcache still serves.
    ensure!(case.get("/healthz", &[])?.status == 200);
    Ok(())
}

#[test]
fn huge_accept_headers_negotiate_quickly() -> Result<()> {
    let case = Case::start(&[])?;
    // Just under the 32 KiB header limit: thousands of entries, garbage mixed in.
    let entries = "text/plain;q=0.1, garbage, application/x;q=oops, ".repeat(600);
    for (target, tail) in [
        ("/pypi/simple/demo/", PEP_691_JSON),
        ("/npm/demo", "application/vnd.npm.install-v1+json"),
    ] {
        for accept in [format!("{entries}{tail}"), "a".repeat(30 << 10)] {
            let started = Instant::now();
            let response = case.get(target, &[("Accept", &accept)])?;
            ensure!(
                response.status == 200,
                "{target} with a {}-byte Accept: HTTP {} {:?}",
                accept.len(),
                response.status,
                response.text()
            );
            ensure!(
                started.elapsed() < Duration::from_secs(5),
                "{target}: negotiation took {:?}",
                started.elapsed()
            );
        }
    }
    // An entry past the read bound is not seen: the header is cut, not parsed whole.
    let response = case.get(
        "/pypi/simple/demo/",
        &[("Accept", &format!("{entries}{PEP_691_JSON}"))],
    )?;
    ensure!(
        response.header("content-type") == Some("text/html"),
        "a type named after 28 KiB of entries was honoured: {:?}",
        response.header("content-type")
    );
    Ok(())
}

#[test]
fn malformed_ranges_are_ignored_or_unsatisfiable_never_fatal() -> Result<()> {
    let case = Case::start(&[])?;
    let path = case.artifact_path()?;
    let data = artifact();
    let size = data.len();
    // The first request is a miss, streamed from the upstream: a malformed range is ignored.
    let response = case.get(&path, &[("Range", "bytes=5-2")])?;
    ensure!(
        response.status == 200 && response.body == data,
        "miss with a malformed range: HTTP {}, {} bytes",
        response.status,
        response.body.len()
    );
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "bytes=0-1,4-5",
        "bytes=1-2, 3-4, 5-6",
        "bytes=99999999999999999999999-",
        "bytes=0-99999999999999999999999",
        "bytes=--5",
        "bytes=-",
        "bytes=",
        "items=0-5",
        "bytes=1-2-3",
        "bytes = 0 - 5x",
    ] {
        let response = case.get(&path, &[("Range", range)])?;
        ensure!(
            response.status == 200 && response.body == data,
            "artifact, Range {range:?}: HTTP {} with {} bytes",
            response.status,
            response.body.len()
        );
    }
    for range in ["bytes=-0", &format!("bytes={size}-"), "bytes=99999999-"] {
        let response = case.get(&path, &[("Range", range)])?;
        ensure!(
            response.status == 416
                && response.header("content-range") == Some(&format!("bytes */{size}")),
            "artifact, Range {range:?}: HTTP {} {:?}",
            response.status,
            response.headers
        );
    }
    let response = case.get(&path, &[("Range", "bytes=2-4")])?;
    ensure!(
        response.status == 206 && response.body == data[2..=4],
        "a valid range: HTTP {}",
        response.status
    );
    let response = case.get(&path, &[("Range", "bytes=-99999999999")])?;
    ensure!(
        response.status == 206 && response.body == data,
        "a suffix longer than the file: HTTP {}",
        response.status
    );
    // Documents are rewritten as a whole and answer every range with the whole body.
    for range in ["bytes=0-3", "bytes=-0", "bytes=abc", "bytes=5-2,1-1"] {
        let response = case.get(
            "/pypi/simple/demo/",
            &[("Range", range), ("Accept", PEP_691_JSON)],
        )?;
        ensure!(
            response.status == 200
                && serde_json::from_slice::<serde_json::Value>(&response.body).is_ok(),
            "document, Range {range:?}: HTTP {}",
            response.status
        );
    }
    Ok(())
}

/// Waits for the server to close `stream`, failing if it sends a response or takes longer
/// than `within`.
/// HTTP/2's `GOAWAY` frame type (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;

/// HTTP/2's `SETTINGS` frame type (RFC 9113 §6.5).
const SETTINGS: u8 = 0x4;

/// The HTTP/2 frames in `received`, in order: each one's type and payload.
fn h2_frames(received: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = received;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let payload = rest.get(9..9 + length).unwrap_or_default();
        frames.push((rest[3], payload.to_vec()));
        rest = rest.get(9 + length..).unwrap_or_default();
    }
    frames
}

/// Waits for the server to close `stream` within `within` (and a little), failing on a success
/// answer; what the server sent before closing.
fn ensure_closed_within(stream: &mut TcpStream, within: Duration, what: &str) -> Result<Vec<u8>> {
    let started = Instant::now();
    stream.set_read_timeout(Some(within + Duration::from_secs(3)))?;
    let received = raw_http::read_to_close(stream)
        .with_context(|| format!("{what}: the connection stayed open"))?;
    let elapsed = started.elapsed();
    ensure!(
        !received.starts_with(b"HTTP/1.1 2"),
        "{what}: got a success {:?}",
        String::from_utf8_lossy(&received)
    );
    ensure!(
        elapsed < within + Duration::from_secs(2),
        "{what}: closed only after {elapsed:?}"
    );
    Ok(received)
}

#[test]
fn slow_clients_are_cut_off_at_the_header_timeout() -> Result<()> {
    let case = Case::start(&[("PMCACHE_SERVER_HEADER_READ_TIMEOUT", "1s")])?;
    let addr = case.addr()?;
    let timeout = Duration::from_secs(1);

    let mut silent = TcpStream::connect(addr)?;
    ensure_closed_within(&mut silent, timeout, "a client that sends nothing")?;

    let mut preface = TcpStream::connect(addr)?;
    preface.write_all(b"PRI * HTTP/2.0\r\n")?;
    ensure_closed_within(&mut preface, timeout, "half an HTTP/2 preface")?;

    let mut trickle = TcpStream::connect(addr)?;
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
    let started = Instant::now();
    let writer = {
        let mut trickle = trickle.try_clone()?;
        std::thread::spawn(move || {
            // Twenty header lines over six seconds, if the server lets it.
            for line in 0..20 {
                std::thread::sleep(Duration::from_millis(300));
                if trickle
                    .write_all(format!("X-Slow-{line}: a\r\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    ensure_closed_within(&mut trickle, timeout, "a client trickling its headers")?;
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "the trickling client was held {:?}",
        started.elapsed()
    );
    let _ = writer.join();

    // A prompt client is served as ever, and its kept-alive connection, once idle, is closed
    // after the same time.
    let mut prompt = TcpStream::connect(addr)?;
    prompt.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let response = raw_http::read_one(&mut prompt)?;
    ensure!(response.status == 200, "healthz: HTTP {}", response.status);
    ensure_closed_within(&mut prompt, timeout, "an idle kept-alive connection")?;
    Ok(())
}

#[test]
fn connections_over_the_limit_get_503_and_are_counted() -> Result<()> {
    let case = Case::start(&[
        ("PMCACHE_SERVER_MAX_CONNECTIONS", "2"),
        ("PMCACHE_SERVER_HEADER_READ_TIMEOUT", "20s"),
    ])?;
    let addr = case.addr()?;
    // Two connections hold both places: each has started a request it does not finish.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = TcpStream::connect(addr)?;
        holder.write_all(b"GET /healthz HTTP/1.1\r\n")?;
        holders.push(holder);
    }
    let started = Instant::now();
    let response = raw_http::get(addr, "/healthz", &[])?;
    ensure!(
        response.status == 503,
        "third connection: HTTP {} {:?}",
        response.status,
        response.text()
    );
    ensure!(response.header("connection") == Some("close"));
    response.ensure_one_line_reason("third connection")?;
    ensure!(
        response.text().contains("server.max_connections"),
        "the reason does not name the setting: {:?}",
        response.text()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal took {:?}",
        started.elapsed()
    );
    // Places come back when connections close.
    drop(holders);
    wait_until(Duration::from_secs(10), "a place to free up", || {
        Ok(raw_http::get(addr, "/healthz", &[])?.status == 200)
    })?;
    let metrics = case.get("/metrics", &[])?.text();
    ensure!(
        metrics.lines().any(|line| line
            .starts_with("pmcache_connections_refused_total{reason=\"server_full\"} ")
            && !line.ends_with(" 0")),
        "no refused connection counted:\n{metrics}"
    );
    Ok(())
}

#[test]
fn a_silent_connection_does_not_hold_up_shutdown() -> Result<()> {
    let mut case = Case::start(&[])?;
    let addr = case.addr()?;
    // Metrics read over one kept-alive connection, so the gauge counts exactly it and the
    // silent one once pmcache has taken both.
    let mut scraper = TcpStream::connect(addr)?;
    let silent = TcpStream::connect(addr)?;
    wait_until(
        Duration::from_secs(10),
        "pmcache to take the silent connection",
        || Ok(open_connections(&mut scraper, addr)? == 2),
    )?;
    drop(scraper);
    let started = Instant::now();
    let status = case.pmcache_mut().stop()?;
    ensure!(status.success(), "pmcache exited with {status}");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "a connection that never sent a byte held shutdown up for {:?}",
        started.elapsed()
    );
    drop(silent);
    Ok(())
}

/// `pmcache_connections_open` at `/metrics`, asked over the kept-alive `stream` to `addr`.
fn open_connections(stream: &mut TcpStream, addr: SocketAddr) -> Result<u64> {
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let response = raw_http::read_one(stream)?;
    ensure!(response.status == 200, "/metrics: HTTP {}", response.status);
    let text = response.text();
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("pmcache_connections_open "))
        .context("no pmcache_connections_open at /metrics")?;
    Ok(value.trim().parse()?)
}

#[test]
fn a_trickling_request_body_gets_408() -> Result<()> {
    let case = Case::start(&[("PMCACHE_SERVER_BODY_READ_TIMEOUT", "1s")])?;
    let addr = case.addr()?;
    let mark = case.upstream.log.mark();
    let mut stream = TcpStream::connect(addr)?;
    // npm audit's endpoint takes a body: promise 1000 bytes, send 10, then nothing.
    stream.write_all(
        format!(
            "POST /npm/-/npm/v1/security/audits/quick HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{\"a\": 1, "
        )
        .as_bytes(),
    )?;
    let started = Instant::now();
    let received = raw_http::read_to_close(&mut stream)?;
    let response = raw_http::parse(&received)?;
    ensure!(
        response.status == 408,
        "HTTP {} {:?}",
        response.status,
        response.text()
    );
    response.ensure_one_line_reason("trickling body")?;
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "the answer took {:?}",
        started.elapsed()
    );
    case.upstream
        .ensure_untouched_since(mark, "a body that never arrived")
}

/// Holds `count` connections from 127.0.0.1 open, each having sent `opening` and nothing more.
fn hold_connections(addr: SocketAddr, count: usize, opening: &[u8]) -> Result<Vec<TcpStream>> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(addr)?;
            // A refused one may already be closed: holding it still costs the attacker nothing.
            let _ = stream.write_all(opening);
            Ok(stream)
        })
        .collect()
}

/// curl, from 127.0.0.2 (another client to pmcache), downloads `url` `times` times on fresh
/// connections; answers how many downloads brought exactly `expected`.
fn downloads_from_another_client(
    dir: &std::path::Path,
    url: &str,
    times: usize,
    expected: &[u8],
) -> Result<usize> {
    let mut good = 0;
    for n in 0..times {
        let output = dir.join(format!("download-{n}"));
        let mut command = std::process::Command::new("curl");
        command
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--interface",
                "127.0.0.2",
            ])
            .args(["--max-time", "10", "--output"])
            .arg(&output)
            .arg(url)
            .env_clear()
            .env("PATH", crate::support::subprocess_path()?);
        let finished =
            crate::support::run_bounded(command, &dir.join("logs"), Duration::from_secs(20))
                .context("curl is needed by this test")?;
        if finished.status.success() && std::fs::read(&output)? == expected {
            good += 1;
        } else {
            println!("download {n} failed:\n{}", finished.output());
        }
    }
    Ok(good)
}

/// While one client (127.0.0.1) holds 1,100 connections open, slowloris HTTP/1 ones and then
/// HTTP/2 ones that sent only the preface, another (127.0.0.2) downloads a cached file 28 times
/// out of 28: the first client gets `max_connections_per_client` places and refusals naming it.
#[test]
fn one_client_holding_many_connections_leaves_room_for_the_others() -> Result<()> {
    const ATTACK: usize = 1100;
    const DOWNLOADS: usize = 28;
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    let path = "/npm/demo/-/demo-1.0.0.tgz";
    let warm = case.get(path, &[])?;
    ensure!(
        warm.status == 200 && warm.body == artifact(),
        "warming: HTTP {}",
        warm.status
    );
    let url = format!("http://{addr}{path}");
    let scratch = case.path("downloads");
    std::fs::create_dir_all(&scratch)?;

    for (kind, opening) in [
        (
            "slowloris HTTP/1",
            &b"GET /healthz HTTP/1.1\r\nHost: pmcache\r\n"[..],
        ),
        ("idle HTTP/2", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
    ] {
        let held = hold_connections(addr, ATTACK, opening)?;
        let good = downloads_from_another_client(&scratch, &url, DOWNLOADS, &artifact())?;
        ensure!(
            good == DOWNLOADS,
            "with {ATTACK} {kind} connections held by one client, another downloaded {good} of {DOWNLOADS}"
        );
        // The attacker's next connection is refused with the reason, once the flood's refusals
        // (at most 64 answered at once, the rest closed without a word) have drained.
        wait_until(
            Duration::from_secs(10),
            "a refusal naming max_connections_per_client",
            || {
                Ok(raw_http::get(addr, "/healthz", &[]).is_ok_and(|refused| {
                    refused.status == 503
                        && refused.text().contains("server.max_connections_per_client")
                }))
            },
        )
        .context(kind)?;
        drop(held);
        wait_until(
            Duration::from_secs(10),
            "the attacker's places to come back",
            || Ok(raw_http::get(addr, "/healthz", &[])?.status == 200),
        )?;
    }
    let metrics = case.get("/metrics", &[])?.text();
    ensure!(
        metrics.lines().any(|line| {
            line.starts_with("pmcache_connections_refused_total{reason=\"client_limit\"} ")
                && !line.ends_with(" 0")
        }),
        "no client_limit refusal counted:\n{metrics}"
    );
    Ok(())
}

/// HTTP/2 connections that sent the preface and their settings and then nothing are closed at
/// `server.idle_timeout`, not before, with a `GOAWAY` first (they never answer its ping, so they
/// are dropped a second later); an HTTP/1 keep-alive one after its answer too.
#[test]
fn idle_connections_are_closed_at_the_idle_timeout() -> Result<()> {
    let idle = Duration::from_secs(2);
    let case = Case::start(&[
        ("PMCACHE_SERVER_IDLE_TIMEOUT", "2s"),
        ("PMCACHE_SERVER_HEADER_READ_TIMEOUT", "30s"),
        ("PMCACHE_SERVER_MAX_CONCURRENT_STREAMS", "7"),
    ])?;
    let addr = case.addr()?;
    let mut idle_h2: Vec<(TcpStream, Instant)> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(addr)?;
            // The preface and an empty SETTINGS frame: a well-formed HTTP/2 client at rest.
            stream.write_all(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            )?;
            Ok((stream, Instant::now()))
        })
        .collect::<Result<_>>()?;
    let mut kept_alive = TcpStream::connect(addr)?;
    kept_alive.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let response = raw_http::read_one(&mut kept_alive)?;
    ensure!(response.status == 200, "healthz: HTTP {}", response.status);
    let answered = Instant::now();
    let early = idle - Duration::from_millis(200);
    for (n, (stream, opened)) in idle_h2.iter_mut().enumerate() {
        let what = format!("idle HTTP/2 connection {n}");
        let received = ensure_closed_within(stream, idle, &what)?;
        ensure!(
            opened.elapsed() >= early,
            "{what}: closed {:?} after it opened, before the idle timeout",
            opened.elapsed()
        );
        let frames = h2_frames(&received);
        ensure!(
            frames.iter().any(|(kind, _)| *kind == GOAWAY),
            "{what}: closed without a GOAWAY (frames {frames:?})"
        );
        ensure!(
            frames.iter().any(|(kind, payload)| *kind == SETTINGS
                && payload.chunks(6).any(|entry| entry == [0, 3, 0, 0, 0, 7])),
            "{what}: no SETTINGS_MAX_CONCURRENT_STREAMS = 7 (server.max_concurrent_streams) in {frames:?}"
        );
    }
    ensure_closed_within(
        &mut kept_alive,
        idle,
        "an idle HTTP/1 keep-alive connection",
    )?;
    ensure!(
        answered.elapsed() >= early,
        "the keep-alive connection closed {:?} after its answer, before the idle timeout",
        answered.elapsed()
    );
    Ok(())
}

/// A client that half-closes its side after sending the request (`shutdown(SHUT_WR)`) gets its
/// answer, 40 times out of 40.
#[test]
fn a_half_closed_request_gets_its_answer() -> Result<()> {
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    let mut answered = 0;
    for _ in 0..40 {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let received = raw_http::read_to_close(&mut stream)?;
        if raw_http::parse(&received).is_ok_and(|response| response.status == 200) {
            answered += 1;
        }
    }
    ensure!(
        answered == 40,
        "{answered} of 40 half-closed requests were answered"
    );
    Ok(())
}

/// RFC 9112 §3.2: a request with two `Host` fields, a malformed one, or one that disagrees with
/// its absolute-form target gets 400 with a reason, and never reaches a frontend.
#[test]
fn doubled_malformed_or_disagreeing_hosts_get_400() -> Result<()> {
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    let mark = case.upstream.log.mark();
    for (what, head) in [
        (
            "two Host fields",
            format!("GET /pypi/simple/demo/ HTTP/1.1\r\nHost: {addr}\r\nHost: other.example\r\n"),
        ),
        (
            "a Host with a bad port",
            "GET /pypi/simple/demo/ HTTP/1.1\r\nHost: a.example:99999\r\n".to_owned(),
        ),
        (
            "a Host with two colons",
            "GET /pypi/simple/demo/ HTTP/1.1\r\nHost: a:b:c\r\n".to_owned(),
        ),
        (
            "an unclosed IPv6 Host",
            "GET /pypi/simple/demo/ HTTP/1.1\r\nHost: [::1\r\n".to_owned(),
        ),
        (
            "a Host disagreeing with the absolute-form target",
            format!("GET http://{addr}/pypi/simple/demo/ HTTP/1.1\r\nHost: other.example\r\n"),
        ),
    ] {
        let response =
            raw_http::exchange(addr, format!("{head}Connection: close\r\n\r\n").as_bytes())
                .with_context(|| what.to_owned())?;
        ensure!(
            response.status == 400,
            "{what}: HTTP {} {:?}",
            response.status,
            response.text()
        );
        response.ensure_one_line_reason(what)?;
    }
    case.upstream
        .ensure_untouched_since(mark, "refused Host fields")?;
    let agreeing = raw_http::exchange(
        addr,
        format!("GET http://{addr}/healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    ensure!(
        agreeing.status == 200,
        "an agreeing absolute-form target: HTTP {}",
        agreeing.status
    );
    Ok(())
}

/// RFC 9113 §8.3.1: an HTTP/2 request whose `Host` disagrees with its `:authority` gets 400 with
/// a reason and never reaches a frontend; on the same connection, one whose `Host` agrees is
/// served.
#[test]
fn an_http2_host_disagreeing_with_the_authority_gets_400() -> Result<()> {
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    let mark = case.upstream.log.mark();
    let own = addr.to_string();
    let answers = h2_get(
        addr,
        &[
            ("/pypi/simple/demo/", "other.example"),
            ("/healthz", own.as_str()),
        ],
    )?;
    let disagreeing = &answers[0];
    ensure!(
        disagreeing.status == 400,
        "Host other.example with :authority {addr}: HTTP {} {:?}",
        disagreeing.status,
        disagreeing.text()
    );
    disagreeing.ensure_one_line_reason("an HTTP/2 Host disagreeing with :authority")?;
    ensure!(
        disagreeing.text().contains("other.example"),
        "the reason does not name the Host: {:?}",
        disagreeing.text()
    );
    case.upstream
        .ensure_untouched_since(mark, "an HTTP/2 Host disagreeing with :authority")?;
    ensure!(
        answers[1].status == 200,
        "an agreeing HTTP/2 Host: HTTP {} {:?}",
        answers[1].status,
        answers[1].text()
    );
    Ok(())
}

/// GETs each `(path, Host)` in turn on one HTTP/2 connection (prior knowledge, no TLS) to
/// `addr`, its `:authority` being `addr`, and reads the answers whole.
fn h2_get(addr: SocketAddr, requests: &[(&str, &str)]) -> Result<Vec<RawResponse>> {
    use http_body_util::BodyExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exchanges = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for (path, host) in requests {
            let request = hyper::Request::get(format!("http://{addr}{path}"))
                .header(hyper::header::HOST, *host)
                .body(http_body_util::Empty::<Bytes>::new())?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect();
            let body = response.into_body().collect().await?.to_bytes().to_vec();
            answers.push(RawResponse {
                status,
                headers,
                body,
            });
        }
        anyhow::Ok(answers)
    };
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), exchanges)
            .await
            .context("the HTTP/2 exchanges took over 20s")?
    })
}

/// `Forwarded` and `X-Forwarded-*` are believed only from `server.trusted_proxies`. A client
/// claiming another origin gets tarball URLs naming pmcache's own address, and so does the next
/// client (the stored rendering did not take the claimed origin); from a listed proxy the
/// reported host and scheme are used, and from another address next to it, still not.
#[test]
fn forwarded_origins_are_believed_only_from_trusted_proxies() -> Result<()> {
    let claims: [&[(&str, &str)]; 2] = [
        &[
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        &[("Forwarded", "for=192.0.2.1;host=evil.example;proto=https")],
    ];
    let untrusted = Case::start(&[])?;
    let own = format!("http://{}/npm/demo/-/demo-1.0.0.tgz", untrusted.addr()?);
    for claim in claims.iter().chain([&[][..]].iter()) {
        let tarball = untrusted.demo_tarball(claim)?;
        ensure!(
            tarball == own,
            "with {claim:?} from a client that is no proxy, the tarball URL is {tarball}"
        );
    }
    drop(untrusted);

    let behind = Case::start(&[("PMCACHE_SERVER_TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#)])?;
    for claim in claims {
        let tarball = behind.demo_tarball(claim)?;
        ensure!(
            tarball == "https://evil.example/npm/demo/-/demo-1.0.0.tgz",
            "with {claim:?} from the trusted proxy, the tarball URL is {tarball}"
        );
    }
    let addr = behind.addr()?;
    let output = behind.path("from-127.0.0.2.json");
    let mut command = std::process::Command::new("curl");
    command
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--interface",
            "127.0.0.2",
        ])
        .args([
            "--max-time",
            "10",
            "--header",
            "X-Forwarded-Host: evil.example",
        ])
        .args(["--header", "X-Forwarded-Proto: https", "--output"])
        .arg(&output)
        .arg(format!("http://{addr}/npm/demo"))
        .env_clear()
        .env("PATH", crate::support::subprocess_path()?);
    let finished =
        crate::support::run_bounded(command, &behind.path("logs"), Duration::from_secs(20))
            .context("curl is needed by this test")?;
    ensure!(
        finished.status.success(),
        "curl from 127.0.0.2:\n{}",
        finished.output()
    );
    let tarball = tarball_of(&std::fs::read(&output)?)?;
    ensure!(
        tarball == format!("http://{addr}/npm/demo/-/demo-1.0.0.tgz"),
        "from 127.0.0.2, not a trusted proxy, the tarball URL is {tarball}"
    );
    Ok(())
}

impl Case {
    /// The tarball URL of `demo@1.0.0` in the packument pmcache serves to a request with
    /// `headers`.
    fn demo_tarball(&self, headers: &[(&str, &str)]) -> Result<String> {
        let response = self.get("/npm/demo", headers)?;
        ensure!(
            response.status == 200,
            "packument with {headers:?}: HTTP {} {:?}",
            response.status,
            response.text()
        );
        tarball_of(&response.body)
    }
}

fn tarball_of(packument: &[u8]) -> Result<String> {
    let document: serde_json::Value = serde_json::from_slice(packument)?;
    let tarball = document["versions"]["1.0.0"]["dist"]["tarball"]
        .as_str()
        .context("no tarball URL for demo@1.0.0")?;
    Ok(tarball.to_owned())
}

/// `/healthz` and `/metrics` answer GET and HEAD; other methods get 405 with `Allow`.
#[test]
fn health_and_metrics_answer_get_and_head_only() -> Result<()> {
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    for path in ["/healthz", "/metrics"] {
        for method in ["GET", "HEAD"] {
            // Read raw: a HEAD answer announces a length it does not send.
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes())?;
            let received = raw_http::read_to_close(&mut stream)?;
            ensure!(
                received.starts_with(b"HTTP/1.1 200 "),
                "{method} {path}: {:?}",
                String::from_utf8_lossy(&received[..received.len().min(80)])
            );
        }
        for method in ["POST", "PUT", "DELETE"] {
            let response = raw_http::exchange(
                addr,
                format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            ensure!(
                response.status == 405 && response.header("allow") == Some("GET, HEAD"),
                "{method} {path}: HTTP {} allow {:?}",
                response.status,
                response.header("allow")
            );
        }
    }
    Ok(())
}

/// Versions whose `dist.tarball` is `file:` or `gopher:` never reach a client: neither document
/// names them or their URLs, and npm cannot install them through pmcache.
#[test]
fn npm_versions_with_non_http_tarballs_never_reach_a_client() -> Result<()> {
    let case = Case::start(&[])?;
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let response = case.get("/npm/demo", &[("accept", accept)])?;
        ensure!(response.status == 200, "{accept}: HTTP {}", response.status);
        let document: serde_json::Value = serde_json::from_slice(&response.body)?;
        let versions: Vec<&String> = document["versions"]
            .as_object()
            .context("versions")?
            .keys()
            .collect();
        ensure!(versions == ["1.0.0"], "{accept}: versions {versions:?}");
        ensure!(
            document["dist-tags"] == serde_json::json!({"latest": "1.0.0"}),
            "{accept}: dist-tags {}",
            document["dist-tags"]
        );
        let text = response.text();
        ensure!(
            !text.contains("file:") && !text.contains("gopher:"),
            "{accept}: {text}"
        );
    }
    let registry = format!("{}/npm/", case.pmcache().base_url());
    let project = case.path("project");
    std::fs::create_dir_all(&project)?;
    std::fs::write(
        project.join("package.json"),
        r#"{"name": "p", "version": "1.0.0", "private": true}"#,
    )?;
    let sandbox =
        crate::support::npm::Sandbox::create(&case.path("client"), &registry, &case.trap)?;
    let run = sandbox
        .npm(&project, &["install", "demo@0.9.0"])?
        .ensure_failure("npm install of a version with a file: tarball")?;
    ensure!(
        run.output.contains("ETARGET") || run.output.contains("No matching version"),
        "npm failed for another reason:\n{}",
        run.output
    );
    case.ensure_no_egress()
}

/// 64 clients at once PUT 16 MiB each to a route that takes no body, sending the body as fast
/// as pmcache takes it: each gets its 405 (with `Connection: close`), none manages to send its
/// whole body (pmcache never reads it: only what the kernel buffers got in before the close),
/// and pmcache's peak memory grows by less than 16 MiB.
#[test]
fn bodies_to_routes_that_take_none_are_never_read() -> Result<()> {
    const CLIENTS: usize = 64;
    const BODY: usize = 16 << 20;
    let case = Case::start(&[])?;
    let addr = case.addr()?;
    case.pmcache().reset_peak_rss()?;
    let before = case.pmcache().peak_rss_bytes()?;
    let answers: Vec<Result<(RawResponse, usize)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| scope.spawn(move || put_without_waiting(addr, BODY)))
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().expect("client thread"))
            .collect()
    });
    let mut most_sent = 0;
    for answer in answers {
        let (answer, sent) = answer?;
        most_sent = most_sent.max(sent);
        ensure!(
            sent < BODY,
            "a client sent its whole {BODY}-byte body: pmcache read it"
        );
        ensure!(
            answer.status == 405,
            "HTTP {} {:?}",
            answer.status,
            answer.text()
        );
        ensure!(
            answer.header("connection") == Some("close"),
            "no Connection: close"
        );
    }
    // A route that takes a body refuses one announced over its limit before reading it.
    let mut audit = TcpStream::connect(addr)?;
    audit.set_read_timeout(Some(Duration::from_secs(10)))?;
    audit.write_all(
        format!(
            "POST /npm/-/npm/v1/security/advisories/bulk HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            9 << 20
        )
        .as_bytes(),
    )?;
    let refused = raw_http::parse(&raw_http::read_to_close(&mut audit)?)?;
    ensure!(
        refused.status == 413,
        "an audit body over 8 MiB: HTTP {} {:?}",
        refused.status,
        refused.text()
    );
    refused.ensure_one_line_reason("an audit body over its limit")?;
    let grown = case.pmcache().peak_rss_bytes()?.saturating_sub(before);
    eprintln!(
        "at most {} KiB of a {} MiB body got in before the close; peak RSS grew {} KiB",
        most_sent >> 10,
        BODY >> 20,
        grown >> 10
    );
    ensure!(
        grown < 16 << 20,
        "peak RSS grew by {} MiB for bodies pmcache had no use for",
        grown >> 20
    );
    Ok(())
}

/// PUTs a body of `size` bytes to a route that takes none, writing it while the answer is read
/// (as a client that does not wait for `100 Continue` does): the answer, and how many bytes of
/// the body got written before pmcache closed the connection.
fn put_without_waiting(addr: SocketAddr, size: usize) -> Result<(RawResponse, usize)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Past the close a write fails at once; a write blocked on full buffers gives up.
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream.try_clone()?;
    let sending = std::thread::spawn(move || {
        let head = format!(
            "PUT /pypi/simple/x/ HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {size}\r\n\r\n"
        );
        if writer.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < size {
            match writer.write(&chunk[..chunk.len().min(size - sent)]) {
                Ok(written) if written > 0 => sent += written,
                _ => break,
            }
        }
        sent
    });
    let received = raw_http::read_to_close(&mut stream)?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = sending.join().expect("sending thread");
    Ok((raw_http::parse(&received)?, sent))
}

/// A project page that drips a byte every 200 ms (each within `read_timeout`): with no cached
/// copy its clients get a 504 once `upstream.document_timeout` has passed; with one, they get
/// the cached copy at `stale_timeout`.
#[test]
fn a_dripping_document_is_cut_off_at_the_document_timeout() -> Result<()> {
    let case = Case::start(&[
        ("PMCACHE_UPSTREAM_DOCUMENT_TIMEOUT", "3s"),
        ("PMCACHE_UPSTREAM_READ_TIMEOUT", "2s"),
        ("PMCACHE_PYPI_METADATA_TTL", "0s"),
    ])?;
    let started = Instant::now();
    let response = case.get("/pypi/simple/drip/", &[])?;
    let waited = started.elapsed();
    ensure!(
        response.status == 504,
        "HTTP {} {:?}",
        response.status,
        response.text()
    );
    ensure!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(8),
        "answered after {waited:?}, not at the 3s document timeout"
    );

    let fresh = case.get("/pypi/simple/demo/", &[])?;
    ensure!(fresh.status == 200, "demo: HTTP {}", fresh.status);
    case.upstream
        .drip
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let stale = case.get("/pypi/simple/demo/", &[])?;
    ensure!(stale.status == 200, "stale demo: HTTP {}", stale.status);
    ensure!(
        stale.header("x-pmcache-cache") == Some("stale"),
        "{:?}",
        stale.header("x-pmcache-cache")
    );
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "the cached copy took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Four gzip bombs fetched at once, two expanding 1,000-fold and two 50-fold (which only the
/// size limit stops, 128 MiB into each), with the default limits: each client gets a 502 naming
/// the reason, pmcache's peak RSS stays under 200 MB, and no temp file is left behind.
#[test]
fn four_gzip_bombs_at_once_keep_memory_bounded() -> Result<()> {
    let case = Case::start(&[])?;
    // Built before the clock starts: the bombs are made on first use.
    drop(gzip_bomb(false));
    case.pmcache().reset_peak_rss()?;
    let before = case.pmcache().peak_rss_bytes()?;
    let case = &case;
    let answers = std::thread::scope(|scope| {
        let fetches: Vec<_> = ["bomb-1", "bomb-2", "bomb-3-low", "bomb-4-low"]
            .map(|name| scope.spawn(move || case.get(&format!("/pypi/simple/{name}/"), &[])))
            .into_iter()
            .collect();
        fetches
            .into_iter()
            .map(|fetch| fetch.join().expect("fetch thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    for (answer, reason) in answers
        .iter()
        .zip(["200-fold", "200-fold", "limit", "limit"])
    {
        ensure!(
            answer.status == 502 && answer.text().contains(reason),
            "HTTP {} {:?}, expected 502 naming {reason:?}",
            answer.status,
            answer.text()
        );
    }
    let peak = case.pmcache().peak_rss_bytes()?;
    eprintln!(
        "peak RSS {} MB before, {} MB after four gzip bombs of {BOMB_INFLATED_MIB} MiB",
        before / 1_000_000,
        peak / 1_000_000
    );
    ensure!(
        peak < 200_000_000,
        "peak RSS {} MB with four gzip bombs",
        peak / 1_000_000
    );
    let temp = case.path("data/tmp");
    let left: Vec<_> = match std::fs::read_dir(&temp) {
        Ok(entries) => entries.collect::<std::io::Result<_>>()?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    ensure!(left.is_empty(), "temp files left behind: {left:?}");
    Ok(())
}
