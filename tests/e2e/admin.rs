//! Trust tiers (issue 13), the admin API: only an admin token reaches `/admin/…` (anonymous,
//! read and populate callers get 403); a purge of one npm version, of a scoped npm package
//! (`pmcache purge` over the control socket) and of one PyPI project (over HTTP, then `pmcache
//! purge` on the data directory with no server) makes the next install of a real client fetch
//! exactly those again, while everything else is served from the cache.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::auth::Token;
use crate::npm::{ensure_demo_tree, new_project};
use crate::support::Finished;
use crate::support::case::Case;
use crate::support::dists::{LIB_1_1, UTIL, dists};
use crate::support::http;
use crate::support::npm::Sandbox;
use crate::support::npm_packages::{BIG, LEFT, LEFT_RESOLVED, SCOPED, packages};
use crate::support::npm_upstream::{Kind, NpmUpstream};
use crate::support::pip::Venv;
use crate::support::pmcache;
use crate::support::pypi_upstream::{PageFormat, PypiUpstream, Server};

/// Metadata stays fresh for the whole test: what the second install fetches upstream is what
/// the purge dropped, not what a TTL let go.
const LONG_TTL: &str = "1h";

/// A tokens file granting `tokens`, written in `dir`: what `PMCACHE_AUTH_TOKENS_FILE` names.
fn tokens_file(dir: &Path, tokens: &[&Token]) -> Result<String> {
    let mut all = String::new();
    for token in tokens {
        all.push_str(&std::fs::read_to_string(&token.file)?);
        all.push('\n');
    }
    let path = dir.join("tokens.toml");
    std::fs::write(&path, all)?;
    Ok(path.to_str().context("temp dir is not UTF-8")?.to_owned())
}

/// `method base/admin/path` with `token` (none: anonymous).
fn admin_request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&Token>,
) -> Result<http::Response> {
    let bearer = token.map(Token::bearer);
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|bearer| vec![("Authorization", bearer)])
        .unwrap_or_default();
    http::send(method, &format!("{base}/admin/{path}"), &headers, b"")
}

/// The JSON report of a 200 admin answer.
fn report(response: &http::Response, what: &str) -> Result<Value> {
    ensure!(response.status == 200, "{what}: {}", response.describe());
    ensure!(
        response.header("content-type") == Some("application/json"),
        "{what}: not JSON: {}",
        response.describe()
    );
    serde_json::from_slice(&response.body)
        .with_context(|| format!("{what}: {}", response.describe()))
}

fn number(report: &Value, field: &str) -> Result<u64> {
    report[field]
        .as_u64()
        .with_context(|| format!("the report has no {field}: {report}"))
}

/// `pmcache purge` succeeded, through `via` ("the running server" or "the data directory").
fn ensure_purged(finished: &Finished, via: &str) -> Result<()> {
    ensure!(
        finished.status.success() && finished.stdout.contains(&format!("purged through {via}")),
        "pmcache purge:\n{}",
        finished.output()
    );
    Ok(())
}

/// `npm install` of the demo project (scoped, its dependency demo-left, demo-big) in fresh
/// directories named `name`: an empty client cache, so every file comes from pmcache.
fn npm_install(case: &Case<NpmUpstream>, name: &str) -> Result<()> {
    let project = new_project(&case.path(name).join("project"), None)?;
    let sandbox = Sandbox::create(
        &case.path(name).join("client"),
        &case.registry(),
        &case.trap,
    )?;
    sandbox
        .npm(&project, &["install"])?
        .ensure_success(&format!("npm install ({name})"))?;
    ensure_demo_tree(&sandbox, &project)
}

