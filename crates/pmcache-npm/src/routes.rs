//! The `/npm/` routes: packuments (full or abbreviated), tarballs, and the `/-/` API endpoints
//! that are answered locally, relayed, or refused.

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use pmcache_proxy::{
    self as proxy, ArtifactRequest, ArtifactSource, Body, ClientRequest, DocumentRequest,
    PassThrough, Rendering, Serving, Variant,
};
use url::Url;

use crate::Frontend;
use crate::error::{Error, Result};
use crate::name::{self, NpmPath, PackageName};
use crate::negotiate::{self, Representation};
use crate::rewrite::{self, Tarball};

/// Index keys and metrics label of this frontend.
pub(crate) const ECOSYSTEM: &str = "npm";
/// How old a cached packument must be before a tarball it does not list makes pmcache fetch
/// it again.
const REFETCH_FLOOR: std::time::Duration = std::time::Duration::from_secs(10);
/// The `Vary` of packuments (npm/cli issue 3656: `Accept` matters on 304s too).
const VARY: &str = "Accept, Accept-Encoding";
/// The same, when tarball URLs name the origin the client used (no `public_url`): a shared
/// cache in front of pmcache must not hand one client's rendering to another.
const VARY_BY_ORIGIN: &str = "Accept, Accept-Encoding, Host, X-Forwarded-Proto, Forwarded";
/// pmcache always asks for the full document and derives the abbreviated one itself: some
/// upstreams ignore the abbreviated media type.
const UPSTREAM_ACCEPT: &str = "application/json";

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, body: Bytes, path: &str) -> Result<Response<Body>> {
        let readable = parts.method == Method::GET || parts.method == Method::HEAD;
        let client = ClientRequest {
            head: parts.method == Method::HEAD,
            headers: &parts.headers,
        };
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
            .respond(&document, variant, client, Serving::whole(vary))?)
    }

    /// The packument as rendered for the registry URL this client uses. Tarball URLs are
    /// absolute, so each origin clients use gets its own rendering (a CI fleet uses one).
    async fn load_packument(
        &self,
        package: &PackageName,
        parts: &Parts,
        ttl: std::time::Duration,
    ) -> Result<proxy::Document> {
        let registry = self.registry_url(parts)?;
        let url =
            self.upstream
                .join(&package.escaped())
                .map_err(|e| proxy::Error::BadUpstreamUrl {
                    url: self.upstream.to_string(),
                    source: e.into(),
                })?;
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: format!("packument/{registry}{package}"),
            url,
            accept: UPSTREAM_ACCEPT,
            ttl,
            allow_redirect: proxy::same_origin(&self.upstream),
            known_current: None,
        };
        let requested = package.clone();
        let document = self
            .proxy
            .document(request, move |upstream| {
                let rewritten = rewrite::rewrite_packument(
                    &upstream.body,
                    &requested,
                    &upstream.url,
                    &registry,
                )
                .map_err(|error| proxy::Error::Document {
                    url: upstream.url.to_string(),
                    source: Box::new(error),
                })?;
                let sources = sources_of(&requested, &rewritten.tarballs);
                Ok(Rendering {
                    variants: vec![
                        Variant::new("full", Representation::Full.content_type(), rewritten.full),
                        Variant::new(
                            "abbreviated",
                            Representation::Abbreviated.content_type(),
                            rewritten.abbreviated,
                        ),
                    ],
                    sources,
                })
            })
            .await?;
        Ok(document)
    }

    /// `/<name>/<version-or-tag>`: one version's manifest, cut from the rewritten full
    /// packument (a rare route, used by tools rather than installers, so parsing here is fine).
    async fn version_document(
        &self,
        package: &PackageName,
        wanted: &str,
        parts: &Parts,
    ) -> Result<Response<Body>> {
        let document = self.load_packument(package, parts, self.ttl).await?;
        let full = self.proxy.variant_bytes(&document, "full").await?;
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
        let id = tarball_id(package, filename);
        let source = match self.proxy.source(ECOSYSTEM, &id)? {
            Some(source) => source,
            None => self.learn_tarball(package, filename, parts).await?,
        };
        let request = ArtifactRequest {
            allow_redirect: source.redirect_policy(),
            ecosystem: ECOSYSTEM,
            source,
            content_type: "application/octet-stream",
            client,
            key: None,
            pin_first_seen: false,
            announce_unverified_length: true,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    /// Cold tarball requests (`npm ci` and pnpm's frozen installs read the lockfile, not the
    /// packument): learn the upstream URL and digest from the packument, and if a cached
    /// packument does not list the tarball (a version published since), once more from a fresh
    /// one before answering 404, unless the cached one is younger than [`REFETCH_FLOOR`] (so
    /// that made-up tarball names cannot send pmcache to the upstream at will).
    async fn learn_tarball(
        &self,
        package: &PackageName,
        filename: &str,
        parts: &Parts,
    ) -> Result<ArtifactSource> {
        let id = tarball_id(package, filename);
        for ttl in [self.ttl, REFETCH_FLOOR] {
            self.load_packument(package, parts, ttl).await?;
            if let Some(source) = self.proxy.source(ECOSYSTEM, &id)? {
                return Ok(source);
            }
        }
        Err(Error::UnknownTarball {
            package: package.to_string(),
            filename: filename.to_owned(),
        })
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
        let url = self.upstream_api_url(endpoint, parts)?;
        let response = self
            .proxy
            .pass_through(PassThrough {
                method: method.clone(),
                url,
                headers: &parts.headers,
                body,
                // Search and audit go to the configured registry itself.
                forward_credentials: true,
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

    fn upstream_api_url(&self, endpoint: &str, parts: &Parts) -> Result<Url> {
        let relative = endpoint.trim_start_matches('/');
        let mut url = self
            .upstream
            .join(relative.split('?').next().unwrap_or(relative))
            .map_err(|e| proxy::Error::BadUpstreamUrl {
                url: self.upstream.to_string(),
                source: e.into(),
            })?;
        url.set_query(parts.uri.query());
        Ok(url)
    }

    /// pmcache's registry URL as this client reaches it, ending in `/`.
    fn registry_url(&self, parts: &Parts) -> Result<String> {
        let authority = parts.uri.authority().map(|a| a.as_str());
        let origin = proxy::client_origin(&parts.headers, authority, self.public_url.as_ref())
            .ok_or(Error::NoHost)?;
        Ok(format!("{origin}{}/", self.mount))
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

/// A tarball is reachable by its conventional filename and, when the upstream named it
/// otherwise, by the upstream's filename too (lockfiles made against the upstream use that).
/// Conventional names win where an upstream name happens to equal another version's.
fn sources_of(package: &PackageName, tarballs: &[Tarball]) -> Vec<(String, ArtifactSource)> {
    let mut sources = std::collections::BTreeMap::new();
    for tarball in tarballs {
        sources.insert(tarball_id(package, &tarball.filename), source_of(tarball));
    }
    for tarball in tarballs {
        if let Some(upstream_filename) = &tarball.upstream_filename {
            sources
                .entry(tarball_id(package, upstream_filename))
                .or_insert_with(|| source_of(tarball));
        }
    }
    sources.into_iter().collect()
}

fn source_of(tarball: &Tarball) -> ArtifactSource {
    ArtifactSource {
        url: tarball.upstream.clone(),
        checksum: tarball.checksum.clone(),
    }
}
