//! The supply-chain policy with the real npm clients against the fixture registry: a minimum
//! release age that hides a version published now (and shows it once it has come of age,
//! without a restart), `deny` of a version and of a package, `allow_only`,
//! `unknown_release_time`, and a deny added after the tarball was cached.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::support::http;
use crate::support::npm_packages::{LEFT, packages};
use crate::support::npm_upstream::NpmUpstream;
use crate::support::wait_until;

/// demo-left's newest version (`latest`), the one the tests publish "now".
const YOUNG: &str = "2.0.0";
/// The version before it: what clients resolve while [`YOUNG`] is hidden.
const PREVIOUS: &str = "1.2.0";

type Case = crate::support::case::Case<NpmUpstream>;

impl Case {
    /// The fixture registry with demo-left [`YOUNG`] published just now (once pmcache has
    /// started, so that a slow start does not eat into a short age), and pmcache with
    /// `settings` (packuments revalidated on every request).
    fn young(settings: &[(&str, &str)]) -> Result<Case> {
        let mut all = vec![("PMCACHE_NPM_METADATA_TTL", "0s")];
        all.extend_from_slice(settings);
        let case = Case::npm(NpmUpstream::start()?, &all)?;
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        case.upstream.retime(LEFT, YOUNG, Some(&now));
        Ok(case)
    }

    /// A project depending on `demo-left` at `range`, with `lockfile` as package-lock.json.
    fn left_project(&self, name: &str, range: &str, lockfile: Option<&str>) -> Result<PathBuf> {
        let dir = self.path(name).join("project");
        std::fs::create_dir_all(&dir)?;
        let manifest = serde_json::json!({
            "name": "policy-app",
            "version": "1.0.0",
            "private": true,
            "dependencies": {LEFT: range},
        });
        std::fs::write(dir.join("package.json"), manifest.to_string())?;
        if let Some(lockfile) = lockfile {
            std::fs::write(dir.join("package-lock.json"), lockfile)?;
        }
        Ok(dir)
    }

    /// demo-left's packument through pmcache, as `accept` asks.
    fn left_packument(&self, accept: &str) -> Result<Value> {
        let url = format!("{}{LEFT}", self.registry());
        let response = http::get_with(&url, &[("accept", accept)])?;
        ensure!(response.status == 200, "GET {url}: {}", response.describe());
        Ok(serde_json::from_slice(&response.body)?)
    }

    /// GET of demo-left's tarball of `version`: its status and text.
    fn left_tarball(&self, version: &str) -> Result<http::Response> {
        http::get(&format!("{}{LEFT}/-/{LEFT}-{version}.tgz", self.registry()))
    }

    /// The policy refusals counted for `rule`.
    fn refusals(&self, rule: &str) -> Result<f64> {
        let wanted = format!("rule=\"{rule}\"");
        self.pmcache()
            .metric_sum("pmcache_policy_refusals_total", |labels| {
                labels.contains("ecosystem=\"npm\"") && labels.contains(&wanted)
            })
    }
}

/// The versions a packument lists.
fn versions(packument: &Value) -> Vec<String> {
    packument["versions"]
        .as_object()
        .map(|versions| versions.keys().cloned().collect())
        .unwrap_or_default()
}

/// The demo-left version installed in `project`.
fn installed(project: &std::path::Path) -> Result<String> {
    let manifest = project.join("node_modules").join(LEFT).join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let manifest: Value = serde_json::from_str(&text)?;
    Ok(manifest["version"].as_str().unwrap_or_default().to_owned())
}

/// A package-lock.json pinning demo-left [`YOUNG`] at pmcache's URL.
fn lockfile_pinning_young(registry: &str) -> Result<String> {
    let tarball = packages()?.tarball(LEFT, YOUNG)?;
    let lockfile = serde_json::json!({
        "name": "policy-app",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": true,
        "packages": {
            "": {"name": "policy-app", "version": "1.0.0", "dependencies": {LEFT: YOUNG}},
            format!("node_modules/{LEFT}"): {
                "version": YOUNG,
                "resolved": format!("{registry}{}", tarball.registry_path()),
                "integrity": tarball.integrity,
            },
        },
    });
    Ok(lockfile.to_string())
}

