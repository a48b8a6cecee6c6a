//! Package names and request paths of every ecosystem: normalisation is idempotent, what is
//! accepted is exactly what the rules allow, and a valid name routes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_npm::name as npm;
use pmcache_packagist::{name as packagist, path as packagist_path};
use pmcache_pypi::name::ProjectName;
use pmcache_rubygems::{name as rubygems, path as rubygems_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    pypi(text);
    npm(text);
    rubygems(text);
    packagist(text);
});

fn pypi(text: &str) {
    let separator = |b: u8| matches!(b, b'-' | b'_' | b'.');
    let bytes = text.as_bytes();
    let valid = (1..=200).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || separator(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    let Ok(name) = ProjectName::parse(text) else {
        assert!(!valid, "{text:?} refused");
        return;
    };
    assert!(valid, "{text:?} accepted");
    let normal = name.as_str();
    assert!(
        !normal.contains(['_', '.']) && !normal.contains("--"),
        "{normal}"
    );
    assert!(!normal.bytes().any(|b| b.is_ascii_uppercase()), "{normal}");
    assert_eq!(
        ProjectName::parse(normal).expect("normal form is valid"),
        name
    );
    assert_eq!(
        normal.replace('-', ""),
        text.replace(['-', '_', '.'], "").to_ascii_lowercase()
    );
}

fn npm(text: &str) {
    let path = npm::classify(text);
    if let Ok(npm::NpmPath::Tarball { filename, .. }) = &path {
        assert!(
            filename.ends_with(".tgz") && !filename.contains('/'),
            "{filename}"
        );
    }
    let Ok(name) = npm::PackageName::parse(text) else {
        return;
    };
    assert!(name.as_str().len() <= 214);
    match name.scope() {
        Some(scope) => assert_eq!(name.as_str(), format!("@{scope}/{}", name.bare())),
        None => assert_eq!(name.as_str(), name.bare()),
    }
    let packument = npm::NpmPath::Packument(name.clone());
    assert_eq!(
        npm::classify(&format!("/{}", name.escaped())).ok(),
        Some(packument.clone())
    );
    assert_eq!(npm::classify(&format!("/{name}")).ok(), Some(packument));
    let tarball = format!("{}-1.0.0.tgz", name.bare());
    assert_eq!(
        npm::classify(&format!("/{}/-/{tarball}", name.escaped())).ok(),
        Some(npm::NpmPath::Tarball {
            package: name.clone(),
            filename: tarball
        })
    );
}

fn rubygems(text: &str) {
    let _ = rubygems_path::classify(text);
    if let Ok(gem) = rubygems::GemName::parse(text) {
        assert!(gem.as_str().bytes().any(|b| b.is_ascii_alphanumeric()));
        assert!(!matches!(gem.as_str(), "." | ".."));
        let info = rubygems_path::classify(&format!("/info/{gem}"));
        assert_eq!(info.ok(), Some(rubygems_path::GemsPath::Info(gem)));
    }
    if let Ok(full) = rubygems::FullName::parse(text) {
        let splits = full.splits();
        assert!(!splits.is_empty() && splits.len() <= 3);
        for (gem, version) in splits {
            assert_eq!(format!("{gem}-{version}"), full.as_str());
            assert!(version.starts_with(|c: char| c.is_ascii_digit()));
        }
        let gem_path = rubygems_path::classify(&format!("/gems/{full}.gem"));
        assert_eq!(gem_path.ok(), Some(rubygems_path::GemsPath::Gem(full)));
    }
}

fn packagist(text: &str) {
    let _ = packagist_path::classify(text);
    let Ok(name) = packagist::PackageName::parse(text) else {
        return;
    };
    let (vendor, bare) = name.as_str().split_once('/').expect("vendor/name");
    for part in [vendor, bare] {
        assert!(!part.is_empty() && !part.contains('/'), "{name}");
        assert!(!part.bytes().any(|b| b.is_ascii_uppercase()), "{name}");
        assert!(!matches!(part, "." | ".."), "{name}");
    }
    let route = packagist_path::classify(&format!("/p2/{name}~dev.json"));
    assert_eq!(
        route.ok(),
        Some(packagist_path::Route::P2 {
            package: name.clone(),
            dev: true
        })
    );
    let dist = packagist_path::classify(&format!("/dists/{name}/abc.zip"));
    assert_eq!(
        dist.ok(),
        Some(packagist_path::Route::Dist {
            package: name,
            file: "abc.zip".to_owned()
        })
    );
}
