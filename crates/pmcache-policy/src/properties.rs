//! Properties of names and patterns over generated names: normalising is idempotent, every
//! spelling of a name normalises alike, and a name always matches its own exact pattern.

use proptest::prelude::*;

use crate::{Ecosystem, Pattern};

/// A valid name of `ecosystem`, in any case and separator spelling it accepts.
fn name(ecosystem: Ecosystem) -> BoxedStrategy<String> {
    match ecosystem {
        Ecosystem::Pypi => "[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?".boxed(),
        Ecosystem::Npm => {
            "(@[a-z0-9~-][a-z0-9._~-]{0,10}/)?[a-zA-Z0-9~-][a-zA-Z0-9._~-]{0,20}".boxed()
        }
        Ecosystem::Rubygems => "[A-Za-z0-9_][A-Za-z0-9._-]{0,20}".boxed(),
        Ecosystem::Packagist => {
            "[A-Za-z0-9][A-Za-z0-9._-]{0,10}/[A-Za-z0-9][A-Za-z0-9._-]{0,10}".boxed()
        }
    }
}

fn ecosystem_and_name() -> impl Strategy<Value = (Ecosystem, String)> {
    proptest::sample::select(Ecosystem::ALL.to_vec())
        .prop_flat_map(|ecosystem| (Just(ecosystem), name(ecosystem)))
}

fn version() -> impl Strategy<Value = String> {
    "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-?[a-zA-Z]{1,5}[0-9]{0,2})?"
}

proptest! {
    #[test]
    fn normalising_is_idempotent((ecosystem, name) in ecosystem_and_name(), version in version()) {
        let once = ecosystem.normalize_name(&name);
        prop_assert_eq!(ecosystem.normalize_name(&once), once);
        let once = ecosystem.normalize_version(&version);
        prop_assert_eq!(ecosystem.normalize_version(&once), once);
    }

    #[test]
    fn a_name_matches_its_own_exact_pattern(
        (ecosystem, name) in ecosystem_and_name(),
        version in version(),
    ) {
        let whole = Pattern::parse(&format!("{ecosystem}:{name}"), None);
        prop_assert!(whole.is_ok(), "{:?}", whole);
        let whole = whole.expect("checked");
        prop_assert!(whole.matches_name(ecosystem, &name));
        prop_assert!(whole.matches(ecosystem, &name, &version));
        let exact = Pattern::parse(&format!("{ecosystem}:{name}@{version}"), None);
        prop_assert!(exact.is_ok(), "{:?}", exact);
        let exact = exact.expect("checked");
        prop_assert!(exact.matches(ecosystem, &name, &version));
        prop_assert!(exact.matches(ecosystem, &ecosystem.normalize_name(&name), &version));
        // The section form, without the prefix, is the same pattern.
        let bare = Pattern::parse_name(&name, Some(ecosystem));
        prop_assert!(bare.is_ok(), "{:?}", bare);
        prop_assert!(bare.expect("checked").matches_name(ecosystem, &name));
    }

    #[test]
    fn every_spelling_of_a_pypi_name_matches(name in name(Ecosystem::Pypi)) {
        let respelled: String = name
            .chars()
            .map(|c| match c {
                '-' => '_',
                '_' => '.',
                '.' => '-',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        let pattern = Pattern::parse(&format!("pypi:{name}"), None).expect("a valid name");
        prop_assert!(pattern.matches_name(Ecosystem::Pypi, &respelled));
    }

    #[test]
    fn every_case_of_a_composer_name_matches(name in name(Ecosystem::Packagist)) {
        let pattern = Pattern::parse(&format!("packagist:{name}"), None).expect("a valid name");
        prop_assert!(pattern.matches_name(Ecosystem::Packagist, &name.to_ascii_uppercase()));
        prop_assert!(pattern.matches_name(Ecosystem::Packagist, &name.to_ascii_lowercase()));
    }
}
