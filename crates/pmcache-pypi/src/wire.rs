//! Upstream simple-API documents (PEP 503 HTML, PEP 691 JSON) parsed into one model that keeps
//! everything needed to render either representation faithfully.
//!
//! Clients pick a representation per request, and the upstream may answer either one (or ignore
//! what pmcache asked for), so both parse into [`ProjectPage`]; `rewrite` renders from it. The
//! model keeps the upstream's own keys and attributes next to the parsed fields, because clients
//! rely on keys pmcache does not interpret (`upload-time`, `size`, `versions`, private `_` keys).
//!
//! `json` reads PEP 691, `html` tokenizes PEP 503; both build the model defined here.

mod html;
mod json;

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use serde_json::{Map, Value};
use url::Url;

use crate::name::ProjectName;
use crate::{Error, Result};

use html::{parse_html_list, parse_html_page};
use json::{parse_json_list, parse_json_page};

/// Hash names hashlib can compute without parameters, the ones PEP 503 fragments may carry.
const HASH_NAMES: [&str; 12] = [
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s", "sha3_224",
    "sha3_256", "sha3_384", "sha3_512",
];

/// One project's detail page (`/simple/<name>/`), from either representation.
#[derive(Clone, Debug)]
pub struct ProjectPage {
    name: String,
    files: Vec<File>,
    origin: PageOrigin,
}

/// What the upstream said about the page beyond its files, in its own terms.
#[derive(Clone, Debug)]
pub(crate) enum PageOrigin {
    /// The upstream document, its `files` replaced by `null` (they live in [`File`]s).
    Json {
        document: Map<String, Value>,
        api_version: String,
    },
    /// `<meta name="pypi:…">` elements of the head, in document order.
    Html { metas: Vec<(String, String)> },
}

/// One distribution file of a project page.
#[derive(Clone, Debug)]
pub struct File {
    /// JSON `filename`, or for HTML the percent-decoded last path segment of the link.
    pub filename: String,
    /// Absolute upstream URL, without fragment.
    pub url: Url,
    /// Published digests of the file by lowercase hash name, values exactly as published.
    pub hashes: BTreeMap<String, String>,
    /// Whether a PEP 658 `.metadata` file exists next to the file.
    pub core_metadata: CoreMetadata,
    pub(crate) requires_python: Option<String>,
    pub(crate) yanked: Option<String>,
    pub(crate) gpg_sig: Option<bool>,
    pub(crate) provenance: Option<String>,
    pub(crate) origin: FileOrigin,
}

/// The upstream's own description of a file, re-emitted with only the URL changed.
#[derive(Clone, Debug)]
pub(crate) enum FileOrigin {
    /// The file's JSON object, every key in upstream order.
    Json(Map<String, Value>),
    /// The `<a>` attributes in document order, values decoded.
    Html(Vec<(String, String)>),
}

/// PEP 658/714 core metadata availability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreMetadata {
    /// Not advertised: pmcache must not advertise it either.
    Absent,
    /// Advertised, with the `.metadata` file's own digests (empty for a bare `true`).
    Present {
        /// Digests of the `.metadata` file by lowercase hash name.
        hashes: BTreeMap<String, String>,
    },
}

/// The root page (`/simple/`): every project the upstream lists.
#[derive(Clone, Debug)]
pub struct ProjectList {
    projects: Vec<(String, ProjectName)>,
}

impl ProjectPage {
    /// Parse an upstream project detail page, JSON (PEP 691, any api-version 1.x) or HTML
    /// (PEP 503), chosen by `content_type`. Relative URLs resolve against `page_url`, the URL the
    /// page was finally fetched from (or the first `<base href>` in HTML).
    pub fn parse(body: &[u8], content_type: &str, page_url: &Url) -> Result<ProjectPage> {
        let parsed = if is_json(content_type) {
            parse_json_page(body, page_url)
        } else {
            parse_html_page(body, page_url)
        };
        parsed.map_err(|reason| document_error(page_url.as_str(), reason))
    }