/// With `min_release_age = "1d"`, a version published now is in neither packument (`latest`
/// moves back to the version before it); npm, pnpm and yarn resolve that version; `npm ci`
/// from a lockfile pinning the young version fails with pmcache's reason printed; the refusal
/// is counted.
#[test]
fn a_version_younger_than_the_minimum_age_is_hidden_from_every_npm_client() -> Result<()> {
    let case = Case::young(&[("PMCACHE_NPM_POLICY_MIN_RELEASE_AGE", "1d")])?;
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let packument = case.left_packument(accept)?;
        let listed = versions(&packument);
        ensure!(
            !listed.iter().any(|v| v == YOUNG) && listed.iter().any(|v| v == PREVIOUS),
            "{accept}: lists {listed:?}"
        );
        ensure!(
            packument["dist-tags"]["latest"] == PREVIOUS,
            "{accept}: dist-tags {}",
            packument["dist-tags"]
        );
        ensure!(
            packument["time"].get(YOUNG).is_none(),
            "{accept}: time still names {YOUNG}"
        );
    }

    let npm = case.sandbox("npm")?;
    let project = case.left_project("npm", "*", None)?;
    npm.npm(&project, &["install"])?
        .ensure_success("npm install")?;
    ensure!(
        installed(&project)? == PREVIOUS,
        "npm installed {}",
        installed(&project)?
    );
    let pnpm = case.sandbox("pnpm")?;
    let project = case.left_project("pnpm", "*", None)?;
    pnpm.pnpm_install(&project)?
        .ensure_success("pnpm install")?;
    ensure!(
        installed(&project)? == PREVIOUS,
        "pnpm installed {}",
        installed(&project)?
    );
    let yarn = case.sandbox("yarn")?;
    let project = case.left_project("yarn", "*", None)?;
    yarn.yarn_install(&project)?
        .ensure_success("yarn install")?;
    ensure!(
        installed(&project)? == PREVIOUS,
        "yarn installed {}",
        installed(&project)?
    );

    let pinned = case.sandbox("pinned")?;
    let lockfile = lockfile_pinning_young(&case.registry())?;
    let project = case.left_project("pinned", YOUNG, Some(&lockfile))?;
    let run = pinned
        .npm(&project, &["ci"])?
        .ensure_failure("npm ci of a young version")?;
    let reason = format!("pmcache policy: npm:{LEFT}@{YOUNG} was published");
    ensure!(
        run.output.contains(&reason) && run.output.contains("min_release_age is 1d"),
        "npm did not print the policy's reason:\n{}",
        run.output
    );
    ensure!(
        case.refusals("min_release_age")? >= 1.0,
        "no min_release_age refusal counted"
    );
    Ok(())
}

/// With `min_release_age = "5s"`, the young version is hidden at first and refused as a
/// tarball, then shows up once it has come of age, without a restart and although nothing
/// else changed upstream.
#[test]
fn a_hidden_version_shows_up_once_it_comes_of_age() -> Result<()> {
    let case = Case::young(&[
        ("PMCACHE_NPM_POLICY_MIN_RELEASE_AGE", "5s"),
        // Fresh for an hour: only its hidden version's coming of age makes it change.
        ("PMCACHE_NPM_METADATA_TTL", "1h"),
    ])?;
    let listed = versions(&case.left_packument("application/json")?);
    ensure!(
        !listed.iter().any(|v| v == YOUNG),
        "lists {listed:?} at once"
    );
    let refused = case.left_tarball(YOUNG)?;
    ensure!(
        refused.status == 403 && refused.text().contains("min_release_age is 5s"),
        "young tarball: {}",
        refused.describe()
    );
    wait_until(
        Duration::from_secs(30),
        "the young version to come of age",
        || {
            let listed = versions(&case.left_packument("application/json")?);
            Ok(listed.iter().any(|v| v == YOUNG))
        },
    )?;
    let packument = case.left_packument("application/json")?;
    ensure!(
        packument["dist-tags"]["latest"] == YOUNG,
        "dist-tags {}",
        packument["dist-tags"]
    );
    let served = case.left_tarball(YOUNG)?;
    ensure!(
        served.status == 200,
        "mature tarball: {}",
        served.describe()
    );
    Ok(())
}

