//! The PEP 691 JSON form of index pages and of the project list.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use url::Url;

use crate::Result;

use super::*;

pub(super) fn parse_json_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, Malformed> {
    let mut document = json_object(body)?;
    let api_version = json_api_version(&document)?;
    let name = match document.get("name") {
        Some(Value::String(name)) => name.clone(),
        None => name_from_url(page_url).ok_or("no `name` and no name in the page URL")?,
        Some(_) => return Err(Malformed::shape("`name` is not a string")),
    };
    // Leaves `null` in place so the key keeps its position when rendered back.
    let files = match document.get_mut("files").map(Value::take) {
        Some(Value::Array(files)) => files,
        _ => return Err(Malformed::shape("`files` is missing or not a list")),
    };
    let files = files
        .into_iter()
        .enumerate()
        .map(|(index, file)| {
            json_file(file, page_url).map_err(|e| Malformed::File {
                index,
                source: Box::new(e),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(ProjectPage {
        name,
        files,
        origin: PageOrigin::Json {
            document,
            api_version,
        },
    })
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(document)) => Ok(document),
        Ok(_) => Err(Malformed::shape("not a JSON object")),
        Err(e) => Err(Malformed::Json(e)),
    }
}

fn json_api_version(document: &Map<String, Value>) -> Result<String, Malformed> {
    let version = document
        .get("meta")
        .and_then(|meta| meta.get("api-version"))
        .and_then(Value::as_str)
        .ok_or("`meta.api-version` is missing or not a string")?;
    check_api_version(version)?;
    Ok(version.to_owned())
}

fn json_file(file: Value, page_url: &Url) -> Result<File, Malformed> {
    let Value::Object(raw) = file else {
        return Err(Malformed::shape("not an object"));
    };
    let filename = match raw.get("filename") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            return Err(Malformed::shape(
                "`filename` is missing or not a non-empty string",
            ));
        }
    };
    let href = raw
        .get("url")
        .and_then(Value::as_str)
        .ok_or("`url` is missing or not a string")?;
    let mut url = resolve(page_url, href)?;
    url.set_fragment(None);
    if last_segment(&url).is_empty() {
        return Err(Malformed::Shape(format!(
            "`url` {href:?} does not end in a file name"
        )));
    }
    Ok(File {
        filename,
        url,
        hashes: json_hashes(raw.get("hashes"), "hashes")?,
        core_metadata: json_core_metadata(&raw)?,
        requires_python: optional_string(&raw, "requires-python")?,
        yanked: json_yanked(raw.get("yanked"))?,
        gpg_sig: json_gpg_sig(raw.get("gpg-sig"))?,
        provenance: optional_string(&raw, "provenance")?,
        origin: FileOrigin::Json(raw),
    })
}

fn json_hashes(value: Option<&Value>, key: &str) -> Result<BTreeMap<String, String>, Malformed> {
    let Some(value) = value else {
        // Required by the spec, but an absent map says the same as an empty one.
        return Ok(BTreeMap::new());
    };
    let Value::Object(hashes) = value else {
        return Err(Malformed::Shape(format!("`{key}` is not an object")));
    };
    hashes
        .iter()
        .map(|(name, digest)| match digest {
            Value::String(digest) => Ok((name.to_ascii_lowercase(), digest.clone())),
            _ => Err(Malformed::Shape(format!("`{key}.{name}` is not a string"))),
        })
        .collect()
}

/// PEP 714: `core-metadata`, else the names older indexes used, read like pip does (first key
/// present wins, even if `false`).
fn json_core_metadata(raw: &Map<String, Value>) -> Result<CoreMetadata, Malformed> {
    let Some((key, value)) = [
        "core-metadata",
        "data-dist-info-metadata",
        "dist-info-metadata",
    ]
    .into_iter()
    .find_map(|key| raw.get(key).map(|value| (key, value))) else {
        return Ok(CoreMetadata::Absent);
    };
    match value {
        Value::Bool(false) | Value::Null => Ok(CoreMetadata::Absent),
        Value::Bool(true) => Ok(CoreMetadata::Present {
            hashes: BTreeMap::new(),
        }),
        Value::Object(_) => Ok(CoreMetadata::Present {
            hashes: json_hashes(Some(value), key)?,
        }),
        _ => Err(Malformed::Shape(format!(
            "`{key}` is neither a boolean nor an object"
        ))),
    }
}

/// PEP 592 as pip reads it: `true` or a reason means yanked; `false`, `null` and `""` do not.
pub(super) fn json_yanked(value: Option<&Value>) -> Result<Option<String>, Malformed> {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(String::new())),
        Some(Value::String(reason)) => Ok((!reason.is_empty()).then(|| reason.clone())),
        Some(_) => Err(Malformed::shape(
            "`yanked` is neither a boolean nor a string",
        )),
    }
}

fn json_gpg_sig(value: Option<&Value>) -> Result<Option<bool>, Malformed> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(signed)) => Ok(Some(*signed)),
        Some(_) => Err(Malformed::shape("`gpg-sig` is not a boolean")),
    }
}

fn optional_string(raw: &Map<String, Value>, key: &str) -> Result<Option<String>, Malformed> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(Malformed::Shape(format!("`{key}` is not a string"))),
    }
}

pub(super) fn parse_json_list(body: &[u8]) -> Result<ProjectList, Malformed> {
    let document = json_object(body)?;
    json_api_version(&document)?;
    let Some(Value::Array(entries)) = document.get("projects") else {
        return Err(Malformed::shape("`projects` is missing or not a list"));
    };
    let projects = entries
        .iter()
        .filter_map(|entry| entry.get("name").and_then(Value::as_str))
        .filter_map(listed_project)
        .collect();
    Ok(ProjectList { projects })
}
