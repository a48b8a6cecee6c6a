//! Scope-aware npm package names, and the request paths below `/npm` that carry them.
//!
//! Clients spell a scoped name three ways in URLs (`@scope%2fname`, `@scope%2Fname`,
//! `@scope/name`, brief section 3); all of them classify to one [`PackageName`], so the cache is
//! keyed by the decoded name whatever the client sent.

use std::fmt;

use crate::{Error, Result};
use pmcache_proxy::percent::decode_strict_utf8;

/// Longest name npm accepts, scope included (`validate-npm-package-name`).
const MAX_LEN: usize = 214;

/// A valid npm package name, `@scope/name` or `name`, case preserved.
///
/// Names are not lowercased: legacy packages have capitals and registry paths are
/// case-sensitive, so `JSONStream` and `jsonstream` are different packages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackageName {
    /// The decoded name, `@scope/name` or `name`.
    full: String,
    /// Byte offset of the `/` between scope and name, for scoped names.
    slash: Option<usize>,
}

impl PackageName {
    /// Parse the decoded form, `@scope/name` or `name`.
    ///
    /// Valid names are 1 to 214 characters in all; the name and the scope each are non-empty,
    /// hold only URL-safe characters (`A-Z a-z 0-9 - . _ ~`) and do not start with `.` or `_`.
    pub fn parse(raw: &str) -> Result<PackageName> {
        let slash = validate(raw).map_err(|reason| Error::InvalidName {
            name: raw.to_owned(),
            reason,
        })?;
        Ok(PackageName {
            full: raw.to_owned(),
            slash,
        })
    }

    /// The name as npm writes it: `@scope/name` or `name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The scope without its `@`, for scoped names.
    pub fn scope(&self) -> Option<&str> {
        self.slash.map(|slash| &self.full[1..slash])
    }

    /// The name without its scope; what conventional tarball filenames start with.
    pub fn bare(&self) -> &str {
        match self.slash {
            Some(slash) => &self.full[slash + 1..],
            None => &self.full,
        }
    }

    /// The name as npm puts it in packument URLs: only the scope's slash escaped
    /// (`@scope%2fname`, `npm-package-arg`'s `escapedName`).
    pub fn escaped(&self) -> String {
        match self.slash {
            Some(slash) => format!("{}%2f{}", &self.full[..slash], self.bare()),
            None => self.full.clone(),
        }
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Checks a whole name; returns the offset of the scope's slash.
fn validate(raw: &str) -> Result<Option<usize>, &'static str> {
    if raw.is_empty() {
        return Err("is empty");
    }
    if raw.len() > MAX_LEN {
        return Err("is longer than 214 characters");
    }
    let Some(scoped) = raw.strip_prefix('@') else {
        validate_part(raw)?;
        // `/-/…` is the registry's API: the tarballs of a package named `-` could not be told
        // from API paths, so such a package can never be served.
        if raw == "-" {
            return Err("is '-', the registry's API namespace");
        }
        return Ok(None);
    };
    let (scope, bare) = scoped
        .split_once('/')
        .ok_or("has a scope but no '/name' after it")?;
    validate_part(scope)?;
    validate_part(bare)?;
    Ok(Some(1 + scope.len()))
}

/// Checks a scope or an unscoped name.
fn validate_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("has an empty scope or name");
    }
    if !part.bytes().all(is_unreserved) {
        return Err("may hold only ASCII letters, digits, '-', '.', '_' and '~' (and '@scope/')");
    }
    if part.starts_with(['.', '_']) {
        return Err("may not start with '.' or '_'");
    }
    Ok(())
}

/// RFC 3986 unreserved characters: the ones npm names may hold, and the ones pmcache leaves
/// unescaped in URLs it writes.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What a request path below the mount point (`/npm`) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NpmPath {
    /// `/name`, `/@scope%2fname`, `/@scope%2Fname`, `/@scope/name`.
    Packument(PackageName),
    /// `/name/-/name-1.0.0.tgz`, `/@scope/name/-/name-1.0.0.tgz`,
    /// `/@scope%2fname/-/name-1.0.0.tgz`; `filename` is percent-decoded.
    Tarball {
        /// The package the tarball belongs to.
        package: PackageName,
        /// The tarball's file name, e.g. `name-1.0.0.tgz`.
        filename: String,
    },
    /// `/name/1.0.0`, `/@scope/name/latest`: a version or dist-tag, percent-decoded.
    Version {
        /// The package asked about.
        package: PackageName,
        /// The version or dist-tag, e.g. `1.0.0` or `latest`.
        version: String,
    },
    /// Anything starting with `/-/` (`/-/v1/search`, `/-/ping`), kept as sent.
    Api(String),
}