/// `deny` of one version and of a whole package, and `allow_only`: hidden or refused on both
/// paths with the rule named; a deny added after the tarball was cached refuses the cached copy
/// and the stored packument is made again without it.
#[test]
fn deny_and_allow_only_apply_to_documents_and_cached_tarballs() -> Result<()> {
    let mut case = Case::npm(NpmUpstream::start()?, &[("PMCACHE_NPM_METADATA_TTL", "1h")])?;
    let sandbox = case.sandbox("cached")?;
    let project = case.left_project("cached", "*", None)?;
    sandbox
        .npm(&project, &["install"])?
        .ensure_success("npm install")?;
    ensure!(
        installed(&project)? == YOUNG,
        "installed {}",
        installed(&project)?
    );

    case.restart_with(&[("PMCACHE_NPM_POLICY_DENY", &format!("[\"{LEFT}@{YOUNG}\"]"))])?;
    let refused = case.left_tarball(YOUNG)?;
    ensure!(
        refused.status == 403
            && refused
                .text()
                .contains(&format!("npm:{LEFT}@{YOUNG} is denied")),
        "cached, then denied: {}",
        refused.describe()
    );
    let packument = case.left_packument("application/json")?;
    ensure!(
        !versions(&packument).iter().any(|v| v == YOUNG)
            && packument["dist-tags"]["latest"] == PREVIOUS,
        "the stored packument still offers {YOUNG}: {:?} {}",
        versions(&packument),
        packument["dist-tags"]
    );
    let older = case.left_tarball(PREVIOUS)?;
    ensure!(older.status == 200, "{PREVIOUS}: {}", older.describe());

    // The section's list replaces the earlier one (and `[policy] deny`) for npm.
    case.restart_with(&[("PMCACHE_NPM_POLICY_DENY", &format!("[\"{LEFT}\"]"))])?;
    let url = format!("{}{LEFT}", case.registry());
    let whole = http::get(&url)?;
    ensure!(
        whole.status == 403 && whole.text().contains(&format!("npm:{LEFT} is denied")),
        "a denied package: {}",
        whole.describe()
    );
    let tarball = case.left_tarball(PREVIOUS)?;
    ensure!(
        tarball.status == 403,
        "a denied package's tarball: {}",
        tarball.describe()
    );
    let manifest = http::get(&format!("{url}/{PREVIOUS}"))?;
    ensure!(
        manifest.status == 403 && manifest.text().contains("is denied"),
        "a denied package's version document: {}",
        manifest.describe()
    );
    ensure!(case.refusals("deny")? >= 3.0, "deny refusals not counted");

    case.restart_with(&[
        ("PMCACHE_NPM_POLICY_DENY", "[]"),
        ("PMCACHE_NPM_POLICY_ALLOW_ONLY", "[\"@demo/*\"]"),
    ])?;
    let outside = http::get(&format!("{}{LEFT}", case.registry()))?;
    ensure!(
        outside.status == 403 && outside.text().contains("allow_only"),
        "outside allow_only: {}",
        outside.describe()
    );
    let inside = http::get(&format!("{}@demo%2fscoped", case.registry()))?;
    ensure!(
        inside.status == 200,
        "inside allow_only: {}",
        inside.describe()
    );
    ensure!(
        case.refusals("allow_only")? >= 1.0,
        "allow_only refusal not counted"
    );
    Ok(())
}

/// A version without a publish time is hidden while the age rule is on under
/// `unknown_release_time = "deny"` (the default), and shown under `"allow"`.
#[test]
fn versions_without_a_publish_time_follow_unknown_release_time() -> Result<()> {
    let upstream = NpmUpstream::start()?;
    upstream.retime(LEFT, PREVIOUS, None);
    let mut case = Case::npm(
        upstream,
        &[
            ("PMCACHE_NPM_METADATA_TTL", "0s"),
            ("PMCACHE_NPM_POLICY_MIN_RELEASE_AGE", "1d"),
        ],
    )?;
    let listed = versions(&case.left_packument("application/json")?);
    ensure!(
        !listed.iter().any(|v| v == PREVIOUS) && listed.iter().any(|v| v == YOUNG),
        "under deny: {listed:?}"
    );
    let refused = case.left_tarball(PREVIOUS)?;
    ensure!(
        refused.status == 403 && refused.text().contains("unknown_release_time"),
        "{}",
        refused.describe()
    );
    case.restart_with(&[("PMCACHE_NPM_POLICY_UNKNOWN_RELEASE_TIME", "allow")])?;
    let listed = versions(&case.left_packument("application/json")?);
    ensure!(
        listed.iter().any(|v| v == PREVIOUS),
        "under allow: {listed:?}"
    );
    ensure!(
        case.left_tarball(PREVIOUS)?.status == 200,
        "tarball under allow"
    );
    Ok(())
}

