//! Requests that name many packages at once (the advisories API's `packages[]` form, the
//! notify-batch download report), relayed to the configured repository without the packages
//! private routes take: their names must not reach the public repository.

use bytes::Bytes;
use serde_json::Value;

/// `form` (a query string or an `application/x-www-form-urlencoded` body) without the
/// `packages[]` values `private` takes; as it came when it names none of them.
pub(crate) fn form_without_private(form: &str, private: &dyn Fn(&str) -> bool) -> String {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(form.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let is_private =
        |(key, value): &(String, String)| key.starts_with("packages") && private(value);
    if !pairs.iter().any(is_private) {
        return form.to_owned();
    }
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for pair in pairs.iter().filter(|pair| !is_private(pair)) {
        kept.append_pair(&pair.0, &pair.1);
    }
    kept.finish()
}

/// Whether `form` asks about any package (a `packages[]` value).
fn names_packages(form: &str) -> bool {
    url::form_urlencoded::parse(form.as_bytes()).any(|(key, _)| key.starts_with("packages"))
}

/// An advisories API request (its query, and its form body) without the packages `private`
/// takes; None when it asked about packages and all of them are private: nothing is left to
/// ask the public repository.
pub(crate) fn advisories_without_private(
    query: Option<&str>,
    body: &Bytes,
    private: &dyn Fn(&str) -> bool,
) -> Option<(Option<String>, Bytes)> {
    let form = String::from_utf8_lossy(body);
    let asked = query.is_some_and(names_packages) || names_packages(&form);
    let query = query.map(|query| form_without_private(query, private));
    let kept = form_without_private(&form, private);
    let body = match kept == form {
        true => body.clone(),
        false => Bytes::from(kept),
    };
    let left = query.as_deref().is_some_and(names_packages)
        || names_packages(&String::from_utf8_lossy(&body));
    match asked && !left {
        true => None,
        false => Some((query, body)),
    }
}

/// A notify-batch body (`{"downloads": [{"name": …, "version": …}, …]}`) without the downloads
/// of packages `private` takes: None when nothing is left to report, or when the body cannot be
/// read (it might name private packages; statistics are not worth the risk).
pub(crate) fn downloads_without_private(
    body: &Bytes,
    private: &dyn Fn(&str) -> bool,
) -> Option<Bytes> {
    let mut report: Value = serde_json::from_slice(body).ok()?;
    let downloads = report.get_mut("downloads")?.as_array_mut()?;
    let before = downloads.len();
    downloads.retain(|download| {
        download
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|name| !private(name))
    });
    match downloads.len() {
        0 => None,
        kept if kept == before => Some(body.clone()),
        _ => serde_json::to_vec(&report).ok().map(Bytes::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(name: &str) -> bool {
        name.to_ascii_lowercase().starts_with("acme/")
    }

    #[test]
    fn advisory_forms_lose_private_packages() {
        let form = "packages%5B%5D=acme%2Ftool&packages%5B%5D=psr%2Flog&updatedSince=1";
        assert_eq!(
            form_without_private(form, &acme),
            "packages%5B%5D=psr%2Flog&updatedSince=1"
        );
        let public = "packages[]=psr/log";
        assert_eq!(form_without_private(public, &acme), public);
        assert_eq!(form_without_private("packages[]=ACME/Tool", &acme), "");
        assert!(names_packages(form) && !names_packages("updatedSince=1"));
    }

    #[test]
    fn advisory_requests_about_private_packages_only_are_not_relayed() {
        let form = Bytes::from_static(b"packages%5B%5D=acme%2Ftool&packages%5B%5D=psr%2Flog");
        let (query, body) = advisories_without_private(None, &form, &acme).unwrap();
        assert_eq!((query, &body[..]), (None, &b"packages%5B%5D=psr%2Flog"[..]));
        let private_only = Bytes::from_static(b"packages[]=acme/tool");
        assert_eq!(advisories_without_private(None, &private_only, &acme), None);
        let empty = Bytes::new();
        assert_eq!(
            advisories_without_private(Some("packages[]=acme/x&updatedSince=1"), &empty, &acme),
            None
        );
        let (query, _) = advisories_without_private(Some("updatedSince=1"), &empty, &acme).unwrap();
        assert_eq!(query.as_deref(), Some("updatedSince=1"));
    }

    #[test]
    fn download_reports_lose_private_packages() {
        let body = Bytes::from_static(
            br#"{"downloads":[{"name":"acme/tool","version":"1.0.0.0"},{"name":"psr/log","version":"3.0.0.0"}]}"#,
        );
        let kept = downloads_without_private(&body, &acme).unwrap();
        let kept: Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(kept["downloads"].as_array().unwrap().len(), 1);
        assert_eq!(kept["downloads"][0]["name"], "psr/log");
        let only_private = Bytes::from_static(br#"{"downloads":[{"name":"acme/tool"}]}"#);
        assert_eq!(downloads_without_private(&only_private, &acme), None);
        assert_eq!(
            downloads_without_private(&Bytes::from_static(b"{"), &acme),
            None
        );
        let public = Bytes::from_static(br#"{"downloads":[{"name":"psr/log"}]}"#);
        assert_eq!(
            downloads_without_private(&public, &acme),
            Some(public.clone())
        );
    }
}
