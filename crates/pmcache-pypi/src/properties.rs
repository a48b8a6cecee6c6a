//! Properties of names and page rendering over generated input: normalisation is idempotent,
//! and a rendered page, read back as pip reads it, keeps every file's hashes and flags with
//! its URL on pmcache, and (for a JSON upstream) every key beside the URLs.

use proptest::prelude::*;
use serde_json::{Value, json};
use url::Url;

use crate::name::ProjectName;
use crate::rewrite::{file_id, render_project};
use crate::wire::ProjectPage;

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const SERVED: &str = "http://127.0.0.1:7878/pypi/simple/demo-pkg/";

fn page_url() -> Url {
    Url::parse("https://index.example/simple/demo-pkg/").expect("valid URL")
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(raw in "[A-Za-z0-9._-]{1,40}") {
        let Ok(name) = ProjectName::parse(&raw) else {
            // Refused only for a separator at either end.
            prop_assert!(raw.starts_with(['.', '_', '-']) || raw.ends_with(['.', '_', '-']));
            return Ok(());
        };
        let normal = name.as_str();
        prop_assert_eq!(ProjectName::parse(normal).expect("normal form is valid"), name.clone());
        prop_assert!(!normal.contains(['_', '.']) && !normal.contains("--"));
        prop_assert_eq!(normal, normal.to_ascii_lowercase());
        let letters = |s: &str| s.replace(['-', '_', '.'], "").to_ascii_lowercase();
        prop_assert_eq!(letters(normal), letters(&raw));
    }

    #[test]
    fn names_outside_the_charset_are_refused(raw in ".{0,40}") {
        let valid_chars = raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_chars || raw.is_empty() {
            prop_assert!(ProjectName::parse(&raw).is_err());
        }
    }
}

/// One generated file entry of a PEP 691 page, with keys pmcache does not interpret.
fn json_file() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,8}-[0-9]\\.[0-9](\\.post[0-9])?(\\.tar\\.gz|-py3-none-any\\.whl)",
        prop_oneof![
            Just("https://files.example/packages/ab/cd/"),
            Just("../../packages/"),
            Just("/files/"),
        ],
        "[0-9a-f]{64}",
        proptest::option::of("[0-9a-f]{128}"),
        proptest::option::of(prop_oneof![Just(">=3.8"), Just("<4,>=3.9"), Just("")]),
        prop_oneof![
            Just(json!(false)),
            Just(json!(true)),
            Just(json!("broken <b>wheel</b> & co"))
        ],
        prop_oneof![
            Just(Value::Null),
            Just(json!(true)),
            Just(json!({"sha256": "ab"}))
        ],
        any::<u32>(),
    )
        .prop_map(
            |(filename, base, sha256, sha512, requires, yanked, metadata, size)| {
                let mut hashes = json!({ "sha256": sha256 });
                if let Some(sha512) = sha512 {
                    hashes["sha512"] = json!(sha512);
                }
                let mut file = json!({
                    "filename": filename,
                    "url": format!("{base}{filename}"),
                    "hashes": hashes,
                    "yanked": yanked,
                    "size": size,
                    "upload-time": "2024-06-01T00:00:00.000000Z",
                    "_private": {"kept": [1, 2, 3]},
                });
                if let Some(requires) = requires {
                    file["requires-python"] = json!(requires);
                }
                if !metadata.is_null() {
                    file["core-metadata"] = metadata;
                }
                file
            },
        )
}

fn json_page() -> impl Strategy<Value = Value> {
    proptest::collection::vec(json_file(), 0..8).prop_map(|files| {
        json!({
            "meta": {"api-version": "1.1", "_last-serial": 42},
            "name": "demo-pkg",
            "versions": ["1.0"],
            "files": files,
            "project-status": {"status": "active"},
        })
    })
}