mod pypi {
    //! The same with pip and uv against the PyPI fixture (PEP 691 JSON pages with PEP 700
    //! `upload-time`).

    use std::time::SystemTime;

    use anyhow::{Context, Result, ensure};

    use crate::support::dists::{LIB_1_0, LIB_1_1};
    use crate::support::http;
    use crate::support::pip::Venv;
    use crate::support::pypi_upstream::{PageFormat, PypiUpstream, Server};
    use crate::support::uv::Uv;

    type Case = crate::support::case::Case<PypiUpstream>;

    /// The installed demo_lib version, as the package says.
    fn demo_lib_version(venv: &Venv) -> Result<String> {
        venv.python("import demo_lib; print(demo_lib.VERSION)")
    }

    /// The fixture with demo-lib 1.1.0's wheel uploaded just now (once pmcache has started),
    /// and pmcache with `settings`.
    fn young(settings: &[(&str, &str)]) -> Result<Case> {
        let mut all = vec![("PMCACHE_PYPI_METADATA_TTL", "0s")];
        all.extend_from_slice(settings);
        let case = Case::new(PypiUpstream::start(PageFormat::Json)?)?.serve_pypi(&all)?;
        let now = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        case.upstream.retime(LIB_1_1, Some(&now));
        Ok(case)
    }

    /// The file URL pmcache's JSON page gives `filename`, or None when it lists no such file.
    fn file_url(case: &Case, project: &str, filename: &str) -> Result<Option<String>> {
        let url = format!("{}{project}/", case.index_url());
        let page = http::get_with(&url, &[("accept", "application/vnd.pypi.simple.v1+json")])?;
        ensure!(page.status == 200, "GET {url}: {}", page.describe());
        let page: serde_json::Value = serde_json::from_slice(&page.body)?;
        let files = page["files"].as_array().context("no files")?;
        Ok(files
            .iter()
            .find(|file| file["filename"] == filename)
            .and_then(|file| file["url"].as_str())
            .map(|path| format!("{}{path}", case.pmcache().base_url())))
    }

    /// With `min_release_age = "1d"`, a wheel uploaded now is on neither page (JSON, with its
    /// version gone from `versions`, nor HTML); pip and uv install the release before it; pip
    /// given the young wheel's URL (as a lockfile with URLs pins it) fails with the reason.
    #[test]
    fn a_file_uploaded_now_is_hidden_from_pip_and_uv() -> Result<()> {
        let case = young(&[("PMCACHE_PYPI_POLICY_MIN_RELEASE_AGE", "1d")])?;
        // Its URL, as advertised before the rule: a lockfile written elsewhere names it.
        let url = format!("{}demo-lib/", case.index_url());
        let json = http::get_with(&url, &[("accept", "application/vnd.pypi.simple.v1+json")])?;
        let page: serde_json::Value = serde_json::from_slice(&json.body)?;
        let listed: Vec<&str> = page["files"]
            .as_array()
            .context("no files")?
            .iter()
            .filter_map(|file| file["filename"].as_str())
            .collect();
        ensure!(
            listed.contains(&LIB_1_0) && !listed.contains(&LIB_1_1),
            "JSON page lists {listed:?}"
        );
        ensure!(
            !page["versions"]
                .as_array()
                .context("no versions")?
                .iter()
                .any(|v| v == "1.1.0"),
            "versions still name 1.1.0: {}",
            page["versions"]
        );
        let html = http::get_with(&url, &[("accept", "text/html")])?;
        ensure!(
            html.status == 200 && !html.text().contains(LIB_1_1) && html.text().contains(LIB_1_0),
            "HTML page: {}",
            html.describe()
        );
        ensure!(
            file_url(&case, "demo-lib", LIB_1_1)?.is_none(),
            "JSON lists the young wheel"
        );

        let venv = Venv::create(&case.path("pip"))?;
        venv.install(&case.index_url(), &["demo-lib"])?
            .ensure_success("pip install demo-lib")?;
        ensure!(
            demo_lib_version(&venv)? == "1.0.0",
            "pip installed {}",
            demo_lib_version(&venv)?
        );

        let uv = Uv::create(&case.path("uv"), None, &case.trap)?;
        let uv_venv = uv.venv("venv")?;
        uv.pip_install(&uv_venv, &case.index_url(), &["demo-lib"])?
            .ensure_success("uv pip install demo-lib")?;
        let version = std::process::Command::new(uv_venv.join("bin/python"))
            .args(["-c", "import demo_lib; print(demo_lib.VERSION)"])
            .output()?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        ensure!(version == "1.0.0", "uv installed {version}");

        // The young wheel by its pmcache URL: refused with the reason, which pip prints.
        let young = format!(
            "{}/pypi/files/{}/{LIB_1_1}",
            case.pmcache().base_url(),
            young_file_id(&case)?
        );
        let refused = http::get(&young)?;
        ensure!(
            refused.status == 403 && refused.text().contains("min_release_age is 1d"),
            "young wheel: {}",
            refused.describe()
        );
        let pinned = Venv::create(&case.path("pinned"))?;
        let run = pinned
            .pip(&["install", "--no-deps", &young])?
            .ensure_failure("pip install of the young wheel's URL")?;
        ensure!(
            run.output
                .contains("pmcache policy: pypi:demo-lib@1.1.0 was published"),
            "pip did not print the reason:\n{}",
            run.output
        );
        Ok(())
    }

