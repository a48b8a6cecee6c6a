//! PEP 691 content negotiation: which representation of a page a client gets.
//!
//! The choice depends only on the request (`Accept` and the optional `?format=`), never on what
//! the upstream answered: pmcache can render every representation from one parsed page.

use pmcache_proxy::accept::{self, Specificity};

/// The `Accept` pmcache sends upstream: pip's, so the upstream treats pmcache like the installers
/// it already serves and answers JSON when it can (pip `collector.py` `_get_simple_response`).
pub const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
     application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const HTML_V1: &str = "application/vnd.pypi.simple.v1+html";
const TEXT_HTML: &str = "text/html";

/// A representation pmcache serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/vnd.pypi.simple.v1+json` (PEP 691).
    Json,
    /// `application/vnd.pypi.simple.v1+html` (PEP 691).
    HtmlV1,
    /// `text/html`, the PEP 503 legacy alias of v1+html.
    TextHtml,
}

impl MediaType {
    const ALL: [MediaType; 3] = [MediaType::Json, MediaType::HtmlV1, MediaType::TextHtml];

    /// The exact `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::Json => JSON,
            MediaType::HtmlV1 => HTML_V1,
            MediaType::TextHtml => TEXT_HTML,
        }
    }

    /// Whether the body is the JSON rendering (else the HTML one).
    pub fn is_json(self) -> bool {
        self == MediaType::Json
    }

    /// The type a `?format=` value names exactly, `latest` included.
    fn named(media_type: &str) -> Option<MediaType> {
        let (top_level, subtype) = media_type.split_once('/')?;
        MediaType::ALL
            .into_iter()
            .find(|offer| offer.is_named_by(top_level, subtype))
    }

    fn is_named_by(self, top_level: &str, subtype: &str) -> bool {
        top_level.eq_ignore_ascii_case(self.top_level())
            && self
                .subtypes()
                .iter()
                .any(|name| subtype.eq_ignore_ascii_case(name))
    }

    fn top_level(self) -> &'static str {
        match self {
            MediaType::Json | MediaType::HtmlV1 => "application",
            MediaType::TextHtml => "text",
        }
    }

    /// Subtypes that name this representation; `latest` is the PEP 691 meta version.
    fn subtypes(self) -> &'static [&'static str] {
        match self {
            MediaType::Json => &["vnd.pypi.simple.v1+json", "vnd.pypi.simple.latest+json"],
            MediaType::HtmlV1 => &["vnd.pypi.simple.v1+html", "vnd.pypi.simple.latest+html"],
            MediaType::TextHtml => &["html"],
        }
    }

    /// Tie-break among equal q-values, after a type the client named has beaten one it matched
    /// only by a wildcard. Among named types the most expressive wins (the spec's advice); among
    /// wildcard matches `text/html`, because a client that sent only wildcards is like one without
    /// `Accept` (`*/*` by the spec): warehouse answers it `text/html`, and old `requests`-based
    /// tools, which send `*/*`, expect HTML.
    fn preference(self, named_explicitly: bool) -> u8 {
        match (self, named_explicitly) {
            (MediaType::Json, true) => 3,
            (MediaType::HtmlV1, true) => 2,
            (MediaType::TextHtml, true) => 1,
            (MediaType::TextHtml, false) => 3,
            (MediaType::Json, false) => 2,
            (MediaType::HtmlV1, false) => 1,
        }
    }
}

/// Choose the representation for a request.
///
/// `format_query` is the raw value of `?format=`: if it names a supported type exactly it wins
/// (spec "Version + Format Selection"). Otherwise `Accept` decides by q-value; nothing acceptable,
/// no header, or a header that cannot be read all give [`MediaType::TextHtml`].
pub fn negotiate(accept: Option<&str>, format_query: Option<&str>) -> MediaType {
    if let Some(chosen) = format_query.and_then(from_format_query) {
        return chosen;
    }
    accept.and_then(from_accept).unwrap_or(MediaType::TextHtml)
}

fn from_format_query(raw: &str) -> Option<MediaType> {
    // A query decoder may have turned the `+` into a space, or left it as `%2B`.
    let decoded = raw
        .trim()
        .replace(' ', "+")
        .replace("%2B", "+")
        .replace("%2b", "+");
    let decoded = decoded.replace("%2F", "/").replace("%2f", "/");
    MediaType::named(&decoded)
}

