//! The supply-chain policy with real `composer` against the fixture Composer repository: a
//! minimum release age that hides a version published now from the p2 file (and shows it once
//! it has come of age, without a restart), a lock pinning that version failing with the reason,
//! and `deny` of one version and of a whole package, also once the dist is cached.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use serde_json::{Map, Value};

use crate::support::composer::{Project, Sandbox};
use crate::support::http;
use crate::support::packagist_packages::{BASE, TOOL};
use crate::support::packagist_upstream::{Kind, PackagistUpstream, expand};
use crate::support::wait_until;

/// proxfix/base's newest published version, the one the tests publish "now".
const YOUNG: &str = "1.1.0";
/// The version before it: what Composer resolves while [`YOUNG`] is hidden.
const PREVIOUS: &str = "1.0.0";
/// The class constant that tells which proxfix/base PHP loads.
const BASE_VERSION: &str = "Proxfix\\Base\\Version::VERSION";

type Case = crate::support::case::Case<PackagistUpstream>;

/// The fixture with proxfix/base [`YOUNG`] published just now, its `time` written with a
/// `+02:00` offset as a repository east of UTC would, and pmcache in front of it with metadata
/// fresh for `ttl` and `settings`.
fn young_case(ttl: &str, settings: &[(&str, &str)]) -> Result<Case> {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let case = Case::packagist(ttl, |_| settings)?;
    case.upstream
        .retime(BASE, YOUNG, Some(&now_east_of_utc()))?;
    Ok(case)
}

/// The time now as Packagist would write it in a `+02:00` zone: `2026-12-07T17:00:00+02:00`.
fn now_east_of_utc() -> String {
    let local = SystemTime::now() + Duration::from_secs(2 * 3600);
    let utc = humantime::format_rfc3339_seconds(local).to_string();
    format!("{}+02:00", utc.trim_end_matches('Z'))
}

/// A client sandbox in its own subdirectory of the case.
fn sandbox(case: &Case, name: &str) -> Result<Sandbox> {
    Sandbox::create(&case.path(name).join("client"), &case.trap)
}

/// A project in its own subdirectory of the case requiring `require` from pmcache.
fn project(case: &Case, name: &str, require: &[(&str, &str)]) -> Result<Project> {
    Project::create(
        &case.path(name).join("project"),
        &repository(case),
        require,
        None,
    )
}

/// pmcache's Composer repository URL.
fn repository(case: &Case) -> String {
    format!("{}/packagist", case.pmcache().base_url())
}

/// proxfix/base's p2 file through pmcache: the status, and the versions of its expanded list
/// (each entry whole, so that the minified list is known to expand right).
fn base_versions(case: &Case) -> Result<(u16, Vec<String>)> {
    let url = format!("{}/p2/{BASE}.json", repository(case));
    let response = http::get(&url)?;
    if response.status != 200 {
        return Ok((response.status, Vec::new()));
    }
    let document: Value = serde_json::from_slice(&response.body)?;
    let entries = document["packages"][BASE]
        .as_array()
        .with_context(|| format!("{url} lists no versions of {BASE}: {document}"))?;
    let expanded = expand(entries)?;
    for entry in &expanded {
        ensure!(
            entry.get("name") == Some(&Value::from(BASE)) && entry.contains_key("dist"),
            "{url}: an entry expands without its name or dist: {entry:?}"
        );
    }
    let versions = expanded.iter().map(version_of).collect();
    Ok((200, versions))
}

