//! Composer p2 files and `packages.json`: every rewritten URL is under pmcache's base, a dist
//! URL routes back to the archive it stands for, and nothing but URLs changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_packagist::minified::expand;
use pmcache_packagist::name::PackageName;
use pmcache_packagist::path::{Route, classify};
use pmcache_packagist::rewrite::{
    DistRewrite, ENDPOINTS, encode, rewrite_p2, rewrite_root, serve_all,
};
use serde_json::{Map, Value};
use url::Url;

const BASE: &str = "http://127.0.0.1:7878/packagist";

fuzz_target!(|data: &[u8]| {
    check_p2(data);
    check_root(data);
});

fn check_p2(data: &[u8]) {
    let url = Url::parse("https://repo.example/p2/acme/tool.json").expect("a valid URL");
    let dists_base = format!("{BASE}/dists/");
    let rewrite = DistRewrite {
        base: &dists_base,
        keep_source: data.first().is_some_and(|byte| byte % 2 == 0),
    };
    let Ok(p2) = rewrite_p2(data, &url, rewrite, &serve_all) else {
        return;
    };
    for dist in &p2.dists {
        assert!(matches!(dist.upstream.scheme(), "http" | "https"));
        let local = format!("{dists_base}{}/{}", dist.package, encode(&dist.file));
        let parsed = Url::parse(&local).expect("a rewritten dist URL parses");
        assert!(
            parsed.as_str().starts_with(&dists_base),
            "{local} resolves to {parsed}, outside {dists_base}"
        );
        assert!(
            parsed.query().is_none() && parsed.fragment().is_none(),
            "{local}"
        );
        // A name Composer could ask for routes back to the recorded archive.
        if let Ok(package) = PackageName::parse(&dist.package)
            && dist.file.len() <= 512
            && !dist.file.contains('\0')
        {
            let path = &parsed.path()["/packagist".len()..];
            assert_eq!(
                classify(path).expect("a rewritten dist URL routes"),
                Route::Dist {
                    package,
                    file: dist.file.clone()
                }
            );
        }
    }
    let upstream: Map<String, Value> = serde_json::from_slice(data).expect("parsed before");
    let served: Map<String, Value> = serde_json::from_slice(&p2.body).expect("output is JSON");
    let minified = served.get("minified").and_then(Value::as_str) == Some("composer/2.0");
    // Only `packages` may change, and within it only dist URLs and dist mirrors.
    assert_eq!(
        without(&served, "packages"),
        without(&upstream, "packages"),
        "keys beside packages changed"
    );
    let (Some(Value::Object(before)), Some(Value::Object(after))) =
        (upstream.get("packages"), served.get("packages"))
    else {
        panic!("packages is no longer an object");
    };
    // Keys that are no package names are dropped: Composer never reads them, and their dist
    // URLs would leave the dists base.
    let kept = before
        .iter()
        .filter(|(name, _)| PackageName::parse(name).is_ok());
    assert_eq!(kept.clone().count(), after.len());
    let mut rewritten = 0;
    for ((name, before), (name_after, after)) in kept.zip(after) {
        assert_eq!(name, name_after);
        let complete = |entries: &Value| -> Vec<Map<String, Value>> {
            let entries = entries.as_array().expect("a version list");
            if minified {
                expand(entries)
            } else {
                entries
                    .iter()
                    .filter_map(|e| e.as_object().cloned())
                    .collect()
            }
        };
        let (before, after) = (complete(before), complete(after));
        assert_eq!(before.len(), after.len(), "{name} lost versions");
        for (mut before, mut after) in before.into_iter().zip(after) {
            // Without `keep_source`, `source` goes; a dist pmcache could not route back to goes
            // whole (rather than send clients around pmcache).
            if !rewrite.keep_source {
                before.shift_remove("source");
            }
            if before.contains_key("dist") && !after.contains_key("dist") {
                before.shift_remove("dist");
            }
            let url_after = after
                .get("dist")
                .and_then(|d| d.get("url"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(url) = url_after
                && url.starts_with(&dists_base)
                && before.get("dist").and_then(|d| d.get("url"))
                    != after.get("dist").and_then(|d| d.get("url"))
            {
                rewritten += 1;
                for entry in [&mut before, &mut after] {
                    let dist = entry.get_mut("dist").and_then(Value::as_object_mut);
                    let dist = dist.expect("a rewritten dist is an object");
                    dist.shift_remove("url");
                    dist.shift_remove("mirrors");
                }
            }
            assert_eq!(
                before, after,
                "{name}: a version changed beyond its dist URL"
            );
        }
    }
    assert!(rewritten <= p2.dists.len());
}

fn without(map: &Map<String, Value>, key: &str) -> Map<String, Value> {
    let mut map = map.clone();
    map.shift_remove(key);
    map
}

fn check_root(data: &[u8]) {
    let url = Url::parse("https://repo.example/packages.json").expect("a valid URL");
    let dists_base = format!("{BASE}/dists/");
    let rewrite = DistRewrite {
        base: &dists_base,
        keep_source: true,
    };
    let Ok(root) = rewrite_root(data, &url, BASE, rewrite, &serve_all) else {
        return;
    };
    for dist in &root.dists {
        let local = format!("{dists_base}{}/{}", dist.package, encode(&dist.file));
        let parsed = Url::parse(&local).expect("a rewritten dist URL parses");
        assert!(parsed.as_str().starts_with(&dists_base), "{local}");
    }
    let served: Map<String, Value> = serde_json::from_slice(&root.body).expect("output is JSON");
    for (path, route) in ENDPOINTS {
        let mut value = Some(&Value::Object(served.clone()));
        for part in path.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        if let (Some(text), Some(_)) = (value.and_then(Value::as_str), root.links.get(path)) {
            assert!(
                text.starts_with(&format!("{BASE}{route}")),
                "{path}: {text}"
            );
        }
    }
    for (key, value) in &served {
        let text_key = [
            "warning",
            "info",
            "warning-versions",
            "info-versions",
            "minified",
        ];
        if key != "packages" && !text_key.contains(&key.as_str()) {
            assert_urls_local(value);
        }
    }
}

/// Every string a client would take for a URL points at pmcache.
fn assert_urls_local(value: &Value) {
    match value {
        Value::String(text) => {
            let is_url = text.starts_with("http://")
                || text.starts_with("https://")
                || (text.starts_with('/') && !text.starts_with("//"));
            assert!(
                !is_url || text.starts_with(BASE),
                "{text} is not on pmcache"
            );
        }
        Value::Array(items) => items.iter().for_each(assert_urls_local),
        Value::Object(map) => map.values().for_each(assert_urls_local),
        _ => {}
    }
}
