//! The proxy core against scripted upstreams on loopback: document freshness, revalidation and
//! stale-if-error, and artifact fills that must not store what nothing vouches for.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use pmcache_proxy::{
    ANONYMOUS_POPULATE, Advertised, ArtifactRecord, ArtifactRequest, ArtifactSource, CacheStatus,
    Caller, Checksum, ClientRequest, Config, DocumentRequest, Proxy, ReadMisses, Rendering, Role,
    Serving, Variant,
};
use pmcache_store::{Store, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// How the scripted upstream answers each request.
#[derive(Clone, Copy)]
enum Script {
    /// 200 with an ETag, or 304 when the request carries `If-None-Match`.
    Document,
    /// Accept, read the request, never answer.
    Stall,
    /// 200 without Content-Length or chunking: the body ends when the connection closes.
    Unframed,
    /// 200 with a Content-Length.
    Framed,
    /// As `Framed`, with [`OTHER_BODY`]: what a code host sends once it regenerated an archive.
    FramedOther,
    /// A document "new" with another ETag, answered only once the test releases the upstream.
    Held,
    /// [`staged_body`] with a Content-Length, its first third at once, the second once the
    /// test releases stage 1, the last at stage 2.
    Staged,
}

const BODY: &[u8] = b"artifact bytes";
const OTHER_BODY: &[u8] = b"artifact BYTES";

struct Upstream {
    url: Url,
    requests: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    /// The stage the test released (`Held` answers at 1).
    release: tokio::sync::watch::Sender<u8>,
}

async fn upstream(script: Script) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let conditional = Arc::new(AtomicUsize::new(0));
    let (counted, revalidations) = (Arc::clone(&requests), Arc::clone(&conditional));
    let (release, released) = tokio::sync::watch::channel(0u8);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (counted, revalidations) = (Arc::clone(&counted), Arc::clone(&revalidations));
            let mut released = released.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let answer: Vec<u8> = match script {
                    Script::Stall => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    Script::Document if head.contains("if-none-match: \"v1\"") => {
                        revalidations.fetch_add(1, Ordering::SeqCst);
                        b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n".to_vec()
                    }
                    Script::Document => {
                        b"HTTP/1.1 200 OK\r\netag: \"v1\"\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\ndoc".to_vec()
                    }
                    Script::Held => {
                        let _ = released.wait_for(|stage| *stage >= 1).await;
                        b"HTTP/1.1 200 OK\r\netag: \"v2\"\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nnew".to_vec()
                    }
                    Script::Staged => {
                        let body = staged_body();
                        let third = body.len() / 3;
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.write_all(&body[..third]).await;
                        let _ = released.wait_for(|stage| *stage >= 1).await;
                        let _ = socket.write_all(&body[third..2 * third]).await;
                        let _ = released.wait_for(|stage| *stage >= 2).await;
                        body[2 * third..].to_vec()
                    }
                    Script::Unframed => [b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".as_slice(), BODY].concat(),
                    Script::Framed | Script::FramedOther => {
                        let body = if matches!(script, Script::Framed) { BODY } else { OTHER_BODY };
                        [
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes(),
                            body,
                        ]
                        .concat()
                    }
                };
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Upstream {
        url,
        requests,
        conditional,
        release,
    }
}

fn proxy(dir: &std::path::Path) -> Proxy {
    proxy_and_store(dir).0
}

/// A proxy on a store in `dir`, and that store, to look at its records.
fn proxy_and_store(dir: &std::path::Path) -> (Proxy, Store) {
    let config = Config {
        read_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let store = Store::open(dir).unwrap();
    let proxy = Proxy::new(store.clone(), &config).unwrap();
    // The fixture upstreams listen on loopback, as a configured upstream may.
    assert!(proxy.trust_listed("127.0.0.1"));
    (proxy, store)
}

fn document_request(url: &Url, ttl: Duration) -> DocumentRequest {
    DocumentRequest {
        ecosystem: "test",
        key: "doc".to_owned(),
        url: url.clone(),
        accept: "*/*",
        ttl,
        allow_redirect: Arc::new(|_: &Url| false),
        known_current: None,
        role: Role::Populate,
    }
}

fn render_upper(document: pmcache_proxy::UpstreamDocument) -> pmcache_proxy::Result<Rendering> {
    Ok(Rendering {
        variants: vec![Variant::new(
            "plain",
            "text/plain",
            document.body.to_ascii_uppercase(),
        )],
        sources: Vec::new(),
        hidden_until: None,
    })
}

async fn body_of(proxy: &Proxy, document: &pmcache_proxy::Document) -> Bytes {
    let headers = HeaderMap::new();
    let client = ClientRequest {
        head: false,
        headers: &headers,
        caller: &ANONYMOUS_POPULATE,
    };
    let response = proxy
        .respond(document, "plain", client, Serving::whole("Accept"))
        .unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn fresh_documents_are_served_without_asking_and_stale_ones_revalidate() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let upstream = upstream(Script::Document).await;

    let first = proxy
        .document(
            document_request(&upstream.url, Duration::from_secs(600)),
            render_upper,
        )
        .await
        .unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(body_of(&proxy, &first).await, "DOC");
    let second = proxy
        .document(
            document_request(&upstream.url, Duration::from_secs(600)),
            render_upper,
        )
        .await
        .unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);

    let revalidated = proxy
        .document(
            document_request(&upstream.url, Duration::ZERO),
            render_upper,
        )
        .await
        .unwrap();
    assert_eq!(revalidated.cache, CacheStatus::Revalidated);
    assert_eq!(upstream.conditional.load(Ordering::SeqCst), 1);
    assert_eq!(body_of(&proxy, &revalidated).await, "DOC");
}

#[tokio::test]
async fn requests_queued_behind_a_failed_refresh_share_its_failure() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let good = upstream(Script::Document).await;
    proxy
        .document(document_request(&good.url, Duration::ZERO), render_upper)
        .await
        .unwrap();

    let stalled = upstream(Script::Stall).await;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let proxy = proxy.clone();
        let url = stalled.url.clone();
        waiting.push(tokio::spawn(async move {
            proxy
                .document(document_request(&url, Duration::ZERO), render_upper)
                .await
                .map(|document| document.cache)
        }));
    }
    for task in waiting {
        assert_eq!(task.await.unwrap().unwrap(), CacheStatus::Stale);
    }
    assert_eq!(
        stalled.requests.load(Ordering::SeqCst),
        1,
        "each queued request waited out the stalled upstream again"
    );
}

