//! A fixture Composer repository and a fixture code host on loopback, two listeners of one
//! [`FixtureServer`], answering like packagist.org and GitHub (protocol brief §2–§7).
//!
//! The repository lives under the path prefix `/repo/`: `packages.json` in packagist.org's
//! current shape with absolute URLs back to itself; `p2/NAME.json` and `p2/NAME~dev.json`
//! minified (`composer/2.0`, newest first, `__unset` for dropped keys), the tags file with the
//! partial `security-advisories`; `Last-Modified` on those files that changes exactly when their
//! bytes change, and `If-Modified-Since` with the exact date → 304 (nginx's `exact` rule, which
//! serves packagist.org's static files); the advisories API (form POST and `GET
//! ?packages[]=`), search, list, providers, the notify-batch POST and the metadata change feed.
//! The code host answers `/repos/OWNER/REPO/zipball/REF` with a 302 to
//! `/codeload/OWNER/REPO/zip/REF`, which serves the zip. Tests publish held versions, make the
//! code host serve a regenerated archive, point a dist at a URL of their own, inject faults or
//! statuses per path, stop and restart both listeners, and read one request log for both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{
    CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, IF_MODIFIED_SINCE, LAST_MODIFIED,
    LOCATION,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

pub use super::fixture_server::Fault;
use super::fixture_server::{
    Body, Faults, FixtureServer, Handler, RequestLog, corrupt, empty_body, full_body, lock,
    status_only, streamed_body,
};
use super::packagist_packages::{Packages, Release, packages};

/// The path prefix the repository lives under.
const REPO_PREFIX: &str = "/repo/";
/// Sun, 02 Jun 2024 00:00:00 GMT: every document's `Last-Modified` until its bytes change.
pub const START_TIME: u64 = 1_717_286_400;
/// How far the fixture clock moves for each change, so that every change has its own date.
const TICK: u64 = 3600;
/// What packagist.org tells Composer 1 (`warning`, for `warning-versions: <1.999`).
pub const COMPOSER_1_WARNING: &str = "Support for Composer 1 has been shutdown on September 1st \
     2025. You should upgrade to Composer 2. See \
     https://blog.packagist.com/shutting-down-packagist-org-support-for-composer-1-x/";
/// The filter list packagist.org names in `filter.lists`.
const FILTER_LIST: &str = "aikido-malware";
/// The value a minified entry gives a key the previous version had and this one lacks.
pub const UNSET: &str = "__unset";
const JSON_TYPE: &str = "application/json";
/// packagist.org's answer to an advisories request without package names.
const MISSING_PACKAGES: &str = "Missing array of package names as the \"packages\" parameter";

/// Which listener saw a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The Composer repository, under `/repo/`.
    Repo,
    /// The code host (zipballs and codeload).
    CodeHost,
}

/// What a request asked for, by listener and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `packages.json`.
    PackagesJson,
    /// `p2/NAME.json`, known or not.
    P2(String),
    /// `p2/NAME~dev.json`, known or not.
    P2Dev(String),
    /// The code host's `/repos/OWNER/REPO/zipball/REF`, by `REF`.
    Zipball(String),
    /// The code host's `/codeload/OWNER/REPO/zip/REF`, by `REF`.
    Codeload(String),
    /// `api/security-advisories/`.
    Advisories,
    /// `search.json`.
    Search,
    /// `downloads/` (notify-batch).
    Notify,
    /// `packages/list.json`.
    List,
    /// `providers/NAME.json`.
    Providers(String),
    /// `metadata/changes.json`.
    MetadataChanges,
    /// Anything else.
    Other,
}

/// One request as the fixture saw it, and its answer's status.
#[derive(Clone, Debug)]
pub struct Logged {
    pub listener: Listener,
    pub method: Method,
    /// Path and query, as sent.
    pub target: String,
    pub kind: Kind,
    /// The `If-Modified-Since` header, if any.
    pub if_modified_since: Option<String>,
    pub status: StatusCode,
    /// Every request header, for the checks the fields above do not cover.
    pub headers: HeaderMap,
    /// The request body (form or JSON for the POSTs; empty for GETs).
    pub body: Bytes,
}

impl Logged {
    /// The body as text, for checks and messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Display for Logged {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:?} {} {} ({:?}) -> {}",
            self.listener,
            self.method,
            self.target,
            self.kind,
            self.status.as_u16()
        )?;
        if let Some(date) = &self.if_modified_since {
            write!(formatter, " [If-Modified-Since: {date}]")?;
        }
        if !self.body.is_empty() {
            write!(formatter, " [body: {}]", self.body_text())?;
        }
        Ok(())
    }
}

/// A metadata file exactly as served now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub body: Bytes,
    /// Its `Last-Modified`, an IMF-fixdate.
    pub last_modified: String,
}

/// The absolute URLs the documents point at.
struct Urls {
    /// `http://127.0.0.1:P/repo`, without a trailing slash.
    repo: String,
    /// `http://127.0.0.1:C`.
    code_host: String,
}

/// `(name, version)`: how the catalog keys a release.
type Key = (String, String);

fn key(name: &str, version: &str) -> Key {
    (name.to_owned(), version.to_owned())
}

/// One entry of the metadata change feed.
struct Change {
    /// `vendor/name` or `vendor/name~dev`.
    package: String,
    time: u64,
}

/// What is published and how, and the documents rendered from it.
struct Catalog {
    published: HashSet<Key>,
    /// Dist URLs a test put in place of the code host's.
    dist_urls: HashMap<Key, String>,
    /// Release times a test put in place of the fixture's: a `time` as Packagist writes it, or
    /// None to leave `time` out.
    times: HashMap<Key, Option<String>>,
    /// Releases whose code host serves the regenerated archive.
    regenerated: HashSet<Key>,
    /// Every metadata file with a `Last-Modified`, by path below the prefix.
    documents: BTreeMap<String, Document>,
    /// The fixture clock: the time of the latest change.
    clock: u64,
    changes: Vec<Change>,
}

impl Catalog {
    /// Every release but the held ones published, every document dated [`START_TIME`].
    fn new(packages: &Packages, urls: &Urls) -> Result<Self> {
        let mut catalog = Self {
            published: packages
                .releases
                .iter()
                .filter(|release| !release.held)
                .map(|release| key(&release.name, &release.version))
                .collect(),
            dist_urls: HashMap::new(),
            times: HashMap::new(),
            regenerated: HashSet::new(),
            documents: BTreeMap::new(),
            clock: START_TIME,
            changes: Vec::new(),
        };
        for (path, body) in catalog.render(packages, urls)? {
            let last_modified = http_date(START_TIME);
            catalog.documents.insert(
                path,
                Document {
                    body,
                    last_modified,
                },
            );
        }
        Ok(catalog)
    }

    fn is_published(&self, release: &Release) -> bool {
        self.published
            .contains(&key(&release.name, &release.version))
    }

    /// Re-renders every document; those whose bytes changed get the next date on the clock and
    /// an entry in the change feed.
    fn refresh(&mut self, packages: &Packages, urls: &Urls) -> Result<()> {
        let rendered = self.render(packages, urls)?;
        let mut ticked = false;
        for (path, body) in rendered {
            if self
                .documents
                .get(&path)
                .is_some_and(|document| document.body == body)
            {
                continue;
            }
            if !ticked {
                self.clock += TICK;
                ticked = true;
            }
            if let Some(package) = path
                .strip_prefix("p2/")
                .and_then(|file| file.strip_suffix(".json"))
            {
                self.changes.push(Change {
                    package: package.to_owned(),
                    time: self.clock,
                });
            }
            let last_modified = http_date(self.clock);
            self.documents.insert(
                path,
                Document {
                    body,
                    last_modified,
                },
            );
        }
        Ok(())
    }

