//! A deliberately misbehaving PyPI upstream for the fault matrix: a std-thread TCP server on
//! `127.0.0.1:0` that speaks just enough HTTP/1.1 by hand to break the protocol exactly where a
//! test asks (stall before or inside a body, cut it, lie about its length, send other bytes, a
//! gzip bomb, an oversized page), per path and at run time. It counts connections and requests
//! per path so that tests can prove what reached it. Also here: an address that refuses
//! connections and a listener that never accepts, both on loopback.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use super::fixture_server::lock;

/// PEP 691 JSON media type.
pub const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// Size of every generated file: several KiB, so that "half the body" is many bytes.
const FILE_SIZE: usize = 24 * 1024;
/// How much the gzip bomb inflates to: far past any limit the tests configure.
const BOMB_INFLATED: usize = 8 << 20;
/// How much larger than a normal page the `Huge` page is: past the tests' 64 KiB limit.
const HUGE_PADDING: usize = 160 * 1024;
/// How often a stalled connection checks whether its peer left or the server stopped.
const STALL_POLL: Duration = Duration::from_millis(50);
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// How the server answers one path.
#[derive(Clone, Debug, Default)]
pub enum Behaviour {
    /// The page or file as published.
    #[default]
    Normal,
    /// This status with these extra headers and a short text body.
    Status(u16, Vec<(String, String)>),
    /// Reads the request and never answers.
    StallBeforeHeaders,
    /// Headers with the full `Content-Length`, half the body, then silence.
    StallMidBody,
    /// Headers with the full `Content-Length`, half the body, then the connection closes.
    Truncate,
    /// A `Content-Length` of half the body, then the whole body.
    LongerThanAnnounced,
    /// The whole body under a `Content-Length` half as long again, then the connection closes.
    ShorterThanAnnounced,
    /// The same length, some bytes changed: a file's published sha256 no longer matches.
    WrongBytes,
    /// `Content-Encoding: gzip`: a small body that inflates to a valid page past any limit.
    GzipBomb,
    /// A valid page padded past the configured `max_document_size`.
    Huge,
}

impl Behaviour {
    /// `Status(code)` with `Retry-After: seconds`.
    pub fn status_retry_after(code: u16, seconds: u64) -> Behaviour {
        Behaviour::Status(code, vec![("Retry-After".to_owned(), seconds.to_string())])
    }
}

/// What the server and the test share.
#[derive(Default)]
struct State {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
    stopping: AtomicBool,
}

/// The running server. Dropping it stops it; stalled connections are then closed.
pub struct FaultUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl FaultUpstream {
    /// Starts the server on `127.0.0.1:0`; every path behaves [`Behaviour::Normal`].
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let thread_state = Arc::clone(&state);
        let accepting = std::thread::Builder::new()
            .name("fault-upstream".to_owned())
            .spawn(move || accept_loop(&listener, &thread_state))?;
        Ok(Self {
            addr,
            state,
            accepting: Mutex::new(Some(accepting)),
        })
    }

    /// `http://127.0.0.1:PORT/simple/`: the simple-index base URL to configure as upstream.
    pub fn index_url(&self) -> String {
        format!("http://{}/simple/", self.addr)
    }

    /// `127.0.0.1:PORT`, as error reasons name it.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Makes `project`'s page behave as `behaviour` from the next request on.
    pub fn set_page(&self, project: &str, behaviour: Behaviour) {
        self.set(&page_path(project), behaviour);
    }

    /// Makes `project`'s one file behave as `behaviour` from the next request on.
    pub fn set_file(&self, project: &str, behaviour: Behaviour) {
        self.set(&file_path(project), behaviour);
    }

    fn set(&self, path: &str, behaviour: Behaviour) {
        lock(&self.state.behaviours).insert(path.to_owned(), behaviour);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests for `project`'s page so far.
    pub fn page_requests(&self, project: &str) -> usize {
        self.requests(&page_path(project))
    }

    /// Requests for `project`'s file so far.
    pub fn file_requests(&self, project: &str) -> usize {
        self.requests(&file_path(project))
    }

    fn requests(&self, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|seen| *seen == path)
            .count()
    }

    /// Closes the listener: new connections are refused, stalled ones are closed.
    pub fn stop(&self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = lock(&self.accepting).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop();
        eprintln!(
            "---- fault upstream: {} connections, requests ----\n{}---- end of requests ----",
            self.connections(),
            lock(&self.state.requests)
                .iter()
                .fold(String::new(), |mut text, path| {
                    let _ = writeln!(text, "{path}");
                    text
                })
        );
    }
}

