//! Immutable artifacts: where they come from (sources learnt from upstream documents), how their
//! fetch may be redirected, and serving them from the store or through a fill.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use url::Url;

use crate::Proxy;
use crate::artifact_record::{StoredBy, pinned, stored};
use crate::body::{self, Body};
use crate::checksum::Checksum;
use crate::error::Result;
use crate::inflight::{self, FillJob, Keep};
use crate::metrics::Answer;
use crate::origin::RedirectPolicy;
use crate::role::{Caller, ReadMisses};
use crate::serve::{self, BlobAnswer, CACHE_HEADER, CacheStatus, ClientRequest, Ranges};

/// Where an artifact comes from: the upstream URL and published checksum a fetched document
/// advertised (see [`Proxy::advertised_source`](crate::Proxy::advertised_source)). Only the
/// proxy makes these, from the documents it fetched from a configured upstream (stored, or
/// relayed to a read-role request, whose sources only read-role requests then use), so a client
/// can never make pmcache fetch a URL of its choosing; the one exception is
/// [`ArtifactSource::unadvertised`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactSource {
    /// The upstream URL, absolute, without fragment.
    url: Url,
    /// The checksum the upstream published for it, if any.
    checksum: Option<Checksum>,
    /// The release it belongs to, as its document said: what the policy judges.
    release: Option<Release>,
    /// Other versions whose documents named this very artifact (a Composer tag and branch at
    /// one commit share one archive): a version refused refuses the bytes under any name.
    other_versions: Vec<String>,
    /// Recorded by a pmcache that did not keep publish times: the age rule cannot judge it
    /// until its document is rendered again.
    undated: bool,
}

/// The package, version and publish time an artifact belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The package's name, as its frontend normalises it (empty in records an older pmcache
    /// wrote).
    pub package: String,
    /// The version, when the frontend could tell.
    pub version: Option<String>,
    /// When the upstream says it was published.
    pub published: Option<std::time::SystemTime>,
}

impl ArtifactSource {
    /// A source a stored document advertised.
    pub(crate) fn advertised(
        url: Url,
        checksum: Option<Checksum>,
        release: Option<Release>,
    ) -> ArtifactSource {
        ArtifactSource {
            url,
            checksum,
            release,
            other_versions: Vec::new(),
            undated: false,
        }
    }

    /// The same source, as a stored record names it: with the other versions that named the
    /// artifact, and whether the record predates publish times.
    pub(crate) fn recorded(mut self, other_versions: Vec<String>, undated: bool) -> ArtifactSource {
        self.other_versions = other_versions;
        self.undated = undated;
        self
    }

    /// Other versions whose documents named this artifact.
    pub(crate) fn other_versions(&self) -> &[String] {
        &self.other_versions
    }

    /// Whether its record predates publish times.
    pub(crate) fn is_undated(&self) -> bool {
        self.undated
    }

    /// A source no document advertised, with no published checksum: only for artifacts at a
    /// fixed place below a configured upstream, whose URL the frontend builds from a parsed,
    /// validated name (RubyGems' `quick/Marshal.4.8/NAME-VERSION.gemspec.rz`, which no index
    /// lists). Safe there because the URL stays within the upstream's origin (redirects too,
    /// as nothing vouches for the bytes) and says nothing the client could not ask the upstream
    /// itself; never use it for a URL a client or a document chose.
    pub fn unadvertised(url: Url, release: Release) -> ArtifactSource {
        ArtifactSource {
            url,
            checksum: None,
            release: Some(release),
            other_versions: Vec::new(),
            undated: false,
        }
    }

    /// The upstream URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The checksum the upstream published, if any.
    pub fn checksum(&self) -> Option<&Checksum> {
        self.checksum.as_ref()
    }

    /// The release its document said it belongs to, if any.
    pub fn release(&self) -> Option<&Release> {
        self.release.as_ref()
    }
}

