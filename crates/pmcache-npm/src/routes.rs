//! The `/npm/` routes: packuments (full or abbreviated), tarballs, and the `/-/` API endpoints
//! that are answered locally, relayed, or refused.

use std::time::SystemTime;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use pmcache_proxy::{
    self as proxy, Advertised, ArtifactRequest, Body, Caller, ClientRequest, DocumentRequest,
    PassThrough, Rendering, Routing, Serving, Variant,
};
use url::Url;

use crate::Frontend;
use crate::audit;
use crate::error::{Error, Result};
use crate::name::{self, NpmPath, PackageName};
use crate::negotiate::{self, Representation};
use crate::rewrite::{self, Tarball};

/// Index keys and metrics label of this frontend.
pub(crate) const ECOSYSTEM: &str = "npm";
/// This frontend in the policy's terms.
const POLICY: pmcache_policy::Ecosystem = pmcache_policy::Ecosystem::Npm;
/// The `Vary` of packuments (npm/cli issue 3656: `Accept` matters on 304s too).
const VARY: &str = "Accept, Accept-Encoding";
/// The same, when tarball URLs name the origin the client used (no `public_url`): a shared
/// cache in front of pmcache must not hand one client's rendering to another.
const VARY_BY_ORIGIN: &str =
    "Accept, Accept-Encoding, Host, X-Forwarded-Host, X-Forwarded-Proto, Forwarded";
