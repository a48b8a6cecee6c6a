//! Composer's minified version lists: expanding, minifying and expanding again gives the same
//! complete entries, keys in the same order, and minifying is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_packagist::minified::{expand, minify};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let expanded = expand(&entries);
    assert!(expanded.len() <= entries.len());
    let minified = minify(&expanded);
    assert_eq!(minified.len(), expanded.len());
    let again = expand(&minified);
    // Compared as text: key order is what clients see, and Map equality ignores it.
    assert_eq!(
        serde_json::to_string(&again).expect("serialises"),
        serde_json::to_string(&expanded).expect("serialises")
    );
    assert_eq!(minify(&again), minified, "minify is not stable");
});
