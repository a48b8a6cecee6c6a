//! The fleet's policy applied to the compact index: the lines of refused versions removed from
//! `/info/NAME`, and the lines that tell `/versions` readers of each gem whose served `/info`
//! differs from the upstream's.

use std::collections::HashMap;
use std::time::SystemTime;

use pmcache_policy::Verdict;

use crate::compact;

/// An `/info/NAME` file as pmcache serves it.
#[derive(Debug, PartialEq, Eq)]
pub struct FilteredInfo {
    /// The served bytes: the upstream's, without the lines of refused versions.
    pub body: Vec<u8>,
    /// The versions removed (`VERSION` or `VERSION-PLATFORM`, as the lines name them), in order.
    pub hidden: Vec<String>,
    /// When the first version the age rule hid comes of age.
    pub until: Option<SystemTime>,
}

/// Removes from `info` the line of each version `judge` refuses. `judge` gets the version
/// number (a platform build belongs to its version: `deny = ["rubygems:x@1.0.0"]` refuses
/// `1.0.0-java` too) and the line's own publish time from `times` (keyed like the lines). The
/// header before `---`, and lines pmcache cannot read, are kept as they are.
pub fn filter_info<J>(info: &[u8], times: &HashMap<String, SystemTime>, judge: J) -> FilteredInfo
where
    J: Fn(&str, Option<SystemTime>) -> Verdict,
{
    let mut filtered = FilteredInfo {
        body: Vec::with_capacity(info.len()),
        hidden: Vec::new(),
        until: None,
    };
    let mut in_header = true;
    for line in info.split_inclusive(|&b| b == b'\n') {
        if in_header {
            in_header = line.strip_suffix(b"\n").unwrap_or(line) != b"---";
            filtered.body.extend_from_slice(line);
            continue;
        }
        let Some(version) = line_version(line) else {
            filtered.body.extend_from_slice(line);
            continue;
        };
        let number = version
            .split_once('-')
            .map_or(version, |(number, _)| number);
        match judge(number, times.get(version).copied()) {
            Verdict::Allowed => filtered.body.extend_from_slice(line),
            Verdict::Refused(refusal) => {
                filtered.until = match (filtered.until, refusal.matures_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                filtered.hidden.push(version.to_owned());
            }
        }
    }
    filtered
}

/// The `VERSION[-PLATFORM]` an `/info` line starts with.
fn line_version(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let (version, _) = text.split_once(' ')?;
    (!version.is_empty()).then_some(version)
}

/// The `/versions` line that makes a reader's view of `gem` the one pmcache serves: each hidden
/// version removed (`-VERSION`, as a yank is written) and the served `/info`'s MD5, which wins
/// over the ones before it (Bundler and RubyGems keep the last MD5 of each name).
pub fn correction_line(gem: &str, hidden: &[String], served_md5: &str) -> String {
    let removed: Vec<String> = hidden.iter().map(|version| format!("-{version}")).collect();
    format!("{gem} {} {served_md5}", removed.join(","))
}

/// The `/versions` line of one gem whose served `/info` hides versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction {
    /// The gem it is about.
    pub gem: String,
    /// The MD5 of the upstream's `/info` it was made from.
    pub upstream_md5: String,
    /// See [`correction_line`].
    pub line: String,
}

