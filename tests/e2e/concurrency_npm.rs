//! npm at the concurrency real clients use: pnpm at its defaults installing a tree of several
//! hundred packages cold, through pmcache, from an upstream that behaves like the real registry
//! (HTTPS with HTTP/2 from the tests' CA, packuments up to several megabytes, a latency per
//! answer).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;

use crate::support::egress_trap::EgressTrap;
use crate::support::http;
use crate::support::npm::Sandbox;
use crate::support::npm_tree::{Tree, tree};
use crate::support::npm_upstream::{Latency, NpmUpstream};
use crate::support::pmcache::{Launch, Pmcache};
use crate::support::{sha256_hex, tls};

/// What pnpm prints when it retries a request or a download broke: none of it may appear.
const RETRY_SIGNS: [&str; 8] = [
    "Will retry",
    "ECONNRESET",
    "ETIMEDOUT",
    "ERR_SOCKET_TIMEOUT",
    "socket hang up",
    "ERR_STREAM_PREMATURE_CLOSE",
    "EINTEGRITY",
    "ERR_PNPM_",
];

/// One test's world: a temp dir, the tree upstream, the egress trap and pmcache in front of the
/// upstream. Fields drop in order: pmcache first (printing its log), the temp dir last.
struct Case {
    pmcache: Pmcache,
    upstream: NpmUpstream,
    trap: EgressTrap,
    dir: TempDir,
}

impl Case {
    /// The tree upstream answering after `latency`, and pmcache with it as npm upstream
    /// (trusting the tests' CA) and the PyPI frontend off.
    fn start(latency: Latency) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pmcache-e2e-npm-tree-")
            .tempdir()?;
        let upstream = NpmUpstream::start_tree()?;
        upstream.set_latency(latency);
        let trap = EgressTrap::start()?;
        let ca_file = tls::test_ca()?.write_ca_file(dir.path())?;
        let ca_file = ca_file.to_str().context("temp dir is not UTF-8")?;
        let launch = Launch::serve(
            dir.path(),
            &dir.path().join("data"),
            &[
                ("PMCACHE_NPM_UPSTREAM", &upstream.registry_url()),
                ("PMCACHE_UPSTREAM_CA_FILE", ca_file),
                ("PMCACHE_PYPI_ENABLED", "false"),
            ],
        )?;
        let pmcache = Pmcache::spawn(launch)?;
        Ok(Self {
            pmcache,
            upstream,
            trap,
            dir,
        })
    }

    /// Makes pmcache open its connection to the upstream with a request for a package the tree
    /// does not have (an empty 404 upstream, a 404 from pmcache), so that what follows finds the
    /// connection established, as it would be on a cache that has been serving, and its cache
    /// still cold for the tree. A cold connection would be raced open by each of the first
    /// requests at once, and spread them over several connections.
    fn warm_up_connection(&self) -> Result<()> {
        let response = http::get(&format!("{}not-in-the-tree", self.registry()))?;
        ensure!(
            response.status == 404,
            "the warm-up request got {}",
            response.describe()
        );
        ensure!(
            self.upstream.connections() == 1,
            "pmcache opened {} connections for one request",
            self.upstream.connections()
        );
        Ok(())
    }

    /// `http://127.0.0.1:PORT/npm/`: the registry URL clients get.
    fn registry(&self) -> String {
        format!("{}/npm/", self.pmcache.base_url())
    }

    /// A project directory `name/project` whose `package.json` depends on the tree's roots.
    fn project(&self, name: &str, tree: &Tree) -> Result<PathBuf> {
        let project = self.dir.path().join(name).join("project");
        std::fs::create_dir_all(&project)?;
        std::fs::write(project.join("package.json"), tree.package_json())?;
        Ok(project)
    }
}

