//! The `/rubygems/` routes: the compact index, the legacy indexes, `.gem` and `.gemspec.rz`
//! files, and the probes and retired endpoints clients still ask for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, header};
use pmcache_policy::{Policy, Rule, Verdict};
use pmcache_proxy::{
    self as proxy, Advertised, ArtifactRequest, ArtifactSource, Body, ClientRequest, Document,
    DocumentRequest, KnownCurrent, Recency, Release, Rendering, Role, Routing, Serving,
    UpstreamDocument, Variant,
};
use url::Url;

use crate::error::{Error, Result};
use crate::name::{FullName, GemName};
use crate::path::{self, GemsPath};
use crate::{Frontend, ParsedVersions};
use crate::{compact, filter, release_time};

/// Index keys and metrics label of this frontend.
pub(crate) const ECOSYSTEM: &str = "rubygems";
/// This frontend in the policy's terms.
const POLICY: pmcache_policy::Ecosystem = pmcache_policy::Ecosystem::Rubygems;
/// The variant clients get: the upstream's bytes, filtered by the policy.
pub(crate) const BODY: &str = "body";
/// Never served: of an `/info` file, the upstream's MD5 (as its entity tag), which the
/// upstream's `/versions` lists; of `/versions`, the length of the upstream's bytes it starts
/// with (what follows is pmcache's).
const UPSTREAM: &str = "upstream";
/// Never served: of an `/info` file that hides versions, its `/versions` line, when it expires
/// (unix seconds, or `-`) and the upstream's MD5, one a line.
pub(crate) const HIDDEN: &str = "hidden";
const JSON_TYPE: &str = "application/json";
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
                    .compact_file(
                        &self.public(),
                        "names",
                        "names",
                        self.ttl,
                        None,
                        role,
                        Shape::Verbatim,
                    )
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
                self.note_routed_gems(client.caller.role).await;
                let shape = Shape::Versions(self.current_corrections());
                self.compact_file(
                    &self.public(),
                    "versions",
                    "versions",
                    self.ttl,
                    None,
                    client.caller.role,
                    shape,
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
    ///
    /// A gem the policy refuses whole gets 403 before anything is fetched; the versions it
    /// refuses are left out (see [`filter::filter_info`]).
    async fn info(&self, name: &GemName, recency: Recency, role: Role) -> Result<Document> {
        self.proxy.check_package(POLICY, name.as_str())?;
        self.info_of_served(name, recency, role).await
    }

    /// `/info/NAME` of a gem the policy does not refuse whole (or, for a `.gem` request, one
    /// whose refusal the core gives as the artifact's).
    async fn info_of_served(
        &self,
        name: &GemName,
        recency: Recency,
        role: Role,
    ) -> Result<Document> {
        let key = info_key(name.as_str());
        let routing = self.routing(name)?;
        if routing.is_routed() {
            return self.routed_info(name, &routing, recency, role).await;
        }
        let listed = self.listed_info_checksum(name).await?;
        let (ttl, known_current) = match &listed {
            Some(listed) => (Duration::ZERO, Some(has_md5(listed))),
            None => (recency.ttl(self.ttl), None),
        };
        let shape = self
            .info_shape(&routing, name, listed.as_deref(), ttl, role)
            .await?;
        let document = self
            .compact_file(
                &routing,
                &key,
                &format!("info/{name}"),
                ttl,
                known_current,
                role,
                shape,
            )
            .await?;
        self.note_correction(name.as_str(), &document, role).await;
        if let Some(listed) = listed.filter(|listed| upstream_md5(&document) != Some(listed)) {
            // The upstream's /info is newer (or older) than the /versions pmcache holds; the
            // next /versions refresh brings them together.
            tracing::info!(gem = %name, versions_md5 = %listed, "upstream /info and /versions differ");
        }
        Ok(document)
    }

    /// How gem `name`'s `/info` is filtered: by the rules in force, with its versions' publish
    /// times when the age rule needs them (`listed`: the MD5 the public `/versions` lists for
    /// it, when it goes by that; `ttl`: the `/info`'s own).
    async fn info_shape(
        &self,
        routing: &Routing,
        name: &GemName,
        listed: Option<&str>,
        ttl: Duration,
        role: Role,
    ) -> Result<Shape> {
        let policy = self.proxy.policy();
        let times = match policy.needs_publish_times(POLICY, name.as_str()) {
            true => {
                let times_ttl = self.times_ttl(routing, name, listed, ttl).await?;
                self.release_times(routing, name, times_ttl, role).await?
            }
            false => None,
        };
        Ok(Shape::Info(InfoPolicy {
            gem: name.to_string(),
            policy,
            times,
            retry: self.ttl,
        }))
    }

    /// `/info/NAME` of a gem a route takes, from the route's server and judged by the same
    /// rules (its publish times from the route's versions API). The public `/versions` says
    /// nothing of it, so the TTL alone decides.
    async fn routed_info(
        &self,
        name: &GemName,
        routing: &Routing,
        recency: Recency,
        role: Role,
    ) -> Result<Document> {
        let ttl = recency.ttl(self.ttl);
        let shape = self.info_shape(routing, name, None, ttl, role).await?;
        let key = info_key(name.as_str());
        let document = self
            .compact_file(
                routing,
                &key,
                &format!("info/{name}"),
                ttl,
                None,
                role,
                shape,
            )
            .await?;
        self.note_routed(name.as_str(), &document, role).await;
        Ok(document)
    }

    /// Notes the `/versions` line of every gem the rubygems routes take that their servers'
    /// own `/versions` lists (Bundler asks only for the gems `/versions` lists), its `/info`
    /// fetched from the route if the cached copy is stale. A route that fails is logged and
    /// skipped: the public `/versions` is served all the same.
    async fn note_routed_gems(&self, role: Role) {
        let policy = self.proxy.policy();
        let upstreams = policy
            .routes()
            .iter()
            .filter_map(|route| match route.upstream() {
                pmcache_policy::Upstream::Url(url) if route.ecosystem() == POLICY => Some(url),
                _ => None,
            });
        for upstream in upstreams {
            let routing = Routing::private(upstream);
            if let Err(error) = self.note_route(&routing, role).await {
                tracing::warn!(upstream = %routing.upstream, %error, "routed gems left out of /versions");
            }
        }
    }

    /// [`Self::note_routed_gems`] for one route's server.
    async fn note_route(&self, routing: &Routing, role: Role) -> Result<()> {
        let versions = self
            .compact_file(
                routing,
                "versions",
                "versions",
                self.ttl,
                None,
                role,
                Shape::Verbatim,
            )
            .await?;
        let policy = self.proxy.policy();
        let Some(digest) = versions.digest(BODY) else {
            return Ok(());
        };
        if self.walked_recently(routing, digest, &policy) {
            return Ok(());
        }
        let body = self.proxy.variant_bytes(&versions, BODY).await?;
        let mut complete = true;
        for gem in compact::info_checksums(&body).into_keys() {
            let Ok(name) = GemName::parse(&gem) else {
                continue;
            };
            // Another route (or none) may take it: only this one's gems.
            let taken = self.routing(&name).ok().as_ref() == Some(routing);
            let allowed = matches!(
                self.proxy.policy().judge_name(POLICY, name.as_str()),
                Verdict::Allowed
            );
            if !taken || !allowed {
                continue;
            }
            if let Err(error) = self.routed_info(&name, routing, Recency::Usual, role).await {
                tracing::warn!(gem = %name, %error, "a routed gem left out of /versions");
                complete = false;
            }
        }
        if complete {
            let walked = crate::WalkedRoute {
                versions: digest,
                policy,
                at: std::time::Instant::now(),
            };
            self.walked_routes()
                .insert(routing.upstream.clone(), walked);
        }
        Ok(())
    }

    /// Whether `routing`'s gems were walked for this `/versions` of its server (`digest`)
    /// under these rules within the metadata TTL: a change of any `/info` there changes its
    /// `/versions`, and a hidden version coming of age shows within a TTL.
    fn walked_recently(
        &self,
        routing: &Routing,
        digest: pmcache_proxy::Digest,
        policy: &Arc<Policy>,
    ) -> bool {
        self.walked_routes()
            .get(&routing.upstream)
            .is_some_and(|walked| {
                walked.versions == digest
                    && Arc::ptr_eq(&walked.policy, policy)
                    && walked.at.elapsed() < self.ttl
            })
    }

    fn walked_routes(&self) -> std::sync::MutexGuard<'_, HashMap<Url, crate::WalkedRoute>> {
        self.walked_routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How old the publish times an `/info` rendering is made from may be: any age within the
    /// TTL, unless the `/info` is fetched again (a new one may list a version the cached times
    /// predate: `listed` is the MD5 a fresh `/versions` lists, `ttl` the `/info`'s own) or its
    /// cached rendering hid a version until now (its time may be known since: the versions API
    /// lags the compact index, or failed).
    async fn times_ttl(
        &self,
        routing: &Routing,
        name: &GemName,
        listed: Option<&str>,
        ttl: Duration,
    ) -> Result<Duration> {
        let key = routing.key(&info_key(name.as_str()));
        let Some(cached) = self.proxy.cached_document(ECOSYSTEM, &key, ttl)? else {
            return Ok(Duration::ZERO);
        };
        let refetched = match listed {
            Some(listed) => upstream_md5(&cached) != Some(listed),
            None => !cached.is_fresh(),
        };
        if refetched || self.hid_until_now(&cached).await {
            return Ok(Duration::ZERO);
        }
        Ok(self.ttl)
    }

    /// Whether a cached `/info` rendering hides a version until a time that has passed.
    async fn hid_until_now(&self, cached: &Document) -> bool {
        if cached.digest(HIDDEN).is_none() {
            return false;
        }
        let Ok(text) = self.proxy.variant_bytes(cached, HIDDEN).await else {
            // Unreadable: asking the versions API again is the safe side.
            return true;
        };
        hidden_until(&text).is_some_and(|until| until <= SystemTime::now())
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
        let mut body = self.proxy.variant_bytes(versions, BODY).await?;
        // Only the upstream's part: pmcache's lines name the MD5s it serves, not the upstream's.
        if versions.digest(UPSTREAM).is_some() {
            let length = self.proxy.variant_bytes(versions, UPSTREAM).await?;
            let length = std::str::from_utf8(&length)
                .ok()
                .and_then(|length| length.trim().parse::<usize>().ok());
            if let Some(length) = length.filter(|length| *length <= body.len()) {
                body.truncate(length);
            }
        }
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

    /// A compact index file of `routing`'s upstream with its MD5 as entity tag, shaped by the
    /// policy as `shape` says; an `/info` file also records where each `.gem` it lists comes
    /// from, its checksum and publish time.
    #[allow(clippy::too_many_arguments)]
    async fn compact_file(
        &self,
        routing: &Routing,
        key: &str,
        upstream_path: &str,
        ttl: Duration,
        known_current: Option<KnownCurrent>,
        role: Role,
        shape: Shape,
    ) -> Result<Document> {
        let own = routing.clone();
        let render = move |document: UpstreamDocument| {
            if !compact::is_compact_index(&document.body) {
                return Err(malformed(&document, compact::Malformed::NotCompactIndex));
            }
            compact::check_upstream_digests(&document.headers, &document.body)
                .map_err(|reason| malformed(&document, reason))?;
            match shape {
                Shape::Verbatim => Ok(Rendering {
                    variants: vec![compact_variant(document.body.to_vec())],
                    sources: Vec::new(),
                    hidden_until: None,
                }),
                Shape::Info(info) => render_info(&own, &info, &document.body),
                Shape::Versions(corrections) => Ok(render_versions(&document.body, &corrections)),
            }
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
        let document = self
            .index_file(
                &self.public(),
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

    /// The versions API of `routing`'s upstream for `name` (`created_at` of each build), kept
    /// like the index files; None when the upstream has none for it or fails (its versions then
    /// have no known publish time).
    async fn release_times(
        &self,
        routing: &Routing,
        name: &GemName,
        ttl: Duration,
        role: Role,
    ) -> Result<Option<Bytes>> {
        let request = DocumentRequest {
            ecosystem: ECOSYSTEM,
            key: routing.key(&times_key(name.as_str())),
            url: upstream_url(&routing.upstream, &format!("api/v1/versions/{name}.json"))?,
            accept: JSON_TYPE,
            ttl,
            allow_redirect: proxy::same_origin(&routing.upstream),
            known_current: None,
            role,
        };
        let render = |document: UpstreamDocument| {
            release_time::parse(&document.body).map_err(|reason| proxy::Error::Document {
                url: document.url.to_string(),
                source: Box::new(reason),
            })?;
            Ok(Rendering {
                variants: vec![Variant::new(BODY, JSON_TYPE, document.body.to_vec())],
                sources: Vec::new(),
                hidden_until: None,
            })
        };
        // rubygems.org rate-limits its API: a cold `bundle install` asks for many gems at once.
        let fetched = {
            let _permit = self.versions_api.acquire().await;
            self.proxy.document(request, render).await
        };
        match fetched {
            Ok(document) => Ok(Some(self.proxy.variant_bytes(&document, BODY).await?)),
            Err(error) if error.status() == http::StatusCode::NOT_FOUND => Ok(None),
            Err(error) => {
                // Fail closed but keep serving: the versions without a known time are hidden
                // (under `unknown_release_time = deny`) until the next try, a TTL later.
                tracing::warn!(gem = %name, %error, "versions API failed: publish times unknown");
                Ok(None)
            }
        }
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
                // A refused gem's .gem gets the core's 403 with the reason, as its record says.
                match self.info_of_served(&name, recency, role).await {
                    Ok(document) => Ok(Some(document)),
                    Err(error) if error.is_not_found() => Ok(None),
                    Err(error) => Err(error),
                }
            })
            .await?;
        Ok(advertisement.into_source()?)
    }

    /// `/quick/Marshal.4.8/FULL.gemspec.rz`: immutable, from the upstream's own path (no
    /// checksum is published for it), judged as the `.gem` of the same full name.
    async fn gemspec(
        &self,
        full_name: &FullName,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            // No index lists gemspecs: the path is the upstream's own, below its base URL, for
            // a parsed gem name.
            source: self.gemspec_source(full_name, client.caller.role).await?,
            content_type: BINARY_TYPE,
            client,
            redirect_hosts: &[],
            key: None,
            pin_first_seen: false,
            announce_unverified_length: false,
        };
        Ok(self.proxy.artifact(request).await?)
    }

    /// Where a gemspec comes from (a private gem's from its route), and the release it is
    /// judged as: the one the `/info` listing its `.gem` records (so a version that `/info`
    /// hides, by age or by `deny`, has its metadata refused too), else every reading of the
    /// full name by the deny and allow lists. A reading refused whole refuses it at once.
    async fn gemspec_source(&self, full_name: &FullName, role: Role) -> Result<ArtifactSource> {
        let path = format!("quick/Marshal.4.8/{full_name}.gemspec.rz");
        let routed = self.routed_reading(full_name)?;
        let base = routed
            .as_ref()
            .map_or(&self.upstream, |(_, routing)| &routing.upstream);
        let url = upstream_url(base, &path)?;
        let readings = match &routed {
            Some((name, _)) => vec![name.clone()],
            None => full_name.splits().into_iter().map(|(n, _)| n).collect(),
        };
        // A gem refused whole is refused as such, before its /info is fetched, when every
        // reading of the name is (another reading may be a gem of its own that is served).
        let policy = self.proxy.policy();
        let verdicts: Vec<Verdict> = readings
            .iter()
            .map(|name| policy.judge_name(POLICY, name.as_str()))
            .collect();
        if verdicts.iter().all(|verdict| !verdict.is_allowed())
            && let Some(Verdict::Refused(refusal)) = verdicts.into_iter().next()
        {
            return Err(self.proxy.policy_refused(POLICY, refusal).into());
        }
        let listed = match self.gem_source(full_name, role).await {
            Ok(source) => source.release().cloned(),
            // No /info lists it: the upstream has most likely none either.
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(error),
        };
        let release = match listed {
            Some(release) => release,
            None => unlisted_gemspec_release(&self.proxy.policy(), full_name, &readings)
                .map_err(|refusal| self.proxy.policy_refused(POLICY, refusal))?,
        };
        Ok(ArtifactSource::unadvertised(url, release))
    }
}

/// `path` below the upstream base `base`.
fn upstream_url(base: &Url, path: &str) -> Result<Url> {
    Ok(base.join(path).map_err(|e| proxy::Error::BadUpstreamUrl {
        url: base.to_string(),
        source: e.into(),
    })?)
}

/// How the policy shapes a compact index file.
enum Shape {
    /// Served as the upstream sent it (`/names`).
    Verbatim,
    /// `/info/NAME`: refused versions removed.
    Info(InfoPolicy),
    /// `/versions`: these lines (with when each expires) appended.
    Versions(Vec<(filter::Correction, Option<SystemTime>)>),
}

/// What an `/info` rendering is judged by.
struct InfoPolicy {
    gem: String,
    policy: Arc<Policy>,
    /// The versions API answer, if the age rule needs it.
    times: Option<Bytes>,
    /// How long a version hidden for want of a publish time stays hidden before the versions
    /// API is asked again (the metadata TTL).
    retry: Duration,
}

/// A version hidden because its publish time is unknown is judged again at `retry_at` (its time
/// may be known by then), as one hidden by age is when it comes of age.
fn retry_unknown(verdict: Verdict, retry_at: SystemTime) -> Verdict {
    match verdict {
        Verdict::Refused(mut refusal) if refusal.rule == Rule::UnknownReleaseTime => {
            refusal.matures_at = Some(refusal.matures_at.map_or(retry_at, |at| at.min(retry_at)));
            Verdict::Refused(refusal)
        }
        other => other,
    }
}

/// The time until which a cached `/info` rendering hides versions, from its record of them (see
/// `HIDDEN`); None when they are hidden for good (or the record cannot be read).
fn hidden_until(text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    let secs = text.lines().nth(1)?.parse::<u64>().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The served variant of a compact index file: its MD5 is its entity tag (and `/versions`' MD5
/// of an `/info`).
fn compact_variant(body: Vec<u8>) -> Variant {
    let etag = quoted(&compact::md5_hex(&body));
    Variant::new(BODY, COMPACT_TYPE, body).with_etag(etag)
}

fn quoted(md5: &str) -> String {
    format!("\"{md5}\"")
}

/// `/info/NAME` without the versions the policy refuses; every `.gem` it lists stays recorded
/// with its publish time, so that the core refuses a hidden one with the rule's reason.
fn render_info(routing: &Routing, info: &InfoPolicy, body: &Bytes) -> proxy::Result<Rendering> {
    let times = match &info.times {
        // Checked when it was stored: unreadable now only if the store was tampered with.
        Some(times) => release_time::parse(times).unwrap_or_default(),
        None => HashMap::new(),
    };
    let now = SystemTime::now();
    let filtered = filter::filter_info(body, &times, |version, published| {
        let verdict = info
            .policy
            .judge(POLICY, &info.gem, version, published, now);
        retry_unknown(verdict, now + info.retry)
    });
    let sources = gem_sources(routing, &info.gem, body, &times)?;
    let upstream_md5 = compact::md5_hex(body);
    let hidden = match filtered.hidden.is_empty() {
        true => None,
        false => {
            tracing::debug!(gem = %info.gem, versions = ?filtered.hidden, "versions hidden by policy");
            let served_md5 = compact::md5_hex(&filtered.body);
            let line = filter::correction_line(&info.gem, &filtered.hidden, &served_md5);
            let until = filtered
                .until
                .and_then(|until| until.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or_else(|| "-".to_owned(), |until| until.as_secs().to_string());
            let text = format!("{line}\n{until}\n{upstream_md5}\n").into_bytes();
            Some(Variant::new(HIDDEN, COMPACT_TYPE, text).uncompressed())
        }
    };
    let mut variants = vec![
        compact_variant(filtered.body),
        Variant::new(UPSTREAM, COMPACT_TYPE, upstream_md5.clone().into_bytes())
            .with_etag(quoted(&upstream_md5))
            .uncompressed(),
    ];
    variants.extend(hidden);
    Ok(Rendering {
        variants,
        sources,
        hidden_until: filtered.until,
    })
}

/// `/versions`: the upstream's bytes, then the lines of the filtered `/info` renderings; it
/// expires when the first of them does.
fn render_versions(
    body: &Bytes,
    corrections: &[(filter::Correction, Option<SystemTime>)],
) -> Rendering {
    let lines: Vec<filter::Correction> = corrections
        .iter()
        .map(|(correction, _)| correction.clone())
        .collect();
    let served = filter::render_versions(body, &lines);
    let length = body.len().to_string().into_bytes();
    Rendering {
        variants: vec![
            compact_variant(served),
            Variant::new(UPSTREAM, COMPACT_TYPE, length).uncompressed(),
        ],
        sources: Vec::new(),
        hidden_until: corrections.iter().filter_map(|(_, until)| *until).min(),
    }
}

/// The upstream's MD5 of a cached `/info` file, which the upstream's `/versions` lists: kept
/// as the entity tag of a variant of its own, or (a copy rendered before the policy applied
/// to RubyGems) the served variant's, which was the upstream's bytes.
fn upstream_md5(document: &Document) -> Option<&str> {
    document
        .etag(UPSTREAM)
        .or_else(|| document.etag(BODY))
        .map(|etag| etag.trim_matches('"'))
}

/// An `/info` copy is current when its upstream MD5 is the one `/versions` lists.
fn has_md5(listed: &str) -> KnownCurrent {
    let listed = listed.to_owned();
    Arc::new(move |document: &Document| upstream_md5(document) == Some(listed.as_str()))
}

/// Every `.gem` an `/info/GEM` file lists: its upstream URL, published checksum and publish
/// time.
fn gem_sources(
    routing: &Routing,
    gem: &str,
    info: &Bytes,
    times: &HashMap<String, SystemTime>,
) -> proxy::Result<Vec<Advertised>> {
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
                published: times.get(&entry.version).copied(),
            })
        })
        .collect()
}

