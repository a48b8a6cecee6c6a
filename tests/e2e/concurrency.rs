//! Real clients at full concurrency against fixture upstreams that behave like the real ones:
//! HTTPS with HTTP/2 by ALPN from the tests' own CA, a hundred projects, pages over a megabyte,
//! and a first-byte delay per response. The `fixture_*` tests point the clients straight at the
//! fixture, to show that the fixture itself is sound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use hyper::StatusCode;
use tempfile::TempDir;

use crate::support::egress_trap::EgressTrap;
use crate::support::fixture_server::{self, FixtureServer, full_body};
use crate::support::pmcache::Pmcache;
use crate::support::pypi_projects::{PROJECT_COUNT, Projects, projects};
use crate::support::pypi_upstream::{Options, PageFormat, PypiUpstream, Server};
use crate::support::uv::Uv;
use crate::support::{run_bounded, tls};

/// How long every fixture response waits before its head: a nearby CDN's round trip, so that
/// comparisons with direct installs are not between zero-latency loopback and the proxy.
const FIRST_BYTE_DELAY: Duration = Duration::from_millis(20);

/// One test's world: a temp dir, the egress trap, the TLS PyPI fixture serving the hundred
/// generated projects, the test CA as a file, and the requirements file pinning them all.
struct World {
    upstream: PypiUpstream,
    trap: EgressTrap,
    projects: &'static Projects,
    ca_file: PathBuf,
    requirements: PathBuf,
    dir: TempDir,
}

impl World {
    fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pmcache-e2e-concurrency-")
            .tempdir()?;
        let generating = Instant::now();
        let projects = projects()?;
        eprintln!(
            "generated {PROJECT_COUNT} projects in {:?}",
            generating.elapsed()
        );
        let ca = tls::test_ca()?;
        let upstream = PypiUpstream::start_with(Options {
            format: PageFormat::Json,
            dists: &projects.dists,
            tls: Some(ca),
            first_byte_delay: FIRST_BYTE_DELAY,
        })?;
        let ca_file = ca.write_ca_file(dir.path())?;
        let requirements = dir.path().join("requirements.txt");
        std::fs::write(&requirements, projects.requirements())?;
        Ok(Self {
            upstream,
            trap: EgressTrap::start()?,
            projects,
            ca_file,
            requirements,
            dir,
        })
    }

    /// pmcache in front of the fixture, trusting the test CA, with its default settings
    /// otherwise.
    fn pmcache(&self) -> Result<Pmcache> {
        let ca_file = self.ca_file.to_str().context("temp dir is not UTF-8")?;
        Pmcache::serve(
            self.dir.path(),
            &self.dir.path().join("data"),
            &[
                ("PMCACHE_PYPI_UPSTREAM", &self.upstream.index_url()),
                (
                    "PMCACHE_UPSTREAM_TRUSTED_HOSTS",
                    &self.upstream.trusted_hosts(),
                ),
                ("PMCACHE_UPSTREAM_CA_FILE", ca_file),
            ],
        )
    }

    /// A uv sandbox in `name`, trusting the test CA.
    fn uv(&self, name: &str) -> Result<Uv> {
        Uv::create(&self.dir.path().join(name), Some(&self.ca_file), &self.trap)
    }

    /// `uv pip install --require-hashes -r requirements.txt` from `index_url` into a new venv,
    /// with a new, empty uv cache; checks that every project imports at its pinned version.
    fn install(&self, name: &str, index_url: &str) -> Result<Duration> {
        let uv = self.uv(name)?;
        let venv = uv.venv("venv")?;
        let cache = self.dir.path().join(name).join("cache");
        let started = Instant::now();
        uv.install_requirements(&venv, index_url, &self.requirements, &cache)?
            .ensure_success(&format!(
                "uv pip install of {PROJECT_COUNT} projects ({name})"
            ))?;
        let took = started.elapsed();
        self.ensure_installed(&venv)?;
        self.trap.ensure_nothing_caught()?;
        Ok(took)
    }

    /// Every pinned project imports from `venv` and reports its pinned version.
    fn ensure_installed(&self, venv: &Path) -> Result<()> {
        let modules: Vec<&str> = self
            .projects
            .pins
            .iter()
            .map(|pin| pin.module.as_str())
            .collect();
        let mut command = Command::new(venv.join("bin/python"));
        command
            .args([
                "-c",
                "import importlib, sys\n\
                 for name in sys.argv[1:]:\n    print(name, importlib.import_module(name).VERSION)",
            ])
            .args(&modules);
        crate::support::clean_environment(
            &mut command,
            self.dir.path(),
            &self.dir.path().join("home"),
        )?;
        let finished = run_bounded(
            command,
            &self.dir.path().join("logs"),
            Duration::from_secs(60),
        )?;
        ensure!(
            finished.status.success(),
            "importing the projects failed:\n{}",
            finished.output()
        );
        let installed: BTreeMap<&str, &str> = finished
            .stdout
            .lines()
            .filter_map(|line| line.split_once(' '))
            .collect();
        for pin in &self.projects.pins {
            let version = installed.get(pin.module.as_str());
            ensure!(
                version == Some(&pin.version.as_str()),
                "{} imports as version {version:?}, pinned {}",
                pin.module,
                pin.version
            );
        }
        Ok(())
    }
}

