//! An upstream that hangs (accepts, reads the request, never answers) must not make clients
//! time out on what pmcache has: every cached page past its TTL is served within
//! `upstream.stale_timeout`, and the refresh left waiting stores the upstream's answer once it
//! comes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::pypi::check_demo_app_imports;
use crate::support::dists::LIB_1_0;
use crate::support::http;
use crate::support::pip::{PIP_ACCEPT, Venv};
use crate::support::pmcache::Pmcache;
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::wait_until;

/// pmcache's default `upstream.stale_timeout`, which this test runs with.
const STALE_TIMEOUT: Duration = Duration::from_secs(2);
/// The projects demo-app's install reads pages of.
const PROJECTS: [&str; 3] = ["demo-app", "demo-lib", "demo-util"];
const SLOW: &str = "pmcache_stale_served_total{reason=\"slow\"}";

#[test]
fn a_hanging_upstream_serves_cached_pages_within_the_stale_timeout() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pmcache-e2e-stale-")
        .tempdir()?;
    let upstream = PypiUpstream::start(PageFormat::Json)?;
    // Every page is past its TTL at once (0s); the read timeout is far longer than pip's 15 s,
    // so only the stale deadline can keep pip from timing out.
    let pmcache = Pmcache::serve(
        dir.path(),
        &dir.path().join("data"),
        &[
            ("PMCACHE_PYPI_UPSTREAM", &upstream.index_url()),
            ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", &upstream.trusted_hosts()),
            ("PMCACHE_PYPI_METADATA_TTL", "0s"),
            ("PMCACHE_UPSTREAM_READ_TIMEOUT", "120s"),
        ],
    )?;
    let warm = Venv::create(&dir.path().join("warm"))?;
    warm.install(&pmcache.pypi_index_url(), &["demo-app"])?
        .ensure_success("pip install demo-app (filling the cache)")?;

    upstream.hang();
    let hung_at = upstream.mark();
    // pip at its defaults (a 15 s timeout per request: nothing in its environment changes it).
    let venv = Venv::create(&dir.path().join("hung"))?;
    venv.install(&pmcache.pypi_index_url(), &["demo-app"])?
        .ensure_success("pip install demo-app while the upstream hangs")?;
    check_demo_app_imports(&venv)?;
    for project in PROJECTS {
        let response = timed_page(&pmcache, project)?;
        ensure!(
            response.header("x-pmcache-cache") == Some("stale"),
            "{project}: not served stale while the upstream hangs: {}",
            response.describe()
        );
    }
    ensure!(
        pmcache.metric(SLOW)?.unwrap_or(0.0) >= PROJECTS.len() as f64,
        "{SLOW} does not count the stale answers"
    );

    // The refreshes left waiting get the upstream's answer once it comes, and store it: a page
    // changed meanwhile is what pmcache serves from then on.
    upstream.yank(LIB_1_0);
    let answered_before = upstream_answers(&pmcache)?;
    upstream.answer_again();
    wait_until(
        Duration::from_secs(30),
        "the refreshes left hanging to be answered",
        || Ok(upstream_answers(&pmcache)? >= answered_before + PROJECTS.len() as f64),
    )?;
    ensure!(
        upstream.index_requests_since(hung_at) >= PROJECTS.len(),
        "the hung refreshes never reached the upstream"
    );
    // With the upstream hanging again, what is served is what those refreshes stored.
    upstream.hang();
    wait_until(
        Duration::from_secs(30),
        "demo-lib's page with the yanked file, stored by the refresh left hanging",
        || {
            let page = timed_page(&pmcache, "demo-lib")?;
            Ok(yanked(&page.text(), LIB_1_0))
        },
    )?;
    upstream.answer_again();
    Ok(())
}

/// A project page, asserting it came within the stale deadline plus a second.
fn timed_page(pmcache: &Pmcache, project: &str) -> Result<http::Response> {
    let started = Instant::now();
    let response = page(pmcache, project)?;
    let took = started.elapsed();
    ensure!(response.status == 200, "{project}: {}", response.describe());
    ensure!(
        took <= STALE_TIMEOUT + Duration::from_secs(1),
        "{project}: answered after {took:?}, past the stale deadline ({STALE_TIMEOUT:?}) plus 1 s"
    );
    Ok(response)
}

fn page(pmcache: &Pmcache, project: &str) -> Result<http::Response> {
    let url = format!("{}{project}/", pmcache.pypi_index_url());
    http::get_with(&url, &[("accept", PIP_ACCEPT)])
}

/// Upstream answers pmcache received, of any status, from any origin.
fn upstream_answers(pmcache: &Pmcache) -> Result<f64> {
    let metrics = http::get(&format!("{}/metrics", pmcache.base_url()))?.text();
    let answered = metrics
        .lines()
        .filter(|line| line.starts_with("pmcache_upstream_requests_total{"))
        .filter(|line| line.contains("outcome=\"answered\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum();
    Ok(answered)
}

/// Whether the PEP 691 page marks `filename` yanked.
fn yanked(page: &str, filename: &str) -> bool {
    let Ok(page) = serde_json::from_str::<serde_json::Value>(page) else {
        return false;
    };
    let files = page["files"].as_array().context("no files");
    files.is_ok_and(|files| {
        files
            .iter()
            .any(|file| file["filename"] == filename && file["yanked"] != false)
    })
}
