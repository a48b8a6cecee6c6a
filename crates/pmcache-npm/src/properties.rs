//! Properties of names and packument rewriting over generated input: a name routes back to
//! itself however a client spells it, and a rewritten packument is the upstream one with only
//! tarball URLs replaced, each under pmcache's registry and routing back to its tarball.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use url::Url;

use crate::name::{NpmPath, PackageName, classify};
use crate::rewrite::{rewrite_packument, serve_all};

const REGISTRY: &str = "http://127.0.0.1:7878/npm/";

fn part() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9~-][a-zA-Z0-9._~-]{0,20}"
}

fn package_name() -> impl Strategy<Value = PackageName> {
    // The one name the charset allows but npm cannot serve, `-`, is filtered out.
    (proptest::option::of(part()), part()).prop_filter_map("not a name", |(scope, bare)| {
        let raw = match scope {
            Some(scope) => format!("@{scope}/{bare}"),
            None => bare,
        };
        PackageName::parse(&raw).ok()
    })
}

proptest! {
    #[test]
    fn every_spelling_of_a_name_routes_to_it(name in package_name()) {
        let packument = Some(NpmPath::Packument(name.clone()));
        prop_assert_eq!(PackageName::parse(name.as_str()).ok(), Some(name.clone()));
        prop_assert_eq!(classify(&format!("/{name}")).ok(), packument.clone());
        prop_assert_eq!(classify(&format!("/{}", name.escaped())).ok(), packument.clone());
        prop_assert_eq!(classify(&format!("/{}", name.escaped().replace("%2f", "%2F"))).ok(), packument);
        match name.scope() {
            Some(scope) => prop_assert_eq!(name.as_str(), format!("@{scope}/{}", name.bare())),
            None => prop_assert_eq!(name.as_str(), name.bare()),
        }
    }

    #[test]
    fn names_that_are_not_npm_names_are_refused(raw in ".{0,30}") {
        if let Ok(name) = PackageName::parse(&raw) {
            let bare_ok = |p: &str| !p.is_empty()
                && !p.starts_with(['.', '_'])
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let parts_ok = match name.scope() {
                Some(scope) => bare_ok(scope) && bare_ok(name.bare()),
                None => bare_ok(name.bare()),
            };
            prop_assert!(parts_ok, "{:?} accepted", raw);
        }
    }
}

fn version() -> impl Strategy<Value = String> {
    "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-beta\\.[0-9])?(\\+build\\.[0-9])?"
}

fn packument(name: &PackageName) -> impl Strategy<Value = Value> + use<> {
    let name = name.to_string();
    proptest::collection::btree_map(
        version(),
        (
            "[0-9a-f]{40}",
            any::<bool>(),
            prop_oneof![
                Just("https://cdn.registry.example/files/"),
                Just("http://registry.example/base/x/-/"),
                Just("../../tarballs/"),
                Just("ftp://elsewhere.example/"),
            ],
        ),
        0..8,
    )
    .prop_map(move |versions| {
        let entries: Map<String, Value> = versions
            .iter()
            .map(|(version, (shasum, with_integrity, base))| {
                let mut dist = json!({
                    "shasum": shasum,
                    "tarball": format!("{base}t-{version}.tgz"),
                    "fileCount": 3,
                });
                if *with_integrity {
                    dist["integrity"] = json!("sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==");
                }
                let entry = json!({
                    "name": name,
                    "version": version,
                    "description": "not in the abbreviated document",
                    "dependencies": {"left-pad": "^1.0.0"},
                    "scripts": {"test": "true"},
                    "dist": dist,
                    "_npmUser": {"name": "someone"},
                });
                (version.clone(), entry)
            })
            .collect();
        let latest = versions.keys().next_back().cloned().unwrap_or_default();
        json!({
            "_id": name,
            "name": name,
            "dist-tags": {"latest": latest},
            "versions": entries,
            "time": {"created": "2020-01-01T00:00:00.000Z"},
            "readme": "# kept",
            "maintainers": [{"name": "someone"}],
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_rewritten_packument_changes_only_tarball_urls(
        (name, document) in package_name().prop_flat_map(|name| (Just(name.clone()), packument(&name)))
    ) {
        let url = Url::parse(&format!("https://registry.example/base/{}", name.escaped())).expect("valid");
        let body = serde_json::to_vec(&document).expect("serialises");
        let rewritten = rewrite_packument(&body, &name, &url, REGISTRY, &serve_all).expect("rewrites");
        let mut full: Value = serde_json::from_slice(&rewritten.full).expect("JSON");
        let abbreviated: Value = serde_json::from_slice(&rewritten.abbreviated).expect("JSON");
        let http_versions = document["versions"]
            .as_object()
            .expect("versions")
            .values()
            .filter(|v| !v["dist"]["tarball"].as_str().is_some_and(|t| t.starts_with("ftp:")))
            .count();
        prop_assert_eq!(rewritten.tarballs.len(), http_versions);
        let prefix = format!("{REGISTRY}{name}/-/");
        for tarball in &rewritten.tarballs {
            let upstream_dist = &document["versions"][&tarball.version]["dist"];
            let slot = &mut full["versions"][&tarball.version]["dist"]["tarball"];
            let local = slot.as_str().expect("a URL").to_owned();
            prop_assert!(local.starts_with(&prefix), "{} not under {}", local, prefix);
            let path = &local[REGISTRY.len() - 1..];
            prop_assert_eq!(
                classify(path).expect("routes"),
                NpmPath::Tarball { package: name.clone(), filename: tarball.filename.clone() }
            );
            // The published digest is what the tarball will be verified against.
            let checksum = tarball.checksum.as_ref().expect("a checksum");
            if upstream_dist.get("integrity").is_some() {
                prop_assert_eq!(checksum.algorithm.name(), "sha512");
            } else {
                prop_assert_eq!(Some(checksum.hex.as_str()), upstream_dist["shasum"].as_str());
            }
            *slot = upstream_dist["tarball"].clone();
        }
        // Versions whose tarball is no http(s) URL are dropped, with the tags naming them.
        let mut document = document;
        let dropped: Vec<String> = document["versions"]
            .as_object()
            .expect("versions")
            .iter()
            .filter(|(_, v)| v["dist"]["tarball"].as_str().is_some_and(|t| t.starts_with("ftp:")))
            .map(|(version, _)| version.clone())
            .collect();
        for version in &dropped {
            document["versions"].as_object_mut().expect("versions").remove(version);
        }
        let kept: Vec<String> = document["versions"].as_object().expect("versions").keys().cloned().collect();
        document["dist-tags"]
            .as_object_mut()
            .expect("tags")
            .retain(|_, version| version.as_str().is_some_and(|v| kept.iter().any(|k| k == v)));
        prop_assert_eq!(&full, &document);
        // The abbreviated document keeps install fields only, values unchanged.
        let full: Value = serde_json::from_slice(&rewritten.full).expect("JSON");
        for (version, short) in abbreviated["versions"].as_object().expect("versions") {
            prop_assert!(short.get("description").is_none() && short.get("scripts").is_none());
            for (key, value) in short.as_object().expect("object") {
                prop_assert_eq!(Some(value), full["versions"][version].get(key));
            }
        }
        prop_assert_eq!(&abbreviated["dist-tags"], &document["dist-tags"]);
    }
}