/// uv at its defaults installs the hundred hash-pinned projects straight from the fixture over
/// HTTPS and HTTP/2, fetching each page, core metadata file and wheel it needs.
#[test]
fn fixture_uv_installs_100_projects_over_http2() -> Result<()> {
    let world = World::start()?;
    let took = world.install("direct", &world.upstream.index_url())?;
    let upstream = &world.upstream;
    eprintln!(
        "direct install took {took:?}: index {} connections ({} used), {} HTTP/2 and {} HTTP/1.1 requests, \
         peak {} at once; files {} connections, {} requests",
        upstream.connections(Server::Index),
        upstream.connections_used(Server::Index),
        upstream.http2_requests(Server::Index),
        upstream.http1_requests(Server::Index),
        upstream.peak_in_flight(Server::Index),
        upstream.connections(Server::Files),
        upstream.http2_requests(Server::Files) + upstream.http1_requests(Server::Files),
    );
    for pin in &world.projects.pins {
        let path = format!("/simple/{}/", pin.project);
        ensure!(
            upstream.requests_for(&path) >= 1,
            "uv never asked for {path}"
        );
        let fetched = upstream.artifact_requests(&pin.filename);
        ensure!(fetched == 1, "uv fetched {} {fetched} times", pin.filename);
    }
    let sizes = upstream.page_sizes();
    for big in world.projects.big_projects() {
        let size = sizes.get(big).copied().unwrap_or_default();
        ensure!(size > 1_000_000, "the page of {big} is only {size} bytes");
    }
    eprintln!(
        "pages: {} bytes in all, the largest {} bytes",
        sizes.values().sum::<usize>(),
        sizes.values().max().copied().unwrap_or_default()
    );
    ensure!(
        upstream.http1_requests(Server::Index) == 0 && upstream.http1_requests(Server::Files) == 0,
        "uv fell back to HTTP/1.1:\n{}",
        upstream.request_log()
    );
    Ok(())
}

/// A TLS fixture answers HTTP/2 to a client that offers `h2` by ALPN, keeping one connection for
/// several requests, and HTTP/1.1 to one that does not; it counts both.
#[test]
fn fixture_tls_serves_http2_by_alpn_and_http1_otherwise() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pmcache-e2e-tls-")
        .tempdir()?;
    let ca = tls::test_ca()?;
    let ca_file = ca.write_ca_file(dir.path())?;
    let bound = FixtureServer::bind("tls-fixture", 1)?.with_tls(ca.server_config());
    let server = bound.serve(vec![fixture_server::handler(|_request| async {
        let mut response = hyper::Response::new(full_body(Bytes::from_static(b"hello\n")));
        *response.status_mut() = StatusCode::OK;
        response
    })]);
    let url = format!("{}/hello", server.base_url(0));
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");

    let versions = curl(dir.path(), &ca_file, "--http2", &[&url, &url])?;
    ensure!(
        versions == ["2", "2"],
        "curl --http2 saw versions {versions:?}"
    );
    ensure!(
        server.connections(0) == 1,
        "{} connections",
        server.connections(0)
    );
    ensure!(
        server.http2_requests(0) == 2,
        "{} HTTP/2 requests",
        server.http2_requests(0)
    );

    let versions = curl(dir.path(), &ca_file, "--http1.1", &[&url])?;
    ensure!(
        versions == ["1.1"],
        "curl --http1.1 saw versions {versions:?}"
    );
    ensure!(
        server.connections(0) == 2,
        "{} connections",
        server.connections(0)
    );
    ensure!(
        server.http1_requests(0) == 1,
        "{} HTTP/1.1 requests",
        server.http1_requests(0)
    );
    ensure!(
        server.connections_used(0) == 2,
        "{} connections used",
        server.connections_used(0)
    );
    // curl asked one URL after the other.
    ensure!(
        server.peak_in_flight(0) == 1,
        "peak {}",
        server.peak_in_flight(0)
    );
    Ok(())
}

