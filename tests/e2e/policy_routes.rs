//! Private routes (`[[routes]]`, the dependency-confusion guard) with the real clients: names a
//! route takes never reach the public fixture upstream, in any spelling, for documents and
//! artifacts. Routed to `none`, the client's install fails with pmcache's 404; routed to a
//! second fixture upstream of the same kind (another port), the client installs from there.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::auth::Token;
use crate::support::case::Case;
use crate::support::http;
use crate::support::npm_packages::{LEFT, SCOPED, packages};
use crate::support::npm_upstream::{Kind as NpmKind, NpmUpstream};

/// `PMCACHE_ROUTES` with one route of `ecosystem` taking `names` to `upstream`.
fn routes(ecosystem: &str, names: &str, upstream: &str) -> String {
    format!(r#"[{{ ecosystem = "{ecosystem}", names = ["{names}"], upstream = "{upstream}" }}]"#)
}

/// Fails if any request in `log` (one target per line, as sent) names `needles`, compared in
/// lower case and percent-decoded.
fn ensure_never_asked(what: &str, targets: &[String], needles: &[&str]) -> Result<()> {
    for target in targets {
        let decoded = percent_decode(target).to_ascii_lowercase();
        for needle in needles {
            ensure!(
                !decoded.contains(&needle.to_ascii_lowercase()),
                "{what} was asked for {target}, which a private route takes"
            );
        }
    }
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fails unless `response` is pmcache's 404 naming `subject` as private with no upstream.
fn ensure_private_404(what: &str, response: &http::Response, subject: &str) -> Result<()> {
    let reason = format!("pmcache: {subject} is private (routes[0]) and has no upstream");
    ensure!(
        response.status == 404 && response.text().contains(&reason),
        "{what}: {}",
        response.describe()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// npm: the scope @demo/*

type NpmCase = Case<NpmUpstream>;

/// The public fixture registry's request targets, with bodies (audits) as text.
fn npm_targets(upstream: &NpmUpstream) -> Vec<String> {
    upstream
        .requests_since(0)
        .into_iter()
        .map(|logged| format!("{} {}", logged.target, body_text(&logged.body)))
        .collect()
}

/// A request body as text, gunzipped when it is gzip.
fn body_text(body: &[u8]) -> String {
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .is_ok()
        {
            return text;
        }
    }
    String::from_utf8_lossy(body).into_owned()
}

/// A project depending on `@demo/scoped` (which depends on demo-left).
fn scoped_project(case: &NpmCase, name: &str) -> Result<PathBuf> {
    let dir = case.path(name).join("project");
    std::fs::create_dir_all(&dir)?;
    let manifest = serde_json::json!({
        "name": "routes-app",
        "version": "1.0.0",
        "private": true,
        "dependencies": {SCOPED: "^1.0.0"},
    });
    std::fs::write(dir.join("package.json"), manifest.to_string())?;
    Ok(dir)
}

fn installed_version(project: &Path, package: &str) -> Result<String> {
    let manifest = project
        .join("node_modules")
        .join(package)
        .join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    Ok(manifest["version"].as_str().unwrap_or_default().to_owned())
}

/// `@demo/*` routed to `none`: its packument in every spelling of the scope's slash, its
/// version document and its tarball are pmcache's 404 naming the route; `npm install` fails
/// with a 404; the public registry is never asked for anything of the scope.
#[test]
fn an_npm_scope_routed_to_none_is_pmcaches_404_and_never_asked_upstream() -> Result<()> {
    let routes = routes("npm", "@demo/*", "none");
    let case = NpmCase::npm(NpmUpstream::start()?, &[("PMCACHE_ROUTES", &routes)])?;
    let registry = case.registry();
    let tarball = packages()?.tarball(SCOPED, "1.0.0")?;
    for path in [
        "@demo/scoped".to_owned(),
        "@demo%2fscoped".to_owned(),
        "@demo%2Fscoped".to_owned(),
        "%40demo%2Fscoped".to_owned(),
        "@demo/scoped/1.0.0".to_owned(),
        tarball.registry_path(),
        tarball.registry_path().replacen('/', "%2f", 1),
        "-/package/@demo%2fscoped/dist-tags".to_owned(),
    ] {
        let response = http::get(&format!("{registry}{path}"))?;
        ensure_private_404(&path, &response, "npm:@demo/scoped")?;
    }
    let npm = case.sandbox("npm")?;
    let project = scoped_project(&case, "npm")?;
    let run = npm
        .npm(&project, &["install"])?
        .ensure_failure("npm install of a private scope routed nowhere")?;
    ensure!(
        run.output.contains("404"),
        "npm did not say 404:\n{}",
        run.output
    );
    ensure_never_asked(
        "the public registry",
        &npm_targets(&case.upstream),
        &["@demo"],
    )?;
    let counted = case
        .pmcache()
        .metric_sum("pmcache_policy_refusals_total", |labels| {
            labels.contains("ecosystem=\"npm\"") && labels.contains("rule=\"routes\"")
        })?;
    ensure!(counted >= 8.0, "{counted} private 404s counted");
    case.ensure_no_egress()
}

/// A tarball cached before its scope was routed to `none` is pmcache's 404 once the route is
/// set: the stored copy is not served, and the registry is not asked.
#[test]
fn an_npm_tarball_cached_before_its_route_is_refused_once_routed_nowhere() -> Result<()> {
    let mut case = NpmCase::npm(NpmUpstream::start()?, &[])?;
    let tarball = packages()?.tarball(SCOPED, "1.0.0")?;
    let cached = http::get(&format!("{}{}", case.registry(), tarball.registry_path()))?;
    ensure!(
        cached.status == 200,
        "before the route: {}",
        cached.describe()
    );
    let routes = routes("npm", "@demo/*", "none");
    case.restart_with(&[("PMCACHE_ROUTES", routes.as_str())])?;
    let mark = case.upstream.mark();
    let url = format!("{}{}", case.registry(), tarball.registry_path());
    ensure_private_404(&url, &http::get(&url)?, "npm:@demo/scoped")?;
    let asked = case.upstream.requests_since(mark);
    ensure!(
        asked.is_empty(),
        "the registry was asked {} times",
        asked.len()
    );
    Ok(())
}

/// With no route at all, `npm audit` (which gzips its bulk report) reaches the registry in a
/// form it can read: the fixture, like a registry, reads gzip only when `Content-Encoding`
/// says so.
#[test]
fn npm_audit_without_routes_reaches_the_registry_readable() -> Result<()> {
    let case = NpmCase::npm(NpmUpstream::start()?, &[])?;
    let npm = case.sandbox("npm")?;
    let project = scoped_project(&case, "npm")?;
    npm.npm(&project, &["install"])?
        .ensure_success("npm install")?;
    let audited = case.upstream.count(&NpmKind::Advisories);
    npm.npm(&project, &["audit"])?
        .ensure_success("npm audit through pmcache")?;
    ensure!(
        case.upstream.count(&NpmKind::Advisories) > audited,
        "npm audit was not relayed:\n{}",
        case.upstream.request_log()
    );
    Ok(())
}

/// `@demo/*` routed to a second fixture registry: npm installs `@demo/scoped` from it (its
/// packument and tarball asked there), demo-left from the public one; `npm audit` relays the
/// tree to the public registry without the private name; the public registry is never asked
/// for anything of the scope.
#[test]
fn an_npm_scope_routed_to_a_private_registry_installs_from_it() -> Result<()> {
    let private = NpmUpstream::start()?;
    let routes = routes("npm", "@demo/*", &private.registry_url());
    let admin = Token::new("ops", "admin")?;
    let case = NpmCase::npm(
        NpmUpstream::start()?,
        &[
            ("PMCACHE_ROUTES", &routes),
            ("PMCACHE_AUTH_TOKENS_FILE", &admin.file),
        ],
    )?;
    let npm = case.sandbox("npm")?;
    let project = scoped_project(&case, "npm")?;
    npm.npm(&project, &["install"])?
        .ensure_success("npm install of a routed scope")?;
    ensure!(installed_version(&project, SCOPED)? == "1.0.0");
    let tarball = packages()?.tarball(SCOPED, "1.0.0")?;
    ensure!(
        private.packument_requests(SCOPED) >= 1 && private.requests_for_tarball(tarball) == 1,
        "the private registry did not serve {SCOPED}:\n{}",
        private.request_log()
    );
    ensure!(
        case.upstream.packument_requests(LEFT) >= 1,
        "demo-left did not come from the public registry:\n{}",
        case.upstream.request_log()
    );
    // The other spellings reach the same private copy.
    for path in ["@demo%2fscoped", "@demo%2Fscoped", "%40demo%2Fscoped"] {
        let response = http::get(&format!("{}{path}", case.registry()))?;
        ensure!(response.status == 200, "{path}: {}", response.describe());
    }
    // npm audit names every package of the tree; the relayed body must not name the scope.
    let audited = case.upstream.count(&NpmKind::Advisories);
    let _ = npm.npm(&project, &["audit", "--audit"])?;
    ensure!(
        case.upstream.count(&NpmKind::Advisories) > audited,
        "npm audit was not relayed:\n{}",
        case.upstream.request_log()
    );
    ensure_never_asked(
        "the public registry",
        &npm_targets(&case.upstream),
        &["@demo"],
    )?;
    // A purge of the routed package removes the route's copy of its packument.
    let bearer = admin.bearer();
    let purged = http::send(
        "DELETE",
        &format!("{}/admin/packages/npm/{SCOPED}", case.pmcache().base_url()),
        &[("Authorization", bearer.as_str())],
        b"",
    )?;
    let report: serde_json::Value = serde_json::from_slice(&purged.body)
        .with_context(|| format!("purge: {}", purged.describe()))?;
    ensure!(
        report["documents"] == 1 && report["artifacts"].as_u64() >= Some(1),
        "the purge missed the routed copies: {report}"
    );
    case.ensure_no_egress()
}

// ---------------------------------------------------------------------------------------------
// PyPI: the prefix demo-lib* (PEP 503: Demo_Lib, demo.lib and demo-lib are one name)

mod pypi {
    use anyhow::{Result, ensure};

    use super::{ensure_never_asked, ensure_private_404, routes};
    use crate::support::case::Case;
    use crate::support::dists::LIB_1_1;
    use crate::support::http;
    use crate::support::pip::Venv;
    use crate::support::pmcache::trusted_hosts;
    use crate::support::pypi_upstream::{PageFormat, PypiUpstream};

    type PypiCase = Case<PypiUpstream>;

    /// `response`, or where its redirect (pmcache's to a project's normal name) leads.
    fn follow(base: &str, response: http::Response) -> Result<http::Response> {
        match (response.status, response.header("location")) {
            (301, Some(location)) => http::get(&format!("{base}{location}")),
            _ => Ok(response),
        }
    }

    /// Every spelling of demo-lib, as the request log would show it.
    const SPELLINGS: [&str; 3] = ["demo-lib", "demo_lib", "demo.lib"];

    fn public_requests(case: &PypiCase) -> Vec<String> {
        case.upstream
            .request_log()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `demo-lib*` routed to `none`: its page in every PEP 503 spelling (after pmcache's
    /// redirect to the normal one) and a file URL of it are pmcache's 404 naming the route;
    /// pip fail to install it; the public index and files servers are never asked for
    /// anything of it.
    #[test]
    fn a_pypi_prefix_routed_to_none_is_pmcaches_404_and_never_asked_upstream() -> Result<()> {
        let routes = routes("pypi", "demo-lib*", "none");
        let case = Case::pypi(PageFormat::Json, &[("PMCACHE_ROUTES", &routes)])?;
        for spelling in ["demo-lib/", "Demo_Lib/", "demo.lib/", "DEMO-LIB"] {
            let url = format!("{}{spelling}", case.index_url());
            let response = follow(case.pmcache().base_url(), http::get(&url)?)?;
            ensure_private_404(&url, &response, "pypi:demo-lib")?;
        }
        let venv = Venv::create(&case.path("pip"))?;
        let run = venv
            .install(&case.index_url(), &["Demo_Lib"])?
            .ensure_failure("pip install of a private project routed nowhere")?;
        // pip takes the 404 as a project with no versions.
        ensure!(
            run.output.contains("from versions: none"),
            "pip found versions:\n{}",
            run.output
        );
        ensure_never_asked("the public index", &public_requests(&case), &SPELLINGS)?;
        case.ensure_no_egress()
    }

    /// `demo-lib*` routed to a second fixture index (files on its own files server, trusted as
    /// the public one's is): pip install demo-lib from it, demo-util (another project)
    /// still from the public index; a file URL the public page advertised before the route
    /// existed is not fetched any more; the public servers are never asked for demo-lib after
    /// the route is set.
    #[test]
    fn a_pypi_prefix_routed_to_a_private_index_installs_from_it() -> Result<()> {
        let private = PypiUpstream::start(PageFormat::Json)?;
        let mut case = Case::pypi(PageFormat::Json, &[])?;
        // Before the route: the public page is cached, and its files advertised.
        let public_page = http::get(&format!("{}demo-lib/", case.index_url()))?;
        ensure!(public_page.status == 200, "{}", public_page.describe());
        let public_file =
            pmcache_pypi::rewrite::file_id(&url::Url::parse(&case.upstream.file_url(LIB_1_1)?)?);
        let trusted = trusted_hosts(&[case.upstream.files_addr(), private.files_addr()]);
        let routes = routes("pypi", "demo-lib*", &private.index_url());
        case.restart_with(&[
            ("PMCACHE_ROUTES", routes.as_str()),
            ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
        ])?;
        let mark = case.upstream.mark();
        let stale = http::get(&format!(
            "{}/pypi/files/{public_file}/{LIB_1_1}",
            case.pmcache().base_url()
        ))?;
        ensure!(
            stale.status == 404,
            "the public copy's file URL: {}",
            stale.describe()
        );

        let venv = Venv::create(&case.path("pip"))?;
        venv.install(&case.index_url(), &["Demo_Lib", "demo-util"])?
            .ensure_success("pip install of a routed project")?;
        ensure!(venv.python("import demo_lib; print(demo_lib.VERSION)")? == "1.1.0");
        let again = Venv::create(&case.path("pip-again"))?;
        again
            .install(&case.index_url(), &["demo.lib"])?
            .ensure_success("pip install of a routed project, cached")?;
        ensure!(
            private.requests_for("/simple/demo-lib/") >= 1
                && private.artifact_requests(LIB_1_1) == 1,
            "the private index did not serve demo-lib:\n{}",
            private.request_log()
        );
        let since: Vec<String> = public_requests(&case).into_iter().skip(mark).collect();
        ensure!(
            since.iter().any(|line| line.contains("demo-util")),
            "demo-util did not come from the public index:\n{}",
            case.upstream.request_log()
        );
        ensure_never_asked("the public index", &since, &SPELLINGS)?;
        case.ensure_no_egress()
    }
}

// ---------------------------------------------------------------------------------------------
// Packagist: the vendor proxfix/* (Composer names are lower case; other cases are refused)

mod packagist {
    use anyhow::{Result, ensure};

    use super::{ensure_never_asked, ensure_private_404, routes};
    use crate::support::case::Case;
    use crate::support::composer::{Project, Sandbox};
    use crate::support::http;
    use crate::support::packagist_packages::{APP, BASE};
    use crate::support::packagist_upstream::{Kind, PackagistUpstream};
    use crate::support::pmcache::trusted_hosts;

    type PackagistCase = Case<PackagistUpstream>;

    /// Every request the public repository and its code host saw, with bodies.
    fn public_requests(case: &PackagistCase) -> Vec<String> {
        case.upstream
            .requests_since(0)
            .into_iter()
            .map(|logged| format!("{} {}", logged.target, logged.body_text()))
            .collect()
    }

    fn project(case: &PackagistCase, name: &str) -> Result<(Sandbox, Project)> {
        let sandbox = Sandbox::create(&case.path(name).join("client"), &case.trap)?;
        let repository = format!("{}/packagist", case.pmcache().base_url());
        let project = Project::create(
            &case.path(name).join("project"),
            &repository,
            &[(APP, "^1.0")],
            None,
        )?;
        Ok((sandbox, project))
    }

    /// `proxfix/*` routed to `none`: its p2 files (tags and branches), a dist and its
    /// providers endpoint are pmcache's 404 naming the route, an upper-case spelling is a 404
    /// as no Composer name; `composer install` cannot find it; the public repository
    /// is asked for its root file only.
    #[test]
    fn a_composer_vendor_routed_to_none_is_pmcaches_404_and_never_asked_upstream() -> Result<()> {
        let routes = routes("packagist", "proxfix/*", "none");
        let case = PackagistCase::packagist("60s", |_| {
            vec![("PMCACHE_ROUTES".to_owned(), routes.clone())]
        })?;
        let repository = format!("{}/packagist", case.pmcache().base_url());
        for path in [
            format!("/p2/{BASE}.json"),
            format!("/p2/{BASE}~dev.json"),
            format!("/dists/{BASE}/1.0.0.zip"),
            format!("/providers/{BASE}.json"),
        ] {
            let response = http::get(&format!("{repository}{path}"))?;
            ensure_private_404(&path, &response, &format!("packagist:{BASE}"))?;
        }
        let shouted = http::get(&format!("{repository}/p2/PROXFIX/Base.json"))?;
        ensure!(shouted.status == 404, "{}", shouted.describe());
        let (sandbox, project) = project(&case, "composer")?;
        let run = sandbox
            .install(&project)?
            .ensure_failure("composer install of a private vendor routed nowhere")?;
        ensure!(
            run.output.contains("could not be found"),
            "composer found it:\n{}",
            run.output
        );
        ensure_never_asked(
            "the public repository",
            &public_requests(&case),
            &["proxfix"],
        )?;
        case.ensure_no_egress()
    }

    /// `proxfix/*` routed to a second fixture repository (its code host trusted as the public
    /// one's is): `composer install` installs proxfix/app and proxfix/base from it; `composer
    /// audit` asks the public advisories API about no private package; the public repository
    /// is asked for nothing of the vendor.
    #[test]
    fn a_composer_vendor_routed_to_a_private_repository_installs_from_it() -> Result<()> {
        let private = PackagistUpstream::start()?;
        let routes = routes(
            "packagist",
            "proxfix/*",
            &format!("{}/", private.repo_url()),
        );
        let case = PackagistCase::packagist("60s", |public| {
            let trusted = trusted_hosts(&[
                public.repo_addr(),
                public.code_host_addr(),
                private.code_host_addr(),
            ]);
            vec![
                ("PMCACHE_ROUTES".to_owned(), routes.clone()),
                ("PMCACHE_UPSTREAM_TRUSTED_HOSTS".to_owned(), trusted),
            ]
        })?;
        let (sandbox, project) = project(&case, "composer")?;
        sandbox
            .install(&project)?
            .ensure_success("composer install of a routed vendor")?;
        ensure!(
            project.locked(APP).is_ok() && project.locked(BASE).is_ok(),
            "the lock lacks the routed packages"
        );
        ensure!(
            private.count(&Kind::P2(APP.to_owned())) >= 1
                && private.count(&Kind::P2(BASE.to_owned())) >= 1,
            "the private repository did not serve the vendor:\n{}",
            private.request_log()
        );
        let _ = sandbox.audit(&project)?;
        ensure_never_asked(
            "the public repository",
            &public_requests(&case),
            &["proxfix"],
        )?;
        case.ensure_no_egress()
    }
}

// ---------------------------------------------------------------------------------------------
// RubyGems: the gem proxfix-base (gem names are case-sensitive: one spelling)

mod rubygems {
    use anyhow::{Result, ensure};

    use super::{ensure_never_asked, ensure_private_404, routes};
    use crate::support::case::Case;
    use crate::support::gem::{GemfileSource, Project, Sandbox};
    use crate::support::http;
    use crate::support::rubygems_gems::{APP, BASE};
    use crate::support::rubygems_upstream::{Kind, RubygemsUpstream};

    type GemCase = Case<RubygemsUpstream>;

    fn public_requests(case: &GemCase) -> Vec<String> {
        case.upstream
            .requests_since(0)
            .into_iter()
            .map(|logged| logged.target)
            .collect()
    }

    fn source(case: &GemCase) -> String {
        format!("{}/rubygems/", case.pmcache().base_url())
    }

    /// `proxfix-base` routed to `none`: its `/info`, a `.gem` and a gemspec of it are
    /// pmcache's 404 naming the route; `gem install` of it, and of proxfix_app that depends on
    /// it, fail; the public gem server is never asked for anything of it.
    #[test]
    fn a_gem_routed_to_none_is_pmcaches_404_and_never_asked_upstream() -> Result<()> {
        let routes = routes("rubygems", BASE, "none");
        let case = GemCase::rubygems_with("60s", &[("PMCACHE_ROUTES", &routes)])?;
        for path in [
            format!("info/{BASE}"),
            format!("gems/{BASE}-1.0.0.gem"),
            format!("quick/Marshal.4.8/{BASE}-1.0.0.gemspec.rz"),
        ] {
            let response = http::get(&format!("{}{path}", source(&case)))?;
            ensure_private_404(&path, &response, &format!("rubygems:{BASE}"))?;
        }
        let sandbox = Sandbox::create(&case.path("gem"), &case.trap)?;
        sandbox
            .gem_install(&source(&case), &[BASE])?
            .ensure_failure("gem install of a private gem routed nowhere")?;
        sandbox
            .gem_install(&source(&case), &[APP])?
            .ensure_failure("gem install of a gem depending on a private gem routed nowhere")?;
        ensure_never_asked("the public gem server", &public_requests(&case), &[BASE])?;
        case.ensure_no_egress()
    }

    /// `proxfix-base` routed to a second fixture gem server: `gem install proxfix_app` takes
    /// proxfix_app from the public server and proxfix-base (its `/info` and `.gem`) from the
    /// private one; the public server is never asked for anything of proxfix-base.
    #[test]
    fn a_gem_routed_to_a_private_server_installs_from_it() -> Result<()> {
        let private = RubygemsUpstream::start()?;
        let routes = routes("rubygems", BASE, &private.base_url());
        let case = GemCase::rubygems_with("60s", &[("PMCACHE_ROUTES", &routes)])?;
        let sandbox = Sandbox::create(&case.path("gem"), &case.trap)?;
        sandbox
            .gem_install(&source(&case), &[APP])?
            .ensure_success("gem install of a gem depending on a routed gem")?;
        ensure!(
            private.count(&Kind::Info(BASE.to_owned())) >= 1
                && private.requests_since(0).iter().any(
                    |logged| matches!(&logged.kind, Kind::Gem(file) if file.starts_with(BASE))
                ),
            "the private gem server did not serve {BASE}:\n{}",
            private.request_log()
        );
        ensure!(
            case.upstream.count(&Kind::Info(APP.to_owned())) >= 1,
            "{APP} did not come from the public gem server:\n{}",
            case.upstream.request_log()
        );
        ensure_never_asked("the public gem server", &public_requests(&case), &[BASE])?;
        case.ensure_no_egress()
    }
    /// `proxfix-base`, which the public gem server does not have, routed to a second fixture
    /// gem server: `bundle install` of proxfix_app (public, depending on it) resolves and
    /// installs proxfix-base from the private server, as pmcache's `/versions` lists it (with
    /// the MD5 of the `/info` it serves from the route); the public server is never asked for
    /// anything of it.
    #[test]
    fn bundler_installs_a_routed_gem_the_public_server_does_not_have() -> Result<()> {
        let private = RubygemsUpstream::start()?;
        let routes = routes("rubygems", BASE, &private.base_url());
        let case = GemCase::rubygems_with("60s", &[("PMCACHE_ROUTES", &routes)])?;
        case.upstream.unlist(BASE);
        let project = Project::create(
            &case.path("bundle").join("project"),
            GemfileSource::Direct(&source(&case)),
            &[(APP, &[])],
        )?;
        Sandbox::create(&case.path("bundle").join("client"), &case.trap)?
            .bundle(&project.dir, &["install"], &project.env(&[]))?
            .ensure_success("bundle install of a gem depending on a private gem")?;
        let lock = std::fs::read_to_string(project.dir.join("Gemfile.lock"))?;
        ensure!(
            lock.contains(&format!("    {BASE} (")),
            "the lock lacks {BASE}:\n{lock}"
        );
        ensure!(
            private.count(&Kind::Info(BASE.to_owned())) >= 1
                && private.requests_since(0).iter().any(
                    |logged| matches!(&logged.kind, Kind::Gem(file) if file.starts_with(BASE))
                ),
            "the private gem server did not serve {BASE}:\n{}",
            private.request_log()
        );
        ensure_never_asked("the public gem server", &public_requests(&case), &[BASE])?;
        case.ensure_no_egress()
    }
}
