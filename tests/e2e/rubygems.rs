//! RubyGems end-to-end tests: real `gem` and `bundle` through pmcache against the fixture gem
//! server, plus HTTP-level checks of what newer clients rely on (Debian's are older). The
//! `fixture_*` tests point the clients straight at the fixture, without pmcache, to show that the
//! fixture speaks the protocol the way the clients expect. Every client runs in a sandbox whose
//! only way off loopback is an egress trap, so a test also proves that nothing reached a public
//! host.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;

use crate::support::gem::{GemfileSource, Project, Sandbox};
use crate::support::http;
use crate::support::pmcache::{self};
use crate::support::rubygems_gems::{
    APP, BAD, BASE, HELD_BASE, NATIVE, NATIVE_PLATFORM, PRE, gems,
};
use crate::support::rubygems_upstream::{Fault, Kind, Logged, RubygemsUpstream, etag_of};
use crate::support::sha256_hex;

/// Asks Ruby which app, base and native build got loaded.
const PROBE_SCRIPT: &str = "require \"proxfix_app\"; require \"proxfix_native\"; \
     puts [ProxfixApp::VERSION, ProxfixApp::BASE_VERSION, ProxfixNative::PLATFORM].join(\" \")";
/// What [`PROBE_SCRIPT`] prints for the gems published at the start.
fn installed_at_start() -> String {
    format!("0.1.0 1.1.0 {NATIVE_PLATFORM}")
}

/// One test's world: the fixture gem server, the egress trap and, for most tests, pmcache in
/// front of the server.
type Case = crate::support::case::Case<RubygemsUpstream>;

impl Case {
    /// The fixture server and the trap, no pmcache: clients talk to the fixture directly.
    fn start() -> Result<Self> {
        Case::rubygems_fixture()
    }

    /// As [`Case::start`], with pmcache in front of the fixture, index files fresh for `ttl`,
    /// and the other frontends off.
    fn through_pmcache(ttl: &str) -> Result<Self> {
        Case::rubygems(ttl)
    }

    /// The gem source clients get: pmcache's `/rubygems/` when it runs, else the fixture.
    fn source(&self) -> String {
        match self.started() {
            Some(pmcache) => format!("{}/rubygems/", pmcache.base_url()),
            None => self.upstream.base_url(),
        }
    }

