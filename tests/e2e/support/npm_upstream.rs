//! A fixture npm registry on loopback, under the path prefix `/registry/`, answering like the
//! intermediary this machine reaches instead of the real registry: full packuments as
//! `application/json` whatever the client accepts (never abbreviated documents), no `ETag`,
//! `Last-Modified` or `Cache-Control`, and an empty 404 for unknown names. Tarball URLs in the
//! packuments are absolute on the fixture and conventional (`<name>/-/<basename>-<version>.tgz`).
//! It also answers `-/ping`, `-/v1/search` and the bulk advisories endpoint, which tests can turn
//! off (404, as the intermediary does for search). It counts every request by kind and injects
//! faults per tarball at run time: corrupted bytes or throttling, or a whole-server stop and
//! restart on the same port.
//!
//! It serves one of two registries: the small hand-made fixture over plain HTTP/1.1
//! ([`NpmUpstream::start`]), or the generated tree of several hundred packages over HTTPS with
//! HTTP/2 by ALPN, from the tests' CA, as the real registry is served
//! ([`NpmUpstream::start_tree`]). Either can hold every answer back by a per-response latency.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

pub use super::fixture_server::Fault;
use super::fixture_server::{
    Body, Faults, FixtureServer, Handler, RequestLog, corrupt, empty_body, full_body, status_only,
    streamed_body,
};
use super::npm_packages::{Packages, Tarball, packages};
use super::npm_tree::tree;
use super::tls::test_ca;

/// The path prefix the registry lives under.
const PREFIX: &str = "/registry/";
/// What the fixture answers on `-/v1/search`.
pub const SEARCH_RESULT: &str = r#"{"objects":[{"package":{"name":"demo-left","version":"2.0.0","description":"A fixture dependency with several versions"},"score":{"final":1,"detail":{"quality":1,"popularity":1,"maintenance":1}},"searchScore":1}],"total":1,"time":"Sat Mar 01 2025 10:00:00 GMT+0000 (Coordinated Universal Time)"}"#;
/// What the fixture answers on a bulk advisories POST.
pub const ADVISORIES_RESULT: &str = r#"{"demo-left":[]}"#;

/// What a request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A packument, by decoded package name (known or not).
    Packument(String),
    /// A tarball, by file name.
    Tarball(String),
    /// `-/v1/search`.
    Search,
    /// `-/npm/v1/security/advisories/bulk`.
    Advisories,
    /// Anything else (`-/ping`, other paths, other methods).
    Other,
}

/// One request as the registry saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    /// Path and query, as sent.
    pub target: String,
    pub kind: Kind,
    pub body: Bytes,
    /// The request carried an `Authorization` header.
    pub authorization: bool,
}

impl fmt::Display for Logged {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {} ({:?}{})",
            self.method,
            self.target,
            self.kind,
            if self.body.is_empty() {
                String::new()
            } else {
                format!(", {} body bytes", self.body.len())
            }
        )
    }
}

/// State shared by the server and the test.
struct State {
    packages: &'static Packages,
    /// Each package's full packument, rendered once.
    packuments: HashMap<String, Bytes>,
    /// Versions left out of their packument (`name@version`), to publish them later.
    hidden: Mutex<HashSet<String>>,
    /// Publish times given at run time (`name@version`): an RFC 3339 time, or None to leave
    /// the version out of `time`.
    retimed: Mutex<HashMap<String, Option<String>>>,
    api_enabled: AtomicBool,
    faults: Faults,
    latency: Mutex<Latency>,
    log: RequestLog<Logged>,
}

/// How long the registry holds each answer back before its head goes out: `min`, plus a share of
/// `max - min` fixed per request target, so that the same request always waits as long (a CDN's
/// time to first byte varies by object, not by the clock).
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub min: Duration,
    pub max: Duration,
}

impl Latency {
    /// The wait for `target`.
    fn for_target(&self, target: &str) -> Duration {
        let spread = self.max.saturating_sub(self.min);
        if spread.is_zero() {
            return self.min;
        }
        // FNV-1a: a stable hash, unlike std's randomly keyed one.
        let hash = target
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        self.min + spread.mul_f64((hash % 1000) as f64 / 1000.0)
    }
}

