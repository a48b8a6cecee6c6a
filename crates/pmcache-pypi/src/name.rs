//! PEP 503 project names: parsed once at the edge, so only normalised names reach the cache.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Longest name accepted; real projects stay far below it, and it bounds cache keys.
const MAX_LEN: usize = 200;

/// A project name in PEP 503 normal form: lowercase, every run of `-`, `_`, `.` one `-`.
///
/// Two spellings of one project (`Zope.Interface`, `zope_interface`) parse to equal values, so
/// this is the key for caching and the only spelling pmcache puts in URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

impl ProjectName {
    /// Parse any valid spelling: ASCII letters, digits, `.`, `-`, `_`, starting and ending with
    /// a letter or digit, 1 to 200 characters (PEP 508 names, which PEP 503 normalises).
    pub fn parse(raw: &str) -> Result<ProjectName> {
        validate(raw).map_err(|reason| Error::InvalidName {
            name: raw.to_owned(),
            reason,
        })?;
        Ok(ProjectName(normalise(raw)))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty() {
        return Err("is empty");
    }
    if raw.len() > MAX_LEN {
        return Err("is longer than 200 characters");
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || is_separator(b))
    {
        return Err("may hold only ASCII letters, digits, '.', '-' and '_'");
    }
    let alphanumeric_at = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    if !alphanumeric_at(raw.as_bytes().first()) || !alphanumeric_at(raw.as_bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.')
}

/// `re.sub(r"[-_.]+", "-", name).lower()`, for input already known to be ASCII.
fn normalise(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut after_separator = false;
    for b in raw.bytes() {
        if is_separator(b) {
            after_separator = true;
            continue;
        }
        if after_separator {
            out.push('-');
            after_separator = false;
        }
        out.push(char::from(b.to_ascii_lowercase()));
    }
    out
}

/// The version a distribution file holds, read from its filename: the second field of a wheel
/// (`name-1.0-py3-none-any.whl`, PEP 427) or egg, what follows the last `-` of an sdist
/// (`name-1.0.tar.gz`, PEP 625); None for names that follow neither convention.
pub fn version_in_filename(filename: &str) -> Option<String> {
    const SDISTS: [&str; 6] = [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"];
    let version = if let Some(stem) = filename
        .strip_suffix(".whl")
        .or_else(|| filename.strip_suffix(".egg"))
    {
        stem.split('-').nth(1)?
    } else {
        let stem = SDISTS
            .iter()
            .find_map(|extension| filename.strip_suffix(extension))?;
        stem.rsplit_once('-')?.1
    };
    (!version.is_empty()).then(|| version.to_ascii_lowercase())
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProjectName {
    type Err = Error;

    fn from_str(raw: &str) -> Result<ProjectName> {
        ProjectName::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(raw: &str) -> String {
        ProjectName::parse(raw).expect("valid name").to_string()
    }

    fn reason(raw: &str) -> &'static str {
        match ProjectName::parse(raw) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{raw:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn normalises_the_spellings_pep_503_names() {
        assert_eq!(normal("Django"), "django");
        assert_eq!(normal("zope.interface"), "zope-interface");
        assert_eq!(normal("typing_extensions"), "typing-extensions");
        assert_eq!(normal("Demo_Alpha"), "demo-alpha");
        assert_eq!(normal("a-_.-b"), "a-b");
        assert_eq!(normal("X"), "x");
        assert_eq!(normal("0"), "0");
    }

    #[test]
    fn spellings_of_one_project_are_equal() {
        let a = ProjectName::parse("Zope.Interface").expect("valid");
        let b = ProjectName::parse("zope__interface").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "zope-interface");
        assert_eq!("zope-interface".parse::<ProjectName>().expect("valid"), a);
    }

    #[test]
    fn rejects_what_cannot_be_a_project() {
        assert_eq!(reason(""), "is empty");
        assert_eq!(reason(&"a".repeat(201)), "is longer than 200 characters");
        assert!(ProjectName::parse(&"a".repeat(200)).is_ok());
        for raw in ["-django", "django_", ".x", "x."] {
            assert_eq!(reason(raw), "must start and end with a letter or digit");
        }
        for raw in [
            "dj ango",
            "dj/ango",
            "..",
            "ünïcode",
            "a%2Fb",
            "a\0b",
            "../etc",
        ] {
            assert!(ProjectName::parse(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn versions_are_read_from_wheel_and_sdist_filenames() {
        let version = |filename| version_in_filename(filename);
        assert_eq!(
            version("demo_app-1.0.2-py3-none-any.whl").as_deref(),
            Some("1.0.2")
        );
        assert_eq!(
            version("demo-2.0rc1-1-cp312-cp312-linux_x86_64.whl").as_deref(),
            Some("2.0rc1")
        );
        assert_eq!(version("demo-app-1.0.tar.gz").as_deref(), Some("1.0"));
        assert_eq!(version("Demo-1.0.ZIP"), None);
        assert_eq!(version("demo-1.0.zip").as_deref(), Some("1.0"));
        assert_eq!(version("demo-0.1-py2.7.egg").as_deref(), Some("0.1"));
        assert_eq!(version("demo.exe"), None);
        assert_eq!(version("demo.tar.gz"), None);
        assert_eq!(version("demo-.tar.gz"), None);
    }

    #[test]
    fn error_names_the_input() {
        let err = ProjectName::parse("bad name").expect_err("invalid");
        assert!(err.to_string().contains("\"bad name\""), "{err}");
        assert!(!err.is_upstream());
    }
}
