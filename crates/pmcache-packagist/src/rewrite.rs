//! Rewriting Composer metadata so that clients come back to pmcache: `packages.json` (every URL
//! in it) and p2 files (every `dist.url`), keeping the minified format valid, and hiding the
//! versions the policy refuses.

use std::collections::BTreeMap;
use std::time::SystemTime;

use pmcache_policy::Verdict;
use pmcache_proxy::Checksum;
use serde_json::{Map, Value};
use url::Url;

use crate::minified;
use crate::name::PackageName;
use crate::path::Route;
use crate::release_time;

/// Judges one version for the policy: given its package, its `version` as the metadata spells
/// it, and when it was published (None: unknown).
pub type Judge<'a> = &'a dyn Fn(&str, &str, Option<SystemTime>) -> Verdict;

/// A [`Judge`] that serves every version: no policy.
pub fn serve_all(_package: &str, _version: &str, _published: Option<SystemTime>) -> Verdict {
    Verdict::Allowed
}

/// Why upstream Composer metadata cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// The body is not JSON, or not an object at the top.
    #[error("not a JSON object")]
    NotJson(#[from] serde_json::Error),
    /// A root file without `metadata-url`: pmcache serves Composer 2 repositories only.
    #[error("no metadata-url: not a Composer 2 repository")]
    NotComposer2,
    /// A p2 file without a `packages` object.
    #[error("no packages object")]
    NoPackages,
    /// A p2 file whose entry for the named package is not an array of versions.
    #[error("the versions of {0} are not a list")]
    VersionsNotAList(String),
}

/// How dists are rewritten.
#[derive(Clone, Copy, Debug)]
pub struct DistRewrite<'a> {
    /// pmcache's dists URL, ending in `/`: a dist becomes `<base><package>/<file>`.
    pub base: &'a str,
    /// Keep each version's `source` (its VCS URL), which Composer clones when a dist fails or
    /// with `--prefer-source`; without it, code only ever comes through pmcache.
    pub keep_source: bool,
}

/// The endpoints of `packages.json` that pmcache serves at fixed routes below its mount: the
/// key path in the document, and the route (with the upstream's own query template kept).
pub const ENDPOINTS: [(&str, &str); 7] = [
    ("metadata-url", "/p2/%package%.json"),
    ("notify-batch", "/downloads/"),
    ("search", "/search.json"),
    ("list", "/packages/list.json"),
    ("providers-api", "/providers/%package%.json"),
    ("security-advisories.api-url", "/api/security-advisories/"),
    ("metadata-changes-url", "/metadata/changes.json"),
];

/// Composer 1 keys: ignored by Composer 2 once `metadata-url` is present, and their hashed
/// files cannot be rewritten, so they are dropped. `mirrors` would send clients around pmcache.
const DROPPED_KEYS: [&str; 5] = [
    "providers-url",
    "provider-includes",
    "providers-lazy-url",
    "providers",
    "mirrors",
];

/// Keys whose values are messages or version constraints, never URLs.
const TEXT_KEYS: [&str; 5] = [
    "warning",
    "info",
    "warning-versions",
    "info-versions",
    "minified",
];

/// A rewritten `packages.json`.
#[derive(Debug)]
pub struct Root {
    /// What clients get: every URL absolute on pmcache. (Composer joins some values starting
    /// with `/` to the repository's host, but 2.5 uses the advisories `api-url` as it is.)
    pub body: Vec<u8>,
    /// The upstream URL (template) behind each endpoint: the names of [`ENDPOINTS`], and
    /// `link/N` for any other URL the document held.
    pub links: BTreeMap<String, String>,
    /// Dists of packages defined inline, hidden versions' included.
    pub dists: Vec<Dist>,
    /// When the first inline version the age rule hid comes of age.
    pub hidden_until: Option<SystemTime>,
}