    /// The versions pmcache's JSON page for demo-lib lists, or the page's status when it is
    /// refused.
    fn lib_versions(case: &Case) -> Result<Result<Vec<String>, u16>> {
        let url = format!("{}demo-lib/", case.index_url());
        let page = http::get_with(&url, &[("accept", "application/vnd.pypi.simple.v1+json")])?;
        if page.status != 200 {
            return Ok(Err(page.status));
        }
        let page: serde_json::Value = serde_json::from_slice(&page.body)?;
        let versions = page["versions"].as_array().context("no versions")?;
        Ok(Ok(versions
            .iter()
            .filter_map(|version| version.as_str().map(str::to_owned))
            .collect()))
    }

    /// GET of demo-lib 1.1.0's wheel by its pmcache URL.
    fn young_wheel(case: &Case) -> Result<http::Response> {
        http::get(&format!(
            "{}/pypi/files/{}/{LIB_1_1}",
            case.pmcache().base_url(),
            young_file_id(case)?
        ))
    }

    /// With `min_release_age = "5s"` and pages fresh for an hour, the young wheel is hidden
    /// and refused, then listed and served once it has come of age, without a restart.
    #[test]
    fn a_hidden_file_shows_up_once_it_comes_of_age() -> Result<()> {
        let case = young(&[
            ("PMCACHE_PYPI_METADATA_TTL", "1h"),
            ("PMCACHE_PYPI_POLICY_MIN_RELEASE_AGE", "5s"),
        ])?;
        ensure!(
            lib_versions(&case)? == Ok(vec!["1.0.0".to_owned()]),
            "at once: {:?}",
            lib_versions(&case)?
        );
        let refused = young_wheel(&case)?;
        ensure!(refused.status == 403, "young wheel: {}", refused.describe());
        crate::support::wait_until(
            std::time::Duration::from_secs(30),
            "the young wheel to come of age",
            || Ok(lib_versions(&case)? == Ok(vec!["1.0.0".to_owned(), "1.1.0".to_owned()])),
        )?;
        let served = young_wheel(&case)?;
        ensure!(served.status == 200, "mature wheel: {}", served.describe());
        Ok(())
    }

