//! Packagist/Composer end-to-end tests: real `composer` through pmcache against a fixture
//! Composer repository and a fixture code host that answers zipball URLs with a 302, plus
//! HTTP-level checks of the rewritten metadata. The `fixture_*` tests drive `composer` straight
//! at the fixture, without pmcache, to show that the fixture speaks the protocol the way
//! Composer expects. Every client runs in a sandbox whose only way
//! off loopback is an egress trap, so a test also proves that nothing reached a public host.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::support::composer::{Project, Sandbox};
use crate::support::egress_trap::EgressTrap;
use crate::support::packagist_packages::{
    ADVISORY_CVE, ADVISORY_ID, APP, BASE, HELD_BASE, LOG_IMPLEMENTATION, LOGGER, Release, TOOL,
    VULN,
};
use crate::support::packagist_upstream::{Fault, Kind, Logged, PackagistUpstream, expand};
use crate::support::pmcache::{self};
use crate::support::{http, sha256_hex, wait_until};

/// The class constants that tell which versions PHP loads.
const APP_VERSION: &str = "Proxfix\\App\\Version::VERSION";
const APP_BASE_VERSION: &str = "Proxfix\\App\\Version::BASE_VERSION";
const BASE_VERSION: &str = "Proxfix\\Base\\Version::VERSION";
const TOOL_VERSION: &str = "Proxfix\\Tool\\Version::VERSION";

/// One test's world: the fixture Composer repository, the egress trap and, for most tests,
/// pmcache in front of it.
type Case = crate::support::case::Case<PackagistUpstream>;

impl Case {
    /// The fixture and the trap, no pmcache: Composer talks to the fixture directly.
    fn start() -> Result<Self> {
        Case::packagist_fixture()
    }

    /// As [`Case::start`], with pmcache in front of the fixture repository, metadata fresh for
    /// `ttl`, and the other frontends off.
    fn through_pmcache(ttl: &str) -> Result<Self> {
        Case::packagist(ttl, |_| Vec::new())
    }

    /// As [`Case::through_pmcache`], with the settings `extra` makes of the fixture.
    fn through_pmcache_with(
        ttl: &str,
        extra: impl FnOnce(&PackagistUpstream) -> Vec<(String, String)>,
    ) -> Result<Self> {
        Case::packagist(ttl, extra)
    }

    /// The repository URL clients get: pmcache's `/packagist` when it runs, else the fixture.
    fn repository(&self) -> String {
        match self.started() {
            Some(pmcache) => format!("{}/packagist", pmcache.base_url()),
            None => self.upstream.repo_url(),
        }
    }

    /// The repository's URL for `path` (below `/packagist/` on pmcache).
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.repository())
    }

    /// The statuses pmcache logged for `path` (below `/packagist/`), in order.
    fn answers(&self, path: &str) -> Result<Vec<u16>> {
        Ok(self.pmcache().statuses(&format!("/packagist/{path}")))
    }

    /// The upstream dist requests (zipball or codeload) after `mark`.
    fn dist_requests_since(&self, mark: usize) -> Vec<Logged> {
        self.requests_since(mark, |logged| {
            matches!(logged.kind, Kind::Zipball(_) | Kind::Codeload(_))
        })
    }

    /// A client sandbox in its own subdirectory.
    fn sandbox(&self, name: &str) -> Result<Sandbox> {
        Sandbox::create(&self.path(name).join("client"), &self.trap)
    }

    /// A project in its own subdirectory requiring `require` from the case's repository.
    fn project(&self, name: &str, require: &[(&str, &str)]) -> Result<Project> {
        Project::create(
            &self.path(name).join("project"),
            &self.repository(),
            require,
            None,
        )
    }

    /// The requests after `mark` for which `wanted` holds.
    fn requests_since(&self, mark: usize, wanted: impl Fn(&Logged) -> bool) -> Vec<Logged> {
        self.upstream
            .requests_since(mark)
            .into_iter()
            .filter(|logged| wanted(logged))
            .collect()
    }

    /// The kinds of every request after `mark`, in order.
    fn kinds_since(&self, mark: usize) -> Vec<Kind> {
        self.upstream
            .requests_since(mark)
            .into_iter()
            .map(|logged| logged.kind)
            .collect()
    }

    /// After `mark`, `release` was downloaded exactly once: its zipball URL answered with a 302,
    /// then the redirect followed to codeload.
    fn ensure_downloaded_once(&self, mark: usize, release: &Release) -> Result<()> {
        let zipball = Kind::Zipball(release.reference.clone());
        let codeload = Kind::Codeload(release.reference.clone());
        let statuses = |kind: &Kind| -> Vec<u16> {
            self.requests_since(mark, |logged| &logged.kind == kind)
                .iter()
                .map(|logged| logged.status.as_u16())
                .collect()
        };
        ensure!(
            statuses(&zipball) == [302] && statuses(&codeload) == [200],
            "{} should be fetched once through the code host's redirect:\n{}",
            release.label(),
            self.upstream.request_log()
        );
        Ok(())
    }
}

/// Whether `kind` is a metadata request (`packages.json` or a p2 file).
fn is_metadata(kind: &Kind) -> bool {
    matches!(kind, Kind::PackagesJson | Kind::P2(_) | Kind::P2Dev(_))
}

/// The `downloads` names of a notify-batch body.
fn notified(logged: &Logged) -> Result<Vec<String>> {
    let body: Value = serde_json::from_slice(&logged.body)
        .with_context(|| format!("notify body is not JSON: {}", logged.body_text()))?;
    body["downloads"]
        .as_array()
        .context("notify body lacks downloads")?
        .iter()
        .map(|download| {
            download["name"]
                .as_str()
                .map(str::to_owned)
                .context("a download without a name")
        })
        .collect()
}