/// Rewrites `packages.json` fetched from `url` for clients that reach pmcache's repository at
/// `base` (`http://host:7878/packagist`); packages defined inline get their dists rewritten as
/// `dists` says, and lose the versions `judge` refuses.
pub fn rewrite_root(
    body: &[u8],
    url: &Url,
    base: &str,
    dists: DistRewrite<'_>,
    judge: Judge<'_>,
) -> Result<Root, Malformed> {
    let mut root: Map<String, Value> = serde_json::from_slice(body)?;
    if !root.contains_key("metadata-url") {
        return Err(Malformed::NotComposer2);
    }
    for key in DROPPED_KEYS {
        root.shift_remove(key);
    }
    let mut links = BTreeMap::new();
    for (path, route) in ENDPOINTS {
        let Some(value) = lookup(&mut root, path) else {
            continue;
        };
        let Some(upstream) = value.as_str().map(|text| absolute(text, url)) else {
            continue;
        };
        *value = Value::String(local_template(base, route, &upstream));
        links.insert(path.to_owned(), upstream);
    }
    let mut rest = Links {
        links: &mut links,
        count: 0,
        url,
        base,
    };
    for (key, value) in root.iter_mut() {
        if !TEXT_KEYS.contains(&key.as_str()) && key != "packages" {
            rest.rewrite(value);
        }
    }
    let (inline, hidden) = match root.get_mut("packages") {
        Some(packages) => rewrite_inline(packages, url, dists, judge),
        None => (Vec::new(), Hidden::default()),
    };
    hidden.log();
    Ok(Root {
        body: to_json(root),
        links,
        dists: inline,
        hidden_until: hidden.until,
    })
}

/// Packages a root file defines inline (`{"name": {"version": {…}}}`, as static repositories
/// publish them): their dists are rewritten like a p2 file's, and refused versions go.
fn rewrite_inline(
    packages: &mut Value,
    url: &Url,
    dists: DistRewrite<'_>,
    judge: Judge<'_>,
) -> (Vec<Dist>, Hidden) {
    let mut hidden = Hidden::default();
    let Value::Object(packages) = packages else {
        return (Vec::new(), hidden);
    };
    // As in p2 files: a key that is no package name would put its dists outside the dists route.
    packages.retain(|package, _| PackageName::parse(package).is_ok());
    let mut found = Vec::new();
    for (package, versions) in packages.iter_mut() {
        let Value::Object(versions) = versions else {
            continue;
        };
        for version in versions.values_mut() {
            if let Value::Object(version) = version {
                found.extend(rewrite_version(version, package, url, dists));
            }
        }
        versions.retain(|key, version| match version {
            Value::Object(version) => !hidden.refuses(judge, package, version, key),
            _ => true,
        });
    }
    (found, hidden)
}

/// What the policy hid from a document.
#[derive(Debug, Default)]
struct Hidden {
    /// `package@version` of each hidden version, for the log.
    versions: Vec<String>,
    /// When the first version the age rule hid comes of age.
    until: Option<SystemTime>,
}

impl Hidden {
    /// Whether `judge` refuses `version` (an expanded entry) of `package`, noting it if so.
    /// An entry without a `version` is judged by `fallback` (its key in an inline list), or
    /// left alone in a p2 file: Composer cannot load it anyway.
    fn refuses(
        &mut self,
        judge: Judge<'_>,
        package: &str,
        version: &Map<String, Value>,
        fallback: &str,
    ) -> bool {
        let name = version
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or(fallback);
        if name.is_empty() {
            return false;
        }
        let Verdict::Refused(refusal) = judge(package, name, release_time::of(version)) else {
            return false;
        };
        self.until = refusal.first_maturity(self.until);
        self.versions.push(format!("{package}@{name}"));
        true
    }

    fn log(&self) {
        if !self.versions.is_empty() {
            tracing::debug!(versions = ?self.versions, "versions hidden by policy");
        }
    }
}

fn to_json(map: Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(map)).expect("a JSON value read from text serialises")
}

/// Rewrites URL strings that no endpoint claimed to `<base>/link/N`.
struct Links<'a> {
    links: &'a mut BTreeMap<String, String>,
    /// Links numbered so far.
    count: usize,
    url: &'a Url,
    base: &'a str,
}

impl Links<'_> {
    fn rewrite(&mut self, value: &mut Value) {
        match value {
            Value::String(text) if is_url(text) && !text.starts_with(self.base) => {
                let name = format!("link/{}", self.count);
                self.count += 1;
                let upstream = absolute(text, self.url);
                *text = local_template(self.base, &format!("/{name}"), &upstream);
                self.links.insert(name, upstream);
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.rewrite(item)),
            Value::Object(map) => map.values_mut().for_each(|item| self.rewrite(item)),
            _ => {}
        }
    }
}

/// The value at a dotted key path.
fn lookup<'a>(root: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut value = root.get_mut(parts.next()?)?;
    for part in parts {
        value = value.as_object_mut()?.get_mut(part)?;
    }
    Some(value)
}

