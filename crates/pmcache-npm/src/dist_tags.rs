//! Where a dist-tag goes when the policy hides the version it names: to the newest version
//! still shown that is older than it, never from a release to a prerelease (semver 2.0.0
//! precedence, as npm orders versions).

use std::cmp::Ordering;
use std::collections::HashSet;

use serde_json::{Map, Value};

/// Points each tag of `root`'s `dist-tags` that names a `hidden` version at the newest shown
/// version older than it, a release when it named a release; a tag with nowhere to go is left
/// for the dangling-tag rule to drop.
pub(crate) fn move_off(root: &mut Map<String, Value>, hidden: &HashSet<String>) {
    if hidden.is_empty() {
        return;
    }
    let shown: Vec<(Version, String)> = root
        .get("versions")
        .and_then(Value::as_object)
        .map(|versions| {
            versions
                .keys()
                .filter_map(|key| Some((Version::parse(key)?, key.clone())))
                .collect()
        })
        .unwrap_or_default();
    let Some(tags) = root.get_mut("dist-tags").and_then(Value::as_object_mut) else {
        return;
    };
    for target in tags.values_mut() {
        let Some(named) = target.as_str().filter(|named| hidden.contains(*named)) else {
            continue;
        };
        let Some(named) = Version::parse(named) else {
            continue;
        };
        let replacement = shown
            .iter()
            .filter(|(version, _)| version.precedes(&named))
            .filter(|(version, _)| named.is_prerelease() || !version.is_prerelease())
            .max_by(|(a, _), (b, _)| a.cmp_precedence(b))
            .map(|(_, key)| key.clone());
        if let Some(replacement) = replacement {
            *target = Value::String(replacement);
        }
    }
}

/// A semver version, as far as precedence goes (build metadata is ignored).
#[derive(Debug, PartialEq, Eq)]
struct Version {
    core: [u64; 3],
    prerelease: Vec<Identifier>,
}

#[derive(Debug, PartialEq, Eq)]
enum Identifier {
    Number(u64),
    Text(String),
}

impl Version {
    /// `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; None for anything else.
    fn parse(text: &str) -> Option<Version> {
        let text = text.split('+').next()?;
        let (core, prerelease) = match text.split_once('-') {
            Some((core, prerelease)) => (core, Some(prerelease)),
            None => (text, None),
        };
        let mut numbers = core.split('.').map(|part| part.parse::<u64>().ok());
        let core = [numbers.next()??, numbers.next()??, numbers.next()??];
        if numbers.next().is_some() {
            return None;
        }
        let prerelease = match prerelease {
            Some(text) => text
                .split('.')
                .map(|part| match part.parse::<u64>() {
                    Ok(number) => Some(Identifier::Number(number)),
                    Err(_) if !part.is_empty() => Some(Identifier::Text(part.to_owned())),
                    Err(_) => None,
                })
                .collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        Some(Version { core, prerelease })
    }

    fn is_prerelease(&self) -> bool {
        !self.prerelease.is_empty()
    }

    fn precedes(&self, other: &Version) -> bool {
        self.cmp_precedence(other) == Ordering::Less
    }

    /// semver 2.0.0 §11: the core numerically, then a prerelease before its release, then the
    /// prerelease identifiers one by one (numbers before text, fewer before more).
    fn cmp_precedence(&self, other: &Version) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.is_prerelease(), other.is_prerelease()) {
                (false, false) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (true, true) => {
                    for (a, b) in self.prerelease.iter().zip(&other.prerelease) {
                        let order = match (a, b) {
                            (Identifier::Number(a), Identifier::Number(b)) => a.cmp(b),
                            (Identifier::Number(_), Identifier::Text(_)) => Ordering::Less,
                            (Identifier::Text(_), Identifier::Number(_)) => Ordering::Greater,
                            (Identifier::Text(a), Identifier::Text(b)) => a.cmp(b),
                        };
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.prerelease.len().cmp(&other.prerelease.len())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn precedence_follows_semver() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (
                Version::parse(pair[0]).unwrap(),
                Version::parse(pair[1]).unwrap(),
            );
            assert!(a.precedes(&b), "{} < {}", pair[0], pair[1]);
            assert!(!b.precedes(&a), "{} > {}", pair[1], pair[0]);
        }
        assert_eq!(
            Version::parse("1.0.0+build.5")
                .unwrap()
                .cmp_precedence(&Version::parse("1.0.0").unwrap()),
            Ordering::Equal
        );
        for bad in ["1.0", "1.0.0.0", "v1.0.0", "1.0.0-", "1.0.0-a..b", "x"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }

    fn tags_after(versions: &[&str], tags: Value, hidden: &[&str]) -> Value {
        let versions: Map<String, Value> = versions
            .iter()
            .map(|version| ((*version).to_owned(), json!({})))
            .collect();
        let mut root = json!({"dist-tags": tags, "versions": versions})
            .as_object()
            .unwrap()
            .clone();
        let hidden: HashSet<String> = hidden.iter().map(|v| (*v).to_owned()).collect();
        move_off(&mut root, &hidden);
        root["dist-tags"].clone()
    }

    #[test]
    fn tags_move_to_the_newest_older_shown_version_never_from_a_release_to_a_prerelease() {
        // 2.0.0 hidden (and not in versions any more): latest goes back to 1.2.0, past the
        // prerelease 2.0.0-rc.1; next (a prerelease) may go to 2.0.0-rc.1.
        let tags = tags_after(
            &["1.0.0", "1.2.0", "2.0.0-rc.1", "3.0.0"],
            json!({"latest": "2.0.0", "next": "2.1.0-beta.1", "old": "1.0.0"}),
            &["2.0.0", "2.1.0-beta.1"],
        );
        assert_eq!(
            tags,
            json!({"latest": "1.2.0", "next": "2.0.0-rc.1", "old": "1.0.0"})
        );
        // Nothing older to go to: the tag stays pointing at the hidden version (and is dropped
        // as dangling by the rewrite).
        let tags = tags_after(&["2.0.0"], json!({"latest": "1.0.0"}), &["1.0.0"]);
        assert_eq!(tags, json!({"latest": "1.0.0"}));
    }
}