/// pnpm at its defaults (no network-concurrency setting) installs the whole tree cold through
/// pmcache, whose upstream is one HTTP/2 connection: every package lands with its published
/// bytes, pmcache answers no 5xx, every tarball is fetched from the upstream exactly once (none
/// was cut and retried), and pnpm reports no retry.
#[test]
fn pnpm_installs_several_hundred_packages_cold_with_no_cut_tarballs() -> Result<()> {
    let tree = tree()?;
    let case = Case::start(Latency::between(
        Duration::from_millis(50),
        Duration::from_millis(150),
    ))?;
    let project = case.project("pnpm", tree)?;
    let sandbox = Sandbox::create(
        &case.dir.path().join("pnpm").join("client"),
        &case.registry(),
        &case.trap,
    )?;
    case.warm_up_connection()?;
    let started = Instant::now();
    let run = sandbox.pnpm_install(&project)?;
    let elapsed = started.elapsed();
    let tarballs = tree.installed_tarballs()?;
    eprintln!(
        "pnpm installed {} versions of {} packages cold through pmcache in {elapsed:?}: \
         {} upstream requests on {} connection(s), peak {} in flight; pmcache peak RSS {} MiB",
        tarballs.len(),
        tree.packages.packages.len(),
        case.upstream.mark(),
        case.upstream.connections(),
        case.upstream.peak_in_flight(),
        case.pmcache.peak_rss_bytes()? / (1024 * 1024),
    );
    let run = run.ensure_success("pnpm install of the tree")?;
    ensure!(
        case.upstream.connections() == 1 && case.upstream.http2_requests() == case.upstream.mark(),
        "pmcache reached the upstream over {} connections, not one, with {} of {} requests over \
         HTTP/2",
        case.upstream.connections(),
        case.upstream.http2_requests(),
        case.upstream.mark()
    );
    ensure_installed(&project, tree)?;
    ensure_no_server_errors(&case.pmcache)?;
    for tarball in &tarballs {
        let fetched = case.upstream.requests_for_tarball(tarball);
        ensure!(
            fetched == 1,
            "{} was fetched from the upstream {fetched} times, not once",
            tarball.registry_path()
        );
    }
    let all_tarballs = case.upstream.tarball_requests_since(0);
    ensure!(
        all_tarballs == tarballs.len(),
        "the upstream served {all_tarballs} tarball requests for {} installed versions",
        tarballs.len()
    );
    for sign in RETRY_SIGNS {
        ensure!(
            !run.output.contains(sign),
            "pnpm's output shows {sign:?}:\n{}",
            run.output
        );
    }
    case.trap.ensure_nothing_caught()
}

/// `node_modules/.pnpm` holds exactly the tree's installed versions, each with the published
/// `package.json`, and the root's dependencies are linked into `node_modules`.
fn ensure_installed(project: &Path, tree: &Tree) -> Result<()> {
    let virtual_store = project.join("node_modules/.pnpm");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&virtual_store)
        .with_context(|| format!("listing {}", virtual_store.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && name != "node_modules" {
            found.insert(name);
        }
    }
    let expected: BTreeSet<String> = tree
        .installed
        .iter()
        .map(|(name, version)| format!("{}@{version}", name.replace('/', "+")))
        .collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "node_modules/.pnpm lacks {} of {} versions: {missing:?}; and has unexpected {extra:?}",
        missing.len(),
        expected.len()
    );
    for tarball in tree.installed_tarballs()? {
        let manifest = virtual_store
            .join(format!(
                "{}@{}",
                tarball.name.replace('/', "+"),
                tarball.version
            ))
            .join("node_modules")
            .join(&tarball.name)
            .join("package.json");
        let bytes =
            std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        ensure!(
            tarball.contents.get("package.json") == Some(&sha256_hex(&bytes)),
            "{} is not the published package.json of {}@{}",
            manifest.display(),
            tarball.name,
            tarball.version
        );
    }
    for name in tree.root_dependencies.keys() {
        let link = project.join("node_modules").join(name).join("package.json");
        ensure!(link.is_file(), "{} is missing", link.display());
    }
    Ok(())
}

/// pmcache answered no request with a 5xx (per `pmcache_requests_total`).
fn ensure_no_server_errors(pmcache: &Pmcache) -> Result<()> {
    let errors = pmcache.metric_sum("pmcache_requests_total", |labels| {
        labels.contains("status=\"5")
    })?;
    ensure!(
        errors == 0.0,
        "pmcache answered {errors} requests with a 5xx (its log is printed below)"
    );
    Ok(())
}