fn version_of(entry: &Map<String, Value>) -> String {
    entry
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// GET of proxfix/base's dist of `version` through pmcache.
fn base_dist(case: &Case, version: &str) -> Result<http::Response> {
    let release = case.upstream.packages().release(BASE, version)?;
    http::get(&format!(
        "{}/dists/{BASE}/{}.zip",
        repository(case),
        release.reference
    ))
}

/// The policy refusals of Packagist requests counted for `rule`.
fn refusals(case: &Case, rule: &str) -> Result<f64> {
    let wanted = format!("rule=\"{rule}\"");
    case.pmcache()
        .metric_sum("pmcache_policy_refusals_total", |labels| {
            labels.contains("ecosystem=\"packagist\"") && labels.contains(&wanted)
        })
}

/// Composer's output with its line wrapping undone: it wraps error boxes to the terminal.
fn unwrapped(output: &str) -> String {
    output.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// With `min_release_age = "1d"`, a version published now (its time written with an offset)
/// is gone from the p2 file, which still expands right; `composer require` resolves the
/// version before it; a lock pinning the young version (made before the rule, its dist never
/// fetched) fails `composer install` with pmcache's reason printed; the refusal is counted.
#[test]
fn a_version_younger_than_the_minimum_age_is_hidden_from_composer() -> Result<()> {
    let mut case = young_case("0s", &[])?;
    let pinned = project(&case, "pinned", &[(BASE, YOUNG)])?;
    let pinning = sandbox(&case, "pinned")?;
    pinning
        .update(&pinned, &["--no-install"])?
        .ensure_success("composer update --no-install before the rule")?;
    ensure!(
        pinned.locked(BASE)?["version"] == YOUNG,
        "the lock pins {}",
        pinned.locked(BASE)?["version"]
    );

    case.restart_with(&[("PMCACHE_PACKAGIST_POLICY_MIN_RELEASE_AGE", "1d")])?;
    let (status, versions) = base_versions(&case)?;
    ensure!(
        status == 200 && versions == [PREVIOUS],
        "p2 file under the age rule: {status} {versions:?}"
    );

    let resolving = sandbox(&case, "require")?;
    let fresh = project(&case, "require", &[])?;
    resolving
        .require(&fresh, BASE)?
        .ensure_success("composer require")?;
    ensure!(
        fresh.locked(BASE)?["version"] == PREVIOUS,
        "composer require locked {}",
        fresh.locked(BASE)?["version"]
    );
    let loaded = resolving.php_constant(&fresh, BASE_VERSION)?;
    ensure!(loaded == PREVIOUS, "PHP loads proxfix/base {loaded}");

    let run = pinning
        .install(&pinned)?
        .ensure_failure("composer install of a lock pinning a young version")?;
    let output = unwrapped(&run.output);
    let reason = format!("pmcache policy: packagist:{BASE}@{YOUNG} was published");
    ensure!(
        output.contains(&reason) && output.contains("min_release_age is 1d"),
        "composer did not print the policy's reason:\n{}",
        run.output
    );
    ensure!(
        refusals(&case, "min_release_age")? >= 1.0,
        "no min_release_age refusal counted"
    );
    case.ensure_no_egress()
}

/// With `min_release_age = "5s"`, the young version is hidden at first and its dist refused,
/// then it shows up once it has come of age, without a restart and although the p2 file is
/// fresh for an hour and nothing changed upstream.
#[test]
fn a_hidden_version_shows_up_in_the_p2_file_once_it_comes_of_age() -> Result<()> {
    let case = young_case("1h", &[("PMCACHE_PACKAGIST_POLICY_MIN_RELEASE_AGE", "5s")])?;
    let (_, versions) = base_versions(&case)?;
    ensure!(versions == [PREVIOUS], "lists {versions:?} at once");
    let refused = base_dist(&case, YOUNG)?;
    ensure!(
        refused.status == 403 && refused.text().contains("min_release_age is 5s"),
        "young dist: {}",
        refused.describe()
    );
    wait_until(
        Duration::from_secs(30),
        "the young version to come of age",
        || Ok(base_versions(&case)?.1 == [YOUNG, PREVIOUS]),
    )?;
    let served = base_dist(&case, YOUNG)?;
    ensure!(served.status == 200, "mature dist: {}", served.describe());
    Ok(())
}

/// `deny` of one version added after its dist was cached: the stored p2 file is made again
/// without it, the cached dist is refused (and `composer install` from the lock fails with the
/// reason), `composer require` resolves the version before it. `deny` of the whole package:
/// its p2 file is refused before the upstream is asked, and so is any of its dists.
#[test]
fn deny_of_a_version_and_of_a_package_applies_to_p2_files_and_cached_dists() -> Result<()> {
    let mut case = Case::packagist("1h", |_| Vec::new())?;
    let cached = sandbox(&case, "cached")?;
    let locked = project(&case, "cached", &[])?;
    cached
        .require(&locked, BASE)?
        .ensure_success("composer require before the deny")?;
    ensure!(
        locked.locked(BASE)?["version"] == YOUNG,
        "installed {}",
        locked.locked(BASE)?["version"]
    );

    case.restart_with(&[(
        "PMCACHE_PACKAGIST_POLICY_DENY",
        &format!("[\"{BASE}@{YOUNG}\"]"),
    )])?;
    let refused = base_dist(&case, YOUNG)?;
    let denied = format!("packagist:{BASE}@{YOUNG} is denied");
    ensure!(
        refused.status == 403 && refused.text().contains(&denied),
        "cached, then denied: {}",
        refused.describe()
    );
    let (_, versions) = base_versions(&case)?;
    ensure!(
        versions == [PREVIOUS],
        "the stored p2 file still offers {YOUNG}: {versions:?}"
    );
    locked.remove_vendor()?;
    cached.clear_cache()?;
    let run = cached
        .install(&locked)?
        .ensure_failure("composer install of a lock pinning a denied version")?;
    ensure!(
        unwrapped(&run.output).contains(&denied),
        "composer did not print the policy's reason:\n{}",
        run.output
    );
    let resolving = sandbox(&case, "require")?;
    let fresh = project(&case, "require", &[])?;
    resolving
        .require(&fresh, BASE)?
        .ensure_success("composer require with a version denied")?;
    ensure!(
        fresh.locked(BASE)?["version"] == PREVIOUS,
        "composer require locked {}",
        fresh.locked(BASE)?["version"]
    );

    // The section's list replaces the earlier one for Packagist.
    case.restart_with(&[("PMCACHE_PACKAGIST_POLICY_DENY", &format!("[\"{BASE}\"]"))])?;
    let mark = case.upstream.mark();
    let whole = http::get(&format!("{}/p2/{BASE}.json", repository(&case)))?;
    let denied = format!("packagist:{BASE} is denied");
    ensure!(
        whole.status == 403 && whole.text().contains(&denied),
        "a denied package's p2 file: {}",
        whole.describe()
    );
    let dist = base_dist(&case, PREVIOUS)?;
    ensure!(
        dist.status == 403 && dist.text().contains("is denied"),
        "a denied package's dist: {}",
        dist.describe()
    );
    let asked = case.upstream.count_since(mark, &Kind::P2(BASE.to_owned()))
        + case
            .upstream
            .count_since(mark, &Kind::P2Dev(BASE.to_owned()));
    ensure!(
        asked == 0,
        "the upstream was asked for a denied package:\n{}",
        case.upstream.request_log()
    );
    let refusing = sandbox(&case, "denied")?;
    let denied_project = project(&case, "denied", &[])?;
    let run = refusing
        .require(&denied_project, BASE)?
        .ensure_failure("composer require of a denied package")?;
    ensure!(
        unwrapped(&run.output).contains(&denied),
        "composer did not print the policy's reason:\n{}",
        run.output
    );
    ensure!(refusals(&case, "deny")? >= 3.0, "deny refusals not counted");
    case.ensure_no_egress()
}

/// `allow_only`: a package outside the list gets 403 for its p2 file (before the upstream is
/// asked) and its dists, one inside is served. `unknown_release_time`: under the age rule a
/// version published without a `time` is hidden (and its dist refused) with `deny`, and shown
/// with `allow`.
#[test]
fn allow_only_and_versions_without_a_time_follow_the_rules() -> Result<()> {
    let mut case = Case::packagist("1h", |_| {
        vec![(
            "PMCACHE_PACKAGIST_POLICY_ALLOW_ONLY".to_owned(),
            format!("[\"{BASE}\"]"),
        )]
    })?;
    let mark = case.upstream.mark();
    let outside = http::get(&format!("{}/p2/{TOOL}.json", repository(&case)))?;
    ensure!(
        outside.status == 403 && outside.text().contains("allow_only"),
        "a package outside allow_only: {}",
        outside.describe()
    );
    ensure!(
        case.upstream.count_since(mark, &Kind::P2(TOOL.to_owned())) == 0,
        "the upstream was asked for a package outside allow_only:\n{}",
        case.upstream.request_log()
    );
    let (status, versions) = base_versions(&case)?;
    ensure!(
        status == 200 && versions == [YOUNG, PREVIOUS],
        "a package inside allow_only: {status} {versions:?}"
    );
    ensure!(
        refusals(&case, "allow_only")? >= 1.0,
        "allow_only refusal not counted"
    );

    case.upstream.retime(BASE, YOUNG, None)?;
    case.restart_with(&[
        ("PMCACHE_PACKAGIST_POLICY_ALLOW_ONLY", "[]"),
        ("PMCACHE_PACKAGIST_POLICY_MIN_RELEASE_AGE", "1d"),
    ])?;
    let (_, versions) = base_versions(&case)?;
    ensure!(
        versions == [PREVIOUS],
        "a version without a time under deny: {versions:?}"
    );
    let refused = base_dist(&case, YOUNG)?;
    ensure!(
        refused.status == 403 && refused.text().contains("unknown_release_time"),
        "the dist of a version without a time: {}",
        refused.describe()
    );
    case.restart_with(&[("PMCACHE_PACKAGIST_POLICY_UNKNOWN_RELEASE_TIME", "allow")])?;
    let (_, versions) = base_versions(&case)?;
    ensure!(
        versions == [YOUNG, PREVIOUS],
        "a version without a time under allow: {versions:?}"
    );
    let served = base_dist(&case, YOUNG)?;
    ensure!(served.status == 200, "under allow: {}", served.describe());
    case.ensure_no_egress()
}
