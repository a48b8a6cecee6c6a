//! A fixture PyPI upstream on loopback: a simple-API index server (PEP 503 HTML or PEP 691 JSON,
//! warehouse-like) and a separate files server that the pages link to absolutely, as on the real
//! service. It counts every request, and injects faults per file at run time: corrupted bytes,
//! a connection cut half way, throttling, or a whole-server stop and restart on the same ports.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::dists::{Dist, Dists};

/// PEP 691 JSON media type.
const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// Bytes per body frame; throttling paces frames.
const CHUNK: usize = 64 * 1024;
const SERIAL: u64 = 4242;

type Body = BoxBody<Bytes, std::io::Error>;

/// How the index server renders project pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    /// PEP 503 HTML only (`text/html`), whatever the client accepts.
    Html,
    /// PEP 691 JSON (API 1.1, with `versions` and `size`) when the client accepts it, else HTML.
    Json,
}

/// A fault the files server injects into one artifact's responses.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The same number of bytes, some flipped: the page's sha256 no longer matches.
    Corrupt,
    /// Full `Content-Length`, half the body, then the connection is dropped.
    Cut,
    /// The body is paced to this rate.
    Throttle { bytes_per_second: u64 },
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

/// State shared by both servers and the test.
struct State {
    format: PageFormat,
    dists: &'static Dists,
    files_base: String,
    faults: Mutex<HashMap<String, Fault>>,
    log: Mutex<Vec<Logged>>,
    sent: Mutex<HashMap<String, u64>>,
}

/// The running fixture. Dropping it stops both servers.
pub struct PypiUpstream {
    state: Arc<State>,
    index_addr: SocketAddr,
    files_addr: SocketAddr,
    running: Mutex<Vec<Running>>,
    runtime: tokio::runtime::Runtime,
}

/// One listening server and the way to stop it.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PypiUpstream {
    /// Starts both servers on `127.0.0.1:0`.
    pub fn start(format: PageFormat) -> Result<Self> {
        let dists = super::dists::dists()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pypi-upstream")
            .enable_all()
            .build()?;
        let (index_listener, files_listener) = runtime.block_on(async {
            anyhow::Ok((
                TcpListener::bind("127.0.0.1:0").await?,
                TcpListener::bind("127.0.0.1:0").await?,
            ))
        })?;
        let index_addr = index_listener.local_addr()?;
        let files_addr = files_listener.local_addr()?;
        let state = Arc::new(State {
            format,
            dists,
            files_base: format!("http://{files_addr}"),
            faults: Mutex::default(),
            log: Mutex::default(),
            sent: Mutex::default(),
        });
        let upstream = Self {
            state,
            index_addr,
            files_addr,
            running: Mutex::default(),
            runtime,
        };
        upstream.launch(index_listener, Server::Index);
        upstream.launch(files_listener, Server::Files);
        Ok(upstream)
    }

    /// `http://127.0.0.1:PORT/simple/`: the simple-index base URL to configure as upstream.
    pub fn index_url(&self) -> String {
        format!("http://{}/simple/", self.index_addr)
    }

    pub fn index_addr(&self) -> SocketAddr {
        self.index_addr
    }

    /// Injects `fault` into every later response for the artifact `filename`.
    pub fn set_fault(&self, filename: &str, fault: Fault) {
        lock(&self.state.faults).insert(filename.to_owned(), fault);
    }

    /// Serves `filename` normally again.
    pub fn clear_fault(&self, filename: &str) {
        lock(&self.state.faults).remove(filename);
    }

    /// The exact bytes served for `filename` under [`Fault::Corrupt`].
    pub fn corrupted(dist: &Dist) -> Bytes {
        corrupt(&dist.bytes)
    }

    /// A mark for [`Self::files_requests_since`]: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        lock(&self.state.log).len()
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
        lock(&self.state.log)[mark..]
            .iter()
            .filter(|logged| logged.server == server)
            .count()
    }

    /// Requests for the artifact `filename` itself (not its `.metadata`), ever.
    pub fn artifact_requests(&self, filename: &str) -> usize {
        let suffix = format!("/{filename}");
        lock(&self.state.log)
            .iter()
            .filter(|logged| logged.server == Server::Files && logged.path.ends_with(&suffix))
            .count()
    }

    /// Body bytes of `filename` handed to the network so far, over all responses.
    pub fn bytes_sent(&self, filename: &str) -> u64 {
        lock(&self.state.sent).get(filename).copied().unwrap_or(0)
    }

    /// Every request so far, one per line, for messages.
    pub fn request_log(&self) -> String {
        let mut text = String::new();
        for logged in lock(&self.state.log).iter() {
            let _ = writeln!(
                text,
                "{:?} {} {}",
                logged.server, logged.method, logged.path
            );
        }
        text
    }

    /// Closes both listeners and every open connection: new connections are refused.
    pub fn stop(&self) {
        let running: Vec<Running> = lock(&self.running).drain(..).collect();
        self.runtime.block_on(async {
            for server in running {
                let _ = server.stop.send(true);
                let _ = server.task.await;
            }
        });
    }

    /// Listens again on the same two ports after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        let (index_listener, files_listener) = self.runtime.block_on(async {
            let index = TcpListener::bind(self.index_addr).await;
            let files = TcpListener::bind(self.files_addr).await;
            anyhow::Ok((index?, files?))
        })?;
        self.launch(index_listener, Server::Index);
        self.launch(files_listener, Server::Files);
        Ok(())
    }

    fn launch(&self, listener: TcpListener, server: Server) {
        let (stop, stopped) = watch::channel(false);
        let task = self.runtime.spawn(accept_loop(
            listener,
            server,
            Arc::clone(&self.state),
            stopped,
        ));
        lock(&self.running).push(Running { stop, task });
    }
}

