//! The `/packagist/` routes: the root file, p2 metadata, dist archives, and the endpoints that
//! are relayed (search, advisories, lists) or answered at once (notify-batch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use pmcache_proxy::{
    self as proxy, ArtifactRequest, ArtifactSource, Body, CacheStatus, ClientRequest, Document,
    DocumentRequest, PassThrough, RedirectPolicy, Rendering, UpstreamDocument, Variant,
};
use url::Url;

use crate::error::{Error, Result};
use crate::name::PackageName;
use crate::path::{self, Endpoint, Route};
use crate::rewrite::{self, Dist, DistRewrite};
use crate::{Frontend, MOUNT};

/// How old cached p2 files must be before a dist they do not list makes pmcache fetch them
/// again: bounds how often made-up references can send pmcache to the upstream.
const REFETCH_FLOOR: Duration = Duration::from_secs(10);
/// Index keys and metrics label of this frontend.
const ECOSYSTEM: &str = "packagist";
const JSON: &str = "application/json";
const VARY: &str = "Accept-Encoding";
/// The same, when URLs name the origin the client used (no `public_url`): a shared cache in
/// front of pmcache must not hand one client's rendering to another.
const VARY_BY_ORIGIN: &str = "Accept-Encoding, Host, X-Forwarded-Proto, Forwarded";
/// The variant clients get.
const CLIENT: &str = "client";
/// The root file's upstream URLs, by endpoint: kept beside the rendering, never served.
const LINKS: &str = "links";
/// The root file's key.
const ROOT_KEY: &str = "packages.json";
/// Where the client's origin goes in stored renderings (URLs there must be absolute): replaced,
/// per request, by the origin the client reached pmcache at, so that one fetch and one stored
/// copy serve every Host. `.invalid` is reserved (RFC 6761): no upstream can own it.
const ORIGIN: &str = "http://pmcache-origin.invalid";
/// How long a relayed install notification may take; nobody waits for it.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, body: Bytes, path: &str) -> Result<Response<Body>> {
        let method = &parts.method;
        let readable = method == Method::GET || method == Method::HEAD;
        let client = ClientRequest {
            head: method == Method::HEAD,
            headers: &parts.headers,
        };
        match path::classify(path)? {
            Route::PackagesJson if readable => {
                let document = self.root(self.ttl).await?;
                self.respond(&document, parts, client).await
            }
            Route::P2 { package, dev } if readable => {
                let document = self.p2(&package, dev, self.ttl).await?;
                self.respond(&document, parts, client).await
            }
            Route::Dist { package, file } if readable => self.dist(&package, &file, client).await,
            Route::Endpoint {
                endpoint: Endpoint::NotifyBatch,
                ..
            } => match method == Method::POST {
                true => Ok(self.notify(parts, body)),
                false => Err(Error::MethodNotAllowed {
                    method: method.to_string(),
                }),
            },
            Route::Endpoint { endpoint, package }
                if readable || (method == Method::POST && endpoint.takes_posts()) =>
            {
                self.relay(endpoint, package.as_ref(), parts, body).await
            }
            _ => Err(Error::MethodNotAllowed {
                method: method.to_string(),
            }),
        }
    }

    /// A stored rendering, with the placeholder origin replaced by the one this client reached
    /// pmcache at.
    async fn respond(
        &self,
        document: &Document,
        parts: &Parts,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let authority = parts.uri.authority().map(|a| a.as_str());
        let origin = proxy::client_origin(&parts.headers, authority, self.public_url.as_ref())
            .ok_or(Error::NoHost)?;
        let vary = match self.public_url {
            Some(_) => VARY,
            None => VARY_BY_ORIGIN,
        };
        Ok(self
            .proxy
            .respond_for_origin(document, CLIENT, client, vary, (ORIGIN, &origin))
            .await?)
    }

    /// How dists are rewritten: to pmcache's dists route below the placeholder origin.
    fn dist_rewrite(&self) -> (String, bool) {
        (format!("{ORIGIN}{MOUNT}/dists/"), self.keep_source)
    }

    /// `packages.json`, rewritten with the placeholder origin, with the upstream URLs behind it.
    async fn root(&self, ttl: Duration) -> Result<Document> {
        let url = self.upstream_url("packages.json")?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: ROOT_KEY.to_owned(),
            url,
            accept: JSON,
            ttl,
            allow_redirect: proxy::same_origin(&self.upstream),
            known_current: None,
        };
        let (dists_base, keep_source) = self.dist_rewrite();
        let render = move |document: UpstreamDocument| {
            let dists = DistRewrite {
                base: &dists_base,
                keep_source,
            };
            let base = format!("{ORIGIN}{MOUNT}");
            let root = rewrite::rewrite_root(&document.body, &document.url, &base, dists)
                .map_err(|reason| malformed(&document, reason))?;
            let links = serde_json::to_vec(&root.links)
                .map_err(|e| proxy::Error::failed("serialising links", e))?;
            Ok(Rendering {
                variants: vec![
                    Variant::new(CLIENT, JSON, root.body),
                    Variant::new(LINKS, JSON, links).uncompressed(),
                ],
                sources: root.dists.iter().map(source_of).collect(),
            })
        };
        Ok(self.proxy.document(request, render).await?)
    }

    /// The upstream URL (template) behind each endpoint, from the cached root file however old
    /// (they rarely change, and asking the upstream for the root before every p2 file would
    /// double the requests), else from a fetched one.
    async fn links(&self) -> Result<BTreeMap<String, String>> {
        let document = match self.proxy.cached_document(ECOSYSTEM, ROOT_KEY, self.ttl)? {
            Some(document) => document,
            None => self.root(self.ttl).await?,
        };
        let bytes = self.proxy.variant_bytes(&document, LINKS).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Proxy(proxy::Error::failed("stored links are unreadable", e)))
    }

    /// The upstream URL behind `link` (a key of the root's links), `%package%` filled in.
    async fn link_url(&self, link: &str, package: Option<&str>) -> Result<Url> {
        let links = self.links().await?;
        let template = links.get(link).ok_or_else(|| Error::UpstreamLacks {
            what: link.to_owned(),
        })?;
        let filled = match package {
            Some(package) => template.replace("%package%", package),
            None => template.clone(),
        };
        Url::parse(&filled).map_err(|e| {
            Error::Proxy(proxy::Error::BadUpstreamUrl {
                url: filled,
                source: e.into(),
            })
        })
    }

    /// `p2/VENDOR/NAME.json` (or `~dev.json`), dists rewritten below the placeholder origin.
    /// Only the requested package's dists are recorded as sources: a p2 file cannot decide
    /// where another package's archives come from.
    async fn p2(&self, package: &PackageName, dev: bool, ttl: Duration) -> Result<Document> {
        let name = match dev {
            true => format!("{package}~dev"),
            false => package.to_string(),
        };
        let url = self.link_url("metadata-url", Some(&name)).await?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: format!("p2/{name}"),
            allow_redirect: proxy::same_origin(&url),
            url,
            accept: JSON,
            ttl,
            known_current: None,
        };
        let (dists_base, keep_source) = self.dist_rewrite();
        let package = package.to_string();
        let render = move |document: UpstreamDocument| {
            let dists = DistRewrite {
                base: &dists_base,
                keep_source,
            };
            let p2 = rewrite::rewrite_p2(&document.body, &document.url, dists)
                .map_err(|reason| malformed(&document, reason))?;
            let own = p2.dists.iter().filter(|dist| dist.package == package);
            Ok(Rendering {
                variants: vec![Variant::new(CLIENT, JSON, p2.body)],
                sources: own.map(source_of).collect(),
            })
        };
        Ok(self.proxy.document(request, render).await?)
    }

    async fn dist(
        &self,
        package: &PackageName,
        file: &str,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let id = dist_id(package.as_str(), file);
        let source = match self.proxy.source(ECOSYSTEM, &id)? {
            Some(source) => source,
            None => self.learn_dist(package, file).await?,
        };
        if !self.dist_host_allowed(&source.url) {
            return Err(Error::DistHostNotAllowed {
                package: package.to_string(),
                host: host_of(&source.url),
            });
        }
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            allow_redirect: self.dist_redirects(&source.url),
            source,
            content_type: "application/octet-stream",
            client,
            // One archive per package and reference, wherever it is published: a code host
            // that regenerates it with other bytes must not change what clients get.
            key: Some(id),
            pin_first_seen: true,
            announce_unverified_length: true,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    /// A dist no rendering pmcache holds lists (`composer install` from a lock reads no
    /// metadata): learnt from the package's p2 files, fetched again if the cached ones may
    /// predate it (and are older than [`REFETCH_FLOOR`]).
    async fn learn_dist(&self, package: &PackageName, file: &str) -> Result<ArtifactSource> {
        let id = dist_id(package.as_str(), file);
        let mut stale = false;
        for ttl in [self.ttl, REFETCH_FLOOR] {
            for dev in [false, true] {
                match self.p2(package, dev, ttl).await {
                    Ok(document) => stale |= document.cache == CacheStatus::Stale,
                    Err(error) if error.is_not_found() => {}
                    Err(error) => return Err(error),
                }
                if let Some(source) = self.proxy.source(ECOSYSTEM, &id)? {
                    return Ok(source);
                }
            }
        }
        let (package, reference) = (package.to_string(), file.to_owned());
        // A copy served because the upstream is down may just predate the release.
        if stale {
            Err(Error::UpstreamDown { package, reference })
        } else {
            Err(Error::UnknownDist { package, reference })
        }
    }

    fn dist_host_allowed(&self, url: &Url) -> bool {
        self.dist_hosts.is_empty() || host_listed(&self.dist_hosts, url)
    }

    /// Code hosts answer archive URLs with redirects (GitHub: to codeload): followed within the
    /// origin, and elsewhere to https hosts, or only to listed hosts when `dist_hosts` is set.
    fn dist_redirects(&self, url: &Url) -> RedirectPolicy {
        redirect_policy(url, self.dist_hosts.clone())
    }

    /// notify-batch: answered at once, relayed in the background when the root file is
    /// cached; an install never waits for statistics, nor fails for them.
    fn notify(&self, parts: &Parts, body: Bytes) -> Response<Body> {
        let proxy = self.proxy.clone();
        let headers = parts.headers.clone();
        let cached_root = self.proxy.cached_document(ECOSYSTEM, ROOT_KEY, self.ttl);
        tokio::spawn(async move {
            let Ok(Some(root)) = cached_root else { return };
            let Ok(bytes) = proxy.variant_bytes(&root, LINKS).await else {
                return;
            };
            let Some(url) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes)
                .ok()
                .and_then(|links| Url::parse(links.get("notify-batch")?).ok())
            else {
                return;
            };
            let relay = proxy.pass_through(PassThrough {
                method: Method::POST,
                url,
                headers: &headers,
                body,
                forward_credentials: false,
            });
            if let Ok(Ok(response)) = tokio::time::timeout(NOTIFY_TIMEOUT, relay).await {
                let _ = tokio::time::timeout(NOTIFY_TIMEOUT, drain(response)).await;
            }
        });
        let mut response = Response::new(proxy::full("{\"status\":\"success\"}"));
        *response.status_mut() = StatusCode::CREATED;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
        response
    }

    /// Relays a request to the upstream URL behind `endpoint`, the client's query string
    /// included; the client's credentials go only to the configured upstream's own origin.
    async fn relay(
        &self,
        endpoint: Endpoint,
        package: Option<&PackageName>,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>> {
        let mut url = self
            .link_url(&endpoint.link(), package.map(PackageName::as_str))
            .await?;
        if let Some(query) = parts.uri.query() {
            url.set_query(Some(query));
        }
        let forward_credentials = url.origin() == self.upstream.origin();
        Ok(self
            .proxy
            .pass_through(PassThrough {
                method: parts.method.clone(),
                url,
                headers: &parts.headers,
                body,
                forward_credentials,
            })
            .await?)
    }

    fn upstream_url(&self, path: &str) -> Result<Url> {
        self.upstream.join(path).map_err(|e| {
            Error::Proxy(proxy::Error::BadUpstreamUrl {
                url: self.upstream.to_string(),
                source: e.into(),
            })
        })
    }
}