#[tokio::test]
async fn a_slow_refresh_serves_the_cached_copy_at_the_stale_deadline_and_finishes_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        read_timeout: Duration::from_secs(60),
        stale_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let proxy = Proxy::new(Store::open(dir.path()).unwrap(), &config).unwrap();
    assert!(proxy.trust_listed("127.0.0.1"));
    let good = upstream(Script::Document).await;
    proxy
        .document(document_request(&good.url, Duration::ZERO), render_upper)
        .await
        .unwrap();

    // Far short of the 60 s read timeout: the deadline, not the upstream, ends each wait.
    let held = upstream(Script::Held).await;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let proxy = proxy.clone();
        let url = held.url.clone();
        waiting.push(tokio::spawn(async move {
            let request = document_request(&url, Duration::ZERO);
            tokio::time::timeout(
                Duration::from_secs(20),
                proxy.document(request, render_upper),
            )
            .await
            .expect("answered long before the read timeout")
        }));
    }
    for task in waiting {
        let document = task.await.unwrap().unwrap();
        assert_eq!(document.cache, CacheStatus::Stale);
        assert_eq!(body_of(&proxy, &document).await, "DOC");
    }
    // At most one: the upstream may not have read the request yet on a slow machine.
    assert!(
        held.requests.load(Ordering::SeqCst) <= 1,
        "every request joins the one refresh under way"
    );

    // Once the upstream answers, the refresh that went on in the background stores it.
    held.release.send(1).unwrap();
    let stored = async {
        loop {
            let cached = proxy
                .cached_document("test", "doc", Duration::from_secs(600))
                .unwrap()
                .unwrap();
            if cached.digest("plain") == Some(pmcache_store::Digest::of(b"NEW")) {
                break cached;
            }
            tokio::task::yield_now().await;
        }
    };
    let refreshed = tokio::time::timeout(Duration::from_secs(20), stored)
        .await
        .expect("the background refresh stored the upstream's answer");
    assert_eq!(body_of(&proxy, &refreshed).await, "NEW");
    assert_eq!(held.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn nothing_cached_and_upstream_failing_is_a_gateway_error() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let stalled = upstream(Script::Stall).await;
    let error = proxy
        .document(document_request(&stalled.url, Duration::ZERO), render_upper)
        .await
        .err()
        .unwrap();
    assert_eq!(error.status(), http::StatusCode::GATEWAY_TIMEOUT, "{error}");
    assert!(error.retry_after().is_some());
}