/// Where the upstream may redirect the fetch of an artifact: within the origin it was
/// published at; elsewhere only to `hosts` when an operator listed some, else to any https URL
/// when its bytes are vouched for (a published checksum, or a pin of the first copy):
/// registries hand downloads to blob stores and CDNs, code hosts to archive hosts. Bytes that
/// nothing vouches for never leave the origin.
fn redirect_policy(source: &ArtifactSource, pinned: bool, hosts: &[String]) -> RedirectPolicy {
    let origin = source.url.origin();
    let vouched = source.checksum.is_some() || pinned;
    let hosts = hosts.to_vec();
    Arc::new(move |next: &Url| {
        next.origin() == origin
            || match hosts.is_empty() {
                true => vouched && next.scheme() == "https",
                false => crate::host_listed(&hosts, next),
            }
    })
}

/// A request for one artifact.
pub struct ArtifactRequest<'a> {
    /// `pypi`, `npm`, `rubygems` or `packagist`: keeps ecosystems' keys apart.
    pub ecosystem: &'static str,
    /// Where the upstream publishes it, as a document advertised it.
    pub source: ArtifactSource,
    /// The `Content-Type` to answer with.
    pub content_type: &'static str,
    /// The client's method and headers (HEAD, ranges, conditional requests).
    pub client: ClientRequest<'a>,
    /// The only hosts (`host` or `host:port`) the upstream may redirect this fetch to besides
    /// the source's origin, when an operator listed some (`packagist.dist_hosts`); empty: any
    /// https URL when a checksum or pin vouches for the bytes, else none.
    pub redirect_hosts: &'a [String],
    /// What the artifact is stored under, when its upstream URL may change while its bytes must
    /// not (a Composer dist is one archive per package and reference, wherever it is
    /// downloaded from); None: its upstream URL.
    pub key: Option<String>,
    /// With no published checksum, accept only the bytes first stored under the key ever after
    /// (their sha256 is pinned): a refetch that brings other bytes is refused.
    pub pin_first_seen: bool,
    /// Send `Content-Length` on a miss, before the bytes are verified. Clients that take a body
    /// cut short as complete (Ruby's Net::HTTP ignores an early end when it has a length) must
    /// get none: a refused fill then ends the chunked body without its last chunk, which every
    /// client reads as a failed download.
    pub announce_unverified_length: bool,
}

/// Immutable artifacts may be cached by clients for ever.
const IMMUTABLE: &str = "public, max-age=365000000, immutable";

impl Proxy {
    /// Serves an artifact: from the store when a copy verified against the currently published
    /// checksum exists, else through a single-flight verified fill.
    pub async fn artifact(&self, request: ArtifactRequest<'_>) -> Result<Response<Body>> {
        // Whether or not a copy is stored: a rule added later applies to it too.
        self.check_release(request.ecosystem, &request.source)?;
        let route_hosts = self.route_host_guard(request.ecosystem, &request.source)?;
        let key = match &request.key {
            Some(key) => format!("{}/{key}", request.ecosystem),
            None => artifact_key(request.ecosystem, &request.source.url),
        };
        let (checksum, pinned) = match (&request.source.checksum, request.pin_first_seen) {
            (None, true) => (pinned(&self.inner.store, &key)?, true),
            (published, _) => (published.clone(), false),
        };
        if let Some(response) = self.serve_stored(&key, checksum.as_ref(), &request)? {
            return Ok(response);
        }
        let keep = self.keeping(request.client.caller);
        let cache = match keep {
            Keep::Store(_) => CacheStatus::Miss,
            Keep::Relay | Keep::JoinOnly => CacheStatus::Relay,
        };
        let job = FillJob {
            key,
            url: request.source.url.clone(),
            pinned: pinned && checksum.is_some(),
            checksum,
            allow_redirect: {
                let allowed = redirect_policy(
                    &request.source,
                    request.pin_first_seen,
                    request.redirect_hosts,
                );
                Arc::new(move |next: &Url| allowed(next) && route_hosts(next))
            },
            keep,
        };
        let mut follower = self
            .inner
            .fills
            .join(job, &self.inner.store, &self.inner.upstream)?;
        let length = inflight::started(&mut follower.progress).await?;
        let mut headers = artifact_headers(request.content_type, cache);
        if let Some(length) = length.filter(|_| request.announce_unverified_length) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let body = if request.client.head {
            body::empty()
        } else {
            inflight::follow(follower)
        };
        let response = serve::with_headers(StatusCode::OK, headers, body);
        Ok(self.watch_abandon(response, Answer::artifact))
    }

