//! The core every fixture upstream shares: listeners on `127.0.0.1:0` driven by a runtime of
//! their own, each answering through a handler, over plain HTTP/1.1 or over TLS with HTTP/2 or
//! HTTP/1.1 chosen by ALPN (as the real registries' CDNs serve); counts of connections and of
//! requests per HTTP version; a request log to count against; faults injected per file into
//! streamed bodies; and a stop and restart on the same ports. What the requests mean (pages,
//! packuments, files) is each upstream's own business.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes per body frame; throttling paces frames.
const CHUNK: usize = 64 * 1024;
/// The concurrent streams an HTTP/2 listener allows per connection: what CDNs commonly
/// advertise, so that a client opening more waits as it would on the real service.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// A fixture response body: whole, empty, or streamed with a fault.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How one listener answers a request.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A [`Handler`] from an async function of the request.
pub fn handler<F, Answer>(respond: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Answer + Send + Sync + 'static,
    Answer: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(respond(request)))
}

/// Listeners bound on `127.0.0.1:0`, not yet serving: their addresses are known, so the state
/// the handlers share can name them.
pub struct Bound {
    addrs: Vec<SocketAddr>,
    listeners: Vec<TcpListener>,
    runtime: tokio::runtime::Runtime,
    tls: Option<Arc<ServerConfig>>,
}

impl Bound {
    /// The listeners' addresses, in the order they were bound.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every listener will accept TLS with `config` (see [`super::tls::TestCa::server_config`])
    /// and serve HTTP/2 to clients that negotiate `h2` by ALPN, HTTP/1.1 to the others.
    pub fn with_tls(mut self, config: Arc<ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// `https://127.0.0.1:PORT` (or `http://`) of the `index`th listener, without a slash.
    pub fn base_url(&self, index: usize) -> String {
        format!("{}://{}", scheme(self.tls.is_some()), self.addrs[index])
    }

    /// Serves each listener with the handler at the same position.
    pub fn serve(self, handlers: Vec<Handler>) -> FixtureServer {
        let traffic = self.addrs.iter().map(|_| Arc::default()).collect();
        let server = FixtureServer {
            addrs: self.addrs,
            handlers,
            tls: self.tls,
            traffic,
            running: Mutex::default(),
            runtime: self.runtime,
        };
        server.launch(self.listeners);
        server
    }
}

/// Running listeners, each with its handler. Stopping closes every listener and connection.
pub struct FixtureServer {
    addrs: Vec<SocketAddr>,
    handlers: Vec<Handler>,
    tls: Option<Arc<ServerConfig>>,
    /// Per listener, in the order they were bound.
    traffic: Vec<Arc<Traffic>>,
    running: Mutex<Vec<Running>>,
    runtime: tokio::runtime::Runtime,
}

/// What one listener saw: connections and requests, counted as they arrive.
#[derive(Default)]
struct Traffic {
    connections: AtomicUsize,
    /// Connections that carried at least one request: a client racing several handshakes may
    /// keep only one of them.
    connections_used: AtomicUsize,
    http1: AtomicUsize,
    http2: AtomicUsize,
    /// Requests whose handler has not answered yet, and the most there ever were.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl Traffic {
    fn request(&self, version: Version) {
        let counter = if version == Version::HTTP_2 {
            &self.http2
        } else {
            &self.http1
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    }

    fn answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One listening server and the way to stop it.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FixtureServer {
    /// Binds `ports` listeners on `127.0.0.1:0` on a two-thread runtime named `thread_name`.
    pub fn bind(thread_name: &str, ports: usize) -> Result<Bound> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        let listeners = runtime.block_on(async {
            let mut listeners = Vec::with_capacity(ports);
            for _ in 0..ports {
                listeners.push(TcpListener::bind("127.0.0.1:0").await?);
            }
            anyhow::Ok(listeners)
        })?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<_>>()?;
        Ok(Bound {
            addrs,
            listeners,
            runtime,
            tls: None,
        })
    }

    /// The address of the `index`th listener.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.addrs[index]
    }