#[test]
fn fixture_composer_install_follows_the_zipball_redirect_then_installs_from_the_lock() -> Result<()>
{
    let case = Case::start()?;
    let sandbox = case.sandbox("install")?;
    let project = case.project("install", &[(APP, "^1.0")])?;
    let packages = case.upstream.packages();
    let installed = [
        packages.release(APP, "1.0.0")?,
        packages.release(BASE, "1.1.0")?,
    ];

    // No lock: packages.json, the two p2 files, the two dists (each through a 302), notify.
    let mark = case.upstream.mark();
    sandbox
        .install(&project)?
        .ensure_success("composer install (no lock)")?;
    ensure!(sandbox.php_constant(&project, APP_VERSION)? == "1.0.0");
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    let metadata: Vec<Kind> = case
        .kinds_since(mark)
        .into_iter()
        .filter(is_metadata)
        .collect();
    ensure!(
        metadata
            == [
                Kind::PackagesJson,
                Kind::P2(APP.to_owned()),
                Kind::P2(BASE.to_owned())
            ],
        "unexpected metadata requests: {metadata:?}"
    );
    for release in installed {
        case.ensure_downloaded_once(mark, release)?;
        let locked = project.locked(&release.name)?;
        ensure!(locked["version"] == release.version.as_str());
        ensure!(locked["dist"]["url"] == case.upstream.dist_url(&release.name, &release.version)?);
        ensure!(locked["dist"]["reference"] == release.reference.as_str());
        ensure!(locked["dist"]["shasum"] == release.shasum());
        ensure!(locked["notification-url"] == case.upstream.url("downloads/"));
    }
    let notify = case.requests_since(mark, |logged| logged.kind == Kind::Notify);
    ensure!(notify.len() == 1 && notify[0].status == 201);
    ensure!(notified(&notify[0])? == [BASE, APP]);

    // From the lock, with an empty cache and no vendor dir: only the locked dist URLs (and the
    // notify POST); the repository's metadata is not read at all.
    sandbox.clear_cache()?;
    project.remove_vendor()?;
    let mark = case.upstream.mark();
    sandbox
        .install(&project)?
        .ensure_success("composer install (from the lock)")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    for release in installed {
        case.ensure_downloaded_once(mark, release)?;
    }
    let others = case.requests_since(mark, |logged| {
        !matches!(
            logged.kind,
            Kind::Zipball(_) | Kind::Codeload(_) | Kind::Notify
        )
    });
    ensure!(
        others.is_empty(),
        "installing from the lock asked for more than the dists: {others:?}"
    );
    case.ensure_no_egress()
}

#[test]
fn fixture_warm_composer_update_revalidates_then_picks_up_a_release() -> Result<()> {
    let case = Case::start()?;
    let sandbox = case.sandbox("update")?;
    let project = case.project("update", &[(APP, "^1.0")])?;
    sandbox
        .install(&project)?
        .ensure_success("composer install (cold)")?;

    // Warm: packages.json and both p2 files revalidated with the served dates, all 304.
    let mark = case.upstream.mark();
    sandbox
        .update(&project, &[])?
        .ensure_success("composer update (warm)")?;
    let warm = case.upstream.requests_since(mark);
    let expected_paths = [
        "packages.json",
        "p2/proxfix/app.json",
        "p2/proxfix/base.json",
    ];
    ensure!(
        warm.len() == expected_paths.len(),
        "a warm update should revalidate three files and download nothing: {warm:?}"
    );
    for (logged, path) in warm.iter().zip(expected_paths) {
        let served = case
            .upstream
            .document(path)
            .with_context(|| format!("{path} is not served"))?;
        ensure!(
            logged.target == format!("/repo/{path}")
                && logged.status == 304
                && logged.if_modified_since.as_deref() == Some(served.last_modified.as_str()),
            "{path} should be revalidated with If-Modified-Since {}: {logged}",
            served.last_modified
        );
    }

    // A release: base's p2 file changes (and its date), so it alone comes back with a 200.
    let before = case.upstream.p2(BASE).context("base has a p2 file")?;
    case.upstream.publish(BASE, HELD_BASE)?;
    let after = case.upstream.p2(BASE).context("base has a p2 file")?;
    ensure!(after.last_modified != before.last_modified);
    let mark = case.upstream.mark();
    sandbox
        .update(&project, &[])?
        .ensure_success("composer update (after the release)")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == HELD_BASE);
    let refetched = case.requests_since(mark, |logged| {
        is_metadata(&logged.kind) && logged.status == 200
    });
    ensure!(
        refetched.len() == 1
            && refetched[0].kind == Kind::P2(BASE.to_owned())
            && refetched[0].if_modified_since.as_deref() == Some(before.last_modified.as_str()),
        "only base's p2 file should come back whole: {refetched:?}"
    );
    let held = case.upstream.packages().release(BASE, HELD_BASE)?;
    case.ensure_downloaded_once(mark, held)?;
    let locked = project.locked(BASE)?;
    ensure!(locked["version"] == HELD_BASE && locked["dist"]["shasum"] == held.shasum());
    case.ensure_no_egress()
}

