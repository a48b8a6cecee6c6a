//! What a path below `/rubygems` asks for.

use crate::error::{Error, Result};
use crate::name::{FullName, GemName};

/// The legacy (pre-compact-index) indexes: gzip of a Marshal array, rewritten upstream on every
/// push.
pub const LEGACY_INDEXES: [&str; 3] = [
    "specs.4.8.gz",
    "latest_specs.4.8.gz",
    "prerelease_specs.4.8.gz",
];

/// A gem server route.
#[derive(Debug, PartialEq, Eq)]
pub enum GemsPath {
    /// `/`: probed (HEAD) by RubyGems before 3.5.19 to decide whether the compact index exists.
    Root,
    /// `/versions`: every gem's versions and current info MD5.
    Versions,
    /// `/names`: every gem name.
    Names,
    /// `/info/NAME`: one gem's versions, dependencies and `.gem` checksums.
    Info(GemName),
    /// `/gems/FULL.gem` (or `/downloads/FULL.gem`).
    Gem(FullName),
    /// `/quick/Marshal.4.8/FULL.gemspec.rz`.
    Gemspec(FullName),
    /// One of [`LEGACY_INDEXES`].
    LegacyIndex(&'static str),
    /// `/api/v1/dependencies[.json]`.
    Dependencies,
}

/// Classifies `path`, the request path below the mount point (`""`, `/versions`, …).
pub fn classify(path: &str) -> Result<GemsPath> {
    let no_route = || Error::NoRoute {
        path: path.to_owned(),
    };
    let Some(rest) = path.strip_prefix('/') else {
        return if path.is_empty() {
            Ok(GemsPath::Root)
        } else {
            Err(no_route())
        };
    };
    if let Some(index) = LEGACY_INDEXES.into_iter().find(|index| *index == rest) {
        return Ok(GemsPath::LegacyIndex(index));
    }
    match rest {
        "" => return Ok(GemsPath::Root),
        "versions" => return Ok(GemsPath::Versions),
        "names" => return Ok(GemsPath::Names),
        "api/v1/dependencies" | "api/v1/dependencies.json" => return Ok(GemsPath::Dependencies),
        _ => {}
    }
    if let Some(name) = rest.strip_prefix("info/") {
        return Ok(GemsPath::Info(GemName::parse(name)?));
    }
    let gem_file = rest
        .strip_prefix("gems/")
        .or_else(|| rest.strip_prefix("downloads/"))
        .and_then(|file| file.strip_suffix(".gem"));
    if let Some(full) = gem_file {
        return Ok(GemsPath::Gem(FullName::parse(full)?));
    }
    let gemspec = rest
        .strip_prefix("quick/Marshal.4.8/")
        .and_then(|file| file.strip_suffix(".gemspec.rz"));
    if let Some(full) = gemspec {
        return Ok(GemsPath::Gemspec(FullName::parse(full)?));
    }
    Err(no_route())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised() {
        assert_eq!(classify("").unwrap(), GemsPath::Root);
        assert_eq!(classify("/").unwrap(), GemsPath::Root);
        assert_eq!(classify("/versions").unwrap(), GemsPath::Versions);
        assert_eq!(classify("/names").unwrap(), GemsPath::Names);
        assert_eq!(
            classify("/info/proxfix-base").unwrap(),
            GemsPath::Info(GemName::parse("proxfix-base").unwrap())
        );
        assert_eq!(
            classify("/gems/proxfix-base-1.1.0.gem").unwrap(),
            GemsPath::Gem(FullName::parse("proxfix-base-1.1.0").unwrap())
        );
        assert_eq!(
            classify("/downloads/a-1.0.gem").unwrap(),
            GemsPath::Gem(FullName::parse("a-1.0").unwrap())
        );
        assert_eq!(
            classify("/quick/Marshal.4.8/a-1.0-java.gemspec.rz").unwrap(),
            GemsPath::Gemspec(FullName::parse("a-1.0-java").unwrap())
        );
        assert_eq!(
            classify("/specs.4.8.gz").unwrap(),
            GemsPath::LegacyIndex("specs.4.8.gz")
        );
        assert_eq!(
            classify("/api/v1/dependencies").unwrap(),
            GemsPath::Dependencies
        );
    }

    #[test]
    fn escapes_and_unknown_paths_are_refused() {
        for (path, status) in [
            ("/info/..", 400),
            ("/info/a/b", 400),
            ("/info/%2e%2e", 400),
            ("/gems/../versions.gem", 400),
            ("/gems/a\\b-1.0.gem", 400),
            ("/info/", 400),
            ("/specs.4.8", 404),
            ("/api/v1/gems", 404),
            ("/quick/Marshal.4.8/", 404),
            ("x", 404),
        ] {
            let error = classify(path).unwrap_err();
            assert_eq!(error.status().as_u16(), status, "{path}: {error}");
        }
    }
}
