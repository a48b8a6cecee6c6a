//! Composer package names (`vendor/name`), checked before they reach an upstream URL.

use std::fmt;

use crate::error::{Error, Result};

/// A lower-case `vendor/name` as Composer requests it: each part ASCII letters, digits and
/// single separators (`.`, `_`, `-`, or `--` in the name), starting and ending with a letter or
/// digit (Composer's own validation, which Packagist enforces).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName(String);

/// Longer names are not packages; the bound keeps keys and URLs small.
const MAX_LEN: usize = 255;

impl PackageName {
    /// Checks `text` (already lower case, as Composer sends it) as a package name.
    pub fn parse(text: &str) -> Result<PackageName> {
        let invalid = |reason| Error::InvalidName {
            name: text.to_owned(),
            reason,
        };
        if text.len() > MAX_LEN {
            return Err(invalid("it is longer than 255 characters"));
        }
        let (vendor, name) = text
            .split_once('/')
            .ok_or_else(|| invalid("a package name is vendor/name"))?;
        if !valid_part(vendor) || !valid_part(name) {
            return Err(invalid(
                "vendor and name are lower-case letters, digits and single '.', '_' or '-' between them",
            ));
        }
        Ok(PackageName(text.to_owned()))
    }

    /// `vendor/name`, as p2 paths and documents spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]([_.-]?[a-z0-9]+)*`, also allowing `--` (Composer allows it in names).
fn valid_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut run = 0;
    for &b in bytes {
        if alnum(b) {
            run = 0;
        } else if separator(b) {
            run += 1;
            // Only `--` may double up.
            if run > 2 || (run == 2 && b != b'-') {
                return false;
            }
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composer_names_are_accepted() {
        for good in [
            "monolog/monolog",
            "symfony/http-kernel",
            "doctrine/dbal",
            "a/b",
            "vendor.x/name_y",
            "v/name--x",
        ] {
            assert!(PackageName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn other_names_are_refused() {
        for bad in [
            "monolog",
            "Monolog/monolog",
            "a/b/c",
            "../etc",
            "a/..",
            "a/.b",
            "a/b-",
            "a/b__c",
            "a/b%2fc",
            "/b",
            "a/",
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
    }
}