#[test]
fn fixture_composer_require_a_branch_reads_the_dev_file() -> Result<()> {
    let case = Case::start()?;
    let sandbox = case.sandbox("require")?;
    let project = case.project("require", &[(BASE, "1.0.0")])?;
    let packages = case.upstream.packages();

    // 1.0.0 is the last entry of base's minified p2 file, with `suggest: __unset`.
    sandbox
        .install(&project)?
        .ensure_success("composer install proxfix/base 1.0.0")?;
    ensure!(sandbox.php_constant(&project, BASE_VERSION)? == "1.0.0");
    let locked = project.locked(BASE)?;
    ensure!(
        locked.get("suggest").is_none() && locked["require"]["php"] == ">=7.2",
        "Composer should expand base 1.0.0 without 1.1.0's suggest: {locked:#}"
    );

    // A branch: Composer asks for the ~dev file as well as the tags file.
    for branch in ["dev-main", "dev-feature/x"] {
        let mark = case.upstream.mark();
        sandbox
            .require(&project, &format!("{TOOL}:{branch}"))?
            .ensure_success(&format!("composer require {TOOL}:{branch}"))?;
        ensure!(sandbox.php_constant(&project, TOOL_VERSION)? == branch);
        let release = packages.release(TOOL, branch)?;
        case.ensure_downloaded_once(mark, release)?;
        let locked = project.locked(TOOL)?;
        ensure!(
            locked["version"] == branch && locked["dist"]["reference"] == release.reference,
            "composer.lock should hold {TOOL} {branch}: {locked:#}"
        );
        ensure!(project.manifest()?["require"][TOOL] == branch);
    }
    ensure!(
        case.upstream.count(&Kind::P2Dev(TOOL.to_owned())) >= 1,
        "Composer never read {TOOL}~dev.json:\n{}",
        case.upstream.request_log()
    );
    case.ensure_no_egress()
}

#[test]
fn fixture_composer_audit_reports_the_advisory_through_the_api() -> Result<()> {
    let case = Case::start()?;
    let sandbox = case.sandbox("audit")?;
    let project = case.project("audit", &[(VULN, "^1.0")])?;
    sandbox
        .install(&project)?
        .ensure_success("composer install proxfix/vuln")?;

    // `composer audit` wants full advisories: one form POST to the API, nothing else (the root
    // file is fresh for 600 s).
    let mark = case.upstream.mark();
    let audit = sandbox
        .audit(&project)?
        .ensure_failure("composer audit with a vulnerable package")?;
    let report: Value = serde_json::from_str(&audit.stdout)
        .with_context(|| format!("composer audit --format=json:\n{}", audit.output))?;
    let advisories = &report["advisories"][VULN];
    ensure!(
        advisories[0]["advisoryId"] == ADVISORY_ID && advisories[0]["cve"] == ADVISORY_CVE,
        "composer audit should report {ADVISORY_ID}:\n{}",
        audit.output
    );
    let requests = case.upstream.requests_since(mark);
    ensure!(
        requests.len() == 1 && requests[0].kind == Kind::Advisories,
        "composer audit should make one advisories request: {requests:?}"
    );
    let post = &requests[0];
    ensure!(
        post.method == "POST"
            && post.status == 200
            && post.body_text() == "packages%5B0%5D=proxfix%2Fvuln"
            && post
                .headers
                .get("content-type")
                .is_some_and(|value| value == "application/x-www-form-urlencoded"),
        "unexpected advisories request: {post} {:?}",
        post.headers
    );
    case.ensure_no_egress()
}

/// How long tests with a short TTL wait for it to pass: whole seconds count.
fn past(ttl_seconds: u64) -> Duration {
    Duration::from_millis(ttl_seconds * 1000 + 500)
}

/// pmcache's URL of `release`'s dist.
fn pmcache_dist_url(case: &Case, release: &Release) -> String {
    case.url(&format!("dists/{}/{}.zip", release.name, release.reference))
}

#[test]
fn composer_install_through_pmcache_then_from_the_lock_with_an_empty_cache() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("install")?;
    let project = case.project("install", &[(APP, "^1.0")])?;
    let packages = case.upstream.packages();
    let installed = [
        packages.release(APP, "1.0.0")?,
        packages.release(BASE, "1.1.0")?,
    ];

    let mark = case.upstream.mark();
    sandbox
        .install(&project)?
        .ensure_success("composer install through pmcache (no lock)")?;
    ensure!(sandbox.php_constant(&project, APP_VERSION)? == "1.0.0");
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    for release in installed {
        // pmcache followed the code host's redirect, once.
        case.ensure_downloaded_once(mark, release)?;
        let locked = project.locked(&release.name)?;
        ensure!(
            locked["dist"]["url"] == pmcache_dist_url(&case, release)
                && locked["dist"]["shasum"] == release.shasum()
                && locked["notification-url"] == case.url("downloads/"),
            "composer.lock should send {} through pmcache: {locked:#}",
            release.label()
        );
        pmcache::ensure_stored(&case.data_dir(), &[&release.archive.sha256])?;
    }
    // The install statistics reach the upstream in the background.
    wait_until(
        Duration::from_secs(10),
        "notify-batch to be relayed",
        || Ok(case.upstream.count(&Kind::Notify) == 1),
    )?;

    // From the lock, with an empty Composer cache: every dist from pmcache's store.
    sandbox.clear_cache()?;
    project.remove_vendor()?;
    let mark = case.upstream.mark();
    sandbox
        .install(&project)?
        .ensure_success("composer install from the lock through pmcache")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    ensure!(
        case.dist_requests_since(mark).is_empty(),
        "a second install fetched dists upstream:\n{}",
        case.upstream.request_log()
    );
    case.ensure_no_egress()
}

