//! Responses built from committed blobs: validators, 304, HEAD and single byte ranges.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use std::time::SystemTime;

use pmcache_store::{Access, Digest};

use crate::body::{self, Body};
use crate::error::Result;
use crate::role::Caller;

/// The response header that tells clients and tests how pmcache answered.
pub const CACHE_HEADER: &str = "x-pmcache-cache";
/// Set on metadata served stale because the upstream failed.
pub const STALE_HEADER: &str = "x-pmcache-stale";

/// How a response was produced, for the `X-Pmcache-Cache` header, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache without contacting the upstream.
    Hit,
    /// Fetched from the upstream (and stored if it verified).
    Miss,
    /// Served from the cache because the upstream failed.
    Stale,
    /// The upstream confirmed the cached copy (304).
    Revalidated,
    /// Fetched (and verified) for a read-role caller, not stored: a request that may not
    /// change the cache.
    Relay,
}

impl CacheStatus {
    /// The lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Relay => "relay",
        }
    }
}

/// What pmcache needs to know of the client's request to answer it.
#[derive(Clone, Copy)]
pub struct ClientRequest<'a> {
    /// A HEAD request: headers only.
    pub head: bool,
    /// Its headers: `Accept`, `Accept-Encoding`, `Range`, conditionals, `Host`.
    pub headers: &'a HeaderMap,
    /// Who asks, and so whether the request may change the cache.
    pub caller: &'a Caller,
}

impl<'a> ClientRequest<'a> {
    /// The request `parts` describe, with the caller the server attached to it (see
    /// [`Caller::of`]).
    pub fn of(parts: &'a Parts) -> ClientRequest<'a> {
        ClientRequest {
            head: parts.method == Method::HEAD,
            headers: &parts.headers,
            caller: Caller::attached(parts),
        }
    }

    /// Whether this request may store what it fetches (see [`Role::may_populate`](crate::Role::may_populate)).
    pub fn may_populate(&self) -> bool {
        self.caller.role.may_populate()
    }

    /// How the blobs served to this request count for eviction: a request that may not change
    /// the cache leaves it as it was.
    pub(crate) fn access(&self) -> Access {
        match self.may_populate() {
            true => Access::Note,
            false => Access::Quiet,
        }
    }

    /// Reads a header as text.
    pub fn header(&self, name: header::HeaderName) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when the client's `If-None-Match` names `etag` (or `*`).
    pub fn matches_etag(&self, etag: &str) -> bool {
        self.headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*")
    }

    /// True when the client accepts a gzip content coding.
    pub fn accepts_gzip(&self) -> bool {
        self.header(header::ACCEPT_ENCODING).is_some_and(|value| {
            value.split(',').any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
    }
}

/// The strong ETag of a blob.
pub(crate) fn etag_of(digest: &Digest) -> String {
    format!("\"{}\"", digest.to_hex())
}

/// A byte range the client asked for, resolved against the blob size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: send everything.
    Whole,
    /// `start..=end`.
    Part {
        /// The first byte, counted from 0.
        start: u64,
        /// The last byte, included, below the blob's size.
        end: u64,
    },
    /// Nothing of the blob lies in the range.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n` (RFC 9110 §14.1.2). Multiple ranges and other units are
/// answered with the whole body, which the RFC allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        (true, false) => position(last).map(|suffix| {
            if suffix == 0 || size == 0 {
                None
            } else {
                Some((size.saturating_sub(suffix), size - 1))
            }
        }),
        (false, _) => {
            let start = position(first);
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                position(last)
            };
            match (start, end) {
                (Some(start), Some(end)) if start <= end => {
                    Some((start < size).then(|| (start, end.min(size.saturating_sub(1)))))
                }
                _ => None,
            }
        }
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Whole,
        Some(None) => RangeRequest::Unsatisfiable,
        Some(Some((start, end))) => RangeRequest::Part { start, end },
    }
}