/// The packuments and tarballs the fixture registry was asked for after `mark`.
fn npm_upstream_fetches(case: &Case<NpmUpstream>, mark: usize) -> (Vec<String>, Vec<String>) {
    let (mut packuments, mut tarballs) = (Vec::new(), Vec::new());
    for logged in case.upstream.requests_since(mark) {
        match logged.kind {
            Kind::Packument(name) => packuments.push(name),
            Kind::Tarball(file) => tarballs.push(file),
            _ => {}
        }
    }
    packuments.sort();
    packuments.dedup();
    tarballs.sort();
    (packuments, tarballs)
}

#[test]
fn a_purged_npm_version_and_scoped_package_are_fetched_again_and_the_rest_stays_cached()
-> Result<()> {
    let admin = Token::new("ops", "admin")?;
    let scratch = tempfile::tempdir()?;
    let tokens = tokens_file(scratch.path(), &[&admin])?;
    let case = Case::npm(
        NpmUpstream::start()?,
        &[
            ("PMCACHE_NPM_METADATA_TTL", LONG_TTL),
            ("PMCACHE_AUTH_TOKENS_FILE", tokens.as_str()),
        ],
    )?;
    let base = case.pmcache().base_url().to_owned();
    let fixture = packages()?;
    let (left, scoped, big) = (
        fixture.tarball(LEFT, LEFT_RESOLVED)?,
        fixture.tarball(SCOPED, "1.0.0")?,
        fixture.tarball(BIG, "1.0.0")?,
    );
    npm_install(&case, "first")?;
    let data = case.data_dir();
    pmcache::ensure_stored(&data, &[&left.sha256, &scoped.sha256, &big.sha256])?;

    // One version of one package, over the HTTP admin API.
    let response = admin_request(
        &base,
        "DELETE",
        &format!("packages/npm/{LEFT}/{LEFT_RESOLVED}"),
        Some(&admin),
    )?;
    let purged = report(&response, "purging demo-left's resolved version")?;
    ensure!(
        purged["package"] == LEFT && purged["version"] == LEFT_RESOLVED,
        "the report names another target: {purged}"
    );
    ensure!(
        number(&purged, "documents")? == 1
            && number(&purged, "artifacts")? >= 1
            && number(&purged, "sources")? >= 1
            && number(&purged, "freed_bytes")? >= left.size,
        "the purge removed less than the packument and the tarball: {purged}"
    );
    pmcache::ensure_not_stored(&data, &[&left.sha256])?;
    pmcache::ensure_stored(&data, &[&scoped.sha256, &big.sha256])?;

    let mark = case.upstream.mark();
    npm_install(&case, "after-version-purge")?;
    let (packuments, tarballs) = npm_upstream_fetches(&case, mark);
    ensure!(
        packuments == [LEFT] && tarballs == [left.filename.clone()],
        "after the purge of {LEFT}@{LEFT_RESOLVED} the upstream was asked for packuments \
         {packuments:?} and tarballs {tarballs:?}:\n{}",
        case.upstream.request_log()
    );
    pmcache::ensure_stored(&data, &[&left.sha256])?;

    // A whole scoped package, with `pmcache purge` over the running server's control socket.
    let finished = pmcache::purge(case.dir.path(), &data, &["npm", SCOPED])?;
    ensure_purged(&finished, "the running server")?;
    ensure!(
        finished
            .stdout
            .contains(&format!("npm {SCOPED} (all versions)")),
        "pmcache purge printed:\n{}",
        finished.output()
    );
    pmcache::ensure_not_stored(&data, &[&scoped.sha256])?;

    let mark = case.upstream.mark();
    npm_install(&case, "after-package-purge")?;
    let (packuments, tarballs) = npm_upstream_fetches(&case, mark);
    ensure!(
        packuments == [SCOPED] && tarballs == [scoped.filename.clone()],
        "after the purge of {SCOPED} the upstream was asked for packuments {packuments:?} and \
         tarballs {tarballs:?}:\n{}",
        case.upstream.request_log()
    );
    case.pmcache().ensure_no_server_errors()?;
    case.ensure_no_egress()
}