/// The running fixture. Dropping it stops the server and prints its request log.
pub struct NpmUpstream {
    state: Arc<State>,
    server: FixtureServer,
}

impl NpmUpstream {
    /// Starts the small fixture registry on `127.0.0.1:0`, over plain HTTP/1.1.
    pub fn start() -> Result<Self> {
        let packages = packages()?;
        let bound = FixtureServer::bind("npm-upstream", 1)?;
        let base = format!("http://{}{PREFIX}", bound.addrs()[0]);
        let packuments = packages
            .packages
            .keys()
            .map(|name| Ok((name.clone(), render_packument(packages, name, &base)?)))
            .collect::<Result<_>>()?;
        Ok(Self::serve(bound, packages, packuments))
    }

    /// Starts the generated tree ([`super::npm_tree`]) on `127.0.0.1:0`, over HTTPS with HTTP/2
    /// by ALPN (HTTP/1.1 for clients that do not offer `h2`), with the certificate of
    /// [`test_ca`]: clients need its CA file to connect.
    pub fn start_tree() -> Result<Self> {
        let tree = tree()?;
        let bound =
            FixtureServer::bind("npm-tree-upstream", 1)?.with_tls(test_ca()?.server_config());
        let base = format!("https://{}{PREFIX}", bound.addrs()[0]);
        let packuments = tree
            .packages
            .packages
            .keys()
            .map(|name| Ok((name.clone(), tree.packument(name, &base)?)))
            .collect::<Result<_>>()?;
        Ok(Self::serve(bound, &tree.packages, packuments))
    }

    fn serve(
        bound: super::fixture_server::Bound,
        packages: &'static Packages,
        packuments: HashMap<String, Bytes>,
    ) -> Self {
        let state = Arc::new(State {
            packages,
            packuments,
            hidden: Mutex::default(),
            retimed: Mutex::default(),
            api_enabled: AtomicBool::new(true),
            faults: Faults::default(),
            latency: Mutex::default(),
            log: RequestLog::default(),
        });
        let server = bound.serve(vec![handler(&state)]);
        Self { state, server }
    }

    /// `http://127.0.0.1:PORT/registry/` (`https://` for the tree): the registry base URL to
    /// configure as upstream.
    pub fn registry_url(&self) -> String {
        format!("{}{PREFIX}", self.server.base_url(0))
    }

    /// Holds every later answer back by `latency` (none by default).
    pub fn set_latency(&self, latency: Latency) {
        *super::fixture_server::lock(&self.state.latency) = latency;
    }

    /// Connections the registry accepted, ever.
    pub fn connections(&self) -> usize {
        self.server.connections(0)
    }

    /// Requests the registry received over HTTP/2, ever.
    pub fn http2_requests(&self) -> usize {
        self.server.http2_requests(0)
    }

    /// The most requests the registry had at once that it had not answered yet.
    pub fn peak_in_flight(&self) -> usize {
        self.server.peak_in_flight(0)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr(0)
    }

    /// The full packument of `name` exactly as the registry serves it.
    pub fn packument(&self, name: &str) -> Option<Bytes> {
        self.state.packuments.get(name).cloned()
    }

    /// Leaves `version` out of `name`'s packument until [`NpmUpstream::publish`].
    pub fn hide(&self, name: &str, version: &str) {
        let mut hidden = self.state.hidden.lock().unwrap_or_else(|p| p.into_inner());
        hidden.insert(format!("{name}@{version}"));
    }

    /// Says in `name`'s packument that `version` was published at `time` (RFC 3339), or, with
    /// None, leaves it out of `time`.
    pub fn retime(&self, name: &str, version: &str, time: Option<&str>) {
        let mut retimed = self.state.retimed.lock().unwrap_or_else(|p| p.into_inner());
        retimed.insert(format!("{name}@{version}"), time.map(str::to_owned));
    }

