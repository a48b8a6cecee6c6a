//! A small blocking HTTP/1.1 client for header- and body-level checks: each call opens one
//! connection, sends one request and reports a body that ended early as a failure.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap};
use hyper::{Request, Uri};
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
    match attempt_with(url, headers)? {
        Attempt::Response(response) => Ok(response),
        Attempt::Dropped(error) => bail!("GET {url}: no response: {error}"),
    }
}

/// `GET url`, reporting a connection dropped before the response head as [`Attempt::Dropped`]
/// rather than as an error.
pub fn attempt(url: &str) -> Result<Attempt> {
    attempt_with(url, &[])
}

fn attempt_with(url: &str, headers: &[(&str, &str)]) -> Result<Attempt> {
    let mut body = Vec::new();
    let exchange = fetch(url, headers, |chunk| body.extend_from_slice(chunk))?;
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
    let exchange = fetch(url, &[], |chunk| {
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

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
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
fn fetch(url: &str, headers: &[(&str, &str)], mut sink: impl FnMut(&[u8])) -> Result<Exchange> {
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
    let mut request = Request::get(path).header(HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let exchange = async {
            let port = authority.port_u16().unwrap_or(80);
            let stream = tokio::net::TcpStream::connect((authority.host(), port))
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(error) => return anyhow::Ok(Exchange::Dropped(format!("{error:?}"))),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            let mut body_error = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            sink(data);
                        }
                    }
                    Err(error) => {
                        body_error = Some(format!("{error:?}"));
                        break;
                    }
                }
            }
            driver.abort();
            anyhow::Ok(Exchange::Answered {
                status,
                headers,
                body_error,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("GET {url} took longer than {REQUEST_TIMEOUT:?}"))?
    })
}