async fn fetch_artifact(
    proxy: &Proxy,
    url: &Url,
    checksum: Option<Checksum>,
) -> (String, Result<Bytes, String>) {
    fetch_stored_as(proxy, url, checksum, None).await
}

/// The source of `url` with `checksum`, as a document (of its own upstream) advertises it. The
/// document keeps no blob, so that eviction counts only artifacts.
async fn advertised_source(proxy: &Proxy, url: Url, checksum: Option<Checksum>) -> ArtifactSource {
    let id = advertise(proxy, url, checksum, Role::Populate).await;
    proxy
        .advertised("test", &id, Role::Populate)
        .unwrap()
        .into_source()
        .unwrap()
}

/// Has a document (of its own upstream, fetched for a `role` request) advertise `url` with
/// `checksum`; returns the artifact's id.
async fn advertise(proxy: &Proxy, url: Url, checksum: Option<Checksum>, role: Role) -> String {
    let advertiser = upstream(Script::Document).await;
    let mut request = document_request(&advertiser.url, Duration::from_secs(60));
    request.key = format!("advertiser/{}", advertiser.url);
    request.role = role;
    let id = request.key.clone();
    let advertised = Advertised {
        id: id.clone(),
        url,
        checksum,
        package: "advertised".to_owned(),
        version: None,
        published: None,
    };
    proxy
        .document(request, move |_| {
            Ok(Rendering {
                variants: Vec::new(),
                sources: vec![advertised],
                hidden_until: None,
            })
        })
        .await
        .unwrap();
    id
}

/// As [`fetch_artifact`], stored under `key` with its first bytes pinned when `key` is given.
async fn fetch_stored_as(
    proxy: &Proxy,
    url: &Url,
    checksum: Option<Checksum>,
    key: Option<&str>,
) -> (String, Result<Bytes, String>) {
    fetch_by(proxy, url, checksum, key, &ANONYMOUS_POPULATE).await
}

