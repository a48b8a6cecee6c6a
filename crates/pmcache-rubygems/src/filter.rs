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
                filtered.until = refusal.first_maturity(filtered.until);
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

/// The `/versions` line of one gem whose served `/info` hides versions, or that a route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction {
    /// The gem it is about.
    pub gem: String,
    /// The MD5 of the upstream's `/info` it was made from; None for a routed gem, whose
    /// `/info` comes from elsewhere than the public `/versions` describes (see [`routed_line`]).
    pub upstream_md5: Option<String>,
    /// See [`correction_line`] and [`routed_line`].
    pub line: String,
}

/// The `/versions` line of a gem a route takes: every version its served `/info` lists and that
/// file's MD5, so that Bundler (which skips a gem `/versions` does not list) asks for it.
/// [`render_versions`] adds the removal of each version the public `/versions` lists under that
/// name and the private `/info` does not.
pub fn routed_line(gem: &str, versions: &[String], served_md5: &str) -> String {
    format!("{gem} {} {served_md5}", versions.join(","))
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
    let routed: Vec<&str> = corrections
        .iter()
        .filter(|correction| correction.upstream_md5.is_none())
        .map(|correction| correction.gem.as_str())
        .collect();
    let public = listed_versions(upstream, &routed);
    let mut lines: Vec<String> = corrections
        .iter()
        .filter_map(|correction| match &correction.upstream_md5 {
            Some(md5) => {
                (listed.get(&correction.gem) == Some(md5)).then(|| correction.line.clone())
            }
            None => Some(with_removals(&correction.line, public.get(&correction.gem))),
        })
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

/// A routed gem's line with `-VERSION` for each of `public` (what the public `/versions` lists
/// under its name) that the line does not list.
fn with_removals(line: &str, public: Option<&Vec<String>>) -> String {
    let mut fields = line.splitn(3, ' ');
    let (Some(gem), Some(versions), Some(md5)) = (fields.next(), fields.next(), fields.next())
    else {
        return line.to_owned();
    };
    let private: Vec<&str> = versions.split(',').filter(|v| !v.is_empty()).collect();
    let removed = public
        .into_iter()
        .flatten()
        .filter(|version| !private.contains(&version.as_str()))
        .map(|version| format!("-{version}"));
    let all: Vec<String> = private
        .iter()
        .map(|version| (*version).to_owned())
        .chain(removed)
        .collect();
    format!("{gem} {} {md5}", all.join(","))
}

/// The versions the `/versions` file `versions` lists for each of `gems` (a `-VERSION` removes
/// one), in one pass over the file.
fn listed_versions(versions: &[u8], gems: &[&str]) -> HashMap<String, Vec<String>> {
    let mut listed: HashMap<String, Vec<String>> = HashMap::new();
    if gems.is_empty() {
        return listed;
    }
    let text = String::from_utf8_lossy(versions);
    for line in text.lines().skip_while(|line| *line != "---").skip(1) {
        let mut fields = line.split(' ');
        let (Some(name), Some(entries)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !gems.contains(&name) {
            continue;
        }
        let known = listed.entry(name.to_owned()).or_default();
        for entry in entries.split(',').filter(|entry| !entry.is_empty()) {
            match entry.strip_prefix('-') {
                Some(removed) => known.retain(|version| version != removed),
                None => known.push(entry.to_owned()),
            }
        }
    }
    listed
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
            upstream_md5: Some(upstream_md5.to_owned()),
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

    #[test]
    fn a_routed_gem_is_listed_with_the_served_info_and_without_the_public_versions() {
        let upstream = "---\ndemo 1.0.0,2.0.0,-2.0.0,3.0.0 0123\nother 1.0 4567\n";
        let line = routed_line("private", &["0.1".to_owned(), "0.2".to_owned()], "aaaa");
        let shadowed = routed_line("demo", &["1.0.0".to_owned(), "9.0".to_owned()], "bbbb");
        let routed = |gem: &str, line: &str| Correction {
            gem: gem.to_owned(),
            upstream_md5: None,
            line: line.to_owned(),
        };
        let served = render_versions(
            upstream.as_bytes(),
            &[routed("private", &line), routed("demo", &shadowed)],
        );
        // No upstream MD5 to match: both lines are there, the public demo's 3.0.0 removed.
        let expected = format!("{upstream}demo 1.0.0,9.0,-3.0.0 bbbb\nprivate 0.1,0.2 aaaa\n");
        assert_eq!(String::from_utf8(served).unwrap(), expected);
    }
}
