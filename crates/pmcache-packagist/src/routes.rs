//! The `/packagist/` routes: the root file, p2 metadata, dist archives, and the endpoints that
//! are relayed (search, advisories, lists) or answered at once (notify-batch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use pmcache_policy::{Policy, Verdict};
use pmcache_proxy::{
    self as proxy, Advertised, ArtifactRequest, ArtifactSource, Body, Caller, ClientRequest,
    Document, DocumentRequest, ORIGIN_PLACEHOLDER as ORIGIN, PassThrough, Rendering, Role, Routing,
    Serving, UpstreamDocument, Variant,
};
use url::Url;

use crate::batch;
use crate::error::{Error, Result};
use crate::name::PackageName;
use crate::path::{self, Endpoint, Route};
use crate::rewrite::{self, Dist, DistRewrite};
use crate::{Frontend, MOUNT};

/// Index keys and metrics label of this frontend.
const ECOSYSTEM: &str = "packagist";
/// This frontend in the policy's terms.
const POLICY: pmcache_policy::Ecosystem = pmcache_policy::Ecosystem::Packagist;
const JSON: &str = "application/json";
const VARY: &str = "Accept-Encoding";
/// The same, when URLs name the origin the client used (no `public_url`): a shared cache in
/// front of pmcache must not hand one client's rendering to another.
const VARY_BY_ORIGIN: &str =
    "Accept-Encoding, Host, X-Forwarded-Host, X-Forwarded-Proto, Forwarded";
