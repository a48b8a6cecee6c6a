//! The admin commands (issue 13): purge one package, run a maintenance pass, verify the store.
//! The HTTP admin API (`/admin/…`, admin role only) and the control socket (`pmcache purge`,
//! `gc`, `verify`) both parse their requests into a [`Command`] and run it here, so the two
//! doors cannot drift apart.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use pmcache_npm as npm;
use pmcache_packagist as packagist;
use pmcache_proxy::{self as proxy, Body, Caller, Classify, Proxy, PurgeTarget, Role};
use pmcache_pypi as pypi;
use pmcache_rubygems as rubygems;
use pmcache_store::{self as store, Store};

use crate::frontend::Ecosystem;
use crate::router::text;

/// What the admin commands work on.
pub(crate) struct Admin {
    pub(crate) proxy: Proxy,
    pub(crate) store: Store,
    pub(crate) storage: store::Config,
}

/// One admin command.
#[derive(Debug)]
pub(crate) enum Command {
    /// What `pmcache gc` does.
    Gc,
    /// What `pmcache verify` does (repairing).
    Verify,
    /// Drop one package, or one version of it.
    Purge(PurgeTarget),
}

/// A request the admin commands refuse or fail: the status and a one-line reason.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
    /// The method the path takes, for a 405's `Allow`.
    allow: Option<Method>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            allow: None,
        }
    }

    /// A failure of the command itself: its whole chain goes to the log, its first line to the
    /// client.
    fn failed(error: &dyn Classify) -> Refusal {
        tracing::error!(error = %proxy::chain(error), "admin command failed");
        Refusal::new(error.status(), error.to_string())
    }
}

impl Admin {
    /// Runs `command` and answers its report as JSON.
    pub(crate) async fn run(&self, command: Command) -> Result<Vec<u8>, Refusal> {
        let json = match command {
            Command::Purge(target) => {
                let report = self
                    .proxy
                    .purge(target)
                    .await
                    .map_err(|error| Refusal::failed(&error))?;
                serde_json::to_vec(&report)
            }
            Command::Gc | Command::Verify => {
                let (store, storage) = (self.store.clone(), self.storage.clone());
                // Both walk the whole store: off the runtime.
                let outcome = tokio::task::spawn_blocking(move || match command {
                    Command::Gc => store
                        .maintain(&proxy::SCHEMA, &storage)
                        .map(|report| serde_json::to_vec(&report)),
                    _ => store
                        .verify(&proxy::SCHEMA, true)
                        .map(|report| serde_json::to_vec(&report)),
                })
                .await
                .map_err(|e| Refusal::failed(&proxy::Error::failed("admin task failed", e)))?;
                outcome.map_err(|error| Refusal::failed(&proxy::Error::Store(error)))?
            }
        };
        json.map_err(|e| Refusal::failed(&proxy::Error::failed("serialising the report", e)))
    }

    /// Answers an HTTP request below `/admin`: admin role only (the caller the router
    /// attached), everyone else 403.
    pub(crate) async fn handle(&self, parts: &Parts) -> Response<Body> {
        let caller = Caller::attached(parts);
        if caller.role != Role::Admin {
            let reason = format!(
                "the admin API needs a token with the admin role (this request has the {} role)",
                caller.role.as_str()
            );
            return text(StatusCode::FORBIDDEN, &reason);
        }
        match http_route(&parts.method, parts.uri.path()) {
            Ok(command) => match self.run(command).await {
                Ok(json) => json_response(json),
                Err(refusal) => refused(refusal),
            },
            Err(refusal) => refused(refusal),
        }
    }
}