    /// `packages.json`, and both p2 files of every package with a published release.
    fn render(&self, packages: &Packages, urls: &Urls) -> Result<BTreeMap<String, Bytes>> {
        let mut documents = BTreeMap::new();
        documents.insert("packages.json".to_owned(), to_bytes(&root(urls))?);
        for name in packages.names() {
            let published: Vec<&Release> = packages
                .releases_of(name)
                .filter(|release| self.is_published(release))
                .collect();
            if published.is_empty() {
                continue;
            }
            let (mut branches, mut tags): (Vec<&Release>, Vec<&Release>) = published
                .into_iter()
                .partition(|release| release.is_branch());
            tags.sort_by_key(|release| std::cmp::Reverse(version_numbers(release)));
            branches.sort_by_key(|release| (!is_default_branch(release), release.version.clone()));
            let advisories: Vec<Value> = packages
                .advisories_of(name)
                .map(|advisory| {
                    json!({
                        "advisoryId": advisory["advisoryId"],
                        "affectedVersions": advisory["affectedVersions"],
                    })
                })
                .collect();
            let tags_file = self.p2_file(name, &tags, Some(advisories), urls);
            let branches_file = self.p2_file(name, &branches, None, urls);
            documents.insert(format!("p2/{name}.json"), to_bytes(&tags_file)?);
            documents.insert(format!("p2/{name}~dev.json"), to_bytes(&branches_file)?);
        }
        Ok(documents)
    }

    /// A p2 file as V2Dumper writes it: `minified`, the package's versions minified, and (for
    /// the tags file only) `security-advisories`, possibly empty.
    fn p2_file(
        &self,
        name: &str,
        releases: &[&Release],
        advisories: Option<Vec<Value>>,
        urls: &Urls,
    ) -> Value {
        let entries: Vec<Map<String, Value>> = releases
            .iter()
            .map(|release| {
                let dist_url = self
                    .dist_urls
                    .get(&key(&release.name, &release.version))
                    .cloned()
                    .unwrap_or_else(|| zipball_url(urls, release));
                let time = match self.times.get(&key(&release.name, &release.version)) {
                    Some(time) => time.as_deref(),
                    None => Some(release.time.as_str()),
                };
                entry(release, &dist_url, time, urls)
            })
            .collect();
        let mut file = Map::new();
        file.insert("minified".to_owned(), json!("composer/2.0"));
        file.insert("packages".to_owned(), json!({ name: minify(&entries) }));
        if let Some(advisories) = advisories {
            file.insert("security-advisories".to_owned(), Value::Array(advisories));
        }
        Value::Object(file)
    }
}

/// A version's expanded p2 entry, keys in Packagist's order (`Version::toV2Array`).
/// `time` is the release time to publish, if any.
fn entry(release: &Release, dist_url: &str, time: Option<&str>, urls: &Urls) -> Map<String, Value> {
    let mut entry = Map::new();
    let mut put = |name: &str, value: Value| {
        entry.insert(name.to_owned(), value);
    };
    put("name", json!(release.name));
    put("description", json!(release.description));
    put("version", json!(release.version));
    put("version_normalized", json!(release.version_normalized));
    put("license", release.license.clone());
    put(
        "source",
        json!({
            "type": "git",
            // On the code host too: Composer falls back to the source when every dist URL
            // fails, and that clone must fail on loopback, not leave the machine.
            "url": format!("{}/{}.git", urls.code_host, release.repository),
            "reference": release.reference,
        }),
    );
    put(
        "dist",
        json!({
            "type": "zip",
            "url": dist_url,
            "reference": release.reference,
            "shasum": release.shasum(),
        }),
    );
    put("type", json!(release.package_type));
    if let Some(time) = time {
        put("time", json!(time));
    }
    put("autoload", release.autoload.clone());
    put("require", Value::Object(release.require.clone()));
    for (name, value) in &release.extra_fields {
        put(name, value.clone());
    }
    entry
}

/// `1.2.0.0` → `[1, 2, 0, 0]`, for newest-first ordering of tags.
fn version_numbers(release: &Release) -> Vec<u64> {
    release
        .version_normalized
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

fn is_default_branch(release: &Release) -> bool {
    release.extra_fields.get("default-branch") == Some(&Value::Bool(true))
}

/// composer/metadata-minifier's `MetadataMinifier::minify`: the first version whole, each later
/// one as the keys whose value differs from the previous expanded version, and [`UNSET`] for
/// keys that version had and this one lacks.
pub fn minify(versions: &[Map<String, Value>]) -> Vec<Value> {
    let mut minified = Vec::with_capacity(versions.len());
    let mut last: Option<Map<String, Value>> = None;
    for version in versions {
        let Some(previous) = last.as_mut() else {
            minified.push(Value::Object(version.clone()));
            last = Some(version.clone());
            continue;
        };
        let mut diff = Map::new();
        for (name, value) in version {
            if previous.get(name) != Some(value) {
                diff.insert(name.clone(), value.clone());
                previous.insert(name.clone(), value.clone());
            }
        }
        let dropped: Vec<String> = previous
            .keys()
            .filter(|name| !version.contains_key(*name))
            .cloned()
            .collect();
        for name in dropped {
            previous.shift_remove(&name);
            diff.insert(name, json!(UNSET));
        }
        minified.push(Value::Object(diff));
    }
    minified
}

/// `MetadataMinifier::expand`: replays the diffs of a minified list.
pub fn expand(versions: &[Value]) -> Result<Vec<Map<String, Value>>> {
    let mut expanded: Vec<Map<String, Value>> = Vec::with_capacity(versions.len());
    for version in versions {
        let diff = version
            .as_object()
            .with_context(|| format!("minified entry {version} is not an object"))?;
        let mut next = expanded.last().cloned().unwrap_or_default();
        for (name, value) in diff {
            if value == UNSET {
                next.shift_remove(name);
            } else {
                next.insert(name.clone(), value.clone());
            }
        }
        expanded.push(next);
    }
    Ok(expanded)
}

/// `packages.json` as composer/packagist's `V2Dumper::dumpRoot` writes it, every absolute URL on
/// this repository; `providers-url` stays relative, as on packagist.org (with the prefix, since a
/// leading `/` is resolved against the host alone).
fn root(urls: &Urls) -> Value {
    let repo = &urls.repo;
    json!({
        "packages": [],
        "notify-batch": format!("{repo}/downloads/"),
        "providers-url": format!("{REPO_PREFIX}p/%package%$%hash%.json"),
        "metadata-url": format!("{repo}/p2/%package%.json"),
        "metadata-changes-url": format!("{repo}/metadata/changes.json"),
        "search": format!("{repo}/search.json?q=%query%&type=%type%"),
        "list": format!("{repo}/packages/list.json"),
        "security-advisories": {
            "metadata": true,
            "api-url": format!("{repo}/api/security-advisories/"),
        },
        "providers-api": format!("{repo}/providers/%package%.json"),
        "warning": COMPOSER_1_WARNING,
        "warning-versions": "<1.999",
        "providers": [],
        "filter": {
            "metadata": true,
            "lists": [FILTER_LIST],
            "default-lists": [FILTER_LIST],
            "summary-url": format!("{repo}/lists/all/summary.json"),
        },
    })
}

/// Compact JSON, as PHP's `json_encode` with unescaped slashes and unicode writes it.
fn to_bytes(value: &Value) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(value)?))
}