    /// pmcache's URL for `path` below `/rubygems/`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.source())
    }

    /// The statuses pmcache logged for requests of `path` (below `/rubygems/`), in order.
    fn answers(&self, path: &str) -> Result<Vec<u16>> {
        Ok(self.pmcache().statuses(&format!("/rubygems/{path}")))
    }

    /// A client sandbox in its own subdirectory.
    fn sandbox(&self, name: &str) -> Result<Sandbox> {
        Sandbox::create(&self.path(name).join("client"), &self.trap)
    }

    /// A project whose Gemfile asks for the app and the native gem from `source`.
    fn project(&self, name: &str, source: GemfileSource<'_>) -> Result<Project> {
        Project::create(
            &self.path(name).join("project"),
            source,
            &[(APP, &[]), (NATIVE, &[])],
        )
    }

    /// The names whose `info` was requested after `mark`, in order.
    fn info_requests_since(&self, mark: usize) -> Vec<String> {
        self.upstream
            .requests_since(mark)
            .into_iter()
            .filter_map(|logged| match logged.kind {
                Kind::Info(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    /// The requests for `versions` after `mark`.
    fn versions_requests_since(&self, mark: usize) -> Vec<Logged> {
        self.upstream
            .requests_since(mark)
            .into_iter()
            .filter(|logged| logged.kind == Kind::Versions)
            .collect()
    }
}

/// The cached `.gem` of `full_name` under `gem_dir/cache` has the fixture's sha256.
pub(crate) fn ensure_cached_gem(gem_dir: &Path, full_name: &str) -> Result<()> {
    let expected = &gems()?.gem(full_name)?.sha256;
    let path = gem_dir.join("cache").join(format!("{full_name}.gem"));
    let bytes = std::fs::read(&path)?;
    ensure!(
        &sha256_hex(&bytes) == expected,
        "{} does not have the published sha256",
        path.display()
    );
    Ok(())
}

/// `gem install` from the case's source of the app (and so its dependency), the native gem (its
/// platform build) and, with `--pre`, the prerelease; checks what Ruby loads and the sha256 of
/// every `.gem` RubyGems cached. Returns the full names installed.
fn gem_install_everything(case: &Case, sandbox: &Sandbox) -> Result<Vec<&'static str>> {
    let source = case.source();
    for (args, what) in [
        (&[APP][..], "gem install proxfix_app"),
        (&[NATIVE], "gem install proxfix_native"),
        (&["--pre", PRE], "gem install --pre proxfix_pre"),
    ] {
        sandbox.gem_install(&source, args)?.ensure_success(what)?;
    }
    let loaded = sandbox.ruby(&format!(
        "{PROBE_SCRIPT}; require \"proxfix_pre\"; puts ProxfixPre::VERSION"
    ))?;
    ensure!(
        loaded == format!("{}\n2.0.0.pre1", installed_at_start()),
        "unexpected gems loaded: {loaded:?}"
    );
    let installed = [PROJECT_GEMS.as_slice(), &["proxfix_pre-2.0.0.pre1"]].concat();
    for full_name in &installed {
        ensure_cached_gem(&sandbox.gem_home(), full_name)?;
    }
    Ok(installed)
}

#[test]
fn fixture_gem_install_resolves_dependencies_platforms_and_prereleases() -> Result<()> {
    let case = Case::start()?;
    let sandbox = case.sandbox("gem")?;
    gem_install_everything(&case, &sandbox)?;
    // RubyGems 3.3 probes the source with `HEAD /` and, finding it, stays on the compact index.
    ensure!(
        case.upstream.count(&Kind::Root) >= 1,
        "gem install did not probe the source root"
    );
    let legacy = case
        .upstream
        .requests_since(0)
        .into_iter()
        .filter(|logged| matches!(logged.kind, Kind::LegacyIndex(_)))
        .count();
    ensure!(legacy == 0, "gem install fell back to the legacy index");
    case.ensure_no_egress()
}

#[test]
fn fixture_bundle_install_revalidates_and_picks_up_a_release() -> Result<()> {
    let case = Case::start()?;
    let sandbox = case.sandbox("bundle")?;
    let source = case.source();
    let project = case.project("bundle", GemfileSource::Direct(&source))?;

    // Cold: the whole `versions`, then `info` and `.gem` files.
    let mark = case.upstream.mark();
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install (cold)")?;
    let cold = case.versions_requests_since(mark);
    ensure!(
        !cold.is_empty()
            && cold
                .iter()
                .all(|logged| logged.range.is_none() && logged.if_none_match.is_none()),
        "the cold install should fetch versions whole: {cold:?}"
    );
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&[]))?;
    ensure!(
        loaded == installed_at_start(),
        "unexpected gems loaded: {loaded:?}"
    );

    // Warm compact index cache, fresh install path: one revalidation answered 304.
    let fresh_path = sandbox.dir("bundle-2");
    let fresh_path = fresh_path.to_str().context("sandbox path is not UTF-8")?;
    let fresh = [("BUNDLE_PATH", fresh_path)];
    let mark = case.upstream.mark();
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&fresh))?
        .ensure_success("bundle install (warm)")?;
    let warm = case.versions_requests_since(mark);
    let etag = etag_of(&case.upstream.versions());
    ensure!(
        !warm.is_empty()
            && warm.iter().all(|logged| {
                logged.range.is_some()
                    && logged.if_none_match.as_deref() == Some(etag.as_str())
                    && logged.status.as_u16() == 304
            }),
        "the warm install should revalidate versions with Range and If-None-Match {etag}: {warm:?}"
    );
    // Every cached `info` file still has the MD5 that `versions` lists.
    ensure!(
        case.info_requests_since(mark).is_empty(),
        "the warm install should not refetch info files"
    );

    // A release: `versions` grows, and `bundle update` finds the new base (the app asks for
    // `~> 1.0`), refetching only the `info` whose MD5 changed.
    case.upstream.publish(HELD_BASE)?;
    let mark = case.upstream.mark();
    sandbox
        .bundle(&project.dir, &["update", BASE], &project.env(&fresh))?
        .ensure_success("bundle update proxfix-base")?;
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&fresh))?;
    ensure!(
        loaded == format!("0.1.0 1.2.0 {NATIVE_PLATFORM}"),
        "bundle update did not pick up {HELD_BASE}: {loaded:?}"
    );
    let refetched = case.info_requests_since(mark);
    ensure!(
        !refetched.is_empty() && refetched.iter().all(|name| name == BASE),
        "bundle update should refetch info/{BASE} alone, not {refetched:?}"
    );
    ensure!(
        case.upstream
            .count_since(mark, &Kind::Gem(format!("{HELD_BASE}.gem")))
            == 1,
        "bundle update should download {HELD_BASE}.gem once"
    );
    ensure!(
        project.lockfile()?.contains("proxfix-base (1.2.0)"),
        "Gemfile.lock does not record proxfix-base 1.2.0:\n{}",
        project.lockfile()?
    );
    case.ensure_no_egress()
}