/// The upstream path of `project`'s page.
pub fn page_path(project: &str) -> String {
    format!("/simple/{project}/")
}

/// The upstream path of `project`'s one file.
pub fn file_path(project: &str) -> String {
    format!("/files/{}", filename(project))
}

/// The name of `project`'s one file (a wheel of version 1.0).
pub fn filename(project: &str) -> String {
    format!("{project}-1.0-py3-none-any.whl")
}

/// The published bytes of `project`'s file: generated, different for every project.
pub fn file_bytes(project: &str) -> Vec<u8> {
    // A small xorshift generator seeded by the name: cheap, deterministic, incompressible enough.
    let mut state = project
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15u64, |seed, byte| {
            (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
    (0..FILE_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The bytes [`Behaviour::WrongBytes`] sends instead of `bytes`: same length, three bytes
/// flipped (start, middle, end) so that every digest changes.
pub fn wrong_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut wrong = bytes.to_vec();
    let length = wrong.len();
    for index in [length / 3, length / 2, length.saturating_sub(2)] {
        if let Some(byte) = wrong.get_mut(index) {
            *byte ^= 0xA5;
        }
    }
    wrong
}

/// The PEP 691 page of `project`, linking its one file relatively with its sha256.
pub fn page_body(project: &str) -> Vec<u8> {
    let page = serde_json::json!({
        "meta": {"api-version": "1.0"},
        "name": project,
        "files": [{
            "filename": filename(project),
            "url": format!("../../files/{}", filename(project)),
            "hashes": {"sha256": super::sha256_hex(&file_bytes(project))},
        }],
    });
    format!("{page}\n").into_bytes()
}

/// A valid page followed by `padding` spaces (JSON allows any amount of trailing whitespace):
/// refused only for its size.
fn padded_page(project: &str, padding: usize) -> Vec<u8> {
    let mut body = page_body(project);
    body.resize(body.len() + padding, b' ');
    body
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .expect("compressing into memory cannot fail")
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(state);
        // A thread per connection: a stalled one must not hold up the others.
        let _ = std::thread::Builder::new()
            .name("fault-connection".to_owned())
            .spawn(move || serve(stream, &state));
    }
}

/// Reads one request and answers it as its path's behaviour says; one request per connection.
fn serve(mut stream: TcpStream, state: &State) {
    let Some(path) = read_request(&mut stream) else {
        return;
    };
    lock(&state.requests).push(path.clone());
    let behaviour = lock(&state.behaviours)
        .get(&path)
        .cloned()
        .unwrap_or_default();
    let Some(body) = published(&path) else {
        let _ = write_plain(&mut stream, 404, &[], b"no such path\n");
        finish(&mut stream);
        return;
    };
    let content_type = if path.starts_with("/simple/") {
        JSON_TYPE
    } else {
        "application/octet-stream"
    };
    let project = project_of(&path);
    misbehave(
        &mut stream,
        state,
        &behaviour,
        content_type,
        &body,
        &project,
    );
}

/// The request's path, once its whole head has arrived (bounded in size and time).
fn read_request(stream: &mut TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    let _method = words.next()?;
    words.next().map(str::to_owned)
}

/// The project a path belongs to: `/simple/<project>/` or `/files/<project>-1.0-….whl`.
fn project_of(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/simple/") {
        return rest.trim_end_matches('/').to_owned();
    }
    let name = path.strip_prefix("/files/").unwrap_or(path);
    name.split('-').next().unwrap_or(name).to_owned()
}

/// The published body at `path`: a project page or a file; None for anything else.
fn published(path: &str) -> Option<Vec<u8>> {
    if let Some(rest) = path.strip_prefix("/simple/") {
        let project = rest.strip_suffix('/')?;
        let valid = !project.is_empty() && project.bytes().all(|b| b.is_ascii_alphanumeric());
        return valid.then(|| page_body(project));
    }
    let name = path.strip_prefix("/files/")?;
    let project = name.strip_suffix("-1.0-py3-none-any.whl")?;
    let valid = !project.is_empty() && project.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| file_bytes(project))
}

