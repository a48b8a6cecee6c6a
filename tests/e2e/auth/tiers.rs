//! Trust tiers with the real clients: under `anonymous = "read"`, tokenless pip, npm, gem and
//! Composer installs are served but fill nothing (each artifact is relayed from the upstream
//! again), a populate token's install stores what it pulls, and a tokenless install after it is
//! served from the cache alone; `read_misses = "refuse"` fails the tokenless install with a
//! reason the client prints; a read and a populate request racing for one cold artifact store
//! it once, recorded as the populate request's.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use pmcache_proxy::ArtifactRecord;
use pmcache_store::{Store, Table};

use super::{Token, composer_install, ensure_secret_kept, npm_like_install};
use crate::npm::ensure_demo_tree;
use crate::pypi::check_demo_app_imports;
use crate::support::case::Case;
use crate::support::client_run::ClientRun;
use crate::support::egress_trap::EgressTrap;
use crate::support::fixture_server::Fault;
use crate::support::gem::Sandbox as GemSandbox;
use crate::support::http;
use crate::support::npm::Sandbox;
use crate::support::npm_packages::{BIG, LEFT, LEFT_RESOLVED, packages};
use crate::support::npm_upstream::NpmUpstream;
use crate::support::packagist_upstream::{Kind as PackagistKind, PackagistUpstream};
use crate::support::pip::Venv;
use crate::support::pmcache;
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::rubygems_gems::APP as GEM_APP;
use crate::support::rubygems_upstream::{Kind as RubygemsKind, RubygemsUpstream};
use crate::support::uv::Uv;
use crate::support::{sha256_hex, wait_until};

/// What the client prints when pmcache refuses a read-role miss (the reason phrase of its 403).
const REFUSED_READ_MISS: &str = "a read-role request may not fill the cache";

/// Installs into a fresh client named by the `&str`, sending the token when given.
type Install<'a, U> = &'a dyn Fn(&Case<U>, &str, Option<&Token>) -> Result<ClientRun>;

