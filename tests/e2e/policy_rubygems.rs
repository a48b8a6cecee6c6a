//! The supply-chain policy with real `gem` and `bundle` against the fixture gem server: a
//! minimum release age that hides a version published now from `/info` and `/versions` (judged
//! by the versions API's `created_at`, and shown once it has come of age, without a restart), a
//! lock pinning that version failing with the reason, `deny` of a version and of a whole gem
//! (also once its `.gem` is cached), `allow_only`, `unknown_release_time`, and Bundler following
//! an upstream release through the filtered index with its compact index cache in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use hyper::StatusCode;

use crate::support::gem::{GemfileSource, Project, Sandbox};
use crate::support::http;
use crate::support::rubygems_gems::{APP, BAD, BASE, HELD_BASE, PRE};
use crate::support::rubygems_upstream::{Kind, RubygemsUpstream, etag_of};
use crate::support::wait_until;

/// proxfix-base's held version, which the tests publish "now".
const YOUNG: &str = "1.2.0";
/// The version before it: what clients resolve while [`YOUNG`] is hidden.
const PREVIOUS: &str = "1.1.0";
/// What Ruby prints for the proxfix-base it loads.
const BASE_PROBE: &str = "require \"proxfix-base\"; puts ProxfixBase::VERSION";

type Case = crate::support::case::Case<RubygemsUpstream>;

/// The fixture with proxfix-base [`YOUNG`] published just now, and pmcache in front of it with
/// index files fresh for `ttl` and `settings`.
fn young_case(ttl: &str, settings: &[(&str, &str)]) -> Result<Case> {
    let case = Case::rubygems_with(ttl, settings)?;
    publish_now(&case)?;
    Ok(case)
}

/// Publishes proxfix-base [`YOUNG`] with the time now as its `created_at`.
fn publish_now(case: &Case) -> Result<()> {
    case.upstream.publish(HELD_BASE)?;
    case.upstream.retime(BASE, YOUNG, Some(&now()))
}

/// The time now as rubygems.org writes `created_at`: `2026-12-07T16:20:00.123Z`.
fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// pmcache's gem source.
fn source(case: &Case) -> String {
    format!("{}/rubygems/", case.pmcache().base_url())
}

fn sandbox(case: &Case, name: &str) -> Result<Sandbox> {
    Sandbox::create(&case.path(name).join("client"), &case.trap)
}

/// A project in its own subdirectory whose Gemfile asks pmcache for `gems`.
fn project(case: &Case, name: &str, gems: &[(&str, &[&str])]) -> Result<Project> {
    Project::create(
        &case.path(name).join("project"),
        GemfileSource::Direct(&source(case)),
        gems,
    )
}

/// GET of `path` below pmcache's `/rubygems/`.
fn get(case: &Case, path: &str) -> Result<http::Response> {
    http::get(&format!("{}{path}", source(case)))
}

/// The versions an `/info/NAME` pmcache serves lists (`VERSION` or `VERSION-PLATFORM`), after
/// checking that its entity tag is its MD5.
fn info_versions(case: &Case, name: &str) -> Result<Vec<String>> {
    let response = get(case, &format!("info/{name}"))?;
    ensure!(
        response.status == 200,
        "info/{name}: {} {}",
        response.status,
        response.text()
    );
    ensure!(
        response.header("etag") == Some(etag_of(&response.body).as_str()),
        "info/{name}: the ETag is not the MD5 of the body"
    );
    Ok(lines_after_separator(&response.text())
        .filter_map(|line| line.split_once(' ').map(|(version, _)| version.to_owned()))
        .collect())
}

fn lines_after_separator(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .skip_while(|line| *line != "---")
        .skip(1)
        .filter(|line| !line.is_empty())
}

