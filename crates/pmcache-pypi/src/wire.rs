//! Upstream simple-API documents (PEP 503 HTML, PEP 691 JSON) parsed into one model that keeps
//! everything needed to render either representation faithfully.
//!
//! Clients pick a representation per request, and the upstream may answer either one (or ignore
//! what pmcache asked for), so both parse into [`ProjectPage`]; `rewrite` renders from it. The
//! model keeps the upstream's own keys and attributes next to the parsed fields, because clients
//! rely on keys pmcache does not interpret (`upload-time`, `size`, `versions`, private `_` keys).

use std::collections::{BTreeMap, HashSet};

use html5gum::emitters::callback::{Callback, CallbackEmitter, CallbackEvent};
use html5gum::{Span, Tokenizer};
use serde_json::{Map, Value};
use url::Url;

use crate::name::ProjectName;
use crate::{Error, Result};

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
}

impl File {
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

fn document_error(url: &str, reason: String) -> Error {
    Error::Document {
        url: url.to_owned(),
        reason,
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
fn check_api_version(version: &str) -> Result<(), String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match version.split_once('.') {
        Some((major, minor)) if digits(major) && digits(minor) => {
            if major.trim_start_matches('0') == "1" {
                Ok(())
            } else {
                Err(format!(
                    "unsupported api-version {version:?} (major version must be 1)"
                ))
            }
        }
        _ => Err(format!("api-version {version:?} is not Major.Minor")),
    }
}

// --- JSON (PEP 691) ---

fn parse_json_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, String> {
    let mut document = json_object(body)?;
    let api_version = json_api_version(&document)?;
    let name = match document.get("name") {
        Some(Value::String(name)) => name.clone(),
        None => name_from_url(page_url).ok_or("no `name` and no name in the page URL")?,
        Some(_) => return Err("`name` is not a string".to_owned()),
    };
    // Leaves `null` in place so the key keeps its position when rendered back.
    let files = match document.get_mut("files").map(Value::take) {
        Some(Value::Array(files)) => files,
        _ => return Err("`files` is missing or not a list".to_owned()),
    };
    let files = files
        .into_iter()
        .enumerate()
        .map(|(index, file)| json_file(file, page_url).map_err(|e| format!("file {index}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(ProjectPage {
        name,
        files,
        origin: PageOrigin::Json {
            document,
            api_version,
        },
    })
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(document)) => Ok(document),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn json_api_version(document: &Map<String, Value>) -> Result<String, String> {
    let version = document
        .get("meta")
        .and_then(|meta| meta.get("api-version"))
        .and_then(Value::as_str)
        .ok_or("`meta.api-version` is missing or not a string")?;
    check_api_version(version)?;
    Ok(version.to_owned())
}

fn json_file(file: Value, page_url: &Url) -> Result<File, String> {
    let Value::Object(raw) = file else {
        return Err("not an object".to_owned());
    };
    let filename = match raw.get("filename") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err("`filename` is missing or not a non-empty string".to_owned()),
    };
    let href = raw
        .get("url")
        .and_then(Value::as_str)
        .ok_or("`url` is missing or not a string")?;
    let mut url = resolve(page_url, href)?;
    url.set_fragment(None);
    if last_segment(&url).is_empty() {
        return Err(format!("`url` {href:?} does not end in a file name"));
    }
    Ok(File {
        filename,
        url,
        hashes: json_hashes(raw.get("hashes"), "hashes")?,
        core_metadata: json_core_metadata(&raw)?,
        requires_python: optional_string(&raw, "requires-python")?,
        yanked: json_yanked(raw.get("yanked"))?,
        gpg_sig: json_gpg_sig(raw.get("gpg-sig"))?,
        provenance: optional_string(&raw, "provenance")?,
        origin: FileOrigin::Json(raw),
    })
}

fn json_hashes(value: Option<&Value>, key: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(value) = value else {
        // Required by the spec, but an absent map says the same as an empty one.
        return Ok(BTreeMap::new());
    };
    let Value::Object(hashes) = value else {
        return Err(format!("`{key}` is not an object"));
    };
    hashes
        .iter()
        .map(|(name, digest)| match digest {
            Value::String(digest) => Ok((name.to_ascii_lowercase(), digest.clone())),
            _ => Err(format!("`{key}.{name}` is not a string")),
        })
        .collect()
}

/// PEP 714: `core-metadata`, else the names older indexes used, read like pip does (first key
/// present wins, even if `false`).
fn json_core_metadata(raw: &Map<String, Value>) -> Result<CoreMetadata, String> {
    let Some((key, value)) = [
        "core-metadata",
        "data-dist-info-metadata",
        "dist-info-metadata",
    ]
    .into_iter()
    .find_map(|key| raw.get(key).map(|value| (key, value))) else {
        return Ok(CoreMetadata::Absent);
    };
    match value {
        Value::Bool(false) | Value::Null => Ok(CoreMetadata::Absent),
        Value::Bool(true) => Ok(CoreMetadata::Present {
            hashes: BTreeMap::new(),
        }),
        Value::Object(_) => Ok(CoreMetadata::Present {
            hashes: json_hashes(Some(value), key)?,
        }),
        _ => Err(format!("`{key}` is neither a boolean nor an object")),
    }
}

/// PEP 592 as pip reads it: `true` or a reason means yanked; `false`, `null` and `""` do not.
fn json_yanked(value: Option<&Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(String::new())),
        Some(Value::String(reason)) => Ok((!reason.is_empty()).then(|| reason.clone())),
        Some(_) => Err("`yanked` is neither a boolean nor a string".to_owned()),
    }
}