/// pmcache always asks for the full document and derives the abbreviated one itself: some
/// upstreams ignore the abbreviated media type.
const UPSTREAM_ACCEPT: &str = "application/json";

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, body: Bytes, path: &str) -> Result<Response<Body>> {
        let readable = parts.method == Method::GET || parts.method == Method::HEAD;
        let client = ClientRequest::of(parts);
        match name::classify(path)? {
            NpmPath::Api(endpoint) => self.api(&endpoint, parts, body).await,
            _ if !readable => Err(Error::MethodNotAllowed {
                method: parts.method.to_string(),
            }),
            NpmPath::Packument(package) => self.packument(&package, parts, client).await,
            NpmPath::Tarball { package, filename } => {
                self.tarball(&package, &filename, parts, client).await
            }
            NpmPath::Version { package, version } => {
                self.version_document(&package, &version, parts).await
            }
        }
    }

    async fn packument(
        &self,
        package: &PackageName,
        parts: &Parts,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let origin = self.client_origin(parts)?;
        self.check_package(package)?;
        let document = self.load_packument(package, parts, self.ttl).await?;
        let representation = negotiate::negotiate(client.header(header::ACCEPT));
        let variant = match representation {
            Representation::Full => "full",
            Representation::Abbreviated => "abbreviated",
        };
        let vary = match self.public_url {
            Some(_) => VARY,
            None => VARY_BY_ORIGIN,
        };
        Ok(self
            .proxy
            .respond_for_origin(&document, variant, client, Serving::whole(vary), &origin)
            .await?)
    }

    /// The packument, rendered once per upstream version whatever the client's origin: tarball
    /// URLs are absolute, so they are rendered below the proxy's origin placeholder, stored with
    /// `public_url` when configured, else with the origin of the client whose request first
    /// fetched it (kept by later renderings), and answered to other origins with theirs
    /// spliced in.
    async fn load_packument(
        &self,
        package: &PackageName,
        parts: &Parts,
        ttl: std::time::Duration,
    ) -> Result<proxy::Document> {
        let origin = self.client_origin(parts)?;
        let from_client = self.public_url.is_none();
        let placed = move |variant: Variant| match from_client {
            true => variant.with_client_origin(origin.clone()),
            false => variant.with_origin(origin.clone()),
        };
        let registry = format!("{}{}/", proxy::ORIGIN_PLACEHOLDER, self.mount);
        let routing = self.routing(package)?;
        let url = routing.upstream.join(&package.escaped()).map_err(|e| {
            proxy::Error::BadUpstreamUrl {
                url: routing.upstream.to_string(),
                source: e.into(),
            }
        })?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: routing.key(&packument_key(package)),
            url,
            accept: UPSTREAM_ACCEPT,
            ttl,
            allow_redirect: proxy::same_origin(&routing.upstream),
            known_current: None,
            role: Caller::attached(parts).role,
        };
        let requested = package.clone();
        let policy = self.proxy.policy();
        let document = self
            .proxy
            .document(request, move |upstream| {
                let now = SystemTime::now();
                let judge = |version: &str, published: Option<SystemTime>| {
                    policy.judge(POLICY, requested.as_str(), version, published, now)
                };
                let rewritten = rewrite::rewrite_packument(
                    &upstream.body,
                    &requested,
                    &upstream.url,
                    &registry,
                    &judge,
                )
                .map_err(|error| packument_error(&upstream.url, error))?;
                let sources = sources_of(&routing, &requested, &rewritten.tarballs);
                Ok(Rendering {
                    variants: vec![
                        placed(Variant::new(
                            "full",
                            Representation::Full.content_type(),
                            rewritten.full,
                        )),
                        placed(Variant::new(
                            "abbreviated",
                            Representation::Abbreviated.content_type(),
                            rewritten.abbreviated,
                        )),
                    ],
                    sources,
                    hidden_until: rewritten.hidden_until,
                })
            })
            .await?;
        Ok(document)
    }

    /// Where the package's documents come from: the configured registry, or a private route's
    /// (a route to `none` is answered 404 here, before anything is fetched).
    fn routing(&self, package: &PackageName) -> Result<Routing> {
        Ok(self
            .proxy
            .routing(POLICY, package.as_str(), &self.upstream)?)
    }

    /// Refuses a package the policy does not serve at all (`deny` of every version, or not in
    /// `allow_only`), before anything is fetched.
    fn check_package(&self, package: &PackageName) -> Result<()> {
        Ok(self.proxy.check_package(POLICY, package.as_str())?)
    }

    /// `/<name>/<version-or-tag>`: one version's manifest, cut from the rewritten full
    /// packument (a rare route, used by tools rather than installers, so parsing here is fine).
    async fn version_document(
        &self,
        package: &PackageName,
        wanted: &str,
        parts: &Parts,
    ) -> Result<Response<Body>> {
        self.check_package(package)?;
        let origin = self.client_origin(parts)?;
        let document = self.load_packument(package, parts, self.ttl).await?;
        let full = self
            .proxy
            .variant_bytes_for_origin(&document, "full", &origin)
            .await?;
        let manifest =
            rewrite::version_manifest(&full, wanted).ok_or_else(|| Error::NoSuchVersion {
                package: package.to_string(),
                version: wanted.to_owned(),
            })?;
        let mut response = Response::new(proxy::full(manifest));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(negotiate::FULL_TYPE),
        );
        Ok(response)
    }

    async fn tarball(
        &self,
        package: &PackageName,
        filename: &str,
        parts: &Parts,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        self.check_package(package)?;
        // Cold tarball requests (`npm ci` and pnpm's frozen installs read the lockfile, not the
        // packument) learn the tarball's source from the packument, fetched again if the cached
        // one may predate the version.
        // A routed package's tarballs are known by ids of the route's own: a source the public
        // registry advertised before the route existed is never used for it.
        let id = self.routing(package)?.key(&tarball_id(package, filename));
        let advertisement = self
            .proxy
            .advertised_source(
                ECOSYSTEM,
                &id,
                client.caller.role,
                std::slice::from_ref(package),
                |package, recency| async move {
                    let ttl = recency.ttl(self.ttl);
                    self.load_packument(&package, parts, ttl).await.map(Some)
                },
            )
            .await?;
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            source: advertisement.into_source()?,
            content_type: "application/octet-stream",
            client,
            redirect_hosts: &[],
            key: None,
            pin_first_seen: false,
            announce_unverified_length: true,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    async fn api(&self, endpoint: &str, parts: &Parts, body: Bytes) -> Result<Response<Body>> {
        let path = endpoint.split('?').next().unwrap_or(endpoint);
        let method = &parts.method;
        let relayed = match (method.as_str(), path) {
            ("GET" | "HEAD", "/-/ping") => return Ok(ping()),
            ("GET", "/-/v1/search") => Some("search"),
            ("POST", p) if p.starts_with("/-/npm/v1/security/") => Some("security audit"),
            ("GET" | "HEAD", _) => None,
            _ => {
                return Err(Error::MethodNotAllowed {
                    method: method.to_string(),
                });
            }
        };
        let body = match relayed {
            Some("security audit") => self.audit_body(path, parts, body)?,
            _ => body,
        };
        // An endpoint of one package (`/-/package/NAME/dist-tags`) goes to its route's
        // registry: a private name is never asked of the public one.
        let routing = match api_package(path) {
            Some(package) => self.proxy.routing(POLICY, &package, &self.upstream)?,
            None => Routing::public(&self.upstream),
        };
        let (upstream, routed) = (routing.upstream.clone(), routing.is_routed());
        let url = upstream_api_url(&upstream, endpoint, parts)?;
        let response = self
            .proxy
            .pass_through(PassThrough {
                method: method.clone(),
                url,
                headers: &parts.headers,
                body,
                // Search and audit go to the configured registry itself.
                forward_credentials: true,
                routed,
            })
            .await?;
        // An upstream without search or audit (some intermediaries answer 404 or 405) is said
        // so plainly, rather than relayed as an unexplained 404.
        let unsupported = [
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::NOT_IMPLEMENTED,
        ];
        match relayed {
            Some(what) if unsupported.contains(&response.status()) => Err(Error::UpstreamLacks {
                what,
                status: response.status().as_u16(),
            }),
            _ => Ok(response),
        }
    }

    /// An audit body as relayed: plain JSON (the relay sends no `Content-Encoding`, and npm
    /// gzips its bulk report), without the packages private routes take (they must not reach
    /// the public registry, not even by name).
    fn audit_body(&self, path: &str, parts: &Parts, body: Bytes) -> Result<Bytes> {
        let gzipped = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("gzip"));
        let policy = self.proxy.policy();
        let routed = policy
            .routes()
            .iter()
            .any(|route| route.ecosystem() == POLICY);
        if routed {
            let private = |name: &str| policy.route(POLICY, name).is_some();
            let shape = audit::Shape::of(path);
            if let Some(kept) = audit::without_private(&body, gzipped, shape, &private)? {
                return Ok(Bytes::from(kept));
            }
        }
        match gzipped {
            true => Ok(Bytes::from(audit::decoded(&body)?)),
            false => Ok(body),
        }
    }

    /// The origin this client reaches pmcache at (`public_url` when configured).
    fn client_origin(&self, parts: &Parts) -> Result<String> {
        let authority = parts.uri.authority().map(|a| a.as_str());
        proxy::client_origin(&parts.headers, authority, self.public_url.as_ref())
            .ok_or(Error::NoHost)
    }
}

