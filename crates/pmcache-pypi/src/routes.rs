//! The `/pypi/` routes: the simple index root, project pages (HTML or JSON by negotiation),
//! and the files and core-metadata they link to.

use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use pmcache_policy::{Policy, Verdict};
use pmcache_proxy::{
    self as proxy, Advertised, Advertisement, ArtifactRequest, Body, Checksum, ClientRequest,
    DocumentRequest, Rendering, Role, Serving, UpstreamDocument, Variant,
};
use url::Url;

use crate::Frontend;
use crate::error::{Error, Result};
use crate::name::ProjectName;
use crate::negotiate::{self, MediaType};
use crate::rewrite::{self, Rendered};
use crate::wire::{CoreMetadata, File, ProjectList, ProjectPage};

/// The `Vary` of negotiated pages.
const VARY: &str = "Accept, Accept-Encoding";

/// A route under the mount point, parsed from the request path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Root,
    Project(&'a str),
    File { id: &'a str, filename: &'a str },
}

fn route(path: &str) -> Option<Route<'_>> {
    if let Some(rest) = path.strip_prefix("/simple") {
        return match rest {
            "" | "/" => Some(Route::Root),
            _ => {
                let name = rest.strip_prefix('/')?;
                let name = name.strip_suffix('/').unwrap_or(name);
                (!name.is_empty() && !name.contains('/')).then_some(Route::Project(name))
            }
        };
    }
    let rest = path.strip_prefix("/files/")?;
    let (id, filename) = rest.split_once('/')?;
    let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (valid_id && !filename.is_empty() && !filename.contains('/'))
        .then_some(Route::File { id, filename })
}