/// As [`fetch_stored_as`], asked by `caller`.
async fn fetch_by(
    proxy: &Proxy,
    url: &Url,
    checksum: Option<Checksum>,
    key: Option<&str>,
    caller: &Caller,
) -> (String, Result<Bytes, String>) {
    let headers = HeaderMap::new();
    let request = ArtifactRequest {
        ecosystem: "test",
        source: advertised_source(proxy, url.join("file.bin").unwrap(), checksum).await,
        content_type: "application/octet-stream",
        client: ClientRequest {
            head: false,
            headers: &headers,
            caller,
        },
        redirect_hosts: &[],
        key: key.map(str::to_owned),
        pin_first_seen: key.is_some(),
        announce_unverified_length: true,
    };
    // A fill that fails before the response starts is an error response (502); one that fails
    // later aborts the body. Either is a failed download.
    let response = match proxy.artifact(request).await {
        Ok(response) => response,
        Err(error) => return ("error".to_owned(), Err(error.to_string())),
    };
    let cache = response.headers()[pmcache_proxy::CACHE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (cache, body)
}

#[tokio::test]
async fn unframed_bodies_without_a_checksum_are_served_but_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let upstream = upstream(Script::Unframed).await;
    for _ in 0..2 {
        let (cache, body) = fetch_artifact(&proxy, &upstream.url, None).await;
        assert_eq!(cache, "miss");
        assert_eq!(body.unwrap(), BODY);
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn verified_artifacts_are_stored_and_mismatches_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let upstream = upstream(Script::Framed).await;
    let right = Checksum::from_hex("sha256", &pmcache_store::Digest::of(BODY).to_hex());
    let wrong = Checksum::from_hex("sha256", &pmcache_store::Digest::of(b"other").to_hex());

    let (_, body) = fetch_artifact(&proxy, &upstream.url, wrong.clone()).await;
    assert!(body.is_err(), "a mismatching body must fail, got {body:?}");
    let (cache, body) = fetch_artifact(&proxy, &upstream.url, right.clone()).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("miss", BODY));
    let (cache, body) = fetch_artifact(&proxy, &upstream.url, right).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("hit", BODY));
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unchanged_body_is_not_rendered_again_without_validators() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    // `Framed` sends no ETag or Last-Modified, like the intermediaries some networks have.
    let upstream = upstream(Script::Framed).await;
    let renders = Arc::new(AtomicUsize::new(0));
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let counter = Arc::clone(&renders);
        let document = proxy
            .document(
                document_request(&upstream.url, Duration::ZERO),
                move |document| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    render_upper(document)
                },
            )
            .await
            .unwrap();
        outcomes.push(document.cache);
        assert_eq!(body_of(&proxy, &document).await, BODY.to_ascii_uppercase());
    }
    assert_eq!(
        outcomes,
        [
            CacheStatus::Miss,
            CacheStatus::Revalidated,
            CacheStatus::Revalidated
        ]
    );
    assert_eq!(renders.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 3);
}

/// A body long enough to get a gzip copy.
fn long_body() -> Vec<u8> {
    (0..4000u32).map(|i| b'a' + (i % 26) as u8).collect()
}

fn render_appendable(_: pmcache_proxy::UpstreamDocument) -> pmcache_proxy::Result<Rendering> {
    let variant = Variant::new("file", "text/plain", long_body()).with_etag("\"md5\"".to_owned());
    Ok(Rendering {
        variants: vec![
            variant,
            Variant::new("packed", "x/y", long_body()).uncompressed(),
        ],
        sources: Vec::new(),
        hidden_until: None,
    })
}

/// A proxy over `dir` holding a document rendered by [`render_appendable`].
async fn appendable_document(dir: &std::path::Path) -> (Proxy, pmcache_proxy::Document) {
    let proxy = proxy(dir);
    let upstream = upstream(Script::Document).await;
    let request = document_request(&upstream.url, Duration::from_secs(60));
    let document = proxy.document(request, render_appendable).await.unwrap();
    (proxy, document)
}