#[test]
fn composer_install_from_a_lock_reaches_dists_a_cold_pmcache_never_listed() -> Result<()> {
    // A lock made through one pmcache, installed through another with an empty store: the
    // dist is found through the package's p2 file.
    let first = Case::through_pmcache("1m")?;
    let project = first.project("lock", &[(APP, "^1.0")])?;
    first
        .sandbox("lock")?
        .install(&project)?
        .ensure_success("composer install (making the lock)")?;
    let lock = std::fs::read_to_string(project.dir.join("composer.lock"))?;

    let second = Case::through_pmcache("1m")?;
    let project = second.project("cold", &[(APP, "^1.0")])?;
    // The same packages, so the same references; only pmcache's address differs.
    let lock = lock.replace(&first.repository(), &second.repository());
    std::fs::write(project.dir.join("composer.lock"), lock)?;
    let sandbox = second.sandbox("cold")?;
    sandbox
        .install(&project)?
        .ensure_success("composer install from the lock through a cold pmcache")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    second.ensure_no_egress()
}

#[test]
fn warm_composer_update_through_pmcache_revalidates_then_sees_a_release_after_the_ttl() -> Result<()>
{
    const TTL: u64 = 2;
    let case = Case::through_pmcache(&format!("{TTL}s"))?;
    let sandbox = case.sandbox("update")?;
    let project = case.project("update", &[(APP, "^1.0")])?;
    sandbox
        .install(&project)?
        .ensure_success("composer install")?;

    // Warm: Composer revalidates with If-Modified-Since and pmcache answers 304s.
    sandbox
        .update(&project, &[])?
        .ensure_success("composer update (warm)")?;
    for path in [
        "packages.json",
        "p2/proxfix/app.json",
        "p2/proxfix/base.json",
    ] {
        ensure!(
            case.answers(path)?.last() == Some(&304),
            "{path} should have been revalidated with a 304: {:?}",
            case.answers(path)?
        );
    }

    case.upstream.publish(BASE, HELD_BASE)?;
    std::thread::sleep(past(TTL));
    let mark = case.upstream.mark();
    sandbox
        .update(&project, &[])?
        .ensure_success("composer update (after the release)")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == HELD_BASE);
    let held = case.upstream.packages().release(BASE, HELD_BASE)?;
    case.ensure_downloaded_once(mark, held)?;
    ensure!(project.locked(BASE)?["version"] == HELD_BASE);
    case.ensure_no_egress()
}

#[test]
fn composer_require_through_pmcache_installs_branches_from_the_dev_file() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("require")?;
    let project = case.project("require", &[(BASE, "1.0.0")])?;
    let packages = case.upstream.packages();
    // 1.0.0 is the last entry of base's minified p2 file: it must still lack 1.1.0's suggest.
    sandbox
        .install(&project)?
        .ensure_success("composer install proxfix/base 1.0.0")?;
    ensure!(sandbox.php_constant(&project, BASE_VERSION)? == "1.0.0");
    ensure!(project.locked(BASE)?.get("suggest").is_none());

    for branch in ["dev-main", "dev-feature/x"] {
        sandbox
            .require(&project, &format!("{TOOL}:{branch}"))?
            .ensure_success(&format!("composer require {TOOL}:{branch}"))?;
        ensure!(sandbox.php_constant(&project, TOOL_VERSION)? == branch);
        let release = packages.release(TOOL, branch)?;
        let locked = project.locked(TOOL)?;
        ensure!(
            locked["dist"]["url"] == pmcache_dist_url(&case, release),
            "{TOOL} {branch} should come through pmcache: {locked:#}"
        );
    }
    ensure!(
        case.answers(&format!("p2/{TOOL}~dev.json"))?.contains(&200),
        "Composer never read {TOOL}~dev.json through pmcache"
    );
    case.ensure_no_egress()
}

#[test]
fn composer_audit_through_pmcache_reports_the_advisory() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("audit")?;
    let project = case.project("audit", &[(VULN, "^1.0")])?;
    sandbox
        .install(&project)?
        .ensure_success("composer install proxfix/vuln")?;
    let mark = case.upstream.mark();
    let audit = sandbox
        .audit(&project)?
        .ensure_failure("composer audit with a vulnerable package")?;
    let report: Value = serde_json::from_str(&audit.stdout)
        .with_context(|| format!("composer audit --format=json:\n{}", audit.output))?;
    ensure!(
        report["advisories"][VULN][0]["advisoryId"] == ADVISORY_ID,
        "composer audit should report {ADVISORY_ID}:\n{}",
        audit.output
    );
    let posts = case.requests_since(mark, |logged| logged.kind == Kind::Advisories);
    ensure!(
        posts.len() == 1
            && posts[0].method == "POST"
            && posts[0].body_text() == "packages%5B0%5D=proxfix%2Fvuln",
        "the advisories POST should be relayed with its form body: {posts:?}"
    );
    case.ensure_no_egress()
}

