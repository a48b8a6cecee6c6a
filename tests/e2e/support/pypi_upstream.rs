//! A fixture PyPI upstream on loopback: a simple-API index server (PEP 503 HTML or PEP 691 JSON,
//! warehouse-like) and a separate files server that the pages link to absolutely, as on the real
//! service. It serves a catalogue of [`Dists`]: the small hand-made fixture, or the hundred
//! generated projects of [`super::pypi_projects`] with pages over a megabyte; over plain HTTP/1.1,
//! or over HTTPS with HTTP/2 by ALPN; optionally after a delay before each response's first
//! byte, as a distant service answers. It counts every request, and injects faults per file at
//! run time: corrupted bytes, a connection cut half way, throttling, or a whole-server stop and
//! restart on the same ports.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
};
use hyper::{Method, Request, Response, StatusCode};

use super::dists::{Dist, Dists};
pub use super::fixture_server::Fault;
use super::fixture_server::{
    Body, Faults, FixtureServer, Handler, RequestLog, corrupt, empty_body, full_body, lock,
    status_only, streamed_body,
};
use super::tls::TestCa;

/// PEP 691 JSON media type.
const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";
const SERIAL: u64 = 4242;

/// How the index server renders project pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    /// PEP 503 HTML only (`text/html`), whatever the client accepts.
    Html,
    /// PEP 691 JSON (API 1.1, with `versions` and `size`) when the client accepts it, else HTML.
    Json,
}

/// Which of the two servers saw a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Index,
    Files,
}

impl Server {
    /// Its listener's position in the [`FixtureServer`].
    fn listener(self) -> usize {
        match self {
            Self::Index => 0,
            Self::Files => 1,
        }
    }
}

/// How to start a [`PypiUpstream`].
pub struct Options {
    pub format: PageFormat,
    /// What it serves.
    pub dists: &'static Dists,
    /// Serve HTTPS (HTTP/2 by ALPN) with this CA's certificate; plain HTTP/1.1 when `None`.
    pub tls: Option<&'static TestCa>,
    /// How long every response waits before its head is sent: a distant service's latency.
    pub first_byte_delay: Duration,
}

#[derive(Clone, Debug)]
struct Logged {
    server: Server,
    method: Method,
    path: String,
}

impl fmt::Display for Logged {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?} {} {}", self.server, self.method, self.path)
    }
}

/// State shared by both servers and the test.
struct State {
    format: PageFormat,
    dists: &'static Dists,
    files_base: String,
    first_byte_delay: Duration,
    pages: Mutex<Pages>,
    faults: Faults,
    log: RequestLog<Logged>,
    sent: Mutex<HashMap<String, u64>>,
    /// While true, both servers accept connections and read requests but answer none.
    hanging: tokio::sync::watch::Sender<bool>,
    /// Files marked yanked (PEP 592) on their project pages.
    yanked: Mutex<HashSet<String>>,
    /// Upload times given at run time (RFC 3339), by filename.
    retimed: Mutex<HashMap<String, Option<String>>>,
}

/// Project pages, rendered on first request: (normalised name, JSON) -> page.
type Pages = HashMap<(String, bool), Arc<OnceLock<Page>>>;

/// A rendered project page and its ETag.
struct Page {
    body: Bytes,
    etag: String,
}

/// The running fixture: the index server, then the files server. Dropping it stops both.
pub struct PypiUpstream {
    state: Arc<State>,
    server: FixtureServer,
}

impl PypiUpstream {
    /// Starts both servers on `127.0.0.1:0`, serving the small hand-made fixture over HTTP/1.1.
    pub fn start(format: PageFormat) -> Result<Self> {
        Self::start_with(Options {
            format,
            dists: super::dists::dists()?,
            tls: None,
            first_byte_delay: Duration::ZERO,
        })
    }

    /// Starts both servers on `127.0.0.1:0` as `options` say.
    pub fn start_with(options: Options) -> Result<Self> {
        let mut bound = FixtureServer::bind("pypi-upstream", 2)?;
        if let Some(ca) = options.tls {
            bound = bound.with_tls(ca.server_config());
        }
        let state = Arc::new(State {
            format: options.format,
            dists: options.dists,
            files_base: bound.base_url(Server::Files.listener()),
            first_byte_delay: options.first_byte_delay,
            pages: Mutex::default(),
            faults: Faults::default(),
            log: RequestLog::default(),
            sent: Mutex::default(),
            hanging: tokio::sync::watch::Sender::new(false),
            yanked: Mutex::default(),
            retimed: Mutex::default(),
        });
        let server = bound.serve(vec![
            handler(Server::Index, &state),
            handler(Server::Files, &state),
        ]);
        Ok(Self { state, server })
    }