    /// Publishes every hidden version.
    pub fn publish(&self) {
        self.state
            .hidden
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Injects `fault` into every later response for the tarball `filename`.
    pub fn set_fault(&self, filename: &str, fault: Fault) {
        self.state.faults.set(filename, fault);
    }

    /// Serves `filename` normally again.
    pub fn clear_fault(&self, filename: &str) {
        self.state.faults.clear(filename);
    }

    /// Whether `-/v1/search` and the advisories endpoint answer (else they 404).
    pub fn set_api_enabled(&self, enabled: bool) {
        self.state.api_enabled.store(enabled, Ordering::SeqCst);
    }

    /// The exact bytes served for `tarball` under [`Fault::Corrupt`].
    pub fn corrupted(tarball: &Tarball) -> Bytes {
        corrupt(&tarball.bytes)
    }

    /// A mark for the `*_since` counters: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        self.state.log.mark()
    }

    /// Every request after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<Logged> {
        self.state.log.since(mark)
    }

    /// Tarball requests (any file) after `mark`.
    pub fn tarball_requests_since(&self, mark: usize) -> usize {
        self.state
            .log
            .count_since(mark, |logged| matches!(logged.kind, Kind::Tarball(_)))
    }

    /// Requests for the tarball `filename`, ever.
    pub fn tarball_requests(&self, filename: &str) -> usize {
        self.count(&Kind::Tarball(filename.to_owned()))
    }

    /// Requests for `tarball` at its conventional URL (scope slash plain or escaped), ever: unlike
    /// [`Self::tarball_requests`], it tells apart packages whose scopes differ.
    pub fn requests_for_tarball(&self, tarball: &Tarball) -> usize {
        let wanted = format!("{PREFIX}{}", tarball.registry_path());
        self.state.log.count(|logged| {
            let path = logged.target.split('?').next().unwrap_or_default();
            matches!(logged.kind, Kind::Tarball(_)) && percent_decode(path) == wanted
        })
    }

    /// Requests for the packument of `name`, ever.
    pub fn packument_requests(&self, name: &str) -> usize {
        self.count(&Kind::Packument(name.to_owned()))
    }

    /// Requests of `kind`, ever.
    pub fn count(&self, kind: &Kind) -> usize {
        self.state.log.count(|logged| &logged.kind == kind)
    }

    /// Every request so far, one per line, for messages.
    pub fn request_log(&self) -> String {
        self.state.log.render()
    }

    /// Closes the listener and every open connection: new connections are refused.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Listens again on the same port after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        self.server.restart()
    }
}

impl Drop for NpmUpstream {
    fn drop(&mut self) {
        self.stop();
        self.state.log.print("fixture npm registry");
    }
}

/// How the registry answers, on `state`.
/// The packument with the publish times given at run time.
fn retimed(state: &State, name: &str, document: &Bytes) -> Bytes {
    let retimed = state.retimed.lock().unwrap_or_else(|p| p.into_inner());
    let prefix = format!("{name}@");
    let times: Vec<(&str, &Option<String>)> = retimed
        .iter()
        .filter_map(|(key, time)| Some((key.strip_prefix(&prefix)?, time)))
        .collect();
    if times.is_empty() {
        return document.clone();
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(document).expect("fixture packuments are JSON");
    if let Some(map) = value
        .get_mut("time")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (version, time) in times {
            match time {
                Some(time) => map.insert(version.to_owned(), time.clone().into()),
                None => map.remove(version),
            };
        }
    }
    Bytes::from(serde_json::to_vec(&value).expect("JSON serialises"))
}

