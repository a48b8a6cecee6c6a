//! Published checksums: hex values with algorithm names, and npm SRI strings. Whatever is
//! accepted is canonical (lowercase hex of the algorithm's length) and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_npm::wire::integrity_checksum;
use pmcache_proxy::{Algorithm, Checksum};

fuzz_target!(|data: &[u8]| {
    let Some((algorithm, value)) = pmcache_fuzz::two_strings(data) else {
        return;
    };
    if let Some(parsed) = Algorithm::from_name(algorithm) {
        assert_eq!(Algorithm::from_name(parsed.name()), Some(parsed));
    }
    if let Some(checksum) = Checksum::from_hex(algorithm, value) {
        assert_canonical(&checksum);
        assert_eq!(Algorithm::from_name(algorithm), Some(checksum.algorithm));
        assert_eq!(checksum.hex, value.trim().to_ascii_lowercase());
    }
    for sri in [algorithm, value] {
        if let Some(checksum) = integrity_checksum(sri) {
            assert_canonical(&checksum);
            // Only an `alg-digest` token can give a checksum.
            assert!(sri.contains('-'));
        }
    }
});

fn assert_canonical(checksum: &Checksum) {
    let length = match checksum.algorithm {
        Algorithm::Md5 => 32,
        Algorithm::Sha1 => 40,
        Algorithm::Sha224 => 56,
        Algorithm::Sha256 => 64,
        Algorithm::Sha384 => 96,
        Algorithm::Sha512 => 128,
    };
    assert_eq!(checksum.hex.len(), length, "{checksum}");
    assert!(
        checksum
            .hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    let again = Checksum::from_hex(checksum.algorithm.name(), &checksum.hex);
    assert_eq!(again.as_ref(), Some(checksum));
    let (name, hex) = checksum
        .to_string()
        .split_once('=')
        .map(|(n, h)| (n.to_owned(), h.to_owned()))
        .expect("name=hex");
    assert_eq!(Checksum::from_hex(&name, &hex).as_ref(), Some(checksum));
}