    /// `http(s)://127.0.0.1:PORT/simple/`: the simple-index base URL to configure as upstream.
    pub fn index_url(&self) -> String {
        format!("{}/simple/", self.server.base_url(Server::Index.listener()))
    }

    pub fn index_addr(&self) -> SocketAddr {
        self.server.addr(0)
    }

    /// The files server: another port, as files are on another host than the index on the real
    /// service.
    pub fn files_addr(&self) -> SocketAddr {
        self.server.addr(1)
    }

    /// `PMCACHE_UPSTREAM_TRUSTED_HOSTS` for this fixture: its files server is on loopback but
    /// not the configured upstream, so pmcache's address policy must be told about it.
    pub fn trusted_hosts(&self) -> String {
        super::pmcache::trusted_hosts(&[self.files_addr()])
    }

    /// From now on, both servers accept connections and read requests but answer none, until
    /// [`Self::answer_again`]; requests left waiting are answered then, as they stand then.
    pub fn hang(&self) {
        self.state.hanging.send_replace(true);
    }

    /// Answers again, the requests left hanging included.
    pub fn answer_again(&self) {
        self.state.hanging.send_replace(false);
    }

    /// Marks `filename` yanked (PEP 592) on its project page from now on.
    pub fn yank(&self, filename: &str) {
        lock(&self.state.yanked).insert(filename.to_owned());
        // Its project's pages change: render them again when next asked.
        if let Ok(dist) = self.state.dists.get(filename) {
            lock(&self.state.pages).retain(|(project, _), _| *project != dist.project);
        }
    }

    /// Says on its project page (JSON) that `filename` was uploaded at `time` (RFC 3339), or,
    /// with None, leaves its `upload-time` out (PEP 700 makes it optional).
    pub fn retime(&self, filename: &str, time: Option<&str>) {
        lock(&self.state.retimed).insert(filename.to_owned(), time.map(str::to_owned));
        if let Ok(dist) = self.state.dists.get(filename) {
            lock(&self.state.pages).retain(|(project, _), _| *project != dist.project);
        }
    }

    /// The upstream URL of `filename`, as its project page links it.
    pub fn file_url(&self, filename: &str) -> Result<String> {
        Ok(file_url(&self.state, self.state.dists.get(filename)?))
    }

    /// Injects `fault` into every later response for the artifact `filename`.
    pub fn set_fault(&self, filename: &str, fault: Fault) {
        self.state.faults.set(filename, fault);
    }

    /// Serves `filename` normally again.
    pub fn clear_fault(&self, filename: &str) {
        self.state.faults.clear(filename);
    }

    /// The exact bytes served for `filename` under [`Fault::Corrupt`].
    pub fn corrupted(dist: &Dist) -> Result<Bytes> {
        Ok(corrupt(dist.bytes()?))
    }

    /// TCP connections `server` accepted, ever.
    pub fn connections(&self, server: Server) -> usize {
        self.server.connections(server.listener())
    }

    /// Connections to `server` that carried at least one request, ever.
    pub fn connections_used(&self, server: Server) -> usize {
        self.server.connections_used(server.listener())
    }

    /// Requests `server` received over HTTP/2, ever.
    pub fn http2_requests(&self, server: Server) -> usize {
        self.server.http2_requests(server.listener())
    }

    /// Requests `server` received over HTTP/1.x, ever.
    pub fn http1_requests(&self, server: Server) -> usize {
        self.server.http1_requests(server.listener())
    }

    /// The most requests `server` had at once before answering them.
    pub fn peak_in_flight(&self, server: Server) -> usize {
        self.server.peak_in_flight(server.listener())
    }

    /// The size of every project page rendered so far, by normalised name (the larger of its
    /// renderings).
    pub fn page_sizes(&self) -> HashMap<String, usize> {
        let mut sizes: HashMap<String, usize> = HashMap::new();
        for ((project, _), cell) in lock(&self.state.pages).iter() {
            if let Some(page) = cell.get() {
                let size = sizes.entry(project.clone()).or_default();
                *size = (*size).max(page.body.len());
            }
        }
        sizes
    }