/// The `.gem` files the app, its dependency and the native gem come as.
const PROJECT_GEMS: [&str; 3] = [
    "proxfix_app-0.1.0",
    "proxfix-base-1.1.0",
    "proxfix_native-1.0.0-x86_64-linux",
];

/// How long tests with a short TTL wait for it to pass: whole seconds count, so half a second
/// more than the TTL.
fn past(ttl_seconds: u64) -> Duration {
    Duration::from_millis(ttl_seconds * 1000 + 500)
}

/// The sha256 of every `.gem` in `full_names`.
fn gem_digests(full_names: &[&str]) -> Result<Vec<String>> {
    full_names
        .iter()
        .map(|full_name| Ok(gems()?.gem(full_name)?.sha256.clone()))
        .collect()
}

#[test]
fn gem_install_through_pmcache_resolves_dependencies_platforms_and_prereleases() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("gem")?;
    let source = case.source();
    let installed = gem_install_everything(&case, &sandbox)?;
    let digests = gem_digests(&installed)?;
    let digests: Vec<&str> = digests.iter().map(String::as_str).collect();
    pmcache::ensure_stored(&case.data_dir(), &digests)?;
    ensure!(
        case.answers("")? == [200, 200, 200],
        "every gem install should find the compact index by its HEAD / probe: {:?}",
        case.answers("")?
    );

    // A second machine installs from the cache: no .gem leaves the upstream again.
    let mark = case.upstream.mark();
    let second = case.sandbox("gem-2")?;
    second
        .gem_install(&source, &[APP])?
        .ensure_success("gem install proxfix_app (warm)")?;
    ensure!(
        case.upstream.gem_requests_since(mark) == 0,
        "a warm gem install fetched .gem files upstream:\n{}",
        case.upstream.request_log()
    );

    // The legacy indexes, through the real client: `gem sources --add` checks specs.4.8.gz,
    // `gem search -r` reads latest_specs.4.8.gz.
    second
        .gem(&[
            "sources",
            "--clear-all",
            "--add",
            &source,
            "--remove",
            "https://rubygems.org/",
        ])?
        .ensure_success("gem sources --add")?;
    let search = second
        .gem(&["search", "--remote", "proxfix"])?
        .ensure_success("gem search --remote")?;
    ensure!(
        search.stdout.contains("proxfix_app (0.1.0)")
            && search.stdout.contains("proxfix-base (1.1.0)"),
        "gem search did not list the fixture gems:\n{}",
        search.output
    );
    case.ensure_no_egress()
}

