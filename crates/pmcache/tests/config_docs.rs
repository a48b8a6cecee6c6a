//! `config/example.toml` and the settings table of `docs/configuration.md` name the same keys,
//! each with its `PMCACHE_*` variable: a setting added to one and forgotten in the other fails
//! here.

use std::collections::BTreeSet;
use std::path::Path;

/// A setting: its section (empty at the top level) and key.
type Key = (String, String);

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Every key `example.toml` sets or shows commented out (`# max_size = "20GiB"`), with its
/// section. The keys of an array of tables shown commented out (`# [[auth.tokens]]`) are
/// documented in prose below the table, not as rows, and are skipped.
fn example_keys(toml: &str) -> BTreeSet<Key> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    let mut in_table_array = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with("# [[") {
            in_table_array = true;
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.to_owned();
            in_table_array = false;
            continue;
        }
        if in_table_array {
            continue;
        }
        let setting = line.strip_prefix('#').map_or(line, str::trim_start);
        let Some((key, _)) = setting.split_once(" = ") else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert((section.clone(), key.to_owned()));
        }
    }
    keys
}

/// The rows of the settings table: `| `[section] key` | `PMCACHE_…` | default | meaning |`,
/// as (section, key) and the environment variable.
fn documented_keys(markdown: &str) -> Vec<(Key, String)> {
    let table = markdown
        .split_once("## Settings")
        .expect("docs/configuration.md has a Settings section")
        .1;
    let mut rows = Vec::new();
    for line in table.lines().skip_while(|line| !line.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(variable)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(name) = name
            .strip_prefix('`')
            .and_then(|rest| rest.strip_suffix('`'))
        else {
            // The header and separator rows.
            continue;
        };
        let key = match name
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "))
        {
            Some((section, key)) => (section.to_owned(), key.to_owned()),
            None => (String::new(), name.to_owned()),
        };
        rows.push((key, variable.trim_matches('`').to_owned()));
    }
    rows
}

/// `PMCACHE_<SECTION>_<KEY>`, or `PMCACHE_<KEY>` at the top level; a subsection's dot is an
/// underscore (`[npm.policy] deny`: `PMCACHE_NPM_POLICY_DENY`).
fn variable((section, key): &Key) -> String {
    let name = if section.is_empty() {
        key.clone()
    } else {
        format!("{}_{key}", section.replace('.', "_"))
    };
    format!("PMCACHE_{}", name.to_ascii_uppercase())
}

fn label((section, key): &Key) -> String {
    if section.is_empty() {
        key.clone()
    } else {
        format!("[{section}] {key}")
    }
}

#[test]
fn every_example_key_is_documented_with_its_variable() {
    let example = example_keys(&read("config/example.toml"));
    let documented = documented_keys(&read("docs/configuration.md"));
    assert!(
        example.len() > 20,
        "example.toml yielded only {} keys: {example:?}",
        example.len()
    );
    let rows: BTreeSet<&Key> = documented.iter().map(|(key, _)| key).collect();

    let undocumented: Vec<String> = example
        .iter()
        .filter(|key| !rows.contains(key))
        .map(label)
        .collect();
    assert!(
        undocumented.is_empty(),
        "in config/example.toml but not in the settings table of docs/configuration.md: \
         {undocumented:?}"
    );
    let not_in_example: Vec<String> = rows
        .iter()
        .filter(|key| !example.contains(**key))
        .map(|key| label(key))
        .collect();
    assert!(
        not_in_example.is_empty(),
        "in docs/configuration.md but not in config/example.toml: {not_in_example:?}"
    );
    let wrong_variables: Vec<String> = documented
        .iter()
        .filter(|(key, named)| *named != variable(key))
        .map(|(key, named)| format!("{}: {named}, not {}", label(key), variable(key)))
        .collect();
    assert!(
        wrong_variables.is_empty(),
        "documented with the wrong environment variable: {wrong_variables:?}"
    );
}

#[test]
fn commented_out_keys_count_and_prose_does_not() {
    let keys = example_keys(
        "# Prose: flags > environment, e.g. PMCACHE_X=1.\nlisten = \"a\"\n[storage]\n\
         # max_size = \"20GiB\"\n# Eviction frees space.\nlow_water_percent = 90\n",
    );
    let expected: BTreeSet<Key> = [
        ("", "listen"),
        ("storage", "max_size"),
        ("storage", "low_water_percent"),
    ]
    .iter()
    .map(|(section, key)| ((*section).to_owned(), (*key).to_owned()))
    .collect();
    assert_eq!(keys, expected);
}
