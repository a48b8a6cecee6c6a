//! The shape of upstream packuments: which version fields the abbreviated document keeps, and
//! how a version's `dist` publishes its tarball's digest (brief sections 4 and 7).
//!
//! Packuments are read as `serde_json::Value`, not into structs: pmcache must give back every key
//! it does not interpret, in order, and structs would drop or reorder them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use pmcache_proxy::Checksum;
use serde_json::{Map, Value};

/// Version fields of the abbreviated document (`npm/registry docs/responses/package-metadata.md`),
/// plus `libc`, which npm, pnpm and berry read but the registry's corgi lacked, and
/// `bundledDependencies`, the spelling of `bundleDependencies` that npm also accepts.
const ABBREVIATED_VERSION_FIELDS: [&str; 21] = [
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "bundledDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "_hasShrinkwrap",
    "hasInstallScript",
    "funding",
    "cpu",
    "os",
    "libc",
];

/// Whether a version field belongs in the abbreviated document.
pub fn is_abbreviated_version_field(key: &str) -> bool {
    ABBREVIATED_VERSION_FIELDS.contains(&key)
}

/// The fields of a version's `dist` object that pmcache reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dist<'a> {
    /// `dist.tarball`, as published (absolute or relative).
    pub tarball: Option<&'a str>,
    /// `dist.integrity`, an SRI string.
    pub integrity: Option<&'a str>,
    /// `dist.shasum`, hex SHA-1.
    pub shasum: Option<&'a str>,
}

impl<'a> Dist<'a> {
    /// Reads a `dist` object; fields that are not strings count as absent.
    pub fn read(dist: &'a Map<String, Value>) -> Dist<'a> {
        let text = |key: &str| dist.get(key).and_then(Value::as_str);
        Dist {
            tarball: text("tarball"),
            integrity: text("integrity"),
            shasum: text("shasum"),
        }
    }

    /// The digest to verify the tarball against, as pacote picks it: the strongest usable hash of
    /// `integrity`, else `shasum`; `None` when neither gives one.
    pub fn checksum(&self) -> Option<Checksum> {
        self.integrity
            .and_then(integrity_checksum)
            .or_else(|| self.shasum.and_then(|hex| Checksum::from_hex("sha1", hex)))
    }
}

/// The strongest hash of an SRI string (`sha512-<base64> sha1-<base64>`, W3C Subresource
/// Integrity §3.5) that pmcache can check. Unknown algorithms, bad base64 and digests of the
/// wrong length are skipped, as ssri does.
pub fn integrity_checksum(sri: &str) -> Option<Checksum> {
    Checksum::strongest(sri.split_ascii_whitespace().filter_map(sri_hash))
}

/// One `alg-base64[?options]` token of an SRI string.
fn sri_hash(token: &str) -> Option<Checksum> {
    let (algorithm, rest) = token.split_once('-')?;
    let digest = rest
        .split_once('?')
        .map_or(rest, |(digest, _options)| digest);
    // Padding is optional in the wild; the length check in `from_hex` still catches truncation.
    let bytes = STANDARD_PAD_INDIFFERENT.decode(digest).ok()?;
    Checksum::from_hex(algorithm, &lower_hex(&bytes))
}

fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use pmcache_proxy::Algorithm;

    use super::*;

    /// Digests of "abc".
    const ABC_SHA1_HEX: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const ABC_SHA1_B64: &str = "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";
    const ABC_SHA512_HEX: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                                  2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    const ABC_SHA512_B64: &str =
        "3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==";

    fn algorithm(sri: &str) -> Option<Algorithm> {
        integrity_checksum(sri).map(|checksum| checksum.algorithm)
    }

    #[test]
    fn single_hashes_become_lowercase_hex() {
        let sha512 = integrity_checksum(&format!("sha512-{ABC_SHA512_B64}")).unwrap();
        assert_eq!(sha512.algorithm, Algorithm::Sha512);
        assert_eq!(sha512.hex, ABC_SHA512_HEX);
        let sha1 = integrity_checksum(&format!("sha1-{ABC_SHA1_B64}")).unwrap();
        assert_eq!(sha1.hex, ABC_SHA1_HEX);
    }

    #[test]
    fn the_strongest_of_several_wins() {
        let both = format!("sha1-{ABC_SHA1_B64} sha512-{ABC_SHA512_B64}");
        assert_eq!(algorithm(&both), Some(Algorithm::Sha512));
        let reversed = format!("  sha512-{ABC_SHA512_B64}\tsha1-{ABC_SHA1_B64}\n");
        assert_eq!(algorithm(&reversed), Some(Algorithm::Sha512));
    }

    #[test]
    fn unusable_hashes_are_skipped() {
        // Unknown algorithm next to a known one.
        let unknown = format!("whirlpool-{ABC_SHA512_B64} sha1-{ABC_SHA1_B64}");
        assert_eq!(algorithm(&unknown), Some(Algorithm::Sha1));
        assert_eq!(algorithm(&format!("sha3-{ABC_SHA512_B64}")), None);
        // Bad base64, and base64 of the wrong length for the algorithm.
        assert_eq!(algorithm("sha512-!!!not*base64!!!"), None);
        assert_eq!(algorithm(&format!("sha512-{ABC_SHA1_B64}")), None);
        let bad_then_good = format!("sha512-@@@ sha1-{ABC_SHA1_B64}");
        assert_eq!(algorithm(&bad_then_good), Some(Algorithm::Sha1));
        for garbage in ["", " ", "sha512", "sha512-", "-abc", "🦀-🦀"] {
            assert_eq!(algorithm(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn options_and_missing_padding_are_tolerated() {
        let options = format!("sha512-{ABC_SHA512_B64}?foo");
        assert_eq!(algorithm(&options), Some(Algorithm::Sha512));
        let unpadded = format!("sha1-{}", ABC_SHA1_B64.trim_end_matches('='));
        assert_eq!(algorithm(&unpadded), Some(Algorithm::Sha1));
    }

    #[test]
    fn dist_prefers_integrity_then_shasum() {
        let dist = |value: Value| Dist::read(value.as_object().unwrap()).checksum();
        let sri = format!("sha512-{ABC_SHA512_B64}");
        let both = dist(serde_json::json!({"integrity": sri, "shasum": ABC_SHA1_HEX}));
        assert_eq!(both.unwrap().algorithm, Algorithm::Sha512);
        let shasum_only = dist(serde_json::json!({"shasum": ABC_SHA1_HEX.to_uppercase()}));
        assert_eq!(shasum_only.unwrap().hex, ABC_SHA1_HEX);
        let unusable_integrity =
            dist(serde_json::json!({"integrity": "md4-x", "shasum": ABC_SHA1_HEX}));
        assert_eq!(unusable_integrity.unwrap().algorithm, Algorithm::Sha1);
        assert_eq!(dist(serde_json::json!({"shasum": "not hex"})), None);
        assert_eq!(
            dist(serde_json::json!({"integrity": 5, "shasum": null})),
            None
        );
    }

    #[test]
    fn abbreviated_fields_include_libc() {
        assert!(is_abbreviated_version_field("libc"));
        assert!(is_abbreviated_version_field("dist"));
        assert!(!is_abbreviated_version_field("readme"));
        assert!(!is_abbreviated_version_field("_id"));
    }
}