#[test]
fn bundle_install_through_pmcache_as_source_then_warm_fetches_no_gems() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("bundle")?;
    let source = case.source();
    let project = case.project("bundle", GemfileSource::Direct(&source))?;

    sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install (cold)")?;
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&[]))?;
    ensure!(
        loaded == installed_at_start(),
        "unexpected gems loaded: {loaded:?}"
    );
    ensure!(
        project.lockfile()?.contains(&format!("remote: {source}")),
        "Gemfile.lock should name pmcache as remote:\n{}",
        project.lockfile()?
    );
    ensure_warm_install_fetches_nothing(&case, &sandbox, &project)?;
    case.ensure_no_egress()
}

#[test]
fn bundle_install_through_pmcache_as_rubygems_org_mirror() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let sandbox = case.sandbox("mirror")?;
    let source = case.source();
    let project = case.project("mirror", GemfileSource::Mirror(&source))?;

    sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install through the mirror")?;
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&[]))?;
    ensure!(
        loaded == installed_at_start(),
        "unexpected gems loaded: {loaded:?}"
    );
    // The project still names rubygems.org: the mirror is the machine's business.
    ensure!(
        project
            .lockfile()?
            .contains("remote: https://rubygems.org/"),
        "Gemfile.lock should keep rubygems.org as remote:\n{}",
        project.lockfile()?
    );
    ensure!(
        case.answers("versions")? == [200],
        "Bundler should have asked pmcache for versions once: {:?}",
        case.answers("versions")?
    );
    ensure_warm_install_fetches_nothing(&case, &sandbox, &project)?;
    case.ensure_no_egress()
}

/// A second `bundle install` into a fresh install path with Bundler's compact index cache warm:
/// `versions` is revalidated (Range + If-None-Match, answered 304 by pmcache), no `info` is
/// asked for, and every `.gem` comes from pmcache's store.
fn ensure_warm_install_fetches_nothing(
    case: &Case,
    sandbox: &Sandbox,
    project: &Project,
) -> Result<()> {
    let fresh_path = sandbox.dir("bundle-warm");
    let fresh_path = fresh_path.to_str().context("sandbox path is not UTF-8")?;
    let fresh = [("BUNDLE_PATH", fresh_path)];
    let before = case.answers("versions")?.len();
    let mark = case.upstream.mark();
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&fresh))?
        .ensure_success("bundle install (warm)")?;
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&fresh))?;
    ensure!(
        loaded == installed_at_start(),
        "unexpected gems loaded: {loaded:?}"
    );
    let warm = case.answers("versions")?.split_off(before);
    ensure!(
        warm == [304],
        "the warm install should revalidate versions once and get a 304, got {warm:?}"
    );
    ensure!(
        case.upstream.requests_since(mark).is_empty(),
        "a warm install within the TTL should not reach the upstream at all:\n{}",
        case.upstream.request_log()
    );
    for full_name in PROJECT_GEMS {
        ensure!(
            case.answers(&format!("gems/{full_name}.gem"))?.len() == 2,
            "{full_name}.gem should have been served twice"
        );
    }
    Ok(())
}

#[test]
fn bundle_update_through_pmcache_sees_a_release_once_the_ttl_passed() -> Result<()> {
    const TTL: u64 = 2;
    let case = Case::through_pmcache(&format!("{TTL}s"))?;
    let sandbox = case.sandbox("update")?;
    let source = case.source();
    let project = case.project("update", GemfileSource::Mirror(&source))?;
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install")?;

    case.upstream.publish(HELD_BASE)?;
    std::thread::sleep(past(TTL));
    let mark = case.upstream.mark();
    sandbox
        .bundle(&project.dir, &["update", BASE], &project.env(&[]))?
        .ensure_success("bundle update proxfix-base")?;
    let loaded = sandbox.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&[]))?;
    ensure!(
        loaded == format!("0.1.0 1.2.0 {NATIVE_PLATFORM}"),
        "bundle update did not pick up {HELD_BASE}: {loaded:?}"
    );
    // Bundler appended the new tail of versions (206) and of info/proxfix-base, and checked
    // each against the MD5 entity tag.
    ensure!(
        case.answers("versions")?.last() == Some(&206),
        "versions should have been appended to with a 206: {:?}",
        case.answers("versions")?
    );
    ensure!(
        case.answers(&format!("info/{BASE}"))?.last() == Some(&206),
        "info/{BASE} should have been appended to with a 206: {:?}",
        case.answers(&format!("info/{BASE}"))?
    );
    ensure!(
        case.upstream
            .count_since(mark, &Kind::Gem(format!("{HELD_BASE}.gem")))
            == 1,
        "pmcache should fetch {HELD_BASE}.gem upstream once"
    );
    ensure!(
        project.lockfile()?.contains("proxfix-base (1.2.0)"),
        "Gemfile.lock does not record proxfix-base 1.2.0:\n{}",
        project.lockfile()?
    );
    case.ensure_no_egress()
}