#[test]
fn composer_install_through_pmcache_works_with_the_upstream_stopped() -> Result<()> {
    // A zero TTL: every metadata request tries the upstream first.
    let case = Case::through_pmcache("0s")?;
    let warm = case.project("warm", &[(APP, "^1.0")])?;
    case.sandbox("warm")?
        .install(&warm)?
        .ensure_success("composer install (warming)")?;

    case.upstream.stop();
    // A new project without a lock, on a machine with an empty Composer cache.
    let sandbox = case.sandbox("cold")?;
    let project = case.project("cold", &[(APP, "^1.0")])?;
    sandbox
        .install(&project)?
        .ensure_success("composer install with the upstream stopped")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    let served = case
        .pmcache()
        .cache_results("/packagist/p2/proxfix/app.json", 200);
    ensure!(
        served.iter().any(|cache| cache == "stale"),
        "metadata should have been served stale; served {served:?}"
    );
    // A dist the stale metadata does not list may just be newer: not a 404 while the upstream
    // is away.
    let unknown =
        http::get(&case.url("dists/proxfix/app/0000000000000000000000000000000000000000.zip"))?;
    ensure!(
        matches!(unknown.status, 502 | 503) && unknown.header("retry-after").is_some(),
        "{}",
        unknown.describe()
    );
    // Statistics for a stopped upstream are still answered at once.
    let notify = http::send(
        "POST",
        &case.url("downloads/"),
        &[("content-type", "application/json")],
        br#"{"downloads":[]}"#,
    )?;
    ensure!(notify.status == 201, "{}", notify.describe());
    case.ensure_no_egress()
}

#[test]
fn a_dist_whose_bytes_change_for_its_reference_is_refused_and_the_pinned_bytes_kept() -> Result<()>
{
    let case = Case::through_pmcache("1m")?;
    let project = case.project("pin", &[(APP, "^1.0")])?;
    case.sandbox("pin")?
        .install(&project)?
        .ensure_success("composer install")?;
    let app = case.upstream.packages().release(APP, "1.0.0")?;
    ensure!(
        !app.shasum_published,
        "the test needs a dist without a shasum"
    );
    let regenerated = app.regenerated.as_ref().context("no regenerated archive")?;
    let dist_url = pmcache_dist_url(&case, app);

    // The code host regenerates the archive: clients keep getting the pinned bytes.
    case.upstream.set_dist_bytes_changed(APP, "1.0.0", true)?;
    let mark = case.upstream.mark();
    let sandbox = case.sandbox("again")?;
    let again = case.project("again", &[(APP, "^1.0")])?;
    std::fs::copy(
        project.dir.join("composer.lock"),
        again.dir.join("composer.lock"),
    )?;
    sandbox
        .install(&again)?
        .ensure_success("composer install from the lock")?;
    let served = http::get(&dist_url)?;
    ensure!(
        served.is_complete_ok() && sha256_hex(&served.body) == app.archive.sha256,
        "pmcache should serve the pinned archive: {}",
        served.describe()
    );
    ensure!(case.dist_requests_since(mark).is_empty());

    // The stored copy is lost: the refetch brings other bytes, which are refused.
    let pinned = &app.archive.sha256;
    let blob = case
        .data_dir()
        .join("blobs")
        .join(&pinned[..2])
        .join(&pinned[2..4])
        .join(pinned);
    std::fs::remove_file(&blob)?;
    http::ensure_failed_download(&dist_url, "a regenerated archive for a pinned reference")?;
    ensure!(!case.dist_requests_since(mark).is_empty());
    pmcache::wait_for_empty_tmp(&case.data_dir())?;
    pmcache::ensure_not_stored(&case.data_dir(), &[&regenerated.sha256, pinned])?;
    ensure!(
        case.pmcache()
            .events()
            .iter()
            .any(|event| event.mentions(pinned) && event.mentions(&regenerated.sha256)),
        "the refusal should name both digests"
    );

    // The pinned bytes are the only ones accepted: once the code host sends them again, they
    // are stored and served.
    case.upstream.set_dist_bytes_changed(APP, "1.0.0", false)?;
    let served = http::get(&dist_url)?;
    ensure!(
        served.is_complete_ok() && sha256_hex(&served.body) == *pinned,
        "{}",
        served.describe()
    );
    pmcache::ensure_stored(&case.data_dir(), &[pinned])?;
    Ok(())
}

#[test]
fn dists_on_hosts_outside_the_allow_list_are_never_fetched() -> Result<()> {
    let case = Case::through_pmcache_with("0s", |upstream| {
        let allowed = format!("[\"{}\"]", upstream.code_host_addr());
        vec![("PMCACHE_PACKAGIST_DIST_HOSTS".to_owned(), allowed)]
    })?;
    // Another loopback listener stands for any other host: it records whatever reaches it.
    let elsewhere = EgressTrap::start()?;
    let outside = format!("{}archive/tool.zip", elsewhere.proxy_url());
    case.upstream.set_dist_url(TOOL, "2.0.0", &outside)?;

    let p2 = http::get(&case.url(&format!("p2/{TOOL}.json")))?;
    ensure!(p2.is_complete_ok(), "{}", p2.describe());
    let document: Value = serde_json::from_slice(&p2.body)?;
    let versions = expand(
        document["packages"][TOOL]
            .as_array()
            .context("no versions")?,
    )?;
    let dist_url = versions
        .iter()
        .find(|version| version["version"] == "2.0.0")
        .and_then(|version| version["dist"]["url"].as_str())
        .context("no dist for 2.0.0")?
        .to_owned();
    ensure!(dist_url.starts_with(&case.repository()), "{dist_url}");
    let refused = http::get(&dist_url)?;
    ensure!(
        refused.status == 403 && refused.text().contains("dist_hosts"),
        "a dist outside the allow-list should be refused: {}",
        refused.describe()
    );
    let sandbox = case.sandbox("outside")?;
    let project = case.project("outside", &[(TOOL, "2.0.0")])?;
    sandbox
        .install(&project)?
        .ensure_failure("composer install of a dist outside the allow-list")?;
    ensure!(
        elsewhere.caught().is_empty(),
        "pmcache fetched a dist from outside the allow-list: {:?}",
        elsewhere.caught()
    );

    // Dists on the listed code host still come through.
    let base = case.upstream.packages().release(BASE, "1.1.0")?;
    http::get(&case.url(&format!("p2/{BASE}.json")))?;
    let served = http::get(&pmcache_dist_url(&case, base))?;
    ensure!(
        served.is_complete_ok() && sha256_hex(&served.body) == base.archive.sha256,
        "{}",
        served.describe()
    );
    case.ensure_no_egress()
}