impl Frontend {
    /// Answers one request whose path, below the mount point, is `path`.
    pub async fn handle(&self, parts: &Parts, path: &str) -> Result<Response<Body>> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(Error::MethodNotAllowed {
                method: parts.method.to_string(),
            });
        }
        let client = ClientRequest::of(parts);
        match route(path) {
            Some(Route::Root) if path == "/simple" => Ok(self.redirect("/simple/", parts)),
            Some(Route::Root) => self.root(parts, client).await,
            Some(Route::Project(raw)) => {
                let name = ProjectName::parse(raw)?;
                // PEP 503: one canonical URL per project; other spellings redirect to it.
                if name.as_str() != raw || !path.ends_with('/') {
                    return Ok(self.redirect(&format!("/simple/{name}/"), parts));
                }
                self.project(&name, parts, client).await
            }
            Some(Route::File { id, filename }) => self.file(id, filename, client).await,
            None => Err(Error::NoRoute {
                path: path.to_owned(),
            }),
        }
    }

    fn redirect(&self, to: &str, parts: &Parts) -> Response<Body> {
        let mut location = format!("{}{to}", self.mount);
        if let Some(query) = parts.uri.query() {
            location.push('?');
            location.push_str(query);
        }
        let mut response = Response::new(proxy::empty());
        *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }

    async fn root(&self, parts: &Parts, client: ClientRequest<'_>) -> Result<Response<Body>> {
        let mount = self.mount;
        let request =
            self.document_request("root".to_owned(), self.upstream.clone(), client.caller.role);
        let document = self
            .proxy
            .document(request, move |upstream| {
                let list = ProjectList::parse(&upstream.body, &upstream.content_type)
                    .map_err(|e| document_error(&upstream, e))?;
                Ok(rendering(rewrite::render_list(&list, mount), Vec::new()))
            })
            .await?;
        self.negotiated(&document, parts, client)
    }

    async fn project(
        &self,
        name: &ProjectName,
        parts: &Parts,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let mount = self.mount;
        let package = name.to_string();
        self.proxy.check_package(POLICY, &package)?;
        // A private project's page comes from its route's index (a route to none is a 404
        // here), stored under a key of the route's own.
        let routing = self.proxy.routing(POLICY, &package, &self.upstream)?;
        let url = routing
            .upstream
            .join(&format!("{name}/"))
            .map_err(|e| Error::Proxy(bad_url(&routing.upstream, e)))?;
        let policy = self.proxy.policy();
        let mut request =
            self.document_request(routing.key(&project_key(name)), url, client.caller.role);
        request.allow_redirect = proxy::same_origin(&routing.upstream);
        let document = self
            .proxy
            .document(request, move |upstream| {
                let mut page =
                    ProjectPage::parse(&upstream.body, &upstream.content_type, &upstream.url)
                        .map_err(|e| document_error(&upstream, e))?;
                // Every file is advertised, the hidden ones too: a request for one gets the
                // policy's reason rather than a 404.
                let sources = page
                    .files()
                    .iter()
                    .flat_map(|file| sources_of(&routing, &package, file))
                    .collect();
                let hidden_until = hide_refused(&mut page, &policy, &package, SystemTime::now());
                let mut rendering = rendering(rewrite::render_project(&page, mount), sources);
                rendering.hidden_until = hidden_until;
                Ok(rendering)
            })
            .await?;
        self.negotiated(&document, parts, client)
    }

    fn document_request(&self, key: String, url: Url, role: Role) -> DocumentRequest {
        DocumentRequest {
            ecosystem: ECOSYSTEM,
            key,
            url,
            accept: negotiate::UPSTREAM_ACCEPT,
            ttl: self.ttl,
            allow_redirect: proxy::same_origin(&self.upstream),
            known_current: None,
            role,
        }
    }

    /// Serves the variant the client negotiated, labelled with the exact media type it chose.
    fn negotiated(
        &self,
        document: &proxy::Document,
        parts: &Parts,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        let accept = client.header(header::ACCEPT);
        let media = negotiate::negotiate(accept, format_query(parts.uri.query()).as_deref());
        let variant = if media.is_json() { "json" } else { "html" };
        let mut response = self
            .proxy
            .respond(document, variant, client, Serving::whole(VARY))?;
        if response.status().is_success() {
            let content_type = HeaderValue::from_static(media.content_type());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        Ok(response)
    }

    async fn file(
        &self,
        id: &str,
        filename: &str,
        client: ClientRequest<'_>,
    ) -> Result<Response<Body>> {
        // PEP 658: `<file url>.metadata` is the core metadata of the file, recorded under its
        // own source id when the page advertised it.
        let source_id = match filename.strip_suffix(".metadata") {
            Some(_) => format!("{id}.metadata"),
            None => id.to_owned(),
        };
        // pip reads the page before its files: an id no stored page lists is unknown.
        let unknown = || Error::UnknownFile {
            filename: filename.to_owned(),
        };
        let Advertisement::Known(source) =
            self.proxy
                .advertised(ECOSYSTEM, &source_id, client.caller.role)?
        else {
            return Err(unknown());
        };
        // A private project's file is served only as its route's page advertised it (also
        // recorded under the route's own id): not as the public index did before the route
        // existed. A route to none is a 404 here.
        let package = source.release().map(|release| release.package.clone());
        let routing = match &package {
            Some(package) => self.proxy.routing(POLICY, package, &self.upstream)?,
            None => proxy::Routing::public(&self.upstream),
        };
        let source = match routing.is_routed() {
            false => source,
            true => match self.proxy.advertised(
                ECOSYSTEM,
                &routing.key(&source_id),
                client.caller.role,
            )? {
                Advertisement::Known(source) => source,
                _ => return Err(unknown()),
            },
        };
        let request = ArtifactRequest {
            ecosystem: ECOSYSTEM,
            source,
            content_type: "application/octet-stream",
            client,
            redirect_hosts: &[],
            key: None,
            pin_first_seen: false,
            announce_unverified_length: true,
        };
        Ok(self.proxy.artifact(request).await?)
    }
}

/// Index keys and metrics label of this frontend.
pub(crate) const ECOSYSTEM: &str = "pypi";
/// This frontend in the policy's terms.
const POLICY: pmcache_policy::Ecosystem = pmcache_policy::Ecosystem::Pypi;

/// Removes from `page` the files of `package` the policy refuses (each judged by its version,
/// from its filename, and its own upload time: a file added later to an old release is as new
/// as its upload), and the versions left without files; answers when the first file the age
/// rule hid comes of age.
fn hide_refused(
    page: &mut ProjectPage,
    policy: &Policy,
    package: &str,
    now: SystemTime,
) -> Option<SystemTime> {
    let mut until = None::<SystemTime>;
    let gone = page.hide_files(|file| {
        let Some(version) = crate::name::version_in_filename(&file.filename) else {
            return false;
        };
        match policy.judge(POLICY, package, &version, file.upload_time(), now) {
            Verdict::Allowed => false,
            Verdict::Refused(refusal) => {
                until = refusal.first_maturity(until);
                true
            }
        }
    });
    if !gone.is_empty() {
        tracing::debug!(package, versions = ?gone, "versions hidden by policy");
    }
    until
}

