//! What pmcache serves for simple-API pages: both representations of a parsed upstream page,
//! with every file URL pointing at pmcache and everything else as the upstream said it.
//!
//! URLs are root-relative (`/pypi/files/…`), so one rendering is valid for every `Host` a client
//! uses and is computed once per upstream version of a page. A file's URL is derived from its
//! upstream URL alone, so it is stable across restarts (pip and uv cache by URL), and it ends in
//! the upstream's last path segment, so clients see the exact file name and can append
//! `.metadata` (PEP 658).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::wire::{
    CoreMetadata, File, FileOrigin, PageOrigin, ProjectList, ProjectPage, last_segment,
};

/// Order in which one hash is chosen where HTML can carry only one: sha256 first (what PyPI
/// publishes and every client reads), then the strongest.
const HASH_PREFERENCE: [&str; 7] = [
    "sha256", "sha512", "sha384", "sha224", "sha1", "md5", "blake2b",
];

/// The API version of documents pmcache synthesises: they hold no `versions` or `size`, so they
/// must not claim 1.1 or later.
const SYNTHESISED_API_VERSION: &str = "1.0";

/// Both representations of one page, rendered together so they always agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The PEP 503 HTML page, served as `text/html` or `application/vnd.pypi.simple.v1+html`.
    pub html: String,
    /// The PEP 691 JSON document, served as `application/vnd.pypi.simple.v1+json`.
    pub json: String,
}

/// Render a project page with every file URL rewritten to [`file_path`], plus in HTML the hash
/// fragment `#<name>=<hex>`. `mount` is root-relative, like `/pypi`.
///
/// An upstream JSON page comes back as the same document with only file `url`s replaced (and the
/// PEP 714 trap key `dist-info-metadata` renamed `core-metadata`); an upstream HTML page keeps
/// every attribute, and its JSON form says api-version 1.0.
pub fn render_project(page: &ProjectPage, mount: &str) -> Rendered {
    Rendered {
        html: project_html(page, mount),
        json: project_json(page, mount).to_string(),
    }
}

/// Render the root page: one link per project to `{mount}/simple/{normalised name}/`.
pub fn render_list(list: &ProjectList, mount: &str) -> Rendered {
    let mount = mount.trim_end_matches('/');
    let mut html = page_start("Simple index", &[meta_version(SYNTHESISED_API_VERSION)]);
    for (name, normal) in list.projects() {
        let href = format!("{mount}/simple/{normal}/");
        html.push_str(&format!(
            "    <a href=\"{}\">{}</a><br />\n",
            escape(&href),
            escape(name)
        ));
    }
    html.push_str(PAGE_END);
    let projects: Vec<Value> = list.names().map(|name| json!({ "name": name })).collect();
    let json = json!({
        "meta": { "api-version": SYNTHESISED_API_VERSION },
        "projects": projects,
    });
    Rendered {
        html,
        json: json.to_string(),
    }
}

/// The stable identity of an upstream file: the first 16 bytes of sha256 over its URL (without
/// fragment), as 32 lowercase hex digits.
pub fn file_id(url: &Url) -> String {
    let digest = Sha256::digest(url.as_str().as_bytes());
    hex::encode(&digest[..16])
}

/// Where pmcache serves a file: `{mount}/files/{file_id}/{last segment of the upstream URL}`,
/// the segment still percent-encoded exactly as upstream wrote it.
pub fn file_path(mount: &str, file: &File) -> String {
    format!(
        "{}/files/{}/{}",
        mount.trim_end_matches('/'),
        file_id(&file.url),
        last_segment(&file.url)
    )
}

// --- HTML ---

const PAGE_END: &str = "  </body>\n</html>\n";

fn project_html(page: &ProjectPage, mount: &str) -> String {
    let title = format!("Links for {}", page.name());
    let mut html = page_start(&title, &page_metas(page));
    for file in page.files() {
        html.push_str("    ");
        html.push_str(&anchor(file, mount));
        html.push_str("<br />\n");
    }
    html.push_str(PAGE_END);
    html
}

