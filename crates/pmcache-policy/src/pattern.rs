//! Patterns that name packages in a policy: `ecosystem:name` or `ecosystem:name@version`, with
//! `*` in the name matching any run of characters and the version exact or `*`.

use std::fmt;

use crate::Ecosystem;

/// Why a pattern was refused: one line a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a pattern: {why}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub why: String,
}

/// Which versions a pattern names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versions {
    /// No version, or `@*`: every version (the whole package).
    Any,
    /// One version, normalised the ecosystem's way.
    Exact(String),
}

/// A parsed pattern: an ecosystem, a name glob normalised the ecosystem's way, and versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    written: String,
    ecosystem: Ecosystem,
    name: String,
    versions: Versions,
}

impl Pattern {
    /// Parses `ecosystem:name[@version]`. `section` is the ecosystem of a per-ecosystem section
    /// (`[npm.policy]`, a `[[routes]]` entry): there the `ecosystem:` prefix may be left out, and
    /// must not name another ecosystem. An npm scope's leading `@` is part of the name
    /// (`npm:@acme/tool@1.0.0`).
    pub fn parse(text: &str, section: Option<Ecosystem>) -> Result<Pattern, PatternError> {
        let refuse = |why: String| PatternError {
            pattern: text.to_owned(),
            why,
        };
        let (ecosystem, rest) = split_ecosystem(text, section).map_err(refuse)?;
        let (name, version) = split_version(rest);
        check_name(ecosystem, name).map_err(refuse)?;
        let versions = match version {
            None | Some("*") => Versions::Any,
            Some("") => return Err(refuse("the version after '@' is empty".to_owned())),
            Some(version) if version.contains('*') => {
                return Err(refuse(
                    "a version is exact or *, it takes no glob".to_owned(),
                ));
            }
            Some(version) if !is_plain(version) || version.contains('@') => {
                return Err(refuse(
                    "the version holds a space, a control character or '@'".to_owned(),
                ));
            }
            Some(version) => Versions::Exact(ecosystem.normalize_version(version)),
        };
        Ok(Pattern {
            written: text.to_owned(),
            ecosystem,
            name: ecosystem.normalize_name(name),
            versions,
        })
    }

    /// Like [`parse`](Pattern::parse), for the settings that take names only
    /// (`min_release_age_exclude`, routes' `names`): a version, even `@*`, is refused.
    pub fn parse_name(text: &str, section: Option<Ecosystem>) -> Result<Pattern, PatternError> {
        let pattern = Pattern::parse(text, section)?;
        let rest = text.split_once(':').map_or(text, |(_, rest)| rest);
        match split_version(rest).1 {
            Some(_) => Err(PatternError {
                pattern: text.to_owned(),
                why: "this setting takes names only, without @version".to_owned(),
            }),
            None => Ok(pattern),
        }
    }

    /// The ecosystem the pattern names.
    pub fn ecosystem(&self) -> Ecosystem {
        self.ecosystem
    }

    /// The versions the pattern names.
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Whether the pattern names the package `name` of `ecosystem`, in any spelling the
    /// ecosystem treats as the same name.
    pub fn matches_name(&self, ecosystem: Ecosystem, name: &str) -> bool {
        self.ecosystem == ecosystem && glob(&self.name, &ecosystem.normalize_name(name))
    }

    /// Whether the pattern names `version` of the package `name`.
    pub fn matches(&self, ecosystem: Ecosystem, name: &str, version: &str) -> bool {
        self.ecosystem == ecosystem
            && self.matches_normal(
                &ecosystem.normalize_name(name),
                Some(&ecosystem.normalize_version(version)),
            )
    }

    /// [`matches`](Pattern::matches) for a name and version already normalised the pattern's
    /// ecosystem's way; without a version, whether it names the package at all.
    pub(crate) fn matches_normal(&self, name: &str, version: Option<&str>) -> bool {
        glob(&self.name, name)
            && match (&self.versions, version) {
                (Versions::Any, _) | (Versions::Exact(_), None) => true,
                (Versions::Exact(exact), Some(version)) => exact == version,
            }
    }

    /// Whether the pattern names every version of the packages it matches.
    pub fn is_whole_package(&self) -> bool {
        self.versions == Versions::Any
    }
}

/// The pattern as written in the configuration.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// The ecosystem a pattern names and the rest of it.
fn split_ecosystem(text: &str, section: Option<Ecosystem>) -> Result<(Ecosystem, &str), String> {
    let Some((prefix, rest)) = text.split_once(':') else {
        return section.map(|ecosystem| (ecosystem, text)).ok_or_else(|| {
            "it names no ecosystem: start it with pypi:, npm:, rubygems: or packagist:".to_owned()
        });
    };
    // No package name of the four ecosystems holds a ':', so whatever precedes one must be an
    // ecosystem.
    let named: Ecosystem = prefix.parse().map_err(|error| format!("{error}"))?;
    match section {
        Some(section) if section != named => Err(format!(
            "it names {named} in a setting of the {section} ecosystem"
        )),
        _ => Ok((named, rest)),
    }
}