    /// Requests for exactly `path` (no query), on either server, ever.
    pub fn requests_for(&self, path: &str) -> usize {
        self.state.log.count(|logged| logged.path == path)
    }

    /// Requests to `server` per path after `mark`, for finding what was asked more than once.
    pub fn requests_per_path_since(&self, mark: usize, server: Server) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for logged in self.state.log.since(mark) {
            if logged.server == server {
                *counts.entry(logged.path).or_default() += 1;
            }
        }
        counts
    }

    /// A mark for [`Self::files_requests_since`]: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        self.state.log.mark()
    }

    /// Requests to the files server (artifacts and `.metadata`) after `mark`.
    pub fn files_requests_since(&self, mark: usize) -> usize {
        self.requests_since(mark, Server::Files)
    }

    /// Requests to the index server (pages) after `mark`.
    pub fn index_requests_since(&self, mark: usize) -> usize {
        self.requests_since(mark, Server::Index)
    }

    fn requests_since(&self, mark: usize, server: Server) -> usize {
        self.state
            .log
            .count_since(mark, |logged| logged.server == server)
    }

    /// Requests for the artifact `filename` itself (not its `.metadata`), ever.
    pub fn artifact_requests(&self, filename: &str) -> usize {
        let suffix = format!("/{filename}");
        self.state
            .log
            .count(|logged| logged.server == Server::Files && logged.path.ends_with(&suffix))
    }

    /// Body bytes of `filename` handed to the network so far, over all responses.
    pub fn bytes_sent(&self, filename: &str) -> u64 {
        lock(&self.state.sent).get(filename).copied().unwrap_or(0)
    }

    /// Every request so far, one per line, for messages.
    pub fn request_log(&self) -> String {
        self.state.log.render()
    }

    /// Closes both listeners and every open connection: new connections are refused.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Listens again on the same two ports after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        self.server.restart()
    }
}

impl Drop for PypiUpstream {
    fn drop(&mut self) {
        self.stop();
        self.state.log.print("fixture PyPI upstream");
    }
}

/// How `server` answers, on `state`.
fn handler(server: Server, state: &Arc<State>) -> Handler {
    let state = Arc::clone(state);
    super::fixture_server::handler(move |request| {
        let state = Arc::clone(&state);
        async move {
            let mut hanging = state.hanging.subscribe();
            // The sender lives in `state`: this cannot fail while the request is held.
            let _ = hanging.wait_for(|hanging| !*hanging).await;
            if !state.first_byte_delay.is_zero() {
                tokio::time::sleep(state.first_byte_delay).await;
            }
            respond(server, &state, request)
        }
    })
}

fn respond(server: Server, state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    state.log.push(Logged {
        server,
        method: request.method().clone(),
        path: path.clone(),
    });
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut response = match server {
        Server::Index => index_response(state, &request, &path),
        Server::Files => files_response(state, &path),
    };
    if request.method() == Method::HEAD {
        *response.body_mut() = empty_body();
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Index server

fn index_response(state: &State, request: &Request<Incoming>, path: &str) -> Response<Body> {
    let Some(rest) = path.strip_prefix("/simple/") else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let json = state.format == PageFormat::Json && accepts_json(request);
    if rest.is_empty() {
        let body = if json {
            root_json(state)
        } else {
            root_html(state)
        };
        let etag = etag(body.as_bytes());
        return page(request, json, Bytes::from(body), &etag);
    }
    let name = rest.trim_end_matches('/');
    if name.contains('/') {
        return status_only(StatusCode::NOT_FOUND);
    }
    let normalized = normalize(name);
    // Warehouse: 301 to the normalised, slashed route.
    if normalized != name || !rest.ends_with('/') {
        return redirect(&format!("/simple/{normalized}/"));
    }
    let Some((body, etag)) = project_page(state, &normalized, json) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    page(request, json, body, &etag)
}

/// The page of `project` (normalised), rendered once per upstream; `None` for an unknown project.
fn project_page(state: &State, project: &str, json: bool) -> Option<(Bytes, String)> {
    if state.dists.of_project(project).is_empty() {
        return None;
    }
    let cell = Arc::clone(
        lock(&state.pages)
            .entry((project.to_owned(), json))
            .or_default(),
    );
    // Rendered outside the map's lock: a big page takes a while, and other pages need not wait.
    let page = cell.get_or_init(|| {
        let files = state.dists.of_project(project);
        let body = if json {
            project_json(state, project, &files)
        } else {
            project_html(state, project, &files)
        };
        Page {
            etag: etag(body.as_bytes()),
            body: Bytes::from(body),
        }
    });
    Some((page.body.clone(), page.etag.clone()))
}

/// Whether `Accept` lists a PEP 691 JSON type with a non-zero q-value.
fn accepts_json(request: &Request<Incoming>) -> bool {
    let Some(accept) = request
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    accept.split(',').any(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        let zero = parts.any(|parameter| {
            parameter
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                == Some(0.0)
        });
        !zero
            && (media_type == JSON_TYPE || media_type == "application/vnd.pypi.simple.latest+json")
    })
}

/// A strong ETag for `body`, shaped like warehouse's.
fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &super::sha256_hex(body)[..22])
}

