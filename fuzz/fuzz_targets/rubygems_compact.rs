//! RubyGems compact index files (`/versions`, `/info/NAME`) and upstream digest headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_rubygems::compact::{
    check_upstream_digests, info_checksums, info_entries, is_compact_index,
};

fuzz_target!(|data: &[u8]| {
    let has_separator = data.split(|&b| b == b'\n').any(|line| line == b"---");
    assert_eq!(is_compact_index(data), has_separator);

    let checksums = info_checksums(data);
    if !has_separator {
        assert!(checksums.is_empty(), "lines before '---' are header");
    }
    // Written back as a /versions file, the map reads back the same.
    let mut versions = String::from("created_at: 2024-01-01T00:00:00Z\n---\n");
    for (name, md5) in &checksums {
        assert!(!name.contains([' ', '\n']) && !md5.contains([' ', '\n']));
        versions.push_str(&format!("{name} 1.0 {md5}\n"));
    }
    assert_eq!(info_checksums(versions.as_bytes()), checksums);

    let entries = info_entries(data);
    assert!(entries.len() <= data.split(|&b| b == b'\n').count());
    for entry in &entries {
        assert!(!entry.version.contains([' ', '\n']), "{:?}", entry.version);
        if let Some(checksum) = &entry.checksum {
            assert_eq!(checksum.algorithm.name(), "sha256");
            assert_eq!(checksum.hex.len(), 64);
            assert!(
                checksum
                    .hex
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }

    // Digest headers: whatever the upstream sent, a right sha-256 passes and nothing panics.
    if let Some((value, body)) = pmcache_fuzz::two_strings(data) {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.insert("repr-digest", value.clone());
            headers.insert("digest", value);
            let _ = check_upstream_digests(&headers, body.as_bytes());
        }
        let digest = pmcache_proxy::Digest::of(body.as_bytes());
        let right = base64_encode(digest.as_bytes());
        let mut headers = http::HeaderMap::new();
        let value = format!("sha-512=:x:, sha-256=:{right}:");
        headers.insert("repr-digest", value.parse().expect("a valid header value"));
        assert!(check_upstream_digests(&headers, body.as_bytes()).is_ok());
    }
});

/// Standard base64 with padding, written out so the fuzz crate needs no base64 dependency.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
