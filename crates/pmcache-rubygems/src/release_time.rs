//! When each gem version was published: the upstream's versions API
//! (`/api/v1/versions/NAME.json`, an array of `{number, platform, created_at}`), since the
//! compact index carries no dates.

use std::collections::HashMap;
use std::time::SystemTime;

/// Why a versions API answer cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not a versions API answer: {0}")]
pub struct Unreadable(#[from] serde_json::Error);

/// One version entry of the API; other fields are ignored.
#[derive(serde::Deserialize)]
struct Entry {
    number: String,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

/// Publish times by the version as the compact index writes it: `VERSION` for the `ruby`
/// platform, `VERSION-PLATFORM` for the others. Entries without a readable `created_at` are
/// left out (their versions have no known publish time).
pub fn parse(body: &[u8]) -> Result<HashMap<String, SystemTime>, Unreadable> {
    let entries: Vec<Entry> = serde_json::from_slice(body)?;
    Ok(entries
        .into_iter()
        .filter_map(|entry| {
            let published = entry.created_at.as_deref().and_then(parse_time)?;
            Some((
                index_version(&entry.number, entry.platform.as_deref()),
                published,
            ))
        })
        .collect())
}

/// `1.0.0` for the `ruby` platform (or none), `1.0.0-x86_64-linux` for another.
fn index_version(number: &str, platform: Option<&str>) -> String {
    match platform {
        None | Some("") | Some("ruby") => number.to_owned(),
        Some(platform) => format!("{number}-{platform}"),
    }
}

/// An RFC 3339 time (`2024-06-01T01:00:00.000Z`, as rubygems.org writes them; any offset).
fn parse_time(text: &str) -> Option<SystemTime> {
    pmcache_policy::parse_time(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn each_platform_build_has_its_own_time() {
        let body = br#"[
            {"number":"1.1.0","platform":"ruby","created_at":"2024-06-02T01:00:00.000Z","sha":"x"},
            {"number":"1.1.0","platform":"x86_64-linux","created_at":"2024-06-03T01:00:00Z"},
            {"number":"1.0.0","platform":"ruby","created_at":null},
            {"number":"0.9.0","created_at":"yesterday"},
            {"number":"0.8.0","created_at":"2024-01-01T00:00:00Z"}
        ]"#;
        let times = parse(body).unwrap();
        assert_eq!(times["1.1.0"], utc("2024-06-02T01:00:00Z"));
        assert_eq!(times["1.1.0-x86_64-linux"], utc("2024-06-03T01:00:00Z"));
        assert_eq!(times["0.8.0"], utc("2024-01-01T00:00:00Z"));
        assert!(!times.contains_key("1.0.0"));
        assert!(!times.contains_key("0.9.0"));
    }

    #[test]
    fn what_is_no_array_is_unreadable() {
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"error":"not found"}"#).is_err());
        assert!(parse(b"[]").unwrap().is_empty());
    }
}