/// pip installs demo-lib and demo-util (wheels) into a fresh venv named `name`.
fn pip_install(case: &Case<PypiUpstream>, name: &str) -> Result<()> {
    let venv = Venv::create(&case.path(name))?;
    venv.install(&case.index_url(), &["demo-lib", "demo-util"])?
        .ensure_success(&format!("pip install ({name})"))?;
    let version = venv.python("import demo_lib, demo_util; print(demo_lib.VERSION)")?;
    ensure!(version == "1.1.0", "installed demo_lib {version:?}");
    Ok(())
}

/// The project pages the fixture index was asked for after `mark`, sorted.
fn pages_since(case: &Case<PypiUpstream>, mark: usize) -> Vec<String> {
    let mut pages: Vec<String> = case
        .upstream
        .requests_per_path_since(mark, Server::Index)
        .into_keys()
        .collect();
    pages.sort();
    pages
}

#[test]
fn a_purged_pypi_project_is_fetched_again_and_the_other_stays_cached() -> Result<()> {
    let admin = Token::new("ops", "admin")?;
    let scratch = tempfile::tempdir()?;
    let tokens = tokens_file(scratch.path(), &[&admin])?;
    let mut case = Case::pypi(
        PageFormat::Json,
        &[
            ("PMCACHE_PYPI_METADATA_TTL", LONG_TTL),
            ("PMCACHE_AUTH_TOKENS_FILE", tokens.as_str()),
        ],
    )?;
    let base = case.pmcache().base_url().to_owned();
    let catalogue = dists()?;
    let (lib, util) = (&catalogue.files[LIB_1_1], &catalogue.files[UTIL]);
    pip_install(&case, "first")?;
    let data = case.data_dir();
    pmcache::ensure_stored(&data, &[&lib.sha256, &util.sha256])?;

    // The name as a requirement may spell it: pmcache normalises it (PEP 503).
    let response = admin_request(&base, "DELETE", "packages/pypi/Demo.Lib", Some(&admin))?;
    let purged = report(&response, "purging demo-lib")?;
    ensure!(
        purged["package"] == "demo-lib" && purged["version"].is_null(),
        "the report names another target: {purged}"
    );
    ensure!(
        number(&purged, "documents")? == 1
            && number(&purged, "artifacts")? >= 1
            && number(&purged, "freed_bytes")? >= lib.size,
        "the purge removed less than the page and the wheel: {purged}"
    );
    pmcache::ensure_not_stored(&data, &[&lib.sha256])?;
    pmcache::ensure_stored(&data, &[&util.sha256])?;

    let mark = case.upstream.mark();
    pip_install(&case, "after-http-purge")?;
    ensure!(
        case.upstream.artifact_requests(LIB_1_1) == 2 && case.upstream.artifact_requests(UTIL) == 1,
        "after the purge of demo-lib, {LIB_1_1} was fetched {} times and {UTIL} {} times in all:\n{}",
        case.upstream.artifact_requests(LIB_1_1),
        case.upstream.artifact_requests(UTIL),
        case.upstream.request_log()
    );
    let pages = pages_since(&case, mark);
    ensure!(
        pages == ["/simple/demo-lib/"],
        "after the purge of demo-lib the index was asked for {pages:?}"
    );

    // With no server running, `pmcache purge` opens the store itself.
    case.pmcache_mut().stop()?;
    let finished = pmcache::purge(case.dir.path(), &data, &["pypi", "demo_util", "2.0.0"])?;
    ensure_purged(&finished, "the data directory")?;
    pmcache::ensure_not_stored(&data, &[&util.sha256])?;
    pmcache::ensure_stored(&data, &[&lib.sha256])?;
    case.restart()?;
    pip_install(&case, "after-offline-purge")?;
    ensure!(
        case.upstream.artifact_requests(LIB_1_1) == 2 && case.upstream.artifact_requests(UTIL) == 2,
        "after the offline purge of demo-util 2.0.0, {LIB_1_1} was fetched {} times and {UTIL} {} \
         times in all:\n{}",
        case.upstream.artifact_requests(LIB_1_1),
        case.upstream.artifact_requests(UTIL),
        case.upstream.request_log()
    );
    case.pmcache().ensure_no_server_errors()?;
    case.ensure_no_egress()
}

