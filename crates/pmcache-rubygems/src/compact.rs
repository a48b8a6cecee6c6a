//! Reading the compact index (`/versions`, `/info/NAME`, `/names`): only what pmcache needs to
//! keep the pair coherent and to verify `.gem` files. The files are always served verbatim.

use std::collections::HashMap;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use pmcache_proxy::Checksum;

/// Why an upstream index file is not served.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// An answer with status 200 that is no compact index file (an error page, say).
    #[error("no '---' line: not a compact index file")]
    NotCompactIndex,
    /// A legacy `.4.8.gz` index that is not gzip data.
    #[error("not gzip data")]
    NotGzip,
    /// The body does not have the sha-256 the upstream's digest header published.
    #[error("its {header} says sha-256 {published}, the body has {actual}")]
    DigestMismatch {
        /// `repr-digest` or `digest`.
        header: &'static str,
        /// The base64 sha-256 the header gives.
        published: String,
        /// The base64 sha-256 of the body received.
        actual: String,
    },
}

/// One line of an `/info/NAME` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoEntry {
    /// `VERSION` or `VERSION-PLATFORM`: what follows `NAME-` in the gem's file name.
    pub version: String,
    /// The `checksum:` requirement: sha256 of the `.gem`.
    pub checksum: Option<Checksum>,
}

/// Whether `body` has the `---` line that separates a compact index file's header from its
/// lines: an upstream answering something else (an error page with status 200) is not cached.
pub fn is_compact_index(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n').any(|line| line == b"---")
}

/// The lines after the first `---` line (clients ignore what comes before it).
fn lines(body: &[u8]) -> impl Iterator<Item = &str> {
    let mut lines = body.split(|&b| b == b'\n');
    let has_separator = lines.by_ref().any(|line| line == b"---");
    lines
        .filter(move |_| has_separator)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter(|line| !line.is_empty())
}

/// The current info MD5 of each gem in a `/versions` file: the last one listed for its name
/// (the file is appended to on every release and yank).
pub fn info_checksums(versions: &[u8]) -> HashMap<String, String> {
    let mut checksums = HashMap::new();
    for line in lines(versions) {
        let mut fields = line.split(' ');
        if let (Some(name), Some(_), Some(md5), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        {
            checksums.insert(name.to_owned(), md5.to_owned());
        }
    }
    checksums
}

/// Every version an `/info/NAME` file lists, with its `.gem` checksum.
pub fn info_entries(info: &[u8]) -> Vec<InfoEntry> {
    lines(info)
        .filter_map(|line| {
            let (version, rest) = line.split_once(' ')?;
            let requirements = rest.split_once('|').map_or("", |(_, reqs)| reqs);
            let checksum = requirements
                .split(',')
                .find_map(|req| req.strip_prefix("checksum:"))
                .and_then(gem_checksum);
            Some(InfoEntry {
                version: version.to_owned(),
                checksum,
            })
        })
        .collect()
}

/// A `checksum:` value: sha256 in hex, or in base64 in some old entries.
fn gem_checksum(value: &str) -> Option<Checksum> {
    Checksum::from_hex("sha256", value).or_else(|| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        Checksum::from_hex("sha256", &hex::encode(bytes))
    })
}

/// Checks `body` against the sha-256 the upstream sent in `Repr-Digest` or `Digest`, if it sent
/// one over the body as received: a file damaged on the way must not be served with a digest
/// pmcache computed over the damage. A gzip-encoded answer is left to the gzip trailer's
/// checksum, since upstreams differ on whether their digest covers the encoded bytes.
pub fn check_upstream_digests(headers: &http::HeaderMap, body: &[u8]) -> Result<(), Malformed> {
    if headers.contains_key(http::header::CONTENT_ENCODING) {
        return Ok(());
    }
    let actual = base64::engine::general_purpose::STANDARD
        .encode(pmcache_proxy::Digest::of(body).as_bytes());
    for name in ["repr-digest", "digest"] {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(published) = sha256_member(value)
            && published != actual
        {
            return Err(Malformed::DigestMismatch {
                header: name,
                published: published.to_owned(),
                actual,
            });
        }
    }
    Ok(())
}