#[test]
fn packages_json_and_p2_files_lead_back_to_pmcache() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let upstream_origin = case.upstream.repo_url();
    let upstream_origin = upstream_origin.trim_end_matches("/repo");

    let root = http::get(&case.url("packages.json"))?;
    ensure!(root.is_complete_ok(), "{}", root.describe());
    let document: Value = serde_json::from_slice(&root.body)?;
    let mut urls = Vec::new();
    collect_strings(&document, &mut urls);
    let ours = |path: &str| format!("{}/{path}", case.repository());
    for url in urls
        .iter()
        .filter(|text| text.starts_with("http") || text.starts_with('/'))
    {
        ensure!(
            url.starts_with(&ours("")) && !url.contains(upstream_origin),
            "packages.json still sends clients elsewhere: {url}"
        );
    }
    ensure!(document["metadata-url"] == ours("p2/%package%.json"));
    ensure!(document["notify-batch"] == ours("downloads/"));
    ensure!(document["security-advisories"]["api-url"] == ours("api/security-advisories/"));
    ensure!(
        document["search"]
            .as_str()
            .is_some_and(|s| s.starts_with(&ours("search.json?")))
    );
    ensure!(document.get("providers-url").is_none());
    // Composer's cache validator: the Last-Modified it got, sent back.
    let modified = root.header("last-modified").context("no Last-Modified")?;
    let again = http::get_with(
        &case.url("packages.json"),
        &[("if-modified-since", modified)],
    )?;
    ensure!(
        again.status == 304 && again.body.is_empty(),
        "{}",
        again.describe()
    );

    // p2: still minified, the same versions as upstream once expanded, only dist URLs changed.
    let served = http::get(&case.url(&format!("p2/{BASE}.json")))?;
    ensure!(served.is_complete_ok(), "{}", served.describe());
    let served: Value = serde_json::from_slice(&served.body)?;
    let original: Value =
        serde_json::from_slice(&case.upstream.p2(BASE).context("no base p2")?.body)?;
    ensure!(served["minified"] == "composer/2.0");
    let ours = expand(served["packages"][BASE].as_array().context("no versions")?)?;
    let theirs = expand(
        original["packages"][BASE]
            .as_array()
            .context("no versions")?,
    )?;
    ensure!(ours.len() == theirs.len());
    for (mut ours, mut theirs) in ours.into_iter().zip(theirs) {
        let version = theirs["version"].as_str().unwrap_or_default().to_owned();
        let release = case.upstream.packages().release(BASE, &version)?;
        ensure!(ours["dist"]["url"] == pmcache_dist_url(&case, release));
        for entry in [&mut ours, &mut theirs] {
            if let Some(dist) = entry.get_mut("dist").and_then(Value::as_object_mut) {
                dist.remove("url");
            }
        }
        ensure!(ours == theirs, "{version} changed beyond its dist URL");
    }

    // Unknown packages are a plain 404; relayed endpoints answer what the upstream does.
    let unknown = http::get(&case.url("p2/proxfix/nothing.json"))?;
    ensure!(unknown.status == 404, "{}", unknown.describe());
    let search = http::get(&case.url("search.json?q=proxfix&type="))?;
    ensure!(
        search.status == 200 && search.text().contains("proxfix/"),
        "{}",
        search.describe()
    );
    let advisories = http::get(&case.url("api/security-advisories/?packages[]=proxfix/vuln"))?;
    ensure!(
        advisories.status == 200 && advisories.text().contains(ADVISORY_ID),
        "{}",
        advisories.describe()
    );
    let refused = http::send("PUT", &case.url(&format!("p2/{BASE}.json")), &[], b"")?;
    ensure!(refused.status == 405, "{}", refused.describe());
    Ok(())
}

/// Every string in `value`, depth first.
fn collect_strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, into)),
        Value::Object(map) => map.values().for_each(|item| collect_strings(item, into)),
        _ => {}
    }
}

#[test]
fn a_dist_that_fails_its_published_shasum_is_refused_and_not_stored() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let base = case.upstream.packages().release(BASE, "1.1.0")?;
    ensure!(base.shasum_published, "the test needs a dist with a shasum");
    case.upstream
        .set_fault(&case.upstream.codeload_path(BASE, "1.1.0")?, Fault::Corrupt);
    http::get(&case.url(&format!("p2/{BASE}.json")))?;
    let dist_url = pmcache_dist_url(&case, base);
    http::ensure_failed_download(&dist_url, "a dist that fails its shasum")?;
    pmcache::wait_for_empty_tmp(&case.data_dir())?;
    let corrupted = sha256_hex(&PackagistUpstream::corrupted(&base.archive.bytes));
    pmcache::ensure_not_stored(&case.data_dir(), &[&corrupted, &base.archive.sha256])?;

    case.upstream
        .clear_fault(&case.upstream.codeload_path(BASE, "1.1.0")?);
    let served = http::get(&dist_url)?;
    ensure!(
        served.is_complete_ok() && sha256_hex(&served.body) == base.archive.sha256,
        "{}",
        served.describe()
    );
    pmcache::ensure_stored(&case.data_dir(), &[&base.archive.sha256])?;
    Ok(())
}