/// A page with warehouse's caching headers; `If-None-Match` on the same ETag gets a 304.
fn page(request: &Request<Incoming>, json: bool, body: Bytes, etag: &str) -> Response<Body> {
    let content_type = if json {
        JSON_TYPE
    } else {
        "text/html; charset=utf-8"
    };
    let not_modified = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let builder = Response::builder()
        .header(ETAG, etag)
        .header(CACHE_CONTROL, "max-age=600, public")
        .header("vary", "Accept, Accept-Encoding")
        .header("x-pypi-last-serial", SERIAL.to_string());
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(empty_body())
    } else {
        builder
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, body.len())
            .body(full_body(body))
    };
    response.expect("static headers are valid")
}

fn file_url(state: &State, dist: &Dist) -> String {
    let digest = &dist.sha256;
    format!(
        "{}/packages/{}/{}/{}/{}",
        state.files_base,
        &digest[..2],
        &digest[2..4],
        &digest[4..],
        dist.filename
    )
}

/// The root list, as HTML.
fn root_html(state: &State) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    \
         <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for project in state.dists.projects() {
        let _ = writeln!(html, "    <a href=\"/simple/{project}/\">{project}</a>");
    }
    html.push_str("  </body>\n</html>\n");
    html
}

/// The root list, as PEP 691 JSON.
fn root_json(state: &State) -> String {
    let projects: Vec<serde_json::Value> = state
        .dists
        .projects()
        .into_iter()
        .map(|name| serde_json::json!({"name": name, "_last-serial": SERIAL}))
        .collect();
    let root = serde_json::json!({"meta": {"api-version": "1.1", "_last-serial": SERIAL}, "projects": projects});
    format!("{root}\n")
}

/// A project page as warehouse renders it (`templates/api/simple/detail.html`).
fn project_html(state: &State, project: &str, files: &[&Dist]) -> String {
    let yanked = lock(&state.yanked);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    \
         <title>Links for {project}</title>\n  </head>\n  <body>\n    <h1>Links for {project}</h1>\n"
    );
    for dist in files {
        let _ = write!(
            html,
            "    <a href=\"{}#sha256={}\" ",
            escape(&file_url(state, dist)),
            dist.sha256
        );
        if let Some(requires_python) = &dist.requires_python {
            let _ = write!(
                html,
                "data-requires-python=\"{}\" ",
                escape(requires_python)
            );
        }
        if let Some(metadata_sha256) = &dist.metadata_sha256 {
            let _ = write!(
                html,
                "data-dist-info-metadata=\"sha256={metadata_sha256}\" data-core-metadata=\"sha256={metadata_sha256}\""
            );
        }
        if yanked.contains(&dist.filename) {
            html.push_str(" data-yanked=\"\"");
        }
        let _ = writeln!(html, ">{}</a><br />", dist.filename);
    }
    let _ = write!(html, "  </body>\n</html>\n<!--SERIAL {SERIAL}-->");
    html
}

