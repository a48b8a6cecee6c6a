//! Choosing the full or the abbreviated ("corgi") packument from a request's `Accept` header
//! (brief section 4).
//!
//! Only a client that names the corgi type gets it: a missing `Accept`, `*/*` (yarn berry sends
//! nothing) or a header pmcache cannot read all mean the full document, as at the registry.

use pmcache_proxy::accept::{Specificity, is_type, media_ranges, quality};

/// Which packument document a client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The whole packument, `application/json`.
    Full,
    /// The install subset, `application/vnd.npm.install-v1+json`.
    Abbreviated,
}

/// Media type of the full packument.
pub const FULL_TYPE: &str = "application/json";

/// Media type of the abbreviated packument.
pub const ABBREVIATED_TYPE: &str = "application/vnd.npm.install-v1+json";

impl Representation {
    /// The exact `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            Representation::Full => FULL_TYPE,
            Representation::Abbreviated => ABBREVIATED_TYPE,
        }
    }
}

/// Choose the representation for a request's `Accept` header.
///
/// Abbreviated when the header names `application/vnd.npm.install-v1+json` with q > 0 and no
/// lower than the q the full document gets (ties go to abbreviated, so npm's and pnpm's
/// `…install-v1+json; q=1.0, application/json; q=0.8, */*` is abbreviated). The full document's
/// q comes from the most specific range matching `application/json` (`application/json`, then
/// `application/*`, then `*/*`, RFC 9110 §12.5.1), 0 if none does. Everything else is
/// [`Representation::Full`].
pub fn negotiate(accept: Option<&str>) -> Representation {
    let Some(accept) = accept else {
        return Representation::Full;
    };
    let ranges = media_ranges(accept);
    let named = |essence: &'static str| move |top: &str, sub: &str| is_type(top, sub, essence);
    let full = quality(&ranges, "application", named(FULL_TYPE)).map_or(0, |(q, _)| q);
    // Wildcards never select the abbreviated document: only a client that names it gets it.
    let abbreviated = match quality(&ranges, "application", named(ABBREVIATED_TYPE)) {
        Some((quality, Specificity::Exact)) => quality,
        _ => 0,
    };
    if abbreviated > 0 && abbreviated >= full {
        Representation::Abbreviated
    } else {
        Representation::Full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Representation::{Abbreviated, Full};

    /// What npm (inflate path), pnpm and yarn v1 send for installs (brief section 4).
    const CORGI_FIRST: &str =
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

    #[test]
    fn clients_from_the_brief() {
        assert_eq!(negotiate(Some(CORGI_FIRST)), Abbreviated);
        // npm >= 10.4 building the tree, npm view, yarn info.
        assert_eq!(negotiate(Some("application/json")), Full);
        // pnpm when it needs full metadata.
        assert_eq!(negotiate(Some("application/json; q=1.0, */*")), Full);
        // yarn berry sends no Accept.
        assert_eq!(negotiate(None), Full);
    }

    #[test]
    fn wildcards_and_garbage_mean_full() {
        for accept in [
            "",
            "*/*",
            "application/*",
            "garbage",
            ",,,",
            "text/html",
            ";q=1",
        ] {
            assert_eq!(negotiate(Some(accept)), Full, "{accept:?}");
        }
    }

    #[test]
    fn q_values_decide() {
        let cases = [
            ("application/vnd.npm.install-v1+json;q=0", Full),
            ("application/vnd.npm.install-v1+json;q=0.000, */*;q=0", Full),
            ("application/vnd.npm.install-v1+json", Abbreviated),
            ("APPLICATION/VND.NPM.INSTALL-V1+JSON;Q=0.5", Abbreviated),
            ("application/vnd.npm.install-v1+json;q=0.5, */*", Full),
            (
                "application/vnd.npm.install-v1+json;q=0.5, application/*;q=0.4, */*",
                Abbreviated,
            ),
            (
                "application/vnd.npm.install-v1+json;q=0.8, application/json;q=0.8",
                Abbreviated,
            ),
            (
                "application/json;q=0.9, application/vnd.npm.install-v1+json;q=0.8",
                Full,
            ),
            // The full document matches nothing the client accepts; the corgi is acceptable.
            (
                "text/html, application/vnd.npm.install-v1+json;q=0.1",
                Abbreviated,
            ),
            // An unreadable q drops that entry only.
            (
                "application/vnd.npm.install-v1+json;q=high, application/json",
                Full,
            ),
            (
                "application/json;q=2, application/vnd.npm.install-v1+json;q=0.1",
                Abbreviated,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(Some(accept)), expected, "{accept:?}");
        }
    }

    #[test]
    fn huge_headers_are_bounded() {
        let padding = "text/plain;q=0.1, ".repeat(100_000);
        assert_eq!(
            negotiate(Some(&format!("{CORGI_FIRST}, {padding}"))),
            Abbreviated
        );
        // Past the bound the corgi entry is not read.
        assert_eq!(negotiate(Some(&format!("{padding}{CORGI_FIRST}"))), Full);
        let one_entry = "ü".repeat(1_000_000);
        assert_eq!(negotiate(Some(&one_entry)), Full);
    }
}