/// The variant clients get.
const CLIENT: &str = "client";
/// The root file's upstream URLs, by endpoint: kept beside the rendering, never served.
const LINKS: &str = "links";
/// The root file's key.
const ROOT_KEY: &str = "packages.json";
/// How long a relayed install notification may take; nobody waits for it.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, body: Bytes, path: &str) -> Result<Response<Body>> {
        let method = &parts.method;
        let readable = method == Method::GET || method == Method::HEAD;
        let client = ClientRequest::of(parts);
        let role = client.caller.role;
        match path::classify(path)? {
            Route::PackagesJson if readable => {
                let document = self.root(&self.public(), self.ttl, role).await?;
                self.respond(&document, parts, client).await
            }
            Route::P2 { package, dev } if readable => {
                let document = self.p2(&package, dev, self.ttl, role).await?;
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

    /// A stored rendering, with the origin this client reached pmcache at spliced in.
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
            .respond_for_origin(document, CLIENT, client, Serving::whole(vary), &origin)
            .await?)
    }

    /// The origin renderings are stored with: `public_url` when configured, whose clients
    /// then get the stored bytes and gzip copies as they are; else the placeholder, spliced for
    /// every client (p2 files are small; the origin a fetch came from is not at hand on every
    /// road that fetches one).
    fn stored_origin(&self) -> String {
        match &self.public_url {
            Some(public) => public.as_str().trim_end_matches('/').to_owned(),
            None => ORIGIN.to_owned(),
        }
    }

    /// How dists are rewritten: to pmcache's dists route below the placeholder origin.
    fn dist_rewrite(&self) -> (String, bool) {
        (format!("{ORIGIN}{MOUNT}/dists/"), self.keep_source)
    }

    /// The configured repository's routing: unprefixed keys.
    fn public(&self) -> Routing {
        Routing::public(&self.upstream)
    }

    /// Where `package`'s files come from: the configured repository, or a private route's (a
    /// route to `none` is answered 404 here, before anything is fetched).
    fn routing(&self, package: &PackageName) -> Result<Routing> {
        Ok(self
            .proxy
            .routing(POLICY, package.as_str(), &self.upstream)?)
    }

    /// `packages.json` of `routing`'s repository, rewritten with the placeholder origin, with
    /// the upstream URLs behind it.
    async fn root(&self, routing: &Routing, ttl: Duration, role: Role) -> Result<Document> {
        let url = upstream_url(&routing.upstream, "packages.json")?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: routing.key(ROOT_KEY),
            url,
            accept: JSON,
            ttl,
            allow_redirect: proxy::same_origin(&routing.upstream),
            known_current: None,
            role,
        };
        let (dists_base, keep_source) = self.dist_rewrite();
        let stored_origin = self.stored_origin();
        let policy = self.proxy.policy();
        // Dists inline in a private repository's root are known by its route's ids only.
        let own = routing.clone();
        let render = move |document: UpstreamDocument| {
            let dists = DistRewrite {
                base: &dists_base,
                keep_source,
            };
            let base = format!("{ORIGIN}{MOUNT}");
            let judge = judge_now(&policy);
            let root = rewrite::rewrite_root(&document.body, &document.url, &base, dists, &judge)
                .map_err(|reason| malformed(&document, reason))?;
            let links = serde_json::to_vec(&root.links)
                .map_err(|e| proxy::Error::failed("serialising links", e))?;
            Ok(Rendering {
                variants: vec![
                    Variant::new(CLIENT, JSON, root.body).with_origin(stored_origin),
                    Variant::new(LINKS, JSON, links).uncompressed(),
                ],
                sources: root
                    .dists
                    .iter()
                    .map(|dist| source_of(&own, dist))
                    .collect(),
                hidden_until: root.hidden_until,
            })
        };
        Ok(self.proxy.document(request, render).await?)
    }

    /// The upstream URL (template) behind each endpoint, from the cached root file however old
    /// (they rarely change, and asking the upstream for the root before every p2 file would
    /// double the requests), else from a fetched one.
    async fn links(&self, routing: &Routing, role: Role) -> Result<BTreeMap<String, String>> {
        let cached = self
            .proxy
            .cached_document(ECOSYSTEM, &routing.key(ROOT_KEY), self.ttl)?;
        let document = match cached {
            Some(document) => document,
            None => self.root(routing, self.ttl, role).await?,
        };
        let bytes = self.proxy.variant_bytes(&document, LINKS).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Proxy(proxy::Error::failed("stored links are unreadable", e)))
    }

    /// The upstream URL behind `link` (a key of the links of `routing`'s root), `%package%`
    /// filled in.
    async fn link_url(
        &self,
        routing: &Routing,
        link: &str,
        package: Option<&str>,
        role: Role,
    ) -> Result<Url> {
        let links = self.links(routing, role).await?;
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

    /// `p2/VENDOR/NAME.json` (or `~dev.json`), dists rewritten below the placeholder origin,
    /// the versions the policy refuses hidden (a package it refuses whole is refused before
    /// anything is fetched). Only the requested package's dists are recorded as sources: a p2
    /// file cannot decide where another package's archives come from.
    async fn p2(
        &self,
        package: &PackageName,
        dev: bool,
        ttl: Duration,
        role: Role,
    ) -> Result<Document> {
        self.check_package(package)?;
        let routing = self.routing(package)?;
        let name = p2_name(package, dev);
        let url = self
            .link_url(&routing, "metadata-url", Some(&name), role)
            .await?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: routing.key(&format!("p2/{name}")),
            allow_redirect: proxy::same_origin(&url),
            url,
            accept: JSON,
            ttl,
            known_current: None,
            role,
        };
        let (dists_base, keep_source) = self.dist_rewrite();
        let stored_origin = self.stored_origin();
        let package = package.to_string();
        let policy = self.proxy.policy();
        let render = move |document: UpstreamDocument| {
            let dists = DistRewrite {
                base: &dists_base,
                keep_source,
            };
            let judge = judge_now(&policy);
            let p2 = rewrite::rewrite_p2(&document.body, &document.url, dists, &judge)
                .map_err(|reason| malformed(&document, reason))?;
            let own = p2.dists.iter().filter(|dist| dist.package == package);
            Ok(Rendering {
                variants: vec![Variant::new(CLIENT, JSON, p2.body).with_origin(stored_origin)],
                sources: own.map(|dist| source_of(&routing, dist)).collect(),
                hidden_until: p2.hidden_until,
            })
        };
        Ok(self.proxy.document(request, render).await?)
    }

    /// Refuses a package the policy does not serve at all (`deny` of every version, or not in
    /// `allow_only`), before anything is fetched.
    fn check_package(&self, package: &PackageName) -> Result<()> {
        Ok(self.proxy.check_package(POLICY, package.as_str())?)
    }

    async fn dist(
        &self,
        package: &PackageName,
        file: &str,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        // A routed package's dists are known (and stored) by ids of its route's own: never the
        // public repository's copy of the same name.
        let id = self.routing(package)?.key(&dist_id(package.as_str(), file));
        let source = self.dist_source(package, &id, client.caller.role).await?;
        if !self.dist_host_allowed(source.url()) {
            return Err(Error::DistHostNotAllowed {
                package: package.to_string(),
                host: host_of(source.url()),
            });
        }
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            source,
            content_type: "application/octet-stream",
            client,
            // Code hosts answer archive URLs with redirects (GitHub: to codeload).
            redirect_hosts: &self.dist_hosts,
            // One archive per package and reference, wherever it is published: a code host
            // that regenerates it with other bytes must not change what clients get.
            key: Some(id),
            pin_first_seen: true,
            announce_unverified_length: true,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    /// Where a dist comes from (`composer install` from a lock reads no metadata): learnt from
    /// the package's p2 files, fetched again if the cached ones may predate it.
    async fn dist_source(
        &self,
        package: &PackageName,
        id: &str,
        role: Role,
    ) -> Result<ArtifactSource> {
        let advertisement = self
            .proxy
            .advertised_source(
                ECOSYSTEM,
                id,
                role,
                &[false, true],
                |dev, recency| async move {
                    match self.p2(package, dev, recency.ttl(self.ttl), role).await {
                        Ok(document) => Ok(Some(document)),
                        Err(error) if error.is_not_found() => Ok(None),
                        Err(error) => Err(error),
                    }
                },
            )
            .await?;
        Ok(advertisement.into_source()?)
    }

    fn dist_host_allowed(&self, url: &Url) -> bool {
        self.dist_hosts.is_empty() || proxy::host_listed(&self.dist_hosts, url)
    }

    /// notify-batch: answered at once, relayed in the background when the root file is
    /// cached; an install never waits for statistics, nor fails for them.
    fn notify(&self, parts: &Parts, body: Bytes) -> Response<Body> {
        let proxy = self.proxy.clone();
        let headers = parts.headers.clone();
        let cached_root = self.proxy.cached_document(ECOSYSTEM, ROOT_KEY, self.ttl);
        // The report goes to the public repository: without the downloads of private names.
        let routed = self
            .proxy
            .policy()
            .routes()
            .iter()
            .any(|r| r.ecosystem() == POLICY);
        let body = match routed {
            true => {
                let private = |name: &str| self.proxy.is_routed(POLICY, name);
                batch::downloads_without_private(&body, &private)
            }
            false => Some(body),
        };
        tokio::spawn(async move {
            let (Ok(Some(root)), Some(body)) = (cached_root, body) else {
                return;
            };
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
                routed: false,
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
        // A package's own endpoint (providers) goes to its route's repository; lists of
        // packages (advisories) lose the routed names.
        let routing = match package {
            Some(package) => self.routing(package)?,
            None => self.public(),
        };
        let mut url = self
            .link_url(
                &routing,
                &endpoint.link(),
                package.map(PackageName::as_str),
                Caller::attached(parts).role,
            )
            .await?;
        let private = |name: &str| self.proxy.is_routed(POLICY, name);
        let (query, body) = match endpoint {
            Endpoint::SecurityAdvisories => {
                match batch::advisories_without_private(parts.uri.query(), &body, &private) {
                    Some(kept) => kept,
                    // Every package asked about is private: nothing to ask the public one.
                    None => return Ok(no_advisories()),
                }
            }
            _ => (parts.uri.query().map(str::to_owned), body),
        };
        if let Some(query) = query {
            url.set_query(Some(&query));
        }
        let forward_credentials = url.origin() == routing.upstream.origin();
        Ok(self
            .proxy
            .pass_through(PassThrough {
                method: parts.method.clone(),
                url,
                headers: &parts.headers,
                body,
                forward_credentials,
                routed: routing.is_routed(),
            })
            .await?)
    }
}

/// `path` below the repository base `base`.
fn upstream_url(base: &Url, path: &str) -> Result<Url> {
    base.join(path).map_err(|e| {
        Error::Proxy(proxy::Error::BadUpstreamUrl {
            url: base.to_string(),
            source: e.into(),
        })
    })
}

fn dist_id(package: &str, file: &str) -> String {
    format!("dist/{package}/{file}")
}

/// The source a dist of a document of `routing`'s repository advertises.
fn source_of(routing: &Routing, dist: &Dist) -> Advertised {
    Advertised {
        id: routing.key(&dist_id(&dist.package, &dist.file)),
        url: dist.upstream.clone(),
        checksum: dist.checksum.clone(),
        package: dist.package.clone(),
        version: dist.version.clone(),
        published: dist.published,
    }
}

/// The policy's judgement of a version, as of the time of rendering.
fn judge_now(policy: &Arc<Policy>) -> impl Fn(&str, &str, Option<SystemTime>) -> Verdict + '_ {
    let now = SystemTime::now();
    move |package, version, published| policy.judge(POLICY, package, version, published, now)
}

/// `vendor/name`, or `vendor/name~dev` for the branches' file.
fn p2_name(package: &PackageName, dev: bool) -> String {
    match dev {
        true => format!("{package}~dev"),
        false => package.to_string(),
    }
}

/// The keys of the documents pmcache stores for a package (for a purge): its two p2 files,
/// tagged releases and branches. `packages.json` is shared by every package and stays.
pub fn document_keys(package: &PackageName) -> Vec<String> {
    [false, true]
        .into_iter()
        .map(|dev| format!("p2/{}", p2_name(package, dev)))
        .collect()
}

/// `host` or `host:port`, as `dist_hosts` lists them.
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

fn malformed(document: &UpstreamDocument, reason: rewrite::Malformed) -> proxy::Error {
    proxy::Error::Document {
        url: document.url.to_string(),
        source: Box::new(reason),
    }
}

/// The advisories API's answer when it was asked about no package that may be asked upstream.
fn no_advisories() -> Response<Body> {
    let mut response = Response::new(proxy::full("{\"advisories\":[]}"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
    response
}

async fn drain(response: Response<Body>) {
    use http_body_util::BodyExt as _;
    let _ = response.into_body().collect().await;
}
