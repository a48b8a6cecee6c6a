//! Properties of minified lists, p2 rewriting and names over generated input: minifying is the
//! inverse of expanding, and a rewritten p2 file changes nothing but dist URLs, each under
//! pmcache's base and routing back to the archive it stands for.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use url::Url;

use crate::minified::{expand, minify};
use crate::name::PackageName;
use crate::path::{Route, classify};
use crate::rewrite::{DistRewrite, rewrite_p2, serve_all};

const DISTS: &str = "http://127.0.0.1:7878/packagist/dists/";
/// Dists below [`DISTS`], sources kept: the rewrite the properties check.
const REWRITE: DistRewrite<'static> = DistRewrite {
    base: DISTS,
    keep_source: true,
};

/// A complete version entry: a few keys that come and go between versions, with values that
/// repeat often enough for the minified diffs to be short.
fn entry() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("require"),
            Just("extra"),
            Just("license"),
            Just("type"),
            Just("autoload")
        ],
        prop_oneof![
            Just(json!(1)),
            Just(json!("mit")),
            Just(json!({"php": ">=8"})),
            Just(json!(["a", "b"])),
            Just(Value::Null),
            Just(json!({})),
        ],
        0..5,
    )
    .prop_map(|fields| {
        fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    })
}

fn entries() -> impl Strategy<Value = Vec<Map<String, Value>>> {
    proptest::collection::vec((entry(), "[0-9]\\.[0-9]\\.[0-9]"), 0..10).prop_map(|list| {
        list.into_iter()
            .map(|(mut entry, version)| {
                entry.insert("version".to_owned(), json!(version));
                entry
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn minify_is_the_inverse_of_expand(complete in entries()) {
        let minified = minify(&complete);
        prop_assert_eq!(minified.len(), complete.len());
        let again = expand(&minified);
        prop_assert_eq!(&again, &complete);
        prop_assert_eq!(minify(&again), minified);
    }

    #[test]
    fn valid_names_route_to_themselves(
        vendor in "[a-z0-9]([_.-]?[a-z0-9]){0,10}",
        bare in "[a-z0-9]([_.-]?[a-z0-9]|--[a-z0-9]){0,10}",
    ) {
        let name = PackageName::parse(&format!("{vendor}/{bare}")).expect("valid");
        prop_assert_eq!(
            classify(&format!("/p2/{name}.json")).ok(),
            Some(Route::P2 { package: name.clone(), dev: false })
        );
    }

    #[test]
    fn names_with_capitals_or_stray_separators_are_refused(raw in "[a-zA-Z0-9/._-]{0,20}") {
        if let Ok(name) = PackageName::parse(&raw) {
            prop_assert_eq!(name.as_str().matches('/').count(), 1);
            prop_assert!(!raw.bytes().any(|b| b.is_ascii_uppercase()));
            for part in name.as_str().split('/') {
                prop_assert!(part.starts_with(|c: char| c.is_ascii_alphanumeric()));
                prop_assert!(part.ends_with(|c: char| c.is_ascii_alphanumeric()));
            }
        }
    }
}

/// A p2 document for `acme/tool` with the given versions, each with a dist.
fn p2_document(versions: &[(Map<String, Value>, String, String)], minified: bool) -> Value {
    let complete: Vec<Map<String, Value>> = versions
        .iter()
        .map(|(entry, reference, shasum)| {
            let mut entry = entry.clone();
            entry.insert(
                "dist".to_owned(),
                json!({
                    "type": "zip",
                    "url": format!("https://code.example/acme/tool/zipball/{reference}"),
                    "reference": reference,
                    "shasum": shasum,
                    "mirrors": [{"url": "https://mirror.example/%package%/%reference%.%type%"}],
                }),
            );
            entry
        })
        .collect();
    let list = if minified {
        minify(&complete)
    } else {
        complete.into_iter().map(Value::Object).collect()
    };
    let mut document = json!({
        "packages": {"acme/tool": list},
        "security-advisories": [{"advisoryId": "PKSA-1"}],
    });
    if minified {
        document["minified"] = json!("composer/2.0");
    }
    document
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_rewritten_p2_changes_only_dist_urls(
        versions in proptest::collection::vec(
            (entry(), "[a-z0-9]{1,12}(/[a-z]{1,5})?", prop_oneof![Just(String::new()), "[0-9a-f]{40}"]),
            0..8,
        ),
        minified in any::<bool>(),
    ) {
        let document = p2_document(&versions, minified);
        let body = serde_json::to_vec(&document).expect("serialises");
        let url = Url::parse("https://repo.example/p2/acme/tool.json").expect("valid");
        let p2 = rewrite_p2(&body, &url, REWRITE, &serve_all).expect("rewrites");
        prop_assert_eq!(p2.dists.len(), versions.len());
        let served: Value = serde_json::from_slice(&p2.body).expect("JSON");
        prop_assert_eq!(&served["security-advisories"], &document["security-advisories"]);
        prop_assert_eq!(&served["minified"], &document["minified"]);
        let list = served["packages"]["acme/tool"].as_array().expect("a list");
        let complete = if minified {
            expand(list)
        } else {
            list.iter().filter_map(|v| v.as_object().cloned()).collect()
        };
        let upstream = p2_document(&versions, false);
        let upstream = upstream["packages"]["acme/tool"].as_array().expect("a list");
        for ((served, upstream), dist) in complete.iter().zip(upstream).zip(&p2.dists) {
            let local = served["dist"]["url"].as_str().expect("a URL");
            prop_assert!(local.starts_with(DISTS), "{}", local);
            let parsed = Url::parse(local).expect("parses");
            let path = parsed.path().strip_prefix("/packagist").expect("on the mount");
            prop_assert_eq!(
                classify(path).expect("routes"),
                Route::Dist {
                    package: PackageName::parse("acme/tool").expect("valid"),
                    file: dist.file.clone(),
                }
            );
            prop_assert_eq!(Some(dist.upstream.as_str()), upstream["dist"]["url"].as_str());
            let shasum = upstream["dist"]["shasum"].as_str().expect("a shasum");
            prop_assert_eq!(dist.checksum.as_ref().map(|c| c.hex.as_str()), Some(shasum).filter(|s| !s.is_empty()));
            // Beside the URL (and the mirrors, which would send clients around pmcache),
            // the version is the upstream's.
            let mut served = served.clone();
            let mut upstream = upstream.as_object().expect("object").clone();
            for entry in [&mut served, &mut upstream] {
                let dist = entry.get_mut("dist").and_then(Value::as_object_mut).expect("dist");
                dist.shift_remove("url");
                dist.shift_remove("mirrors");
            }
            prop_assert_eq!(served, upstream);
        }
    }
}

/// Found by the `packagist_rewrite` fuzz target: a key that is no package name made dist URLs
/// such as `<dists>/../../x/r.zip` or `<dists>/?acme/tool/r.zip`.
#[test]
fn p2_keys_that_are_no_package_names_are_dropped() {
    let entry = json!([{"version": "1.0", "dist": {"type": "zip", "reference": "r",
        "url": "https://code.example/r.zip"}}]);
    let document = json!({"packages": {
        "../../x": entry, "?acme/tool": entry, "acme/tool#x": entry, "Acme/Tool": entry,
        "acme/tool": entry,
    }});
    let body = serde_json::to_vec(&document).expect("serialises");
    let url = Url::parse("https://repo.example/p2/acme/tool.json").expect("valid");
    let p2 = rewrite_p2(&body, &url, REWRITE, &serve_all).expect("rewrites");
    let served: Value = serde_json::from_slice(&p2.body).expect("JSON");
    let keys: Vec<&String> = served["packages"]
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(keys, ["acme/tool"]);
    assert_eq!(p2.dists.len(), 1);
    assert_eq!(
        served["packages"]["acme/tool"][0]["dist"]["url"],
        json!(format!("{DISTS}acme/tool/r.zip"))
    );
}

/// Found by the `packagist_rewrite` fuzz target: serde_json's default float parsing may be one
/// unit in the last place off, even on what it wrote itself, so a number went through a
/// rewrite changed.
#[test]
fn numbers_survive_a_rewrite_exactly() {
    let body = br#"{"packages": {"acme/tool": [{"version": "1.0", "x": 7.777777777777778e103}]}}"#;
    let url = Url::parse("https://repo.example/p2/acme/tool.json").expect("valid");
    let p2 = rewrite_p2(body, &url, REWRITE, &serve_all).expect("rewrites");
    let served = String::from_utf8(p2.body).expect("UTF-8");
    assert!(served.contains(r#""x":7.777777777777778e+103"#), "{served}");
}