#[test]
fn installs_through_pmcache_work_with_the_upstream_stopped() -> Result<()> {
    // A zero TTL: every index request tries the upstream first.
    let case = Case::through_pmcache("0s")?;
    let source = case.source();
    let warm_gem = case.sandbox("warm-gem")?;
    warm_gem
        .gem_install(&source, &[APP])?
        .ensure_success("gem install (warming)")?;
    let warm_bundle = case.sandbox("warm-bundle")?;
    let project = case.project("warm-bundle", GemfileSource::Mirror(&source))?;
    warm_bundle
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install (warming)")?;

    case.upstream.stop();
    let mark = case.upstream.mark();
    let cold_gem = case.sandbox("cold-gem")?;
    cold_gem
        .gem_install(&source, &[APP])?
        .ensure_success("gem install with the upstream stopped")?;
    let loaded = cold_gem.ruby("require \"proxfix_app\"; puts ProxfixApp::BASE_VERSION")?;
    ensure!(loaded == "1.1.0", "unexpected base loaded: {loaded:?}");
    // A machine with nothing cached at all, Bundler's compact index cache included.
    let cold_bundle = case.sandbox("cold-bundle")?;
    let project = case.project("cold-bundle", GemfileSource::Mirror(&source))?;
    cold_bundle
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install with the upstream stopped")?;
    let loaded = cold_bundle.bundle_exec_ruby(&project.dir, PROBE_SCRIPT, &project.env(&[]))?;
    ensure!(
        loaded == installed_at_start(),
        "unexpected gems loaded: {loaded:?}"
    );
    ensure!(
        case.upstream.requests_since(mark).is_empty(),
        "the stopped upstream saw requests"
    );
    let served = case.pmcache().cache_results("/rubygems/versions", 200);
    ensure!(
        served.iter().any(|cache| cache == "stale"),
        "versions should have been served stale; served {served:?}"
    );
    // A gem the stale index does not list may just be newer: not a 404 while the upstream is
    // away (clients would take it as "no such gem").
    let unknown = http::get(&case.url("gems/proxfix_app-9.9.9.gem"))?;
    ensure!(
        unknown.status == 503 && unknown.header("retry-after").is_some(),
        "{}",
        unknown.describe()
    );
    case.ensure_no_egress()
}

#[test]
fn a_gem_whose_bytes_do_not_match_its_checksum_is_refused_and_not_stored() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    let full_name = format!("{BAD}-1.0.0");
    let gem = gems()?.gem(&full_name)?;
    let path = format!("gems/{full_name}.gem");
    case.upstream.set_fault(&path, Fault::Corrupt);
    let corrupted = sha256_hex(&RubygemsUpstream::corrupted(&gem.bytes));

    http::ensure_failed_download(&case.url(&path), "a corrupted .gem")?;
    let sandbox = case.sandbox("bad")?;
    sandbox
        .gem_install(&case.source(), &[BAD])?
        .ensure_failure("gem install of a corrupted gem")?;
    // RubyGems keeps whatever a download that looked complete brought; a refused gem must not
    // look complete (Ruby's Net::HTTP takes a body cut short of its Content-Length as whole).
    let cached = sandbox
        .gem_home()
        .join("cache")
        .join(format!("{full_name}.gem"));
    ensure!(
        !cached.exists(),
        "RubyGems cached a refused download: {}",
        cached.display()
    );
    pmcache::wait_for_empty_tmp(&case.data_dir())?;
    pmcache::ensure_not_stored(&case.data_dir(), &[&corrupted, &gem.sha256])?;

    // Once the upstream serves the published bytes, they are fetched, verified and stored.
    case.upstream.clear_fault(&path);
    sandbox
        .gem_install(&case.source(), &[BAD])?
        .ensure_success("gem install once the upstream is fixed")?;
    ensure_cached_gem(&sandbox.gem_home(), &full_name)?;
    pmcache::ensure_stored(&case.data_dir(), &[&gem.sha256])?;
    case.ensure_no_egress()
}