/// Whether `path` is the admin API's (`/admin` or below).
pub(crate) fn is_admin_path(path: &str) -> bool {
    path.strip_prefix("/admin")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The command of an HTTP admin request: `DELETE /admin/packages/ECOSYSTEM/NAME[/VERSION]`,
/// `POST /admin/gc`, `POST /admin/verify`.
pub(crate) fn http_route(method: &Method, path: &str) -> Result<Command, Refusal> {
    let below = path.strip_prefix("/admin").unwrap_or(path);
    let (allowed, command) = match below {
        "/gc" => (Method::POST, None),
        "/verify" => (Method::POST, None),
        _ => match below.strip_prefix("/packages/") {
            Some(package) => (Method::DELETE, Some(package)),
            None => return Err(no_route(path)),
        },
    };
    if *method != allowed {
        let reason = format!("{path} takes {allowed} only");
        return Err(Refusal {
            allow: Some(allowed),
            ..Refusal::new(StatusCode::METHOD_NOT_ALLOWED, reason)
        });
    }
    match (below, command) {
        ("/gc", _) => Ok(Command::Gc),
        ("/verify", _) => Ok(Command::Verify),
        (_, Some(package)) => purge_target(package).map(Command::Purge),
        _ => Err(no_route(path)),
    }
}

/// The command of a control socket request (always POST): `/gc`, `/verify`,
/// `/purge/ECOSYSTEM/NAME[/VERSION]`.
pub(crate) fn control_route(path: &str) -> Result<Command, Refusal> {
    match path {
        "/gc" => Ok(Command::Gc),
        "/verify" => Ok(Command::Verify),
        _ => match path.strip_prefix("/purge/") {
            Some(package) => purge_target(package).map(Command::Purge),
            None => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "no such command; POST /gc, /verify or /purge/ECOSYSTEM/NAME[/VERSION]",
            )),
        },
    }
}

fn no_route(path: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!(
            "no admin route {path}: DELETE /admin/packages/ECOSYSTEM/NAME[/VERSION], POST /admin/gc, POST /admin/verify"
        ),
    )
}

/// Longest version accepted: real ones stay far below it, and it bounds what is compared.
const MAX_VERSION_LEN: usize = 256;

/// `ECOSYSTEM/NAME[/VERSION]`, percent-encoded as in a URL path. A scoped npm name
/// (`@scope/name`) and a Composer name (`vendor/name`) span two segments, or one with the
/// slash encoded (`%2F`); a version may hold an encoded slash (`dev-feature%2Fx`).
pub(crate) fn purge_target(path: &str) -> Result<PurgeTarget, Refusal> {
    // `…/NAME/` names the package as `…/NAME` does.
    let mut raw = path.strip_suffix('/').unwrap_or(path).split('/');
    let named = raw.next().unwrap_or("");
    let ecosystem = Ecosystem::ALL
        .into_iter()
        .find(|ecosystem| ecosystem.key() == named)
        .ok_or_else(|| {
            let known: Vec<&str> = Ecosystem::ALL.into_iter().map(Ecosystem::key).collect();
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no ecosystem {named:?}: pmcache has {}", known.join(", ")),
            )
        })?;
    let segments = raw
        .map(|segment| {
            proxy::percent::decode_strict_utf8(segment).ok_or_else(|| {
                bad_request(format!(
                    "{segment:?} is not a well-formed UTF-8 path segment"
                ))
            })
        })
        .collect::<Result<Vec<String>, Refusal>>()?;
    let (name, rest) = split_name(ecosystem, &segments)?;
    let version = match rest {
        [] => None,
        [version] => Some(check_version(ecosystem, version)?),
        _ => {
            return Err(bad_request(format!(
                "{path:?} is not ECOSYSTEM/NAME[/VERSION] (encode a '/' inside a version as %2F)"
            )));
        }
    };
    package_target(ecosystem, &name, version)
}

/// The package name (one segment, or two for npm scopes and Composer vendors) and what
/// follows it.
fn split_name(ecosystem: Ecosystem, segments: &[String]) -> Result<(String, &[String]), Refusal> {
    let first = segments
        .first()
        .filter(|first| !first.is_empty())
        .ok_or_else(|| bad_request("no package name"))?;
    let two_segments = match ecosystem {
        Ecosystem::Npm => first.starts_with('@') && !first.contains('/'),
        Ecosystem::Packagist => !first.contains('/'),
        Ecosystem::Pypi | Ecosystem::Rubygems => false,
    };
    if !two_segments {
        return Ok((first.clone(), &segments[1..]));
    }
    let second = segments
        .get(1)
        .ok_or_else(|| bad_request(format!("{first:?} is only half a package name")))?;
    Ok((format!("{first}/{second}"), &segments[2..]))
}

fn check_version(ecosystem: Ecosystem, version: &str) -> Result<String, Refusal> {
    if version.is_empty()
        || version.len() > MAX_VERSION_LEN
        || version.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad_request(format!(
            "{version:?} is not a version (1 to {MAX_VERSION_LEN} characters, no spaces or control characters)"
        )));
    }
    Ok(match ecosystem {
        // As pmcache reads versions from file names: lowercase.
        Ecosystem::Pypi => version.to_ascii_lowercase(),
        _ => version.to_owned(),
    })
}