/// Request headers, owned.
type Headers = [(&'static str, String)];

/// One ecosystem's install through pmcache, with or without the populate token.
struct Tier<'a, U> {
    /// The client, named in failures.
    client: &'static str,
    /// Whether a path of pmcache's is one of this ecosystem's artifacts.
    is_artifact: fn(&str) -> bool,
    /// How many artifact requests the upstream has seen so far.
    upstream_fetches: &'a dyn Fn(&U) -> usize,
    install: Install<'a, U>,
}

/// The settings of a fleet whose untrusted jobs carry no token: anonymous requests read, the
/// token populates.
fn read_tier_settings(token: &Token) -> [(&str, &str); 2] {
    [
        ("PMCACHE_AUTH_ANONYMOUS", "read"),
        ("PMCACHE_AUTH_TOKENS_FILE", token.file.as_str()),
    ]
}

/// Under `read_misses = "refuse"` (the case runs with it), a tokenless install fails on the
/// 403 and prints its reason; then, with misses relayed: two tokenless installs, each fetching
/// its artifacts from the upstream again and storing nothing; an install with the populate
/// token, storing them; and a tokenless install served entirely from the cache.
fn ensure_read_relays_and_populate_stores<U>(
    case: &mut Case<U>,
    token: &Token,
    tier: &Tier<'_, U>,
) -> Result<()> {
    let client = tier.client;
    let before = (tier.upstream_fetches)(&case.upstream);
    let refused = (tier.install)(case, "refused", None)?.ensure_failure(&format!(
        "{client} without a token under read_misses = refuse"
    ))?;
    ensure!(
        refused.output.contains(REFUSED_READ_MISS),
        "{client} does not print why pmcache refused it:\n{}",
        refused.output
    );
    println!("{client} refused as it should:\n{}", refused.output);
    // gem asks for the quick gemspec (an artifact too) before the .gem: any path may be first.
    ensure!(
        case.pmcache()
            .requests()
            .iter()
            .any(|request| request.status == 403),
        "pmcache refused nothing"
    );
    ensure_store_empty(case, "a refused read")?;
    let asked = (tier.upstream_fetches)(&case.upstream) - before;
    ensure!(
        asked == 0,
        "refused read misses asked the upstream {asked} times"
    );

    case.restart_with(&[("PMCACHE_AUTH_READ_MISSES", "relay")])?;
    let mut fetched = Vec::new();
    for name in ["read-1", "read-2"] {
        let before = (tier.upstream_fetches)(&case.upstream);
        (tier.install)(case, name, None)?.ensure_success(&format!("{client} {name}"))?;
        fetched.push((tier.upstream_fetches)(&case.upstream) - before);
        ensure_store_empty(case, name)?;
    }
    ensure!(
        fetched.iter().all(|count| *count > 0),
        "each tokenless install should fetch its artifacts from the upstream again: {fetched:?}"
    );
    let answers = artifact_answers(case, tier);
    ensure!(
        !answers.is_empty()
            && answers
                .iter()
                .all(|(status, cache)| *status == 200 && cache == "relay"),
        "tokenless artifact answers should all be relays: {answers:?}"
    );

    let before = (tier.upstream_fetches)(&case.upstream);
    (tier.install)(case, "populate", Some(token))?
        .ensure_success(&format!("{client} with the populate token"))?;
    ensure!(
        (tier.upstream_fetches)(&case.upstream) > before,
        "the populate install fetched nothing from the upstream"
    );
    ensure!(
        !pmcache::blobs(&case.data_dir())?.is_empty(),
        "the populate install stored nothing"
    );

    let before = (tier.upstream_fetches)(&case.upstream);
    let mark = case.pmcache().requests().len();
    (tier.install)(case, "read-3", None)?.ensure_success(&format!(
        "{client} without a token after the populate install"
    ))?;
    let upstream = (tier.upstream_fetches)(&case.upstream) - before;
    ensure!(
        upstream == 0,
        "the tokenless install after the populate one fetched {upstream} artifacts upstream"
    );
    let answers: Vec<_> =
        artifact_answers(case, tier).split_off(artifact_answers_before(case, tier, mark));
    ensure!(
        !answers.is_empty()
            && answers
                .iter()
                .all(|(status, cache)| *status == 200 && cache == "hit"),
        "the tokenless install after the populate one should hit: {answers:?}"
    );
    ensure_secret_kept(case, token)?;
    case.ensure_no_egress()
}

/// Status and cache result of every artifact answer pmcache logged so far.
fn artifact_answers<U>(case: &Case<U>, tier: &Tier<'_, U>) -> Vec<(u16, String)> {
    case.pmcache()
        .requests()
        .into_iter()
        .filter(|request| (tier.is_artifact)(&request.path))
        .map(|request| (request.status, request.cache))
        .collect()
}

/// How many of the artifact answers came before the `mark`-th logged request.
fn artifact_answers_before<U>(case: &Case<U>, tier: &Tier<'_, U>, mark: usize) -> usize {
    case.pmcache().requests()[..mark]
        .iter()
        .filter(|request| (tier.is_artifact)(&request.path))
        .count()
}

/// Read requests commit nothing: no blob at all (no artifact, and no document either).
fn ensure_store_empty<U>(case: &Case<U>, what: &str) -> Result<()> {
    pmcache::wait_for_empty_tmp(&case.data_dir())?;
    let blobs = pmcache::blobs(&case.data_dir())?;
    ensure!(
        blobs.is_empty(),
        "after {what}, the store holds {} blobs: {blobs:?}",
        blobs.len()
    );
    Ok(())
}

/// `index_url` with `ci` and the token as its credentials (pip's own setting).
fn with_credentials(url: &str, token: Option<&Token>) -> String {
    match token {
        Some(token) => url.replacen("http://", &format!("http://ci:{}@", token.secret), 1),
        None => url.to_owned(),
    }
}

#[test]
fn pip_reads_without_a_token_and_populates_with_one() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let mut settings = vec![("PMCACHE_AUTH_READ_MISSES", "refuse")];
    settings.extend(read_tier_settings(&token));
    let mut case = Case::pypi(PageFormat::Json, &settings)?;
    let install = |case: &Case<_>, name: &str, token: Option<&Token>| {
        let venv = Venv::create(&case.path(name))?;
        let run = venv.install(&with_credentials(&case.index_url(), token), &["demo-app"])?;
        if run.success {
            check_demo_app_imports(&venv)?;
        }
        Ok(run)
    };
    let tier = Tier {
        client: "pip install",
        is_artifact: |path| path.starts_with("/pypi/files/"),
        upstream_fetches: &|upstream: &PypiUpstream| upstream.files_requests_since(0),
        install: &install,
    };
    ensure_read_relays_and_populate_stores(&mut case, &token, &tier)
}