    /// The files, in upstream order.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The project name as the page gives it (PEP 691 `name`, else from the page URL).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn origin(&self) -> &PageOrigin {
        &self.origin
    }

    /// Removes the files `hidden` says the policy refuses, and from a JSON page's PEP 700
    /// `versions` the versions none of whose files is left; answers those versions.
    pub fn hide_files(&mut self, mut hidden: impl FnMut(&File) -> bool) -> HashSet<String> {
        let mut gone: HashSet<String> = HashSet::new();
        self.files.retain(|file| {
            let hide = hidden(file);
            if hide && let Some(version) = crate::name::version_in_filename(&file.filename) {
                gone.insert(version);
            }
            !hide
        });
        for file in &self.files {
            if let Some(version) = crate::name::version_in_filename(&file.filename) {
                gone.remove(&version);
            }
        }
        if let PageOrigin::Json { document, .. } = &mut self.origin
            && let Some(Value::Array(versions)) = document.get_mut("versions")
        {
            versions.retain(|version| version.as_str().is_none_or(|v| !gone.contains(v)));
        }
        gone
    }
}

impl File {
    /// When it was uploaded (PEP 700 `upload-time`, JSON pages only).
    pub fn upload_time(&self) -> Option<SystemTime> {
        let FileOrigin::Json(raw) = &self.origin else {
            return None;
        };
        pmcache_policy::parse_time(raw.get("upload-time")?.as_str()?)
    }

    /// The release's Requires-Python, unescaped.
    pub fn requires_python(&self) -> Option<&str> {
        self.requires_python.as_deref()
    }

    /// `Some(reason)` if yanked (PEP 592), the reason empty when none was given.
    pub fn yanked(&self) -> Option<&str> {
        self.yanked.as_deref()
    }

    /// The PEP 740 provenance URL, kept verbatim.
    pub fn provenance(&self) -> Option<&str> {
        self.provenance.as_deref()
    }
}

impl CoreMetadata {
    /// Whether the upstream advertised a `.metadata` file.
    pub fn is_present(&self) -> bool {
        matches!(self, CoreMetadata::Present { .. })
    }
}

impl ProjectList {
    /// Parse the upstream root page, JSON or HTML by `content_type`. Entries whose name is not a
    /// valid project name are left out: pmcache could not serve them anyway.
    pub fn parse(body: &[u8], content_type: &str) -> Result<ProjectList> {
        let parsed = if is_json(content_type) {
            parse_json_list(body)
        } else {
            Ok(parse_html_list(body))
        };
        parsed.map_err(|reason| document_error("the project list", reason))
    }

    /// The project names as the upstream spelled them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.projects.iter().map(|(name, _)| name.as_str())
    }

    /// The listed projects with their normalised names, in upstream order.
    pub fn projects(&self) -> impl Iterator<Item = (&str, &ProjectName)> {
        self.projects
            .iter()
            .map(|(name, normal)| (name.as_str(), normal))
    }
}

fn document_error(url: &str, source: Malformed) -> Error {
    Error::Document {
        url: url.to_owned(),
        source,
    }
}

/// What is wrong with an upstream page, typed by what failed to read.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// The JSON form does not parse as JSON.
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
    /// A file URL that does not resolve against the page URL.
    #[error("bad URL {href:?}")]
    Url {
        /// The URL as the page wrote it.
        href: String,
        /// Why it does not resolve.
        #[source]
        source: url::ParseError,
    },
    /// One file entry of the JSON form is unusable.
    #[error("file {index}")]
    File {
        /// Its position in `files`.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Malformed>,
    },
    /// The document reads, but not as a simple-API page (a key missing or of the wrong type,
    /// an api-version pmcache cannot read).
    #[error("{0}")]
    Shape(String),
}

impl Malformed {
    fn shape(reason: &str) -> Malformed {
        Malformed::Shape(reason.to_owned())
    }
}

impl From<&str> for Malformed {
    fn from(reason: &str) -> Malformed {
        Malformed::shape(reason)
    }
}

/// Whether a response is the JSON form; anything else is read as HTML, as pip does with
/// `text/html` and `application/vnd.pypi.simple.v1+html`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let lower = essence.to_ascii_lowercase();
    lower == "application/json"
        || (lower.starts_with("application/vnd.pypi.simple.") && lower.ends_with("+json"))
}

/// PEP 629: clients must fail on a major version they do not know; any 1.x is readable.
fn check_api_version(version: &str) -> Result<(), Malformed> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match version.split_once('.') {
        Some((major, minor)) if digits(major) && digits(minor) => {
            if major.trim_start_matches('0') == "1" {
                Ok(())
            } else {
                Err(Malformed::Shape(format!(
                    "unsupported api-version {version:?} (major version must be 1)"
                )))
            }
        }
        _ => Err(Malformed::Shape(format!(
            "api-version {version:?} is not Major.Minor"
        ))),
    }
}

