//! The `/rubygems/` routes: the compact index, the legacy indexes, `.gem` and `.gemspec.rz`
//! files, and the probes and retired endpoints clients still ask for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, header};
use pmcache_proxy::{
    self as proxy, Advertised, ArtifactRequest, ArtifactSource, Body, ClientRequest, Document,
    DocumentRequest, KnownCurrent, Recency, Release, Rendering, Role, Routing, Serving,
    UpstreamDocument, Variant,
};
use url::Url;

use crate::compact;
use crate::error::{Error, Result};
use crate::name::{FullName, GemName};
use crate::path::{self, GemsPath};
use crate::{Frontend, ParsedVersions};

/// Index keys and metrics label of this frontend.
const ECOSYSTEM: &str = "rubygems";
/// This frontend in the policy's terms.
const POLICY: pmcache_policy::Ecosystem = pmcache_policy::Ecosystem::Rubygems;
/// The one variant of every index file: the upstream's bytes.
const BODY: &str = "body";
const COMPACT_TYPE: &str = "text/plain; charset=utf-8";
const BINARY_TYPE: &str = "application/octet-stream";
const VARY: &str = "Accept-Encoding";

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, path: &str) -> Result<Response<Body>> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(Error::MethodNotAllowed {
                method: parts.method.to_string(),
            });
        }
        let client = ClientRequest::of(parts);
        let role = client.caller.role;
        match path::classify(path)? {
            GemsPath::Root => Ok(root(client)),
            GemsPath::Versions => self.versions(client).await,
            GemsPath::Names => {
                let document = self
                    .compact_file(&self.public(), "names", "names", self.ttl, None, role)
                    .await?;
                self.respond_compact(&document, client)
            }
            GemsPath::Info(name) => {
                let document = self.info(&name, Recency::Usual, role).await?;
                self.respond_compact(&document, client)
            }
            GemsPath::Gem(full_name) => self.gem(&full_name, client).await,
            GemsPath::Gemspec(full_name) => self.gemspec(&full_name, client).await,
            GemsPath::LegacyIndex(file) => self.legacy_index(file, client).await,
            GemsPath::Dependencies => Err(Error::DependencyApiGone),
        }
    }

    /// `/versions`. A HEAD (RubyGems' probe for the compact index) is answered from any cached
    /// copy, however old: it only needs to know the file exists.
    async fn versions(&self, client: ClientRequest<'_>) -> Result<Response<Body>> {
        let cached = if client.head {
            self.proxy
                .cached_document(ECOSYSTEM, "versions", self.ttl)?
        } else {
            None
        };
        let document = match cached {
            Some(document) => document,
            None => {
                let public = self.public();
                self.compact_file(
                    &public,
                    "versions",
                    "versions",
                    self.ttl,
                    None,
                    client.caller.role,
                )
                .await?
            }
        };
        self.respond_compact(&document, client)
    }

    fn respond_compact(
        &self,
        document: &Document,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        Ok(self
            .proxy
            .respond(document, BODY, client, Serving::appendable(VARY))?)
    }

    /// `/info/NAME`, coherent with the `/versions` pmcache serves: when a fresh `/versions`
    /// lists the MD5 of the cached copy, that copy is current whatever its age; when it lists
    /// another, the file is fetched again (Bundler would otherwise fetch it on every run, or
    /// miss a release). With no fresh `/versions` to go by, the TTL decides, or `recency` (a
    /// `.gem` the cached copy does not list).
    async fn info(&self, name: &GemName, recency: Recency, role: Role) -> Result<Document> {
        let key = info_key(name.as_str());
        let routing = self.routing(name)?;
        if routing.is_routed() {
            // A private gem's /info comes from its route; the public /versions says nothing of
            // it, so the TTL alone decides.
            return self
                .compact_file(
                    &routing,
                    &key,
                    &format!("info/{name}"),
                    recency.ttl(self.ttl),
                    None,
                    role,
                )
                .await;
        }
        let listed = self.listed_info_checksum(name).await?;
        let (ttl, known_current) = match &listed {
            Some(listed) => (Duration::ZERO, Some(has_md5(listed))),
            None => (recency.ttl(self.ttl), None),
        };
        let document = self
            .compact_file(
                &routing,
                &key,
                &format!("info/{name}"),
                ttl,
                known_current,
                role,
            )
            .await?;
        if let Some(listed) = listed.filter(|listed| info_md5(&document) != Some(listed)) {
            // The upstream's /info is newer (or older) than the /versions pmcache holds; the
            // next /versions refresh brings them together.
            tracing::info!(gem = %name, versions_md5 = %listed, "upstream /info and /versions differ");
        }
        Ok(document)
    }

    /// The info MD5 that the cached `/versions` lists for `name`, if that copy is fresh.
    async fn listed_info_checksum(&self, name: &GemName) -> Result<Option<String>> {
        let Some(versions) = self
            .proxy
            .cached_document(ECOSYSTEM, "versions", self.ttl)?
            .filter(Document::is_fresh)
        else {
            return Ok(None);
        };
        let checksums = self.info_checksums(&versions).await?;
        Ok(checksums.get(name.as_str()).cloned())
    }

    /// The info MD5 of every gem in `versions`, parsed once per version of the file: requests
    /// that arrive while it is parsed (Bundler asks for many `/info` files at once) wait for
    /// that parse rather than each reading the whole file again.
    async fn info_checksums(&self, versions: &Document) -> Result<Arc<HashMap<String, String>>> {
        let Some(digest) = versions.digest(BODY) else {
            return Ok(Arc::default());
        };
        let mut parsed = self.info_checksums.lock().await;
        if let Some(parsed) = parsed.as_ref()
            && parsed.digest == digest
        {
            return Ok(Arc::clone(&parsed.checksums));
        }
        let body = self.proxy.variant_bytes(versions, BODY).await?;
        let checksums = tokio::task::spawn_blocking(move || compact::info_checksums(&body))
            .await
            .map_err(|e| proxy::Error::failed("versions parse task failed", e))?;
        let checksums = Arc::new(checksums);
        *parsed = Some(ParsedVersions {
            digest,
            checksums: Arc::clone(&checksums),
        });
        Ok(checksums)
    }

    /// The configured upstream's routing: unprefixed keys.
    fn public(&self) -> Routing {
        Routing::public(&self.upstream)
    }

    /// Where gem `name`'s files come from: the configured upstream, or a private route's (a
    /// route to `none` is answered 404 here, before anything is fetched).
    fn routing(&self, name: &GemName) -> Result<Routing> {
        Ok(self.proxy.routing(POLICY, name.as_str(), &self.upstream)?)
    }

    /// The gem a `.gem` or gemspec file belongs to when a route takes one of its readings
    /// (that reading, and the route), else None: a private name never goes to the public
    /// upstream, even where the full name reads as a public gem's too.
    fn routed_reading(&self, full_name: &FullName) -> Result<Option<(GemName, Routing)>> {
        let routed = full_name
            .splits()
            .into_iter()
            .map(|(name, _)| name)
            .find(|name| self.proxy.is_routed(POLICY, name.as_str()));
        match routed {
            Some(name) => {
                let routing = self.routing(&name)?;
                Ok(Some((name, routing)))
            }
            None => Ok(None),
        }
    }

    /// A compact index file of `routing`'s upstream, verbatim, with its MD5 as entity tag; an
    /// `/info` file also records where each `.gem` it lists comes from and its checksum.
    async fn compact_file(
        &self,
        routing: &Routing,
        key: &str,
        upstream_path: &str,
        ttl: Duration,
        known_current: Option<KnownCurrent>,
        role: Role,
    ) -> Result<Document> {
        let gem = key.strip_prefix("info/").map(str::to_owned);
        let own = routing.clone();
        let render = move |document: UpstreamDocument| {
            if !compact::is_compact_index(&document.body) {
                return Err(malformed(&document, compact::Malformed::NotCompactIndex));
            }
            compact::check_upstream_digests(&document.headers, &document.body)
                .map_err(|reason| malformed(&document, reason))?;
            let sources = match &gem {
                Some(gem) => gem_sources(&own, gem, &document.body)?,
                None => Vec::new(),
            };
            let etag = format!("\"{}\"", compact::md5_hex(&document.body));
            let variant = Variant::new(BODY, COMPACT_TYPE, document.body.to_vec()).with_etag(etag);
            Ok(Rendering {
                variants: vec![variant],
                sources,
                hidden_until: None,
            })
        };
        self.index_file(
            routing,
            key,
            upstream_path,
            ttl,
            known_current,
            role,
            render,
        )
        .await
    }

    async fn legacy_index(
        &self,
        file: &'static str,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let render = |document: UpstreamDocument| {
            if !document.body.starts_with(&[0x1f, 0x8b]) {
                return Err(malformed(&document, compact::Malformed::NotGzip));
            }
            // RubyGems gunzips these itself: a Content-Encoding would make it decode twice.
            let variant = Variant::new(BODY, BINARY_TYPE, document.body.to_vec()).uncompressed();
            Ok(Rendering {
                variants: vec![variant],
                sources: Vec::new(),
                hidden_until: None,
            })
        };
        let key = format!("legacy/{file}");
        let public = self.public();
        let document = self
            .index_file(
                &public,
                &key,
                file,
                self.ttl,
                None,
                client.caller.role,
                render,
            )
            .await?;
        Ok(self
            .proxy
            .respond(&document, BODY, client, Serving::whole(VARY))?)
    }

    #[allow(clippy::too_many_arguments)]
    async fn index_file<R>(
        &self,
        routing: &Routing,
        key: &str,
        upstream_path: &str,
        ttl: Duration,
        known_current: Option<KnownCurrent>,
        role: Role,
        render: R,
    ) -> Result<Document>
    where
        R: FnOnce(UpstreamDocument) -> proxy::Result<Rendering> + Send + 'static,
    {
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: routing.key(key),
            url: upstream_url(&routing.upstream, upstream_path)?,
            accept: "*/*",
            ttl,
            allow_redirect: proxy::same_origin(&routing.upstream),
            known_current,
            role,
        };
        Ok(self.proxy.document(request, render).await?)
    }

    async fn gem(&self, full_name: &FullName, client: ClientRequest<'_>) -> Result<Response<Body>> {
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            source: self.gem_source(full_name, client.caller.role).await?,
            content_type: BINARY_TYPE,
            client,
            redirect_hosts: &[],
            key: None,
            pin_first_seen: false,
            announce_unverified_length: false,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    /// Where a `.gem` comes from: the `/info` file of the gem its name starts with (gem names
    /// known to `/versions` first), fetched again if the cached copy may predate the release.
    async fn gem_source(&self, full_name: &FullName, role: Role) -> Result<ArtifactSource> {
        if let Some((name, routing)) = self.routed_reading(full_name)? {
            // Known by the route's own id: never a source the public upstream advertised.
            let id = routing.key(&gem_id(full_name.as_str()));
            return self.advertised_gem(&id, vec![name], role).await;
        }
        let id = gem_id(full_name.as_str());
        let mut names: Vec<GemName> = full_name.splits().into_iter().map(|(n, _)| n).collect();
        if let Some(versions) = self
            .proxy
            .cached_document(ECOSYSTEM, "versions", self.ttl)?
        {
            let known = self.info_checksums(&versions).await?;
            names.sort_by_key(|name| !known.contains_key(name.as_str()));
        }
        self.advertised_gem(&id, names, role).await
    }

    /// The source advertised as `id` by the `/info` file of one of `names`.
    async fn advertised_gem(
        &self,
        id: &str,
        names: Vec<GemName>,
        role: Role,
    ) -> Result<ArtifactSource> {
        let advertisement = self
            .proxy
            .advertised_source(ECOSYSTEM, id, role, &names, |name, recency| async move {
                match self.info(&name, recency, role).await {
                    Ok(document) => Ok(Some(document)),
                    Err(error) if error.is_not_found() => Ok(None),
                    Err(error) => Err(error),
                }
            })
            .await?;
        Ok(advertisement.into_source()?)
    }

    /// `/quick/Marshal.4.8/FULL.gemspec.rz`: immutable, from the upstream's own path (no
    /// checksum is published for it).
    async fn gemspec(
        &self,
        full_name: &FullName,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let path = format!("quick/Marshal.4.8/{full_name}.gemspec.rz");
        // A private gem's gemspec comes from its route, judged by the routed name.
        let (url, release) = match self.routed_reading(full_name)? {
            Some((name, routing)) => (
                upstream_url(&routing.upstream, &path)?,
                Release {
                    package: name.to_string(),
                    version: None,
                    published: None,
                },
            ),
            None => (
                upstream_url(&self.upstream, &path)?,
                gemspec_release(full_name),
            ),
        };
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            // No index lists gemspecs: the path is the upstream's own, below its base URL, for
            // a parsed gem name.
            source: ArtifactSource::unadvertised(url, release),
            content_type: BINARY_TYPE,
            client,
            redirect_hosts: &[],
            key: None,
            pin_first_seen: false,
            announce_unverified_length: false,
        };
        Ok(self.proxy.artifact(request).await?)
    }
}