/// Answers `headers` with `variant` of `document`; the status, headers and body.
async fn answer(
    proxy: &Proxy,
    document: &pmcache_proxy::Document,
    variant: &str,
    serving: Serving,
    headers: &[(&'static str, &str)],
) -> (http::StatusCode, HeaderMap, Bytes) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    let client = ClientRequest {
        head: false,
        headers: &map,
        caller: &ANONYMOUS_POPULATE,
    };
    let response = proxy.respond(document, variant, client, serving).unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn appendable_documents_answer_ranges_with_identity_slices_and_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, document) = appendable_document(dir.path()).await;
    let body = long_body();
    let sha256 = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
    };
    let serving = Serving::appendable("Accept-Encoding");
    let gzip = ("accept-encoding", "gzip");

    // Whole, gzip-encoded: the digests still describe the identity body.
    let (status, headers, _) = answer(&proxy, &document, "file", serving, &[gzip]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["etag"], "\"md5\"");
    assert_eq!(
        headers["repr-digest"],
        format!("sha-256=:{sha256}:").as_str()
    );
    assert_eq!(headers["digest"], format!("sha-256={sha256}").as_str());

    // A resumed download: 206 of identity bytes, even though gzip is accepted.
    let (status, headers, sent) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[gzip, ("range", "bytes=3990-")],
    )
    .await;
    assert_eq!(status, 206);
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(headers["content-range"], "bytes 3990-3999/4000");
    assert_eq!(headers["etag"], "\"md5\"");
    assert_eq!(
        headers["repr-digest"],
        format!("sha-256=:{sha256}:").as_str()
    );
    assert_eq!(sent, body[3990..]);

    // Past the end (the file shrank upstream): the whole body, 200, never 416.
    let (status, headers, sent) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[gzip, ("range", "bytes=9000-")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("content-encoding"));
    assert!(!headers.contains_key("content-range"));
    assert_eq!(sent, body);

    // The frontend's entity tag is what If-None-Match is compared with, Range or not.
    let (status, _, sent) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[("if-none-match", "\"md5\""), ("range", "bytes=3999-")],
    )
    .await;
    assert_eq!(status, 304);
    assert!(sent.is_empty());
    let (status, _, _) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn whole_documents_ignore_ranges_and_honour_if_modified_since() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, document) = appendable_document(dir.path()).await;
    let serving = Serving::whole("Accept-Encoding");

    let (status, headers, sent) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[("range", "bytes=10-")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sent.len(), 4000);
    assert!(!headers.contains_key("repr-digest"));
    let last_modified = headers["last-modified"].to_str().unwrap().to_owned();

    let (status, _, sent) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(status, 304);
    assert!(sent.is_empty());
    let long_ago = "Mon, 01 Jan 2001 00:00:00 GMT";
    let (status, _, _) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[("if-modified-since", long_ago)],
    )
    .await;
    assert_eq!(status, 200);
    // If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3).
    let (status, _, _) = answer(
        &proxy,
        &document,
        "file",
        serving,
        &[
            ("if-modified-since", &last_modified),
            ("if-none-match", "\"other\""),
        ],
    )
    .await;
    assert_eq!(status, 200);

    // Files that are compressed already are never sent with a Content-Encoding.
    let (status, headers, sent) = answer(
        &proxy,
        &document,
        "packed",
        serving,
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(sent, long_body());
}

#[tokio::test]
async fn pinned_artifacts_keep_their_first_bytes_wherever_they_are_fetched_from() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let first = upstream(Script::Framed).await;
    let moved = upstream(Script::FramedOther).await;
    let key = Some("dist/vendor/name/ref");

    let (cache, body) = fetch_stored_as(&proxy, &first.url, None, key).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("miss", BODY));
    // The same artifact published at another URL: the stored bytes, no fetch.
    let (cache, body) = fetch_stored_as(&proxy, &moved.url, None, key).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("hit", BODY));
    assert_eq!(moved.requests.load(Ordering::SeqCst), 0);

    // The blob is lost: a refetch that brings other bytes is refused and stores nothing.
    let blob = pmcache_store::Digest::of(BODY).to_hex();
    let path = dir
        .path()
        .join("blobs")
        .join(&blob[..2])
        .join(&blob[2..4])
        .join(&blob);
    std::fs::remove_file(&path).unwrap();
    let (_, body) = fetch_stored_as(&proxy, &moved.url, None, key).await;
    assert!(
        body.is_err(),
        "other bytes for a pinned artifact must fail, got {body:?}"
    );
    assert_eq!(moved.requests.load(Ordering::SeqCst), 1);
    // The first bytes are still the only ones accepted.
    let (cache, body) = fetch_stored_as(&proxy, &first.url, None, key).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("miss", BODY));
    assert!(path.is_file());
}

