//! Turning an upstream packument into the two documents pmcache serves: the full packument with
//! tarball URLs pointing at pmcache, and the abbreviated one derived from it (brief sections 4
//! and 6), plus the list of tarballs those URLs stand for.
//!
//! The document is parsed once into a `serde_json::Value` (insertion-ordered) and both outputs are
//! serialised from it: the full one after replacing each `dist.tarball` in place, the abbreviated
//! one through borrowing views, so a 30 MB packument is never copied as a tree.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use pmcache_policy::Verdict;
use pmcache_proxy::Checksum;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use url::Url;

use crate::dist_tags;
use crate::name::{PackageName, percent_encode_segment};
use crate::wire::{Dist, is_abbreviated_version_field};
use crate::{Error, Result};
use pmcache_proxy::percent::decode_strict_utf8;

/// Both representations of one packument, ready to store and serve, and its tarballs.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The upstream packument with only `versions[*].dist.tarball` replaced; compact JSON.
    pub full: Vec<u8>,
    /// The abbreviated document: `name`, `modified`, `dist-tags`, `versions` (install fields
    /// only, `libc` included) and `time`; compact JSON.
    pub abbreviated: Vec<u8>,
    /// One entry per version whose `dist.tarball` pmcache serves, in document order: those the
    /// policy hid too, so that a request for one gets the policy's reason, not a 404.
    pub tarballs: Vec<Tarball>,
    /// When the first version the age rule hid comes of age.
    pub hidden_until: Option<SystemTime>,
}

/// A tarball pmcache advertises, and where it really comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tarball {
    /// The version key in `versions`.
    pub version: String,
    /// The conventional `<bare>-<version without +build>.tgz` that pmcache's URL ends in.
    /// Should two versions differ only in build metadata, the later one keeps its full version
    /// (`<bare>-<version>.tgz`) so that filenames stay unique.
    pub filename: String,
    /// The upstream URL's last path segment, percent-decoded, when it differs from
    /// `filename`: lockfiles made against the upstream ask for that name.
    pub upstream_filename: Option<String>,
    /// Absolute upstream URL.
    pub upstream: Url,
    /// The digest to verify the tarball against (`dist.integrity`, else `dist.shasum`).
    pub checksum: Option<Checksum>,
    /// When it was published, by the packument's `time`.
    pub published: Option<SystemTime>,
}

/// Rewrite an upstream packument for serving from `registry`.
///
/// `registry` is pmcache's absolute npm registry URL ending in `/` (`http://127.0.0.1:7878/npm/`);
/// every usable `dist.tarball` becomes `{registry}{name}/-/{filename}` with the scoped name
/// unescaped. `package` is the name requested: a document with another `name`, or one that is no
/// JSON object with a `versions` object, is [`Error::Document`]. Versions whose `dist.tarball`
/// is missing, is no http(s) URL (`file:`, `gopher:`), or whose version key cannot be a
/// filename are dropped, and so are `dist-tags` naming them: pmcache could not serve their
/// tarballs, and a client handed the URL as it stands would fetch it itself. Versions `judge`
/// refuses (given their version key and publish time) are hidden: gone from `versions` and
/// `time`, their `dist-tags` moved to the newest older version shown (see the `dist_tags` module).
pub fn rewrite_packument(
    body: &[u8],
    package: &PackageName,
    packument_url: &Url,
    registry: &str,
    judge: &dyn Fn(&str, Option<SystemTime>) -> Verdict,
) -> Result<Rewritten> {
    let malformed = |source: Malformed| Error::Document {
        url: packument_url.to_string(),
        source,
    };
    let document: Value =
        serde_json::from_slice(body).map_err(|e| malformed(Malformed::Json(e)))?;
    let Value::Object(mut root) = document else {
        return Err(malformed(Malformed::Shape(
            "is not a JSON object".to_owned(),
        )));
    };
    check_name(&root, package).map_err(|reason| malformed(Malformed::Shape(reason)))?;
    if is_unpublished(&root) {
        return Err(Error::Unpublished {
            package: package.to_string(),
        });
    }
    let times = publish_times(&root);
    let versions = root
        .get_mut("versions")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| malformed(Malformed::Shape("has no \"versions\" object".to_owned())))?;

    let plans = plan_tarballs(versions, package, packument_url);
    let mut plans = drop_unservable(versions, plans, package);
    for plan in &mut plans {
        plan.published = times.get(&plan.version).copied();
    }
    let (hidden, hidden_until) = hide_refused(versions, &plans, judge, package);
    let shown: Vec<Tarball> = plans
        .iter()
        .filter(|plan| !hidden.contains(&plan.version))
        .cloned()
        .collect();
    point_at_registry(versions, &shown, &tarball_prefix(registry, package));
    if let Some(time) = root.get_mut("time").and_then(Value::as_object_mut) {
        time.retain(|version, _| !hidden.contains(version));
    }
    dist_tags::move_off(&mut root, &hidden);
    drop_dangling_tags(&mut root);

    let full = to_json(&root, body.len()).map_err(|e| malformed(Malformed::Unwritable(e)))?;
    let abbreviated = to_json(&Abbreviated(&root), body.len() / 2)
        .map_err(|e| malformed(Malformed::Unwritable(e)))?;
    Ok(Rewritten {
        full,
        abbreviated,
        tarballs: plans,
        hidden_until,
    })
}

