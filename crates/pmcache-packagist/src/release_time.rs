//! When a Composer version was published: its `time`, as Packagist writes it (PHP's
//! `DATE_ATOM`, RFC 3339 with a numeric offset: `2021-05-31T07:23:45+00:00`).

use std::time::SystemTime;

use serde_json::{Map, Value};

/// The publish time of one (expanded) version entry, if its `time` can be read.
pub fn of(version: &Map<String, Value>) -> Option<SystemTime> {
    pmcache_policy::parse_time(version.get("time")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn a_version_without_a_readable_time_has_none() {
        let version = |value: Value| value.as_object().cloned().unwrap();
        assert_eq!(
            of(&version(json!({"time": "2021-05-31T07:23:45+00:00"}))),
            Some(utc("2021-05-31T07:23:45Z"))
        );
        assert_eq!(of(&version(json!({"version": "1.0.0"}))), None);
        assert_eq!(of(&version(json!({"time": 1_622_445_825}))), None);
    }
}
