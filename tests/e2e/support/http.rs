//! A small blocking HTTP/1.1 client for header- and body-level checks: each call opens one
//! connection, sends one request (a GET, or any method with a body and a `Host` other than the
//! address connected to) and reports a body that ended early as a failure.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use sha2::Digest as _;

/// How long one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A response whose body was collected in memory.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Why the body ended before it was complete (connection cut, stream aborted), if it did.
    pub body_error: Option<String>,
}

impl Response {
    /// The header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A 200 whose body arrived whole (and matches `Content-Length` when there is one).
    pub fn is_complete_ok(&self) -> bool {
        self.status == 200
            && self.body_error.is_none()
            && declared_length(&self.headers).is_none_or(|length| length == self.body.len() as u64)
    }

    /// Status, headers and body in one line, for messages.
    pub fn describe(&self) -> String {
        let mut text = self.text();
        text.truncate(300);
        format!(
            "HTTP {} headers {:?} body ({} bytes{}): {text:?}",
            self.status,
            self.headers,
            self.body.len(),
            self.body_error
                .as_deref()
                .map(|error| format!(", then failed: {error}"))
                .unwrap_or_default()
        )
    }
}

/// A response whose body was hashed as it streamed, never held in memory.
pub struct Digested {
    pub status: u16,
    pub length: u64,
    pub sha256: String,
    pub body_error: Option<String>,
}

/// What a GET came to when the server may also drop the connection before answering.
pub enum Attempt {
    Response(Response),
    /// The connection closed or broke before a complete response head arrived.
    Dropped(String),
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response> {
    get_with(url, &[])
}

/// `GET url` with extra request headers.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    send("GET", url, headers, b"")
}

/// Sends `method url` with `headers` and `body`, connecting to the URL's address. A `host`
/// header in `headers` replaces the one taken from the URL.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
    let outgoing = Outgoing {
        method,
        url,
        headers,
        body,
    };
    match attempt_with(&outgoing)? {
        Attempt::Response(response) => Ok(response),
        Attempt::Dropped(error) => bail!("{method} {url}: no response: {error}"),
    }
}

/// `GET url`, reporting a connection dropped before the response head as [`Attempt::Dropped`]
/// rather than as an error.
pub fn attempt(url: &str) -> Result<Attempt> {
    attempt_with(&Outgoing::get(url))
}

fn attempt_with(outgoing: &Outgoing<'_>) -> Result<Attempt> {
    let mut body = Vec::new();
    let exchange = fetch(outgoing, |chunk| body.extend_from_slice(chunk))?;
    Ok(match exchange {
        Exchange::Answered {
            status,
            headers,
            body_error,
        } => Attempt::Response(Response {
            status,
            headers,
            body: Bytes::from(body),
            body_error,
        }),
        Exchange::Dropped(error) => Attempt::Dropped(error),
    })
}

/// `GET url`, hashing the body with sha256 as it arrives.
pub fn get_digest(url: &str) -> Result<Digested> {
    let mut hasher = sha2::Sha256::new();
    let mut length = 0u64;
    let exchange = fetch(&Outgoing::get(url), |chunk| {
        hasher.update(chunk);
        length += chunk.len() as u64;
    })?;
    match exchange {
        Exchange::Answered {
            status, body_error, ..
        } => Ok(Digested {
            status,
            length,
            sha256: hex::encode(hasher.finalize()),
            body_error,
        }),
        Exchange::Dropped(error) => bail!("GET {url}: no response: {error}"),
    }
}

/// `clients` concurrent `GET url`s, each on a thread and a connection of its own, each hashed
/// as it streams.
pub fn get_digest_concurrently(url: &str, clients: usize) -> Vec<Result<Digested>> {
    concurrently(clients, || get_digest(url))
}

/// Runs `request` on `clients` threads at once; the results in thread order.
pub fn concurrently<T: Send>(
    clients: usize,
    request: impl Fn() -> Result<T> + Sync,
) -> Vec<Result<T>> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..clients).map(|_| scope.spawn(&request)).collect();
        clients
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .map_err(|_| anyhow!("client thread panicked"))?
            })
            .collect()
    })
}