fn from_accept(accept: &str) -> Option<MediaType> {
    let ranges = accept::media_ranges(accept);
    MediaType::ALL
        .into_iter()
        .filter_map(|offer| {
            let names_offer = |top: &str, sub: &str| offer.is_named_by(top, sub);
            let (quality, specificity) = accept::quality(&ranges, offer.top_level(), names_offer)?;
            let explicit = specificity == Specificity::Exact;
            (quality > 0).then_some(((quality, explicit, offer.preference(explicit)), offer))
        })
        .max_by_key(|&(rank, _)| rank)
        .map(|(_, offer)| offer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaType::*;

    const PIP: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
    const UV: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
    const POETRY: &str = "application/vnd.pypi.simple.v1+json, */*;q=0.1";
    const POETRY_PYPI: &str = "application/vnd.pypi.simple.v1+json";
    const BROWSER: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";

    fn accept(header: &str) -> MediaType {
        negotiate(Some(header), None)
    }

    #[test]
    fn installers_get_json() {
        assert_eq!(accept(PIP), Json);
        assert_eq!(accept(UV), Json);
        assert_eq!(accept(POETRY), Json);
        assert_eq!(accept(POETRY_PYPI), Json);
        assert_eq!(accept(UPSTREAM_ACCEPT), Json);
    }

    #[test]
    fn curl_and_old_tools_get_text_html() {
        assert_eq!(negotiate(None, None), TextHtml);
        assert_eq!(accept("*/*"), TextHtml);
        assert_eq!(accept(""), TextHtml);
        assert_eq!(accept("text/html"), TextHtml);
        assert_eq!(accept("text/*"), TextHtml);
        assert_eq!(accept(BROWSER), TextHtml);
    }

    #[test]
    fn html_only_clients_get_what_they_named() {
        assert_eq!(accept("application/vnd.pypi.simple.v1+html"), HtmlV1);
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+html, text/html"),
            HtmlV1
        );
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+html;q=0.5, text/html"),
            TextHtml
        );
        assert_eq!(accept("Application/Vnd.PyPI.Simple.V1+HTML"), HtmlV1);
    }

    #[test]
    fn q_values_decide_before_preference() {
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+json;q=0.5, text/html"),
            TextHtml
        );
        assert_eq!(
            accept("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.51"),
            Json
        );
        assert_eq!(
            accept("text/html ; q=1.000, application/*;q=0.999"),
            TextHtml
        );
        // Equal q: the most expressive type the client named.
        assert_eq!(
            accept("text/html, application/vnd.pypi.simple.v1+json"),
            Json
        );
        // Named beats wildcard at equal q.
        assert_eq!(accept("text/html, */*"), TextHtml);
        assert_eq!(accept("application/*"), Json);
    }

    #[test]
    fn q_zero_means_not_acceptable() {
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+json;q=0, */*"),
            TextHtml
        );
        assert_eq!(accept("application/vnd.pypi.simple.v1+json;q=0"), TextHtml);
        assert_eq!(accept("text/html;q=0, application/*;q=0.1"), Json);
        assert_eq!(accept("*/*;q=0"), TextHtml);
        assert_eq!(
            accept("text/html;q=0.0, application/vnd.pypi.simple.v1+html;q=0.001"),
            HtmlV1
        );
    }

    #[test]
    fn latest_is_answered_with_the_concrete_version() {
        assert_eq!(accept("application/vnd.pypi.simple.latest+json"), Json);
        assert_eq!(accept("application/vnd.pypi.simple.latest+html"), HtmlV1);
        assert_eq!(Json.content_type(), "application/vnd.pypi.simple.v1+json");
    }

    #[test]
    fn format_query_wins_when_it_names_a_supported_type() {
        let json = Some("application/vnd.pypi.simple.v1+json");
        assert_eq!(negotiate(Some("text/html"), json), Json);
        assert_eq!(negotiate(None, Some("text/html")), TextHtml);
        assert_eq!(
            negotiate(Some(PIP), Some("application/vnd.pypi.simple.v1+html")),
            HtmlV1
        );
        // Decoded by a form decoder, or still percent-encoded.
        assert_eq!(
            negotiate(None, Some("application/vnd.pypi.simple.v1 json")),
            Json
        );
        assert_eq!(
            negotiate(None, Some("application%2Fvnd.pypi.simple.v1%2Bjson")),
            Json
        );
        // Unsupported or wildcard: ignored, Accept decides.
        assert_eq!(negotiate(Some(PIP), Some("*/*")), Json);
        assert_eq!(negotiate(Some(PIP), Some("application/json")), Json);
        assert_eq!(negotiate(None, Some("")), TextHtml);
    }

    #[test]
    fn garbage_falls_back_to_text_html() {
        for header in [
            ",,,;;;",
            "application",
            "/",
            "*/json",
            "application/vnd.pypi.simple.v1+json;q=abc",
            "application/vnd.pypi.simple.v1+json;q=2",
            "application/vnd.pypi.simple.v1+json;q=-1",
            "application/vnd.pypi.simple.v1+json;q=",
            "\u{0}\u{ffff}/\u{1F600};q=0.5",
            "text/html;q=0.5.5",
        ] {
            assert_eq!(accept(header), TextHtml, "{header:?}");
        }
        assert_eq!(accept("garbage, application/vnd.pypi.simple.v1+json"), Json);
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+json;q=0.12345"),
            Json
        );
        assert_eq!(
            accept("application/vnd.pypi.simple.v1+json;level=1;q=.5"),
            Json
        );
    }

    #[test]
    fn huge_headers_do_not_hurt() {
        // Only the first 4 KiB are read (real clients send under 200 bytes): a type named past
        // that is not seen, and the answer falls back to HTML.
        let huge = "text/plain;q=0.5, ".repeat(50_000) + "application/vnd.pypi.simple.v1+json";
        assert_eq!(accept(&huge), TextHtml);
        let short = "text/plain;q=0.5, ".repeat(10) + "application/vnd.pypi.simple.v1+json";
        assert_eq!(accept(&short), Json);
        let digits = format!("text/html;q=0.{}", "9".repeat(100_000));
        assert_eq!(accept(&digits), TextHtml);
        assert_eq!(negotiate(None, Some(&"x".repeat(100_000))), TextHtml);
    }
}