/// The code host's zipball URL for `release`, as Packagist publishes GitHub's.
fn zipball_url(urls: &Urls, release: &Release) -> String {
    format!(
        "{}/repos/{}/zipball/{}",
        urls.code_host, release.repository, release.reference
    )
}

/// Where the code host redirects a zipball request, below its root.
fn codeload_path(release: &Release) -> String {
    format!("codeload/{}/zip/{}", release.repository, release.reference)
}

/// `unix` as an IMF-fixdate (RFC 9110 §5.6.7), the form of `Last-Modified`.
pub fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

/// State shared by both listeners and the test.
struct State {
    packages: &'static Packages,
    urls: Urls,
    catalog: Mutex<Catalog>,
    faults: Faults,
    /// Statuses that replace the answer for a path (without its leading `/`).
    statuses: Mutex<HashMap<String, StatusCode>>,
    log: RequestLog<Logged>,
}

impl State {
    /// Runs `change` on the catalog, then re-renders the documents.
    fn change(&self, change: impl FnOnce(&mut Catalog) -> Result<()>) -> Result<()> {
        let mut catalog = lock(&self.catalog);
        change(&mut catalog)?;
        catalog.refresh(self.packages, &self.urls)
    }
}

/// The running fixture. Dropping it stops both listeners and prints the request log.
pub struct PackagistUpstream {
    state: Arc<State>,
    server: FixtureServer,
}

impl PackagistUpstream {
    /// Starts the repository and the code host on `127.0.0.1:0`, every release but the held
    /// ones published.
    pub fn start() -> Result<Self> {
        let packages = packages()?;
        let bound = FixtureServer::bind("packagist-upstream", 2)?;
        let urls = Urls {
            repo: format!(
                "http://{}{}",
                bound.addrs()[0],
                REPO_PREFIX.trim_end_matches('/')
            ),
            code_host: format!("http://{}", bound.addrs()[1]),
        };
        let state = Arc::new(State {
            packages,
            catalog: Mutex::new(Catalog::new(packages, &urls)?),
            urls,
            faults: Faults::default(),
            statuses: Mutex::default(),
            log: RequestLog::default(),
        });
        let server = bound.serve(vec![
            handler(&state, Listener::Repo),
            handler(&state, Listener::CodeHost),
        ]);
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:PORT/repo`: the repository URL to give Composer (or pmcache).
    pub fn repo_url(&self) -> String {
        self.state.urls.repo.clone()
    }

    /// The repository's URL for `path` below the prefix (`p2/proxfix/base.json`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.state.urls.repo)
    }

    /// `http://127.0.0.1:PORT` of the code host.
    pub fn code_host_url(&self) -> String {
        self.state.urls.code_host.clone()
    }

    pub fn repo_addr(&self) -> SocketAddr {
        self.server.addr(0)
    }

    pub fn code_host_addr(&self) -> SocketAddr {
        self.server.addr(1)
    }

    /// `PMCACHE_UPSTREAM_TRUSTED_HOSTS` for this fixture: its code host is on loopback but not
    /// the configured upstream, so pmcache's address policy must be told about it.
    pub fn trusted_hosts(&self) -> String {
        super::pmcache::trusted_hosts(&[self.code_host_addr()])
    }

    /// The fixture packages (held releases included).
    pub fn packages(&self) -> &'static Packages {
        self.state.packages
    }

    /// Publishes the held `name` `version`: its p2 file gains the version (and a newer
    /// `Last-Modified`), and the code host serves its archive from now on.
    pub fn publish(&self, name: &str, version: &str) -> Result<()> {
        let release = self.state.packages.release(name, version)?;
        self.state.change(|catalog| {
            if !catalog.published.insert(key(name, version)) {
                bail!("{} is already published", release.label());
            }
            Ok(())
        })
    }

    /// Whether `name` `version` is published.
    pub fn is_published(&self, name: &str, version: &str) -> bool {
        lock(&self.state.catalog)
            .published
            .contains(&key(name, version))
    }

    /// Whether the code host serves the regenerated archive (other bytes, same reference) for
    /// `name` `version` rather than the original; the metadata does not change.
    pub fn set_dist_bytes_changed(&self, name: &str, version: &str, changed: bool) -> Result<()> {
        let release = self.state.packages.release(name, version)?;
        if release.regenerated.is_none() {
            bail!("{} has no regenerated archive", release.label());
        }
        let mut catalog = lock(&self.state.catalog);
        if changed {
            catalog.regenerated.insert(key(name, version));
        } else {
            catalog.regenerated.remove(&key(name, version));
        }
        Ok(())
    }

    /// Publishes `url` as the `dist.url` of `name` `version` instead of the code host's zipball
    /// URL (the p2 file changes, with a newer `Last-Modified`).
    pub fn set_dist_url(&self, name: &str, version: &str, url: &str) -> Result<()> {
        self.state.packages.release(name, version)?;
        self.state.change(|catalog| {
            catalog.dist_urls.insert(key(name, version), url.to_owned());
            Ok(())
        })
    }

    /// Publishes `time` (as Packagist writes it, `2024-06-01T01:00:00+00:00`) as the release
    /// time of `name` `version`, or, with None, leaves its `time` out (the p2 file changes,
    /// with a newer `Last-Modified`).
    pub fn retime(&self, name: &str, version: &str, time: Option<&str>) -> Result<()> {
        self.state.packages.release(name, version)?;
        self.state.change(|catalog| {
            catalog
                .times
                .insert(key(name, version), time.map(str::to_owned));
            Ok(())
        })
    }

    /// Publishes the code host's zipball URL for `name` `version` again.
    pub fn clear_dist_url(&self, name: &str, version: &str) -> Result<()> {
        self.state.change(|catalog| {
            catalog.dist_urls.remove(&key(name, version));
            Ok(())
        })
    }

    /// The `dist.url` the p2 file publishes now for `name` `version`.
    pub fn dist_url(&self, name: &str, version: &str) -> Result<String> {
        let release = self.state.packages.release(name, version)?;
        let catalog = lock(&self.state.catalog);
        Ok(catalog
            .dist_urls
            .get(&key(name, version))
            .cloned()
            .unwrap_or_else(|| zipball_url(&self.state.urls, release)))
    }

    /// The code host's zipball URL for `name` `version` (answered with a 302).
    pub fn zipball_url(&self, name: &str, version: &str) -> Result<String> {
        let release = self.state.packages.release(name, version)?;
        Ok(zipball_url(&self.state.urls, release))
    }

    /// `codeload/OWNER/REPO/zip/REF`: where the zipball of `name` `version` redirects to, below
    /// the code host's root; also its key for [`Self::set_fault`].
    pub fn codeload_path(&self, name: &str, version: &str) -> Result<String> {
        Ok(codeload_path(self.state.packages.release(name, version)?))
    }