fn listed_project(name: &str) -> Option<(String, ProjectName)> {
    let name = name.trim();
    ProjectName::parse(name)
        .ok()
        .map(|normal| (name.to_owned(), normal))
}

// --- URLs ---

/// Resolve a link the way pip and uv do, and accept only what pmcache may fetch: http(s).
/// The fragment stays: HTML carries the file's hash there.
fn resolve(base: &Url, href: &str) -> Result<Url, Malformed> {
    // HTML strips ASCII whitespace around URL attributes; JSON never has any.
    let url = base
        .join(href.trim_matches(|c: char| c.is_ascii_whitespace()))
        .map_err(|source| Malformed::Url {
            href: href.to_owned(),
            source,
        })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Malformed::Shape(format!("URL {href:?} is not http(s)")));
    }
    Ok(url)
}

/// The last path segment, still percent-encoded; empty for a URL ending in `/`.
pub(crate) fn last_segment(url: &Url) -> &str {
    url.path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default()
}

/// The normalised project name a page URL ends in (`…/simple/<name>/`).
fn name_from_url(page_url: &Url) -> Option<String> {
    let segment = page_url.path_segments()?.rev().find(|s| !s.is_empty())?;
    ProjectName::parse(&percent_decode(segment))
        .ok()
        .map(|name| name.to_string())
}