fn dist_id(package: &str, file: &str) -> String {
    format!("dist/{package}/{file}")
}

fn source_of(dist: &Dist) -> (String, ArtifactSource) {
    let source = ArtifactSource {
        url: dist.upstream.clone(),
        checksum: dist.checksum.clone(),
    };
    (dist_id(&dist.package, &dist.file), source)
}

/// Redirects from a dist at `url`: within its origin, else to `hosts` when listed, else to https.
fn redirect_policy(url: &Url, hosts: Vec<String>) -> RedirectPolicy {
    let origin = url.origin();
    Arc::new(move |next: &Url| {
        next.origin() == origin
            || match hosts.is_empty() {
                true => next.scheme() == "https",
                false => host_listed(&hosts, next),
            }
    })
}

/// `host` or `host:port`, as `dist_hosts` lists them.
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

fn host_listed(hosts: &[String], url: &Url) -> bool {
    let with_port = host_of(url);
    let bare = url.host_str().unwrap_or("").to_ascii_lowercase();
    hosts.iter().any(|host| *host == with_port || *host == bare)
}

fn malformed(document: &UpstreamDocument, reason: rewrite::Malformed) -> proxy::Error {
    proxy::Error::Document {
        url: document.url.to_string(),
        source: Box::new(reason),
    }
}

async fn drain(response: Response<Body>) {
    use http_body_util::BodyExt as _;
    let _ = response.into_body().collect().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn dist_redirects_stay_on_listed_hosts_when_there_is_a_list() {
        let dist = url("http://127.0.0.1:9000/repos/a/b/zipball/abc");
        let open = redirect_policy(&dist, Vec::new());
        assert!(open(&url("http://127.0.0.1:9000/codeload/a/b/zip/abc")));
        assert!(open(&url("https://codeload.example/a/b/zip/abc")));
        assert!(!open(&url("http://127.0.0.2:9000/a.zip")));

        let listed = redirect_policy(&dist, vec!["codeload.example".to_owned()]);
        assert!(listed(&url("http://127.0.0.1:9000/codeload/a/b/zip/abc")));
        assert!(listed(&url("https://codeload.example/a/b/zip/abc")));
        assert!(!listed(&url("https://elsewhere.example/a.zip")));
        assert!(!listed(&url("http://127.0.0.1:9001/a.zip")));
    }
}