    fn serve_stored(
        &self,
        key: &str,
        checksum: Option<&Checksum>,
        request: &ArtifactRequest<'_>,
    ) -> Result<Option<Response<Body>>> {
        let access = request.client.access();
        let store = &self.inner.store;
        let Some((record, content)) = stored(store, key, checksum, |digest| {
            store.blob_content(digest, access)
        })?
        else {
            return Ok(None);
        };
        let headers = artifact_headers(request.content_type, CacheStatus::Hit);
        let answer = BlobAnswer {
            size: record.size,
            etag: serve::etag_of(&record.digest),
            last_modified: None,
            ranges: Ranges::Honour,
        };
        let response = serve::blob_response(content, &answer, request.client, headers)?;
        Ok(Some(self.watch_abandon(response, Answer::artifact)))
    }
}

impl Proxy {
    /// What a miss of `caller` may do: fill the cache, relay, or only join a fill under way.
    fn keeping(&self, caller: &Caller) -> Keep {
        match (caller.role.may_populate(), self.read_misses()) {
            (true, _) => Keep::Store(StoredBy::of(caller)),
            (false, ReadMisses::Relay) => Keep::Relay,
            (false, ReadMisses::Refuse) => Keep::JoinOnly,
        }
    }
}

fn artifact_headers(content_type: &'static str, cache: CacheStatus) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(CACHE_HEADER, HeaderValue::from_static(cache.as_str()));
    headers
}

pub(crate) fn artifact_key(ecosystem: &str, url: &Url) -> String {
    format!("{ecosystem}/{url}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksum;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a test URL")
    }

    fn sha256() -> Option<Checksum> {
        Checksum::from_hex("sha256", &"ab".repeat(32))
    }

    #[test]
    fn unverified_artifacts_are_only_redirected_within_their_origin() {
        let source = ArtifactSource::unadvertised(
            url("http://127.0.0.1:9000/a.gemspec.rz"),
            Release {
                package: "a".to_owned(),
                version: None,
                published: None,
            },
        );
        let policy = redirect_policy(&source, false, &[]);
        assert!(policy(&url("http://127.0.0.1:9000/elsewhere/a.gemspec.rz")));
        assert!(!policy(&url("https://cdn.example/a.gemspec.rz")));
    }

    #[test]
    fn verified_or_pinned_artifacts_follow_https_redirects() {
        let tarball = url("http://127.0.0.1:9000/a/-/a-1.0.0.tgz");
        let verified = ArtifactSource::advertised(tarball.clone(), sha256(), None);
        assert!(sha256().is_some());
        let policy = redirect_policy(&verified, false, &[]);
        assert!(policy(&url("https://blobs.example/a-1.0.0.tgz")));
        assert!(!policy(&url("http://127.0.0.2:9000/a-1.0.0.tgz")));
        let pinned = ArtifactSource::advertised(tarball, None, None);
        assert!(redirect_policy(&pinned, true, &[])(&url(
            "https://codeload.example/a.zip"
        )));
    }

    #[test]
    fn listed_hosts_are_the_only_redirect_targets_when_there_is_a_list() {
        let dist = ArtifactSource::advertised(
            url("http://127.0.0.1:9000/repos/a/b/zipball/abc"),
            None,
            None,
        );
        let listed = redirect_policy(&dist, true, &["codeload.example".to_owned()]);
        assert!(listed(&url("http://127.0.0.1:9000/codeload/a/b/zip/abc")));
        assert!(listed(&url("https://codeload.example/a/b/zip/abc")));
        assert!(!listed(&url("https://elsewhere.example/a.zip")));
        assert!(!listed(&url("http://127.0.0.1:9001/a.zip")));
        let with_port = redirect_policy(&dist, true, &["127.0.0.1:9001".to_owned()]);
        assert!(with_port(&url("http://127.0.0.1:9001/a.zip")));
        assert!(!with_port(&url("http://127.0.0.1:9002/a.zip")));
    }
}