/// `/versions` as pmcache serves it: the upstream's bytes as they are, then the line of each of
/// `corrections` made from the `/info` this file lists (sorted). A correction made from another
/// `/info` is left out: the upstream's MD5 then differs from the client's copy, so that the
/// client asks for the `/info` again (and pmcache filters the new one), rather than keeping an
/// `/info` the correction would call current. With no line, the upstream's file byte for byte,
/// so that Bundler's range appends work as against the upstream; with some, a client's copy
/// ends with lines the new file has elsewhere, which Bundler detects (its ETag or digest check)
/// and fetches whole.
pub fn render_versions(upstream: &[u8], corrections: &[Correction]) -> Vec<u8> {
    let mut body = upstream.to_vec();
    if corrections.is_empty() {
        return body;
    }
    let listed = compact::info_checksums(upstream);
    let mut lines: Vec<&str> = corrections
        .iter()
        .filter(|correction| listed.get(&correction.gem) == Some(&correction.upstream_md5))
        .map(|correction| correction.line.as_str())
        .collect();
    if lines.is_empty() {
        return body;
    }
    lines.sort_unstable();
    if !body.is_empty() && !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    for line in lines {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    body
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pmcache_policy::{Ecosystem, Policy};

    use super::*;

    const INFO: &str = "---\n\
        1.0.0 |checksum:aa,ruby:>= 2.5\n\
        1.1.0 |checksum:bb\n\
        1.1.0-x86_64-linux |checksum:cc\n\
        2.0.0 dep:>= 1|checksum:dd\n";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn policy(config: pmcache_policy::Config) -> Policy {
        Policy::new(&config, &[], &[]).unwrap()
    }

    fn aged(age: u64) -> pmcache_policy::Config {
        pmcache_policy::Config {
            min_release_age: Duration::from_secs(age),
            ..pmcache_policy::Config::default()
        }
    }

    fn denying(pattern: &str) -> pmcache_policy::Config {
        pmcache_policy::Config {
            deny: vec![pattern.to_owned()],
            ..pmcache_policy::Config::default()
        }
    }

    fn times() -> HashMap<String, SystemTime> {
        [
            ("1.0.0", at(1_000)),
            ("1.1.0", at(50_000)),
            ("1.1.0-x86_64-linux", at(90_000)),
        ]
        .into_iter()
        .map(|(version, time)| (version.to_owned(), time))
        .collect()
    }

    fn filter(policy: &Policy, now: SystemTime) -> FilteredInfo {
        filter_info(INFO.as_bytes(), &times(), |version, published| {
            policy.judge(Ecosystem::Rubygems, "demo", version, published, now)
        })
    }

    #[test]
    fn nothing_refused_keeps_the_bytes() {
        let filtered = filter(&Policy::default(), at(100_000));
        assert_eq!(filtered.body, INFO.as_bytes());
        assert!(filtered.hidden.is_empty());
        assert_eq!(filtered.until, None);
    }

    #[test]
    fn each_line_is_judged_by_its_own_time() {
        // 1h: 1.1.0 (50 000 s) is of age at 100 000 s, its linux build (90 000 s) is not, and
        // 2.0.0 has no publish time.
        let policy = policy(aged(3_600));
        let filtered = filter(&policy, at(90_100));
        assert_eq!(filtered.hidden, ["1.1.0-x86_64-linux", "2.0.0"]);
        assert_eq!(
            String::from_utf8(filtered.body).unwrap(),
            "---\n1.0.0 |checksum:aa,ruby:>= 2.5\n1.1.0 |checksum:bb\n"
        );
        assert_eq!(filtered.until, Some(at(93_600)));
        let served = compact::info_entries(&filter(&policy, at(90_100)).body);
        assert_eq!(served.len(), 2);
    }

    #[test]
    fn a_denied_version_takes_its_platform_builds() {
        let policy = policy(denying("rubygems:demo@1.1.0"));
        let filtered = filter(&policy, at(100_000));
        assert_eq!(filtered.hidden, ["1.1.0", "1.1.0-x86_64-linux"]);
        assert_eq!(filtered.until, None);
        assert_eq!(compact::info_entries(&filtered.body).len(), 2);
    }

    #[test]
    fn header_and_unreadable_lines_stay() {
        let info = b"created_at: x\n---\nnospace\n1.0 |checksum:aa\n";
        let policy = policy(denying("rubygems:demo@1.0"));
        let filtered = filter_info(info, &HashMap::new(), |version, published| {
            policy.judge(Ecosystem::Rubygems, "demo", version, published, at(1))
        });
        assert_eq!(filtered.body, b"created_at: x\n---\nnospace\n");
    }

    fn correction(gem: &str, upstream_md5: &str, line: &str) -> Correction {
        Correction {
            gem: gem.to_owned(),
            upstream_md5: upstream_md5.to_owned(),
            line: line.to_owned(),
        }
    }

    #[test]
    fn corrections_come_last_and_win() {
        let upstream = "created_at: 2024-06-02T00:00:00Z\n---\n\
            demo 1.0.0,1.1.0,1.1.0-x86_64-linux 0123\n\
            other 1.0 4567\n";
        let line = correction_line("demo", &["1.1.0-x86_64-linux".to_owned()], "89ab");
        assert_eq!(line, "demo -1.1.0-x86_64-linux 89ab");
        let served = render_versions(upstream.as_bytes(), &[correction("demo", "0123", &line)]);
        assert!(served.starts_with(upstream.as_bytes()));
        assert!(served.ends_with(format!("{line}\n").as_bytes()));
        let checksums = compact::info_checksums(&served);
        assert_eq!(checksums["demo"], "89ab");
        assert_eq!(checksums["other"], "4567");
        // No correction: the upstream's bytes, so that range appends go on working.
        assert_eq!(
            render_versions(upstream.as_bytes(), &[]),
            upstream.as_bytes()
        );
        // A file without a final newline still gets whole lines.
        let served = render_versions(b"---\na 1 x", &[correction("a", "x", "a -1 y")]);
        assert_eq!(served, b"---\na 1 x\na -1 y\n");
    }

    #[test]
    fn a_correction_of_an_older_info_is_left_out() {
        // The upstream released demo 1.2.0 since: its /info is not the one corrected.
        let upstream = "---\ndemo 1.0.0,1.1.0 0123\ndemo 1.2.0 cdef\nother 1.0 4567\n";
        let corrections = [
            correction("demo", "0123", "demo -1.1.0 89ab"),
            correction("other", "4567", "other -1.0 eeee"),
        ];
        let served = render_versions(upstream.as_bytes(), &corrections);
        let expected = format!("{upstream}other -1.0 eeee\n");
        assert_eq!(String::from_utf8(served).unwrap(), expected);
    }
}
