//! npm audit requests relayed to the registry without the packages private routes take: the
//! bulk advisory request (`{name: [versions]}`) and the quick audit (a dependency tree of
//! `requires` and `dependencies`) name every package of a project, private ones included.

use std::io::Read;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The most a gzip-encoded audit body may decode to: four times the 8 MiB an audit request
/// may send (audit bodies compress perhaps tenfold, and the largest real trees decode to a few
/// MiB); more is refused, not relayed cut off.
const MAX_DECODED: u64 = 32 * 1024 * 1024;

/// Which audit request a body belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `/-/npm/v1/security/advisories/bulk`: package names are the top-level keys.
    Bulk,
    /// `/-/npm/v1/security/audits[/quick]`: a tree whose `requires` and `dependencies` are
    /// keyed by package name at every level.
    Tree,
}

impl Shape {
    /// The shape of the audit endpoint at `path`.
    pub(crate) fn of(path: &str) -> Shape {
        match path.ends_with("/advisories/bulk") {
            true => Shape::Bulk,
            false => Shape::Tree,
        }
    }
}

/// `body` (gzip-encoded when `gzipped`) without the packages `private` takes, as plain JSON;
/// None when it names none of them (relayed as it came). A body that cannot be read is an
/// error: it is not relayed.
pub(crate) fn without_private(
    body: &[u8],
    gzipped: bool,
    shape: Shape,
    private: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<u8>>> {
    let unreadable = |reason: String| Error::UnreadableAudit { reason };
    let decoded;
    let json = match gzipped {
        true => {
            decoded = gunzip(body).map_err(|e| unreadable(format!("gzip: {e}")))?;
            decoded.as_slice()
        }
        false => body,
    };
    let mut value: Value =
        serde_json::from_slice(json).map_err(|e| unreadable(format!("JSON: {e}")))?;
    let Value::Object(top) = &mut value else {
        return Err(unreadable("not a JSON object".to_owned()));
    };
    let removed = match shape {
        Shape::Bulk => drop_keys(top, private),
        Shape::Tree => prune_tree(top, private),
    };
    if removed == 0 {
        return Ok(None);
    }
    tracing::info!(removed, "private packages left out of a relayed audit");
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|e| unreadable(format!("JSON: {e}")))
}

/// A gzip-encoded audit body, decoded; one that cannot be read is an error (not relayed).
pub(crate) fn decoded(body: &[u8]) -> Result<Vec<u8>> {
    gunzip(body).map_err(|e| Error::UnreadableAudit {
        reason: format!("gzip: {e}"),
    })
}

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECODED + 1)
        .read_to_end(&mut decoded)?;
    if decoded.len() as u64 > MAX_DECODED {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it decodes to more than {} MiB", MAX_DECODED >> 20),
        ));
    }
    Ok(decoded)
}

/// Removes the keys `private` takes; answers how many.
fn drop_keys(object: &mut Map<String, Value>, private: &dyn Fn(&str) -> bool) -> usize {
    let before = object.len();
    object.retain(|name, _| !private(name));
    before - object.len()
}

/// Removes private names from a tree node's `requires` and `dependencies` (and its own
/// `name`), then from the dependencies left, at every depth; answers how many.
fn prune_tree(node: &mut Map<String, Value>, private: &dyn Fn(&str) -> bool) -> usize {
    let mut removed = 0;
    if node
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(private)
    {
        node.remove("name");
        removed += 1;
    }
    if let Some(Value::Object(requires)) = node.get_mut("requires") {
        removed += drop_keys(requires, private);
    }
    if let Some(Value::Object(dependencies)) = node.get_mut("dependencies") {
        removed += drop_keys(dependencies, private);
        for dependency in dependencies.values_mut() {
            if let Value::Object(child) = dependency {
                removed += prune_tree(child, private);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn acme(name: &str) -> bool {
        name.starts_with("@acme/")
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn bulk_requests_lose_private_names_gzipped_or_not() {
        let body = br#"{"@acme/tool":["1.0.0"],"left-pad":["1.3.0"]}"#;
        let kept = without_private(body, false, Shape::Bulk, &acme)
            .unwrap()
            .unwrap();
        assert_eq!(json(&kept), json(br#"{"left-pad":["1.3.0"]}"#));
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(body).unwrap();
        let gzipped = gzip.finish().unwrap();
        let kept = without_private(&gzipped, true, Shape::Bulk, &acme)
            .unwrap()
            .unwrap();
        assert_eq!(json(&kept), json(br#"{"left-pad":["1.3.0"]}"#));
        let public = br#"{"left-pad":["1.3.0"]}"#;
        assert_eq!(
            without_private(public, false, Shape::Bulk, &acme).unwrap(),
            None
        );
    }

    #[test]
    fn quick_audits_lose_private_names_at_every_depth() {
        let body = br#"{"name":"@acme/app","version":"1.0.0",
            "requires":{"@acme/tool":"^1.0.0","a":"^1.0.0"},
            "dependencies":{
                "@acme/tool":{"version":"1.0.0","requires":{"b":"1"}},
                "a":{"version":"1.0.0","requires":{"@acme/lib":"1"},
                     "dependencies":{"@acme/lib":{"version":"1.0.0"}}}}}"#;
        let kept = without_private(body, false, Shape::Tree, &acme)
            .unwrap()
            .unwrap();
        assert_eq!(
            json(&kept),
            json(
                br#"{"version":"1.0.0","requires":{"a":"^1.0.0"},
                "dependencies":{"a":{"version":"1.0.0","requires":{},"dependencies":{}}}}"#
            )
        );
    }

    #[test]
    fn unreadable_bodies_are_not_relayed() {
        for (body, gzipped) in [(&b"{not json"[..], false), (b"[1]", false), (b"{}", true)] {
            let error = without_private(body, gzipped, Shape::Bulk, &acme).unwrap_err();
            assert!(matches!(error, Error::UnreadableAudit { .. }), "{error}");
        }
    }

    #[test]
    fn a_body_decoding_past_the_cap_is_refused_not_cut() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..=(MAX_DECODED >> 20) {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 256 * 1024, "{} bytes", bomb.len());
        let error = decoded(&bomb).unwrap_err();
        assert!(error.to_string().contains("more than 32 MiB"), "{error}");
    }
}