#[tokio::test]
async fn requests_queued_behind_a_refetch_take_its_result_when_they_know_it_current() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let upstream = upstream(Script::Document).await;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let proxy = proxy.clone();
        let url = upstream.url.clone();
        waiting.push(tokio::spawn(async move {
            // Always refetch, unless the copy is one the frontend knows is current.
            let mut request = document_request(&url, Duration::ZERO);
            request.known_current = Some(Arc::new(|document: &pmcache_proxy::Document| {
                document.digest("plain") == Some(pmcache_store::Digest::of(b"DOC"))
            }));
            proxy.document(request, render_upper).await.map(|d| d.cache)
        }));
    }
    for task in waiting {
        task.await.unwrap().unwrap();
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn evicted_pinned_artifacts_still_refuse_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let proxy = Proxy::new(store.clone(), &Config::default()).unwrap();
    assert!(proxy.trust_listed("127.0.0.1"));
    let first = upstream(Script::Framed).await;
    let moved = upstream(Script::FramedOther).await;
    let key = Some("dist/vendor/name/ref");
    let evict_everything = pmcache_store::Config {
        max_size: Some(pmcache_store::ByteSize(1)),
        ..pmcache_store::Config::default()
    };

    let (_, body) = fetch_stored_as(&proxy, &first.url, None, key).await;
    assert_eq!(body.unwrap(), BODY);
    // Twice: the refetched record (verified against the pin) must keep it too.
    for round in 0..2 {
        let report = store
            .maintain(&pmcache_proxy::SCHEMA, &evict_everything)
            .unwrap();
        assert_eq!(report.evicted_blobs, 1, "round {round}");
        let (_, body) = fetch_stored_as(&proxy, &moved.url, None, key).await;
        assert!(
            body.is_err(),
            "round {round}: other bytes must fail, got {body:?}"
        );
        let (cache, body) = fetch_stored_as(&proxy, &first.url, None, key).await;
        assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("miss", BODY));
    }
    assert!(
        store
            .verify(&pmcache_proxy::SCHEMA, false)
            .unwrap()
            .is_consistent()
    );
}

fn read_caller() -> Caller {
    Caller::anonymous(Role::Read)
}

/// The record of the test artifact fetched from `upstream` (see [`advertised_source`]).
fn artifact_record(store: &Store, upstream: &Upstream) -> Option<ArtifactRecord> {
    let key = format!("test/{}", upstream.url.join("file.bin").unwrap());
    store.get(Table::Artifacts, &key).unwrap()
}

#[tokio::test]
async fn read_callers_relay_artifact_misses_and_hit_what_a_populate_caller_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, store) = proxy_and_store(dir.path());
    let upstream = upstream(Script::Framed).await;
    let checksum = Checksum::from_hex("sha256", &pmcache_store::Digest::of(BODY).to_hex());
    let reader = read_caller();
    for round in 1..=2 {
        let (cache, body) = fetch_by(&proxy, &upstream.url, checksum.clone(), None, &reader).await;
        assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("relay", BODY));
        assert_eq!(upstream.requests.load(Ordering::SeqCst), round);
        assert!(artifact_record(&store, &upstream).is_none());
    }
    // The advertising document keeps no blob: the store is empty.
    assert_eq!(store.stats().size_bytes, 0);

    let gate = Caller {
        role: Role::Populate,
        token: Some("gate".to_owned()),
    };
    let (cache, body) = fetch_by(&proxy, &upstream.url, checksum.clone(), None, &gate).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("miss", BODY));
    let record = artifact_record(&store, &upstream).expect("stored by the populate caller");
    let by = record.stored_by.expect("who stored it");
    assert_eq!(
        (by.role, by.token.as_deref()),
        (Role::Populate, Some("gate"))
    );
    assert_eq!(store.stats().size_bytes, BODY.len() as u64);

    let (cache, body) = fetch_by(&proxy, &upstream.url, checksum, None, &reader).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("hit", BODY));
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_read_misses_are_a_403_and_ask_nothing_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    proxy.set_read_misses(ReadMisses::Refuse);
    let upstream = upstream(Script::Framed).await;
    let checksum = Checksum::from_hex("sha256", &pmcache_store::Digest::of(BODY).to_hex());
    let (cache, body) = fetch_by(
        &proxy,
        &upstream.url,
        checksum.clone(),
        None,
        &read_caller(),
    )
    .await;
    assert_eq!(cache, "error");
    let reason = body.unwrap_err();
    assert!(
        reason.contains("read-role request may not fill the cache"),
        "{reason}"
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);

    let (cache, _) = fetch_by(
        &proxy,
        &upstream.url,
        checksum.clone(),
        None,
        &ANONYMOUS_POPULATE,
    )
    .await;
    assert_eq!(cache, "miss");
    let (cache, body) = fetch_by(&proxy, &upstream.url, checksum, None, &read_caller()).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("hit", BODY));
}