    /// `deny` of a version added after pip installed (and pmcache stored) it refuses the stored
    /// wheel and hides it; `deny` of the project in another spelling refuses its page before
    /// the upstream is asked; `allow_only` without it does the same; a file without an
    /// `upload-time` is hidden under `unknown_release_time = "deny"` and listed under `allow`.
    #[test]
    fn deny_allow_only_and_unknown_upload_times_apply_to_pages_and_stored_files() -> Result<()> {
        let upstream = PypiUpstream::start(PageFormat::Json)?;
        let mut case = Case::new(upstream)?.serve_pypi(&[("PMCACHE_PYPI_METADATA_TTL", "1h")])?;
        let venv = Venv::create(&case.path("before"))?;
        venv.install(&case.index_url(), &["demo-lib"])?
            .ensure_success("pip install demo-lib before the deny")?;
        ensure!(
            demo_lib_version(&venv)? == "1.1.0",
            "installed {}",
            demo_lib_version(&venv)?
        );

        case.restart_with(&[("PMCACHE_PYPI_POLICY_DENY", "[\"demo-lib@1.1.0\"]")])?;
        let refused = young_wheel(&case)?;
        ensure!(
            refused.status == 403 && refused.text().contains("pypi:demo-lib@1.1.0 is denied"),
            "stored, then denied: {}",
            refused.describe()
        );
        ensure!(
            lib_versions(&case)? == Ok(vec!["1.0.0".to_owned()]),
            "the stored page still lists 1.1.0: {:?}",
            lib_versions(&case)?
        );
        let after = Venv::create(&case.path("after"))?;
        after
            .install(&case.index_url(), &["demo-lib"])?
            .ensure_success("pip install demo-lib with 1.1.0 denied")?;
        ensure!(
            demo_lib_version(&after)? == "1.0.0",
            "installed {}",
            demo_lib_version(&after)?
        );

        case.restart_with(&[("PMCACHE_PYPI_POLICY_DENY", "[\"Demo_Lib\"]")])?;
        let mark = case.upstream.mark();
        ensure!(
            lib_versions(&case)? == Err(403),
            "a denied project's page is served"
        );
        let denied = Venv::create(&case.path("denied"))?;
        let run = denied
            .install(&case.index_url(), &["demo-lib"])?
            .ensure_failure("pip install of a denied project")?;
        // pip reads a refused project page as "no such project" and prints no reason.
        ensure!(
            run.output
                .contains("No matching distribution found for demo-lib"),
            "pip:\n{}",
            run.output
        );
        let page = http::get(&format!("{}demo-lib/", case.index_url()))?;
        ensure!(
            page.text()
                .contains("pmcache policy: pypi:demo-lib is denied"),
            "the page's 403: {}",
            page.describe()
        );
        case.restart_with(&[
            ("PMCACHE_PYPI_POLICY_DENY", "[]"),
            ("PMCACHE_PYPI_POLICY_ALLOW_ONLY", "[\"demo-app\"]"),
        ])?;
        ensure!(
            lib_versions(&case)? == Err(403),
            "a project outside allow_only is served"
        );
        let asked = case.upstream.requests_per_path_since(mark, Server::Index);
        ensure!(
            !asked
                .keys()
                .any(|path| path.contains("demo-lib") || path.contains("demo_lib")),
            "the upstream was asked for a refused project: {asked:?}"
        );

        case.upstream.retime(LIB_1_1, None);
        case.restart_with(&[
            ("PMCACHE_PYPI_POLICY_ALLOW_ONLY", "[]"),
            ("PMCACHE_PYPI_POLICY_MIN_RELEASE_AGE", "1d"),
            ("PMCACHE_PYPI_METADATA_TTL", "0s"),
        ])?;
        ensure!(
            lib_versions(&case)? == Ok(vec!["1.0.0".to_owned()]),
            "a file without upload-time under deny: {:?}",
            lib_versions(&case)?
        );
        let refused = young_wheel(&case)?;
        ensure!(
            refused.status == 403 && refused.text().contains("unknown_release_time"),
            "{}",
            refused.describe()
        );
        case.restart_with(&[("PMCACHE_PYPI_POLICY_UNKNOWN_RELEASE_TIME", "allow")])?;
        ensure!(
            lib_versions(&case)? == Ok(vec!["1.0.0".to_owned(), "1.1.0".to_owned()]),
            "a file without upload-time under allow: {:?}",
            lib_versions(&case)?
        );
        Ok(())
    }

    /// The id in pmcache's URL of demo-lib 1.1.0's wheel: the file is advertised though hidden.
    fn young_file_id(case: &Case) -> Result<String> {
        let upstream_url = case.upstream.file_url(LIB_1_1)?;
        let url = url::Url::parse(&upstream_url)?;
        Ok(pmcache_pypi::rewrite::file_id(&url))
    }
}