    /// `https://127.0.0.1:PORT` (or `http://`) of the `index`th listener, without a slash.
    pub fn base_url(&self, index: usize) -> String {
        format!("{}://{}", scheme(self.tls.is_some()), self.addrs[index])
    }

    /// Connections the `index`th listener accepted (TCP, before any TLS handshake), ever.
    pub fn connections(&self, index: usize) -> usize {
        self.traffic[index].connections.load(Ordering::SeqCst)
    }

    /// Connections of the `index`th listener that carried at least one request, ever.
    pub fn connections_used(&self, index: usize) -> usize {
        self.traffic[index].connections_used.load(Ordering::SeqCst)
    }

    /// Requests the `index`th listener received over HTTP/2, ever.
    pub fn http2_requests(&self, index: usize) -> usize {
        self.traffic[index].http2.load(Ordering::SeqCst)
    }

    /// Requests the `index`th listener received over HTTP/1.x, ever.
    pub fn http1_requests(&self, index: usize) -> usize {
        self.traffic[index].http1.load(Ordering::SeqCst)
    }

    /// The most requests the `index`th listener had at once whose handler had not answered
    /// (response head not yet produced): how much concurrency clients actually reached.
    pub fn peak_in_flight(&self, index: usize) -> usize {
        self.traffic[index].peak_in_flight.load(Ordering::SeqCst)
    }

    /// Closes every listener and every open connection: new connections are refused.
    pub fn stop(&self) {
        let running: Vec<Running> = lock(&self.running).drain(..).collect();
        self.runtime.block_on(async {
            for server in running {
                let _ = server.stop.send(true);
                let _ = server.task.await;
            }
        });
    }

    /// Listens again on the same ports after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        let listeners = self.runtime.block_on(async {
            let mut bound = Vec::with_capacity(self.addrs.len());
            for addr in &self.addrs {
                bound.push(TcpListener::bind(addr).await);
            }
            bound.into_iter().collect::<std::io::Result<Vec<_>>>()
        })?;
        self.launch(listeners);
        Ok(())
    }

    fn launch(&self, listeners: Vec<TcpListener>) {
        for ((listener, handler), traffic) in
            listeners.into_iter().zip(&self.handlers).zip(&self.traffic)
        {
            let (stop, stopped) = watch::channel(false);
            let serving = Serving {
                handler: Arc::clone(handler),
                traffic: Arc::clone(traffic),
                tls: self.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            };
            let task = self.runtime.spawn(accept_loop(listener, serving, stopped));
            lock(&self.running).push(Running { stop, task });
        }
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// What every connection of one listener is served with.
#[derive(Clone)]
struct Serving {
    handler: Handler,
    traffic: Arc<Traffic>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts connections until told to stop, then drops the listener and every connection.
async fn accept_loop(listener: TcpListener, serving: Serving, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                serving.traffic.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve_connection(stream, serving.clone()));
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one accepted connection until the client closes it (or the handshake fails).
async fn serve_connection(stream: TcpStream, serving: Serving) {
    let Serving {
        handler,
        traffic,
        tls,
    } = serving;
    let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        if !used.swap(true, Ordering::SeqCst) {
            traffic.connections_used.fetch_add(1, Ordering::SeqCst);
        }
        traffic.request(request.version());
        let answer = handler(request);
        let traffic = Arc::clone(&traffic);
        async move {
            let response = answer.await;
            traffic.answered();
            Ok::<_, Infallible>(response)
        }
    });
    let Some(acceptor) = tls else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        return;
    };
    let Ok(stream) = acceptor.accept(stream).await else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    // ALPN decides, as on the real servers: a client that did not offer `h2` gets HTTP/1.1.
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Every request a fixture saw, in order, for counting and for messages.
pub struct RequestLog<T>(Mutex<Vec<T>>);

impl<T> Default for RequestLog<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T> RequestLog<T> {
    pub fn push(&self, request: T) {
        lock(&self.0).push(request);
    }