/// Most segments a non-API path can have: `@scope`, `name`, `-`, `file.tgz`.
const MAX_SEGMENTS: usize = 4;

/// Classify a request path below the mount point (`/lodash`, no query string), percent-decoding
/// each segment exactly once.
///
/// Refuses ([`Error::BadPath`]) paths with empty or dot segments, backslashes, control
/// characters (NUL included), malformed escapes, or a shape that is no registry route; a
/// name that cannot be a package is [`Error::InvalidName`].
pub fn classify(path: &str) -> Result<NpmPath> {
    let bad = |reason| Error::BadPath {
        path: path.to_owned(),
        reason,
    };
    let below = path
        .strip_prefix('/')
        .ok_or_else(|| bad("must start with '/'"))?;
    if below.starts_with("-/") {
        check_api(below).map_err(bad)?;
        return Ok(NpmPath::Api(path.to_owned()));
    }
    let mut segments = Vec::with_capacity(MAX_SEGMENTS);
    for raw in below.split('/') {
        if segments.len() == MAX_SEGMENTS {
            return Err(bad("has too many segments for a registry route"));
        }
        segments.push(decode_segment(raw).map_err(bad)?);
    }
    let (name, rest) = split_name(segments);
    let package = PackageName::parse(&name)?;
    route(package, rest).map_err(bad)
}

/// Splits decoded segments into the package name and what follows it. A scoped name is one
/// segment when the client escaped its slash and two when it did not.
fn split_name(segments: Vec<String>) -> (String, Vec<String>) {
    let mut segments = segments.into_iter();
    let first = segments.next().unwrap_or_default();
    if first.starts_with('@')
        && !first.contains('/')
        && let Some(bare) = segments.next()
    {
        return (format!("{first}/{bare}"), segments.collect());
    }
    (first, segments.collect())
}

/// What the segments after the package name ask for.
fn route(package: PackageName, rest: Vec<String>) -> Result<NpmPath, &'static str> {
    let mut rest = rest.into_iter();
    match (rest.next(), rest.next(), rest.next()) {
        (None, _, _) => Ok(NpmPath::Packument(package)),
        (Some(dash), Some(filename), None) if dash == "-" => {
            check_tarball_filename(&filename)?;
            Ok(NpmPath::Tarball { package, filename })
        }
        (Some(version), None, _) if version != "-" && !version.contains('/') => {
            Ok(NpmPath::Version { package, version })
        }
        _ => Err("is no packument, tarball or version path"),
    }
}

fn check_tarball_filename(filename: &str) -> Result<(), &'static str> {
    if filename.contains('/') {
        return Err("tarball filename contains '/'");
    }
    match filename.strip_suffix(".tgz") {
        Some(stem) if !stem.is_empty() => Ok(()),
        _ => Err("tarball filename must end in '.tgz'"),
    }
}

/// API paths are passed on as sent, so only refuse what could escape the registry's `/-/`
/// tree once a URL parser resolves it (`%2e%2e` counts as `..` there).
fn check_api(below: &str) -> Result<(), &'static str> {
    for raw in below.split('/') {
        let decoded =
            decode_strict_utf8(raw).ok_or("has a malformed percent-escape or non-UTF-8")?;
        check_decoded(&decoded)?;
    }
    Ok(())
}

/// One non-API segment, decoded and checked.
fn decode_segment(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("has an empty segment");
    }
    let decoded = decode_strict_utf8(raw).ok_or("has a malformed percent-escape or non-UTF-8")?;
    check_decoded(&decoded)?;
    Ok(decoded)
}

fn check_decoded(decoded: &str) -> Result<(), &'static str> {
    if decoded == "." || decoded == ".." {
        return Err("has a '.' or '..' segment");
    }
    if decoded.contains('\\') {
        return Err("contains a backslash");
    }
    if decoded.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    Ok(())
}

/// Escapes every byte outside the unreserved set, so the segment survives [`classify`]'s
/// single decode unchanged.
pub(crate) fn percent_encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, RESERVED).to_string()
}