/// The packument as currently published: hidden versions removed from `versions` and `time`.
fn without_hidden(state: &State, name: &str, document: &Bytes) -> Bytes {
    let hidden = state.hidden.lock().unwrap_or_else(|p| p.into_inner());
    let prefix = format!("{name}@");
    let versions: Vec<&str> = hidden
        .iter()
        .filter_map(|h| h.strip_prefix(&prefix))
        .collect();
    if versions.is_empty() {
        return document.clone();
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(document).expect("fixture packuments are JSON");
    for key in ["versions", "time"] {
        if let Some(map) = value
            .get_mut(key)
            .and_then(serde_json::Value::as_object_mut)
        {
            for version in &versions {
                map.remove(*version);
            }
        }
    }
    Bytes::from(serde_json::to_vec(&value).expect("JSON serialises"))
}

fn handler(state: &Arc<State>) -> Handler {
    let state = Arc::clone(state);
    super::fixture_server::handler(move |request| {
        let state = Arc::clone(&state);
        async move { respond(&state, request).await }
    })
}

/// The full packument of `name`, shaped like the registry's (and the intermediary's, plus the
/// fields the intermediary strips: `_rev`, `readme`, `maintainers`…), with tarball URLs on `base`.
fn render_packument(packages: &Packages, name: &str, base: &str) -> Result<Bytes> {
    let package = packages.package(name)?;
    let mut versions = serde_json::Map::new();
    let mut time = serde_json::Map::new();
    time.insert("created".to_owned(), package.created.clone().into());
    time.insert("modified".to_owned(), package.modified.clone().into());
    for (version, tarball) in &package.versions {
        let mut manifest = serde_json::json!({
            "name": name,
            "version": version,
            "description": package.description,
            "main": "index.js",
            "license": "MIT",
            "_id": format!("{name}@{version}"),
            "_nodeVersion": "20.20.2",
            "_npmVersion": "11.19.1",
            "_npmUser": {"name": "demo"},
            "_hasShrinkwrap": false,
            "scripts": {"test": "node index.js"},
            "dist": {
                "integrity": tarball.integrity,
                "shasum": tarball.shasum,
                "tarball": format!("{base}{}", tarball.registry_path()),
                "fileCount": tarball.file_count,
                "unpackedSize": tarball.unpacked_size,
            },
        });
        if !tarball.dependencies.is_empty() {
            manifest["dependencies"] = serde_json::Value::Object(tarball.dependencies.clone());
        }
        versions.insert(version.clone(), manifest);
        time.insert(version.clone(), tarball.time.clone().into());
    }
    let document = serde_json::json!({
        "_id": name,
        "_rev": "7-5a0d2c3e9b1f4a6c8d7e0f1a2b3c4d5e",
        "name": name,
        "description": package.description,
        "dist-tags": package.dist_tags,
        "versions": versions,
        "time": time,
        "maintainers": [{"name": "demo"}],
        "license": "MIT",
        "readme": format!("# {name}\n\n{}\n", package.description),
        "readmeFilename": "README.md",
    });
    Ok(Bytes::from(serde_json::to_vec(&document)?))
}

async fn respond(state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |target| target.to_string(),
    );
    let path = request.uri().path().to_owned();
    let authorization = request.headers().contains_key(http::header::AUTHORIZATION);
    let gzipped = request
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let kind = classify(&path, &method);
    // As a registry reads it: gzip only when the request says so.
    let json_body = readable_json(&body, gzipped);
    let latency = super::fixture_server::lock(&state.latency).for_target(&target);
    state.log.push(Logged {
        method: method.clone(),
        target,
        kind: kind.clone(),
        body,
        authorization,
    });
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut response = match (&kind, &method) {
        (Kind::Packument(name), &Method::GET | &Method::HEAD) => match state.packuments.get(name) {
            Some(document) => {
                let published = retimed(state, name, &without_hidden(state, name, document));
                json(StatusCode::OK, published)
            }
            None => status_only(StatusCode::NOT_FOUND),
        },
        (Kind::Tarball(_), &Method::GET | &Method::HEAD) => tarball_response(state, &path),
        (Kind::Search, &Method::GET) if state.api_enabled.load(Ordering::SeqCst) => {
            json(StatusCode::OK, Bytes::from_static(SEARCH_RESULT.as_bytes()))
        }
        (Kind::Advisories, &Method::POST) if !json_body => status_only(StatusCode::BAD_REQUEST),
        (Kind::Advisories, &Method::POST) if state.api_enabled.load(Ordering::SeqCst) => json(
            StatusCode::OK,
            Bytes::from_static(ADVISORIES_RESULT.as_bytes()),
        ),
        (Kind::Other, &Method::GET | &Method::HEAD) if path == format!("{PREFIX}-/ping") => {
            json(StatusCode::OK, Bytes::from_static(b"{}"))
        }
        (_, &Method::GET | &Method::HEAD | &Method::POST) => status_only(StatusCode::NOT_FOUND),
        _ => status_only(StatusCode::METHOD_NOT_ALLOWED),
    };
    if method == Method::HEAD {
        *response.body_mut() = empty_body();
    }
    response
}

