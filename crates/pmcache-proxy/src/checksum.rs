//! Published hashes that a fill is verified against, and the hashers that check them as bytes pass.

use std::fmt;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha224, Sha256, Sha384, Sha512};

/// A hash algorithm an upstream may publish, strongest last.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// MD5: hash fragments of older PyPI links; weak, but still better than no check.
    Md5,
    /// SHA-1: npm's `shasum` and Composer's dist `shasum`.
    Sha1,
    /// SHA-224, as a PEP 503 hash fragment may name it.
    Sha224,
    /// SHA-256: PyPI's usual hash and RubyGems' `checksum`.
    Sha256,
    /// SHA-384, as a hash fragment or an SRI string may name it.
    Sha384,
    /// SHA-512: npm's `integrity`.
    Sha512,
}

impl Algorithm {
    /// Parses the names used in hash fragments and SRI strings (`sha256`, `SHA-512`, …).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Some(Algorithm::Md5),
            "sha1" => Some(Algorithm::Sha1),
            "sha224" => Some(Algorithm::Sha224),
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha224 => "sha224",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// One published hash: algorithm and lowercase hex value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    /// The hash function.
    pub algorithm: Algorithm,
    /// The digest in lowercase hex, of the algorithm's length.
    pub hex: String,
}

impl Checksum {
    /// Builds a checksum from an algorithm name and a hex value; None for unknown algorithms or
    /// values that are not hex of the algorithm's length.
    pub fn from_hex(algorithm: &str, hex_value: &str) -> Option<Checksum> {
        let algorithm = Algorithm::from_name(algorithm)?;
        let hex_value = hex_value.trim().to_ascii_lowercase();
        let valid = hex_value.len() == Hasher::new(algorithm).output_len() * 2
            && hex_value.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then_some(Checksum {
            algorithm,
            hex: hex_value,
        })
    }

    /// Of several published hashes, the strongest one pmcache can check.
    pub fn strongest(candidates: impl IntoIterator<Item = Checksum>) -> Option<Checksum> {
        candidates.into_iter().max_by_key(|c| c.algorithm)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.algorithm.name(), self.hex)
    }
}

/// A running hash of one algorithm.
#[derive(Clone)]
pub(crate) enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha224 => Hasher::Sha224(Sha224::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn output_len(&self) -> usize {
        match self {
            Hasher::Md5(_) => 16,
            Hasher::Sha1(_) => 20,
            Hasher::Sha224(_) => 28,
            Hasher::Sha256(_) => 32,
            Hasher::Sha384(_) => 48,
            Hasher::Sha512(_) => 64,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha224(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha224(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Checks bytes against one expected checksum as they pass.
pub(crate) struct Verifier {
    expected: Option<Checksum>,
    hasher: Option<Hasher>,
}

impl Verifier {
    pub(crate) fn new(expected: Option<Checksum>) -> Verifier {
        let hasher = match &expected {
            // The store hashes sha256 anyway; a second sha256 pass would be wasted work.
            Some(c) if c.algorithm != Algorithm::Sha256 => Some(Hasher::new(c.algorithm)),
            _ => None,
        };
        Verifier { expected, hasher }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
    }

    /// Ok, or the (expected, actual) pair on a mismatch. `sha256_hex` is the store's own digest.
    pub(crate) fn finish(self, sha256_hex: &str) -> Result<(), (Checksum, Checksum)> {
        let Some(expected) = self.expected else {
            return Ok(());
        };
        let actual_hex = match self.hasher {
            Some(hasher) => hasher.finish_hex(),
            None => sha256_hex.to_owned(),
        };
        if actual_hex == expected.hex {
            return Ok(());
        }
        let actual = Checksum {
            algorithm: expected.algorithm,
            hex: actual_hex,
        };
        Err((expected, actual))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    #[test]
    fn parses_names_and_rejects_bad_values() {
        assert!(Checksum::from_hex("SHA256", ABC_SHA256).is_some());
        assert!(Checksum::from_hex("sha-1", ABC_SHA1).is_some());
        assert!(Checksum::from_hex("sha256", ABC_SHA1).is_none());
        assert!(Checksum::from_hex("blake2b", ABC_SHA256).is_none());
        assert!(Checksum::from_hex("sha1", &"z".repeat(40)).is_none());
    }

    #[test]
    fn strongest_prefers_longer_digests() {
        let picked = Checksum::strongest([
            Checksum::from_hex("sha1", ABC_SHA1).unwrap(),
            Checksum::from_hex("sha256", ABC_SHA256).unwrap(),
        ]);
        assert_eq!(picked.unwrap().algorithm, Algorithm::Sha256);
    }

    #[test]
    fn verifier_accepts_match_and_reports_mismatch() {
        let mut ok = Verifier::new(Checksum::from_hex("sha1", ABC_SHA1));
        ok.update(b"ab");
        ok.update(b"c");
        assert!(ok.finish(ABC_SHA256).is_ok());

        let mut bad = Verifier::new(Checksum::from_hex("sha1", ABC_SHA1));
        bad.update(b"abd");
        let (expected, actual) = bad.finish(ABC_SHA256).unwrap_err();
        assert_eq!(expected.hex, ABC_SHA1);
        assert_ne!(actual.hex, ABC_SHA1);

        let sha256 = Verifier::new(Checksum::from_hex("sha256", ABC_SHA256));
        assert!(sha256.finish(ABC_SHA256).is_ok());
    }
}
