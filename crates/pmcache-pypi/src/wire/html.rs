//! The PEP 503 HTML form of index pages and of the project list, read with an HTML5 tokenizer.

use std::collections::{BTreeMap, HashSet};

use html5gum::emitters::callback::{Callback, CallbackEmitter, CallbackEvent};
use html5gum::{Span, Tokenizer};
use url::Url;

use crate::Result;
use crate::name::ProjectName;

use super::*;

pub(super) fn parse_html_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, Malformed> {
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
    fn read(body: &[u8]) -> Result<HtmlHead, Malformed> {
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
    fn read_meta(&mut self, attributes: &[(String, String)]) -> Result<(), Malformed> {
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
pub(super) fn html_core_metadata(value: Option<String>) -> CoreMetadata {
    let hashes = match value.as_deref().map(str::trim) {
        None | Some("false") => return CoreMetadata::Absent,
        Some(value) => fragment_hashes(value),
    };
    CoreMetadata::Present { hashes }
}

pub(super) fn parse_html_list(body: &[u8]) -> ProjectList {
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