/// The base64 sha-256 in a `Repr-Digest` (`sha-256=:B64:`) or `Digest` (`SHA-256=B64`) value.
fn sha256_member(value: &str) -> Option<&str> {
    value.split(',').find_map(|member| {
        let (algorithm, digest) = member.trim().split_once('=')?;
        algorithm
            .eq_ignore_ascii_case("sha-256")
            .then(|| digest.trim().trim_matches(':').trim_matches('"'))
    })
}

/// The MD5 (hex) of a whole file: the `/versions` column, and the `ETag` clients compare.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSIONS: &str = "created_at: 2024-06-02T00:00:00Z\n---\n\
        proxfix-base 1.0.0 4b210494b57cd5ad7dbb10331c4a5024\n\
        proxfix_app 0.0.1,0.1.0 72f66df18f3624b170ac9ba44fc12367\n\
        proxfix_app -0.0.1 ac48a6f3f223dc62ca840d97aaf0b670\n\
        proxfix-base 1.1.0 90ba12c606ca8a321a143c6ec5f3a9bd\n";

    #[test]
    fn the_last_md5_of_each_name_counts() {
        let checksums = info_checksums(VERSIONS.as_bytes());
        assert_eq!(checksums.len(), 2);
        assert_eq!(
            checksums["proxfix-base"],
            "90ba12c606ca8a321a143c6ec5f3a9bd"
        );
        assert_eq!(checksums["proxfix_app"], "ac48a6f3f223dc62ca840d97aaf0b670");
    }

    #[test]
    fn header_lines_are_not_gems() {
        let checksums = info_checksums(b"created_at: x y\n---\na 1.0 abc\n");
        assert_eq!(checksums.keys().collect::<Vec<_>>(), ["a"]);
        assert!(info_checksums(b"a 1.0 abc\n").is_empty());
    }

    #[test]
    fn info_lines_give_versions_and_checksums() {
        let sha = "fab6e07c0000000000000000000000000000000000000000000000000000caeb";
        let info = format!(
            "---\n\
             1.0.0 |checksum:{sha},ruby:>= 2.5,created_at:2024-06-01T01:00:00Z\n\
             0.1.0 proxfix-base:>= 1.0.0&~> 1.0|checksum:{sha}\n\
             1.0.0-x86_64-linux |checksum:+rYHfA==,rubygems:> 1.3.1\n\
             2.0.0 |ruby:>= 2.5\n"
        );
        let entries = info_entries(info.as_bytes());
        let versions: Vec<_> = entries.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(versions, ["1.0.0", "0.1.0", "1.0.0-x86_64-linux", "2.0.0"]);
        assert_eq!(entries[0].checksum.as_ref().unwrap().hex, sha);
        assert_eq!(entries[1].checksum.as_ref().unwrap().hex, sha);
        // Not 32 bytes once decoded: no usable checksum.
        assert_eq!(entries[2].checksum, None);
        assert_eq!(entries[3].checksum, None);
    }

    #[test]
    fn base64_checksums_are_read() {
        let digest = [7u8; 32];
        let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
        let info = format!("---\n1.0 |checksum:{encoded}\n");
        let entries = info_entries(info.as_bytes());
        assert_eq!(
            entries[0].checksum.as_ref().unwrap().hex,
            hex::encode(digest)
        );
    }

    #[test]
    fn upstream_digests_are_checked_unless_the_body_was_encoded() {
        let body = b"---\na 1.0 abc\n";
        let right = base64::engine::general_purpose::STANDARD
            .encode(pmcache_proxy::Digest::of(body).as_bytes());
        let mut headers = http::HeaderMap::new();
        assert!(check_upstream_digests(&headers, body).is_ok());
        headers.insert(
            "repr-digest",
            format!("sha-512=:x:, sha-256=:{right}:").parse().unwrap(),
        );
        headers.insert("digest", format!("SHA-256={right}").parse().unwrap());
        assert!(check_upstream_digests(&headers, body).is_ok());
        assert!(check_upstream_digests(&headers, b"---\na 1.0 abd\n").is_err());
        headers.insert("content-encoding", "gzip".parse().unwrap());
        assert!(check_upstream_digests(&headers, b"---\na 1.0 abd\n").is_ok());
    }

    #[test]
    fn compact_index_files_have_a_separator() {
        assert!(is_compact_index(b"---\n"));
        assert!(is_compact_index(b"created_at: x\n---\na 1 b\n"));
        assert!(!is_compact_index(b"<html>error</html>"));
    }
}
