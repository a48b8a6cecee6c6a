//! `Accept` headers (RFC 9110 §12.5.1): media ranges with q-values, and the q a given media type
//! gets from its most specific matching range. Frontends decide what to offer; this only reads.

/// Bytes of `Accept` read; real clients send under 200. Longer headers are cut before the last
/// complete entry, which keeps the work bounded whatever arrives.
const MAX_ACCEPT_LEN: usize = 4096;

/// How specifically a range matched a media type; more specific ranges decide its q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    /// `*/*`
    Any,
    /// `type/*`
    TopLevel,
    /// `type/subtype`
    Exact,
}

/// One `type/subtype;params` entry of an `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaRange<'a> {
    /// The part before `/` (`application`, or `*`), as sent.
    pub top_level: &'a str,
    /// The part after `/` without parameters (`vnd.pypi.simple.v1+json`, or `*`), as sent.
    pub subtype: &'a str,
    /// q-value in thousandths, 0..=1000.
    pub quality: u16,
}

/// The readable ranges of a header; garbage entries are skipped, never fatal.
pub fn media_ranges(accept: &str) -> Vec<MediaRange<'_>> {
    bounded(accept)
        .split(',')
        .filter_map(MediaRange::parse)
        .collect()
}

/// The q (thousandths) that the most specific range matching a media type gives it, with that
/// specificity; None when no range matches. `top_level` is the type's top-level name;
/// `names_exactly` says whether a `top/sub` pair names it (frontends with aliases such as
/// PEP 691's `latest` decide that themselves).
pub fn quality(
    ranges: &[MediaRange<'_>],
    top_level: &str,
    names_exactly: impl Fn(&str, &str) -> bool,
) -> Option<(u16, Specificity)> {
    ranges
        .iter()
        .filter_map(|range| {
            let specificity = if range.top_level == "*" {
                Specificity::Any
            } else if !range.top_level.eq_ignore_ascii_case(top_level) {
                return None;
            } else if range.subtype == "*" {
                Specificity::TopLevel
            } else if names_exactly(range.top_level, range.subtype) {
                Specificity::Exact
            } else {
                return None;
            };
            Some((specificity, range.quality))
        })
        .max()
        .map(|(specificity, quality)| (quality, specificity))
}

/// Whether `top/sub` is the media type `essence`, case-insensitively (RFC 9110 §8.3.1).
pub fn is_type(top_level: &str, subtype: &str, essence: &str) -> bool {
    essence.split_once('/').is_some_and(|(top, sub)| {
        top.eq_ignore_ascii_case(top_level) && sub.eq_ignore_ascii_case(subtype)
    })
}

/// The header up to [`MAX_ACCEPT_LEN`], without an entry that the cut split in two.
fn bounded(accept: &str) -> &str {
    if accept.len() <= MAX_ACCEPT_LEN {
        return accept;
    }
    let cut = &accept[..accept.floor_char_boundary(MAX_ACCEPT_LEN)];
    cut.rfind(',').map_or("", |comma| &cut[..comma])
}

impl<'a> MediaRange<'a> {
    fn parse(entry: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = entry.split(';');
        let (top_level, subtype) = parts.next()?.trim().split_once('/')?;
        let (top_level, subtype) = (top_level.trim(), subtype.trim());
        if top_level.is_empty() || subtype.is_empty() || (top_level == "*" && subtype != "*") {
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
        Some(MediaRange {
            top_level,
            subtype,
            quality,
        })
    }
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; digits past the third are ignored
/// rather than rejected, since clients are sloppy and the order still comes through.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        // `.2`: sloppy, but its meaning is plain.
        "" if !fraction.is_empty() => 0,
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

    fn json(top: &str, sub: &str) -> bool {
        is_type(top, sub, "application/json")
    }

    #[test]
    fn the_most_specific_range_decides() {
        let ranges = media_ranges("application/json;q=0.2, application/*;q=0.9, */*;q=1");
        assert_eq!(
            quality(&ranges, "application", json),
            Some((200, Specificity::Exact))
        );
        let ranges = media_ranges("application/*;q=0.9, */*");
        assert_eq!(
            quality(&ranges, "application", json),
            Some((900, Specificity::TopLevel))
        );
        assert_eq!(
            quality(&media_ranges("text/html"), "application", json),
            None
        );
    }

    #[test]
    fn q_values_parse_leniently_and_garbage_is_skipped() {
        assert_eq!(parse_quality("0.8"), Some(800));
        assert_eq!(parse_quality("1.0"), Some(1000));
        assert_eq!(parse_quality("0.12345"), Some(123));
        assert_eq!(parse_quality("1.5"), Some(1000));
        assert_eq!(parse_quality(".2"), Some(200));
        assert_eq!(parse_quality(""), None);
        assert_eq!(parse_quality("0x1"), None);
        assert_eq!(parse_quality("0."), Some(0));
        assert_eq!(parse_quality("-1"), None);
        assert_eq!(parse_quality("0.٣"), None);
        assert_eq!(parse_quality("2"), None);
        assert_eq!(parse_quality("0.x"), None);
        let ranges = media_ranges("garbage, */json, text/html; q=oops, application/json; q=0.5");
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].quality, 500);
    }

    #[test]
    fn huge_headers_are_cut_at_an_entry_boundary() {
        let header = "application/json, ".repeat(10_000);
        let ranges = media_ranges(&header);
        assert!(ranges.len() < 300 && !ranges.is_empty());
    }
}
