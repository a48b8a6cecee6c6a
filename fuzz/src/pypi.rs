//! PyPI simple-API pages: a rendered page reads back with the files, hashes and flags of its
//! source, and every file link lands on pmcache's own `/pypi/files/<id>/`.

use pmcache_pypi::rewrite::{Rendered, file_id, render_list, render_project};
use pmcache_pypi::wire::{File, ProjectList, ProjectPage};
use serde_json::Value;
use url::Url;

/// Where the fuzzed upstream page was "fetched" from.
pub const PAGE_URL: &str = "https://index.example/simple/demo-pkg/";
/// Where a client reads pmcache's rendering.
const SERVED_URL: &str = "http://127.0.0.1:7878/pypi/simple/demo-pkg/";
const MOUNT: &str = "/pypi";
pub const JSON: &str = "application/vnd.pypi.simple.v1+json";
pub const HTML: &str = "text/html";

pub fn page_url() -> Url {
    Url::parse(PAGE_URL).expect("a valid constant URL")
}

/// Parses `data` as an upstream page and list of the given type and checks what pmcache
/// renders from whatever parses.
pub fn check(data: &[u8], content_type: &str) {
    if let Ok(page) = ProjectPage::parse(data, content_type, &page_url()) {
        let rendered = render_project(&page, MOUNT);
        check_page(&page, &rendered);
        if content_type == JSON {
            check_json_document_kept(data, &rendered);
        }
    }
    if let Ok(list) = ProjectList::parse(data, content_type) {
        check_list(&list);
    }
}

fn check_page(source: &ProjectPage, rendered: &Rendered) {
    assert!(
        !rendered.html.contains("<base"),
        "a <base> would move links"
    );
    let served = Url::parse(SERVED_URL).expect("a valid constant URL");
    let json = ProjectPage::parse(rendered.json.as_bytes(), JSON, &served)
        .expect("the rendered JSON reparses");
    let html = ProjectPage::parse(rendered.html.as_bytes(), HTML, &served)
        .expect("the rendered HTML reparses");

    // JSON carries everything: each file reads back as it was, its URL on pmcache.
    assert_eq!(json.files().len(), source.files().len(), "JSON lost files");
    for (served_file, upstream) in json.files().iter().zip(source.files()) {
        assert_on_pmcache(served_file, upstream);
        assert_eq!(served_file.hashes, upstream.hashes, "JSON hashes");
        assert_eq!(served_file.core_metadata, upstream.core_metadata);
        assert_eq!(served_file.yanked(), upstream.yanked(), "yanked");
        assert_eq!(
            non_empty(served_file.requires_python()),
            non_empty(upstream.requires_python())
        );
        assert_eq!(
            served_file.provenance(),
            upstream.provenance(),
            "provenance"
        );
    }

    // HTML names a file by its link's last segment; a segment that decodes to nothing or to a
    // '/' is no file name, so pip (and pmcache) skip that link. Only JSON upstreams can have
    // such a file: an HTML upstream's was skipped when it was parsed.
    let linkable: Vec<&File> = source
        .files()
        .iter()
        .filter(|f| is_file_name(f.url.path_segments().and_then(|mut s| s.next_back())))
        .collect();
    assert_eq!(html.files().len(), linkable.len(), "HTML lost files");
    for (served_file, upstream) in html.files().iter().zip(linkable) {
        assert_on_pmcache(served_file, upstream);
        // HTML has room for one hash, in the URL fragment: a hex digest must survive it. A
        // digest holding '&' or '#' cannot, and no client could check it anyway.
        let preferred = served_file.hashes.iter().next();
        if let Some((name, digest)) = preferred {
            let published = upstream.hashes.get(name).expect("a published hash");
            if is_hex(published) {
                assert_eq!(published, digest, "HTML hash {name}");
            }
        } else {
            assert!(
                !upstream
                    .hashes
                    .iter()
                    .any(|(name, digest)| is_known_hash(name) && is_hex(digest)),
                "HTML dropped every hash"
            );
        }
        assert_eq!(
            served_file.core_metadata.is_present(),
            upstream.core_metadata.is_present()
        );
        assert_eq!(served_file.yanked().is_some(), upstream.yanked().is_some());
    }
}

/// Every rendered link resolves to `/pypi/files/<id of the upstream URL>/…` on the host the
/// client asked: pmcache can only ever be made to fetch a URL it read from an upstream page.
fn assert_on_pmcache(served: &File, upstream: &File) {
    let prefix = format!(
        "http://127.0.0.1:7878/pypi/files/{}/",
        file_id(&upstream.url)
    );
    assert!(
        served.url.as_str().starts_with(&prefix),
        "{} is not under {prefix}",
        served.url
    );
    assert!(served.url.query().is_none(), "{}", served.url);
}

/// pmcache's JSON rendering of a JSON page is the upstream document with only file URLs
/// replaced (and PEP 714's `dist-info-metadata` renamed, or dropped where another key clients
/// read first is present): every other key is kept.
fn check_json_document_kept(data: &[u8], rendered: &Rendered) {
    let mut upstream: Value = serde_json::from_slice(data).expect("it parsed before");
    let mut served: Value = serde_json::from_str(&rendered.json).expect("rendered JSON parses");
    for document in [&mut upstream, &mut served] {
        let files = document.get_mut("files").and_then(Value::as_array_mut);
        for file in files.into_iter().flatten() {
            let file = file.as_object_mut().expect("files are objects once parsed");
            file.shift_remove("url");
            // Renamed only where it is the key clients read: a renamed copy must not shadow
            // `data-dist-info-metadata`.
            if let Some(legacy) = file.shift_remove("dist-info-metadata")
                && !file.contains_key("data-dist-info-metadata")
            {
                file.entry("core-metadata").or_insert(legacy);
            }
        }
    }
    assert_eq!(
        served, upstream,
        "the JSON document changed beyond its URLs"
    );
}

fn check_list(list: &ProjectList) {
    let rendered = render_list(list, MOUNT);
    let source: Vec<_> = list.projects().collect();
    for (body, content_type) in [(&rendered.json, JSON), (&rendered.html, HTML)] {
        let again = ProjectList::parse(body.as_bytes(), content_type).expect("reparses");
        assert_eq!(
            again.projects().collect::<Vec<_>>(),
            source,
            "{content_type}"
        );
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.is_empty())
}

fn is_file_name(segment: Option<&str>) -> bool {
    let Some(segment) = segment else { return false };
    let decoded = percent_decode(segment);
    !decoded.is_empty() && !decoded.contains('/')
}

/// `urllib.parse.unquote`, as pip reads file names.
fn percent_decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_known_hash(name: &str) -> bool {
    [
        "sha256", "sha512", "sha384", "sha224", "sha1", "md5", "blake2b",
    ]
    .contains(&name)
}

fn is_hex(digest: &str) -> bool {
    !digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit())
}