#[tokio::test]
async fn read_callers_never_pin_the_first_bytes_they_see() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let first = upstream(Script::Framed).await;
    let (cache, body) = fetch_by(&proxy, &first.url, None, Some("dist/a"), &read_caller()).await;
    assert_eq!((cache.as_str(), body.unwrap().as_ref()), ("relay", BODY));
    // Had the read pinned BODY, the populate fetch of other bytes under the key would fail.
    let other = upstream(Script::FramedOther).await;
    let (cache, body) = fetch_stored_as(&proxy, &other.url, None, Some("dist/a")).await;
    assert_eq!(
        (cache.as_str(), body.unwrap().as_ref()),
        ("miss", OTHER_BODY)
    );
}

#[tokio::test]
async fn read_callers_revalidate_stale_documents_without_storing_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, store) = proxy_and_store(dir.path());
    let upstream = upstream(Script::Document).await;
    let populate = |ttl| document_request(&upstream.url, ttl);
    let read = |ttl| DocumentRequest {
        role: Role::Read,
        ..document_request(&upstream.url, ttl)
    };

    // A miss for a reader is fetched and served, not stored.
    let relayed = proxy
        .document(read(Duration::from_secs(600)), render_upper)
        .await
        .unwrap();
    assert_eq!(relayed.cache, CacheStatus::Relay);
    assert_eq!(body_of(&proxy, &relayed).await, "DOC");
    assert!(stored_document(&store).is_none());
    assert_eq!(store.stats().size_bytes, 0, "a read stored a blob");
    // Within the TTL, other readers get the relayed copy without asking again.
    let again = proxy
        .document(read(Duration::from_secs(600)), render_upper)
        .await
        .unwrap();
    assert_eq!(body_of(&proxy, &again).await, "DOC");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);

    proxy
        .document(populate(Duration::from_secs(600)), render_upper)
        .await
        .unwrap();
    let stored = stored_document(&store).expect("stored by the populate request");
    let requests = upstream.requests.load(Ordering::SeqCst);

    let revalidated = proxy
        .document(read(Duration::ZERO), render_upper)
        .await
        .unwrap();
    assert_eq!(revalidated.cache, CacheStatus::Relay);
    assert_eq!(body_of(&proxy, &revalidated).await, "DOC");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), requests + 1);
    assert_eq!(upstream.conditional.load(Ordering::SeqCst), 1);
    assert_eq!(
        stored_document(&store),
        Some(stored.clone()),
        "a read changed the record"
    );

    // A populate request past the TTL revalidates into the store.
    let refreshed = proxy
        .document(populate(Duration::ZERO), render_upper)
        .await
        .unwrap();
    assert_eq!(refreshed.cache, CacheStatus::Revalidated);
    assert_eq!(upstream.conditional.load(Ordering::SeqCst), 2);
}

/// The stored record of the test document, as JSON.
fn stored_document(store: &Store) -> Option<serde_json::Value> {
    store.get(Table::Documents, "test/doc").unwrap()
}

/// 768 KiB that are not all the same byte.
fn staged_body() -> Vec<u8> {
    (0..768 * 1024u32).map(|i| (i % 251) as u8).collect()
}

/// Reads `response`'s body until at least `want` bytes came (or it ends), appending to `into`.
async fn read_at_least(body: &mut pmcache_proxy::Body, into: &mut Vec<u8>, want: usize) {
    while into.len() < want {
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    into.extend_from_slice(&data);
                }
            }
            None => return,
        }
    }
}

