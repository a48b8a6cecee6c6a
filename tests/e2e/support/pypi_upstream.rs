//! A fixture PyPI upstream on loopback: a simple-API index server (PEP 503 HTML or PEP 691 JSON,
//! warehouse-like) and a separate files server that the pages link to absolutely, as on the real
//! service. It counts every request, and injects faults per file at run time: corrupted bytes,
//! a connection cut half way, throttling, or a whole-server stop and restart on the same ports.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

#[derive(Debug)]
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
    faults: Faults,
    log: RequestLog<Logged>,
    sent: Mutex<HashMap<String, u64>>,
    /// While true, both servers accept connections and read requests but answer none.
    hanging: tokio::sync::watch::Sender<bool>,
    /// Files marked yanked (PEP 592) on their project pages.
    yanked: Mutex<HashSet<String>>,
}

/// The running fixture: the index server, then the files server. Dropping it stops both.
pub struct PypiUpstream {
    state: Arc<State>,
    server: FixtureServer,
}

impl PypiUpstream {
    /// Starts both servers on `127.0.0.1:0`.
    pub fn start(format: PageFormat) -> Result<Self> {
        let dists = super::dists::dists()?;
        let bound = FixtureServer::bind("pypi-upstream", 2)?;
        let state = Arc::new(State {
            format,
            dists,
            files_base: format!("http://{}", bound.addrs()[1]),
            faults: Faults::default(),
            log: RequestLog::default(),
            sent: Mutex::default(),
            hanging: tokio::sync::watch::Sender::new(false),
            yanked: Mutex::default(),
        });
        let server = bound.serve(vec![
            handler(Server::Index, &state),
            handler(Server::Files, &state),
        ]);
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:PORT/simple/`: the simple-index base URL to configure as upstream.
    pub fn index_url(&self) -> String {
        format!("http://{}/simple/", self.index_addr())
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
    pub fn corrupted(dist: &Dist) -> Bytes {
        corrupt(&dist.bytes)
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
        return page(request, json, body);
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
    let files = state.dists.of_project(&normalized);
    if files.is_empty() {
        return status_only(StatusCode::NOT_FOUND);
    }
    let body = if json {
        project_json(state, &normalized, &files)
    } else {
        project_html(state, &normalized, &files)
    };
    page(request, json, body)
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

/// A page with warehouse's caching headers; `If-None-Match` on the same ETag gets a 304.
fn page(request: &Request<Incoming>, json: bool, body: String) -> Response<Body> {
    let etag = format!("\"{}\"", &super::sha256_hex(body.as_bytes())[..22]);
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
        .header(ETAG, &etag)
        .header(CACHE_CONTROL, "max-age=600, public")
        .header("vary", "Accept, Accept-Encoding")
        .header("x-pypi-last-serial", SERIAL.to_string());
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(empty_body())
    } else {
        builder
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, body.len())
            .body(full_body(Bytes::from(body)))
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
        if let Some((_, metadata_sha256)) = &dist.metadata {
            let _ = write!(
                html,
                "data-dist-info-metadata=\"sha256={metadata_sha256}\" data-core-metadata=\"sha256={metadata_sha256}\""
            );
        }
        if lock(&state.yanked).contains(&dist.filename) {
            html.push_str(" data-yanked=\"\"");
        }
        let _ = writeln!(html, ">{}</a><br />", dist.filename);
    }
    let _ = write!(html, "  </body>\n</html>\n<!--SERIAL {SERIAL}-->");
    html
}

/// A project page as PEP 691 JSON, API 1.1.
fn project_json(state: &State, project: &str, files: &[&Dist]) -> String {
    let mut versions: Vec<&str> = files.iter().map(|dist| dist.version.as_str()).collect();
    versions.dedup();
    let files: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(index, dist)| {
            let metadata = match &dist.metadata {
                Some((_, digest)) => serde_json::json!({"sha256": digest}),
                None => serde_json::Value::Bool(false),
            };
            serde_json::json!({
                "core-metadata": metadata,
                "data-dist-info-metadata": metadata,
                "filename": dist.filename,
                "hashes": {"sha256": dist.sha256},
                "requires-python": dist.requires_python,
                "size": dist.size,
                "upload-time": format!("2026-01-{:02}T12:00:00.000000Z", index + 1),
                "url": file_url(state, dist),
                "yanked": lock(&state.yanked).contains(&dist.filename),
            })
        })
        .collect();
    let page = serde_json::json!({
        "files": files,
        "meta": {"_last-serial": SERIAL, "api-version": "1.1"},
        "name": project,
        "versions": versions,
    });
    format!("{page}\n")
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
    let Ok(dist) = state.dists.get(filename) else {
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
        let Some((bytes, digest)) = &dist.metadata else {
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
            .header(CONTENT_LENGTH, dist.bytes.len())
            .body(artifact_body(state, dist, fault))
    };
    response.expect("static headers are valid")
}

/// The artifact's body with `fault` applied, counting the bytes sent.
fn artifact_body(state: &Arc<State>, dist: &Dist, fault: Option<Fault>) -> Body {
    let state = Arc::clone(state);
    let filename = dist.filename.clone();
    streamed_body(&dist.bytes, fault, move |length| {
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