fn rendering(rendered: Rendered, sources: Vec<Advertised>) -> Rendering {
    Rendering {
        variants: vec![
            Variant::new(
                "html",
                MediaType::TextHtml.content_type(),
                rendered.html.into_bytes(),
            ),
            Variant::new(
                "json",
                MediaType::Json.content_type(),
                rendered.json.into_bytes(),
            ),
        ],
        sources,
        hidden_until: None,
    }
}

/// The key of a project's page among the ecosystem's documents.
fn project_key(name: &ProjectName) -> String {
    format!("project/{name}")
}

/// The keys of the documents pmcache stores for a project (for a purge): its page. The root
/// list is shared by every project and stays.
pub fn document_keys(name: &ProjectName) -> Vec<String> {
    vec![project_key(name)]
}

/// The artifact sources a file link of `package`'s page advertises: the file, and its core
/// metadata if any, both belonging to the version its filename names.
/// A routed project's sources are recorded twice: under the id in their pmcache URL, by which
/// a request finds its package, and under the route's own id, which proves the route's page
/// advertised it.
fn sources_of(routing: &proxy::Routing, package: &str, file: &File) -> Vec<Advertised> {
    let sources = file_sources(package, file);
    match routing.is_routed() {
        false => sources,
        true => {
            let own = sources.iter().map(|source| Advertised {
                id: routing.key(&source.id),
                ..source.clone()
            });
            own.collect::<Vec<_>>().into_iter().chain(sources).collect()
        }
    }
}

fn file_sources(package: &str, file: &File) -> Vec<Advertised> {
    let id = rewrite::file_id(&file.url);
    let version = crate::name::version_in_filename(&file.filename);
    let mut sources = vec![Advertised {
        id: id.clone(),
        url: file.url.clone(),
        checksum: strongest(&file.hashes),
        package: package.to_owned(),
        version: version.clone(),
        published: file.upload_time(),
    }];
    if let CoreMetadata::Present { hashes } = &file.core_metadata {
        let mut url = file.url.clone();
        url.set_path(&format!("{}.metadata", file.url.path()));
        sources.push(Advertised {
            id: format!("{id}.metadata"),
            url,
            checksum: strongest(hashes),
            package: package.to_owned(),
            version,
            published: file.upload_time(),
        });
    }
    sources
}

fn strongest(hashes: &std::collections::BTreeMap<String, String>) -> Option<Checksum> {
    Checksum::strongest(
        hashes
            .iter()
            .filter_map(|(algorithm, value)| Checksum::from_hex(algorithm, value)),
    )
}

fn format_query(query: Option<&str>) -> Option<String> {
    // A literal `+` is part of the media type (`v1+json`), not an encoded space.
    let query = query?.replace('+', "%2B");
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "format")
        .map(|(_, value)| value.into_owned())
}

fn document_error(upstream: &UpstreamDocument, error: Error) -> proxy::Error {
    proxy::Error::Document {
        url: upstream.url.to_string(),
        source: Box::new(error),
    }
}