/// `Repr-Digest: sha-256=:<base64>:` and `Digest: sha-256=<base64>` of `body`.
fn digest_headers(body: &[u8]) -> (String, String) {
    use sha2::Digest as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body));
    (format!("sha-256=:{encoded}:"), format!("sha-256={encoded}"))
}

/// The headers every compact index answer carries, for the whole file `body`.
fn ensure_compact_headers(response: &http::Response, body: &[u8], what: &str) -> Result<()> {
    let (repr_digest, digest) = digest_headers(body);
    ensure!(
        response.header("etag") == Some(etag_of(body).as_str())
            && response.header("repr-digest") == Some(repr_digest.as_str())
            && response.header("digest") == Some(digest.as_str())
            // Ranges apply to the identity body only.
            && (response.header("accept-ranges") == Some("bytes"))
                == response.header("content-encoding").is_none()
            && response.header("content-type") == Some("text/plain; charset=utf-8"),
        "{what}: wrong compact index headers: {}",
        response.describe()
    );
    Ok(())
}

#[test]
fn compact_index_answers_etags_digests_ranges_and_304s() -> Result<()> {
    const TTL: u64 = 2;
    let case = Case::through_pmcache(&format!("{TTL}s"))?;
    let versions = case.upstream.versions();
    let versions_url = case.url("versions");

    // Probes: old RubyGems asks HEAD /, new RubyGems HEAD /versions.
    let root = http::send("HEAD", &case.url(""), &[], b"")?;
    ensure!(root.status == 200, "HEAD /: {}", root.describe());
    let head = http::send("HEAD", &versions_url, &[], b"")?;
    ensure!(
        head.status == 200 && head.body.is_empty(),
        "HEAD /versions: {}",
        head.describe()
    );
    ensure_compact_headers(&head, &versions, "HEAD /versions")?;

    // Whole, verbatim.
    let whole = http::get(&versions_url)?;
    ensure!(
        whole.is_complete_ok() && whole.body == versions,
        "GET /versions: {}",
        whole.describe()
    );
    ensure_compact_headers(&whole, &versions, "GET /versions")?;
    // gzip when accepted and no range is asked for; entity tag and digests still describe the
    // identity body, which is what Bundler checks after Net::HTTP decoded it.
    let gzipped = http::get_with(&versions_url, &[("accept-encoding", "gzip")])?;
    ensure!(
        gzipped.is_complete_ok()
            && gzipped.header("content-encoding") == Some("gzip")
            && crate::support::gunzip(&gzipped.body)? == versions,
        "GET /versions with gzip: {}",
        gzipped.describe()
    );
    ensure_compact_headers(&gzipped, &versions, "gzip GET /versions")?;

    // Bundler's warm request: the last byte, If-None-Match. Unchanged → 304.
    let tail = format!("bytes={}-", versions.len() - 1);
    let etag = etag_of(&versions);
    let unchanged = http::get_with(&versions_url, &[("range", &tail), ("if-none-match", &etag)])?;
    ensure!(
        unchanged.status == 304 && unchanged.body.is_empty(),
        "{}",
        unchanged.describe()
    );

    // A range is answered with identity bytes, even when gzip is acceptable.
    let ranged = http::get_with(
        &versions_url,
        &[
            ("range", &tail),
            ("accept-encoding", "gzip"),
            ("if-none-match", "\"other\""),
        ],
    )?;
    ensure!(
        ranged.status == 206
            && ranged.header("content-encoding").is_none()
            && ranged.header("content-range")
                == Some(format!("bytes {0}-{0}/{1}", versions.len() - 1, versions.len()).as_str())
            && ranged.body[..] == versions[versions.len() - 1..],
        "ranged GET /versions: {}",
        ranged.describe()
    );
    ensure_compact_headers(&ranged, &versions, "ranged GET /versions")?;

    // A range past the end (a client whose copy is longer, after a recompute): the whole file.
    let past_end = format!("bytes={}-", versions.len() + 100);
    let reset = http::get_with(&versions_url, &[("range", &past_end)])?;
    ensure!(
        reset.status == 200 && reset.body == versions && reset.header("content-range").is_none(),
        "GET /versions past the end: {}",
        reset.describe()
    );

    // A release: what Bundler 2.5+ does with the 206 — append the tail and check Repr-Digest
    // (Bundler up to 2.4 checks the MD5 entity tag instead).
    case.upstream.publish(HELD_BASE)?;
    std::thread::sleep(past(TTL));
    let appended = http::get_with(&versions_url, &[("range", &tail), ("if-none-match", &etag)])?;
    ensure!(
        appended.status == 206,
        "versions after a release: {}",
        appended.describe()
    );
    let mut local = versions.to_vec();
    local.extend_from_slice(&appended.body[1..]);
    ensure!(
        local == case.upstream.versions(),
        "the appended copy differs from upstream's"
    );
    ensure_compact_headers(&appended, &local, "versions after a release")?;

    // info: verbatim, same headers, and its MD5 is the one versions lists last for the gem.
    let info = http::get(&case.url(&format!("info/{BASE}")))?;
    let upstream_info = case.upstream.info(BASE).context("no upstream info")?;
    ensure!(
        info.is_complete_ok() && info.body == upstream_info,
        "{}",
        info.describe()
    );
    ensure_compact_headers(&info, &upstream_info, "GET /info")?;
    ensure!(
        info.text().contains("\n1.2.0 "),
        "info/{BASE} lacks the release: {}",
        info.text()
    );
    let names = http::get(&case.url("names"))?;
    ensure!(
        names.is_complete_ok() && names.body == case.upstream.names(),
        "{}",
        names.describe()
    );
    ensure_compact_headers(&names, &case.upstream.names(), "GET /names")?;
    Ok(())
}

