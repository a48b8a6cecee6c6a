//! Properties of the compact index readers and gem names over generated files: every line
//! pmcache should read is read, in order, with its checksum, and names route to themselves.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::compact::{info_checksums, info_entries, is_compact_index};
use crate::name::{FullName, GemName};
use crate::path::{GemsPath, classify};

fn gem_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}"
}

fn version() -> impl Strategy<Value = String> {
    "[0-9]{1,2}\\.[0-9]{1,2}(\\.[0-9a-z]{1,4})?(-(x86_64-linux|java|universal-darwin-19))?"
}

proptest! {
    #[test]
    fn versions_files_give_the_last_md5_of_each_gem(
        lines in proptest::collection::vec(
            (gem_name(), proptest::collection::vec(version(), 1..4), "[0-9a-f]{32}"),
            0..20,
        ),
        header in "(created_at: [0-9TZ:-]{1,20}\n)?",
    ) {
        let mut file = format!("{header}---\n");
        let mut expected = HashMap::new();
        for (name, versions, md5) in &lines {
            file.push_str(&format!("{name} {} {md5}\n", versions.join(",")));
            expected.insert(name.clone(), md5.clone());
        }
        prop_assert!(is_compact_index(file.as_bytes()));
        prop_assert_eq!(info_checksums(file.as_bytes()), expected);
    }

    #[test]
    fn info_files_give_every_version_with_its_checksum(
        lines in proptest::collection::vec(
            (
                version(),
                "([a-z_-]{1,8}:(>= |~> |< )[0-9.]{1,5}(&[<>=~ 0-9.]{1,6})?(,[a-z_-]{1,8}:>= 0)?)?",
                proptest::option::of("[0-9a-f]{64}"),
            ),
            0..20,
        ),
    ) {
        let mut file = String::from("---\n");
        for (version, dependencies, checksum) in &lines {
            let mut requirements = vec!["ruby:>= 2.5".to_owned()];
            if let Some(checksum) = checksum {
                requirements.insert(0, format!("checksum:{checksum}"));
            }
            file.push_str(&format!("{version} {dependencies}|{}\n", requirements.join(",")));
        }
        let entries = info_entries(file.as_bytes());
        prop_assert_eq!(entries.len(), lines.len());
        for (entry, (version, _, checksum)) in entries.iter().zip(&lines) {
            prop_assert_eq!(&entry.version, version);
            prop_assert_eq!(entry.checksum.as_ref().map(|c| c.hex.clone()), checksum.clone());
        }
    }

    #[test]
    fn any_bytes_are_read_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let checksums = info_checksums(&body);
        prop_assert!(is_compact_index(&body) || checksums.is_empty());
        for entry in info_entries(&body) {
            prop_assert!(!entry.version.contains(' '));
        }
    }

    #[test]
    fn gem_names_and_full_names_route_to_themselves(name in gem_name(), version in version()) {
        let gem = GemName::parse(&name).expect("valid");
        prop_assert_eq!(classify(&format!("/info/{name}")).ok(), Some(GemsPath::Info(gem.clone())));
        let full = FullName::parse(&format!("{name}-{version}")).expect("valid");
        // The real split is among the candidates tried upstream, unless the name itself holds
        // three or more `-<digit>` (the candidates are capped).
        let splits = full.splits();
        if name.matches('-').count() < 3 {
            prop_assert!(splits.iter().any(|(g, v)| *g == gem && *v == version), "{:?}", splits);
        }
        prop_assert_eq!(
            classify(&format!("/gems/{full}.gem")).ok(),
            Some(GemsPath::Gem(full))
        );
    }
}