/// `path` below the upstream base `base`.
fn upstream_url(base: &Url, path: &str) -> Result<Url> {
    Ok(base.join(path).map_err(|e| proxy::Error::BadUpstreamUrl {
        url: base.to_string(),
        source: e.into(),
    })?)
}

/// The MD5 of a cached `/info` file: its entity tag is that MD5, quoted (see `compact_file`).
fn info_md5(document: &Document) -> Option<&str> {
    document.etag(BODY).map(|etag| etag.trim_matches('"'))
}

/// An `/info` copy is current when its MD5 is the one `/versions` lists.
fn has_md5(listed: &str) -> KnownCurrent {
    let listed = listed.to_owned();
    Arc::new(move |document: &Document| info_md5(document) == Some(listed.as_str()))
}

/// Every `.gem` an `/info/GEM` file lists: its upstream URL and published checksum.
fn gem_sources(routing: &Routing, gem: &str, info: &Bytes) -> proxy::Result<Vec<Advertised>> {
    let upstream = &routing.upstream;
    compact::info_entries(info)
        .into_iter()
        .map(|entry| {
            let full_name = format!("{gem}-{}", entry.version);
            let url = upstream
                .join(&format!("gems/{full_name}.gem"))
                .map_err(|e| proxy::Error::BadUpstreamUrl {
                    url: upstream.to_string(),
                    source: e.into(),
                })?;
            // `VERSION-PLATFORM`: a platform's build belongs to the version.
            let version = match entry.version.split_once('-') {
                Some((version, _platform)) => version,
                None => entry.version.as_str(),
            };
            Ok(Advertised {
                id: routing.key(&gem_id(&full_name)),
                url,
                checksum: entry.checksum,
                package: gem.to_owned(),
                version: Some(version.to_owned()),
                published: None,
            })
        })
        .collect()
}

