//! The HTTP(S) client that talks to upstream registries: pooled connections, rustls with the ring
//! provider, connect and read timeouts, redirects only where the caller allows, bounded bodies.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

use crate::breaker::Breakers;
use crate::config::Config;
use crate::egress::{AddressPolicy, GuardedConnector};
use crate::error::{Error, Result};

const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("pmcache/", env!("CARGO_PKG_VERSION"));

/// A pooled upstream client shared by every frontend.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    read_timeout: Duration,
    connect_timeout: Duration,
    max_document_size: u64,
    policy: Arc<AddressPolicy>,
    breakers: Arc<Breakers>,
}

/// An upstream response whose status is 2xx or 304, after redirects.
pub struct Fetched {
    /// The URL that answered, after redirects.
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    version: http::Version,
    body: Incoming,
    read_timeout: Duration,
}

impl Upstream {
    /// Builds the client; fails only if the system's root certificates cannot be loaded at all.
    pub fn new(config: &Config) -> Result<Upstream> {
        let policy = Arc::new(AddressPolicy::new(
            config.allow_private_addresses,
            config.connect_timeout,
        ));
        for listed in &config.trusted_hosts {
            let (host, port) =
                crate::egress::host_and_port(listed).ok_or_else(|| Error::BadUpstreamUrl {
                    url: listed.clone(),
                    reason: "upstream.trusted_hosts takes host or host:port".to_owned(),
                })?;
            policy.trust(&host, port);
        }
        let guarded = GuardedConnector::new(config.connect_timeout, Arc::clone(&policy));
        let provider = rustls::crypto::ring::default_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| Error::Internal(format!("no usable root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(guarded);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Upstream {
            client,
            read_timeout: config.read_timeout,
            connect_timeout: config.connect_timeout,
            max_document_size: config.max_document_size.0,
            policy,
            breakers: Arc::new(Breakers::new(
                config.breaker_threshold,
                config.breaker_cooldown,
            )),
        })
    }

    /// Lets the host of a configured upstream be on a private address (a registry on the LAN,
    /// or on this machine).
    pub fn trust(&self, upstream: &Url) {
        if let Some(host) = upstream.host_str() {
            self.policy.trust(host, upstream.port_or_known_default());
        }
    }

    /// Lets a host the operator listed (`host` or `host:port`) be on a private address; false
    /// when `listed` is no host.
    pub fn trust_listed(&self, listed: &str) -> bool {
        match crate::egress::host_and_port(listed) {
            Some((host, port)) => {
                self.policy.trust(&host, port);
                true
            }
            None => false,
        }
    }

    /// How many upstream origins have an open circuit breaker now.
    pub fn open_circuits(&self) -> usize {
        self.breakers.open_count()
    }

    /// GETs `url`, following redirects to URLs that `allow_redirect` accepts. Answers other than
    /// 2xx and 304 become errors (404 and 410 as [`Error::NotFound`]).
    pub async fn get(
        &self,
        url: &Url,
        headers: &HeaderMap,
        allow_redirect: &(dyn Fn(&Url) -> bool + Sync),
    ) -> Result<Fetched> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(&current, headers).await?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = redirect_target(&current, response.headers())?;
                if !allow_redirect(&next) {
                    return Err(Error::Redirect {
                        url: current.to_string(),
                        location: next.to_string(),
                    });
                }
                tracing::debug!(from = %current, to = %next, "following upstream redirect");
                current = next;
                continue;
            }
            return self.accept(current, response);
        }
        Err(Error::Redirect {
            url: url.to_string(),
            location: format!("a chain of more than {MAX_REDIRECTS} redirects"),
        })
    }

    async fn send(&self, url: &Url, headers: &HeaderMap) -> Result<Response<Incoming>> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// Sends one request as given (no redirects followed, any status returned): for the
    /// pass-through endpoints that pmcache relays without caching.
    pub async fn request(
        &self,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(body))
            .map_err(|e| Error::BadUpstreamUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        *request.headers_mut() = headers.clone();
        request
            .headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let origin = url.origin().ascii_serialization();
        let ticket = self
            .breakers
            .admit(&origin)
            .map_err(|open| Error::CircuitOpen {
                origin: origin.clone(),
                failures: open.failures,
                retry_after: open.retry_after,
            })?;
        let outcome =
            match tokio::time::timeout(self.read_timeout, self.client.request(request)).await {
                Err(_) => Err(Error::Timeout {
                    url: url.to_string(),
                    timeout: self.read_timeout,
                }),
                Ok(Err(error)) => Err(classify_client_error(url, &error, self.connect_timeout)),
                Ok(Ok(response)) => Ok(response),
            };
        // Only timeouts hold requests for long: a refused connection or an unknown name fails
        // at once anyway, and counting it would keep the breaker open after the upstream is back.
        match &outcome {
            Ok(_) => ticket.succeeded(),
            Err(Error::Timeout { .. }) => ticket.failed(),
            Err(_) => ticket.neutral(),
        }
        outcome
    }

    /// The longest wait for headers or the next piece of a body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    fn accept(&self, url: Url, response: Response<Incoming>) -> Result<Fetched> {
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(Error::NotFound {
                url: url.to_string(),
            });
        }
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, std::time::SystemTime::now()));
            return Err(Error::Status {
                url: url.to_string(),
                status,
                retry_after,
            });
        }
        let (parts, body) = response.into_parts();
        Ok(Fetched {
            url,
            status,
            headers: parts.headers,
            version: parts.version,
            body,
            read_timeout: self.read_timeout,
        })
    }

    /// The largest metadata document accepted (decompressed).
    pub fn max_document_size(&self) -> u64 {
        self.max_document_size
    }
}