#[test]
fn info_follows_the_versions_file_pmcache_serves() -> Result<()> {
    const TTL: u64 = 3;
    let case = Case::through_pmcache(&format!("{TTL}s"))?;
    let info_url = case.url(&format!("info/{BASE}"));
    let info_kind = Kind::Info(BASE.to_owned());
    http::get(&case.url("versions"))?;
    http::get(&info_url)?;

    // Both past their TTL; versions is refreshed and still lists the cached info's MD5, so that
    // copy is current: no upstream request for it.
    std::thread::sleep(past(TTL));
    http::get(&case.url("versions"))?;
    let mark = case.upstream.mark();
    let info = http::get(&info_url)?;
    ensure!(info.is_complete_ok(), "{}", info.describe());
    ensure!(
        case.upstream.count_since(mark, &info_kind) == 0,
        "an info file that versions vouches for was fetched again"
    );

    // A release while info is fresh by its own TTL (versions is stale, so the TTL decides, and
    // info is fetched anew): once versions is refreshed and lists a new MD5, info is fetched
    // again at once, and agrees with versions.
    std::thread::sleep(past(TTL));
    let mark = case.upstream.mark();
    http::get(&info_url)?;
    ensure!(
        case.upstream.count_since(mark, &info_kind) == 1,
        "info past its TTL, with no fresh versions to vouch for it, should be fetched again"
    );
    case.upstream.publish(HELD_BASE)?;
    let versions = http::get(&case.url("versions"))?;
    ensure!(
        versions.text().contains(&format!("{BASE} 1.2.0 ")),
        "versions was not refreshed: {}",
        versions.text()
    );
    let mark = case.upstream.mark();
    let info = http::get(&info_url)?;
    ensure!(
        case.upstream.count_since(mark, &info_kind) == 1,
        "info should have been fetched again once"
    );
    let again = http::get(&info_url)?;
    ensure!(
        case.upstream.count_since(mark, &info_kind) == 1 && again.body == info.body,
        "a current info file was fetched again"
    );
    let listed = versions
        .text()
        .lines()
        .rev()
        .filter(|line| line.starts_with(&format!("{BASE} ")))
        .find_map(|line| line.rsplit(' ').next())
        .map(|md5| format!("\"{md5}\""))
        .context("versions does not list the base gem")?;
    ensure!(
        info.header("etag") == Some(listed.as_str()) && etag_of(&info.body) == listed,
        "info/{BASE} ({}) disagrees with versions ({listed})",
        etag_of(&info.body)
    );

    // The new .gem resolves through the new info line and verifies.
    let gem = http::get(&case.url(&format!("gems/{HELD_BASE}.gem")))?;
    ensure!(
        gem.is_complete_ok() && sha256_hex(&gem.body) == gems()?.gem(HELD_BASE)?.sha256,
        "{}",
        gem.describe()
    );
    Ok(())
}