fn bad_url(base: &Url, error: url::ParseError) -> proxy::Error {
    proxy::Error::BadUpstreamUrl {
        url: base.to_string(),
        source: error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_projects_files_are_recorded_under_the_routes_ids_too() {
        let page = serde_json::json!({
            "meta": {"api-version": "1.1"}, "name": "acme-lib",
            "files": [{"filename": "acme_lib-1.0-py3-none-any.whl",
                "url": "http://127.0.0.9:1/files/acme_lib-1.0-py3-none-any.whl",
                "hashes": {"sha256": "ab".repeat(32)}, "core-metadata": true}]});
        let url = Url::parse("http://127.0.0.9:2/simple/acme-lib/").unwrap();
        let page = ProjectPage::parse(
            page.to_string().as_bytes(),
            "application/vnd.pypi.simple.v1+json",
            &url,
        )
        .unwrap();
        let file = &page.files()[0];
        let public = proxy::Routing::public(&url);
        let ids = |routing: &proxy::Routing| -> Vec<String> {
            sources_of(routing, "acme-lib", file)
                .into_iter()
                .map(|source| source.id)
                .collect()
        };
        let plain = rewrite::file_id(&file.url);
        assert_eq!(ids(&public), [plain.clone(), format!("{plain}.metadata")]);
        let routed = proxy::Routing {
            upstream: url.clone(),
            prefix: "routed/0123456789abcdef/".to_owned(),
        };
        let mut routed_ids = ids(&routed);
        routed_ids.sort();
        assert_eq!(
            routed_ids,
            [
                plain.clone(),
                format!("{plain}.metadata"),
                routed.key(&plain),
                routed.key(&format!("{plain}.metadata")),
            ]
        );
    }

    #[test]
    fn files_the_policy_refuses_are_hidden_with_their_versions() {
        use pmcache_policy::Config;
        let file = |name: &str, uploaded: &str| {
            serde_json::json!({"filename": name, "url": format!("https://files.example/{name}"),
                "hashes": {"sha256": "ab".repeat(32)}, "upload-time": uploaded})
        };
        let page = serde_json::json!({
        "meta": {"api-version": "1.1"}, "name": "demo",
        "versions": ["1.0", "1.1", "2.0"],
        "files": [
            file("demo-1.0.tar.gz", "2020-01-01T00:00:00.000000Z"),
            file("demo-1.1.tar.gz", "2020-06-01T00:00:00Z"),
            // A wheel added to 1.1 just now: as young as its upload.
            file("demo-1.1-py3-none-any.whl", "2029-12-31T23:00:00Z"),
            file("demo-2.0.tar.gz", "2029-12-31T22:00:00.5Z"),
            file("demo-2.0-py3-none-any.whl", "2029-12-31T22:30:00Z"),
        ]});
        let url = Url::parse("https://pypi.example/simple/demo/").unwrap();
        let mut page = ProjectPage::parse(
            page.to_string().as_bytes(),
            "application/vnd.pypi.simple.v1+json",
            &url,
        )
        .unwrap();
        let config = Config {
            min_release_age: std::time::Duration::from_secs(86_400),
            deny: vec!["pypi:Demo@1.0".to_owned()],
            ..Config::default()
        };
        let policy = Policy::new(&config, &[], &[]).unwrap();
        let now = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let until = hide_refused(&mut page, &policy, "demo", now);
        let left: Vec<&str> = page.files().iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(left, ["demo-1.1.tar.gz"]);
        let expected = humantime::parse_rfc3339_weak("2030-01-01T22:00:00.5Z").unwrap();
        assert_eq!(until, Some(expected));
        let rendered: serde_json::Value =
            serde_json::from_str(&rewrite::render_project(&page, "/pypi").json).unwrap();
        assert_eq!(rendered["versions"], serde_json::json!(["1.1"]));
        let html = rewrite::render_project(&page, "/pypi").html;
        assert!(
            !html.contains("demo-2.0") && !html.contains("demo-1.0.tar.gz"),
            "{html}"
        );
    }

    #[test]
    fn routes_parse_paths() {
        assert_eq!(route("/simple/"), Some(Route::Root));
        assert_eq!(route("/simple"), Some(Route::Root));
        assert_eq!(route("/simple/Demo_App/"), Some(Route::Project("Demo_App")));
        assert_eq!(route("/simple/demo"), Some(Route::Project("demo")));
        assert_eq!(route("/simple/a/b/"), None);
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            route(&format!("/files/{id}/demo-1.0.tar.gz")),
            Some(Route::File {
                id,
                filename: "demo-1.0.tar.gz"
            })
        );
        assert_eq!(route("/files/../etc/passwd"), None);
        assert_eq!(route(&format!("/files/{id}/")), None);
        assert_eq!(route("/other"), None);
    }

    #[test]
    fn format_query_is_read_from_the_query_string() {
        assert_eq!(
            format_query(Some("format=application/vnd.pypi.simple.v1%2Bjson")).as_deref(),
            Some("application/vnd.pypi.simple.v1+json")
        );
        assert_eq!(
            format_query(Some("a=b&format=application/vnd.pypi.simple.v1+html")).as_deref(),
            Some("application/vnd.pypi.simple.v1+html")
        );
        assert_eq!(format_query(Some("x=1")), None);
        assert_eq!(format_query(None), None);
    }
}