/// A complete small HTML5 document up to the links; never a `<base>`, so pmcache's
/// root-relative links resolve against pmcache.
fn page_start(title: &str, metas: &[(String, String)]) -> String {
    let mut html =
        String::from("<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n");
    for (name, content) in metas {
        html.push_str(&format!(
            "    <meta name=\"{}\" content=\"{}\">\n",
            escape(name),
            escape(content)
        ));
    }
    let title = escape(title);
    html.push_str(&format!(
        "    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
    ));
    html
}

fn meta_version(version: &str) -> (String, String) {
    ("pypi:repository-version".to_owned(), version.to_owned())
}

/// PEP 629/792/708 head metas: the upstream's own for HTML; for JSON the same facts, with the
/// upstream's api-version since the HTML carries everything HTML can of that version.
fn page_metas(page: &ProjectPage) -> Vec<(String, String)> {
    let (document, api_version) = match page.origin() {
        PageOrigin::Html { metas } => return metas.clone(),
        PageOrigin::Json {
            document,
            api_version,
        } => (document, api_version),
    };
    let mut metas = vec![meta_version(api_version)];
    let status = document.get("project-status");
    for (key, meta) in [
        ("status", "pypi:project-status"),
        ("reason", "pypi:project-status-reason"),
    ] {
        if let Some(value) = status.and_then(|s| s.get(key)).and_then(Value::as_str) {
            metas.push((meta.to_owned(), value.to_owned()));
        }
    }
    for (key, meta) in [
        ("tracks", "pypi:tracks"),
        ("alternate-locations", "pypi:alternate-locations"),
    ] {
        let urls = document
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        metas.extend(
            urls.filter_map(Value::as_str)
                .map(|url| (meta.to_owned(), url.to_owned())),
        );
    }
    metas
}

fn anchor(file: &File, mount: &str) -> String {
    let href = match preferred_hash(&file.hashes) {
        Some((name, digest)) => format!("{}#{name}={digest}", file_path(mount, file)),
        None => file_path(mount, file),
    };
    let mut tag = String::from("<a");
    for (name, value) in anchor_attributes(file, href) {
        tag.push_str(&format!(" {name}=\"{}\"", escape(&value)));
    }
    tag.push('>');
    tag.push_str(&escape(&file.filename));
    tag.push_str("</a>");
    tag
}

/// The upstream's attributes in its order with `href` replaced, or for JSON the standard ones in
/// warehouse's order. Every value is emitted with `=""` at least: a bare `data-yanked` means
/// "not yanked" to pip.
fn anchor_attributes(file: &File, href: String) -> Vec<(String, String)> {
    let FileOrigin::Html(attributes) = &file.origin else {
        return json_anchor_attributes(file, href);
    };
    attributes
        .iter()
        .filter(|(name, _)| is_safe_attribute_name(name))
        .map(|(name, value)| match name.as_str() {
            "href" => (name.clone(), href.clone()),
            _ => (name.clone(), value.clone()),
        })
        .collect()
}

fn json_anchor_attributes(file: &File, href: String) -> Vec<(String, String)> {
    let mut attributes = vec![("href".to_owned(), href)];
    let mut add = |name: &str, value: &str| attributes.push((name.to_owned(), value.to_owned()));
    if let Some(requires_python) = file.requires_python() {
        add("data-requires-python", requires_python);
    }
    if let Some(reason) = file.yanked() {
        add("data-yanked", reason);
    }
    if let CoreMetadata::Present { hashes } = &file.core_metadata {
        let value = preferred_hash(hashes).map_or("true".to_owned(), |(n, d)| format!("{n}={d}"));
        // Both names, as warehouse does: pip 22.3 to 23.1 read only the legacy one.
        add("data-dist-info-metadata", &value);
        add("data-core-metadata", &value);
    }
    if let Some(provenance) = file.provenance() {
        add("data-provenance", provenance);
    }
    if let Some(signed) = file.gpg_sig {
        add("data-gpg-sig", if signed { "true" } else { "false" });
    }
    attributes
}

/// Attribute names pmcache can re-emit without breaking the tag; the tokenizer accepts `"`,
/// `'` and `<` in names, which no real index uses.
fn is_safe_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
}