#[test]
fn a_virtual_package_resolves_through_pmcache_with_the_upstream_stopped() -> Result<()> {
    // A zero TTL: every metadata request tries the upstream first.
    let case = Case::through_pmcache("0s")?;
    let virtual_p2 = format!("p2/{LOG_IMPLEMENTATION}.json");
    // As with psr/log-implementation: one package needs the virtual name, another provides it.
    let require = [(LOGGER, "^1.0"), (BASE, "^1.1")];
    let warm = case.project("warm", &require)?;
    case.sandbox("warm")?
        .install(&warm)?
        .ensure_success("composer install (warming)")?;
    ensure!(
        case.answers(&virtual_p2)?.contains(&404),
        "Composer should have asked for the virtual package's p2 file: {:?}",
        case.answers(&virtual_p2)?
    );

    // The upstream's "no such package" is remembered: with the upstream stopped it is still a
    // 404 (Composer goes on with the packages that provide the name), never a 502.
    case.upstream.stop();
    let sandbox = case.sandbox("cold")?;
    let project = case.project("cold", &require)?;
    sandbox
        .install(&project)?
        .ensure_success("composer install with the upstream stopped")?;
    ensure!(sandbox.php_constant(&project, BASE_VERSION)? == "1.1.0");
    let answers = case.answers(&virtual_p2)?;
    ensure!(
        answers.len() >= 2 && answers.iter().all(|status| *status == 404),
        "the virtual package's p2 file should stay a 404: {answers:?}"
    );
    case.ensure_no_egress()
}

#[test]
fn unknown_packages_are_a_404_the_upstream_is_asked_for_once_a_minute() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let missing = "proxfix/missing";
    let mark = case.upstream.mark();
    for _ in 0..3 {
        let answer = http::get(&case.url(&format!("p2/{missing}.json")))?;
        ensure!(answer.status == 404, "{}", answer.describe());
    }
    let asked = case.requests_since(mark, |logged| logged.kind == Kind::P2(missing.to_owned()));
    ensure!(
        asked.len() == 1,
        "three 404s within the minute should cost one upstream request: {asked:?}"
    );
    Ok(())
}

#[test]
fn every_name_clients_give_pmcache_is_served_from_one_cached_copy() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let warm = case.project("warm", &[(APP, "^1.0")])?;
    case.sandbox("warm")?
        .install(&warm)?
        .ensure_success("composer install (warming)")?;

    // Another name for the same pmcache: no upstream request, URLs on that name.
    let mark = case.upstream.mark();
    let p2_path = format!("p2/{APP}.json");
    let other = http::send(
        "GET",
        &case.url(&p2_path),
        &[("host", "mirror.test:7878")],
        b"",
    )?;
    ensure!(other.is_complete_ok(), "{}", other.describe());
    let text = other.text();
    ensure!(
        text.contains("\"http://mirror.test:7878/packagist/dists/proxfix/app/")
            && !text.contains(".invalid")
            && !text.contains("127.0.0.1/packagist"),
        "dist URLs should name the host the client used: {text}"
    );
    ensure!(
        case.kinds_since(mark).is_empty(),
        "another Host should be served from the cached copy:\n{}",
        case.upstream.request_log()
    );

    // With the upstream stopped, a machine that knows pmcache as `localhost` installs from
    // the cache, its lock naming pmcache by that name.
    case.upstream.stop();
    let by_name = case.repository().replace("127.0.0.1", "localhost");
    ensure!(
        by_name != case.repository(),
        "pmcache should listen on 127.0.0.1"
    );
    let project = Project::create(
        &case.path("by-name").join("project"),
        &by_name,
        &[(APP, "^1.0")],
        None,
    )?;
    let sandbox = case.sandbox("by-name")?;
    sandbox
        .install(&project)?
        .ensure_success("composer install through another name, upstream stopped")?;
    ensure!(sandbox.php_constant(&project, APP_BASE_VERSION)? == "1.1.0");
    let locked = project.locked(APP)?;
    ensure!(
        locked["dist"]["url"]
            .as_str()
            .is_some_and(|url| url.starts_with(&format!("{by_name}/dists/"))),
        "{locked:#}"
    );
    case.ensure_no_egress()
}

/// Two hundred requests for a cached p2 file, each with a `Host` never seen before, cost no
/// upstream request, grow the store by less than 1 MB, and every answer's dist URLs name the
/// origin its request used; one origin's entity tag gets a 304 there and a full answer elsewhere.
#[test]
fn two_hundred_hosts_share_one_stored_p2_file() -> Result<()> {
    const ORIGINS: usize = 200;
    let case = Case::through_pmcache("1h")?;
    let name = [APP, BASE, LOGGER, LOG_IMPLEMENTATION, TOOL, VULN]
        .into_iter()
        .max_by_key(|name| case.upstream.p2(name).map_or(0, |p2| p2.body.len()))
        .context("no packages")?;
    let url = case.url(&format!("p2/{name}.json"));
    let warm = http::get(&url)?;
    ensure!(
        warm.is_complete_ok(),
        "warming GET {url}: {}",
        warm.describe()
    );
    let dists = dist_urls(&warm.body)?.len();
    ensure!(dists > 0, "{name} lists no dists");
    let port = case.pmcache().port()?.to_owned();

    let (size_before, mark) = (pmcache::data_size(&case.data_dir())?, case.upstream.mark());
    for index in 0..ORIGINS {
        let host = format!("h{index}.origins.test:{port}");
        let headers = [("host", host.as_str()), ("accept-encoding", "gzip")];
        let response = http::send("GET", &url, &headers, b"")?;
        ensure!(
            response.is_complete_ok(),
            "GET {url} with Host {host}: {}",
            response.describe()
        );
        let body = match response.header("content-encoding") {
            Some("gzip") => crate::support::gunzip(&response.body)?,
            _ => response.body.to_vec(),
        };
        let urls = dist_urls(&body)?;
        let wanted = format!("http://{host}/packagist/dists/");
        ensure!(
            urls.len() == dists && urls.iter().all(|url| url.starts_with(&wanted)),
            "Host {host} got dist URLs not all below {wanted}: {urls:?}"
        );
    }
    let grown = pmcache::data_size(&case.data_dir())?.saturating_sub(size_before);
    ensure!(
        case.kinds_since(mark).is_empty(),
        "{ORIGINS} new Hosts reached the upstream:\n{}",
        case.upstream.request_log()
    );
    ensure!(
        grown < 1_000_000,
        "{ORIGINS} new Hosts grew the store by {grown} bytes"
    );

    http::ensure_etag_per_origin(&url, &port)?;
    case.pmcache().ensure_no_server_errors()
}