/// A project page as PEP 691 JSON, API 1.1.
fn project_json(state: &State, project: &str, files: &[&Dist]) -> String {
    // Written field by field rather than through `serde_json::Value`s: pages of thousands of
    // files render in milliseconds in a debug build, as a CDN's cached copy would come.
    let yanked = lock(&state.yanked);
    let retimed = lock(&state.retimed);
    let mut json = String::with_capacity(files.len() * 640 + 256);
    json.push_str("{\"files\":[");
    for (position, dist) in files.iter().enumerate() {
        if position > 0 {
            json.push(',');
        }
        let metadata = match &dist.metadata_sha256 {
            Some(digest) => format!("{{\"sha256\":{}}}", quoted(digest)),
            None => "false".to_owned(),
        };
        let upload_time = match retimed.get(&dist.filename) {
            None => format!("\"upload-time\":{},", quoted(&dist.upload_time)),
            Some(Some(time)) => format!("\"upload-time\":{},", quoted(time)),
            Some(None) => String::new(),
        };
        let requires_python = match &dist.requires_python {
            Some(specifier) => quoted(specifier),
            None => "null".to_owned(),
        };
        let _ = write!(
            json,
            "{{\"core-metadata\":{metadata},\"data-dist-info-metadata\":{metadata},\
             \"filename\":{},\"hashes\":{{\"sha256\":{}}},\"requires-python\":{requires_python},\
             \"size\":{},{upload_time}\"url\":{},\"yanked\":{}}}",
            quoted(&dist.filename),
            quoted(&dist.sha256),
            dist.size,
            quoted(&file_url(state, dist)),
            yanked.contains(&dist.filename),
        );
    }
    let _ = write!(
        json,
        "],\"meta\":{{\"_last-serial\":{SERIAL},\"api-version\":\"1.1\"}},\"name\":{},\"versions\":[",
        quoted(project)
    );
    let mut seen = HashSet::new();
    let versions = files
        .iter()
        .map(|dist| dist.version.as_str())
        .filter(|version| seen.insert(*version));
    for (position, version) in versions.enumerate() {
        if position > 0 {
            json.push(',');
        }
        json.push_str(&quoted(version));
    }
    json.push_str("]}\n");
    json
}

/// `text` as a JSON string, quoted and escaped.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_`, `.` become one `-`.
fn normalize(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    for character in name.chars() {
        if matches!(character, '-' | '_' | '.') {
            if !normalized.ends_with('-') {
                normalized.push('-');
            }
        } else {
            normalized.push(character.to_ascii_lowercase());
        }
    }
    normalized
}

/// HTML attribute escaping as Jinja's autoescape does it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

/// Warehouse's answer to a name spelt other than its canonical route.
fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(LOCATION, location)
        .body(empty_body())
        .expect("static headers are valid")
}

// ---------------------------------------------------------------------------------------------
// Files server

fn files_response(state: &Arc<State>, path: &str) -> Response<Body> {
    let Some(last) = path.rsplit('/').next() else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let (filename, metadata) = match last.strip_suffix(".metadata") {
        Some(filename) => (filename, true),
        None => (last, false),
    };
    let Some((dist, served)) = state
        .dists
        .get(filename)
        .ok()
        .and_then(|dist| Some((dist, dist.served.as_ref()?)))
    else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let artifact_path = path.strip_suffix(".metadata").unwrap_or(path);
    if !file_url(state, dist).ends_with(artifact_path) {
        return status_only(StatusCode::NOT_FOUND);
    }
    let builder = Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CACHE_CONTROL, "max-age=365000000, immutable, public");
    let response = if metadata {
        let (Some(bytes), Some(digest)) = (&served.metadata, &dist.metadata_sha256) else {
            return status_only(StatusCode::NOT_FOUND);
        };
        builder
            .header(ETAG, format!("\"{digest}\""))
            .header(CONTENT_LENGTH, bytes.len())
            .body(full_body(bytes.clone()))
    } else {
        let fault = state.faults.get(filename);
        builder
            .header(ETAG, format!("\"{}\"", dist.sha256))
            .header(CONTENT_LENGTH, served.bytes.len())
            .body(artifact_body(state, &dist.filename, &served.bytes, fault))
    };
    response.expect("static headers are valid")
}

/// The artifact's body with `fault` applied, counting the bytes sent.
fn artifact_body(state: &Arc<State>, filename: &str, bytes: &Bytes, fault: Option<Fault>) -> Body {
    let state = Arc::clone(state);
    let filename = filename.to_owned();
    streamed_body(bytes, fault, move |length| {
        *lock(&state.sent).entry(filename.clone()).or_default() += length as u64;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_pep_503() -> Result<()> {
        for (name, expected) in [
            ("Django", "django"),
            ("zope.interface", "zope-interface"),
            ("Demo__Lib", "demo-lib"),
            ("a-_.b", "a-b"),
        ] {
            anyhow::ensure!(normalize(name) == expected, "{name} -> {}", normalize(name));
        }
        Ok(())
    }
}
