//! The four ecosystems a policy speaks of, and how each spells the same package name and version
//! in different ways (PEP 503, npm's case-sensitive names, gem names, Composer's lowercase
//! `vendor/name`).

use std::fmt;
use std::str::FromStr;

/// An ecosystem pmcache serves. Its [`as_str`](Ecosystem::as_str) is the frontend's config
/// section, mount and metric label (`pypi`), as pmcache-proxy's `&'static str` ecosystem keys
/// already are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    /// The PyPI simple API.
    Pypi,
    /// The npm registry.
    Npm,
    /// A gem server.
    Rubygems,
    /// A Composer repository.
    Packagist,
}

/// The one error [`Ecosystem::from_str`] gives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ecosystem: write pypi, npm, rubygems or packagist")]
pub struct UnknownEcosystem(pub String);

impl Ecosystem {
    /// Every ecosystem, in the order pmcache lists them.
    pub const ALL: [Ecosystem; 4] = [
        Ecosystem::Pypi,
        Ecosystem::Npm,
        Ecosystem::Rubygems,
        Ecosystem::Packagist,
    ];

    /// `pypi`, `npm`, `rubygems` or `packagist`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Rubygems => "rubygems",
            Ecosystem::Packagist => "packagist",
        }
    }

    /// `name` in the one spelling this ecosystem gives every spelling of the same package, so
    /// that a rule written one way matches a request spelled another:
    ///
    /// - PyPI: PEP 503, lowercase with every run of `-`, `_` and `.` one `-` (`Foo_Bar` and
    ///   `foo.bar` are `foo-bar`);
    /// - npm: unchanged. The registry serves names case-sensitively (a few old packages have
    ///   capitals, and differ from their lowercase namesakes), and refuses new names with
    ///   capitals, so `@Acme/x` is not `@acme/x`. The frontend hands in the decoded name
    ///   (`@scope/name`, not `@scope%2fname`);
    /// - RubyGems: unchanged: gem names are case-sensitive (`/info/Rails` is not `/info/rails`);
    /// - Packagist: lowercase, as Composer lowercases every `vendor/name`.
    ///
    /// `*` passes through unchanged, so that patterns normalise the same way as names.
    pub fn normalize_name(self, name: &str) -> String {
        match self {
            Ecosystem::Pypi => pep503(name),
            Ecosystem::Npm | Ecosystem::Rubygems => name.to_owned(),
            Ecosystem::Packagist => name.to_ascii_lowercase(),
        }
    }

    /// `version` in the spelling rules compare: PEP 440 versions are case-insensitive
    /// (`1.0RC1` is `1.0rc1`), and Composer tags often carry a `v` that its own comparisons drop
    /// (`v1.2.0` is `1.2.0`). npm and gem versions compare as written. Other PEP 440 spellings
    /// of one version (`1.0` and `1.0.0`) stay distinct: rules name the version as published.
    pub fn normalize_version(self, version: &str) -> String {
        match self {
            Ecosystem::Pypi => version.to_ascii_lowercase(),
            Ecosystem::Packagist => {
                let bytes = version.as_bytes();
                match bytes {
                    [b'v' | b'V', digit, ..] if digit.is_ascii_digit() => version[1..].to_owned(),
                    _ => version.to_owned(),
                }
            }
            Ecosystem::Npm | Ecosystem::Rubygems => version.to_owned(),
        }
    }
}

impl FromStr for Ecosystem {
    type Err = UnknownEcosystem;

    fn from_str(text: &str) -> Result<Ecosystem, UnknownEcosystem> {
        Ecosystem::ALL
            .into_iter()
            .find(|ecosystem| ecosystem.as_str() == text)
            .ok_or_else(|| UnknownEcosystem(text.to_owned()))
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `re.sub(r"[-_.]+", "-", name).lower()` (PEP 503).
fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut after_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            after_separator = true;
            continue;
        }
        if after_separator {
            out.push('-');
            after_separator = false;
        }
        out.extend(c.to_lowercase());
    }
    if after_separator {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecosystems_parse_from_their_keys_only() {
        for ecosystem in Ecosystem::ALL {
            assert_eq!(ecosystem.as_str().parse(), Ok(ecosystem));
            assert_eq!(ecosystem.to_string(), ecosystem.as_str());
        }
        assert_eq!(
            "PyPI".parse::<Ecosystem>().unwrap_err().to_string(),
            "\"PyPI\" is not an ecosystem: write pypi, npm, rubygems or packagist"
        );
        assert!("crates".parse::<Ecosystem>().is_err());
        assert!("".parse::<Ecosystem>().is_err());
    }

    #[test]
    fn pypi_names_follow_pep_503() {
        for (spelling, normal) in [
            ("Foo_Bar", "foo-bar"),
            ("foo.bar", "foo-bar"),
            ("FOO-._-bar", "foo-bar"),
            ("Zope.Interface", "zope-interface"),
            ("acme_*", "acme-*"),
            ("a-", "a-"),
            ("_a", "-a"),
            ("simple", "simple"),
        ] {
            assert_eq!(
                Ecosystem::Pypi.normalize_name(spelling),
                normal,
                "{spelling}"
            );
        }
    }

    #[test]
    fn npm_and_gem_names_stay_as_written_and_composer_names_are_lowercased() {
        assert_eq!(Ecosystem::Npm.normalize_name("JSONStream"), "JSONStream");
        assert_eq!(
            Ecosystem::Npm.normalize_name("@acme/Tool_x"),
            "@acme/Tool_x"
        );
        assert_eq!(Ecosystem::Rubygems.normalize_name("Rails_x"), "Rails_x");
        assert_eq!(
            Ecosystem::Packagist.normalize_name("Acme/Tool-X"),
            "acme/tool-x"
        );
    }

    #[test]
    fn versions_normalise_only_where_the_ecosystem_equates_spellings() {
        assert_eq!(Ecosystem::Pypi.normalize_version("1.0RC1"), "1.0rc1");
        assert_eq!(Ecosystem::Packagist.normalize_version("v1.2.0"), "1.2.0");
        assert_eq!(Ecosystem::Packagist.normalize_version("V2"), "2");
        assert_eq!(
            Ecosystem::Packagist.normalize_version("dev-main"),
            "dev-main"
        );
        assert_eq!(Ecosystem::Packagist.normalize_version("v"), "v");
        assert_eq!(Ecosystem::Npm.normalize_version("1.0.0-RC.1"), "1.0.0-RC.1");
        assert_eq!(
            Ecosystem::Rubygems.normalize_version("1.0.0.Pre"),
            "1.0.0.Pre"
        );
    }
}