impl Drop for PypiUpstream {
    fn drop(&mut self) {
        self.stop();
        eprintln!(
            "---- fixture PyPI upstream requests ----\n{}---- end of requests ----",
            self.request_log()
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the log from the others.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until told to stop, then drops the listener and every connection.
async fn accept_loop(
    listener: TcpListener,
    server: Server,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(respond(server, &state, request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

fn respond(server: Server, state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    lock(&state.log).push(Logged {
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
                "yanked": false,
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
        let fault = lock(&state.faults).get(filename).copied();
        builder
            .header(ETAG, format!("\"{}\"", dist.sha256))
            .header(CONTENT_LENGTH, dist.bytes.len())
            .body(artifact_body(state, dist, fault))
    };
    response.expect("static headers are valid")
}

/// Where a streamed artifact body is.
struct Sending {
    state: Arc<State>,
    filename: String,
    data: Bytes,
    offset: usize,
    /// Bytes to send before ending (or cutting).
    limit: usize,
    cut: bool,
    bytes_per_second: Option<u64>,
    started: tokio::time::Instant,
}

/// The artifact's body in frames of [`CHUNK`] bytes, with `fault` applied.
fn artifact_body(state: &Arc<State>, dist: &Dist, fault: Option<Fault>) -> Body {
    let mut sending = Sending {
        state: Arc::clone(state),
        filename: dist.filename.clone(),
        data: dist.bytes.clone(),
        offset: 0,
        limit: dist.bytes.len(),
        cut: false,
        bytes_per_second: None,
        started: tokio::time::Instant::now(),
    };
    match fault {
        None => {}
        Some(Fault::Corrupt) => sending.data = corrupt(&dist.bytes),
        Some(Fault::Cut) => {
            sending.limit = dist.bytes.len() / 2;
            sending.cut = true;
        }
        Some(Fault::Throttle { bytes_per_second }) => {
            sending.bytes_per_second = Some(bytes_per_second.max(1))
        }
    }
    let frames = futures_util::stream::unfold(sending, |mut sending| async move {
        if sending.offset >= sending.limit {
            if !sending.cut {
                return None;
            }
            // Let the first half reach the socket, then fail the body: hyper drops the
            // connection with the response short of its Content-Length.
            sending.cut = false;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let error = std::io::Error::other("fixture upstream cut the connection half way");
            return Some((Err(error), sending));
        }
        if let Some(rate) = sending.bytes_per_second {
            let due =
                sending.started + Duration::from_secs_f64(sending.offset as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let end = sending.limit.min(sending.offset + CHUNK);
        let chunk = sending.data.slice(sending.offset..end);
        sending.offset = end;
        *lock(&sending.state.sent)
            .entry(sending.filename.clone())
            .or_default() += chunk.len() as u64;
        Some((Ok(Frame::data(chunk)), sending))
    });
    BoxBody::new(StreamBody::new(frames))
}

/// Same length, a few bytes flipped (start, middle and end, so every digest changes).
fn corrupt(bytes: &[u8]) -> Bytes {
    let mut corrupted = bytes.to_vec();
    let length = corrupted.len();
    for index in [length / 3, length / 2, length.saturating_sub(2)] {
        if let Some(byte) = corrupted.get_mut(index) {
            *byte ^= 0xA5;
        }
    }
    Bytes::from(corrupted)
}

// ---------------------------------------------------------------------------------------------
// Response helpers

fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn empty_body() -> Body {
    full_body(Bytes::new())
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    response
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(LOCATION, location)
        .body(empty_body())
        .expect("static headers are valid")
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