#[test]
fn npm_reads_without_a_token_and_populates_with_one() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let mut settings = vec![("PMCACHE_AUTH_READ_MISSES", "refuse")];
    settings.extend(read_tier_settings(&token));
    let mut case = Case::npm(NpmUpstream::start()?, &settings)?;
    let install = |case: &Case<_>, name: &str, token: Option<&Token>| {
        let (sandbox, project, run) =
            npm_like_install(case, name, token, |sandbox: &Sandbox, project: &Path| {
                sandbox.npm(project, &["install"])
            })?;
        if run.success {
            ensure_demo_tree(&sandbox, &project)?;
        }
        Ok(run)
    };
    let tier = Tier {
        client: "npm install",
        // Tarballs (`NAME/-/FILE`, scoped ones too); packuments are metadata.
        is_artifact: |path| path.starts_with("/npm/") && path.contains("/-/"),
        upstream_fetches: &|upstream: &NpmUpstream| upstream.tarball_requests_since(0),
        install: &install,
    };
    ensure_read_relays_and_populate_stores(&mut case, &token, &tier)
}

#[test]
fn gem_reads_without_a_token_and_populates_with_one() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let mut settings = vec![("PMCACHE_AUTH_READ_MISSES", "refuse")];
    settings.extend(read_tier_settings(&token));
    let mut case = Case::rubygems_with("1m", &settings)?;
    let install = |case: &Case<_>, name: &str, token: Option<&Token>| {
        let source = format!("{}/rubygems/", case.pmcache().base_url());
        let sandbox = GemSandbox::create(&case.path(name), &case.trap)?;
        sandbox.gem_install(&with_credentials(&source, token), &[GEM_APP])
    };
    let tier = Tier {
        client: "gem install",
        // The quick gemspec is an artifact too: gem asks for it before the .gem.
        is_artifact: |path| {
            path.starts_with("/rubygems/gems/") || path.starts_with("/rubygems/quick/")
        },
        upstream_fetches: &|upstream: &RubygemsUpstream| {
            upstream
                .requests_since(0)
                .iter()
                .filter(|logged| {
                    matches!(logged.kind, RubygemsKind::Gem(_) | RubygemsKind::Gemspec(_))
                })
                .count()
        },
        install: &install,
    };
    ensure_read_relays_and_populate_stores(&mut case, &token, &tier)
}

#[test]
fn composer_reads_without_a_token_and_populates_with_one() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let file = token.file.clone();
    let mut case = Case::packagist("1m", |_| {
        vec![
            ("PMCACHE_AUTH_ANONYMOUS".to_owned(), "read".to_owned()),
            ("PMCACHE_AUTH_TOKENS_FILE".to_owned(), file),
            ("PMCACHE_AUTH_READ_MISSES".to_owned(), "refuse".to_owned()),
        ]
    })?;
    let install = |case: &Case<PackagistUpstream>, name: &str, token: Option<&Token>| {
        // Composer keys its credentials by host, with the port when it is not the default.
        let auth = token.map(|token| {
            let origin = case.pmcache().base_url().trim_start_matches("http://");
            serde_json::json!({
                "http-basic": { origin: { "username": "ci", "password": token.secret } }
            })
        });
        let (_, _, run) = composer_install(case, name, auth)?;
        Ok(run)
    };
    let tier = Tier {
        client: "composer install",
        is_artifact: |path| path.starts_with("/packagist/dists/"),
        upstream_fetches: &|upstream: &PackagistUpstream| {
            upstream
                .requests_since(0)
                .iter()
                .filter(|logged| {
                    matches!(
                        logged.kind,
                        PackagistKind::Zipball(_) | PackagistKind::Codeload(_)
                    )
                })
                .count()
        },
        install: &install,
    };
    ensure_read_relays_and_populate_stores(&mut case, &token, &tier)
}