/// A `judge` for [`rewrite_packument`] that serves every version: no policy.
pub fn serve_all(_version: &str, _published: Option<SystemTime>) -> Verdict {
    Verdict::Allowed
}

/// The publish time of each version, by the packument's `time` (RFC 3339 in UTC).
fn publish_times(root: &Map<String, Value>) -> HashMap<String, SystemTime> {
    let Some(time) = root.get("time").and_then(Value::as_object) else {
        return HashMap::new();
    };
    time.iter()
        .filter_map(|(version, stamp)| {
            let published = pmcache_policy::parse_time(stamp.as_str()?)?;
            Some((version.clone(), published))
        })
        .collect()
}

/// Removes from `versions` those `judge` refuses; answers them, and when the first of those the
/// age rule refused comes of age.
fn hide_refused(
    versions: &mut Map<String, Value>,
    plans: &[Tarball],
    judge: &dyn Fn(&str, Option<SystemTime>) -> Verdict,
    package: &PackageName,
) -> (HashSet<String>, Option<SystemTime>) {
    let mut hidden = HashSet::new();
    let mut until: Option<SystemTime> = None;
    for plan in plans {
        if let Verdict::Refused(refusal) = judge(&plan.version, plan.published) {
            until = refusal.first_maturity(until);
            hidden.insert(plan.version.clone());
        }
    }
    if !hidden.is_empty() {
        tracing::debug!(
            package = package.as_str(),
            versions = ?hidden,
            "versions hidden by policy"
        );
        versions.retain(|version, _| !hidden.contains(version));
    }
    (hidden, until)
}

/// Removes the versions that have no tarball pmcache can serve; answers the plans of those
/// left, in order.
fn drop_unservable(
    versions: &mut Map<String, Value>,
    plans: Vec<Option<Tarball>>,
    package: &PackageName,
) -> Vec<Tarball> {
    let unservable: Vec<String> = versions
        .keys()
        .zip(&plans)
        .filter(|(_, plan)| plan.is_none())
        .map(|(version, _)| version.clone())
        .collect();
    if !unservable.is_empty() {
        tracing::warn!(
            package = package.as_str(),
            versions = ?unservable,
            "dropped versions whose dist.tarball is no http(s) URL pmcache can serve"
        );
        // `retain` keeps the document's order (a removal may move the last entry into the gap).
        let unservable: HashSet<&String> = unservable.iter().collect();
        versions.retain(|version, _| !unservable.contains(version));
    }
    plans.into_iter().flatten().collect()
}