/// What a reader of the `/versions` pmcache serves makes of `name`, as Bundler and RubyGems
/// read it: its versions (a `-VERSION` removes one) and its `/info` MD5 (the last one listed).
fn versions_view(versions: &str, name: &str) -> (Vec<String>, String) {
    let mut listed: Vec<String> = Vec::new();
    let mut md5 = String::new();
    for line in lines_after_separator(versions) {
        let mut fields = line.split(' ');
        if fields.next() != Some(name) {
            continue;
        }
        for version in fields.next().unwrap_or_default().split(',') {
            match version.strip_prefix('-') {
                Some(removed) => listed.retain(|known| known != removed),
                None => listed.push(version.to_owned()),
            }
        }
        md5 = fields.next().unwrap_or_default().to_owned();
    }
    (listed, md5)
}

/// Checks that pmcache's `/versions` agrees with its `/info/NAME`: the same versions, and the
/// MD5 of the served `/info`.
fn ensure_versions_agree(case: &Case, name: &str) -> Result<()> {
    let versions = get(case, "versions")?;
    ensure!(versions.status == 200, "versions: {}", versions.status);
    ensure!(
        versions.header("etag") == Some(etag_of(&versions.body).as_str()),
        "versions: the ETag is not the MD5 of the body"
    );
    let info = get(case, &format!("info/{name}"))?;
    let (mut listed, md5) = versions_view(&versions.text(), name);
    let mut served = info_versions(case, name)?;
    listed.sort();
    served.sort();
    ensure!(
        listed == served && format!("\"{md5}\"") == etag_of(&info.body),
        "/versions lists {name} {listed:?} with MD5 {md5}, /info serves {served:?} with {}",
        etag_of(&info.body)
    );
    Ok(())
}

/// The policy refusals of RubyGems requests counted for `rule`.
fn refusals(case: &Case, rule: &str) -> Result<f64> {
    let wanted = format!("rule=\"{rule}\"");
    case.pmcache()
        .metric_sum("pmcache_policy_refusals_total", |labels| {
            labels.contains("ecosystem=\"rubygems\"") && labels.contains(&wanted)
        })
}

/// The files of Bundler's compact index cache in `sandbox` named `name` (`versions`,
/// `proxfix-base`), wherever below its user home Bundler keeps them.
fn bundler_cached(sandbox: &Sandbox, name: &str) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, name: &str, found: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, name, found)?;
            } else if path.file_name().is_some_and(|file| file == name) {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(&sandbox.bundle_user_home(), name, &mut found)?;
    Ok(found)
}

/// Bundler's cached copy of `path` (`versions`, `info/proxfix-base`) is byte for byte what
/// pmcache serves.
fn ensure_bundler_has_served(case: &Case, sandbox: &Sandbox, path: &str) -> Result<()> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let cached = bundler_cached(sandbox, name)?;
    let [cached] = cached.as_slice() else {
        anyhow::bail!(
            "Bundler's cache holds {} copies of {path}: {cached:?}",
            cached.len()
        );
    };
    let served = get(case, path)?;
    let local = std::fs::read(cached)?;
    ensure!(
        local == served.body,
        "Bundler's {path} ({} bytes) is not the one pmcache serves ({} bytes):\n{}\n---- served ----\n{}",
        local.len(),
        served.body.len(),
        String::from_utf8_lossy(&local),
        served.text()
    );
    Ok(())
}

/// The `proxfix-base (VERSION)` spec line of a lockfile.
fn locked_base(project: &Project) -> Result<String> {
    let lockfile = project.lockfile()?;
    lockfile
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix(&format!("{BASE} ("))
                .and_then(|rest| rest.strip_suffix(')'))
                .map(str::to_owned)
        })
        .with_context(|| format!("the lockfile pins no {BASE}:\n{lockfile}"))
}