/// Every byte but the unreserved ones (RFC 3986 section 2.3), which [`is_unreserved`] admits.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> PackageName {
        PackageName::parse(raw).unwrap()
    }

    fn invalid_reason(raw: &str) -> &'static str {
        match PackageName::parse(raw) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{raw:?} parsed as {other:?}"),
        }
    }

    fn bad_reason(path: &str) -> &'static str {
        match classify(path) {
            Err(Error::BadPath { reason, .. }) => reason,
            other => panic!("{path:?} classified as {other:?}"),
        }
    }

    #[test]
    fn unscoped_names() {
        let lodash = name("lodash");
        assert_eq!(lodash.as_str(), "lodash");
        assert_eq!(lodash.scope(), None);
        assert_eq!(lodash.bare(), "lodash");
        assert_eq!(lodash.escaped(), "lodash");
        assert_eq!(lodash.to_string(), "lodash");
        assert_eq!(name("lodash.merge").as_str(), "lodash.merge");
        assert_eq!(name("a~b-c_d").as_str(), "a~b-c_d");
    }

    #[test]
    fn scoped_names() {
        let types = name("@types/node");
        assert_eq!(types.as_str(), "@types/node");
        assert_eq!(types.scope(), Some("types"));
        assert_eq!(types.bare(), "node");
        assert_eq!(types.escaped(), "@types%2fnode");
        assert_eq!(types.to_string(), "@types/node");
    }

    #[test]
    fn capitals_are_kept() {
        assert_eq!(name("JSONStream").as_str(), "JSONStream");
        assert_ne!(name("JSONStream"), name("jsonstream"));
        assert_eq!(name("@Scope/Name").bare(), "Name");
    }

    #[test]
    fn invalid_names() {
        assert_eq!(invalid_reason(""), "is empty");
        assert_eq!(
            invalid_reason(&"a".repeat(215)),
            "is longer than 214 characters"
        );
        assert!(PackageName::parse(&"a".repeat(214)).is_ok());
        assert_eq!(invalid_reason(".hidden"), "may not start with '.' or '_'");
        assert_eq!(invalid_reason("_private"), "may not start with '.' or '_'");
        assert_eq!(invalid_reason("@_scope/x"), "may not start with '.' or '_'");
        assert_eq!(invalid_reason("@scope/.x"), "may not start with '.' or '_'");
        assert_eq!(invalid_reason(".."), "may not start with '.' or '_'");
        assert_eq!(
            invalid_reason("@scope"),
            "has a scope but no '/name' after it"
        );
        assert_eq!(invalid_reason("@/name"), "has an empty scope or name");
        assert_eq!(invalid_reason("@scope/"), "has an empty scope or name");
        // Found by the `names` fuzz target: `/-/-/--1.0.0.tgz` classified as an API path.
        assert_eq!(invalid_reason("-"), "is '-', the registry's API namespace");
        assert!(PackageName::parse("@-/-").is_ok());
        assert!(PackageName::parse("-a").is_ok());
        for raw in [
            "a/b", "@a/b/c", "sp ace", "ü", "a%2fb", "a+b", "a\0b", "a\\b", "@a@b/c",
        ] {
            assert!(PackageName::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn packuments_in_every_scope_spelling() {
        let scoped = NpmPath::Packument(name("@demo/scoped"));
        assert_eq!(classify("/@demo%2fscoped").unwrap(), scoped);
        assert_eq!(classify("/@demo%2Fscoped").unwrap(), scoped);
        assert_eq!(classify("/@demo/scoped").unwrap(), scoped);
        assert_eq!(classify("/%40demo%2fscoped").unwrap(), scoped);
        assert_eq!(
            classify("/left-pad").unwrap(),
            NpmPath::Packument(name("left-pad"))
        );
        assert_eq!(
            classify("/JSONStream").unwrap(),
            NpmPath::Packument(name("JSONStream"))
        );
    }

    #[test]
    fn tarballs() {
        let tarball = |package: &str, filename: &str| NpmPath::Tarball {
            package: name(package),
            filename: filename.to_owned(),
        };
        assert_eq!(
            classify("/left-pad/-/left-pad-1.3.0.tgz").unwrap(),
            tarball("left-pad", "left-pad-1.3.0.tgz")
        );
        for path in [
            "/@demo/scoped/-/scoped-1.0.0.tgz",
            "/@demo%2fscoped/-/scoped-1.0.0.tgz",
            "/@demo%2Fscoped/-/scoped-1.0.0.tgz",
        ] {
            assert_eq!(
                classify(path).unwrap(),
                tarball("@demo/scoped", "scoped-1.0.0.tgz"),
                "{path}"
            );
        }
        assert_eq!(
            classify("/x/-/x-1.0.0%2Bbuild.5.tgz").unwrap(),
            tarball("x", "x-1.0.0+build.5.tgz")
        );
        assert_eq!(
            bad_reason("/x/-/x-1.0.0.zip"),
            "tarball filename must end in '.tgz'"
        );
        assert_eq!(
            bad_reason("/x/-/.tgz"),
            "tarball filename must end in '.tgz'"
        );
        assert_eq!(
            bad_reason("/x/-/a%2fb.tgz"),
            "tarball filename contains '/'"
        );
        assert_eq!(
            bad_reason("/x/-/x.tgz/more"),
            "is no packument, tarball or version path"
        );
        assert_eq!(
            bad_reason("/@a/b/-/b.tgz/more"),
            "has too many segments for a registry route"
        );
    }

    #[test]
    fn version_documents() {
        assert_eq!(
            classify("/left-pad/1.3.0").unwrap(),
            NpmPath::Version {
                package: name("left-pad"),
                version: "1.3.0".to_owned()
            }
        );
        for path in ["/@demo/scoped/latest", "/@demo%2fscoped/latest"] {
            assert_eq!(
                classify(path).unwrap(),
                NpmPath::Version {
                    package: name("@demo/scoped"),
                    version: "latest".to_owned()
                },
                "{path}"
            );
        }
        assert_eq!(
            bad_reason("/x/-"),
            "is no packument, tarball or version path"
        );
        assert_eq!(
            bad_reason("/x/a%2fb"),
            "is no packument, tarball or version path"
        );
    }

    #[test]
    fn api_paths_are_kept_raw() {
        for path in [
            "/-/v1/search",
            "/-/ping",
            "/-/package/@demo%2fscoped/dist-tags",
            "/-/npm/v1/security/advisories/bulk",
            "/-/",
        ] {
            assert_eq!(classify(path).unwrap(), NpmPath::Api(path.to_owned()));
        }
        assert_eq!(bad_reason("/-/../secret"), "has a '.' or '..' segment");
        assert_eq!(bad_reason("/-/%2e%2E/secret"), "has a '.' or '..' segment");
        assert_eq!(bad_reason("/-/a%00b"), "contains a control character");
        assert_eq!(bad_reason("/-/a\\b"), "contains a backslash");
    }

    #[test]
    fn traversal_and_garbage_are_refused() {
        assert_eq!(bad_reason(""), "must start with '/'");
        assert_eq!(bad_reason("lodash"), "must start with '/'");
        assert_eq!(bad_reason("/"), "has an empty segment");
        assert_eq!(bad_reason("//lodash"), "has an empty segment");
        assert_eq!(bad_reason("/lodash/"), "has an empty segment");
        assert_eq!(bad_reason("/.."), "has a '.' or '..' segment");
        assert_eq!(bad_reason("/%2e%2e"), "has a '.' or '..' segment");
        assert_eq!(bad_reason("/x/.."), "has a '.' or '..' segment");
        assert_eq!(
            bad_reason("/x/-/..%2f..%2fetc.tgz"),
            "tarball filename contains '/'"
        );
        assert_eq!(bad_reason("/x/-/a%5cb.tgz"), "contains a backslash");
        assert_eq!(bad_reason("/x\\y"), "contains a backslash");
        assert_eq!(bad_reason("/x%00"), "contains a control character");
        assert_eq!(bad_reason("/x\0"), "contains a control character");
        assert_eq!(
            bad_reason("/x%2"),
            "has a malformed percent-escape or non-UTF-8"
        );
        assert_eq!(
            bad_reason("/x%zz"),
            "has a malformed percent-escape or non-UTF-8"
        );
        assert_eq!(
            bad_reason("/x%ff"),
            "has a malformed percent-escape or non-UTF-8"
        );
        // Decoded exactly once: a double-escaped slash stays a literal "%2f" and is no name.
        assert!(matches!(
            classify("/@demo%252fscoped"),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(classify("/a%2fb"), Err(Error::InvalidName { .. })));
        assert!(matches!(classify("/@demo"), Err(Error::InvalidName { .. })));
        assert!(matches!(
            classify("/.hidden"),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn encoding_round_trips_through_classify() {
        assert_eq!(percent_encode_segment("x-1.0.0+b.tgz"), "x-1.0.0%2Bb.tgz");
        assert_eq!(percent_encode_segment("ü"), "%C3%BC");
        assert_eq!(decode_strict_utf8("%C3%BC%2b").unwrap(), "ü+");
    }
}