/// `endpoint` (an API path, `/-/…`) below the registry base `upstream`, with the client's query.
fn upstream_api_url(upstream: &Url, endpoint: &str, parts: &Parts) -> Result<Url> {
    let relative = endpoint.trim_start_matches('/');
    let mut url = upstream
        .join(relative.split('?').next().unwrap_or(relative))
        .map_err(|e| proxy::Error::BadUpstreamUrl {
            url: upstream.to_string(),
            source: e.into(),
        })?;
    url.set_query(parts.uri.query());
    Ok(url)
}

/// The package an API path of one package names (`/-/package/NAME/…`, the scope's slash
/// escaped or not), decoded.
fn api_package(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/-/package/")?;
    let mut segments = rest
        .split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy());
    let first = segments.next()?;
    match first.starts_with('@') && !first.contains('/') {
        true => Some(format!("{first}/{}", segments.next()?)),
        false => Some(first.into_owned()),
    }
}

/// A packument the renderer refused, as the proxy classifies it: a package unpublished upstream
/// is gone (404, never a stale copy), anything else is a malformed upstream document.
fn packument_error(url: &Url, error: Error) -> proxy::Error {
    match error {
        Error::Unpublished { .. } => proxy::Error::NotFound {
            url: url.to_string(),
        },
        Error::Document { source, .. } => proxy::Error::Document {
            url: url.to_string(),
            source: Box::new(source),
        },
        other => proxy::Error::Document {
            url: url.to_string(),
            source: Box::new(other),
        },
    }
}

fn ping() -> Response<Body> {
    let mut response = Response::new(proxy::full("{}"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn tarball_id(package: &PackageName, filename: &str) -> String {
    format!("tarball/{package}/{filename}")
}

/// The key of a package's packument among the ecosystem's documents (the abbreviated form is
/// derived from the full one, which is all that is stored).
fn packument_key(package: &PackageName) -> String {
    format!("packument/{package}")
}

/// The keys of the documents pmcache stores for a package (for a purge): its packument.
pub fn document_keys(package: &PackageName) -> Vec<String> {
    vec![packument_key(package)]
}

/// A tarball is reachable by its conventional filename and, when the upstream named it
/// otherwise, by the upstream's filename too (lockfiles made against the upstream use that).
/// Conventional names win where an upstream name happens to equal another version's.
fn sources_of(routing: &Routing, package: &PackageName, tarballs: &[Tarball]) -> Vec<Advertised> {
    let mut sources = std::collections::BTreeMap::new();
    for tarball in tarballs {
        sources.insert(
            routing.key(&tarball_id(package, &tarball.filename)),
            tarball,
        );
    }
    for tarball in tarballs {
        if let Some(upstream_filename) = &tarball.upstream_filename {
            sources
                .entry(routing.key(&tarball_id(package, upstream_filename)))
                .or_insert(tarball);
        }
    }
    sources
        .into_iter()
        .map(|(id, tarball)| Advertised {
            id,
            url: tarball.upstream.clone(),
            checksum: tarball.checksum.clone(),
            package: package.as_str().to_owned(),
            version: Some(tarball.version.clone()),
            published: tarball.published,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_endpoints_name_their_package_in_any_spelling() {
        for path in [
            "/-/package/@acme/tool/dist-tags",
            "/-/package/@acme%2ftool/dist-tags",
            "/-/package/%40acme%2Ftool/dist-tags",
        ] {
            assert_eq!(api_package(path).as_deref(), Some("@acme/tool"), "{path}");
        }
        assert_eq!(
            api_package("/-/package/left-pad/dist-tags").as_deref(),
            Some("left-pad")
        );
        assert_eq!(api_package("/-/v1/search"), None);
    }

    #[test]
    fn an_unpublished_package_is_gone_not_a_bad_gateway() {
        let url = Url::parse("https://registry.test/left-pad").unwrap();
        let gone = packument_error(
            &url,
            Error::Unpublished {
                package: "left-pad".to_owned(),
            },
        );
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        assert!(!gone.is_upstream_fault(), "{gone}");
    }
}
