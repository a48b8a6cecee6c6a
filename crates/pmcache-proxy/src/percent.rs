//! Strict percent-decoding of what clients send: the one place a malformed escape is an error.
//!
//! Documents from upstreams are decoded leniently (as their clients do) with the
//! `percent-encoding` crate directly; a client's request path or name is decoded here, where a
//! `%` that does not start two hex digits is refused rather than passed on, since an upstream
//! or a later decode could read it differently from the check made on it.

/// `%XX` escapes decoded once; None when a `%` is not followed by two hex digits.
pub fn decode_strict(raw: &str) -> Option<Vec<u8>> {
    if !escapes_are_well_formed(raw.as_bytes()) {
        return None;
    }
    Some(percent_encoding::percent_decode_str(raw).collect())
}

/// Like [`decode_strict`], and the decoded bytes must be UTF-8.
pub fn decode_strict_utf8(raw: &str) -> Option<String> {
    String::from_utf8(decode_strict(raw)?).ok()
}

fn escapes_are_well_formed(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(index, &byte)| {
        byte != b'%'
            || bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_escapes_decode_once() {
        assert_eq!(decode_strict("a%2Fb%2e%2E").unwrap(), b"a/b..");
        assert_eq!(decode_strict("%252e").unwrap(), b"%2e");
        assert_eq!(decode_strict_utf8("%C3%BC%2b").unwrap(), "ü+");
    }

    #[test]
    fn malformed_escapes_and_bad_utf8_are_refused() {
        for raw in ["%", "a%2", "%zz", "%+a", "%-1", "ok%g0"] {
            assert_eq!(decode_strict(raw), None, "{raw}");
        }
        assert_eq!(decode_strict_utf8("%ff"), None);
        assert_eq!(decode_strict("%ff").unwrap(), [0xff]);
    }
}
