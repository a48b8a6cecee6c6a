//! npm packuments: a rewritten packument is the upstream one with only planned `dist.tarball`s
//! replaced, each by a URL under pmcache's registry that routes back to the same tarball, and
//! the versions without one (and tags naming them) dropped.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use pmcache_npm::name::{NpmPath, PackageName, classify};
use pmcache_npm::rewrite::{rewrite_packument, serve_all};
use serde_json::Value;
use url::Url;

const REGISTRY: &str = "http://127.0.0.1:7878/npm/";

fuzz_target!(|data: &[u8]| {
    // The name the document claims, when it is one, so that the rewrite gets past its check.
    let claimed = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    let package = claimed
        .and_then(|name| PackageName::parse(&name).ok())
        .unwrap_or_else(|| PackageName::parse("@scope/demo").expect("a valid name"));
    let url = Url::parse(&format!(
        "https://registry.example/base/{}",
        package.escaped()
    ))
    .expect("a valid URL");
    let Ok(rewritten) = rewrite_packument(data, &package, &url, REGISTRY, &serve_all) else {
        return;
    };
    let upstream: Value = serde_json::from_slice(data).expect("it parsed before");
    let served: Value = serde_json::from_slice(&rewritten.full).expect("full is JSON");
    let mut full = served.clone();
    let abbreviated: Value =
        serde_json::from_slice(&rewritten.abbreviated).expect("abbreviated is JSON");

    let prefix = format!("{REGISTRY}{package}/-/");
    let mut filenames = HashSet::new();
    for tarball in &rewritten.tarballs {
        assert!(matches!(tarball.upstream.scheme(), "http" | "https"));
        assert!(
            filenames.insert(&tarball.filename),
            "{} twice",
            tarball.filename
        );
        let slot = &mut full["versions"][&tarball.version]["dist"]["tarball"];
        let local = slot.as_str().expect("a rewritten tarball URL").to_owned();
        let rest = local
            .strip_prefix(&prefix)
            .expect("under pmcache's registry");
        assert!(!rest.contains(['/', '?', '#']), "{local}");
        // What the client will ask for routes back to this very tarball.
        let path = local
            .strip_prefix("http://127.0.0.1:7878/npm")
            .expect("on the mount");
        assert_eq!(
            classify(path).expect("the rewritten URL routes"),
            NpmPath::Tarball {
                package: package.clone(),
                filename: tarball.filename.clone(),
            }
        );
        // Put the upstream value back: then nothing else may differ.
        *slot = upstream["versions"][&tarball.version]["dist"]["tarball"].clone();
    }
    // Versions without a servable tarball are dropped, and the tags naming them.
    let mut upstream = upstream;
    let kept: HashSet<String> = served["versions"]
        .as_object()
        .expect("versions object")
        .keys()
        .cloned()
        .collect();
    for tarball in &rewritten.tarballs {
        assert!(kept.contains(&tarball.version));
    }
    if let Some(versions) = upstream.get_mut("versions").and_then(Value::as_object_mut) {
        versions.retain(|version, _| kept.contains(version));
    }
    if let Some(tags) = upstream.get_mut("dist-tags").and_then(Value::as_object_mut) {
        tags.retain(|_, version| version.as_str().is_some_and(|v| kept.contains(v)));
    }
    assert_eq!(
        kept.len(),
        rewritten.tarballs.len(),
        "a version without a tarball was kept"
    );
    assert_eq!(full, upstream, "the rewrite changed more than tarball URLs");

    // The abbreviated document holds a subset of each version, values unchanged.
    let full_versions = served["versions"].as_object().expect("versions object");
    let short_versions = abbreviated["versions"]
        .as_object()
        .expect("versions object");
    assert_eq!(
        full_versions.keys().collect::<Vec<_>>(),
        short_versions.keys().collect::<Vec<_>>()
    );
    for (version, short) in short_versions {
        let Some(short) = short.as_object() else {
            assert_eq!(Some(short), full_versions.get(version));
            continue;
        };
        for (key, value) in short {
            assert_eq!(
                Some(value),
                served["versions"][version].get(key),
                "{version}.{key}"
            );
        }
    }
});