/// The key of a gem's `/info` file among the ecosystem's documents.
fn info_key(gem: &str) -> String {
    format!("info/{gem}")
}

/// The keys of the documents pmcache stores for a gem (for a purge): its `/info` file. The
/// `versions` file and the legacy indexes are shared by every gem and stay.
pub fn document_keys(gem: &GemName) -> Vec<String> {
    vec![info_key(gem.as_str())]
}

/// The artifact stored next to a `.gem` without being advertised (for a purge): its
/// `quick/Marshal.4.8/FULL.gemspec.rz`, at the upstream's own path.
pub fn gemspec_of(gem_url: &Url) -> Option<Url> {
    let file = gem_url.path_segments()?.next_back()?;
    let full_name = file.strip_suffix(".gem")?;
    gem_url
        .join(&format!("../quick/Marshal.4.8/{full_name}.gemspec.rz"))
        .ok()
}

fn gem_id(full_name: &str) -> String {
    format!("gem/{full_name}")
}

fn malformed(document: &UpstreamDocument, reason: compact::Malformed) -> proxy::Error {
    proxy::Error::Document {
        url: document.url.to_string(),
        source: Box::new(reason),
    }
}

/// `/`: RubyGems before 3.5.19 probes it (HEAD) and uses the compact index only on a 200.
fn root(client: ClientRequest<'_>) -> Response<Body> {
    let text = "pmcache RubyGems mirror: gem sources --add <this URL>, or Bundler's mirror.https://rubygems.org\n";
    let body = if client.head {
        proxy::empty()
    } else {
        proxy::full(text)
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(COMPACT_TYPE),
    );
    response.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(text.len()),
    );
    response
}