#[test]
fn legacy_indexes_gemspecs_and_refusals() -> Result<()> {
    let case = Case::through_pmcache("1m")?;
    for file in [
        "specs.4.8.gz",
        "latest_specs.4.8.gz",
        "prerelease_specs.4.8.gz",
    ] {
        let expected = case
            .upstream
            .legacy_index(file)
            .context("no fixture index")?;
        let response = http::get_with(&case.url(file), &[("accept-encoding", "gzip")])?;
        ensure!(
            response.is_complete_ok()
                && response.body == expected
                && response.header("content-encoding").is_none()
                && response.header("content-type") == Some("application/octet-stream"),
            "{file}: {}",
            response.describe()
        );
        // RubyGems sends its local copy's mtime, which is after the download.
        let modified = response
            .header("last-modified")
            .context("no Last-Modified")?;
        let again = http::get_with(&case.url(file), &[("if-modified-since", modified)])?;
        ensure!(
            again.status == 304 && again.body.is_empty(),
            "{file}: {}",
            again.describe()
        );
        let old = http::get_with(
            &case.url(file),
            &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
        )?;
        ensure!(
            old.status == 200 && old.body == expected,
            "{file}: {}",
            old.describe()
        );
    }
    let gemspec = format!("quick/Marshal.4.8/{}.gemspec.rz", PROJECT_GEMS[2]);
    let response = http::get(&case.url(&gemspec))?;
    ensure!(
        response.is_complete_ok()
            && response.body
                == case
                    .upstream
                    .gemspec_file(PROJECT_GEMS[2])
                    .context("no gemspec")?,
        "{gemspec}: {}",
        response.describe()
    );

    for (method, path, status) in [
        ("GET", "api/v1/dependencies?gems=proxfix_app", 404),
        ("GET", "info/no_such_gem", 404),
        ("GET", "gems/no_such_gem-1.0.0.gem", 404),
        ("GET", "info/%2e%2e", 400),
        ("GET", "gems/proxfix_app.gem", 400),
        ("GET", "nothing/here", 404),
        ("POST", "api/v1/gems", 405),
        ("DELETE", "api/v1/gems/yank", 405),
    ] {
        let response = http::send(method, &case.url(path), &[], b"")?;
        ensure!(
            response.status == status && response.text().lines().count() == 1,
            "{method} {path}: expected {status} with a one-line reason, got {}",
            response.describe()
        );
    }
    ensure!(
        case.upstream.count(&Kind::Dependencies) == 0,
        "the retired dependency API should be answered by pmcache itself"
    );
    Ok(())
}