/// A byte position, `1*DIGIT` (RFC 9110 §14.1.2): `str::parse` alone would also take a `+`
/// sign, turning an invalid header into a 206.
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What a range request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// 206 for a single satisfiable range, 416 for an unsatisfiable one (artifacts).
    Honour,
    /// Always the whole body (documents that are rewritten as a whole).
    Ignore,
    /// 206 for a single satisfiable range, the whole body with 200 for a range past the end:
    /// append-only files whose clients resume from their copy's length (the RubyGems compact
    /// index; a 416 there makes Bundler retry in a way that breaks its digest check).
    Append,
}

/// How a committed blob is answered, beyond its bytes.
pub(crate) struct BlobAnswer {
    pub size: u64,
    /// The entity tag, quoted.
    pub etag: String,
    /// When the content last changed, for `If-Modified-Since`.
    pub last_modified: Option<SystemTime>,
    pub ranges: Ranges,
}

/// The bytes of an answer: a committed blob, or a body built for this request.
pub(crate) enum Content {
    File(std::fs::File),
    Bytes(bytes::Bytes),
    /// A whole body that streams as it is made (answers whose ranges are ignored).
    Stream(Body),
}

impl From<std::fs::File> for Content {
    fn from(file: std::fs::File) -> Content {
        Content::File(file)
    }
}

impl From<pmcache_store::BlobContent> for Content {
    fn from(content: pmcache_store::BlobContent) -> Content {
        match content {
            pmcache_store::BlobContent::Memory(bytes) => Content::Bytes(bytes),
            pmcache_store::BlobContent::File(file) => Content::File(file),
        }
    }
}

impl Content {
    fn range(self, start: u64, length: u64) -> Body {
        match self {
            Content::File(file) if length <= SMALL_BODY => small_file_range(file, start, length),
            Content::File(file) => body::file_range(file, start, length),
            Content::Bytes(bytes) => {
                // `start + length` never exceeds the size the answer was built with.
                let (start, end) = (start as usize, (start + length) as usize);
                body::full(bytes.slice(start..end.min(bytes.len())))
            }
            Content::Stream(body) => body,
        }
    }
}

/// Bodies up to this size are read at once and leave with their headers in one write: sent
/// as a second small write, they would wait for the client's delayed ACK of the first.
const SMALL_BODY: u64 = 64 * 1024;

/// A small blob slice read now, on the serving thread, when the page cache holds it: that costs
/// less than a trip to the blocking pool, which takes it otherwise (and reports a blob shorter
/// than its record as a body error).
fn small_file_range(file: std::fs::File, start: u64, length: u64) -> Body {
    let mut bytes = vec![0u8; length as usize];
    if pmcache_store::read_cached_at(&file, &mut bytes, start) == Some(bytes.len()) {
        body::full(bytes)
    } else {
        body::file_range(file, start, length)
    }
}