/// Fetches `urls` in one curl run (so on one connection) trusting only `ca_file`, and returns the
/// HTTP version of each response.
fn curl(dir: &Path, ca_file: &Path, version: &str, urls: &[&str]) -> Result<Vec<String>> {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--fail"])
        .args(["--write-out", "%{http_version}\\n", version, "--cacert"])
        .arg(ca_file);
    for url in urls {
        command.args(["--output", "/dev/null", url]);
    }
    command
        .env_clear()
        .env("PATH", crate::support::subprocess_path()?)
        .env("HOME", dir);
    let finished = run_bounded(command, &dir.join("logs"), Duration::from_secs(30))
        .context("curl is needed by this test")?;
    ensure!(
        finished.status.success(),
        "curl failed:\n{}",
        finished.output()
    );
    Ok(finished.stdout.lines().map(str::to_owned).collect())
}

/// uv at its default concurrency (up to 50 requests at once, on HTTP/2) installs the hundred
/// hash-pinned projects through a cold pmcache, then again with an empty uv cache through the
/// warm one; pmcache answers no 5xx, and the warm install fetches no file upstream.
#[test]
fn uv_at_default_concurrency_installs_100_projects_cold_and_warm() -> Result<()> {
    let world = World::start()?;
    let pmcache = world.pmcache()?;
    let index_url = pmcache.pypi_index_url();

    let cold = world.install("cold", &index_url)?;
    pmcache.ensure_no_server_errors()?;
    let upstream = &world.upstream;
    // A request uv gave up on (its read timeout is 30 s, like pmcache's) shows no 5xx in
    // pmcache's metrics, but it is fetched again when uv retries.
    for server in [Server::Index, Server::Files] {
        let repeated: Vec<(String, usize)> = upstream
            .requests_per_path_since(0, server)
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .collect();
        ensure!(
            repeated.is_empty(),
            "pmcache fetched these more than once from the {server:?} server: {repeated:?}"
        );
    }
    ensure!(
        upstream.http1_requests(Server::Index) == 0 && upstream.http1_requests(Server::Files) == 0,
        "pmcache did not speak HTTP/2 to the upstream:\n{}",
        upstream.request_log()
    );
    // The condition of the stall this test guards against: every cold page on one connection.
    ensure!(
        upstream.connections_used(Server::Index) == 1,
        "pmcache's page requests went over {} connections",
        upstream.connections_used(Server::Index)
    );
    eprintln!(
        "cold install through pmcache took {cold:?}: upstream index {} connections ({} used), {} requests, \
         peak {} at once; files {} connections, {} requests",
        upstream.connections(Server::Index),
        upstream.connections_used(Server::Index),
        upstream.http2_requests(Server::Index),
        upstream.peak_in_flight(Server::Index),
        upstream.connections(Server::Files),
        upstream.http2_requests(Server::Files),
    );

    let mark = upstream.mark();
    let warm = world.install("warm", &index_url)?;
    pmcache.ensure_no_server_errors()?;
    let files = upstream.files_requests_since(mark);
    ensure!(
        files == 0,
        "the warm install made {files} upstream file requests:\n{}",
        upstream.request_log()
    );
    eprintln!(
        "warm install through pmcache took {warm:?}, with {} upstream page requests",
        upstream.index_requests_since(mark)
    );
    Ok(())
}