/// A read request and a populate request for one cold (and slowly served) tarball, in both
/// orders: both get the published bytes, the tarball is stored once, and its record names the
/// populate token. When the populate fill runs first, the read request joins it.
#[test]
fn a_read_and_a_populate_request_racing_for_one_artifact_store_it_once_as_populate() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let mut case = Case::npm(NpmUpstream::start()?, &read_tier_settings(&token))?;
    let packages = packages()?;
    let big = packages.tarball(BIG, "1.0.0")?;
    let other = packages.tarball(LEFT, LEFT_RESOLVED)?;
    let populate = [("Authorization", token.bearer())];
    let mut stored_urls = Vec::new();
    for (tarball, populate_first) in [(big, false), (other, true)] {
        // About two seconds a fetch: the second request comes while the first is running.
        case.upstream.set_fault(
            &tarball.filename,
            Fault::Throttle {
                bytes_per_second: (tarball.size / 2).max(1),
            },
        );
        let url = format!("{}{}", case.registry(), tarball.registry_path());
        let (first, second): (&Headers, &Headers) = if populate_first {
            (&populate, &[])
        } else {
            (&[], &populate)
        };
        let before = case.upstream.tarball_requests(&tarball.filename);
        let answers = std::thread::scope(|scope| -> Result<_> {
            let first = scope.spawn(|| get_as(&url, first));
            wait_until(
                std::time::Duration::from_secs(30),
                "the first request's upstream fetch",
                || Ok(case.upstream.tarball_requests(&tarball.filename) > before),
            )?;
            let second = scope.spawn(|| get_as(&url, second));
            let first = first.join().expect("first request")?;
            let second = second.join().expect("second request")?;
            Ok([first, second])
        })?;
        for answer in &answers {
            ensure!(
                answer.status == 200 && sha256_hex(&answer.body) == tarball.sha256,
                "{} (populate first: {populate_first}): {}",
                tarball.filename,
                answer.describe()
            );
        }
        let fetches = case.upstream.tarball_requests(&tarball.filename) - before;
        // A populate request never joins a read relay (it fetches again, to store); a read
        // request joins a running populate fill.
        let expected = if populate_first { 1 } else { 2 };
        ensure!(
            fetches == expected,
            "{} (populate first: {populate_first}): {fetches} upstream fetches, expected {expected}",
            tarball.filename
        );
        let stored: Vec<String> = case
            .pmcache()
            .events_named("artifact stored")
            .iter()
            .filter_map(|event| event.text("url"))
            .filter(|stored| stored.ends_with(&tarball.filename))
            .collect();
        ensure!(
            stored.len() == 1,
            "{} stored {} times: {stored:?}",
            tarball.filename,
            stored.len()
        );
        stored_urls.extend(stored);
        pmcache::ensure_stored(&case.data_dir(), &[&tarball.sha256])?;
    }
    ensure_secret_kept(&case, &token)?;
    case.pmcache_mut().stop()?;
    let store = Store::inspect(&case.data_dir())?;
    for url in stored_urls {
        let record: ArtifactRecord = store
            .get(Table::Artifacts, &format!("npm/{url}"))?
            .with_context(|| format!("no artifact record for {url}"))?;
        let by = record
            .stored_by
            .context("the record does not say who stored it")?;
        ensure!(
            by.role.as_str() == "populate" && by.token.as_deref() == Some("post-merge"),
            "{url} recorded as stored by {by:?}"
        );
    }
    case.ensure_no_egress()
}

/// GET `url` with `headers`.
fn get_as(url: &str, headers: &Headers) -> Result<http::Response> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    http::get_with(url, &headers)
}