fn json_gpg_sig(value: Option<&Value>) -> Result<Option<bool>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(signed)) => Ok(Some(*signed)),
        Some(_) => Err("`gpg-sig` is not a boolean".to_owned()),
    }
}

fn optional_string(raw: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn parse_json_list(body: &[u8]) -> Result<ProjectList, String> {
    let document = json_object(body)?;
    json_api_version(&document)?;
    let Some(Value::Array(entries)) = document.get("projects") else {
        return Err("`projects` is missing or not a list".to_owned());
    };
    let projects = entries
        .iter()
        .filter_map(|entry| entry.get("name").and_then(Value::as_str))
        .filter_map(listed_project)
        .collect();
    Ok(ProjectList { projects })
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
fn resolve(base: &Url, href: &str) -> Result<Url, String> {
    // HTML strips ASCII whitespace around URL attributes; JSON never has any.
    let url = base
        .join(href.trim_matches(|c: char| c.is_ascii_whitespace()))
        .map_err(|e| format!("bad URL {href:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("URL {href:?} is not http(s)"));
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

// --- HTML (PEP 503) ---

fn parse_html_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, String> {
    let head = HtmlHead::read(body)?;
    let base = head
        .base
        .as_deref()
        .and_then(|href| page_url.join(href.trim()).ok())
        .unwrap_or_else(|| page_url.clone());
    let name = name_from_url(page_url)
        .or_else(|| head.title_name())
        .ok_or("no name in the page URL or title")?;
    let files = head
        .anchors
        .into_iter()
        .filter_map(|attributes| html_file(&base, attributes))
        .collect();
    Ok(ProjectPage {
        name,
        files,
        origin: PageOrigin::Html { metas: head.metas },
    })
}

/// What a detail page's tags say, collected in one pass; links resolve afterwards because the
/// first `<base>` applies to the whole document, even to links before it.
#[derive(Default)]
struct HtmlHead {
    base: Option<String>,
    anchors: Vec<Vec<(String, String)>>,
    metas: Vec<(String, String)>,
    title: Option<String>,
}

impl HtmlHead {
    fn read(body: &[u8]) -> Result<HtmlHead, String> {
        let mut head = HtmlHead::default();
        let mut in_title = false;
        for event in html_events(body) {
            match event {
                HtmlEvent::Start { name, attributes } => match name.as_str() {
                    "a" => head.anchors.push(attributes),
                    "base" if head.base.is_none() => head.base = attribute(&attributes, "href"),
                    "meta" => head.read_meta(&attributes)?,
                    "title" => in_title = head.title.is_none(),
                    _ => {}
                },
                HtmlEvent::End { name } => in_title &= name != "title",
                HtmlEvent::Text(text) if in_title => {
                    head.title.get_or_insert_default().push_str(&text);
                }
                HtmlEvent::Text(_) => {}
            }
        }
        Ok(head)
    }

    /// Keeps PEP 629/792/708 `pypi:` metas; checks the repository version like a client must.
    fn read_meta(&mut self, attributes: &[(String, String)]) -> Result<(), String> {
        let Some(name) = attribute(attributes, "name") else {
            return Ok(());
        };
        if !name.to_ascii_lowercase().starts_with("pypi:") {
            return Ok(());
        }
        let content = attribute(attributes, "content").unwrap_or_default();
        if name.eq_ignore_ascii_case("pypi:repository-version") {
            check_api_version(content.trim())?;
        }
        self.metas.push((name, content));
        Ok(())
    }

    /// Warehouse titles pages "Links for <name>".
    fn title_name(&self) -> Option<String> {
        let title = self.title.as_deref()?.trim();
        let name = title.strip_prefix("Links for ")?;
        ProjectName::parse(name.trim())
            .ok()
            .map(|name| name.to_string())
    }
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// A file from one `<a>`; `None` for anchors that are not links to files (no `href`, not
/// http(s), no file name), which indexes may add for navigation and pip skips as well.
fn html_file(base: &Url, attributes: Vec<(String, String)>) -> Option<File> {
    let mut url = resolve(base, &attribute(&attributes, "href")?).ok()?;
    let hashes = fragment_hashes(url.fragment().unwrap_or_default());
    url.set_fragment(None);
    let filename = percent_decode(last_segment(&url));
    if filename.is_empty() || filename.contains('/') {
        return None;
    }
    let value = |name: &str| attribute(&attributes, name);
    Some(File {
        filename,
        url,
        hashes,
        core_metadata: html_core_metadata(
            value("data-core-metadata").or_else(|| value("data-dist-info-metadata")),
        ),
        requires_python: value("data-requires-python").filter(|v| !v.is_empty()),
        yanked: value("data-yanked"),
        gpg_sig: value("data-gpg-sig").and_then(|v| v.parse().ok()),
        provenance: value("data-provenance").filter(|v| !v.is_empty()),
        origin: FileOrigin::Html(attributes),
    })
}

/// `#sha256=…` (and `&`-joined pairs such as `#egg=x&sha256=…`, as pip reads them).
fn fragment_hashes(fragment: &str) -> BTreeMap<String, String> {
    fragment
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, digest)| (name.to_ascii_lowercase(), digest))
        .filter(|(name, digest)| HASH_NAMES.contains(&name.as_str()) && !digest.is_empty())
        .map(|(name, digest)| (name, digest.to_owned()))
        .collect()
}

/// `true`, `<hashname>=<hex>`, or (uv) `false`; any other value still means "present" to pip.
fn html_core_metadata(value: Option<String>) -> CoreMetadata {
    let hashes = match value.as_deref().map(str::trim) {
        None | Some("false") => return CoreMetadata::Absent,
        Some(value) => fragment_hashes(value),
    };
    CoreMetadata::Present { hashes }
}

fn parse_html_list(body: &[u8]) -> ProjectList {
    let mut projects = Vec::new();
    let mut anchor: Option<(String, Option<String>)> = None;
    for event in html_events(body) {
        match event {
            HtmlEvent::Start { name, attributes } if name == "a" => {
                anchor = Some((String::new(), attribute(&attributes, "href")));
            }
            HtmlEvent::Text(text) => {
                if let Some((anchor_text, _)) = anchor.as_mut() {
                    anchor_text.push_str(&text);
                }
            }
            HtmlEvent::End { name } if name == "a" => {
                if let Some((text, href)) = anchor.take() {
                    projects.extend(list_entry(&text, href.as_deref()));
                }
            }
            _ => {}
        }
    }
    ProjectList { projects }
}

/// PEP 503: the anchor text is the name; an empty anchor falls back to the link's last segment.
fn list_entry(text: &str, href: Option<&str>) -> Option<(String, ProjectName)> {
    if !text.trim().is_empty() {
        return listed_project(text);
    }
    let segment = href?.split('/').rev().find(|s| !s.is_empty())?;
    listed_project(&percent_decode(segment))
}

/// The tokens of an HTML document that pmcache reads.
#[derive(Debug)]
enum HtmlEvent {
    /// Attributes in document order, first of duplicates only (WHATWG), values decoded.
    Start {
        name: String,
        attributes: Vec<(String, String)>,
    },
    End {
        name: String,
    },
    Text(String),
}

/// Tokenise with html5gum (a WHATWG tokenizer: entities decoded, tag soup tolerated, never
/// fails). Naive state switching keeps `<script>` and `<style>` contents from posing as links.
fn html_events(body: &[u8]) -> impl Iterator<Item = HtmlEvent> + '_ {
    let mut emitter = CallbackEmitter::new(TagCollector::default());
    emitter.naively_switch_states(true);
    Tokenizer::new_with_emitter(body, emitter).map(|result| match result {
        Ok(event) => event,
    })
}

/// Assembles html5gum's callback events into [`HtmlEvent`]s, keeping attribute order (the
/// default emitter sorts attributes, which would reorder what pmcache passes through).
#[derive(Default)]
struct TagCollector {
    open: Option<OpenTag>,
}

#[derive(Default)]
struct OpenTag {
    name: String,
    attributes: Vec<(String, String)>,
    seen: HashSet<String>,
    /// Whether value events belong to the last attribute (not to an ignored duplicate).
    taking_value: bool,
}

impl Callback<HtmlEvent, ()> for TagCollector {
    fn handle_event(&mut self, event: CallbackEvent<'_>, _span: Span<()>) -> Option<HtmlEvent> {
        match event {
            CallbackEvent::OpenStartTag { name } => {
                self.open = Some(OpenTag {
                    name: lossy(name),
                    ..OpenTag::default()
                });
            }
            CallbackEvent::AttributeName { name } => {
                if let Some(tag) = self.open.as_mut() {
                    tag.add_attribute(lossy(name));
                }
            }
            CallbackEvent::AttributeValue { value } => {
                if let Some(tag) = self.open.as_mut() {
                    tag.add_value(&lossy(value));
                }
            }
            CallbackEvent::CloseStartTag { .. } => {
                return self.open.take().map(|tag| HtmlEvent::Start {
                    name: tag.name,
                    attributes: tag.attributes,
                });
            }
            CallbackEvent::EndTag { name } => {
                // End tags may carry attributes (a parse error); they must not land on a tag.
                self.open = None;
                return Some(HtmlEvent::End { name: lossy(name) });
            }
            CallbackEvent::String { value } => return Some(HtmlEvent::Text(lossy(value))),
            CallbackEvent::Comment { .. }
            | CallbackEvent::Doctype { .. }
            | CallbackEvent::Error(_) => {}
        }
        None
    }
}

impl OpenTag {
    fn add_attribute(&mut self, name: String) {
        self.taking_value = self.seen.insert(name.clone());
        if self.taking_value {
            self.attributes.push((name, String::new()));
        }
    }

    fn add_value(&mut self, value: &str) {
        if let (true, Some((_, current))) = (self.taking_value, self.attributes.last_mut()) {
            current.push_str(value);
        }
    }
}

/// Upstream bytes that are not UTF-8 become U+FFFD rather than failing the page.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
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
            Err(Error::Document { reason, .. }) => reason,
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
            json_yanked(Some(&Value::Bool(true))),
            Ok(Some(String::new()))
        );
        assert_eq!(json_yanked(Some(&Value::String(String::new()))), Ok(None));
        assert_eq!(json_yanked(Some(&Value::Bool(false))), Ok(None));
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