/// An absolute http(s) URL, or a path Composer resolves against the repository's host.
fn is_url(text: &str) -> bool {
    text.starts_with("http://")
        || text.starts_with("https://")
        || (text.starts_with('/') && !text.starts_with("//"))
}

/// Composer's rule for URLs in repository metadata: a value starting with `/` is joined to the
/// scheme and host of the document's URL, dropping its path; others are used as they are.
fn absolute(text: &str, url: &Url) -> String {
    if text.starts_with('/') && !text.starts_with("//") {
        format!("{}{text}", url.origin().ascii_serialization())
    } else {
        text.to_owned()
    }
}

/// pmcache's route for an endpoint, carrying over the upstream template's query (Composer fills
/// in `%query%` and the like there).
fn local_template(base: &str, route: &str, upstream: &str) -> String {
    match upstream.split_once('?') {
        Some((_, query)) => format!("{base}{route}?{query}"),
        None => format!("{base}{route}"),
    }
}

/// One dist archive a p2 file lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dist {
    /// The package it belongs to, as the p2 file names it.
    pub package: String,
    /// `<reference>.<type>`: the archive's name below `<mount>/dists/<package>/`.
    pub file: String,
    /// Where the upstream publishes it.
    pub upstream: Url,
    /// Its published `shasum` (sha1), when not empty.
    pub checksum: Option<Checksum>,
    /// The version it is the archive of (`version` as the p2 file spells it), if given.
    pub version: Option<String>,
    /// When that version was published, by its `time`.
    pub published: Option<SystemTime>,
}

/// A rewritten p2 file.
#[derive(Debug)]
pub struct P2 {
    /// The JSON to serve, its dist URLs pointing at pmcache.
    pub body: Vec<u8>,
    /// Every dist the file lists, with its upstream URL: the sources clients may fetch, and
    /// those of hidden versions, so that a request for one gets the policy's reason.
    pub dists: Vec<Dist>,
    /// When the first version the age rule hid comes of age.
    pub hidden_until: Option<SystemTime>,
}

/// Rewrites a p2 file fetched from `url`: every http(s) `dist.url` becomes
/// `<base><package>/<reference>.<type>` (percent-encoded: branch references may hold `/`);
/// dist mirrors are dropped, and `source` too unless kept. Versions `judge` refuses are
/// removed. A minified list is expanded, rewritten and minified again, so `__unset` keeps its
/// meaning and the entry after a removed one carries what it inherited.
pub fn rewrite_p2(
    body: &[u8],
    url: &Url,
    rewrite: DistRewrite<'_>,
    judge: Judge<'_>,
) -> Result<P2, Malformed> {
    let mut document: Map<String, Value> = serde_json::from_slice(body)?;
    let minified = document.get("minified").and_then(Value::as_str) == Some("composer/2.0");
    let Some(Value::Object(packages)) = document.get_mut("packages") else {
        return Err(Malformed::NoPackages);
    };
    // Composer reads only the key it asked for, always a package name; another key (`../x`,
    // `?x`) would put its dist URLs outside `dists_base`, so it goes.
    packages.retain(|package, _| PackageName::parse(package).is_ok());
    let mut dists = Vec::new();
    let mut hidden = Hidden::default();
    for (package, versions) in packages.iter_mut() {
        let Value::Array(entries) = versions else {
            return Err(Malformed::VersionsNotAList(package.clone()));
        };
        let mut expanded = if minified {
            minified::expand(entries)
        } else {
            entries
                .iter()
                .filter_map(|e| e.as_object().cloned())
                .collect()
        };
        for version in &mut expanded {
            dists.extend(rewrite_version(version, package, url, rewrite));
        }
        expanded.retain(|version| !hidden.refuses(judge, package, version, ""));
        *entries = if minified {
            minified::minify(&expanded)
        } else {
            expanded.into_iter().map(Value::Object).collect()
        };
    }
    hidden.log();
    Ok(P2 {
        body: to_json(document),
        dists,
        hidden_until: hidden.until,
    })
}

