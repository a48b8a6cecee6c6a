//! Gem names and full names (`NAME-VERSION[-PLATFORM]`, as in `.gem` file names), checked
//! before they reach an upstream URL.

use std::fmt;

use crate::error::{Error, Result};

/// Longer names are not gems (rubygems.org's longest are far shorter); the bound keeps keys and
/// URLs small.
const MAX_LEN: usize = 255;
/// How many ways of splitting a full name into gem name and version are tried upstream.
const MAX_SPLITS: usize = 3;

/// A gem name as RubyGems allows it: ASCII letters, digits, `.`, `-` and `_`, with at least one
/// letter or digit (so never `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemName(String);

impl GemName {
    /// Checks `text` as a gem name.
    pub fn parse(text: &str) -> Result<GemName> {
        check_charset(text)?;
        Ok(GemName(text.to_owned()))
    }

    /// The name as the gem's `/info` file and `.gem` files spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `NAME-VERSION` or `NAME-VERSION-PLATFORM`: how `.gem` and `.gemspec.rz` files are named.
/// Both names and platforms may contain `-`, so where the name ends is only known from the
/// gem's `/info` file; [`FullName::splits`] gives the candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    /// Checks `text` as a full name: a gem name's characters, and a `-` followed by a digit
    /// (where a version starts) somewhere after the first character.
    pub fn parse(text: &str) -> Result<FullName> {
        check_charset(text)?;
        let full = FullName(text.to_owned());
        if full.splits().is_empty() {
            return Err(Error::InvalidName {
                name: text.to_owned(),
                reason: "a gem file is named NAME-VERSION[-PLATFORM], and this has no version",
            });
        }
        Ok(full)
    }

    /// The full name as it appears in `.gem` and `.gemspec.rz` file names, without extension.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ways to read this as gem name and `VERSION[-PLATFORM]`, shortest name first (gem
    /// names rarely contain `-<digit>`; platforms such as `universal-darwin-19` do), at most
    /// three (`MAX_SPLITS`).
    pub fn splits(&self) -> Vec<(GemName, &str)> {
        let text = self.0.as_str();
        let bytes = text.as_bytes();
        (1..bytes.len().saturating_sub(1))
            .filter(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit())
            .filter_map(|i| Some((GemName::parse(&text[..i]).ok()?, &text[i + 1..])))
            .take(MAX_SPLITS)
            .collect()
    }
}

impl fmt::Display for FullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_charset(text: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: text.to_owned(),
            reason,
        })
    };
    if text.is_empty() {
        return invalid("it is empty");
    }
    if text.len() > MAX_LEN {
        return invalid("it is longer than 255 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !text.chars().all(allowed) {
        return invalid("only ASCII letters, digits, '.', '-' and '_' are allowed");
    }
    if !text.chars().any(|c| c.is_ascii_alphanumeric()) {
        return invalid("it needs at least one letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gem_names_keep_to_rubygems_characters() {
        for good in ["rails", "net-http", "proxfix_app", "a.b", "x1"] {
            assert!(GemName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", ".", "..", "a/b", "a b", "a%2fb", "..\\x", "é", "-", "a\0",
        ] {
            assert!(GemName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(GemName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn full_names_split_where_a_version_starts() {
        let split = |text: &str| {
            FullName::parse(text)
                .unwrap()
                .splits()
                .into_iter()
                .map(|(name, rest)| format!("{name}|{rest}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(split("proxfix-base-1.1.0"), ["proxfix-base|1.1.0"]);
        assert_eq!(
            split("proxfix_native-1.0.0-x86_64-linux"),
            ["proxfix_native|1.0.0-x86_64-linux"]
        );
        assert_eq!(
            split("nokogiri-1.16.0-universal-darwin-19"),
            [
                "nokogiri|1.16.0-universal-darwin-19",
                "nokogiri-1.16.0-universal-darwin|19"
            ]
        );
        assert_eq!(split("pre-2.0.0.pre1"), ["pre|2.0.0.pre1"]);
    }

    #[test]
    fn full_names_need_a_version() {
        for bad in ["rails", "rails-", "-1.0", "../x-1.0", "a-1.0/../b"] {
            assert!(FullName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