/// Fails unless every one of `results` is a complete 200 of `length` bytes with `sha256`.
pub fn ensure_all_published(
    results: Vec<Result<Digested>>,
    length: u64,
    sha256: &str,
) -> Result<()> {
    for (client, result) in results.into_iter().enumerate() {
        let response = result.with_context(|| format!("client {client}"))?;
        ensure!(
            response.status == 200 && response.body_error.is_none(),
            "client {client}: HTTP {} after {} bytes, error {:?}",
            response.status,
            response.length,
            response.body_error
        );
        ensure!(
            response.length == length && response.sha256 == sha256,
            "client {client} got {} bytes with sha256 {}, published {length} bytes with {sha256}",
            response.length,
            response.sha256,
        );
    }
    Ok(())
}

/// GETs `url` and fails unless the client sees a failed download: the connection dropped before
/// a response, an error status, or a body that broke off; never a complete 200.
pub fn ensure_failed_download(url: &str, what: &str) -> Result<()> {
    match attempt(url)? {
        Attempt::Dropped(_) => Ok(()),
        Attempt::Response(response) => {
            ensure!(
                response.status != 200 || response.body_error.is_some(),
                "{what}: GET {url} should fail, but got a complete {}",
                response.describe()
            );
            Ok(())
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// One request to send.
struct Outgoing<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// `GET url`, no extra headers.
    fn get(url: &'a str) -> Self {
        Self {
            method: "GET",
            url,
            headers: &[],
            body: b"",
        }
    }

    /// The request for the URL's path, with `Host` from `headers` or else from the URL, and
    /// the authority to connect to.
    fn build(&self) -> Result<(Request<Full<Bytes>>, Authority)> {
        let url = self.url;
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported: {url}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {url}"))?
            .clone();
        let path = uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        let is_host = |name: &&str| name.eq_ignore_ascii_case("host");
        let host = self
            .headers
            .iter()
            .find(|(name, _)| is_host(name))
            .map_or(authority.as_str(), |(_, value)| *value)
            .to_owned();
        let mut request = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes())?)
            .uri(path)
            .header(HOST, host);
        for (name, value) in self.headers.iter().filter(|(name, _)| !is_host(name)) {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::copy_from_slice(self.body)))?;
        Ok((request, authority))
    }
}

/// How one request went, short of failing to connect.
enum Exchange {
    Answered {
        status: u16,
        headers: HeaderMap,
        body_error: Option<String>,
    },
    Dropped(String),
}

/// Sends one request. Failing to connect, or no answer within [`REQUEST_TIMEOUT`], is an error;
/// a connection dropped before the response head is [`Exchange::Dropped`]; a body that breaks
/// off is reported in `body_error` after `sink` has seen every byte that did arrive.
fn fetch(outgoing: &Outgoing<'_>, sink: impl FnMut(&[u8])) -> Result<Exchange> {
    let (request, authority) = outgoing.build()?;
    let description = format!("{} {}", outgoing.method, outgoing.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(request, &authority, sink))
            .await
            .with_context(|| format!("{description} took longer than {REQUEST_TIMEOUT:?}"))?
    })
}

/// Connects to `authority`, sends `request` and streams the answer's body into `sink`.
async fn exchange(
    request: Request<Full<Bytes>>,
    authority: &Authority,
    sink: impl FnMut(&[u8]),
) -> Result<Exchange> {
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => return Ok(Exchange::Dropped(format!("{error:?}"))),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body_error = drain(response.into_body(), sink).await;
    driver.abort();
    Ok(Exchange::Answered {
        status,
        headers,
        body_error,
    })
}

/// Feeds every data frame of `body` to `sink`; why the body broke off, if it did.
async fn drain(mut body: Incoming, mut sink: impl FnMut(&[u8])) -> Option<String> {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    sink(data);
                }
            }
            Err(error) => return Some(format!("{error:?}")),
        }
    }
    None
}

/// Entity tags name the origin: the tag of `url` fetched with Host `one.origins.test:PORT` is
/// current there (304) and not with Host `other.origins.test:PORT` (200). Returns the first Host.
pub fn ensure_etag_per_origin(url: &str, port: &str) -> Result<String> {
    let (one, other) = (
        format!("one.origins.test:{port}"),
        format!("other.origins.test:{port}"),
    );
    let first = send("GET", url, &[("host", &one)], b"")?;
    let etag = first.header("etag").context("no ETag")?.to_owned();
    for (host, wanted) in [(&one, 304), (&other, 200)] {
        let again = send("GET", url, &[("host", host), ("if-none-match", &etag)], b"")?;
        ensure!(
            again.status == wanted,
            "If-None-Match of {one}'s tag with Host {host}: {}",
            again.describe()
        );
    }
    Ok(one)
}