    /// The archive the code host serves now for `name` `version` (without faults), if it is
    /// published.
    pub fn dist_bytes(&self, name: &str, version: &str) -> Result<Option<Bytes>> {
        let release = self.state.packages.release(name, version)?;
        let catalog = lock(&self.state.catalog);
        Ok(catalog
            .is_published(release)
            .then(|| served_archive(&catalog, release).clone()))
    }

    /// The metadata file at `path` below the prefix (`packages.json`, `p2/NAME.json`,
    /// `p2/NAME~dev.json`) exactly as served now.
    pub fn document(&self, path: &str) -> Option<Document> {
        lock(&self.state.catalog).documents.get(path).cloned()
    }

    /// `packages.json` as served now.
    pub fn packages_json(&self) -> Result<Document> {
        self.document("packages.json")
            .context("packages.json is always served")
    }

    /// `p2/NAME.json` as served now, if `name` has a published release.
    pub fn p2(&self, name: &str) -> Option<Document> {
        self.document(&format!("p2/{name}.json"))
    }

    /// `p2/NAME~dev.json` as served now, if `name` has a published release.
    pub fn p2_dev(&self, name: &str) -> Option<Document> {
        self.document(&format!("p2/{name}~dev.json"))
    }

    /// The advisories API's answer for `names` (what a POST or GET for them returns).
    pub fn advisories_body(&self, names: &[&str]) -> Result<Bytes> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        advisories_body(&self.state, &names, false)
    }

    /// Injects `fault` into every later response for `path`, without its leading `/`
    /// (`repo/p2/proxfix/base.json`, or [`Self::codeload_path`] for an archive).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        self.state.faults.set(path, fault);
    }

    /// Serves `path` normally again.
    pub fn clear_fault(&self, path: &str) {
        self.state.faults.clear(path);
    }

    /// Answers every later request for `path` (as for [`Self::set_fault`]) with `status` and an
    /// empty body.
    pub fn set_status(&self, path: &str, status: StatusCode) {
        lock(&self.state.statuses).insert(path.to_owned(), status);
    }

    /// Answers `path` normally again.
    pub fn clear_status(&self, path: &str) {
        lock(&self.state.statuses).remove(path);
    }

    /// The exact bytes served for `bytes` under [`Fault::Corrupt`].
    pub fn corrupted(bytes: &[u8]) -> Bytes {
        corrupt(bytes)
    }

    /// A mark for the `*_since` counters: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        self.state.log.mark()
    }

    /// Every request after `mark`, both listeners, in order.
    pub fn requests_since(&self, mark: usize) -> Vec<Logged> {
        self.state.log.since(mark)
    }

    /// Requests of `kind` after `mark`.
    pub fn count_since(&self, mark: usize, kind: &Kind) -> usize {
        self.state
            .log
            .count_since(mark, |logged| &logged.kind == kind)
    }

    /// Requests of `kind`, ever.
    pub fn count(&self, kind: &Kind) -> usize {
        self.count_since(0, kind)
    }

    /// Every request so far, one per line, for messages.
    pub fn request_log(&self) -> String {
        self.state.log.render()
    }

    /// Closes both listeners and every open connection: new connections are refused.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Listens again on the same ports after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        self.server.restart()
    }
}

impl Drop for PackagistUpstream {
    fn drop(&mut self) {
        self.stop();
        self.state
            .log
            .print("fixture Composer repository and code host");
    }
}

/// The archive the code host serves for `release`: the regenerated one when a test says so.
fn served_archive<'a>(catalog: &Catalog, release: &'a Release) -> &'a Bytes {
    match &release.regenerated {
        Some(regenerated)
            if catalog
                .regenerated
                .contains(&key(&release.name, &release.version)) =>
        {
            &regenerated.bytes
        }
        _ => &release.archive.bytes,
    }
}

fn handler(state: &Arc<State>, listener: Listener) -> Handler {
    let state = Arc::clone(state);
    super::fixture_server::handler(move |request| {
        let state = Arc::clone(&state);
        async move { respond(&state, listener, request).await }
    })
}

/// The parts of a request an answer depends on.
struct Asked {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

async fn respond(state: &State, listener: Listener, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    // A body that fails half way is logged as what arrived: the fixture answers anyway.
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |target| target.to_string());
    let asked = Asked {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    let kind = match listener {
        Listener::Repo => classify_repo(&asked.path),
        Listener::CodeHost => classify_code_host(&asked.path),
    };
    let path_key = asked.path.trim_start_matches('/').to_owned();
    let status = lock(&state.statuses).get(&path_key).copied();
    let mut response = match status {
        Some(status) => status_only(status),
        None => answer(state, &kind, &asked, state.faults.get(&path_key)),
    };
    if asked.method == Method::HEAD {
        *response.body_mut() = empty_body();
    }
    let if_modified_since = asked
        .headers
        .get(IF_MODIFIED_SINCE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    state.log.push(Logged {
        listener,
        method: asked.method,
        target,
        kind,
        if_modified_since,
        status: response.status(),
        headers: asked.headers,
        body: asked.body,
    });
    response
}

/// What `path` asks of the repository, by packagist.org's routes.
fn classify_repo(path: &str) -> Kind {
    let Some(rest) = path.strip_prefix(REPO_PREFIX) else {
        return Kind::Other;
    };
    match rest {
        "packages.json" => Kind::PackagesJson,
        "api/security-advisories/" => Kind::Advisories,
        "search.json" => Kind::Search,
        "downloads/" => Kind::Notify,
        "packages/list.json" => Kind::List,
        "metadata/changes.json" => Kind::MetadataChanges,
        _ => {
            let package_file = |prefix: &str, suffix: &str| {
                rest.strip_prefix(prefix)
                    .and_then(|file| file.strip_suffix(suffix))
                    .filter(|name| is_package_name(name))
                    .map(str::to_owned)
            };
            if let Some(name) = package_file("p2/", "~dev.json") {
                Kind::P2Dev(name)
            } else if let Some(name) = package_file("p2/", ".json") {
                Kind::P2(name)
            } else if let Some(name) = package_file("providers/", ".json") {
                Kind::Providers(name)
            } else {
                Kind::Other
            }
        }
    }
}

/// `vendor/name`: two non-empty parts.
fn is_package_name(name: &str) -> bool {
    name.split_once('/').is_some_and(|(vendor, project)| {
        !vendor.is_empty() && !project.is_empty() && !project.contains('/')
    })
}

/// The code host's two routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeHostRoute {
    /// `/repos/OWNER/REPO/zipball/REF` (GitHub's API).
    Zipball,
    /// `/codeload/OWNER/REPO/zip/REF` (where the API redirects).
    Codeload,
}

/// The route, `OWNER/REPO` and reference of a code host path.
fn code_host_route(path: &str) -> Option<(CodeHostRoute, String, String)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, owner, repo, reference) = match segments.as_slice() {
        ["repos", owner, repo, "zipball", reference] => {
            (CodeHostRoute::Zipball, owner, repo, reference)
        }
        ["codeload", owner, repo, "zip", reference] => {
            (CodeHostRoute::Codeload, owner, repo, reference)
        }
        _ => return None,
    };
    if [owner, repo, reference].iter().any(|part| part.is_empty()) {
        return None;
    }
    Some((route, format!("{owner}/{repo}"), (*reference).to_owned()))
}