/// The target of a purge of `raw` (decoded), named the ecosystem's way: PEP 503 for PyPI,
/// case and scope kept for npm, lowercase `vendor/name` for Composer.
fn package_target(
    ecosystem: Ecosystem,
    raw: &str,
    version: Option<String>,
) -> Result<PurgeTarget, Refusal> {
    let invalid = |error: &dyn std::fmt::Display| bad_request(error.to_string());
    let (package, documents, companion) = match ecosystem {
        Ecosystem::Pypi => {
            let name = pypi::name::ProjectName::parse(raw).map_err(|e| invalid(&e))?;
            (name.to_string(), pypi::document_keys(&name), None)
        }
        Ecosystem::Npm => {
            let name = npm::name::PackageName::parse(raw).map_err(|e| invalid(&e))?;
            (name.to_string(), npm::document_keys(&name), None)
        }
        Ecosystem::Rubygems => {
            let name = rubygems::name::GemName::parse(raw).map_err(|e| invalid(&e))?;
            let companion: fn(&url::Url) -> Option<url::Url> = rubygems::gemspec_of;
            (
                name.to_string(),
                rubygems::document_keys(&name),
                Some(companion),
            )
        }
        Ecosystem::Packagist => {
            // Composer names are case-insensitive; the p2 files spell them in lower case.
            let lower = raw.to_ascii_lowercase();
            let name = packagist::name::PackageName::parse(&lower).map_err(|e| invalid(&e))?;
            (name.to_string(), packagist::document_keys(&name), None)
        }
    };
    Ok(PurgeTarget {
        ecosystem: ecosystem.key(),
        package,
        version,
        documents,
        companion,
    })
}

fn bad_request(reason: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, reason)
}