/// What the policy judges a gemspec by: its gem's name only (the shortest reading of the full
/// name), so that a denied gem's metadata is refused too; the age rule is for the `.gem`, whose
/// publish time the index gives.
fn gemspec_release(full_name: &FullName) -> Release {
    let package = full_name
        .splits()
        .first()
        .map(|(name, _)| name.to_string())
        .unwrap_or_default();
    Release {
        package,
        version: None,
        published: None,
    }
}

#[cfg(test)]
mod purge_tests {
    use super::*;

    #[test]
    fn a_gems_gemspec_is_at_the_upstreams_quick_path() {
        let upstream = Url::parse("http://127.0.0.1:9/mirror/").expect("url");
        let gem = upstream.join("gems/rack-3.0.0-java.gem").expect("url");
        assert_eq!(
            gemspec_of(&gem).expect("gemspec").as_str(),
            "http://127.0.0.1:9/mirror/quick/Marshal.4.8/rack-3.0.0-java.gemspec.rz"
        );
        assert_eq!(gemspec_of(&upstream.join("info/rack").expect("url")), None);
    }

    #[test]
    fn platform_builds_belong_to_their_version() {
        let upstream = Url::parse("http://127.0.0.1:9/").expect("url");
        let info = Bytes::from_static(b"---\n1.0.0 |checksum:\n1.0.0-java |checksum:\n");
        let sources = gem_sources(&Routing::public(&upstream), "demo", &info).expect("sources");
        let versions: Vec<(&str, Option<&str>)> = sources
            .iter()
            .map(|source| (source.package.as_str(), source.version.as_deref()))
            .collect();
        assert_eq!(versions, [("demo", Some("1.0.0")), ("demo", Some("1.0.0"))]);
    }
}