/// Every `dist.url` of a (minified) p2 file.
fn dist_urls(body: &[u8]) -> Result<Vec<String>> {
    let document: Value = serde_json::from_slice(body).context("p2 file is no JSON")?;
    let packages = document["packages"].as_object().context("no packages")?;
    Ok(packages
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|version| version["dist"]["url"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn a_lock_newer_than_the_cached_metadata_makes_pmcache_look_again() -> Result<()> {
    let floor = Duration::from_secs(2);
    let case = Case::through_pmcache_with("1m", |_| {
        vec![("PMCACHE_UPSTREAM_REFETCH_FLOOR".to_owned(), "2s".to_owned())]
    })?;
    let p2 = http::get(&case.url(&format!("p2/{BASE}.json")))?;
    let fetched_by = std::time::SystemTime::now();
    ensure!(p2.is_complete_ok(), "{}", p2.describe());
    case.upstream.publish(BASE, HELD_BASE)?;
    let release = case.upstream.packages().release(BASE, HELD_BASE)?;
    let dist_url = pmcache_dist_url(&case, release);

    // A lock made elsewhere names the new release. Within the refetch floor of the cached copy,
    // pmcache does not ask again (made-up references must not reach the upstream at will)...
    let mark = case.upstream.mark();
    let early = http::get(&dist_url)?;
    ensure!(early.status == 404, "{}", early.describe());
    let base_p2 = |logged: &Logged| logged.kind == Kind::P2(BASE.to_owned());
    ensure!(case.requests_since(mark, base_p2).is_empty());

    // ...once the cached copy is older than that, it fetches the p2 file again, once.
    pmcache::wait_until_document_older_than(fetched_by, floor)?;
    let served = http::get(&dist_url)?;
    ensure!(
        served.is_complete_ok() && sha256_hex(&served.body) == release.archive.sha256,
        "{}",
        served.describe()
    );
    let refetched = case.requests_since(mark, base_p2);
    ensure!(refetched.len() == 1, "{refetched:?}");
    Ok(())
}

#[test]
fn dists_on_loopback_or_private_addresses_other_than_the_upstream_are_not_fetched() -> Result<()> {
    // 127.0.0.2 stands for a machine on pmcache's network: hostile metadata names it, by
    // address and by a name that resolves to loopback.
    let internal = EgressTrap::start_on("127.0.0.2")?;
    let by_address = format!("{}archive/tool.zip", internal.proxy_url());
    let by_name = format!(
        "http://localhost:{}/archive/base.zip",
        internal_port(&internal)?
    );
    let case = Case::through_pmcache("0s")?;
    case.upstream.set_dist_url(TOOL, "2.0.0", &by_address)?;
    case.upstream.set_dist_url(BASE, "1.1.0", &by_name)?;
    for (package, release) in [(TOOL, "2.0.0"), (BASE, "1.1.0")] {
        http::get(&case.url(&format!("p2/{package}.json")))?;
        let release = case.upstream.packages().release(package, release)?;
        let refused = http::get(&pmcache_dist_url(&case, release))?;
        ensure!(
            refused.status == 403 && refused.text().contains("allow_private_addresses"),
            "{}",
            refused.describe()
        );
    }
    ensure!(
        internal.caught().is_empty(),
        "pmcache connected to an internal address: {:?}",
        internal.caught()
    );

    // An operator can allow it.
    let open = Case::through_pmcache_with("0s", |_| {
        vec![(
            "PMCACHE_UPSTREAM_ALLOW_PRIVATE_ADDRESSES".to_owned(),
            "true".to_owned(),
        )]
    })?;
    open.upstream.set_dist_url(TOOL, "2.0.0", &by_address)?;
    http::get(&open.url(&format!("p2/{TOOL}.json")))?;
    let tool = open.upstream.packages().release(TOOL, "2.0.0")?;
    let relayed = http::get(&pmcache_dist_url(&open, tool))?;
    ensure!(relayed.status != 200, "the trap serves no archive");
    ensure!(
        internal.caught().len() == 1,
        "with allow_private_addresses the dist should be fetched: {:?}",
        internal.caught()
    );
    case.ensure_no_egress()
}

/// The port a trap listens on.
fn internal_port(trap: &EgressTrap) -> Result<u16> {
    let url = url::Url::parse(&trap.proxy_url())?;
    url.port().context("a trap URL has a port")
}