#[test]
fn only_an_admin_token_reaches_the_admin_api() -> Result<()> {
    let admin = Token::new("ops", "admin")?;
    let populate = Token::new("post-merge", "populate")?;
    let read = Token::new("review", "read")?;
    let scratch = tempfile::tempdir()?;
    let tokens = tokens_file(scratch.path(), &[&admin, &populate, &read])?;
    // The default `anonymous = "populate"`: a request without a token is a populate caller.
    let mut case = Case::pypi(
        PageFormat::Json,
        &[("PMCACHE_AUTH_TOKENS_FILE", tokens.as_str())],
    )?;
    let base = case.pmcache().base_url().to_owned();
    let commands = [
        ("POST", "gc"),
        ("POST", "verify"),
        ("DELETE", "packages/npm/@demo/scoped"),
        ("DELETE", "packages/pypi/demo-lib/1.1.0"),
    ];
    for (method, path) in commands {
        let callers = [
            ("anonymous", None),
            ("a populate token", Some(&populate)),
            ("a read token", Some(&read)),
        ];
        for (who, token) in callers {
            let response = admin_request(&base, method, path, token)?;
            let body = response.text();
            ensure!(
                response.status == 403 && body.contains("admin role") && body.lines().count() == 1,
                "{method} /admin/{path} by {who}: {}",
                response.describe()
            );
        }
    }

    let gc = report(&admin_request(&base, "POST", "gc", Some(&admin))?, "gc")?;
    number(&gc, "size_bytes")?;
    let verify = report(
        &admin_request(&base, "POST", "verify", Some(&admin))?,
        "verify",
    )?;
    ensure!(
        verify["corrupt_blobs"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "verify of an empty store: {verify}"
    );
    let scoped = report(
        &admin_request(
            &base,
            "DELETE",
            "packages/npm/%40demo%2Fscoped",
            Some(&admin),
        )?,
        "purging a package never cached",
    )?;
    ensure!(
        scoped["package"] == SCOPED && number(&scoped, "artifacts")? == 0,
        "{scoped}"
    );

    let wrong_method = admin_request(&base, "GET", "gc", Some(&admin))?;
    ensure!(
        wrong_method.status == 405 && wrong_method.header("allow") == Some("POST"),
        "GET /admin/gc: {}",
        wrong_method.describe()
    );
    let unknown = admin_request(&base, "DELETE", "packages/cargo/serde", Some(&admin))?;
    ensure!(
        unknown.status == 404 && unknown.text().contains("no ecosystem \"cargo\""),
        "an unknown ecosystem: {}",
        unknown.describe()
    );
    let requests = case.pmcache().events_named("request");
    ensure!(
        requests.iter().any(|event| {
            event.text("path").as_deref() == Some("/admin/gc")
                && event.text("role").as_deref() == Some("admin")
                && event.text("token").as_deref() == Some("ops")
        }),
        "no /admin/gc request was logged with the admin role and its token name"
    );

    // Without anonymous access, a request without a token is refused before the role check.
    case.restart_with(&[("PMCACHE_AUTH_ANONYMOUS", "none")])?;
    let base = case.pmcache().base_url().to_owned();
    let refused = admin_request(&base, "POST", "gc", None)?;
    ensure!(refused.status == 401, "{}", refused.describe());
    let forbidden = admin_request(&base, "POST", "gc", Some(&populate))?;
    ensure!(forbidden.status == 403, "{}", forbidden.describe());
    report(&admin_request(&base, "POST", "gc", Some(&admin))?, "gc")?;
    ensure!(
        !case.pmcache().log_text().contains(&admin.secret),
        "the admin token is in pmcache's log"
    );
    case.ensure_no_egress()
}