fn classify_code_host(path: &str) -> Kind {
    match code_host_route(path) {
        Some((CodeHostRoute::Zipball, _, reference)) => Kind::Zipball(reference),
        Some((CodeHostRoute::Codeload, _, reference)) => Kind::Codeload(reference),
        None => Kind::Other,
    }
}

/// The answer to `asked`, of `kind`, with `fault` applied to a streamed body.
fn answer(state: &State, kind: &Kind, asked: &Asked, fault: Option<Fault>) -> Response<Body> {
    let reading = asked.method == Method::GET || asked.method == Method::HEAD;
    match kind {
        Kind::PackagesJson | Kind::P2(_) | Kind::P2Dev(_) if reading => {
            let path = asked.path.strip_prefix(REPO_PREFIX).unwrap_or_default();
            document(state, path, &asked.headers, fault)
        }
        Kind::Advisories if reading || asked.method == Method::POST => advisories(state, asked),
        Kind::Search if reading => search(state, &asked.query),
        Kind::List if reading => json_response(StatusCode::OK, &list(state)),
        Kind::Providers(_) if reading => {
            // Composer asks this only to suggest packages for a name it cannot resolve, which
            // no test needs: an empty list, whatever the fixture provides.
            json_response(StatusCode::OK, &json!({ "providers": [] }))
        }
        Kind::MetadataChanges if reading => changes(state, &asked.query),
        Kind::Notify if asked.method == Method::POST => {
            json_response(StatusCode::CREATED, &json!({ "status": "success" }))
        }
        Kind::Zipball(_) | Kind::Codeload(_) if reading => code_host(state, &asked.path, fault),
        Kind::Other => status_only(StatusCode::NOT_FOUND),
        _ => status_only(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// A metadata file with its `Last-Modified`; 304 for an `If-Modified-Since` naming that exact
/// date; 404, fast and empty, for a package the repository does not have.
fn document(
    state: &State,
    path: &str,
    headers: &HeaderMap,
    fault: Option<Fault>,
) -> Response<Body> {
    let Some(document) = lock(&state.catalog).documents.get(path).cloned() else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let builder = Response::builder()
        .header(CONTENT_TYPE, JSON_TYPE)
        .header(LAST_MODIFIED, &document.last_modified);
    let unchanged = headers
        .get(IF_MODIFIED_SINCE)
        .is_some_and(|date| date.as_bytes() == document.last_modified.as_bytes());
    if unchanged {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(empty_body())
            .expect("fixture headers are valid");
    }
    builder
        .header(CONTENT_LENGTH, document.body.len())
        .body(streamed_body(&document.body, fault, |_| {}))
        .expect("fixture headers are valid")
}

/// The advisories API (brief §7): names from a form POST body or a `GET` query
/// (`packages[]=`, `packages[0]=`), or `updatedSince` for every advisory.
fn advisories(state: &State, asked: &Asked) -> Response<Body> {
    let form = if asked.method == Method::POST {
        asked.body.as_ref()
    } else {
        asked.query.as_bytes()
    };
    let mut names = Vec::new();
    let mut updated_since = false;
    for (field, value) in url::form_urlencoded::parse(form) {
        let is_list = field == "packages"
            || field
                .strip_prefix("packages[")
                .is_some_and(|index| index.ends_with(']'));
        if is_list && !value.is_empty() {
            names.push(value.into_owned());
        } else if field == "updatedSince" && asked.method != Method::POST {
            updated_since = true;
        }
    }
    if names.is_empty() && !updated_since {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "status": "error", "message": MISSING_PACKAGES }),
        );
    }
    match advisories_body(state, &names, updated_since) {
        Ok(body) => bytes_response(StatusCode::OK, body),
        Err(_) => status_only(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// `{"advisories": {NAME: [full records]}}` for `names` (every advisory when `everything`), and
/// `[]` for known names without one; PHP writes an empty map as `[]`.
fn advisories_body(state: &State, names: &[String], everything: bool) -> Result<Bytes> {
    let catalog = lock(&state.catalog);
    let known = |name: &str| {
        state
            .packages
            .releases_of(name)
            .any(|release| catalog.is_published(release))
    };
    let mut found = Map::new();
    for advisory in &state.packages.advisories {
        let name = advisory["packageName"].as_str().unwrap_or_default();
        if everything || names.iter().any(|wanted| wanted == name) {
            let list = found.entry(name).or_insert_with(|| json!([]));
            if let Value::Array(list) = list {
                list.push(advisory.clone());
            }
        }
    }
    for name in names {
        if !found.contains_key(name) && known(name) {
            found.insert(name.clone(), json!([]));
        }
    }
    let advisories = if found.is_empty() {
        json!([])
    } else {
        Value::Object(found)
    };
    to_bytes(&json!({ "advisories": advisories }))
}

/// `search.json?q=&type=`: published packages whose name or description contains `q`.
fn search(state: &State, query: &str) -> Response<Body> {
    let mut text = String::new();
    let mut package_type = String::new();
    for (field, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match field.as_ref() {
            "q" => text = value.to_lowercase(),
            "type" => package_type = value.into_owned(),
            _ => {}
        }
    }
    let catalog = lock(&state.catalog);
    let mut results = Vec::new();
    for name in state.packages.names() {
        let Some(latest) = state
            .packages
            .releases_of(name)
            .filter(|release| catalog.is_published(release))
            .last()
        else {
            continue;
        };
        let matches = name.contains(&text) || latest.description.to_lowercase().contains(&text);
        if matches && (package_type.is_empty() || package_type == latest.package_type) {
            results.push(json!({
                "name": name,
                "description": latest.description,
                "url": format!("{}/packages/{name}", state.urls.repo),
                "repository": format!("{}/{}", state.urls.code_host, latest.repository),
                "downloads": 0,
                "favers": 0,
            }));
        }
    }
    let total = results.len();
    json_response(
        StatusCode::OK,
        &json!({ "results": results, "total": total }),
    )
}

/// `packages/list.json`: every name with a published release.
fn list(state: &State) -> Value {
    let catalog = lock(&state.catalog);
    let names: Vec<&str> = state
        .packages
        .names()
        .into_iter()
        .filter(|name| {
            state
                .packages
                .releases_of(name)
                .any(|release| catalog.is_published(release))
        })
        .collect();
    json!({ "packageNames": names })
}

/// `metadata/changes.json?since=` (brief §7): the p2 files changed after `since` (unix time
/// × 10000) on the fixture clock; 400 with a starting `timestamp` without a valid `since`.
fn changes(state: &State, query: &str) -> Response<Body> {
    let since = url::form_urlencoded::parse(query.as_bytes())
        .find(|(field, _)| field == "since")
        .and_then(|(_, value)| value.parse::<u64>().ok());
    let catalog = lock(&state.catalog);
    let timestamp = catalog.clock * 10_000;
    let Some(since) = since else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "Invalid or missing \"since\" query parameter, make sure you store the \
                          timestamp at the initial point you started mirroring",
                "timestamp": timestamp,
            }),
        );
    };
    let actions: Vec<Value> = catalog
        .changes
        .iter()
        .filter(|change| change.time * 10_000 > since)
        .map(|change| json!({ "type": "update", "package": change.package, "time": change.time }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "actions": actions, "timestamp": timestamp }),
    )
}

