//! The HTTP(S) client that talks to upstream registries: pooled connections, rustls with the ring
//! provider, connect and read timeouts, redirects only where the caller allows, bounded bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use crate::breaker::Breakers;
use crate::budget::{BodyBuffer, ReceivedBody};
use crate::config::Config;
use crate::egress::{AddressPolicy, GuardedConnector};
use crate::error::{Error, Result};
use crate::first_connection::FirstConnections;
use crate::inflate::{self, InflateError, Inflater};
use crate::metrics::{Outcome, ProxyMetrics};

const MAX_REDIRECTS: usize = 5;
/// How long an idle upstream connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// HTTP/2 receive window of one upstream stream (hyper's default).
const H2_STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 receive window of one upstream connection: four stalled streams' worth, and what an
/// upstream may send ahead of pmcache's reading (peak memory of a cold burst grows with it).
const H2_CONNECTION_WINDOW: u32 = 8 << 20;
/// How often an HTTP/2 upstream connection in use is pinged, and how long the answer may
/// take before the connection is given up (a dead connection fails its streams at once rather
/// than each waiting out the read timeout).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
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
    first_connections: Arc<FirstConnections>,
    metrics: ProxyMetrics,
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
    metrics: ProxyMetrics,
}

impl Upstream {
    /// Builds the client; fails when no root certificate can be loaded, or `ca_file` is unusable.
    pub(crate) fn new(config: &Config, metrics: ProxyMetrics) -> Result<Upstream> {
        let policy = Arc::new(AddressPolicy::new(
            config.allow_private_addresses,
            config.connect_timeout,
        ));
        for listed in &config.trusted_hosts {
            let (host, port) =
                crate::egress::host_and_port(listed).ok_or_else(|| Error::BadUpstreamUrl {
                    url: listed.clone(),
                    source: "upstream.trusted_hosts takes host or host:port".into(),
                })?;
            policy.trust(&host, port);
        }
        let guarded = GuardedConnector::new(config.connect_timeout, Arc::clone(&policy));
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(guarded);
        // Every document and artifact body is read as it arrives (docs/architecture.md, "Flow
        // control"), so a stream's window only fills behind a slow client of a relayed body;
        // the connection window leaves room for several of those before other streams stall.
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .http2_keep_alive_interval(H2_KEEP_ALIVE)
            .http2_keep_alive_timeout(H2_KEEP_ALIVE)
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
            first_connections: Arc::default(),
            metrics,
        })
    }

    /// Lets the host of a configured upstream be on a private address (a registry on the LAN,
    /// or on this machine).
    pub fn trust(&self, upstream: &Url) {
        if let Some(host) = upstream.host_str() {
            self.policy.trust(host, upstream.port_or_known_default());
        }
    }

    /// Lets a private route's upstream be on a private address; where nothing else is trusted,
    /// only packages routed there are fetched from it (`route_only_hosts`).
    pub fn trust_route(&self, upstream: &Url) {
        if let Some(host) = upstream.host_str() {
            self.policy
                .trust_route(host, upstream.port_or_known_default());
        }
    }

    /// The routes' hosts (lower case, with port) nothing else is trusted at.
    pub(crate) fn route_only_hosts(&self) -> Vec<(String, Option<u16>)> {
        self.policy.route_only()
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
                source: e.into(),
            })?;
        *request.headers_mut() = headers.clone();
        request
            .headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let origin = url.origin().ascii_serialization();
        let ticket = match self.breakers.admit(&origin) {
            Ok(ticket) => ticket,
            Err(open) => {
                self.metrics
                    .upstream_request(&origin, Outcome::circuit_open, None);
                return Err(Error::CircuitOpen {
                    origin: origin.clone(),
                    failures: open.failures,
                    retry_after: open.retry_after,
                });
            }
        };
        let opening = self
            .first_connections
            .enter(&origin, POOL_IDLE, self.connect_timeout)
            .await;
        let sent = Instant::now();
        let outcome =
            match tokio::time::timeout(self.read_timeout, self.client.request(request)).await {
                Err(_) => Err(Error::Timeout {
                    url: url.to_string(),
                    timeout: self.read_timeout,
                }),
                Ok(Err(error)) => Err(classify_client_error(url, error, self.connect_timeout)),
                Ok(Ok(response)) => Ok(response),
            };
        self.count(&origin, &outcome, sent.elapsed());
        match opening {
            Some(opening) => opening.settled(),
            None => self.first_connections.heard_from(&origin),
        }
        // Only timeouts hold requests for long: a refused connection or an unknown name fails
        // at once anyway, and counting it would keep the breaker open after the upstream is back.
        match &outcome {
            Ok(_) => ticket.succeeded(),
            Err(Error::Timeout { .. }) => ticket.failed(),
            Err(_) => ticket.neutral(),
        }
        outcome
    }

    fn count(&self, origin: &str, outcome: &Result<Response<Incoming>>, elapsed: Duration) {
        let (outcome, answered) = match outcome {
            Ok(response) => (Outcome::answered, Some((response.status(), elapsed))),
            Err(Error::Timeout { .. }) => (Outcome::timeout, None),
            Err(Error::Refused { .. }) => (Outcome::refused, None),
            Err(_) => (Outcome::connect_error, None),
        };
        self.metrics.upstream_request(origin, outcome, answered);
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
            metrics: self.metrics.clone(),
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

    fn body_failed(&self) {
        self.metrics
            .upstream_body_error(&self.url.origin().ascii_serialization());
    }

    /// The next chunk of the body; None at the end. A stall longer than the read timeout is an error.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = tokio::time::timeout(self.read_timeout, self.body.frame()).await;
            match frame {
                Err(_) => {
                    self.body_failed();
                    return Err(Error::Timeout {
                        url: self.url.to_string(),
                        timeout: self.read_timeout,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(error))) => {
                    self.body_failed();
                    return Err(Error::Body {
                        url: self.url.to_string(),
                        source: error.into(),
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

    /// Receives a whole metadata document into `buffer` as it arrives (never waiting on
    /// anything but the upstream: see [`crate::budget`]), decoding gzip on the way (see
    /// [`crate::inflate`]) and refusing more than `limit` bytes, encoded or decoded, so that a
    /// hostile upstream cannot exhaust memory or disk.
    pub(crate) async fn receive_document(
        mut self,
        limit: u64,
        mut buffer: BodyBuffer,
    ) -> Result<ReceivedBody> {
        let announced = self.content_length();
        let mut inflater = self
            .header(header::CONTENT_ENCODING)
            .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
            .then(|| Inflater::new(limit));
        let mut received = 0u64;
        while let Some(chunk) = self.next_chunk().await? {
            received += chunk.len() as u64;
            if received > limit {
                return Err(self.too_large(limit));
            }
            let Some(inflater) = &mut inflater else {
                buffer.push(chunk).await?;
                continue;
            };
            for piece in chunk.chunks(inflate::STEP) {
                let decoded = inflater
                    .step(piece)
                    .map_err(|e| self.undecodable(e, limit))?;
                let large = decoded.len() >= inflate::YIELD_AFTER;
                buffer.push(decoded).await?;
                // Inflating is CPU work on a runtime thread: a step that expanded far (a bomb
                // on its way to refusal) gives the other tasks their turn.
                if large {
                    tokio::task::yield_now().await;
                }
            }
        }
        if let Some(announced) = announced
            && announced != received
        {
            return Err(Error::Length {
                url: self.url.to_string(),
                announced,
                actual: received,
            });
        }
        if let Some(inflater) = inflater {
            let rest = inflater.finish().map_err(|e| self.undecodable(e, limit))?;
            buffer.push(rest).await?;
        }
        Ok(buffer.finish())
    }

    fn too_large(&self, limit: u64) -> Error {
        Error::TooLarge {
            url: self.url.to_string(),
            limit,
        }
    }

    fn undecodable(&self, error: InflateError, limit: u64) -> Error {
        let url = self.url.to_string();
        match error {
            InflateError::TooLarge => self.too_large(limit),
            InflateError::Ratio => Error::Inflation {
                url,
                ratio: inflate::MAX_RATIO,
            },
            InflateError::Corrupt(error) => Error::Document {
                url,
                source: Box::new(BadGzip(error)),
            },
        }
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

/// A gzip body that does not inflate.
#[derive(Debug, thiserror::Error)]
#[error("bad gzip encoding")]
struct BadGzip(#[source] std::io::Error);

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
    error: hyper_util::client::legacy::Error,
    connect_timeout: Duration,
) -> Error {
    if has_io_kind(&error, std::io::ErrorKind::TimedOut) {
        return Error::Timeout {
            url: url.to_string(),
            timeout: connect_timeout,
        };
    }
    if let Some(refusal) = refusal_in(&error) {
        return Error::Refused {
            url: url.to_string(),
            refusal,
        };
    }
    if error.is_connect() {
        Error::Connect {
            url: url.to_string(),
            source: error.into(),
        }
    } else {
        Error::Body {
            url: url.to_string(),
            source: error.into(),
        }
    }
}

/// The address policy's refusal (`egress`), when it is among the causes.
fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<crate::error::Refusal> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        let refusal = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<crate::error::Refusal>());
        if let Some(refusal) = refusal {
            return Some(refusal.clone());
        }
        current = cause.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

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