/// Answers with `body` as `behaviour` says; errors writing are ignored (the peer may be gone,
/// which is what some faults provoke).
fn misbehave(
    stream: &mut TcpStream,
    state: &State,
    behaviour: &Behaviour,
    content_type: &str,
    body: &[u8],
    project: &str,
) {
    let half = body.len() / 2;
    let typed = [("Content-Type", content_type)];
    let _ = match behaviour {
        Behaviour::Normal => write_response(stream, 200, &typed, body.len(), body),
        Behaviour::Status(code, headers) => {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            write_plain(
                stream,
                *code,
                &headers,
                b"the fault upstream fails on purpose\n",
            )
        }
        Behaviour::StallBeforeHeaders => Ok(()),
        Behaviour::StallMidBody | Behaviour::Truncate => {
            write_response(stream, 200, &typed, body.len(), &body[..half])
        }
        Behaviour::LongerThanAnnounced => write_response(stream, 200, &typed, half, body),
        Behaviour::ShorterThanAnnounced => {
            write_response(stream, 200, &typed, body.len() + half, body)
        }
        Behaviour::WrongBytes => {
            write_response(stream, 200, &typed, body.len(), &wrong_bytes(body))
        }
        Behaviour::GzipBomb => {
            let bomb = gzip(&padded_page(project, BOMB_INFLATED));
            let headers = [typed[0], ("Content-Encoding", "gzip")];
            write_response(stream, 200, &headers, bomb.len(), &bomb)
        }
        Behaviour::Huge => {
            let huge = padded_page(project, HUGE_PADDING);
            write_response(stream, 200, &typed, huge.len(), &huge)
        }
    };
    match behaviour {
        Behaviour::StallBeforeHeaders | Behaviour::StallMidBody => hold(stream, state),
        Behaviour::Truncate | Behaviour::ShorterThanAnnounced => {
            // Closed at once, short of the announced length: the cut the client must notice.
            let _ = stream.shutdown(Shutdown::Both);
        }
        _ => finish(stream),
    }
}

/// A response head announcing `length` bytes, then `body` (which may be shorter or longer).
fn write_response(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(&str, &str)],
    length: usize,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason_phrase(code));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    // One request per connection, so that connections and requests count alike.
    let _ = write!(
        head,
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn write_plain(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut all = vec![("Content-Type", "text/plain")];
    all.extend_from_slice(headers);
    write_response(stream, code, &all, body.len(), body)
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// Ends a complete answer gracefully: half-close, then wait (briefly) for the peer to close, so
/// that unread bytes never turn the close into a reset that could lose the answer's tail.
fn finish(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buffer = [0u8; 1024];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
    }
}

/// Keeps the connection open and silent until the peer closes it or the server stops.
fn hold(stream: &mut TcpStream, state: &State) {
    if stream.set_read_timeout(Some(STALL_POLL)).is_err() {
        return;
    }
    let mut buffer = [0u8; 1024];
    while !state.stopping.load(Ordering::SeqCst) {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// `time` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7), as a
/// `Retry-After` may carry it.
pub fn http_date(time: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// A loopback address where nothing listens: connections to it are refused. (The port was just
/// bound and released; nothing else on loopback is expected to take it within a test.)
pub fn refusing_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr)
}

/// A loopback listener that never accepts. The kernel still completes connections into its
/// backlog, so a client connects, sends its request and waits for an answer that never comes.
pub struct Unanswering {
    listener: TcpListener,
}

impl Unanswering {
    pub fn bind() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the silent listener")?;
        Ok(Self { listener })
    }

    /// `http://127.0.0.1:PORT/simple/`.
    pub fn index_url(&self) -> Result<String> {
        Ok(format!("http://{}/simple/", self.listener.local_addr()?))
    }
}