/// The key of a gem's `/info` file among the ecosystem's documents.
fn info_key(gem: &str) -> String {
    format!("info/{gem}")
}

/// The key of a gem's versions API answer (publish times).
fn times_key(gem: &str) -> String {
    format!("api/versions/{gem}")
}

/// The keys of the documents pmcache stores for a gem (for a purge): its `/info` file and its
/// publish times. The `versions` file and the legacy indexes are shared by every gem and stay.
pub fn document_keys(gem: &GemName) -> Vec<String> {
    vec![info_key(gem.as_str()), times_key(gem.as_str())]
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

/// What the policy judges a gemspec no `/info` lists by: refused when the deny or allow lists
/// refuse any reading of its full name among `readings` (where the name ends is unknown), else
/// its shortest reading's name (the core judges the name again).
fn unlisted_gemspec_release(
    policy: &Policy,
    full_name: &FullName,
    readings: &[GemName],
) -> std::result::Result<Release, pmcache_policy::Refusal> {
    for (name, version) in full_name.splits() {
        if !readings.contains(&name) {
            continue;
        }
        let number = version
            .split_once('-')
            .map_or(version, |(number, _)| number);
        if let Verdict::Refused(refusal) = policy.judge_lists(POLICY, name.as_str(), number) {
            return Err(refusal);
        }
    }
    Ok(Release {
        package: readings.first().map(GemName::to_string).unwrap_or_default(),
        version: None,
        published: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denying(patterns: &[&str]) -> Policy {
        let config = pmcache_policy::Config {
            deny: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..pmcache_policy::Config::default()
        };
        Policy::new(&config, &[], &[]).expect("policy")
    }

    fn readings(full_name: &FullName) -> Vec<GemName> {
        full_name
            .splits()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn an_unlisted_gemspec_is_refused_when_any_reading_is_denied() {
        // `demo-2-1.0.0-java` reads as demo 2-1.0.0-java or demo-2 1.0.0-java.
        let full_name = FullName::parse("demo-2-1.0.0-java").expect("full name");
        let all = readings(&full_name);
        let refused =
            unlisted_gemspec_release(&denying(&["rubygems:demo-2@1.0.0"]), &full_name, &all)
                .expect_err("refused");
        assert_eq!(refused.subject, "rubygems:demo-2@1.0.0");
        // A version the lists do not name passes, judged by its shortest reading's name.
        let release = unlisted_gemspec_release(&denying(&["rubygems:demo-2@9"]), &full_name, &all)
            .expect("served");
        assert_eq!(release.package, "demo");
        assert_eq!(release.version, None);
        // A routed gem has only its routed reading.
        let routed = [GemName::parse("demo").expect("name")];
        assert!(
            unlisted_gemspec_release(&denying(&["rubygems:demo-2@1.0.0"]), &full_name, &routed)
                .is_ok()
        );
    }

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
        let sources = gem_sources(&Routing::public(&upstream), "demo", &info, &HashMap::new())
            .expect("sources");
        let versions: Vec<(&str, Option<&str>)> = sources
            .iter()
            .map(|source| (source.package.as_str(), source.version.as_deref()))
            .collect();
        assert_eq!(versions, [("demo", Some("1.0.0")), ("demo", Some("1.0.0"))]);
    }

    #[test]
    fn each_gem_is_recorded_with_its_builds_publish_time() {
        let upstream = Url::parse("http://127.0.0.1:9/").expect("url");
        let info = Bytes::from_static(b"---\n1.0.0 |checksum:\n1.0.0-java |checksum:\n");
        let java = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let times = HashMap::from([("1.0.0-java".to_owned(), java)]);
        let sources =
            gem_sources(&Routing::public(&upstream), "demo", &info, &times).expect("sources");
        let published: Vec<_> = sources.iter().map(|source| source.published).collect();
        assert_eq!(published, [None, Some(java)]);
    }

    #[test]
    fn a_filtered_info_records_the_upstreams_md5_and_its_versions_line() {
        let upstream = Url::parse("http://127.0.0.1:9/").expect("url");
        let body = Bytes::from_static(b"---\n1.0.0 |checksum:\n1.1.0 |checksum:\n");
        let config = pmcache_policy::Config {
            deny: vec!["rubygems:demo@1.1.0".to_owned()],
            ..pmcache_policy::Config::default()
        };
        let info = InfoPolicy {
            gem: "demo".to_owned(),
            policy: Arc::new(Policy::new(&config, &[], &[]).expect("policy")),
            times: None,
            retry: Duration::from_secs(60),
        };
        let rendering = render_info(&Routing::public(&upstream), &info, &body).expect("rendering");
        let names: Vec<&str> = rendering.variants.iter().map(|v| v.name).collect();
        assert_eq!(names, [BODY, UPSTREAM, HIDDEN]);
        let served = &rendering.variants[0].body;
        assert_eq!(served, b"---\n1.0.0 |checksum:\n");
        let upstream_md5 = compact::md5_hex(&body);
        assert_eq!(
            rendering.variants[1].etag.as_deref(),
            Some(quoted(&upstream_md5).as_str())
        );
        let hidden = String::from_utf8(rendering.variants[2].body.clone()).expect("utf-8");
        let expected = format!(
            "demo -1.1.0 {}\n-\n{upstream_md5}\n",
            compact::md5_hex(served)
        );
        assert_eq!(hidden, expected);
        // Every .gem stays recorded: the core refuses the hidden one with the reason.
        assert_eq!(rendering.sources.len(), 2);
        assert_eq!(rendering.hidden_until, None);
    }
    #[test]
    fn a_version_without_a_publish_time_is_judged_again_a_ttl_later() {
        let upstream = Url::parse("http://127.0.0.1:9/").expect("url");
        let body = Bytes::from_static(b"---\n1.0.0 |checksum:\n1.1.0 |checksum:\n");
        let config = pmcache_policy::Config {
            min_release_age: Duration::from_secs(86_400),
            ..pmcache_policy::Config::default()
        };
        // 1.0.0 is old; the versions API does not know 1.1.0 yet (or did not answer).
        let times = br#"[{"number":"1.0.0","created_at":"2020-01-01T00:00:00Z"}]"#;
        let info = InfoPolicy {
            gem: "demo".to_owned(),
            policy: Arc::new(Policy::new(&config, &[], &[]).expect("policy")),
            times: Some(Bytes::from_static(times)),
            retry: Duration::from_secs(60),
        };
        let before = SystemTime::now();
        let rendering = render_info(&Routing::public(&upstream), &info, &body).expect("rendering");
        assert_eq!(rendering.variants[0].body, b"---\n1.0.0 |checksum:\n");
        let until = rendering.hidden_until.expect("hidden until a retry");
        assert!(until >= before + Duration::from_secs(59));
        assert!(until <= SystemTime::now() + Duration::from_secs(60));
        // The record says so too: that is what makes the next rendering ask the API again.
        let hidden = &rendering.variants[2].body;
        let recorded = hidden_until(hidden).expect("a time");
        assert!(recorded <= until && recorded + Duration::from_secs(1) >= until);
        assert_eq!(hidden_until(b"demo -1.1.0 x\n-\nabc\n"), None);
    }

    #[test]
    fn an_age_refusal_keeps_its_own_time_and_others_none() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let config = pmcache_policy::Config {
            min_release_age: Duration::from_secs(100),
            deny: vec!["rubygems:demo@2".to_owned()],
            ..pmcache_policy::Config::default()
        };
        let policy = Policy::new(&config, &[], &[]).expect("policy");
        let judge = |version, published| {
            let verdict = policy.judge(POLICY, "demo", version, published, at(1_000));
            match retry_unknown(verdict, at(1_060)) {
                Verdict::Refused(refusal) => Some(refusal.matures_at),
                Verdict::Allowed => None,
            }
        };
        assert_eq!(judge("1", Some(at(950))), Some(Some(at(1_050))));
        assert_eq!(judge("1", None), Some(Some(at(1_060))));
        assert_eq!(judge("2", Some(at(0))), Some(None));
        assert_eq!(judge("1", Some(at(0))), None);
    }
}