/// Two read-role clients of one cold artifact, the second arriving after the first has read
/// past bytes the relay no longer holds: the second gets a relay of its own (it used to join
/// and fail half-way), and both get every byte.
#[tokio::test]
async fn a_late_reader_of_a_relay_gets_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let upstream = upstream(Script::Staged).await;
    let body = staged_body();
    let third = body.len() / 3;
    let checksum = Checksum::from_hex("sha256", &pmcache_store::Digest::of(&body).to_hex());
    let reader = read_caller();
    let headers = HeaderMap::new();
    let request = |source| ArtifactRequest {
        ecosystem: "test",
        source,
        content_type: "application/octet-stream",
        client: ClientRequest {
            head: false,
            headers: &headers,
            caller: &reader,
        },
        redirect_hosts: &[],
        key: None,
        pin_first_seen: false,
        announce_unverified_length: true,
    };
    let url = upstream.url.join("file.bin").unwrap();
    let source = advertised_source(&proxy, url.clone(), checksum.clone()).await;
    let mut first = proxy.artifact(request(source)).await.unwrap().into_body();
    let mut first_bytes = Vec::new();
    read_at_least(&mut first, &mut first_bytes, third).await;
    upstream.release.send(1).unwrap();
    read_at_least(&mut first, &mut first_bytes, 2 * third).await;

    let source = advertised_source(&proxy, url, checksum).await;
    let second = proxy.artifact(request(source)).await.unwrap();
    upstream.release.send(2).unwrap();
    read_at_least(&mut first, &mut first_bytes, body.len()).await;
    let second_bytes = second.into_body().collect().await.unwrap().to_bytes();
    assert!(first_bytes == body, "the first reader got other bytes");
    assert!(second_bytes == body, "the late reader got other bytes");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
}

/// What a reader advertised to itself stays its own: a populate caller does not learn an
/// artifact's source from a relayed document, a reader does.
#[tokio::test]
async fn sources_of_relayed_documents_are_known_to_readers_only() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path());
    let url = Url::parse("http://127.0.0.1:9/file.bin").unwrap();
    let id = advertise(&proxy, url, None, Role::Read).await;
    let for_reader = proxy.advertised("test", &id, Role::Read).unwrap();
    assert!(
        for_reader.into_source().is_ok(),
        "a reader lost its relayed source"
    );
    let for_populate = proxy.advertised("test", &id, Role::Populate).unwrap();
    assert!(
        for_populate.into_source().is_err(),
        "a populate caller trusted a source only a read request fetched"
    );
}

/// A read-role hit is not a use: the blob it read is evicted first all the same.
#[tokio::test]
async fn read_hits_leave_the_eviction_order_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, store) = proxy_and_store(dir.path());
    let older = upstream(Script::Framed).await;
    let newer = upstream(Script::FramedOther).await;
    fetch_artifact(&proxy, &older.url, None).await.1.unwrap();
    proxy.flush().unwrap();
    // Access times are in milliseconds: each use must land in a later one to order them.
    next_millisecond();
    fetch_artifact(&proxy, &newer.url, None).await.1.unwrap();
    proxy.flush().unwrap();
    next_millisecond();
    let (cache, _) = fetch_by(&proxy, &older.url, None, None, &read_caller()).await;
    assert_eq!(cache, "hit");
    proxy.flush().unwrap();
    let storage = pmcache_store::Config {
        // Room for one of the two.
        max_size: Some(pmcache_store::ByteSize(2 * BODY.len() as u64 - 1)),
        ..pmcache_store::Config::default()
    };
    store.maintain(&pmcache_proxy::SCHEMA, &storage).unwrap();
    let evicted = |bytes: &[u8]| store.blob_path(&pmcache_store::Digest::of(bytes)).is_none();
    assert!(evicted(BODY), "the blob only a reader used since was kept");
    assert!(!evicted(OTHER_BODY), "the blob used last was evicted");
}

/// Returns once the wall clock has moved past the current millisecond.
fn next_millisecond() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let start = now();
    while now() <= start {
        std::thread::yield_now();
    }
}