fn reparse(body: &str, content_type: &str) -> ProjectPage {
    let served = Url::parse(SERVED).expect("valid URL");
    ProjectPage::parse(body.as_bytes(), content_type, &served).expect("rendering reparses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_rendered_json_page_keeps_everything_but_urls(page in json_page()) {
        let body = serde_json::to_vec(&page).expect("serialises");
        let source = ProjectPage::parse(&body, JSON, &page_url()).expect("parses");
        let rendered = render_project(&source, "/pypi");
        // Every key of the upstream document is kept, only file URLs differ.
        let mut served: Value = serde_json::from_str(&rendered.json).expect("JSON");
        let mut upstream = page.clone();
        for document in [&mut served, &mut upstream] {
            for file in document["files"].as_array_mut().expect("files") {
                file.as_object_mut().expect("object").shift_remove("url");
            }
        }
        prop_assert_eq!(served, upstream);
        for (content_type, hashes_kept) in [(JSON, true), ("text/html", false)] {
            let body = if hashes_kept { &rendered.json } else { &rendered.html };
            let again = reparse(body, content_type);
            prop_assert_eq!(again.files().len(), source.files().len());
            for (served, upstream) in again.files().iter().zip(source.files()) {
                let prefix = format!("http://127.0.0.1:7878/pypi/files/{}/", file_id(&upstream.url));
                prop_assert!(served.url.as_str().starts_with(&prefix), "{}", served.url);
                prop_assert!(served.url.as_str().ends_with(&upstream.filename));
                if hashes_kept {
                    prop_assert_eq!(&served.hashes, &upstream.hashes);
                } else {
                    // HTML has room for one hash: sha256, as warehouse writes it.
                    prop_assert_eq!(served.hashes.get("sha256"), upstream.hashes.get("sha256"));
                }
                prop_assert_eq!(served.yanked(), upstream.yanked());
                prop_assert_eq!(&served.core_metadata, &upstream.core_metadata);
                let requires = |f: &crate::wire::File| f.requires_python().filter(|r| !r.is_empty()).map(str::to_owned);
                prop_assert_eq!(requires(served), requires(upstream));
            }
        }
    }

    #[test]
    fn a_rendered_html_page_keeps_every_link(
        links in proptest::collection::vec(
            (
                "[a-z]{1,8}-[0-9]\\.[0-9]\\.tar\\.gz",
                "[0-9a-f]{64}",
                proptest::option::of(prop_oneof![Just("&gt;=3.8"), Just("&lt;4")]),
                proptest::option::of(prop_oneof![Just(""), Just("bad &amp; broken")]),
            ),
            0..8,
        )
    ) {
        let anchors: String = links
            .iter()
            .map(|(filename, sha256, requires, yanked)| {
                let mut attributes = String::new();
                if let Some(requires) = requires {
                    attributes.push_str(&format!(" data-requires-python=\"{requires}\""));
                }
                if let Some(yanked) = yanked {
                    attributes.push_str(&format!(" data-yanked=\"{yanked}\""));
                }
                format!("<a href=\"https://files.example/p/{filename}#sha256={sha256}\"{attributes}>{filename}</a><br/>\n")
            })
            .collect();
        let body = format!("<!DOCTYPE html><html><body><h1>Links for demo-pkg</h1>\n{anchors}</body></html>");
        let source = ProjectPage::parse(body.as_bytes(), "text/html", &page_url()).expect("parses");
        prop_assert_eq!(source.files().len(), links.len());
        let rendered = render_project(&source, "/pypi");
        for (body, content_type) in [(&rendered.html, "text/html"), (&rendered.json, JSON)] {
            let again = reparse(body, content_type);
            prop_assert_eq!(again.files().len(), source.files().len());
            for (served, upstream) in again.files().iter().zip(source.files()) {
                let prefix = format!("http://127.0.0.1:7878/pypi/files/{}/", file_id(&upstream.url));
                prop_assert!(served.url.as_str().starts_with(&prefix), "{}", served.url);
                prop_assert_eq!(&served.filename, &upstream.filename);
                prop_assert_eq!(&served.hashes, &upstream.hashes);
                prop_assert_eq!(served.yanked(), upstream.yanked());
                prop_assert_eq!(served.requires_python(), upstream.requires_python());
            }
        }
    }
}