fn json_response(json: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(proxy::full(json));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refused(refusal: Refusal) -> Response<Body> {
    let mut response = text(refusal.status, &refusal.reason);
    if let Some(allow) = refusal.allow
        && let Ok(value) = HeaderValue::from_str(allow.as_str())
    {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> (String, String, Option<String>, Vec<String>) {
        let target = purge_target(path).unwrap();
        (
            target.ecosystem.to_owned(),
            target.package,
            target.version,
            target.documents,
        )
    }

    fn refusal(path: &str) -> (StatusCode, String) {
        let refusal = purge_target(path).unwrap_err();
        (refusal.status, refusal.reason)
    }

    #[test]
    fn names_are_normalised_the_ecosystems_way() {
        assert_eq!(
            target("pypi/Zope.Interface"),
            (
                "pypi".into(),
                "zope-interface".into(),
                None,
                vec!["project/zope-interface".into()]
            )
        );
        assert_eq!(target("pypi/Demo_App/1.0RC1").2.as_deref(), Some("1.0rc1"));
        assert_eq!(
            target("npm/JSONStream/1.3.5"),
            (
                "npm".into(),
                "JSONStream".into(),
                Some("1.3.5".into()),
                vec!["packument/JSONStream".into()]
            )
        );
        assert_eq!(
            target("packagist/Acme/Tool"),
            (
                "packagist".into(),
                "acme/tool".into(),
                None,
                vec!["p2/acme/tool".into(), "p2/acme/tool~dev".into()]
            )
        );
        assert_eq!(
            target("rubygems/rack/3.0.0"),
            (
                "rubygems".into(),
                "rack".into(),
                Some("3.0.0".into()),
                vec!["info/rack".into(), "api/versions/rack".into()]
            )
        );
    }

    #[test]
    fn scoped_and_vendor_names_span_two_segments_or_one_encoded() {
        for path in [
            "npm/@scope/pkg/1.0.0",
            "npm/@scope%2Fpkg/1.0.0",
            "npm/%40scope%2fpkg/1.0.0",
        ] {
            let (_, package, version, documents) = target(path);
            assert_eq!(package, "@scope/pkg", "{path}");
            assert_eq!(version.as_deref(), Some("1.0.0"), "{path}");
            assert_eq!(documents, ["packument/@scope/pkg"]);
        }
        assert_eq!(target("npm/pkg").1, "pkg");
        assert_eq!(target("npm/pkg/"), target("npm/pkg"));
        assert_eq!(target("npm/@scope/pkg/1.0.0/").2.as_deref(), Some("1.0.0"));
        assert_eq!(
            target("packagist/acme%2Ftool/dev-feature%2Fx").2.as_deref(),
            Some("dev-feature/x")
        );
        assert_eq!(target("packagist/acme/tool/v1.2.0").1, "acme/tool");
    }

    #[test]
    fn bad_names_and_paths_are_400_and_unknown_ecosystems_404() {
        let (status, reason) = refusal("cargo/serde");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            reason,
            "no ecosystem \"cargo\": pmcache has pypi, npm, rubygems, packagist"
        );
        for path in [
            "pypi/-bad",
            "pypi/",
            "pypi/a/1.0/extra",
            "npm/@scope",
            "npm/a%zz",
            "packagist/acme",
            "pypi/demo/1.0%20x",
            "rubygems/rack%2Fx",
        ] {
            let (status, reason) = refusal(path);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {reason}");
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[test]
    fn http_routes_check_the_method_and_the_path() {
        assert!(matches!(
            http_route(&Method::POST, "/admin/gc"),
            Ok(Command::Gc)
        ));
        assert!(matches!(
            http_route(&Method::POST, "/admin/verify"),
            Ok(Command::Verify)
        ));
        assert!(matches!(
            http_route(&Method::DELETE, "/admin/packages/npm/left-pad"),
            Ok(Command::Purge(_))
        ));
        let status = |method: &Method, path| http_route(method, path).unwrap_err().status;
        assert_eq!(
            status(&Method::GET, "/admin/gc"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(&Method::POST, "/admin/packages/npm/left-pad"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(&Method::POST, "/admin/other"), StatusCode::NOT_FOUND);
        assert_eq!(status(&Method::POST, "/admin"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(&Method::DELETE, "/admin/packages/cargo/serde"),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn control_routes_share_the_parsing() {
        assert!(matches!(control_route("/gc"), Ok(Command::Gc)));
        let Ok(Command::Purge(target)) = control_route("/purge/npm/@scope%2Fpkg/2.0.0") else {
            panic!("a purge");
        };
        assert_eq!(
            (target.package.as_str(), target.version.as_deref()),
            ("@scope/pkg", Some("2.0.0"))
        );
        assert_eq!(
            control_route("/nothing").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    /// An admin over a fresh store in `dir`.
    fn admin(dir: &std::path::Path) -> Admin {
        let store = Store::open(dir).unwrap();
        let proxy = Proxy::new(store.clone(), &proxy::Config::default()).unwrap();
        Admin {
            proxy,
            store,
            storage: store::Config::default(),
        }
    }

    fn parts(method: Method, path: &str, role: Option<Role>) -> Parts {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts();
        if let Some(role) = role {
            parts.extensions.insert(Caller {
                role,
                token: Some("t".to_owned()),
            });
        }
        parts
    }

    async fn answer(admin: &Admin, parts: &Parts) -> (StatusCode, Option<String>, String) {
        use http_body_util::BodyExt as _;
        let response = admin.handle(parts).await;
        let status = response.status();
        let allow = response
            .headers()
            .get(header::ALLOW)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_the_admin_role_reaches_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        for role in [None, Some(Role::Read), Some(Role::Populate)] {
            let (status, _, body) = answer(&admin, &parts(Method::POST, "/admin/gc", role)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}");
            assert!(body.contains("admin role"), "{body}");
        }
        let (status, _, body) =
            answer(&admin, &parts(Method::POST, "/admin/gc", Some(Role::Admin))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<store::GcReport>(&body).unwrap();
        let (status, allow, _) = answer(
            &admin,
            &parts(Method::GET, "/admin/verify", Some(Role::Admin)),
        )
        .await;
        assert_eq!(
            (status, allow.as_deref()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("POST"))
        );
        let purge = parts(
            Method::DELETE,
            "/admin/packages/npm/@scope%2Fpkg/1.0.0",
            Some(Role::Admin),
        );
        let (status, _, body) = answer(&admin, &purge).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let report: proxy::PurgeReport = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (
                report.package.as_str(),
                report.version.as_deref(),
                report.artifacts
            ),
            ("@scope/pkg", Some("1.0.0"), 0)
        );
    }
}