fn preferred_hash(hashes: &BTreeMap<String, String>) -> Option<(&'static str, &str)> {
    HASH_PREFERENCE
        .into_iter()
        .find_map(|name| hashes.get(name).map(|digest| (name, digest.as_str())))
}

/// Escape for text and double-quoted attribute values (PEP 503 requires `&lt;`/`&gt;` in
/// `data-requires-python`; yank reasons are free text).
fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

// --- JSON ---

fn project_json(page: &ProjectPage, mount: &str) -> Value {
    let files: Vec<Value> = page.files().iter().map(|f| json_file(f, mount)).collect();
    match page.origin() {
        PageOrigin::Json { document, .. } => {
            let mut document = document.clone();
            // An existing key keeps its position: the document reads as the upstream wrote it.
            document.insert("files".to_owned(), Value::Array(files));
            Value::Object(document)
        }
        PageOrigin::Html { .. } => json!({
            "meta": { "api-version": SYNTHESISED_API_VERSION },
            "name": page.name(),
            "files": files,
        }),
    }
}

fn json_file(file: &File, mount: &str) -> Value {
    match &file.origin {
        FileOrigin::Json(raw) => Value::Object(rewritten_json_file(raw, file_path(mount, file))),
        FileOrigin::Html(attributes) => {
            let has_legacy_metadata = attributes
                .iter()
                .any(|(n, _)| n == "data-dist-info-metadata");
            Value::Object(synthesised_json_file(file, mount, has_legacy_metadata))
        }
    }
}

/// The upstream's file object, keys in order, `url` replaced. PEP 714: `dist-info-metadata`
/// crashes pip 22.3 to 23.1, so it becomes `core-metadata`, or goes when a key clients read
/// first (`core-metadata`, `data-dist-info-metadata`) is there: renamed, it would shadow that
/// key's value.
fn rewritten_json_file(raw: &Map<String, Value>, url: String) -> Map<String, Value> {
    let mut url = Some(url);
    let shadowed = raw.contains_key("core-metadata") || raw.contains_key("data-dist-info-metadata");
    raw.iter()
        .filter_map(|(key, value)| match key.as_str() {
            "url" => Some((key.clone(), Value::String(url.take().unwrap_or_default()))),
            "dist-info-metadata" if shadowed => None,
            "dist-info-metadata" => Some(("core-metadata".to_owned(), value.clone())),
            _ => Some((key.clone(), value.clone())),
        })
        .collect()
}

/// A PEP 691 file object from what an HTML link said; only API 1.0 keys.
fn synthesised_json_file(
    file: &File,
    mount: &str,
    has_legacy_metadata: bool,
) -> Map<String, Value> {
    let mut object = Map::new();
    let mut add = |key: &str, value: Value| object.insert(key.to_owned(), value);
    add("filename", file.filename.clone().into());
    add("url", file_path(mount, file).into());
    add("hashes", json!(file.hashes));
    if let Some(requires_python) = file.requires_python() {
        add("requires-python", requires_python.into());
    }
    if let Some(reason) = file.yanked() {
        add(
            "yanked",
            if reason.is_empty() {
                true.into()
            } else {
                reason.into()
            },
        );
    }
    if let CoreMetadata::Present { hashes } = &file.core_metadata {
        let value = if hashes.is_empty() {
            json!(true)
        } else {
            json!(hashes)
        };
        add("core-metadata", value.clone());
        if has_legacy_metadata {
            add("data-dist-info-metadata", value);
        }
    }
    if let Some(signed) = file.gpg_sig {
        add("gpg-sig", signed.into());
    }
    if let Some(provenance) = file.provenance() {
        add("provenance", provenance.into());
    }
    object
}

#[cfg(test)]
mod tests {

    use super::*;

    const WAREHOUSE_HTML: &str = include_str!("../tests/data/warehouse-detail.html");
    const WAREHOUSE_JSON: &str = include_str!("../tests/data/warehouse-detail.json");
    const BASE_HREF_HTML: &str = include_str!("../tests/data/base-href.html");
    const MOUNT: &str = "/pypi";

    fn page_url() -> Url {
        Url::parse("https://index.example/simple/demo-pkg/").expect("valid URL")
    }