/// A `read` token under `anonymous = "none"`: uv (at its defaults, many requests at once)
/// installs with it, every file relayed and nothing stored, each request logged with the read
/// role and the token's name; a populate token's install then stores the files, and the read
/// token's next install hits them.
#[test]
fn a_read_token_installs_with_uv_and_stores_nothing() -> Result<()> {
    let reader = Token::new("review", "read")?;
    let gate = Token::new("gate", "populate")?;
    let both = reader.file.replace("tokens.toml", "both.toml");
    std::fs::write(
        &both,
        [
            std::fs::read_to_string(&reader.file)?,
            std::fs::read_to_string(&gate.file)?,
        ]
        .join("\n"),
    )?;
    let case = Case::pypi(
        PageFormat::Json,
        &[
            ("PMCACHE_AUTH_ANONYMOUS", "none"),
            ("PMCACHE_AUTH_TOKENS_FILE", both.as_str()),
        ],
    )?;
    // Wheels only: uv would build the fixture's sdist in an isolated environment.
    let packages = ["demo-lib", "demo-util"];
    let install = |name: &str, token: &Token| -> Result<()> {
        let uv = Uv::create(&case.path(name), None, &case.trap)?;
        let venv = uv.venv("venv")?;
        uv.pip_install(
            &venv,
            &with_credentials(&case.index_url(), Some(token)),
            &packages,
        )?
        .ensure_success(&format!("uv pip install ({name})"))?;
        Ok(())
    };

    install("read-1", &reader)?;
    ensure_store_empty(&case, "a read token's install")?;
    super::ensure_logged_as(&case, "/pypi/", "read", "review")?;
    let files: Vec<_> = case
        .pmcache()
        .requests()
        .into_iter()
        .filter(|request| request.path.starts_with("/pypi/files/"))
        .collect();
    ensure!(
        !files.is_empty() && files.iter().all(|request| request.cache == "relay"),
        "the read token's files should all be relays: {files:?}"
    );

    install("populate", &gate)?;
    ensure!(
        !pmcache::blobs(&case.data_dir())?.is_empty(),
        "the populate install stored nothing"
    );
    let mark = case.upstream.mark();
    install("read-2", &reader)?;
    let fetched = case.upstream.files_requests_since(mark);
    ensure!(
        fetched == 0,
        "the read token's install after the populate one fetched {fetched} files upstream"
    );
    ensure_secret_kept(&case, &reader)?;
    ensure_secret_kept(&case, &gate)?;
    case.ensure_no_egress()
}

/// The read tier against the live registry the local npm uses: a tokenless `npm install`
/// (anonymous = read) works with every tarball relayed and nothing stored, twice; with the
/// populate token the same install stores them. Ignored by default; fails, never passes, when
/// that registry cannot be reached.
#[test]
#[ignore = "live: needs the registry the local npm uses; scripts/test.sh runs it when reachable"]
fn live_npm_install_without_a_token_is_relayed_and_stores_nothing() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let (dir, pmcache, registry) = crate::npm::start_live(&read_tier_settings(&token))?;
    let data_dir = dir.path().join("data");
    let trap = EgressTrap::start()?;
    let install = |name: &str, token: Option<&Token>| -> Result<()> {
        let project = dir.path().join(name).join("project");
        std::fs::create_dir_all(&project)?;
        std::fs::write(
            project.join("package.json"),
            r#"{"name": "pmcache-e2e-live-read", "version": "1.0.0", "private": true}"#,
        )?;
        let sandbox = Sandbox::create(&dir.path().join(name).join("client"), &registry, &trap)?;
        if let Some(token) = token {
            let nerf_dart = registry.trim_start_matches("http:");
            sandbox.append_npmrc(&format!("{nerf_dart}:_authToken={}\n", token.secret))?;
        }
        sandbox
            .npm(&project, &["install", "is-number", "ms"])?
            .ensure_success(&format!("npm install is-number ms ({name})"))?;
        Ok(())
    };
    for name in ["read-1", "read-2"] {
        install(name, None)?;
        pmcache::wait_for_empty_tmp(&data_dir)?;
        let blobs = pmcache::blobs(&data_dir)?;
        ensure!(blobs.is_empty(), "after {name} the store holds {blobs:?}");
    }
    let tarballs: Vec<_> = pmcache
        .requests()
        .into_iter()
        .filter(|request| request.path.contains("/-/"))
        .collect();
    ensure!(
        tarballs.len() >= 4 && tarballs.iter().all(|request| request.cache == "relay"),
        "two tokenless installs should relay both tarballs each time: {tarballs:?}"
    );
    install("populate", Some(&token))?;
    ensure!(
        pmcache::blobs(&data_dir)?.len() >= 2,
        "the populate install stored no tarball"
    );
    let caught = trap.caught();
    ensure!(
        caught.is_empty(),
        "npm tried to reach hosts off loopback: {caught:?}"
    );
    Ok(())
}
