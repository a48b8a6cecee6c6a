//! Relaying requests pmcache does not cache (search, security advisories): one upstream request
//! per client request, the answer streamed back as it comes, nothing stored.

use std::io;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response};
use http_body_util::BodyExt;
use url::Url;

use crate::Proxy;
use crate::body::Body;
use crate::error::Result;

/// Request headers worth relaying: content negotiation.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 3] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::CONTENT_TYPE,
];

/// Response headers that describe the relayed body (hop-by-hop ones are dropped).
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LENGTH,
    header::RETRY_AFTER,
];

/// One request to relay.
pub struct PassThrough<'a> {
    /// The client's method, sent upstream as it is.
    pub method: Method,
    /// The upstream URL to send it to.
    pub url: Url,
    /// The client's headers, of which only the ones that describe the request are forwarded.
    pub headers: &'a HeaderMap,
    /// The client's body (a search query, an audit report).
    pub body: Bytes,
    /// Relay the client's `Authorization`: only to the upstream it was configured for, never
    /// to another host a document named (a client's registry token is not theirs to see).
    pub forward_credentials: bool,
    /// Made for a package a private route takes: the URL may be on the route's host (which
    /// serves nothing else).
    pub routed: bool,
}

impl Proxy {
    /// Relays a request to the upstream and streams its answer back, whatever its status.
    pub async fn pass_through(&self, request: PassThrough<'_>) -> Result<Response<Body>> {
        self.check_route_host(&request.url, request.routed)?;
        let mut headers = HeaderMap::new();
        for name in FORWARDED_REQUEST_HEADERS {
            if let Some(value) = request.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        if request.forward_credentials
            && let Some(value) = request.headers.get(header::AUTHORIZATION)
        {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let upstream = &self.inner.upstream;
        let response = upstream
            .request(request.method, &request.url, &headers, request.body)
            .await?;
        let (parts, incoming) = response.into_parts();
        let timeout = upstream.read_timeout();
        let body = incoming.map_err(io::Error::other).boxed_unsync();
        let mut relayed = Response::new(crate::body::relay(body, timeout));
        *relayed.status_mut() = parts.status;
        for name in FORWARDED_RESPONSE_HEADERS {
            if let Some(value) = parts.headers.get(&name) {
                relayed.headers_mut().insert(name, value.clone());
            }
        }
        Ok(relayed)
    }
}