/// Points one version's dist at pmcache (and drops its source unless kept); the dist it came
/// from, if it had an http(s) URL.
fn rewrite_version(
    version: &mut Map<String, Value>,
    package: &str,
    url: &Url,
    rewrite: DistRewrite<'_>,
) -> Option<Dist> {
    // Versions are expanded here: removing `source` from each leaves none in the minified list.
    if !rewrite.keep_source {
        version.shift_remove("source");
    } else if version.contains_key("source") && !has_remote_source(version) {
        version.shift_remove("source");
        tracing::warn!(
            package,
            "dropped a source whose url is no remote repository"
        );
    }
    rewrite_dist(version, package, url, rewrite.base)
}

/// Whether a version's `source.url` names a repository on another host: a URL of a network
/// scheme Composer's VCS drivers use, or git's `user@host:path`. A local path or `file:` URL
/// would have Composer read the runner's own disk.
fn has_remote_source(version: &Map<String, Value>) -> bool {
    let Some(text) = version
        .get("source")
        .and_then(|source| source.get("url"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    match Url::parse(text) {
        Ok(url) => {
            matches!(
                url.scheme(),
                "http" | "https" | "git" | "ssh" | "git+ssh" | "svn" | "svn+ssh"
            ) && url.host().is_some()
        }
        Err(_) => is_scp_like(text),
    }
}

/// git's scp-like syntax, `user@host:path`.
fn is_scp_like(text: &str) -> bool {
    let Some((user, rest)) = text.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    // A host starting with `-` would read as an option to ssh.
    plain(user) && plain(host) && !host.starts_with('-') && !path.is_empty()
}

fn rewrite_dist(
    version: &mut Map<String, Value>,
    package: &str,
    url: &Url,
    dists_base: &str,
) -> Option<Dist> {
    // A dist pmcache cannot name (no type, a URL that is not http(s)) or could not serve at the
    // URL it would write (a control character or a `..` in the reference) goes: left as it is,
    // it would send clients around pmcache.
    let parts = dist_parts(version, url).filter(|(_, file, _)| routes_back(package, file));
    let Some((upstream, file, checksum)) = parts else {
        version.shift_remove("dist");
        return None;
    };
    let release = version
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let published = release_time::of(version);
    let Some(Value::Object(dist)) = version.get_mut("dist") else {
        return None;
    };
    let local = format!("{dists_base}{package}/{}", encode(&file));
    dist.insert("url".to_owned(), Value::String(local));
    dist.shift_remove("mirrors");
    Some(Dist {
        package: package.to_owned(),
        file,
        upstream,
        checksum,
        version: release,
        published,
    })
}

/// A version's dist: its http(s) URL, `<reference>.<type>`, and its published sha1, if any.
fn dist_parts(version: &Map<String, Value>, url: &Url) -> Option<(Url, String, Option<Checksum>)> {
    let Some(Value::Object(dist)) = version.get("dist") else {
        return None;
    };
    let upstream = url.join(dist.get("url")?.as_str()?).ok()?;
    if !matches!(upstream.scheme(), "http" | "https") {
        return None;
    }
    let text = |key: &str| dist.get(key).and_then(Value::as_str).unwrap_or("");
    // Without a reference, a dist is named by its version.
    let by_version = version
        .get("version_normalized")
        .or_else(|| version.get("version"))
        .and_then(Value::as_str);
    let reference = Some(text("reference"))
        .filter(|r| !r.is_empty())
        .or(by_version)?;
    let kind = Some(text("type")).filter(|t| !t.is_empty())?;
    let checksum = Checksum::from_hex("sha1", text("shasum"));
    Some((upstream, format!("{reference}.{kind}"), checksum))
}

/// Whether the dists route takes `file` of `package` back as it is.
fn routes_back(package: &str, file: &str) -> bool {
    let path = format!("/dists/{package}/{}", encode(file));
    matches!(crate::path::classify(&path), Ok(Route::Dist { file: routed, .. }) if routed == file)
}

/// Percent-encodes everything but unreserved characters: the archive name is one path segment.
pub fn encode(file: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(file, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DISTS: DistRewrite<'static> = DistRewrite {
        base: "http://cache.example/packagist/dists/",
        keep_source: true,
    };

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    /// `min_release_age = 1d`, `acme/tool@0.9.0` denied, judged at 2029-12-31 12:00 UTC.
    fn policy() -> pmcache_policy::Policy {
        let config = pmcache_policy::Config {
            min_release_age: std::time::Duration::from_secs(86_400),
            deny: vec!["packagist:acme/tool@0.9.0".to_owned()],
            ..pmcache_policy::Config::default()
        };
        pmcache_policy::Policy::new(&config, &[], &[]).unwrap()
    }

    /// The policy's judgement of Packagist versions at `now`, as the routes hand it over.
    fn judge_at(
        policy: &pmcache_policy::Policy,
        now: SystemTime,
    ) -> impl Fn(&str, &str, Option<SystemTime>) -> pmcache_policy::Verdict + '_ {
        move |package, version, published| {
            policy.judge(
                pmcache_policy::Ecosystem::Packagist,
                package,
                version,
                published,
                now,
            )
        }
    }

    /// acme/tool's p2 file `body` rewritten with nothing refused.
    fn tool_p2(body: &[u8]) -> P2 {
        rewrite_p2(
            body,
            &url("https://repo.example/p2/acme/tool.json"),
            DISTS,
            &serve_all,
        )
        .unwrap()
    }

    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn dist(reference: &str) -> Value {
        json!({"type": "zip", "url": format!("https://code.example/{reference}.zip"),
               "reference": reference, "shasum": ""})
    }

    #[test]
    fn refused_versions_leave_a_minified_list_that_still_expands_right() {
        // 1.1.0 inherits name, description and require from 2.0.0, and unsets its extra;
        // 2.0.0 (published 2030-01-01T00:00Z, written with a +02:00 offset) is too young and
        // 0.9.0 denied, so 1.1.0 must come first and whole.
        let upstream = json!({"minified": "composer/2.0", "packages": {"acme/tool": [
            {"name": "acme/tool", "description": "A tool", "version": "2.0.0",
             "require": {"php": ">=8"}, "extra": {"x": 1}, "time": "2030-01-01T02:00:00+02:00",
             "dist": dist("aaa")},
            {"version": "1.1.0", "extra": "__unset", "time": "2021-01-01T00:00:00+00:00",
             "dist": dist("bbb")},
            {"version": "1.0.0", "require": {"php": ">=7"}, "time": "2020-01-01T00:00:00-05:00",
             "dist": dist("ccc")},
            {"version": "0.9.0", "time": "2019-01-01T00:00:00+00:00", "dist": dist("ddd")}
        ]}});
        let policy = policy();
        let judge = judge_at(&policy, utc("2029-12-31T12:00:00Z"));
        let body = serde_json::to_vec(&upstream).unwrap();
        let url = url("https://repo.example/p2/acme/tool.json");
        let p2 = rewrite_p2(&body, &url, DISTS, &judge).unwrap();
        let document: Value = serde_json::from_slice(&p2.body).unwrap();
        let entries = document["packages"]["acme/tool"].as_array().unwrap();
        assert_eq!(entries[0]["name"], "acme/tool", "the first entry is whole");
        let expanded = Value::Array(
            minified::expand(entries)
                .into_iter()
                .map(Value::Object)
                .collect(),
        );
        let served = |reference: &str| {
            json!({"type": "zip", "url": format!("http://cache.example/packagist/dists/acme/tool/{reference}.zip"),
                   "reference": reference, "shasum": ""})
        };
        assert_eq!(
            expanded,
            json!([
                {"name": "acme/tool", "description": "A tool", "version": "1.1.0",
                 "require": {"php": ">=8"}, "time": "2021-01-01T00:00:00+00:00",
                 "dist": served("bbb")},
                {"name": "acme/tool", "description": "A tool", "version": "1.0.0",
                 "require": {"php": ">=7"}, "time": "2020-01-01T00:00:00-05:00",
                 "dist": served("ccc")}
            ])
        );
        // The hidden versions' dists are still known, so that a request for one gets the
        // policy's reason; each with its publish time, offsets applied.
        let dists: Vec<(&str, Option<&str>, Option<SystemTime>)> = p2
            .dists
            .iter()
            .map(|d| (d.file.as_str(), d.version.as_deref(), d.published))
            .collect();
        assert_eq!(
            dists,
            [
                ("aaa.zip", Some("2.0.0"), Some(utc("2030-01-01T00:00:00Z"))),
                ("bbb.zip", Some("1.1.0"), Some(utc("2021-01-01T00:00:00Z"))),
                ("ccc.zip", Some("1.0.0"), Some(utc("2020-01-01T05:00:00Z"))),
                ("ddd.zip", Some("0.9.0"), Some(utc("2019-01-01T00:00:00Z"))),
            ]
        );
        // 2.0.0 comes of age a day after its publish time (in UTC); the deny never does.
        assert_eq!(p2.hidden_until, Some(utc("2030-01-02T00:00:00Z")));
    }

    #[test]
    fn without_refusals_nothing_is_hidden_and_nothing_expires() {
        let upstream = json!({"packages": {"acme/tool": [
            {"name": "acme/tool", "version": "1.0.0", "time": "2020-01-01T00:00:00+00:00",
             "dist": dist("ccc")}
        ]}});
        let body = serde_json::to_vec(&upstream).unwrap();
        let url = url("https://repo.example/p2/acme/tool.json");
        let p2 = rewrite_p2(&body, &url, DISTS, &serve_all).unwrap();
        let document: Value = serde_json::from_slice(&p2.body).unwrap();
        assert_eq!(
            document["packages"]["acme/tool"].as_array().unwrap().len(),
            1
        );
        assert_eq!(p2.hidden_until, None);
    }

    #[test]
    fn refused_inline_versions_of_a_root_file_are_hidden() {
        let upstream = json!({
            "metadata-url": "/p2/%package%.json",
            "packages": {"acme/inline": {
                "1.0.0": {"name": "acme/inline", "version": "1.0.0",
                          "time": "2021-01-01T00:00:00+00:00", "dist": dist("old")},
                "2.0.0": {"name": "acme/inline", "version": "2.0.0",
                          "time": "2029-12-31T11:00:00+00:00", "dist": dist("new")},
                "3.0.0": {"name": "acme/inline", "version": "3.0.0", "dist": dist("undated")}
            }}
        });
        let policy = policy();
        let judge = judge_at(&policy, utc("2029-12-31T12:00:00Z"));
        let body = serde_json::to_vec(&upstream).unwrap();
        let root = rewrite_root(
            &body,
            &url("https://repo.example/packages.json"),
            "http://cache.example/packagist",
            DISTS,
            &judge,
        )
        .unwrap();
        let rewritten: Value = serde_json::from_slice(&root.body).unwrap();
        // 2.0.0 is an hour old; 3.0.0 has no time (unknown_release_time = deny).
        let shown: Vec<&String> = rewritten["packages"]["acme/inline"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(shown, ["1.0.0"]);
        assert_eq!(root.dists.len(), 3);
        assert_eq!(root.hidden_until, Some(utc("2030-01-01T11:00:00Z")));
    }

    #[test]
    fn inline_packages_of_a_root_file_get_pmcache_dists() {
        let upstream = json!({
            "metadata-url": "/p2/%package%.json",
            "packages": {"acme/inline": {"1.0.0": {"name": "acme/inline", "version": "1.0.0",
                "dist": {"type": "zip", "url": "https://code.example/inline.zip", "reference": "ccc"}}}}
        });
        let body = serde_json::to_vec(&upstream).unwrap();
        let root = rewrite_root(
            &body,
            &url("https://repo.example/packages.json"),
            "http://cache.example/packagist",
            DISTS,
            &serve_all,
        )
        .unwrap();
        let rewritten: Value = serde_json::from_slice(&root.body).unwrap();
        assert_eq!(
            rewritten["packages"]["acme/inline"]["1.0.0"]["dist"]["url"],
            "http://cache.example/packagist/dists/acme/inline/ccc.zip"
        );
        assert_eq!(root.dists.len(), 1);
        assert_eq!(
            root.dists[0].upstream.as_str(),
            "https://code.example/inline.zip"
        );
    }

    #[test]
    fn dists_pmcache_could_not_serve_are_removed_not_left_upstream() {
        let upstream = json!({"packages": {"acme/tool": [
            {"version": "1.0.0", "dist": {"type": "z\u{7f}ip", "url": "https://code.example/a.zip", "reference": "a"}},
            {"version": "1.0.1", "dist": {"type": "zip", "url": "https://code.example/b.zip", "reference": "../b"}},
            {"version": "1.0.2", "dist": {"type": "zip", "url": "https://code.example/c.zip", "reference": "c"}},
            {"version": "1.0.3", "dist": {"type": "zip", "url": "file:///etc/passwd", "reference": "d"}},
            {"version": "1.0.4", "dist": {"url": "https://code.example/e.zip", "reference": "e"}}
        ]}});
        let body = serde_json::to_vec(&upstream).unwrap();
        let p2 = tool_p2(&body);
        let files: Vec<_> = p2.dists.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, ["c.zip"]);
        let text = String::from_utf8(p2.body).unwrap();
        assert!(!text.contains("code.example"), "{text}");
    }

    #[test]
    fn sources_on_the_local_disk_are_dropped() {
        let source = |url: &str| {
            json!({"version": "1.0.0", "source": {"type": "git", "url": url, "reference": "a"},
                   "dist": {"type": "zip", "url": "https://code.example/a.zip", "reference": "a"}})
        };
        let kept = [
            "https://code.example/acme/tool.git",
            "git@code.example:acme/tool.git",
            "ssh://git@code.example/acme/tool.git",
            "svn://code.example/acme/tool",
        ];
        let dropped = [
            "file:///srv/acme/tool.git",
            "/srv/acme/tool.git",
            "../tool.git",
            "gopher://code.example/1tool",
            "C:/acme/tool",
            "u@-oProxyCommand=x:y",
        ];
        let versions: Vec<Value> = kept.iter().chain(&dropped).map(|u| source(u)).collect();
        let body = serde_json::to_vec(&json!({"packages": {"acme/tool": versions}})).unwrap();
        let p2 = tool_p2(&body);
        let text = String::from_utf8(p2.body).unwrap();
        for url in kept {
            assert!(
                text.contains(&format!("\"{url}\"")),
                "{url} dropped: {text}"
            );
        }
        for url in dropped {
            assert!(!text.contains(url), "{url} kept: {text}");
        }
    }

    #[test]
    fn sources_are_dropped_only_when_not_kept() {
        let upstream = json!({
            "minified": "composer/2.0",
            "packages": {"acme/tool": [
                {"name": "acme/tool", "version": "2.0.0",
                 "source": {"type": "git", "url": "https://code.example/acme/tool.git", "reference": "aaa"},
                 "dist": {"type": "zip", "url": "https://code.example/a.zip", "reference": "aaa"}},
                {"version": "1.0.0",
                 "source": {"type": "git", "url": "https://code.example/acme/tool.git", "reference": "bbb"},
                 "dist": {"type": "zip", "url": "https://code.example/b.zip", "reference": "bbb"}}
            ]}
        });
        let body = serde_json::to_vec(&upstream).unwrap();
        let p2_url = url("https://repo.example/p2/acme/tool.json");
        let kept = rewrite_p2(&body, &p2_url, DISTS, &serve_all).unwrap();
        assert_eq!(
            String::from_utf8(kept.body)
                .unwrap()
                .matches("tool.git")
                .count(),
            2
        );
        let without = DistRewrite {
            keep_source: false,
            ..DISTS
        };
        let dropped = rewrite_p2(&body, &p2_url, without, &serve_all).unwrap();
        let text = String::from_utf8(dropped.body).unwrap();
        assert!(!text.contains("source"), "{text}");
        let expanded: Value = serde_json::from_str(&text).unwrap();
        let versions = expanded["packages"]["acme/tool"]
            .as_array()
            .unwrap()
            .clone();
        let full = minified::expand(&versions);
        assert_eq!(full[1]["version"], "1.0.0");
        assert_eq!(full[1]["name"], "acme/tool");
    }

    #[test]
    fn every_url_in_packages_json_points_at_pmcache() {
        let upstream = json!({
            "packages": [],
            "notify-batch": "https://packagist.example/downloads/",
            "providers-url": "/p/%package%$%hash%.json",
            "metadata-url": "/p2/%package%.json",
            "search": "https://packagist.example/search.json?q=%query%&type=%type%",
            "list": "https://packagist.example/packages/list.json",
            "security-advisories": {"metadata": true, "api-url": "https://packagist.example/api/security-advisories/"},
            "providers-api": "https://packagist.example/providers/%package%.json",
            "warning": "Support for Composer 1 has been shutdown, see https://blog.example/",
            "warning-versions": "<1.999",
            "filter": {"metadata": true, "summary-url": "https://repo.example/lists/all/summary.json"},
            "providers": []
        });
        let body = serde_json::to_vec(&upstream).unwrap();
        let root = rewrite_root(
            &body,
            &url("https://repo.example/packages.json"),
            "http://cache.example/packagist",
            DISTS,
            &serve_all,
        )
        .unwrap();
        let rewritten: Value = serde_json::from_slice(&root.body).unwrap();
        insta::assert_json_snapshot!(rewritten, @r#"
        {
          "packages": [],
          "notify-batch": "http://cache.example/packagist/downloads/",
          "metadata-url": "http://cache.example/packagist/p2/%package%.json",
          "search": "http://cache.example/packagist/search.json?q=%query%&type=%type%",
          "list": "http://cache.example/packagist/packages/list.json",
          "security-advisories": {
            "metadata": true,
            "api-url": "http://cache.example/packagist/api/security-advisories/"
          },
          "providers-api": "http://cache.example/packagist/providers/%package%.json",
          "warning": "Support for Composer 1 has been shutdown, see https://blog.example/",
          "warning-versions": "<1.999",
          "filter": {
            "metadata": true,
            "summary-url": "http://cache.example/packagist/link/0"
          }
        }
        "#);
        assert_eq!(
            root.links["metadata-url"],
            "https://repo.example/p2/%package%.json"
        );
        assert_eq!(
            root.links["link/0"],
            "https://repo.example/lists/all/summary.json"
        );
        assert_eq!(
            root.links["search"],
            "https://packagist.example/search.json?q=%query%&type=%type%"
        );
    }

    #[test]
    fn a_root_without_metadata_url_is_refused() {
        let body = br#"{"packages": [], "providers-url": "/p/%package%$%hash%.json"}"#;
        let error = rewrite_root(
            body,
            &url("https://r.example/packages.json"),
            "/p",
            DISTS,
            &serve_all,
        )
        .unwrap_err();
        assert!(matches!(error, Malformed::NotComposer2), "{error}");
    }

    #[test]
    fn dists_point_at_pmcache_and_minified_lists_stay_valid() {
        let upstream = json!({
            "minified": "composer/2.0",
            "packages": {"acme/tool": [
                {"name": "acme/tool", "version": "2.0.0", "extra": {"x": 1},
                 "dist": {"type": "zip", "url": "https://code.example/acme/tool/zipball/aaa", "reference": "aaa", "shasum": ""}},
                {"version": "1.0.0", "extra": "__unset",
                 "dist": {"type": "zip", "url": "https://code.example/acme/tool/zipball/bbb", "reference": "bbb",
                          "shasum": "0123456789abcdef0123456789abcdef01234567"}},
                {"version": "dev-feature/x",
                 "dist": {"type": "zip", "url": "https://code.example/acme/tool/zipball/feature/x", "reference": "feature/x", "shasum": ""}}
            ]},
            "security-advisories": [{"advisoryId": "PKSA-1", "affectedVersions": "<1.0.1"}]
        });
        let body = serde_json::to_vec(&upstream).unwrap();
        let p2 = tool_p2(&body);
        let rewritten: Value = serde_json::from_slice(&p2.body).unwrap();
        insta::assert_json_snapshot!(rewritten, @r#"
        {
          "minified": "composer/2.0",
          "packages": {
            "acme/tool": [
              {
                "name": "acme/tool",
                "version": "2.0.0",
                "extra": {
                  "x": 1
                },
                "dist": {
                  "type": "zip",
                  "url": "http://cache.example/packagist/dists/acme/tool/aaa.zip",
                  "reference": "aaa",
                  "shasum": ""
                }
              },
              {
                "version": "1.0.0",
                "dist": {
                  "type": "zip",
                  "url": "http://cache.example/packagist/dists/acme/tool/bbb.zip",
                  "reference": "bbb",
                  "shasum": "0123456789abcdef0123456789abcdef01234567"
                },
                "extra": "__unset"
              },
              {
                "version": "dev-feature/x",
                "dist": {
                  "type": "zip",
                  "url": "http://cache.example/packagist/dists/acme/tool/feature%2Fx.zip",
                  "reference": "feature/x",
                  "shasum": ""
                }
              }
            ]
          },
          "security-advisories": [
            {
              "advisoryId": "PKSA-1",
              "affectedVersions": "<1.0.1"
            }
          ]
        }
        "#);
        let files: Vec<_> = p2.dists.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, ["aaa.zip", "bbb.zip", "feature/x.zip"]);
        assert_eq!(p2.dists[0].checksum, None);
        assert_eq!(
            p2.dists[1].checksum.as_ref().map(|c| c.hex.as_str()),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            p2.dists[2].upstream.as_str(),
            "https://code.example/acme/tool/zipball/feature/x"
        );
    }
}
