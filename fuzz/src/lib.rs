//! Invariants the fuzz targets share: what must hold of any document pmcache accepted and
//! rendered, whatever the bytes were. Each check panics (a libFuzzer crash) when it fails.

pub mod pypi;

/// Splits fuzz input into two strings at the first newline, for targets that take two inputs
/// (an algorithm and a value, a header and a body); `None` when either part is not UTF-8.
pub fn two_strings(data: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    Some(text.split_once('\n').unwrap_or((text, "")))
}