/// Removes the `dist-tags` that name a version the document no longer has.
fn drop_dangling_tags(root: &mut Map<String, Value>) {
    let known: HashSet<String> = root
        .get("versions")
        .and_then(Value::as_object)
        .map(|versions| versions.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(tags) = root.get_mut("dist-tags").and_then(Value::as_object_mut) {
        tags.retain(|_, version| version.as_str().is_some_and(|v| known.contains(v)));
    }
}

/// The registry's stub for a package removed entirely: `time.unpublished` and no versions.
fn is_unpublished(root: &Map<String, Value>) -> bool {
    let has_versions = root.get("versions").is_some_and(Value::is_object);
    let unpublished = root
        .get("time")
        .and_then(Value::as_object)
        .is_some_and(|time| time.contains_key("unpublished"));
    unpublished && !has_versions
}

fn check_name(root: &Map<String, Value>, package: &PackageName) -> Result<(), String> {
    match root.get("name").and_then(Value::as_str) {
        Some(name) if name == package.as_str() => Ok(()),
        Some(name) => Err(format!("names {name:?}, not {:?}", package.as_str())),
        None => Err("has no \"name\"".to_owned()),
    }
}

/// `{registry}{name}/-/`, tolerating a registry URL without its trailing slash.
fn tarball_prefix(registry: &str, package: &PackageName) -> String {
    let slash = if registry.ends_with('/') { "" } else { "/" };
    // Names hold only unreserved characters, so the unescaped scope slash is the only '/'.
    format!("{registry}{slash}{package}/-/")
}

fn to_json(value: &impl Serialize, capacity: usize) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

/// What is wrong with an upstream packument, typed by what failed.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// It does not parse as JSON.
    #[error("is not JSON")]
    Json(#[source] serde_json::Error),
    /// It parses, but writing the rendering failed (a number or string serde cannot write back).
    #[error("cannot be written back")]
    Unwritable(#[source] serde_json::Error),
    /// It is JSON, but not a packument of the package asked for.
    #[error("{0}")]
    Shape(String),
}

/// One entry per version, in document order: the tarball its URL will stand for, if any.
fn plan_tarballs(
    versions: &Map<String, Value>,
    package: &PackageName,
    packument_url: &Url,
) -> Vec<Option<Tarball>> {
    let mut filenames = Filenames::new(package.bare(), versions);
    versions
        .iter()
        .map(|(version, entry)| {
            let dist = Dist::read(entry.get("dist")?.as_object()?);
            plan_tarball(version, dist, packument_url, &mut filenames)
        })
        .collect()
}

fn plan_tarball<'a>(
    version: &'a str,
    dist: Dist<'_>,
    packument_url: &Url,
    filenames: &mut Filenames<'a>,
) -> Option<Tarball> {
    let upstream = packument_url.join(dist.tarball?).ok()?;
    // pmcache will fetch this URL itself: nothing but http(s) may come out of a document.
    if !matches!(upstream.scheme(), "http" | "https") || !is_filename_safe(version) {
        return None;
    }
    let filename = filenames.claim(version);
    let upstream_filename = last_segment(&upstream).filter(|last| *last != filename);
    Some(Tarball {
        version: version.to_owned(),
        filename,
        upstream_filename,
        checksum: dist.checksum(),
        upstream,
        published: None,
    })
}

/// A version key that can stand in a filename which [`crate::name::classify`] accepts.
fn is_filename_safe(version: &str) -> bool {
    !version.is_empty() && !version.contains(['/', '\\']) && !version.chars().any(char::is_control)
}

/// The percent-decoded last path segment, if it is not empty.
fn last_segment(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let decoded = decode_strict_utf8(last).unwrap_or_else(|| last.to_owned());
    (!decoded.is_empty()).then_some(decoded)
}

/// Hands out conventional tarball filenames, keeping them unique when versions differ only in
/// build metadata (which the npm registry refuses, but other upstreams may not).
struct Filenames<'a> {
    bare: &'a str,
    /// Versions without build metadata: their conventional filename is theirs alone.
    plain: HashSet<&'a str>,
    /// Versions with build metadata that already took the conventional filename of their core.
    claimed: HashSet<&'a str>,
}

impl<'a> Filenames<'a> {
    fn new(bare: &'a str, versions: &'a Map<String, Value>) -> Filenames<'a> {
        let plain = versions.keys().map(String::as_str);
        Filenames {
            bare,
            plain: plain.filter(|version| !version.contains('+')).collect(),
            claimed: HashSet::new(),
        }
    }

    fn claim(&mut self, version: &'a str) -> String {
        let bare = self.bare;
        match version.split_once('+') {
            None => format!("{bare}-{version}.tgz"),
            Some((core, _build)) if !self.plain.contains(core) && self.claimed.insert(core) => {
                format!("{bare}-{core}.tgz")
            }
            // The full version holds a '+', which no conventional filename does: still unique.
            Some(_) => format!("{bare}-{version}.tgz"),
        }
    }
}