/// Decode `%XX` escapes; anything that is not a valid escape stays as it is, like Python's
/// `urllib.parse.unquote`, which pip uses for file names.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::html::html_core_metadata;
    use super::json::json_yanked;
    use super::*;

    fn page_url() -> Url {
        Url::parse("https://index.example/simple/demo/").expect("valid URL")
    }

    fn html(body: &str) -> ProjectPage {
        ProjectPage::parse(body.as_bytes(), "text/html", &page_url()).expect("parses")
    }

    fn json(body: &str) -> Result<ProjectPage> {
        ProjectPage::parse(
            body.as_bytes(),
            "application/vnd.pypi.simple.v1+json",
            &page_url(),
        )
    }

    fn reason(result: Result<ProjectPage>) -> String {
        match result {
            Err(error @ Error::Document { .. }) => pmcache_proxy::chain(&error),
            other => panic!("expected a document error, got {other:?}"),
        }
    }

    #[test]
    fn html_link_gives_url_filename_hash_and_attributes() {
        let page = html(
            r#"<a href="https://files.example/p/demo-1.0%2Blocal-py3-none-any.whl#sha256=AbC1&amp;egg=x"
                  data-requires-python="&gt;=3.8,&lt;4" data-yanked data-core-metadata="sha256=def"
                  data-gpg-sig="false">demo</a>"#,
        );
        let [file] = page.files() else {
            panic!("one file expected: {:?}", page.files())
        };
        assert_eq!(file.filename, "demo-1.0+local-py3-none-any.whl");
        assert_eq!(
            file.url.as_str(),
            "https://files.example/p/demo-1.0%2Blocal-py3-none-any.whl"
        );
        assert_eq!(file.hashes.get("sha256").map(String::as_str), Some("AbC1"));
        assert_eq!(file.requires_python(), Some(">=3.8,<4"));
        assert_eq!(file.yanked(), Some(""));
        assert_eq!(file.gpg_sig, Some(false));
        let expected = BTreeMap::from([("sha256".to_owned(), "def".to_owned())]);
        assert_eq!(
            file.core_metadata,
            CoreMetadata::Present { hashes: expected }
        );
        assert_eq!(page.name(), "demo");
    }

    #[test]
    fn html_relative_links_resolve_against_the_first_base() {
        let page = html(
            r#"<a href="a-1.tar.gz">x</a>
               <base href="https://mirror.example/base/"><base href="https://ignored.example/">
               <a href="../b-1.tar.gz">y</a>"#,
        );
        let urls: Vec<_> = page.files().iter().map(|f| f.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://mirror.example/base/a-1.tar.gz",
                "https://mirror.example/b-1.tar.gz"
            ]
        );
    }

    #[test]
    fn html_skips_anchors_that_are_not_files() {
        let page = html(
            r#"<a name="top">top</a><a href="../">up</a><a href="mailto:x@example.org">m</a>
               <a href="javascript:alert(1)">j</a><a href="ftp://files.example/a.whl">f</a>
               <script>document.write('<a href="c-1.whl">c</a>')</script>
               <a href="d-1.whl">d</a>"#,
        );
        let names: Vec<_> = page.files().iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(names, ["d-1.whl"]);
    }

    #[test]
    fn html_keeps_attribute_order_and_first_duplicate() {
        let page = html(r#"<a data-z="1" HREF="a-1.whl" data-a="2" data-z="3" bare>a</a>"#);
        let FileOrigin::Html(attributes) = &page.files()[0].origin else {
            panic!("HTML origin expected")
        };
        let names: Vec<_> = attributes.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["data-z=1", "href=a-1.whl", "data-a=2", "bare="]);
    }

    #[test]
    fn html_metadata_values() {
        let metadata = |value: Option<&str>| html_core_metadata(value.map(str::to_owned));
        assert_eq!(metadata(None), CoreMetadata::Absent);
        assert_eq!(metadata(Some("false")), CoreMetadata::Absent);
        assert!(metadata(Some("true")).is_present());
        assert!(metadata(Some("garbage")).is_present());
        let page = html(r#"<a href="a.whl" data-dist-info-metadata="sha256=1">a</a>"#);
        assert!(page.files()[0].core_metadata.is_present());
    }

    #[test]
    fn html_repository_version_must_be_major_1() {
        let head = r#"<meta name="pypi:repository-version" content="2.0"><a href="a.whl">a</a>"#;
        let result = ProjectPage::parse(head.as_bytes(), "text/html", &page_url());
        assert!(reason(result).contains("unsupported api-version"));
        let page = html(r#"<meta name="pypi:repository-version" content="1.4">"#);
        let PageOrigin::Html { metas } = page.origin() else {
            panic!("HTML origin expected")
        };
        assert_eq!(
            metas[0],
            ("pypi:repository-version".to_owned(), "1.4".to_owned())
        );
    }

    #[test]
    fn html_name_falls_back_to_the_title() {
        let url = Url::parse("https://index.example/").expect("valid URL");
        let body = b"<title>Links for Demo_Pkg</title><a href='a.whl'>a</a>";
        let page = ProjectPage::parse(body, "text/html", &url).expect("parses");
        assert_eq!(page.name(), "demo-pkg");
        let result = ProjectPage::parse(b"<a href='a.whl'>a</a>", "text/html", &url);
        assert!(reason(result).contains("no name"));
    }

    #[test]
    fn html_garbage_does_not_panic() {
        for body in [
            &b"\xff\xfe<a href=\"\xff.whl\">"[..],
            b"<a href=",
            b"<<<>>>&&&;;",
            b"<a href='%zz%%41.whl'>",
            b"<base href='::::'><a href='x.whl'>",
            b"</a foo=bar><a",
        ] {
            let _ = ProjectPage::parse(body, "text/html", &page_url());
            let _ = ProjectList::parse(body, "text/html");
        }
    }

    #[test]
    fn json_file_fields() {
        let page = json(
            r#"{"meta": {"api-version": "1.1"}, "name": "demo", "files": [
                {"filename": "demo-1.0.tar.gz", "url": "../../packages/demo-1.0.tar.gz#frag",
                 "hashes": {"SHA256": "ab"}, "requires-python": null, "yanked": "bad",
                 "dist-info-metadata": {"sha256": "cd"}, "provenance": "https://index.example/p"}]}"#,
        )
        .expect("parses");
        let file = &page.files()[0];
        assert_eq!(
            file.url.as_str(),
            "https://index.example/packages/demo-1.0.tar.gz"
        );
        assert_eq!(file.hashes.get("sha256").map(String::as_str), Some("ab"));
        assert_eq!(file.requires_python(), None);
        assert_eq!(file.yanked(), Some("bad"));
        assert_eq!(file.provenance(), Some("https://index.example/p"));
        assert!(file.core_metadata.is_present());
    }

    #[test]
    fn json_core_metadata_first_key_wins() {
        let file = |keys: &str| {
            let body = format!(
                r#"{{"meta": {{"api-version": "1.0"}}, "name": "demo", "files": [
                    {{"filename": "a.whl", "url": "a.whl", "hashes": {{}} {keys}}}]}}"#
            );
            json(&body).map(|page| page.files()[0].core_metadata.clone())
        };
        assert_eq!(file("").expect("parses"), CoreMetadata::Absent);
        let present = file(r#", "core-metadata": true"#).expect("parses");
        assert_eq!(
            present,
            CoreMetadata::Present {
                hashes: BTreeMap::new()
            }
        );
        let shadowed = r#", "core-metadata": false, "data-dist-info-metadata": true"#;
        assert_eq!(file(shadowed).expect("parses"), CoreMetadata::Absent);
        assert!(file(r#", "core-metadata": "yes""#).is_err());
    }

    #[test]
    fn json_yanked_reads_like_pip() {
        assert_eq!(
            json_yanked(Some(&Value::Bool(true))).unwrap(),
            Some(String::new())
        );
        assert_eq!(
            json_yanked(Some(&Value::String(String::new()))).unwrap(),
            None
        );
        assert_eq!(json_yanked(Some(&Value::Bool(false))).unwrap(), None);
        assert!(json_yanked(Some(&Value::from(1))).is_err());
    }

    #[test]
    fn json_malformed_documents_are_errors() {
        let cases = [
            ("", "invalid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"files": []}"#, "api-version"),
            (
                r#"{"meta": {"api-version": "2.0"}, "files": []}"#,
                "unsupported",
            ),
            (
                r#"{"meta": {"api-version": "1"}, "files": []}"#,
                "Major.Minor",
            ),
            (r#"{"meta": {"api-version": "1.0"}}"#, "`files`"),
            (
                r#"{"meta": {"api-version": "1.0"}, "files": [1]}"#,
                "file 0: not an object",
            ),
            (
                r#"{"meta": {"api-version": "1.0"}, "files": [{"url": "a"}]}"#,
                "filename",
            ),
            (
                r#"{"meta": {"api-version": "1.0"}, "files": [{"filename": "a", "url": "file:///etc/passwd"}]}"#,
                "not http(s)",
            ),
            (
                r#"{"meta": {"api-version": "1.0"}, "files": [{"filename": "a", "url": "dir/"}]}"#,
                "file name",
            ),
            (
                r#"{"meta": {"api-version": "1.0"}, "files": [{"filename": "a", "url": "a", "hashes": {"sha256": 1}}]}"#,
                "hashes.sha256",
            ),
        ];
        for (body, expected) in cases {
            let found = reason(json(body));
            assert!(found.contains(expected), "{body}: {found}");
        }
    }

    #[test]
    fn json_any_1x_version_and_missing_name() {
        let page = json(r#"{"meta": {"api-version": "1.42"}, "files": []}"#).expect("parses");
        assert_eq!(page.name(), "demo");
    }

    #[test]
    fn deep_json_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(reason(json(&deep)).contains("invalid JSON"));
    }

    #[test]
    fn content_type_selects_the_parser() {
        assert!(is_json("application/vnd.pypi.simple.v1+json"));
        assert!(is_json(
            "Application/Vnd.PyPI.Simple.V1+JSON; charset=utf-8"
        ));
        assert!(is_json("application/json"));
        assert!(!is_json("text/html; charset=utf-8"));
        assert!(!is_json("application/vnd.pypi.simple.v1+html"));
        assert!(!is_json(""));
    }

    #[test]
    fn project_list_from_html_and_json() {
        let body = br#"<html><body><a href="/simple/django/">Django</a>
            <a href="/simple/zope-interface/"></a><a href="/simple/bad/">bad name!</a>
            <a href="/simple/typing-extensions/"> typing_extensions </a></body></html>"#;
        let list = ProjectList::parse(body, "text/html").expect("parses");
        let names: Vec<_> = list.names().collect();
        assert_eq!(names, ["Django", "zope-interface", "typing_extensions"]);
        let body = br#"{"meta": {"api-version": "1.1", "_last-serial": 1},
            "projects": [{"name": "Frob", "_last-serial": 3}, {"name": "-bad"}, {"x": 1}]}"#;
        let list = ProjectList::parse(body, "application/vnd.pypi.simple.v1+json").expect("ok");
        let projects: Vec<_> = list.projects().map(|(n, p)| (n, p.as_str())).collect();
        assert_eq!(projects, [("Frob", "frob")]);
        assert!(ProjectList::parse(b"{}", "application/vnd.pypi.simple.v1+json").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%20c"), "a+b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%e2%82%ac%ff"), "\u{20ac}\u{fffd}");
    }

    #[test]
    fn a_sign_is_no_hex_digit() {
        // unquote("a%+2b") is "a%+2b"; reading it as 0x02 made a file name pip never sees.
        assert_eq!(percent_decode("a%+2b%-1"), "a%+2b%-1");
        let page = ProjectPage::parse(
            br#"<a href="https://files.example/demo%+2-1.0.tar.gz#sha256=ab">x</a>"#,
            "text/html",
            &page_url(),
        )
        .expect("parses");
        assert_eq!(page.files()[0].filename, "demo%+2-1.0.tar.gz");
    }
}