/// The name and the version after the `@` that is not a scope's leading one.
fn split_version(rest: &str) -> (&str, Option<&str>) {
    let skip = usize::from(rest.starts_with('@'));
    match rest[skip..].find('@') {
        Some(at) => (&rest[..skip + at], Some(&rest[skip + at + 1..])),
        None => (rest, None),
    }
}

/// No space or control character: such a pattern is a typo that would match nothing.
fn is_plain(text: &str) -> bool {
    !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Refuses names no package of `ecosystem` can have, unless a glob could stand for the part
/// that makes them so.
fn check_name(ecosystem: Ecosystem, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if !is_plain(name) {
        return Err("the name holds a space or control character".to_owned());
    }
    if name.contains('@') && !(ecosystem == Ecosystem::Npm && name.starts_with('@')) {
        return Err("'@' may only start an npm scope or precede the version".to_owned());
    }
    let slashes = name.matches('/').count();
    match ecosystem {
        Ecosystem::Pypi | Ecosystem::Rubygems if slashes > 0 => {
            Err(format!("{ecosystem} names hold no '/'"))
        }
        Ecosystem::Npm if name.starts_with('@') && !name.contains('*') => {
            match name[1..].split_once('/') {
                Some((scope, bare)) if !scope.is_empty() && !bare.is_empty() && slashes == 1 => {
                    Ok(())
                }
                _ => Err("a scoped npm name is @scope/name".to_owned()),
            }
        }
        Ecosystem::Npm if slashes > 0 && !name.starts_with('@') => {
            Err("only a scoped npm name (@scope/name) holds a '/'".to_owned())
        }
        Ecosystem::Packagist if !name.contains('*') => match name.split_once('/') {
            Some((vendor, package))
                if !vendor.is_empty() && !package.is_empty() && slashes == 1 =>
            {
                Ok(())
            }
            _ => Err("a Composer name is vendor/name".to_owned()),
        },
        _ => Ok(()),
    }
}

/// Whether `text` matches `glob`, where `*` matches any run of characters (`/` included) and
/// everything else itself. Linear backtracking: a later `*` only ever needs the latest one
/// retried.
fn glob(glob: &str, text: &str) -> bool {
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    // The position after the last `*` seen, and where in `text` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g + 1, t));
                g += 1;
            }
            Some(&c) if c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((after, run_end)) => {
                    star = Some((after, run_end + 1));
                    g = after;
                    t = run_end + 1;
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text, None).unwrap()
    }

    fn refusal(text: &str, section: Option<Ecosystem>) -> String {
        Pattern::parse(text, section).unwrap_err().to_string()
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        for (glob_text, text, wanted) in [
            ("*", "", true),
            ("*", "anything/at all", true),
            ("acme-*", "acme-", true),
            ("acme-*", "acme-tool", true),
            ("acme-*", "acme", false),
            ("acme-*", "xacme-tool", false),
            ("*-tool", "acme-tool", true),
            ("*-tool", "acme-tools", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-c-d", false),
            ("a**b", "ab", true),
            ("@acme/*", "@acme/x", true),
            ("@acme/*", "@acme-evil/x", false),
            ("ab", "abc", false),
            ("abc", "ab", false),
            ("*a", "baaa", true),
        ] {
            assert_eq!(glob(glob_text, text), wanted, "{glob_text} ~ {text}");
        }
    }

    #[test]
    fn names_match_in_every_spelling_of_their_ecosystem() {
        assert!(pattern("pypi:Foo_Bar").matches_name(Ecosystem::Pypi, "foo-bar"));
        assert!(pattern("pypi:foo-bar").matches_name(Ecosystem::Pypi, "FOO.bar"));
        assert!(pattern("pypi:acme_*").matches_name(Ecosystem::Pypi, "Acme.Tool"));
        assert!(pattern("packagist:Acme/Tool").matches_name(Ecosystem::Packagist, "acme/tool"));
        assert!(pattern("packagist:acme/*").matches_name(Ecosystem::Packagist, "ACME/x"));
        assert!(pattern("npm:@acme/*").matches_name(Ecosystem::Npm, "@acme/tool"));
        assert!(!pattern("npm:jsonstream").matches_name(Ecosystem::Npm, "JSONStream"));
        assert!(!pattern("rubygems:rails").matches_name(Ecosystem::Rubygems, "Rails"));
        // Another ecosystem's package of the same name is another package.
        assert!(!pattern("pypi:ctx").matches_name(Ecosystem::Npm, "ctx"));
    }

    #[test]
    fn versions_are_exact_or_any() {
        let exact = pattern("npm:@acme/tool@1.0.0");
        assert_eq!(exact.versions(), &Versions::Exact("1.0.0".to_owned()));
        assert!(exact.matches(Ecosystem::Npm, "@acme/tool", "1.0.0"));
        assert!(!exact.matches(Ecosystem::Npm, "@acme/tool", "1.0.1"));
        assert!(!exact.is_whole_package());
        for whole in [
            "npm:@acme/tool",
            "npm:@acme/tool@*",
            "packagist:acme/tool@*",
        ] {
            assert!(pattern(whole).is_whole_package(), "{whole}");
        }
        assert!(pattern("pypi:Django@4.2RC1").matches(Ecosystem::Pypi, "django", "4.2rc1"));
        assert!(pattern("packagist:acme/tool@1.2.0").matches(
            Ecosystem::Packagist,
            "acme/tool",
            "v1.2.0"
        ));
        assert!(pattern("rubygems:rest-client@1.6.13").matches(
            Ecosystem::Rubygems,
            "rest-client",
            "1.6.13"
        ));
    }

    #[test]
    fn a_section_supplies_its_ecosystem_and_refuses_others() {
        let npm = Some(Ecosystem::Npm);
        assert_eq!(
            Pattern::parse("@acme/*", npm).unwrap().ecosystem(),
            Ecosystem::Npm
        );
        assert_eq!(
            Pattern::parse("npm:left-pad@1.0.0", npm)
                .unwrap()
                .ecosystem(),
            Ecosystem::Npm
        );
        assert_eq!(
            refusal("pypi:ctx", npm),
            "\"pypi:ctx\" is not a pattern: it names pypi in a setting of the npm ecosystem"
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, why) in [
            ("ctx", "it names no ecosystem"),
            ("crates:serde", "\"crates\" is not an ecosystem"),
            ("PyPI:ctx", "\"PyPI\" is not an ecosystem"),
            ("npm:", "the name is empty"),
            ("npm:@1.0.0", "a scoped npm name is @scope/name"),
            (
                "npm:@acme/x@1.0.0@",
                "the version holds a space, a control character or '@'",
            ),
            ("npm:x@", "the version after '@' is empty"),
            ("npm:x@1.*", "a version is exact or *"),
            (
                "npm:x@1.0@2",
                "the version holds a space, a control character or '@'",
            ),
            ("pypi:a b", "space or control character"),
            ("pypi:a@1 0", "the version holds a space"),
            ("pypi:a/b", "pypi names hold no '/'"),
            ("rubygems:a/b", "rubygems names hold no '/'"),
            ("npm:@acme", "a scoped npm name is @scope/name"),
            ("npm:@acme/", "a scoped npm name is @scope/name"),
            ("npm:@/x", "a scoped npm name is @scope/name"),
            ("npm:@a/b/c", "a scoped npm name is @scope/name"),
            ("npm:a/b", "only a scoped npm name"),
            ("packagist:tool", "a Composer name is vendor/name"),
            ("packagist:acme/", "a Composer name is vendor/name"),
            ("packagist:a/b/c", "a Composer name is vendor/name"),
            ("pypi:@x", "'@' may only start an npm scope"),
        ] {
            let message = refusal(text, None);
            assert!(
                message.starts_with(&format!("{text:?} is not a pattern: "))
                    && message.contains(why),
                "{text}: {message}"
            );
        }
        // Globs may stand for the parts that make a name whole.
        for text in [
            "npm:*",
            "npm:@acme*",
            "packagist:*",
            "packagist:acme*",
            "pypi:*",
        ] {
            assert!(Pattern::parse(text, None).is_ok(), "{text}");
        }
    }

    #[test]
    fn name_only_settings_refuse_versions() {
        assert!(Pattern::parse_name("npm:@acme/*", None).is_ok());
        assert!(Pattern::parse_name("@acme/tool", Some(Ecosystem::Npm)).is_ok());
        for text in ["npm:@acme/tool@1.0.0", "pypi:acme-*@*"] {
            assert_eq!(
                Pattern::parse_name(text, None).unwrap_err().why,
                "this setting takes names only, without @version",
                "{text}"
            );
        }
    }

    #[test]
    fn patterns_show_as_written() {
        assert_eq!(pattern("pypi:Foo_Bar@1.0").to_string(), "pypi:Foo_Bar@1.0");
    }
}