/// Replace each planned version's `dist.tarball`, in place so key order stays the upstream's.
fn point_at_registry(versions: &mut Map<String, Value>, plans: &[Tarball], prefix: &str) {
    for (entry, plan) in versions.values_mut().zip(plans) {
        let Some(dist) = entry.get_mut("dist").and_then(Value::as_object_mut) else {
            continue;
        };
        let url = format!("{prefix}{}", percent_encode_segment(&plan.filename));
        dist.insert("tarball".to_owned(), Value::String(url));
        drop_local_attestations(dist);
    }
}

/// Removes `dist.attestations` unless its `url` is http(s): `npm audit signatures` fetches it,
/// and a document must not send a client to any other kind of URL (`file:`).
fn drop_local_attestations(dist: &mut Map<String, Value>) {
    let remote = dist
        .get("attestations")
        .and_then(|attestations| attestations.get("url"))
        .and_then(Value::as_str)
        .and_then(|url| Url::parse(url).ok())
        .is_some_and(|url| matches!(url.scheme(), "http" | "https"));
    if !remote && dist.shift_remove("attestations").is_some() {
        tracing::warn!("dropped dist.attestations whose url is no http(s) URL");
    }
}

/// The abbreviated document, serialised straight from the (rewritten) full one.
struct Abbreviated<'a>(&'a Map<String, Value>);

impl Serialize for Abbreviated<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let document = self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(name) = document.get("name") {
            map.serialize_entry("name", name)?;
        }
        if let Some(modified) = modified(document) {
            map.serialize_entry("modified", modified)?;
        }
        if let Some(dist_tags) = document.get("dist-tags") {
            map.serialize_entry("dist-tags", dist_tags)?;
        }
        if let Some(versions) = document.get("versions").and_then(Value::as_object) {
            map.serialize_entry("versions", &AbbreviatedVersions(versions))?;
        }
        // Not in the registry's corgi, but pnpm can then skip full fetches for `time`
        // (`registry-supports-time-field`), as with Verdaccio.
        if let Some(time) = document.get("time") {
            map.serialize_entry("time", time)?;
        }
        map.end()
    }
}

/// `modified` is what pnpm's release-age check reads first, and the upstream seen from here
/// often omits it (brief section 1): fall back to `time.modified`, then the newest `time`.
fn modified(document: &Map<String, Value>) -> Option<&str> {
    if let Some(modified) = document.get("modified").and_then(Value::as_str) {
        return Some(modified);
    }
    let time = document.get("time")?.as_object()?;
    time.get("modified")
        .and_then(Value::as_str)
        // ISO 8601 timestamps in one format sort as strings.
        .or_else(|| time.values().filter_map(Value::as_str).max())
}

struct AbbreviatedVersions<'a>(&'a Map<String, Value>);

impl Serialize for AbbreviatedVersions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (version, entry) in self.0 {
            map.serialize_entry(version, &AbbreviatedVersion(entry))?;
        }
        map.end()
    }
}

struct AbbreviatedVersion<'a>(&'a Value);

