//! Composer's minified metadata lists (`"minified": "composer/2.0"`): the first version entry is
//! complete, each later one holds only the keys whose values differ from the entry before it
//! (expanded), and `"__unset"` for keys that entry had and this one lacks.

use serde_json::{Map, Value};

/// The marker for a key the previous version had and this one lacks.
const UNSET: &str = "__unset";

/// Every entry complete: the diffs replayed in order.
pub fn expand(entries: &[Value]) -> Vec<Map<String, Value>> {
    let mut expanded = Vec::with_capacity(entries.len());
    let mut current: Option<Map<String, Value>> = None;
    for entry in entries {
        let Value::Object(entry) = entry else {
            continue;
        };
        let next = match current.take() {
            None => entry.clone(),
            Some(mut previous) => {
                for (key, value) in entry {
                    if value.as_str() == Some(UNSET) {
                        previous.shift_remove(key);
                    } else {
                        previous.insert(key.clone(), value.clone());
                    }
                }
                previous
            }
        };
        expanded.push(next.clone());
        current = Some(next);
    }
    expanded
}

/// The minified form of complete entries: the inverse of [`expand`].
pub fn minify(entries: &[Map<String, Value>]) -> Vec<Value> {
    let mut minified = Vec::with_capacity(entries.len());
    let mut previous: Option<&Map<String, Value>> = None;
    for entry in entries {
        let Some(before) = previous else {
            minified.push(Value::Object(entry.clone()));
            previous = Some(entry);
            continue;
        };
        let mut diff = Map::new();
        for (key, value) in entry {
            if before.get(key) != Some(value) {
                diff.insert(key.clone(), value.clone());
            }
        }
        for key in before.keys() {
            if !entry.contains_key(key) {
                diff.insert(key.clone(), Value::String(UNSET.to_owned()));
            }
        }
        minified.push(Value::Object(diff));
        previous = Some(entry);
    }
    minified
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entries(value: Value) -> Vec<Value> {
        value.as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn diffs_and_unsets_are_replayed() {
        let minified = entries(json!([
            {"version": "1.1.0", "require": {"php": ">=8"}, "extra": {"x": 1}},
            {"version": "1.0.0", "extra": "__unset"},
            {"version": "0.9.0", "require": {"php": ">=7"}}
        ]));
        let expanded = expand(&minified);
        assert_eq!(
            Value::Array(expanded.iter().cloned().map(Value::Object).collect()),
            json!([
                {"version": "1.1.0", "require": {"php": ">=8"}, "extra": {"x": 1}},
                {"version": "1.0.0", "require": {"php": ">=8"}},
                {"version": "0.9.0", "require": {"php": ">=7"}}
            ])
        );
        assert_eq!(minify(&expanded), minified);
    }

    #[test]
    fn a_key_that_comes_back_is_sent_again() {
        let expanded: Vec<Map<String, Value>> = entries(json!([
            {"version": "3", "a": 1},
            {"version": "2"},
            {"version": "1", "a": 1}
        ]))
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let minified = minify(&expanded);
        assert_eq!(
            Value::Array(minified.clone()),
            json!([{"version": "3", "a": 1}, {"version": "2", "a": "__unset"}, {"version": "1", "a": 1}])
        );
        assert_eq!(expand(&minified), expanded);
    }
}