    fn parse(body: &str, content_type: &str) -> ProjectPage {
        ProjectPage::parse(body.as_bytes(), content_type, &page_url()).expect("parses")
    }

    fn render(body: &str, content_type: &str) -> Rendered {
        render_project(&parse(body, content_type), MOUNT)
    }

    /// Pretty-printed, so snapshots can be read; key order is the rendered one.
    fn pretty(json: &str) -> String {
        let value: Value = serde_json::from_str(json).expect("rendered JSON parses");
        serde_json::to_string_pretty(&value).expect("a JSON value serialises")
    }

    /// What a client reads from a file entry, to compare renderings with their source.
    fn client_view(page: &ProjectPage) -> Vec<String> {
        page.files()
            .iter()
            .map(|f| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?}",
                    f.filename,
                    preferred_hash(&f.hashes),
                    f.requires_python(),
                    f.yanked(),
                    f.core_metadata,
                    f.provenance()
                )
            })
            .collect()
    }

    /// Reads back what pmcache rendered, as a client would from pmcache's own URL.
    fn reparse(rendered: &Rendered) -> (ProjectPage, ProjectPage) {
        let served = Url::parse("http://127.0.0.1:7878/pypi/simple/demo-pkg/").expect("valid");
        let html = ProjectPage::parse(rendered.html.as_bytes(), "text/html", &served);
        let json = ProjectPage::parse(
            rendered.json.as_bytes(),
            "application/vnd.pypi.simple.v1+json",
            &served,
        );
        (html.expect("HTML reparses"), json.expect("JSON reparses"))
    }

    fn assert_invariants(source: &ProjectPage, rendered: &Rendered) {
        assert!(!rendered.html.contains("<base"), "{}", rendered.html);
        assert!(
            !rendered.json.contains("\"dist-info-metadata\""),
            "{}",
            rendered.json
        );
        assert!(!rendered.html.contains("data-yanked "), "bare data-yanked");
        assert!(!rendered.html.contains("data-yanked>"), "bare data-yanked");
        let (html, json) = reparse(rendered);
        assert_eq!(client_view(&html), client_view(source), "HTML round trip");
        // JSON keeps every hash, HTML only one: compare the full map for JSON.
        for (served, upstream) in json.files().iter().zip(source.files()) {
            assert_eq!(served.hashes, upstream.hashes);
        }
        assert_eq!(client_view(&json), client_view(source), "JSON round trip");
        for (served, upstream) in html.files().iter().zip(source.files()) {
            let expected = format!("/files/{}/", file_id(&upstream.url));
            assert!(
                served.url.path().starts_with("/pypi/files/"),
                "{}",
                served.url
            );
            assert!(served.url.path().contains(&expected), "{}", served.url);
            assert!(served.url.host_str() == Some("127.0.0.1"), "{}", served.url);
        }
    }

    #[test]
    fn warehouse_html_page() {
        let source = parse(WAREHOUSE_HTML, "text/html");
        let rendered = render_project(&source, MOUNT);
        assert_invariants(&source, &rendered);
        insta::assert_snapshot!("warehouse_html_as_html", rendered.html);
        insta::assert_snapshot!("warehouse_html_as_json", pretty(&rendered.json));
    }

    #[test]
    fn base_href_page() {
        let source = parse(BASE_HREF_HTML, "application/vnd.pypi.simple.v1+html");
        let urls: Vec<_> = source.files().iter().map(|f| f.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://mirror.example/pypi/packages/demo_pkg-1.0.tar.gz",
                "https://mirror.example/pypi/packages/demo_pkg-1.0-py3-none-any.whl",
                "https://mirror.example/pypi/simple/demo-pkg/demo_pkg-1.1-py3-none-any.whl",
            ]
        );
        let rendered = render_project(&source, MOUNT);
        assert_invariants(&source, &rendered);
        insta::assert_snapshot!("base_href_as_html", rendered.html);
        insta::assert_snapshot!("base_href_as_json", pretty(&rendered.json));
    }

    #[test]
    fn warehouse_json_page() {
        let source = parse(WAREHOUSE_JSON, "application/vnd.pypi.simple.v1+json");
        let rendered = render_project(&source, MOUNT);
        assert_invariants(&source, &rendered);
        insta::assert_snapshot!("warehouse_json_as_html", rendered.html);
        insta::assert_snapshot!("warehouse_json_as_json", pretty(&rendered.json));
    }

    #[test]
    fn json_output_is_the_upstream_document_with_only_urls_replaced() {
        let rendered = render(WAREHOUSE_JSON, "application/vnd.pypi.simple.v1+json");
        let mut served: Value = serde_json::from_str(&rendered.json).expect("parses");
        let mut upstream: Value = serde_json::from_str(WAREHOUSE_JSON).expect("parses");
        for document in [&mut served, &mut upstream] {
            for file in document["files"].as_array_mut().expect("files") {
                file["url"] = Value::Null;
            }
        }
        assert_eq!(served, upstream);
        let order = |json: &str| -> Vec<String> {
            let value: Value = serde_json::from_str(json).expect("parses");
            let files = value["files"].as_array().expect("files").iter();
            let file_keys = files.flat_map(|f| f.as_object().expect("object").keys().cloned());
            let top = value.as_object().expect("object").keys().cloned();
            top.chain(file_keys).collect()
        };
        assert_eq!(order(&rendered.json), order(WAREHOUSE_JSON));
    }

    #[test]
    fn legacy_dist_info_metadata_key_becomes_core_metadata() {
        let body = r#"{"meta": {"api-version": "1.0"}, "name": "demo-pkg", "files": [
            {"filename": "a-1-py3-none-any.whl", "url": "a-1-py3-none-any.whl", "hashes": {},
             "dist-info-metadata": {"sha256": "ab"}, "yanked": false},
            {"filename": "b-1-py3-none-any.whl", "url": "b-1-py3-none-any.whl", "hashes": {},
             "dist-info-metadata": true, "core-metadata": false},
            {"filename": "c-1-py3-none-any.whl", "url": "c-1-py3-none-any.whl", "hashes": {},
             "data-dist-info-metadata": {"sha256": "cd"}, "dist-info-metadata": true}]}"#;
        let rendered = render(body, "application/vnd.pypi.simple.v1+json");
        let value: Value = serde_json::from_str(&rendered.json).expect("parses");
        let keys = |i: usize| -> Vec<&str> {
            let file = value["files"][i].as_object().expect("object");
            file.keys().map(String::as_str).collect()
        };
        assert_eq!(
            keys(0),
            ["filename", "url", "hashes", "core-metadata", "yanked"]
        );
        assert_eq!(value["files"][0]["core-metadata"], json!({"sha256": "ab"}));
        assert_eq!(keys(1), ["filename", "url", "hashes", "core-metadata"]);
        assert_eq!(value["files"][1]["core-metadata"], json!(false));
        // A key clients read before `dist-info-metadata` keeps its value (found by fuzzing).
        assert_eq!(
            keys(2),
            ["filename", "url", "hashes", "data-dist-info-metadata"]
        );
        assert!(rendered.html.contains("data-core-metadata=\"sha256=ab\""));
        assert!(rendered.html.contains("data-core-metadata=\"sha256=cd\""));
        assert_eq!(rendered.html.matches("data-core-metadata").count(), 2);
    }

    #[test]
    fn absent_metadata_is_never_advertised() {
        let body = r#"<a href="https://files.example/a-1-py3-none-any.whl#sha256=ab">a</a>"#;
        let rendered = render(body, "text/html");
        assert!(!rendered.html.contains("metadata"), "{}", rendered.html);
        assert!(!rendered.json.contains("metadata"), "{}", rendered.json);
    }

    #[test]
    fn html_upstream_with_attribute_soup_renders_safe_html() {
        let body = r#"<a href="https://files.example/a%22b-1.whl#sha256=x&quot;y" data-x="<script>"
            on"click=1 data-yanked='"&amp;'>ignored</a>"#;
        let rendered = render(body, "text/html");
        let anchor = rendered
            .html
            .lines()
            .find(|l| l.contains("<a "))
            .expect("a link");
        let expected_href = format!(
            "/pypi/files/{}/a%22b-1.whl#sha256=x%22y",
            file_id(&Url::parse("https://files.example/a%22b-1.whl").expect("valid"))
        );
        assert_eq!(
            anchor,
            format!(
                r#"    <a href="{expected_href}" data-x="&lt;script&gt;" data-yanked="&quot;&amp;">a&quot;b-1.whl</a><br />"#
            )
        );
    }

    #[test]
    fn file_urls_are_stable_and_keep_the_upstream_segment() {
        let url = Url::parse("https://files.example/p/demo-1.0%2Blocal.tar.gz").expect("valid");
        // sha256("https://files.example/p/demo-1.0%2Blocal.tar.gz"), first 16 bytes.
        assert_eq!(file_id(&url), "539b7999ed9fe58df40bfaa08056edca");
        let page = parse(
            r#"<a href="https://files.example/p/demo-1.0%2Blocal.tar.gz#sha256=ab">x</a>"#,
            "text/html",
        );
        let file = &page.files()[0];
        assert_eq!(file.filename, "demo-1.0+local.tar.gz");
        let path = format!("/pypi/files/{}/demo-1.0%2Blocal.tar.gz", file_id(&url));
        assert_eq!(file_path("/pypi", file), path);
        assert_eq!(file_path("/pypi/", file), path);
        let root = format!("/files/{}/demo-1.0%2Blocal.tar.gz", file_id(&url));
        assert_eq!(file_path("", file), root);
    }

    #[test]
    fn one_hash_is_chosen_for_html() {
        let hashes = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|n| ((*n).to_owned(), format!("{n}-digest")))
                .collect()
        };
        let chosen = |names: &[&str]| preferred_hash(&hashes(names)).map(|(n, _)| n);
        assert_eq!(chosen(&["md5", "sha512", "sha256"]), Some("sha256"));
        assert_eq!(chosen(&["md5", "sha384", "sha512"]), Some("sha512"));
        assert_eq!(chosen(&["blake2b", "md5"]), Some("md5"));
        assert_eq!(chosen(&["blake2b"]), Some("blake2b"));
        assert_eq!(chosen(&["sha3_256"]), None);
        assert_eq!(chosen(&[]), None);
    }

    #[test]
    fn project_list() {
        let body = br#"<!DOCTYPE html><html><body>
            <a href="/simple/django/">Django</a>
            <a href="/simple/zope-interface/">zope.interface</a>
            <a href="/simple/x/">not a name!</a></body></html>"#;
        let list = ProjectList::parse(body, "text/html").expect("parses");
        let rendered = render_list(&list, MOUNT);
        insta::assert_snapshot!("project_list_as_html", rendered.html);
        insta::assert_snapshot!("project_list_as_json", pretty(&rendered.json));
        let again = ProjectList::parse(
            rendered.json.as_bytes(),
            "application/vnd.pypi.simple.v1+json",
        )
        .expect("reparses");
        assert_eq!(
            again.names().collect::<Vec<_>>(),
            ["Django", "zope.interface"]
        );
    }
    /// Random mutations of the realistic pages: parsing never panics, and whatever pmcache
    /// renders reads back as a valid page.
    #[test]
    fn mutated_documents_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = b"<>\"'&#=%{}[],:/";
        for source in [WAREHOUSE_HTML, WAREHOUSE_JSON, BASE_HREF_HTML] {
            for _ in 0..300 {
                let mut bytes = source.as_bytes().to_vec();
                for _ in 0..=next() % 8 {
                    let at = (next() % bytes.len() as u64) as usize;
                    match next() % 3 {
                        0 => bytes[at] = next() as u8,
                        1 => drop(bytes.remove(at)),
                        _ => bytes.insert(at, specials[next() as usize % specials.len()]),
                    }
                }
                for content_type in ["text/html", "application/vnd.pypi.simple.v1+json"] {
                    if let Ok(page) = ProjectPage::parse(&bytes, content_type, &page_url()) {
                        reparse(&render_project(&page, MOUNT));
                    }
                    if let Ok(list) = ProjectList::parse(&bytes, content_type) {
                        render_list(&list, MOUNT);
                    }
                }
            }
        }
    }
}