impl Serialize for AbbreviatedVersion<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let Some(fields) = self.0.as_object() else {
            // Not a version object: pass it on as is rather than invent one.
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if is_abbreviated_version_field(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// One version's manifest from a (rewritten) full packument, by version or dist-tag; None when
/// neither names a version, or the document is not a packument.
pub fn version_manifest(full: &[u8], wanted: &str) -> Option<Vec<u8>> {
    let document: Value = serde_json::from_slice(full).ok()?;
    let versions = document.get("versions")?.as_object()?;
    let version = match versions.get(wanted) {
        Some(_) => wanted,
        None => document.get("dist-tags")?.get(wanted)?.as_str()?,
    };
    serde_json::to_vec(versions.get(version)?).ok()
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use serde_json::json;

    use super::*;

    const REGISTRY: &str = "http://127.0.0.1:7878/npm/";

    #[test]
    fn version_manifests_by_version_or_tag() {
        let full = serde_json::to_vec(&json!({"name": "x", "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": {"name": "x", "version": "1.0.0"}}}))
        .unwrap();
        let by_tag: Value =
            serde_json::from_slice(&version_manifest(&full, "latest").unwrap()).unwrap();
        assert_eq!(by_tag["version"], "1.0.0");
        assert!(version_manifest(&full, "1.0.0").is_some());
        assert!(version_manifest(&full, "2.0.0").is_none());
        assert!(version_manifest(b"not json", "latest").is_none());
    }

    #[test]
    fn an_unpublished_stub_is_unpublished_not_malformed() {
        let package = PackageName::parse("gone").unwrap();
        let url = Url::parse("http://127.0.0.1:1/gone").unwrap();
        let stub = json!({"name": "gone", "time": {"created": "2020-01-01T00:00:00.000Z",
            "unpublished": {"time": "2021-01-01T00:00:00.000Z", "versions": ["1.0.0"]}}});
        let body = serde_json::to_vec(&stub).unwrap();
        let error = rewrite_packument(&body, &package, &url, REGISTRY, &serve_all)
            .err()
            .unwrap();
        assert!(matches!(error, Error::Unpublished { .. }), "{error}");
        let broken = serde_json::to_vec(&json!({"name": "gone"})).unwrap();
        let error = rewrite_packument(&broken, &package, &url, REGISTRY, &serve_all)
            .err()
            .unwrap();
        assert!(matches!(error, Error::Document { .. }), "{error}");
    }

    fn scoped_fixture() -> Rewritten {
        let body = include_bytes!("../tests/data/scoped-packument.json");
        let package = PackageName::parse("@demo/scoped").unwrap();
        let url = Url::parse("https://registry.example/@demo%2fscoped").unwrap();
        rewrite_packument(body, &package, &url, REGISTRY, &serve_all).unwrap()
    }

    /// Pretty-printed for review; the order of keys is the output's own.
    fn pretty(compact: &[u8]) -> String {
        let value: Value = serde_json::from_slice(compact).unwrap();
        serde_json::to_string_pretty(&value).unwrap()
    }

    fn rewrite_json(document: Value, name: &str) -> Result<Rewritten> {
        let package = PackageName::parse(name).unwrap();
        let url = Url::parse(&format!("https://registry.example/{}", package.escaped())).unwrap();
        rewrite_packument(
            &serde_json::to_vec(&document).unwrap(),
            &package,
            &url,
            REGISTRY,
            &serve_all,
        )
    }

    fn document_reason(result: Result<Rewritten>) -> String {
        match result {
            Err(Error::Document { source, .. }) => source.to_string(),
            other => panic!("expected a document error, got {other:?}"),
        }
    }

    #[test]
    fn full_document() {
        insta::assert_snapshot!(pretty(&scoped_fixture().full));
    }

    #[test]
    fn abbreviated_document() {
        insta::assert_snapshot!(pretty(&scoped_fixture().abbreviated));
    }

    #[test]
    fn tarballs() {
        let mut listing = String::new();
        for tarball in scoped_fixture().tarballs {
            let checksum = tarball
                .checksum
                .map_or("none".to_owned(), |c| c.to_string());
            let upstream_filename = tarball.upstream_filename.as_deref().unwrap_or("-");
            writeln!(
                listing,
                "{}\n  filename {}\n  upstream_filename {upstream_filename}\n  upstream {}\n  checksum {checksum}",
                tarball.version, tarball.filename, tarball.upstream
            )
            .unwrap();
        }
        insta::assert_snapshot!(listing);
    }

    #[test]
    fn outputs_are_compact() {
        let rewritten = scoped_fixture();
        for output in [&rewritten.full, &rewritten.abbreviated] {
            let value: Value = serde_json::from_slice(output).unwrap();
            assert_eq!(*output, serde_json::to_vec(&value).unwrap());
        }
    }

    #[test]
    fn full_document_changes_only_tarball_urls() {
        let body = include_bytes!("../tests/data/scoped-packument.json");
        let mut original: Value = serde_json::from_slice(body).unwrap();
        let mut rewritten: Value = serde_json::from_slice(&scoped_fixture().full).unwrap();
        // 3.0.0-rc.0 has no tarball: dropped, as pmcache could not serve it.
        let dropped = original["versions"]
            .as_object_mut()
            .unwrap()
            .remove("3.0.0-rc.0");
        assert!(dropped.is_some() && rewritten["versions"].get("3.0.0-rc.0").is_none());
        for document in [&mut original, &mut rewritten] {
            for entry in document["versions"].as_object_mut().unwrap().values_mut() {
                if let Some(dist) = entry.get_mut("dist").and_then(Value::as_object_mut) {
                    dist.remove("tarball");
                }
            }
        }
        assert_eq!(
            serde_json::to_string(&original).unwrap(),
            serde_json::to_string(&rewritten).unwrap()
        );
    }

    #[test]
    fn rewritten_urls_classify_back_to_their_tarballs() {
        let rewritten = scoped_fixture();
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        for tarball in &rewritten.tarballs {
            let url = full["versions"][&tarball.version]["dist"]["tarball"]
                .as_str()
                .unwrap();
            let path = url.strip_prefix(REGISTRY.trim_end_matches('/')).unwrap();
            assert_eq!(
                crate::name::classify(path).unwrap(),
                crate::name::NpmPath::Tarball {
                    package: PackageName::parse("@demo/scoped").unwrap(),
                    filename: tarball.filename.clone(),
                }
            );
        }
    }

    #[test]
    fn modified_falls_back_to_time() {
        let modified = |document: Value| {
            let rewritten = rewrite_json(document, "x").unwrap();
            let abbreviated: Value = serde_json::from_slice(&rewritten.abbreviated).unwrap();
            abbreviated.get("modified").cloned()
        };
        let time = json!({"created": "2020-01-01T00:00:00.000Z", "modified": "2022-01-01T00:00:00.000Z",
                          "1.0.0": "2023-01-01T00:00:00.000Z"});
        assert_eq!(
            modified(
                json!({"name": "x", "versions": {}, "modified": "2024-01-01T00:00:00.000Z", "time": time})
            ),
            Some(json!("2024-01-01T00:00:00.000Z"))
        );
        assert_eq!(
            modified(json!({"name": "x", "versions": {}, "time": time})),
            Some(json!("2022-01-01T00:00:00.000Z"))
        );
        let without_modified = json!({"created": "2020-01-01T00:00:00.000Z",
                                      "1.0.0": "2023-01-01T00:00:00.000Z", "0.9.0": "2021-01-01T00:00:00.000Z"});
        assert_eq!(
            modified(json!({"name": "x", "versions": {}, "time": without_modified})),
            Some(json!("2023-01-01T00:00:00.000Z"))
        );
        assert_eq!(modified(json!({"name": "x", "versions": {}})), None);
    }

    #[test]
    fn documents_that_cannot_be_served() {
        let package = PackageName::parse("x").unwrap();
        let url = Url::parse("https://registry.example/x").unwrap();
        let reason = |body: &[u8]| {
            document_reason(rewrite_packument(
                body, &package, &url, REGISTRY, &serve_all,
            ))
        };
        assert!(reason(b"").starts_with("is not JSON"));
        assert!(reason(b"{\"name\":").starts_with("is not JSON"));
        assert!(reason(&[b'['; 10_000]).starts_with("is not JSON"));
        assert_eq!(reason(b"[]"), "is not a JSON object");
        assert_eq!(reason(b"{\"versions\":{}}"), "has no \"name\"");
        assert_eq!(reason(b"{\"name\":\"x\"}"), "has no \"versions\" object");
        assert_eq!(
            reason(b"{\"name\":\"x\",\"versions\":[]}"),
            "has no \"versions\" object"
        );
        assert_eq!(
            reason(b"{\"name\":\"X\",\"versions\":{}}"),
            "names \"X\", not \"x\""
        );
    }

    #[test]
    fn versions_the_policy_refuses_are_hidden_and_their_tags_moved() {
        use pmcache_policy::{Config, Ecosystem, Policy};
        let tarball = |version: &str| json!({"dist": {"tarball": format!("https://registry.example/x/-/x-{version}.tgz")}});
        let document = json!({"name": "x",
            "dist-tags": {"latest": "2.0.0", "beta": "2.1.0-beta.1"},
            "time": {"created": "2020-01-01T00:00:00.000Z", "1.0.0": "2020-01-01T00:00:00.000Z",
                     "1.1.0": "2021-01-01T00:00:00.000Z", "2.0.0": "2030-01-01T00:00:00.000Z",
                     "2.1.0-beta.1": "2030-01-02T00:00:00.000Z"},
            "versions": {"1.0.0": tarball("1.0.0"), "1.1.0": tarball("1.1.0"),
                         "2.0.0": tarball("2.0.0"), "2.1.0-beta.1": tarball("2.1.0-beta.1"),
                         "2.2.0": tarball("2.2.0")}});
        let config = Config {
            min_release_age: std::time::Duration::from_secs(86_400),
            deny: vec!["npm:x@1.0.0".to_owned()],
            ..Config::default()
        };
        let policy = Policy::new(&config, &[], &[]).unwrap();
        let now = humantime::parse_rfc3339("2029-12-31T12:00:00Z").unwrap();
        let judge = |version: &str, published: Option<SystemTime>| {
            policy.judge(Ecosystem::Npm, "x", version, published, now)
        };
        let package = PackageName::parse("x").unwrap();
        let url = Url::parse("https://registry.example/x").unwrap();
        let body = serde_json::to_vec(&document).unwrap();
        let rewritten = rewrite_packument(&body, &package, &url, REGISTRY, &judge).unwrap();
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        // 1.0.0 denied, 2.0.0 and the beta too young (2030), 2.2.0 without a publish time
        // (unknown_release_time = deny while the age rule is on).
        let shown: Vec<&String> = full["versions"].as_object().unwrap().keys().collect();
        assert_eq!(shown, ["1.1.0"]);
        let times: Vec<&String> = full["time"].as_object().unwrap().keys().collect();
        assert_eq!(times, ["created", "1.1.0"]);
        assert_eq!(
            full["dist-tags"],
            json!({"latest": "1.1.0", "beta": "1.1.0"})
        );
        let abbreviated: Value = serde_json::from_slice(&rewritten.abbreviated).unwrap();
        assert_eq!(abbreviated["versions"].as_object().unwrap().len(), 1);
        // Every tarball is still known, so that a request for a hidden one gets the reason.
        let planned: Vec<&str> = rewritten
            .tarballs
            .iter()
            .map(|t| t.version.as_str())
            .collect();
        assert_eq!(
            planned,
            ["1.0.0", "1.1.0", "2.0.0", "2.1.0-beta.1", "2.2.0"]
        );
        let matures = humantime::parse_rfc3339("2030-01-02T00:00:00Z").unwrap();
        assert_eq!(rewritten.hidden_until, Some(matures));
        assert_eq!(
            rewritten.tarballs[2].published,
            Some(humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap())
        );
    }

    #[test]
    fn versions_without_a_servable_tarball_are_dropped() {
        let document = json!({"name": "x", "dist-tags": {"latest": "2.0.0", "evil": "1.0.0"}, "versions": {
            "1.0.0": {"dist": {"tarball": "file:///etc/passwd"}},
            "1.0.5": {"dist": {"tarball": "gopher://127.0.0.1:70/x"}},
            "1.0.1": {"dist": {"tarball": "http://[::1"}},
            "1.0.2": {"dist": {"tarball": 7}},
            "1.0.3": {"dist": "nonsense"},
            "1.0.4": "nonsense",
            "a/b": {"dist": {"tarball": "https://registry.example/x/-/x-a.tgz"}},
            "2.0.0": {"dist": {"tarball": "https://registry.example/x/-/x-2.0.0.tgz"}},
        }});
        let rewritten = rewrite_json(document, "x").unwrap();
        assert_eq!(rewritten.tarballs.len(), 1);
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        let versions: Vec<&String> = full["versions"].as_object().unwrap().keys().collect();
        assert_eq!(versions, ["2.0.0"]);
        assert_eq!(full["dist-tags"], json!({"latest": "2.0.0"}));
        let abbreviated: Value = serde_json::from_slice(&rewritten.abbreviated).unwrap();
        assert_eq!(abbreviated["versions"].as_object().unwrap().len(), 1);
        for text in [&rewritten.full, &rewritten.abbreviated] {
            let text = String::from_utf8_lossy(text);
            assert!(
                !text.contains("file:") && !text.contains("gopher:"),
                "{text}"
            );
        }
    }

    #[test]
    fn attestations_other_than_http_are_dropped() {
        let version = |attestations: Value| json!({"dist": {"tarball": "https://registry.example/x/-/x-1.0.0.tgz", "attestations": attestations}});
        let remote = json!({"url": "https://registry.example/-/npm/v1/attestations/x@1.0.0", "provenance": {}});
        let document = json!({"name": "x", "versions": {
            "1.0.0": version(remote.clone()),
            "1.0.1": version(json!({"url": "file:///etc/passwd"})),
            "1.0.2": version(json!({"provenance": {}})),
        }});
        let rewritten = rewrite_json(document, "x").unwrap();
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        assert_eq!(full["versions"]["1.0.0"]["dist"]["attestations"], remote);
        for version in ["1.0.1", "1.0.2"] {
            let dist = full["versions"][version]["dist"].as_object().unwrap();
            assert!(!dist.contains_key("attestations"), "{version}: {dist:?}");
        }
    }

    #[test]
    fn build_metadata_never_shares_a_filename() {
        let dist = |file: &str| json!({"dist": {"tarball": format!("https://registry.example/x/-/{file}")}});
        let document = json!({"name": "x", "versions": {
            "1.0.0+b": dist("x-1.0.0+b.tgz"),
            "1.0.0": dist("x-1.0.0.tgz"),
            "2.0.0+a": dist("x-2.0.0+a.tgz"),
            "2.0.0+b": dist("x-2.0.0+b.tgz"),
        }});
        let rewritten = rewrite_json(document, "x").unwrap();
        let filenames: Vec<_> = rewritten
            .tarballs
            .iter()
            .map(|t| t.filename.as_str())
            .collect();
        assert_eq!(
            filenames,
            [
                "x-1.0.0+b.tgz",
                "x-1.0.0.tgz",
                "x-2.0.0.tgz",
                "x-2.0.0+b.tgz"
            ]
        );
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        assert_eq!(
            full["versions"]["1.0.0+b"]["dist"]["tarball"],
            json!("http://127.0.0.1:7878/npm/x/-/x-1.0.0%2Bb.tgz")
        );
    }

    #[test]
    fn registry_without_trailing_slash() {
        let document = json!({"name": "x", "versions": {
            "1.0.0": {"dist": {"tarball": "https://registry.example/x/-/x-1.0.0.tgz"}}}});
        let package = PackageName::parse("x").unwrap();
        let url = Url::parse("https://registry.example/x").unwrap();
        let body = serde_json::to_vec(&document).unwrap();
        let rewritten =
            rewrite_packument(&body, &package, &url, "http://h:1/npm", &serve_all).unwrap();
        let full: Value = serde_json::from_slice(&rewritten.full).unwrap();
        assert_eq!(
            full["versions"]["1.0.0"]["dist"]["tarball"],
            json!("http://h:1/npm/x/-/x-1.0.0.tgz")
        );
    }

    /// A packument of about 30 MB, in the shape of the largest real ones (brief section 5).
    fn large_packument(versions: usize) -> Vec<u8> {
        let mut entries = Map::new();
        for index in 0..versions {
            let version = format!("{}.{}.{}", index / 1000, (index / 10) % 100, index % 10);
            let mut dependencies = Map::new();
            for dependency in 0..20 {
                dependencies.insert(format!("dependency-{dependency}"), json!("^1.2.3"));
            }
            entries.insert(
                version.clone(),
                json!({
                    "name": "big", "version": version, "description": "x".repeat(2000),
                    "dependencies": dependencies, "scripts": {"test": "node test.js"},
                    "_id": format!("big@{version}"),
                    "dist": {
                        "integrity": "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==",
                        "shasum": "a9993e364706816aba3e25717850c26c9cd0d89d",
                        "tarball": format!("https://registry.example/big/-/big-{version}.tgz"),
                    },
                }),
            );
        }
        serde_json::to_vec(
            &json!({"name": "big", "dist-tags": {"latest": "1.0.0"}, "versions": entries}),
        )
        .unwrap()
    }

    /// Run with `cargo test --release -p pmcache-npm -- --ignored large` to check the budget.
    #[test]
    #[ignore = "timing: meaningful only in release builds"]
    #[allow(
        clippy::print_stderr,
        reason = "run by hand: shows the time against the budget even when it passes"
    )]
    fn large_packument_rewrites_quickly() {
        let body = large_packument(10_000);
        assert!(body.len() > 25_000_000, "{}", body.len());
        let package = PackageName::parse("big").unwrap();
        let url = Url::parse("https://registry.example/big").unwrap();
        let started = std::time::Instant::now();
        let rewritten = rewrite_packument(&body, &package, &url, REGISTRY, &serve_all).unwrap();
        let elapsed = started.elapsed();
        eprintln!("{} bytes rewritten in {elapsed:?}", body.len());
        assert_eq!(rewritten.tarballs.len(), 10_000);
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
    }

    #[test]
    fn many_versions_scale() {
        let rewritten = rewrite_json(
            serde_json::from_slice(&large_packument(2_000)).unwrap(),
            "big",
        )
        .unwrap();
        assert_eq!(rewritten.tarballs.len(), 2_000);
        assert!(rewritten.abbreviated.len() < rewritten.full.len() / 2);
    }
}