impl Fetched {
    /// The announced length of the body, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// A response header as text.
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next chunk of the body; None at the end. A stall longer than the read timeout is an error.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = tokio::time::timeout(self.read_timeout, self.body.frame()).await;
            match frame {
                Err(_) => {
                    return Err(Error::Timeout {
                        url: self.url.to_string(),
                        timeout: self.read_timeout,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(error))) => {
                    return Err(Error::Body {
                        url: self.url.to_string(),
                        reason: error_chain(&error),
                    });
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads a whole metadata document, decoding gzip, refusing anything over `limit` bytes
    /// (compressed or not) so that a hostile upstream cannot exhaust memory.
    pub async fn read_document(mut self, limit: u64) -> Result<Bytes> {
        let announced = self.content_length();
        let mut body = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::TooLarge {
                    url: self.url.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(announced) = announced
            && announced != body.len() as u64
        {
            return Err(Error::Length {
                url: self.url.to_string(),
                announced,
                actual: body.len() as u64,
            });
        }
        let gzipped = self
            .header(header::CONTENT_ENCODING)
            .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        if !gzipped {
            return Ok(body.freeze());
        }
        // Inflating up to `limit` bytes is seconds of CPU: keep it off the async workers.
        let compressed = body.freeze();
        let inflated = tokio::task::spawn_blocking(move || gunzip_bounded(&compressed, limit))
            .await
            .map_err(|e| Error::Internal(format!("gzip task failed: {e}")))?;
        inflated.map_err(|reason| match reason {
            GunzipError::TooLarge => Error::TooLarge {
                url: self.url.to_string(),
                limit,
            },
            GunzipError::Corrupt(reason) => Error::Document {
                url: self.url.to_string(),
                reason: format!("bad gzip encoding: {reason}"),
            },
        })
    }

    /// True when the body's end is marked by the protocol (a length, chunked coding or HTTP/2
    /// framing), so that a cut connection cannot pass for a complete body.
    pub fn is_framed(&self) -> bool {
        self.version >= http::Version::HTTP_2
            || self.content_length().is_some()
            || self
                .header(header::TRANSFER_ENCODING)
                .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"))
    }
}

enum GunzipError {
    TooLarge,
    Corrupt(String),
}

fn gunzip_bounded(compressed: &[u8], limit: u64) -> Result<Bytes, GunzipError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::new();
    decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// RFC 9110 §10.2.3: `Retry-After` is seconds or an HTTP date (a date already past means now).
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

fn redirect_target(current: &Url, headers: &HeaderMap) -> Result<Url> {
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Redirect {
            url: current.to_string(),
            location: "(no usable Location header)".to_owned(),
        })?;
    current.join(location).map_err(|_| Error::Redirect {
        url: current.to_string(),
        location: location.to_owned(),
    })
}

fn classify_client_error(
    url: &Url,
    error: &hyper_util::client::legacy::Error,
    connect_timeout: Duration,
) -> Error {
    let reason = error_chain(error);
    if has_io_kind(error, std::io::ErrorKind::TimedOut) {
        return Error::Timeout {
            url: url.to_string(),
            timeout: connect_timeout,
        };
    }
    if has_io_kind(error, std::io::ErrorKind::PermissionDenied) {
        return Error::Refused {
            url: url.to_string(),
            reason: innermost(error),
        };
    }
    if error.is_connect() {
        Error::Connect {
            url: url.to_string(),
            reason,
        }
    } else {
        Error::Body {
            url: url.to_string(),
            reason,
        }
    }
}

/// Whether an I/O error of `kind` is among the causes: `TimedOut` for a connect (or name
/// lookup) that took too long, `PermissionDenied` for the address policy's refusal (`egress`).
fn has_io_kind(error: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        current = cause.source();
    }
    false
}

/// The last cause in the chain: the one-line reason itself.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(cause) = current.source() {
        current = cause;
    }
    current.to_string()
}

/// The innermost causes, which say what really happened ("connection refused"), on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gunzip_refuses_bombs() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(matches!(
            gunzip_bounded(&bomb, 1000),
            Err(GunzipError::TooLarge)
        ));
        assert_eq!(gunzip_bounded(&bomb, 1 << 20).ok().unwrap().len(), 1 << 20);
        assert!(matches!(
            gunzip_bounded(b"not gzip", 100),
            Err(GunzipError::Corrupt(_))
        ));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(10)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn redirects_resolve_relative_locations() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/simple/demo/"));
        let from = Url::parse("http://127.0.0.1:1/simple/demo").unwrap();
        let to = redirect_target(&from, &headers).unwrap();
        assert_eq!(to.as_str(), "http://127.0.0.1:1/simple/demo/");
    }
}