/// Whether a request body is a JSON document, gunzipped first only when `gzipped` (its
/// `Content-Encoding` says so).
fn readable_json(body: &[u8], gzipped: bool) -> bool {
    let decoded;
    let json = match gzipped {
        true => {
            let mut text = Vec::new();
            if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut text)
                .is_err()
            {
                return false;
            }
            decoded = text;
            decoded.as_slice()
        }
        false => body,
    };
    serde_json::from_slice::<serde_json::Value>(json).is_ok()
}

/// What `path` asks for, by npm's URL rules (protocol brief section 3): below the prefix, `-/…`
/// is an API endpoint, `<name>/-/<file>` a tarball, `<name>` a packument (`@scope/name` with the
/// slash plain or escaped in either case).
fn classify(path: &str, method: &Method) -> Kind {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Kind::Other;
    };
    if let Some(endpoint) = rest.strip_prefix("-/") {
        return match (endpoint, method) {
            ("v1/search", &Method::GET) => Kind::Search,
            ("npm/v1/security/advisories/bulk", &Method::POST) => Kind::Advisories,
            _ => Kind::Other,
        };
    }
    let decoded = percent_decode(rest);
    if let Some((_, file)) = decoded.split_once("/-/") {
        return Kind::Tarball(file.to_owned());
    }
    let segments = decoded.split('/').count();
    let scoped = decoded.starts_with('@');
    if !decoded.is_empty() && (segments == 1 && !scoped || segments == 2 && scoped) {
        Kind::Packument(decoded)
    } else {
        Kind::Other
    }
}

/// Decodes every `%XX` escape once; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escape) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The tarball at `path`, when it is exactly the URL its packument publishes (scope slash plain
/// or escaped).
fn tarball_response(state: &Arc<State>, path: &str) -> Response<Body> {
    let decoded = percent_decode(path.strip_prefix(PREFIX).unwrap_or_default());
    let Some((name, file)) = decoded.split_once("/-/") else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let Some(tarball) = state.packages.by_filename(name, file) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let fault = state.faults.get(&tarball.filename);
    Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, tarball.bytes.len())
        .body(tarball_body(tarball, fault))
        .expect("static headers are valid")
}

/// The tarball's body with `fault` applied.
fn tarball_body(tarball: &Tarball, fault: Option<Fault>) -> Body {
    streamed_body(&tarball.bytes, fault, |_| {})
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .body(full_body(body))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_npm_urls() -> anyhow::Result<()> {
        for (path, expected) in [
            (
                "/registry/demo-left",
                Kind::Packument("demo-left".to_owned()),
            ),
            (
                "/registry/@demo%2fscoped",
                Kind::Packument("@demo/scoped".to_owned()),
            ),
            (
                "/registry/@demo%2Fscoped",
                Kind::Packument("@demo/scoped".to_owned()),
            ),
            (
                "/registry/@demo/scoped",
                Kind::Packument("@demo/scoped".to_owned()),
            ),
            (
                "/registry/@demo/scoped/-/scoped-1.0.0.tgz",
                Kind::Tarball("scoped-1.0.0.tgz".to_owned()),
            ),
            (
                "/registry/demo-left/-/demo-left-1.2.0.tgz",
                Kind::Tarball("demo-left-1.2.0.tgz".to_owned()),
            ),
            ("/registry/demo-left/1.2.0", Kind::Other),
            ("/registry/-/v1/search", Kind::Search),
            ("/elsewhere/demo-left", Kind::Other),
        ] {
            let kind = classify(path, &Method::GET);
            anyhow::ensure!(
                kind == expected,
                "{path} -> {kind:?}, expected {expected:?}"
            );
        }
        Ok(())
    }
}