/// The code host: a zipball request is redirected to codeload, as GitHub's API does; codeload
/// serves the archive. Unknown or unpublished references are 404.
fn code_host(state: &State, path: &str, fault: Option<Fault>) -> Response<Body> {
    let Some((route, repository, reference)) = code_host_route(path) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let catalog = lock(&state.catalog);
    let release = state
        .packages
        .by_reference(&repository, &reference)
        .filter(|release| catalog.is_published(release));
    let Some(release) = release else {
        return json_response(StatusCode::NOT_FOUND, &json!({ "message": "Not Found" }));
    };
    match route {
        CodeHostRoute::Zipball => Response::builder()
            .status(StatusCode::FOUND)
            .header(
                LOCATION,
                format!("{}/{}", state.urls.code_host, codeload_path(release)),
            )
            .header(CONTENT_LENGTH, 0)
            .body(empty_body())
            .expect("fixture headers are valid"),
        CodeHostRoute::Codeload => {
            let bytes = served_archive(&catalog, release);
            Response::builder()
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(
                    CONTENT_DISPOSITION,
                    format!("attachment; filename={}.zip", release.top_folder),
                )
                .header(CONTENT_LENGTH, bytes.len())
                .body(streamed_body(bytes, fault, |_| {}))
                .expect("fixture headers are valid")
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    match to_bytes(value) {
        Ok(body) => bytes_response(status, body),
        Err(_) => status_only(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, JSON_TYPE)
        .header(CONTENT_LENGTH, body.len())
        .body(full_body(body))
        .expect("fixture headers are valid")
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, ensure};

    use super::*;
    use crate::support::http;
    use crate::support::packagist_packages::{
        ADVISORY_ID, APP, BASE, HELD_BASE, LOGGER, REGENERATED, TOOL, VULN,
    };

    /// The fixture end to end over HTTP, without a client: the root file, the p2 files and their
    /// dates, the code host, publishing, the switches, the APIs, faults, the log and
    /// stop/restart.
    #[test]
    fn serves_packagist_and_obeys_its_controls() -> Result<()> {
        let upstream = PackagistUpstream::start()?;
        ensure_root(&upstream)?;
        ensure_p2_files(&upstream)?;
        ensure_revalidation(&upstream)?;
        ensure_code_host(&upstream)?;
        ensure_publishing(&upstream)?;
        ensure_dist_url_switch(&upstream)?;
        ensure_apis(&upstream)?;
        ensure_faults(&upstream)?;
        let marked = upstream.mark();
        http::send(
            "POST",
            &upstream.url("downloads/"),
            &[],
            b"{\"downloads\":[]}",
        )?;
        let logged = upstream.requests_since(marked);
        ensure!(
            logged.len() == 1
                && logged[0].listener == Listener::Repo
                && logged[0].kind == Kind::Notify
                && logged[0].body_text() == "{\"downloads\":[]}",
            "the log should hold the notify POST with its body: {logged:?}"
        );
        ensure!(upstream.count_since(marked, &Kind::Notify) == 1);
        ensure!(upstream.request_log().contains("GET /repo/packages.json"));
        upstream.stop();
        let refused = !matches!(
            http::attempt(&upstream.url("packages.json")),
            Ok(http::Attempt::Response(_))
        );
        ensure!(refused, "a stopped repository should not answer");
        upstream.restart()?;
        ensure!(http::get(&upstream.url("packages.json"))?.status == 200);
        let codeload = format!(
            "{}/{}",
            upstream.code_host_url(),
            upstream.codeload_path(VULN, "1.0.0")?
        );
        ensure!(http::get(&codeload)?.status == 200);
        Ok(())
    }

    /// packages.json in packagist.org's shape, every URL on the fixture repository.
    fn ensure_root(upstream: &PackagistUpstream) -> Result<()> {
        let repo = upstream.repo_url();
        ensure!(repo == format!("http://{}/repo", upstream.repo_addr()));
        let served = http::get(&upstream.url("packages.json"))?;
        let document = upstream.packages_json()?;
        ensure!(served.status == 200 && served.body == document.body);
        ensure!(served.header("content-type") == Some(JSON_TYPE));
        ensure!(served.header("last-modified") == Some(http_date(START_TIME).as_str()));
        let root: Value = serde_json::from_slice(&served.body)?;
        let keys: Vec<&str> = root
            .as_object()
            .context("packages.json is an object")?
            .keys()
            .map(String::as_str)
            .collect();
        ensure!(
            keys == [
                "packages",
                "notify-batch",
                "providers-url",
                "metadata-url",
                "metadata-changes-url",
                "search",
                "list",
                "security-advisories",
                "providers-api",
                "warning",
                "warning-versions",
                "providers",
                "filter"
            ],
            "packages.json keys: {keys:?}"
        );
        ensure!(root["metadata-url"] == format!("{repo}/p2/%package%.json"));
        ensure!(root["notify-batch"] == format!("{repo}/downloads/"));
        ensure!(root["security-advisories"]["metadata"] == true);
        ensure!(
            root["security-advisories"]["api-url"] == format!("{repo}/api/security-advisories/")
        );
        ensure!(root["providers-url"] == "/repo/p/%package%$%hash%.json");
        ensure!(root["warning"] == COMPOSER_1_WARNING && root["warning-versions"] == "<1.999");
        ensure!(root["filter"]["summary-url"] == format!("{repo}/lists/all/summary.json"));
        for key in ["search", "list", "providers-api", "metadata-changes-url"] {
            ensure!(
                root[key].as_str().is_some_and(|url| url.starts_with(&repo)),
                "{key} should be on the fixture repository: {}",
                root[key]
            );
        }
        Ok(())
    }

    /// Minified p2 files, newest first, with `__unset`, dists on the code host and the partial
    /// advisories in the tags file only.
    fn ensure_p2_files(upstream: &PackagistUpstream) -> Result<()> {
        let packages = upstream.packages();
        let base: Value =
            serde_json::from_slice(&http::get(&upstream.url("p2/proxfix/base.json"))?.body)?;
        ensure!(base["minified"] == "composer/2.0");
        ensure!(base["security-advisories"] == json!([]));
        let listed = base["packages"]
            .as_object()
            .context("packages is an object")?;
        ensure!(listed.len() == 1, "only the requested package: {listed:?}");
        let minified = listed[BASE].as_array().context("base versions")?;
        ensure!(minified.len() == 2, "the held 1.2.0 is not listed yet");
        let diff = minified[1].as_object().context("a diff is an object")?;
        ensure!(diff["version"] == "1.0.0" && diff["suggest"] == UNSET);
        for same in ["name", "description", "type", "license", "autoload"] {
            ensure!(!diff.contains_key(same), "1.0.0 repeats {same}: {diff:?}");
        }
        let expanded = expand(minified)?;
        for (entry, version) in expanded.iter().zip(["1.1.0", "1.0.0"]) {
            let release = packages.release(BASE, version)?;
            ensure!(entry["version"] == version);
            ensure!(entry["dist"]["url"] == upstream.zipball_url(BASE, version)?);
            ensure!(entry["dist"]["reference"] == release.reference.as_str());
            ensure!(entry["dist"]["shasum"] == release.archive.sha1.as_str());
            ensure!(entry["source"]["type"] == "git");
        }
        ensure!(expanded[1].get("suggest").is_none() && expanded[0].get("suggest").is_some());
        ensure!(
            minify(&expanded) == *minified,
            "minify should invert expand"
        );

        let app: Value = serde_json::from_slice(&upstream.p2(APP).context("app p2")?.body)?;
        ensure!(app["packages"][APP][0]["dist"]["shasum"] == "");
        let vuln: Value = serde_json::from_slice(&upstream.p2(VULN).context("vuln p2")?.body)?;
        ensure!(
            vuln["security-advisories"]
                == json!([{ "advisoryId": ADVISORY_ID, "affectedVersions": ">=1.0.0,<1.0.1" }])
        );

        let tool_dev = upstream.p2_dev(TOOL).context("tool~dev")?;
        let served = http::get(&upstream.url("p2/proxfix/tool~dev.json"))?;
        ensure!(served.body == tool_dev.body);
        let tool_dev: Value = serde_json::from_slice(&tool_dev.body)?;
        ensure!(tool_dev.get("security-advisories").is_none());
        let branches = tool_dev["packages"][TOOL]
            .as_array()
            .context("tool branches")?;
        ensure!(branches[0]["version"] == "dev-main" && branches[0]["default-branch"] == true);
        ensure!(
            branches[1]["version"] == "dev-feature/x"
                && branches[1]["default-branch"] == UNSET
                && branches[1]["extra"] == UNSET
        );
        let base_dev: Value =
            serde_json::from_slice(&upstream.p2_dev(BASE).context("base~dev")?.body)?;
        ensure!(base_dev["packages"] == json!({ BASE: [] }));
        for missing in [
            "p2/proxfix/nothing.json",
            "p2/proxfix/nothing~dev.json",
            "p2/bad.json",
        ] {
            let answer = http::get(&upstream.url(missing))?;
            ensure!(
                answer.status == 404 && answer.body.is_empty(),
                "{missing}: {}",
                answer.describe()
            );
        }
        Ok(())
    }

    /// `If-Modified-Since` with the exact served date gets an empty 304; any other date the file.
    fn ensure_revalidation(upstream: &PackagistUpstream) -> Result<()> {
        for path in [
            "packages.json",
            "p2/proxfix/app.json",
            "p2/proxfix/tool~dev.json",
        ] {
            let served = upstream.document(path).context("served document")?;
            let url = upstream.url(path);
            let unchanged = http::get_with(&url, &[("if-modified-since", &served.last_modified)])?;
            ensure!(unchanged.status == 304 && unchanged.body.is_empty());
            ensure!(unchanged.header("last-modified") == Some(served.last_modified.as_str()));
            let older = http_date(START_TIME - TICK);
            let changed = http::get_with(&url, &[("if-modified-since", &older)])?;
            ensure!(changed.status == 200 && changed.body == served.body);
        }
        let logged = upstream.requests_since(0);
        ensure!(logged.iter().any(|logged| {
            logged.status == 304
                && logged.if_modified_since.as_deref() == Some(http_date(START_TIME).as_str())
        }));
        Ok(())
    }

    /// Zipball → 302 → codeload; the regenerated archive on demand; 404 for held or unknown.
    fn ensure_code_host(upstream: &PackagistUpstream) -> Result<()> {
        let (name, version) = REGENERATED;
        let release = upstream.packages().release(name, version)?;
        let zipball = http::get(&upstream.zipball_url(name, version)?)?;
        let codeload = format!(
            "{}/{}",
            upstream.code_host_url(),
            upstream.codeload_path(name, version)?
        );
        ensure!(zipball.status == 302 && zipball.header("location") == Some(codeload.as_str()));
        ensure!(codeload.starts_with(&format!("http://{}/codeload/", upstream.code_host_addr())));
        let original = http::get(&codeload)?;
        ensure!(original.status == 200 && original.body == release.archive.bytes);
        ensure!(original.header("content-type") == Some("application/octet-stream"));
        upstream.set_dist_bytes_changed(name, version, true)?;
        let regenerated = release
            .regenerated
            .as_ref()
            .context("a regenerated archive")?;
        ensure!(http::get(&codeload)?.body == regenerated.bytes);
        ensure!(upstream.dist_bytes(name, version)? == Some(regenerated.bytes.clone()));
        upstream.set_dist_bytes_changed(name, version, false)?;
        ensure!(http::get(&codeload)?.body == release.archive.bytes);
        ensure!(
            upstream
                .set_dist_bytes_changed(BASE, "1.0.0", true)
                .is_err()
        );
        let held = upstream.zipball_url(BASE, HELD_BASE)?;
        ensure!(http::get(&held)?.status == 404);
        ensure!(upstream.dist_bytes(BASE, HELD_BASE)?.is_none());
        let unknown = format!(
            "{}/repos/proxfix/app/zipball/{}",
            upstream.code_host_url(),
            "0".repeat(40)
        );
        ensure!(http::get(&unknown)?.status == 404);
        ensure!(upstream.count(&Kind::Zipball(release.reference.clone())) == 1);
        ensure!(upstream.count(&Kind::Codeload(release.reference.clone())) == 3);
        Ok(())
    }

    /// Publishing changes base's tags file and its date alone, feeds the change feed and serves
    /// the archive.
    fn ensure_publishing(upstream: &PackagistUpstream) -> Result<()> {
        let root = upstream.packages_json()?;
        let base = upstream.p2(BASE).context("base p2")?;
        let base_dev = upstream.p2_dev(BASE).context("base~dev p2")?;
        ensure!(!upstream.is_published(BASE, HELD_BASE));
        let start = http::get(&upstream.url("metadata/changes.json"))?;
        ensure!(start.status == 400);
        let since: Value = serde_json::from_slice(&start.body)?;
        let since = since["timestamp"]
            .as_u64()
            .context("a starting timestamp")?;
        upstream.publish(BASE, HELD_BASE)?;
        ensure!(
            upstream.publish(BASE, HELD_BASE).is_err(),
            "a second publish should fail"
        );
        ensure!(upstream.is_published(BASE, HELD_BASE));
        let published = upstream.p2(BASE).context("base p2")?;
        ensure!(published.last_modified == http_date(START_TIME + TICK));
        let versions: Value = serde_json::from_slice(&published.body)?;
        let entries = expand(
            versions["packages"][BASE]
                .as_array()
                .context("base versions")?,
        )?;
        let listed: Vec<&Value> = entries.iter().map(|entry| &entry["version"]).collect();
        ensure!(
            listed == ["1.2.0", "1.1.0", "1.0.0"],
            "newest first: {listed:?}"
        );
        ensure!(upstream.packages_json()? == root && upstream.p2_dev(BASE) == Some(base_dev));
        ensure!(base.body != published.body);
        let changes = http::get(&upstream.url(&format!("metadata/changes.json?since={since}")))?;
        let changes: Value = serde_json::from_slice(&changes.body)?;
        ensure!(
            changes["actions"]
                == json!([{ "type": "update", "package": BASE, "time": START_TIME + TICK }])
                && changes["timestamp"] == (START_TIME + TICK) * 10_000,
            "unexpected change feed: {changes}"
        );
        let held = upstream.packages().release(BASE, HELD_BASE)?;
        ensure!(http::get(&upstream.zipball_url(BASE, HELD_BASE)?)?.status == 302);
        ensure!(upstream.dist_bytes(BASE, HELD_BASE)? == Some(held.archive.bytes.clone()));
        Ok(())
    }

    /// A test's own dist URL replaces the code host's in the p2 file, with a new date.
    fn ensure_dist_url_switch(upstream: &PackagistUpstream) -> Result<()> {
        let elsewhere = "http://127.0.0.1:9/elsewhere/proxfix-vuln.zip";
        let before = upstream.p2(VULN).context("vuln p2")?;
        upstream.set_dist_url(VULN, "1.0.0", elsewhere)?;
        ensure!(upstream.dist_url(VULN, "1.0.0")? == elsewhere);
        let switched = upstream.p2(VULN).context("vuln p2")?;
        let entry: Value = serde_json::from_slice(&switched.body)?;
        ensure!(entry["packages"][VULN][0]["dist"]["url"] == elsewhere);
        ensure!(switched.last_modified != before.last_modified);
        upstream.clear_dist_url(VULN, "1.0.0")?;
        ensure!(upstream.dist_url(VULN, "1.0.0")? == upstream.zipball_url(VULN, "1.0.0")?);
        let restored = upstream.p2(VULN).context("vuln p2")?;
        ensure!(restored.body == before.body && restored.last_modified != switched.last_modified);
        Ok(())
    }

    /// The advisories API (POST and GET), search, list and providers.
    fn ensure_apis(upstream: &PackagistUpstream) -> Result<()> {
        let api = upstream.url("api/security-advisories/");
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let posted = http::send(
            "POST",
            &api,
            &form,
            concat!(
                "packages%5B0%5D=proxfix%2Fvuln&packages%5B1%5D=proxfix%2Fbase",
                "&packages%5B2%5D=other%2Fname"
            )
            .as_bytes(),
        )?;
        ensure!(posted.status == 200);
        ensure!(posted.body == upstream.advisories_body(&[VULN, BASE, "other/name"])?);
        let answer: Value = serde_json::from_slice(&posted.body)?;
        let advisories = answer["advisories"]
            .as_object()
            .context("advisories by name")?;
        ensure!(
            advisories.keys().eq([VULN, BASE]),
            "unexpected names: {answer}"
        );
        let full = &advisories[VULN][0];
        ensure!(full["advisoryId"] == ADVISORY_ID && full["title"].is_string());
        ensure!(full["sources"].is_array() && full["reportedAt"].is_string());
        ensure!(advisories[BASE] == json!([]));
        let got = http::get(&format!("{api}?packages[]=proxfix/vuln"))?;
        ensure!(got.body == upstream.advisories_body(&[VULN])?);
        let everything = http::get(&format!("{api}?updatedSince=0"))?;
        let everything: Value = serde_json::from_slice(&everything.body)?;
        ensure!(everything["advisories"][VULN][0]["advisoryId"] == ADVISORY_ID);
        ensure!(http::send("POST", &api, &form, b"")?.status == 400);
        ensure!(
            http::get(&format!("{api}?packages[]=other/name"))?.text() == "{\"advisories\":[]}"
        );

        let search: Value =
            serde_json::from_slice(&http::get(&upstream.url("search.json?q=tool&type="))?.body)?;
        ensure!(
            search["total"] == 1 && search["results"][0]["name"] == TOOL,
            "search: {search}"
        );
        let list: Value =
            serde_json::from_slice(&http::get(&upstream.url("packages/list.json"))?.body)?;
        ensure!(list["packageNames"] == json!([APP, BASE, LOGGER, TOOL, VULN]));
        let providers = http::get(&upstream.url("providers/psr/log-implementation.json"))?;
        ensure!(providers.status == 200 && providers.text() == "{\"providers\":[]}");
        ensure!(upstream.count(&Kind::Providers("psr/log-implementation".to_owned())) == 1);
        ensure!(http::get(&upstream.url("downloads/"))?.status == 405);
        Ok(())
    }

    /// Faults corrupt a streamed file; a status replaces any answer.
    fn ensure_faults(upstream: &PackagistUpstream) -> Result<()> {
        let path = upstream.codeload_path(VULN, "1.0.0")?;
        let url = format!("{}/{path}", upstream.code_host_url());
        let bytes = upstream
            .dist_bytes(VULN, "1.0.0")?
            .context("vuln is published")?;
        upstream.set_fault(&path, Fault::Corrupt);
        let corrupted = http::get(&url)?;
        ensure!(corrupted.body == PackagistUpstream::corrupted(&bytes) && corrupted.body != bytes);
        upstream.clear_fault(&path);
        ensure!(http::get(&url)?.body == bytes);
        upstream.set_status(
            "repo/p2/proxfix/app.json",
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        ensure!(http::get(&upstream.url("p2/proxfix/app.json"))?.status == 500);
        upstream.clear_status("repo/p2/proxfix/app.json");
        ensure!(http::get(&upstream.url("p2/proxfix/app.json"))?.status == 200);
        Ok(())
    }

    #[test]
    fn classifies_like_packagist_routes() -> Result<()> {
        let name = |text: &str| text.to_owned();
        for (path, expected) in [
            ("/repo/packages.json", Kind::PackagesJson),
            ("/repo/p2/proxfix/base.json", Kind::P2(name(BASE))),
            ("/repo/p2/proxfix/base~dev.json", Kind::P2Dev(name(BASE))),
            ("/repo/p2/base.json", Kind::Other),
            ("/repo/p2/a/b/c.json", Kind::Other),
            ("/repo/api/security-advisories/", Kind::Advisories),
            ("/repo/search.json", Kind::Search),
            ("/repo/downloads/", Kind::Notify),
            ("/repo/packages/list.json", Kind::List),
            (
                "/repo/providers/psr/log.json",
                Kind::Providers(name("psr/log")),
            ),
            ("/repo/metadata/changes.json", Kind::MetadataChanges),
            ("/packages.json", Kind::Other),
        ] {
            let kind = classify_repo(path);
            ensure!(
                kind == expected,
                "{path} -> {kind:?}, expected {expected:?}"
            );
        }
        for (path, expected) in [
            ("/repos/proxfix/app/zipball/abc", Kind::Zipball(name("abc"))),
            ("/codeload/proxfix/app/zip/abc", Kind::Codeload(name("abc"))),
            ("/repos/proxfix/app/zipball/", Kind::Other),
            ("/repos/proxfix/app/tarball/abc", Kind::Other),
        ] {
            let kind = classify_code_host(path);
            ensure!(
                kind == expected,
                "{path} -> {kind:?}, expected {expected:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn minifies_like_the_metadata_minifier() -> Result<()> {
        let object = |value: Value| value.as_object().cloned().context("an object");
        let versions = [
            object(
                json!({ "version": "2.0.0", "require": { "php": ">=8" }, "suggest": { "a": "b" } }),
            )?,
            object(json!({ "version": "1.0.0", "require": { "php": ">=8" } }))?,
            object(
                json!({ "version": "0.1.0", "require": { "php": ">=7" }, "suggest": { "a": "b" } }),
            )?,
        ];
        let minified = minify(&versions);
        ensure!(
            minified
                == [
                    Value::Object(versions[0].clone()),
                    json!({ "version": "1.0.0", "suggest": UNSET }),
                    json!({
                        "version": "0.1.0",
                        "require": { "php": ">=7" },
                        "suggest": { "a": "b" },
                    }),
                ],
            "minified: {minified:?}"
        );
        ensure!(expand(&minified)? == versions);
        ensure!(expand(&[json!("not an object")]).is_err());
        Ok(())
    }
}