/// With `min_release_age = "1d"`, a version published now is gone from `/info` and from
/// `/versions` (whose line carries the MD5 of the `/info` served); `gem install` and
/// `bundle install` resolve the version before it; a lock pinning the young version (made
/// before the rule) fails `bundle install` (Bundler says the version is gone: it checks a lock
/// against the index before downloading); its `.gem` gets 403 with the reason; the refusals are
/// counted.
#[test]
fn a_version_younger_than_the_minimum_age_is_hidden_from_gem_and_bundler() -> Result<()> {
    let mut case = young_case("1h", &[])?;
    let pinned = project(&case, "pinned", &[(BASE, &[])])?;
    let pinning = sandbox(&case, "pinned")?;
    pinning
        .bundle(&pinned.dir, &["lock"], &pinned.env(&[]))?
        .ensure_success("bundle lock before the rule")?;
    ensure!(
        locked_base(&pinned)? == YOUNG,
        "the lock pins {}",
        locked_base(&pinned)?
    );

    case.restart_with(&[("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "1d")])?;
    let versions = info_versions(&case, BASE)?;
    ensure!(
        versions == ["1.0.0", PREVIOUS],
        "info/{BASE} lists {versions:?}"
    );
    ensure_versions_agree(&case, BASE)?;

    let installing = sandbox(&case, "gem")?;
    installing
        .gem_install(&source(&case), &[BASE])?
        .ensure_success("gem install proxfix-base")?;
    let loaded = installing.ruby(BASE_PROBE)?;
    ensure!(loaded == PREVIOUS, "gem install installed {loaded}");

    let fresh = project(&case, "fresh", &[(BASE, &[])])?;
    let bundling = sandbox(&case, "fresh")?;
    let run = bundling
        .bundle(&fresh.dir, &["install"], &fresh.env(&[]))?
        .ensure_success("bundle install")?;
    ensure!(
        locked_base(&fresh)? == PREVIOUS,
        "bundle install locked {}",
        locked_base(&fresh)?
    );
    ensure!(
        !run.output.to_lowercase().contains("mismatch"),
        "bundle install: {}",
        run.output
    );
    ensure_bundler_has_served(&case, &bundling, "versions")?;
    ensure_bundler_has_served(&case, &bundling, &format!("info/{BASE}"))?;

    // Bundler checks a lock against the index before it downloads anything: it names the
    // version it cannot find, and never asks for the .gem (whose answer has the reason).
    let refused = pinning
        .bundle(&pinned.dir, &["install"], &pinned.env(&[]))?
        .ensure_failure("bundle install of a lock pinning the young version")?;
    ensure!(
        refused
            .output
            .contains(&format!("locked to {BASE} ({YOUNG})")),
        "bundle install does not name the hidden version:\n{}",
        refused.output
    );
    let reason = format!("pmcache policy: rubygems:{BASE}@{YOUNG} was published");
    let gem = get(&case, &format!("gems/{HELD_BASE}.gem"))?;
    ensure!(
        gem.status == 403 && gem.text().contains(&reason),
        "the young .gem: {} {}",
        gem.status,
        gem.text()
    );
    ensure!(refusals(&case, "min_release_age")? >= 1.0);
    case.ensure_no_egress()
}

/// With `min_release_age = "5s"` and index files fresh for an hour, a version published now is
/// hidden, then shown once it has come of age, without a restart; `/versions` then lists it
/// with the upstream's MD5 again, and `bundle install` resolves it.
#[test]
fn a_young_gem_version_appears_once_it_comes_of_age() -> Result<()> {
    let case = Case::rubygems_with("1h", &[("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "5s")])?;
    publish_now(&case)?;
    let versions = info_versions(&case, BASE)?;
    ensure!(
        !versions.iter().any(|version| version == YOUNG),
        "info/{BASE} lists the young version at once: {versions:?}"
    );
    wait_until(Duration::from_secs(30), "the young version to show", || {
        Ok(info_versions(&case, BASE)?
            .iter()
            .any(|version| version == YOUNG))
    })?;
    ensure_versions_agree(&case, BASE)?;
    let served = get(&case, "versions")?;
    ensure!(
        served.body == case.upstream.versions(),
        "/versions still differs from the upstream's with nothing hidden"
    );
    let fresh = project(&case, "fresh", &[(BASE, &[])])?;
    sandbox(&case, "fresh")?
        .bundle(&fresh.dir, &["install"], &fresh.env(&[]))?
        .ensure_success("bundle install once of age")?;
    ensure!(
        locked_base(&fresh)? == YOUNG,
        "locked {}",
        locked_base(&fresh)?
    );
    case.ensure_no_egress()
}

/// `deny` of one version hides it (`gem install proxfix_app` takes the base before it); `deny`
/// of a whole gem answers its `/info` with 403 and the reason before asking the upstream, and
/// `gem install` and `bundle install` fail with it; a `deny` added after a `.gem` was cached
/// refuses the cached copy; `allow_only` refuses every other gem.
#[test]
fn deny_and_allow_only_refuse_gem_versions_and_whole_gems() -> Result<()> {
    let mut case = Case::rubygems_with("1h", &[])?;
    let early = sandbox(&case, "early")?;
    early
        .gem_install(&source(&case), &[BAD])?
        .ensure_success("gem install proxfix_bad before the rule")?;

    case.restart_with(&[(
        "PMCACHE_RUBYGEMS_POLICY_DENY",
        r#"["proxfix-base@1.1.0", "proxfix_pre", "proxfix_bad@1.0.0"]"#,
    )])?;
    let versions = info_versions(&case, BASE)?;
    ensure!(versions == ["1.0.0"], "info/{BASE} lists {versions:?}");
    ensure_versions_agree(&case, BASE)?;
    let installing = sandbox(&case, "app")?;
    installing
        .gem_install(&source(&case), &[APP])?
        .ensure_success("gem install proxfix_app")?;
    let loaded = installing.ruby("require \"proxfix_app\"; puts ProxfixApp::BASE_VERSION")?;
    ensure!(
        loaded == "1.0.0",
        "proxfix_app loaded proxfix-base {loaded}"
    );

    let mark = case.upstream.mark();
    let info = get(&case, &format!("info/{PRE}"))?;
    let reason = format!("pmcache policy: rubygems:{PRE} is denied");
    ensure!(
        info.status == 403 && info.text().contains(&reason),
        "info/{PRE}: {} {}",
        info.status,
        info.text()
    );
    ensure!(
        case.upstream.requests_since(mark).is_empty(),
        "a denied gem's /info was asked of the upstream"
    );
    let refused = sandbox(&case, "pre")?
        .gem_install(&source(&case), &["--pre", PRE])?
        .ensure_failure("gem install of a denied gem")?;
    ensure!(
        refused.output.contains(&reason),
        "gem install does not print the reason:\n{}",
        refused.output
    );
    let denied = project(&case, "denied", &[(PRE, &[])])?;
    let refused = sandbox(&case, "denied")?
        .bundle(&denied.dir, &["install"], &denied.env(&[]))?
        .ensure_failure("bundle install of a denied gem")?;
    ensure!(
        refused.output.contains(&reason),
        "bundle install does not print the reason:\n{}",
        refused.output
    );

    let cached = get(&case, &format!("gems/{BAD}-1.0.0.gem"))?;
    ensure!(
        cached.status == 403
            && cached
                .text()
                .contains(&format!("pmcache policy: rubygems:{BAD}@1.0.0 is denied")),
        "the cached .gem of a denied version: {} {}",
        cached.status,
        cached.text()
    );
    ensure!(refusals(&case, "deny")? >= 2.0);

    case.restart_with(&[
        ("PMCACHE_RUBYGEMS_POLICY_DENY", "[]"),
        ("PMCACHE_RUBYGEMS_POLICY_ALLOW_ONLY", r#"["proxfix_bad"]"#),
    ])?;
    let outside = get(&case, &format!("info/{BASE}"))?;
    ensure!(
        outside.status == 403
            && outside.text().contains(&format!(
                "pmcache policy: rubygems:{BASE} is not in allow_only"
            )),
        "info/{BASE} outside allow_only: {} {}",
        outside.status,
        outside.text()
    );
    ensure!(info_versions(&case, BAD)? == ["1.0.0"]);
    sandbox(&case, "allowed")?
        .gem_install(&source(&case), &[BAD])?
        .ensure_success("gem install of the allowed gem")?;
    case.ensure_no_egress()
}

/// A version the versions API gives no `created_at` is hidden under the age rule with
/// `unknown_release_time = "deny"` (the default), its `.gem` and gemspec refused, and shown
/// with `"allow"`.
#[test]
fn a_gem_version_without_a_publish_time_follows_unknown_release_time() -> Result<()> {
    let mut case = Case::rubygems_with("1h", &[("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "1d")])?;
    case.upstream.retime(BASE, PREVIOUS, None)?;
    let versions = info_versions(&case, BASE)?;
    ensure!(versions == ["1.0.0"], "info/{BASE} lists {versions:?}");
    ensure_versions_agree(&case, BASE)?;
    let gem = get(&case, &format!("gems/{BASE}-{PREVIOUS}.gem"))?;
    ensure!(
        gem.status == 403 && gem.text().contains("has no known publish time"),
        "the .gem without a publish time: {} {}",
        gem.status,
        gem.text()
    );
    // Its gemspec too: it is judged as the .gem its /info records.
    let gemspec = get(
        &case,
        &format!("quick/Marshal.4.8/{BASE}-{PREVIOUS}.gemspec.rz"),
    )?;
    ensure!(
        gemspec.status == 403 && gemspec.text().contains("has no known publish time"),
        "the gemspec without a publish time: {} {}",
        gemspec.status,
        gemspec.text()
    );
    ensure!(refusals(&case, "unknown_release_time")? >= 1.0);

    case.restart_with(&[("PMCACHE_RUBYGEMS_POLICY_UNKNOWN_RELEASE_TIME", "allow")])?;
    let versions = info_versions(&case, BASE)?;
    ensure!(
        versions == ["1.0.0", PREVIOUS],
        "info/{BASE} lists {versions:?}"
    );
    let installing = sandbox(&case, "gem")?;
    installing
        .gem_install(&source(&case), &[BASE])?
        .ensure_success("gem install proxfix-base")?;
    ensure!(installing.ruby(BASE_PROBE)? == PREVIOUS);
    case.ensure_no_egress()
}

/// The versions API failing (429, rubygems.org's rate limit, then 503) does not fail `/info`:
/// it is served with every version hidden for want of a publish time, and asked again a TTL
/// later; once the API answers, but without a time for one version (it lags the compact index),
/// only that one stays hidden, and it shows once its time is known, without a restart, with
/// `/versions` fresh and listing the served `/info` all along.
#[test]
fn the_versions_api_failing_or_lagging_hides_versions_only_until_the_next_try() -> Result<()> {
    let case = Case::rubygems_with("2s", &[("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "1d")])?;
    let api = Kind::VersionsApi(BASE.to_owned());
    case.upstream
        .set_versions_api_status(Some(StatusCode::TOO_MANY_REQUESTS));
    let versions = info_versions(&case, BASE)?;
    ensure!(versions.is_empty(), "info/{BASE} lists {versions:?}");
    ensure_versions_agree(&case, BASE)?;

    let mark = case.upstream.mark();
    case.upstream
        .set_versions_api_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    wait_until(
        Duration::from_secs(30),
        "the versions API asked again",
        || {
            let versions = info_versions(&case, BASE)?;
            ensure!(versions.is_empty(), "info/{BASE} lists {versions:?}");
            Ok(case.upstream.count_since(mark, &api) >= 1)
        },
    )?;

    case.upstream.retime(BASE, PREVIOUS, None)?;
    case.upstream.set_versions_api_status(None);
    wait_until(
        Duration::from_secs(30),
        "the versions with a time to show",
        || {
            // A fresh /versions listing the cached /info's upstream MD5 keeps that copy
            // current: only its hidden_until makes it rendered again.
            get(&case, "versions")?;
            Ok(info_versions(&case, BASE)? == ["1.0.0"])
        },
    )?;
    case.upstream
        .retime(BASE, PREVIOUS, Some("2020-01-01T00:00:00.000Z"))?;
    wait_until(
        Duration::from_secs(30),
        "the lagging version to show",
        || {
            // A fresh /versions listing the cached /info's upstream MD5 keeps that copy
            // current: only its hidden_until makes it rendered again.
            get(&case, "versions")?;
            Ok(info_versions(&case, BASE)? == ["1.0.0", PREVIOUS])
        },
    )?;
    ensure_versions_agree(&case, BASE)?;
    case.ensure_no_egress()
}

/// Bundler installs from the filtered index and keeps exactly the files pmcache serves: after
/// a first install (proxfix-base 1.1.0, published now, hidden), a second run gets the line
/// pmcache has added to `/versions` since (by a range append); after the upstream releases 1.2.0 (an old release, appended to
/// its `versions`), `bundle update` with the cache from before resolves it, without a checksum
/// error, and Bundler's copies are again the served ones after the next run (the `/versions`
/// line for the new `/info` is made once that `/info` has been filtered, during the first).
#[test]
fn bundler_follows_an_upstream_release_through_the_filtered_index() -> Result<()> {
    let case = Case::rubygems_with("0s", &[("PMCACHE_RUBYGEMS_POLICY_MIN_RELEASE_AGE", "1d")])?;
    case.upstream.retime(BASE, PREVIOUS, Some(&now()))?;
    let app = project(&case, "app", &[(BASE, &[])])?;
    let bundling = sandbox(&case, "app")?;
    let bundle = |args: &[&str], what: &str| {
        let run = bundling
            .bundle(&app.dir, args, &app.env(&[]))?
            .ensure_success(what)?;
        ensure!(
            !run.output.to_lowercase().contains("mismatch"),
            "{what}: {}",
            run.output
        );
        Ok(run)
    };
    bundle(&["install"], "bundle install")?;
    ensure!(
        locked_base(&app)? == "1.0.0",
        "locked {}",
        locked_base(&app)?
    );
    let versions_answers = || case.pmcache().statuses("/rubygems/versions");
    let before = versions_answers().len();
    // `bundle install` with a lock that holds reads no index: `update` does.
    bundle(&["update"], "bundle update with nothing new")?;
    // The line pmcache added at the end came as a range append.
    ensure!(
        versions_answers()[before..] == [206],
        "/versions answers: {:?}",
        versions_answers()
    );
    ensure!(
        locked_base(&app)? == "1.0.0",
        "locked {}",
        locked_base(&app)?
    );
    ensure_versions_agree(&case, BASE)?;
    ensure_bundler_has_served(&case, &bundling, "versions")?;
    ensure_bundler_has_served(&case, &bundling, &format!("info/{BASE}"))?;
    let (_, md5) = versions_view(&get(&case, "versions")?.text(), BASE);
    ensure!(
        format!("\"{md5}\"") == etag_of(&get(&case, &format!("info/{BASE}"))?.body),
        "/versions does not carry the served /info's MD5"
    );

    case.upstream.publish(HELD_BASE)?;
    let before = versions_answers().len();
    bundle(&["update"], "bundle update after the upstream release")?;
    // The upstream's line came where pmcache's was: Bundler's copy is no prefix of the new
    // file, and it gets the whole file (at once when its copy is longer, else after an append
    // whose digest does not match).
    ensure!(
        matches!(versions_answers()[before..], [200] | [206, 200]),
        "/versions answers: {:?}",
        versions_answers()
    );
    ensure!(locked_base(&app)? == YOUNG, "locked {}", locked_base(&app)?);
    // The new /info, filtered while Bundler read it, gave /versions a new last line since.
    bundle(&["update"], "bundle update after the release, again")?;
    ensure_versions_agree(&case, BASE)?;
    ensure_bundler_has_served(&case, &bundling, "versions")?;
    ensure_bundler_has_served(&case, &bundling, &format!("info/{BASE}"))?;
    let loaded = bundling.bundle_exec_ruby(&app.dir, BASE_PROBE, &app.env(&[]))?;
    ensure!(loaded == YOUNG, "bundle exec loaded {loaded}");
    case.ensure_no_egress()
}