/// Serves a committed blob: 304 on a matching `If-None-Match` (or, when the client sent none,
/// on an `If-Modified-Since` no older than the content), ranges as `answer.ranges` says, HEAD
/// without a body. `headers` are added as given.
pub(crate) fn blob_response(
    content: impl Into<Content>,
    answer: &BlobAnswer,
    request: ClientRequest<'_>,
    mut headers: HeaderMap,
) -> Result<Response<Body>> {
    let BlobAnswer { size, ref etag, .. } = *answer;
    headers.insert(header::ETAG, header_value(etag));
    if answer.ranges != Ranges::Ignore {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if not_modified(answer, request) {
        return Ok(with_headers(
            StatusCode::NOT_MODIFIED,
            headers,
            body::empty(),
        ));
    }
    let range = match (answer.ranges, request.header(header::IF_RANGE)) {
        (Ranges::Ignore, _) => RangeRequest::Whole,
        (_, Some(validator)) if validator.trim() != etag => RangeRequest::Whole,
        _ => parse_range(request.header(header::RANGE), size),
    };
    let (status, start, length) = match (range, answer.ranges) {
        (RangeRequest::Part { start, end }, _) => {
            let content_range = format!("bytes {start}-{end}/{size}");
            headers.insert(header::CONTENT_RANGE, header_value(&content_range));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        (RangeRequest::Unsatisfiable, Ranges::Honour) => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return Ok(with_headers(
                StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                body::empty(),
            ));
        }
        _ => (StatusCode::OK, 0, size),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = if request.head {
        body::empty()
    } else {
        content.into().range(start, length)
    };
    Ok(with_headers(status, headers, body))
}

/// RFC 9110 §13.1.3: `If-Modified-Since` counts only when `If-None-Match` is absent.
pub(crate) fn not_modified(answer: &BlobAnswer, request: ClientRequest<'_>) -> bool {
    if request.headers.contains_key(header::IF_NONE_MATCH) {
        return request.matches_etag(&answer.etag);
    }
    let since = request
        .header(header::IF_MODIFIED_SINCE)
        .and_then(|value| httpdate::parse_http_date(value).ok());
    match (since, answer.last_modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// `time` as an HTTP date, whole seconds.
pub(crate) fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

pub(crate) fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A header value from text we built; invalid bytes (never expected) become an empty value
/// rather than a panic.
pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl crate::Proxy {
    /// `response`, its body counted in `pmcache_abandoned_total` if the client leaves early:
    /// every document and artifact answer goes through here.
    pub(crate) fn watch_abandon(
        &self,
        response: Response<Body>,
        kind: crate::metrics::Answer,
    ) -> Response<Body> {
        let counter = self.inner.metrics.abandoned(kind);
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        response.map(|body| body::watch_abandon(body, length, counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range(None, 10), RangeRequest::Whole);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            RangeRequest::Part { start: 2, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            RangeRequest::Part { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeRequest::Part { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            RangeRequest::Part { start: 8, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn malformed_ranges_mean_the_whole_body() {
        for bad in [
            "bytes=4-2",
            "bytes=a-b",
            "bytes=-",
            "items=1-2",
            "bytes=1-2,4-5",
            "bytes=99999999999999999999-",
            // A sign is no digit (the grammar the `range` fuzz target checks against).
            "bytes=+2-4",
            "bytes=2-+4",
            "bytes=-+3",
        ] {
            assert_eq!(parse_range(Some(bad), 10), RangeRequest::Whole, "{bad}");
        }
    }

    #[test]
    fn extreme_ranges_resolve_without_overflow() {
        assert_eq!(
            parse_range(Some("bytes=-99999999999"), 10),
            RangeRequest::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some(&format!("bytes=0-{}", u64::MAX)), 10),
            RangeRequest::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some(&format!("bytes={}-", u64::MAX)), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=0-99999999999999999999999"), 10),
            RangeRequest::Whole
        );
        // Nothing of an empty file can be a range.
        for range in ["bytes=0-", "bytes=-5", "bytes=0-0"] {
            assert_eq!(
                parse_range(Some(range), 0),
                RangeRequest::Unsatisfiable,
                "{range}"
            );
        }
    }

    #[test]
    fn gzip_acceptance_honours_q_zero() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate"),
        );
        assert!(
            ClientRequest {
                head: false,
                headers: &headers,
                caller: &crate::role::ANONYMOUS_POPULATE
            }
            .accepts_gzip()
        );
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, identity"),
        );
        assert!(
            !ClientRequest {
                head: false,
                headers: &headers,
                caller: &crate::role::ANONYMOUS_POPULATE
            }
            .accepts_gzip()
        );
    }

    #[test]
    fn etag_matching_accepts_lists_and_weak_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        let request = ClientRequest {
            head: false,
            headers: &headers,
            caller: &crate::role::ANONYMOUS_POPULATE,
        };
        assert!(request.matches_etag("\"abc\""));
        assert!(!request.matches_etag("\"abd\""));
    }
}