    /// A mark for the `*_since` counters: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        lock(&self.0).len()
    }

    /// Requests after `mark` for which `wanted` holds.
    pub fn count_since(&self, mark: usize, wanted: impl Fn(&T) -> bool) -> usize {
        lock(&self.0)[mark..]
            .iter()
            .filter(|request| wanted(request))
            .count()
    }

    /// Requests for which `wanted` holds, ever.
    pub fn count(&self, wanted: impl Fn(&T) -> bool) -> usize {
        self.count_since(0, wanted)
    }

    /// Every request after `mark`.
    pub fn since(&self, mark: usize) -> Vec<T>
    where
        T: Clone,
    {
        lock(&self.0)[mark..].to_vec()
    }
}

impl<T: Display> RequestLog<T> {
    /// Every request so far, one per line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for request in lock(&self.0).iter() {
            let _ = writeln!(text, "{request}");
        }
        text
    }

    /// Prints the log to stderr under `title` (libtest shows it only for failing tests).
    pub fn print(&self, title: &str) {
        eprintln!(
            "---- {title} requests ----\n{}---- end of requests ----",
            self.render()
        );
    }
}

/// A fault a fixture injects into one file's responses.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The same number of bytes, some flipped: published digests no longer match.
    Corrupt,
    /// Full `Content-Length`, half the body, then the connection is dropped.
    Cut,
    /// The body is paced to this rate.
    Throttle { bytes_per_second: u64 },
}

/// The faults in force, by file name, set and cleared by the test at run time.
#[derive(Default)]
pub struct Faults(Mutex<HashMap<String, Fault>>);

impl Faults {
    /// Injects `fault` into every later response for `filename`.
    pub fn set(&self, filename: &str, fault: Fault) {
        lock(&self.0).insert(filename.to_owned(), fault);
    }

    /// Serves `filename` normally again.
    pub fn clear(&self, filename: &str) {
        lock(&self.0).remove(filename);
    }

    pub fn get(&self, filename: &str) -> Option<Fault> {
        lock(&self.0).get(filename).copied()
    }
}

/// Where a streamed body is.
struct Sending<Sent> {
    data: Bytes,
    offset: usize,
    /// Bytes to send before ending (or cutting).
    limit: usize,
    cut: bool,
    bytes_per_second: Option<u64>,
    started: tokio::time::Instant,
    sent: Sent,
}

/// `data` in frames of [`CHUNK`] bytes with `fault` applied; `sent` is told the length of each
/// frame as it is handed to the network.
pub fn streamed_body<Sent>(data: &Bytes, fault: Option<Fault>, sent: Sent) -> Body
where
    Sent: FnMut(usize) + Send + Sync + 'static,
{
    let mut sending = Sending {
        data: data.clone(),
        offset: 0,
        limit: data.len(),
        cut: false,
        bytes_per_second: None,
        started: tokio::time::Instant::now(),
        sent,
    };
    match fault {
        None => {}
        Some(Fault::Corrupt) => sending.data = corrupt(data),
        Some(Fault::Cut) => {
            sending.limit = data.len() / 2;
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
        (sending.sent)(chunk.len());
        Some((Ok(Frame::data(chunk)), sending))
    });
    BoxBody::new(StreamBody::new(frames))
}

/// Same length, a few bytes flipped (start, middle and end, so every digest changes): what
/// [`Fault::Corrupt`] serves.
pub fn corrupt(bytes: &[u8]) -> Bytes {
    let mut corrupted = bytes.to_vec();
    let length = corrupted.len();
    for index in [length / 3, length / 2, length.saturating_sub(2)] {
        if let Some(byte) = corrupted.get_mut(index) {
            *byte ^= 0xA5;
        }
    }
    Bytes::from(corrupted)
}

pub fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

pub fn empty_body() -> Body {
    full_body(Bytes::new())
}

pub fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    response
}

/// Locks `mutex` even if a panicking test thread poisoned it: it must not hide the log from the
/// others.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
