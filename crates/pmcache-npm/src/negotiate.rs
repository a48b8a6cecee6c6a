//! Choosing the full or the abbreviated ("corgi") packument from a request's `Accept` header
//! (brief section 4).
//!
//! Only a client that names the corgi type gets it: a missing `Accept`, `*/*` (yarn berry sends
//! nothing) or a header pmcache cannot read all mean the full document, as at the registry.

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

/// Bytes of `Accept` read; real clients send under 100. Longer headers are cut before the last
/// complete entry, which keeps the work bounded whatever arrives.
const MAX_ACCEPT_LEN: usize = 4096;

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
    let mut abbreviated: Option<u16> = None;
    let mut full = FullQuality::default();
    for range in bounded(accept).split(',').filter_map(MediaRange::parse) {
        if range.is(ABBREVIATED_TYPE) {
            abbreviated = abbreviated.max(Some(range.quality));
        } else {
            full.offer(&range);
        }
    }
    match abbreviated {
        Some(quality) if quality > 0 && quality >= full.quality() => Representation::Abbreviated,
        _ => Representation::Full,
    }
}

/// The header up to [`MAX_ACCEPT_LEN`], without an entry that the cut split in two.
fn bounded(accept: &str) -> &str {
    if accept.len() <= MAX_ACCEPT_LEN {
        return accept;
    }
    let cut = &accept[..accept.floor_char_boundary(MAX_ACCEPT_LEN)];
    cut.rfind(',').map_or("", |comma| &cut[..comma])
}

/// The q the full document gets from the most specific matching range seen so far.
#[derive(Default)]
struct FullQuality {
    exact: Option<u16>,
    application: Option<u16>,
    any: Option<u16>,
}

impl FullQuality {
    fn offer(&mut self, range: &MediaRange<'_>) {
        let slot = if range.is(FULL_TYPE) {
            &mut self.exact
        } else if range.is("application/*") {
            &mut self.application
        } else if range.is("*/*") {
            &mut self.any
        } else {
            return;
        };
        *slot = (*slot).max(Some(range.quality));
    }

    fn quality(&self) -> u16 {
        self.exact.or(self.application).or(self.any).unwrap_or(0)
    }
}

/// One `type/subtype;params` entry of an `Accept` header.
struct MediaRange<'a> {
    essence: &'a str,
    /// q-value in thousandths, 0..=1000.
    quality: u16,
}

impl<'a> MediaRange<'a> {
    /// `None` for entries that are not media ranges or carry an unreadable q; garbage is
    /// skipped, never fatal.
    fn parse(entry: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = entry.split(';');
        let essence = parts.next()?.trim();
        if !essence.contains('/') {
            return None;
        }
        let mut quality = 1000;
        for parameter in parts {
            let Some((key, value)) = parameter.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                quality = parse_quality(value.trim())?;
                // Parameters after q are accept-extensions, not part of the range.
                break;
            }
        }
        Some(MediaRange { essence, quality })
    }

    /// Media types compare case-insensitively (RFC 9110 §8.3.1).
    fn is(&self, essence: &str) -> bool {
        self.essence.eq_ignore_ascii_case(essence)
    }
}

/// An RFC 9110 qvalue (`0`, `0.8`, `1.0`) in thousandths; digits past the third are ignored
/// rather than rejected, since clients are sloppy and the order still comes through.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |sum, digit| sum * 10 + u16::from(digit - b'0'));
    Some((whole + thousandths).min(1000))
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
    fn quality_parsing() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.0"), Some(1000));
        assert_eq!(parse_quality("1.5"), Some(1000));
        assert_eq!(parse_quality("0.8"), Some(800));
        assert_eq!(parse_quality("0.125"), Some(125));
        assert_eq!(parse_quality("0.1259"), Some(125));
        assert_eq!(parse_quality("0."), Some(0));
        assert_eq!(parse_quality(""), None);
        assert_eq!(parse_quality("-1"), None);
        assert_eq!(parse_quality("0.x"), None);
        assert_eq!(parse_quality("0.٣"), None);
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
