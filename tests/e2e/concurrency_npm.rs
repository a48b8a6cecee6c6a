//! npm at the concurrency real clients use, through pmcache, from upstreams that behave like the
//! real ones (HTTPS with HTTP/2 from the tests' CA, documents of real size, a latency per
//! answer): pnpm at its defaults installing a tree of several hundred packages cold, and two
//! hundred cold packuments and PyPI project pages requested at once, through pmcache and directly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::support::concurrent::{Batch, Get, Transport, get_all};
use crate::support::npm::Sandbox;
use crate::support::npm_tree::{Tree, tree};
use crate::support::npm_upstream::{Latency, NpmUpstream};
use crate::support::pip::PIP_ACCEPT;
use crate::support::pmcache;
use crate::support::pypi_projects::projects;
use crate::support::pypi_upstream::{Options, PageFormat, PypiUpstream, Server};
use crate::support::{self, gunzip, http, sha256_hex, tls};

/// The `Accept` pnpm (and npm on its install path) sends for packuments.
const CORGI_ACCEPT: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
/// The npm upstream's time to first byte, per answer: a CDN's, for documents it has to fetch.
const NPM_LATENCY: Latency = Latency {
    min: Duration::from_millis(50),
    max: Duration::from_millis(150),
};
/// The PyPI upstream's time to first byte (its fixture takes one figure): the middle of the npm
/// upstream's range.
const PYPI_LATENCY: Duration = Duration::from_millis(100);
/// What a stalled upstream stream costs: pmcache's read timeout. How much slower than direct the
/// documents come is a benchmark's figure (`bench/cold-documents.sh`), not an assertion.
const STALLED: Duration = Duration::from_secs(30);
/// pmcache's peak resident memory allowed while it fetches and renders the two hundred: the
/// issue's 200 MB, in decimal megabytes.
const PEAK_RSS_ALLOWED: u64 = 200_000_000;

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

/// One test's world: the tree upstream, the egress trap, and pmcache in front of it.
type Case = crate::support::case::Case<NpmUpstream>;

impl Case {
    /// The tree upstream answering after `latency`, and pmcache with it as npm upstream
    /// (trusting the tests' CA) and the PyPI frontend off.
    fn tree(latency: Latency) -> Result<Self> {
        Self::tree_with(latency, None)
    }

    /// As [`Case::tree`], with `pypi` as pmcache's PyPI upstream if given.
    fn tree_with(latency: Latency, pypi: Option<&PypiUpstream>) -> Result<Self> {
        let upstream = NpmUpstream::start_tree()?;
        upstream.set_latency(latency);
        let pypi_settings = pypi.map(|pypi| (pypi.index_url(), pypi.trusted_hosts()));
        let settings = match &pypi_settings {
            Some((index, trusted)) => vec![
                ("PMCACHE_PYPI_ENABLED", "true"),
                ("PMCACHE_PYPI_UPSTREAM", index.as_str()),
                ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
            ],
            None => Vec::new(),
        };
        Case::npm(upstream, &settings)
    }

    /// A project directory `name/project` whose `package.json` depends on the tree's roots.
    fn tree_project(&self, name: &str, tree: &Tree) -> Result<PathBuf> {
        let project = self.path(name).join("project");
        std::fs::create_dir_all(&project)?;
        std::fs::write(project.join("package.json"), tree.package_json())?;
        Ok(project)
    }
}

/// pnpm at its default concurrency (no network-concurrency setting; the sandbox's `.npmrc` only
/// shortens the waits between retries, and none may happen) installs the whole tree cold through
/// pmcache, whose upstream is one HTTP/2 connection: every package lands with its published
/// bytes, pmcache answers no 5xx, every tarball is fetched from the upstream exactly once (none
/// was cut and retried), and pnpm reports no retry.
#[test]
fn pnpm_installs_several_hundred_packages_cold_with_no_cut_tarballs() -> Result<()> {
    let tree = tree()?;
    let case = Case::tree(NPM_LATENCY)?;
    let project = case.tree_project("pnpm", tree)?;
    let sandbox = Sandbox::create(
        &case.path("pnpm").join("client"),
        &case.registry(),
        &case.trap,
    )?;
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
        case.pmcache().peak_rss_bytes()? / (1024 * 1024),
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
    case.pmcache().ensure_no_server_errors()?;
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

/// Two hundred cold documents at once, a hundred packuments of the tree (every fourth package:
/// tens of kilobytes to megabytes) and the hundred PyPI project pages (kilobytes to 2 MB), through
/// pmcache whose upstreams are each one HTTP/2 connection: all answer 200, each document is
/// fetched from its upstream once, over that one connection (none opened per request while the
/// first was being set up), none waits out a timeout, and pmcache's peak RSS stays under 200 MB.
/// The same requests are made directly (same concurrency, same `Accept` as pnpm and pip) and
/// both times are printed; `bench/cold-documents.sh` compares them.
#[test]
fn two_hundred_concurrent_cold_documents_through_one_h2_connection() -> Result<()> {
    let tree = tree()?;
    let projects = projects()?;
    let pypi = PypiUpstream::start_with(Options {
        format: PageFormat::Json,
        dists: &projects.dists,
        tls: Some(tls::test_ca()?),
        first_byte_delay: PYPI_LATENCY,
    })?;
    let case = Case::tree_with(NPM_LATENCY, Some(&pypi))?;
    let packages: Vec<&str> = tree
        .packages
        .packages
        .keys()
        .step_by(4)
        .map(String::as_str)
        .collect();
    let pages: Vec<&str> = projects
        .pins
        .iter()
        .map(|pin| pin.project.as_str())
        .collect();
    let gets = |npm: &str, pypi: &str| -> Vec<Get> {
        let packuments = packages.iter().map(|name| Get {
            url: format!("{npm}{}", name.replace('/', "%2f")),
            accept: CORGI_ACCEPT,
        });
        let pages = pages.iter().map(|project| Get {
            url: format!("{pypi}{project}/"),
            accept: PIP_ACCEPT,
        });
        // Interleaved, as a fleet's requests arrive.
        packuments.zip(pages).flat_map(|(a, b)| [a, b]).collect()
    };
    let through = get_all(
        &gets(
            &case.registry(),
            &format!("{}/pypi/simple/", case.pmcache().base_url()),
        ),
        Transport::Http1,
    )?;
    let peak_rss = case.pmcache().peak_rss_bytes()?;
    // Counted before the direct requests add their own connections.
    let connections = (case.upstream.connections(), pypi.connections(Server::Index));
    let over_http1 =
        pypi.http1_requests(Server::Index) + case.upstream.mark() - case.upstream.http2_requests();
    let ca_file = case.path("test-ca.pem");
    let direct = get_all(
        &gets(&case.upstream.registry_url(), &pypi.index_url()),
        Transport::Http2(&ca_file),
    )?;
    eprintln!(
        "200 cold documents ({} packuments, {} pages): through pmcache {:?} ({} bytes), directly \
         {:?} ({} bytes), {:.1} times; pmcache peak RSS {} MiB; upstream connections npm {}, \
         PyPI {}",
        packages.len(),
        pages.len(),
        through.elapsed,
        through.bytes(),
        direct.elapsed,
        direct.bytes(),
        through.elapsed.as_secs_f64() / direct.elapsed.as_secs_f64(),
        peak_rss >> 20,
        connections.0,
        connections.1
    );
    eprintln!(
        "slowest through pmcache: {:#?}\nslowest directly: {:#?}",
        through.slowest(5),
        direct.slowest(5)
    );
    ensure_all_ok(&through, "through pmcache")?;
    ensure_all_ok(&direct, "directly")?;
    ensure!(
        connections == (1, 1) && over_http1 == 0,
        "pmcache reached the upstreams over {connections:?} connections (npm, PyPI), not one \
         each, {over_http1} requests over HTTP/1.1"
    );
    for name in &packages {
        let fetched = case.upstream.packument_requests(name);
        ensure!(
            fetched == 2,
            "the packument of {name} was fetched {fetched} times, not once by pmcache and once directly"
        );
    }
    for project in &pages {
        let fetched = pypi.requests_for(&format!("/simple/{project}/"));
        ensure!(
            fetched == 2,
            "the page of {project} was fetched {fetched} times, not once by pmcache and once directly"
        );
    }
    case.pmcache().ensure_no_server_errors()?;
    // How fast is the benchmark's to say (bench/cold-documents.sh, side by side with direct);
    // a stall, which this guards against, holds answers for pmcache's 30 s read timeout.
    ensure!(
        through.elapsed < STALLED,
        "through pmcache the documents took {:?}: something waited out a timeout",
        through.elapsed
    );
    ensure!(
        peak_rss < PEAK_RSS_ALLOWED,
        "pmcache's peak RSS was {} MB, not under {} MB",
        peak_rss / 1_000_000,
        PEAK_RSS_ALLOWED / 1_000_000
    );
    Ok(())
}

/// How many made-up `Host` values ask for one cached packument.
const ORIGINS: usize = 200;

/// Any `Host` a client sends is served from the one stored rendering of a packument: two hundred
/// requests for the tree's largest packument (several megabytes), each with a `Host` never seen
/// before, full and abbreviated, gzip accepted as npm does, cost no upstream request and grow the
/// store by less than 1 MB, and every answer's tarball URLs name the origin its request used.
/// Entity tags are per origin: one origin's tag gets a 304 there and a full answer elsewhere. An
/// origin that comes back gets a gzip copy of its own.
#[test]
fn two_hundred_hosts_share_one_stored_packument() -> Result<()> {
    let tree = tree()?;
    let case = Case::tree(Latency::default())?;
    let name = tree
        .giants
        .iter()
        .max_by_key(|name| case.upstream.packument(name).map_or(0, |body| body.len()))
        .context("the tree has no giant package")?;
    let upstream_size = case.upstream.packument(name).map_or(0, |body| body.len());
    ensure!(
        upstream_size > 2_000_000,
        "the largest packument is {upstream_size} bytes: not a realistic giant"
    );
    let url = format!("{}{}", case.registry(), name.replace('/', "%2f"));
    let port = case.pmcache().port()?.to_owned();
    let warm = http::get_with(&url, &[("accept", "application/json")])?;
    ensure!(
        warm.is_complete_ok(),
        "warming GET {url}: {}",
        warm.describe()
    );
    let versions = tarball_urls(&warm.body)?.len();
    ensure!(versions > 1000, "{name} lists {versions} tarballs");

    let data_dir = case.dir.path().join("data");
    let (size_before, mark) = (pmcache::data_size(&data_dir)?, case.upstream.mark());
    let started = Instant::now();
    for index in 0..ORIGINS {
        let host = format!("h{index}.origins.test:{port}");
        let accept = if index % 2 == 0 {
            "application/json"
        } else {
            CORGI_ACCEPT
        };
        let headers = [
            ("host", host.as_str()),
            ("accept", accept),
            ("accept-encoding", "gzip"),
        ];
        let response = http::send("GET", &url, &headers, b"")?;
        ensure!(
            response.is_complete_ok(),
            "GET {url} with Host {host}: {}",
            response.describe()
        );
        let body = match response.header("content-encoding") {
            Some("gzip") => gunzip(&response.body)?,
            _ => response.body.to_vec(),
        };
        // Counted in the text: parsing two hundred documents of megabytes would be most of the
        // test's time. Compact JSON, as pmcache serves it, has one spelling of each.
        let text = std::str::from_utf8(&body).context("packument is no UTF-8")?;
        let ours = text
            .matches(&format!("\"tarball\":\"http://{host}/npm/"))
            .count();
        let all = text.matches("\"tarball\":").count();
        ensure!(
            ours == versions && all == versions,
            "Host {host} (Accept {accept}) got {all} tarball URLs, {ours} of them on its origin, \
             not {versions}"
        );
    }
    let elapsed = started.elapsed();
    let grown = pmcache::data_size(&data_dir)?.saturating_sub(size_before);
    let upstream_requests = case.upstream.requests_since(mark).len();
    eprintln!(
        "{ORIGINS} Hosts for the {upstream_size}-byte packument of {name}: {elapsed:?}, \
         {upstream_requests} upstream requests, store grew {grown} bytes"
    );
    ensure!(
        upstream_requests == 0,
        "{ORIGINS} new Hosts made {upstream_requests} upstream requests:\n{}",
        case.upstream.request_log()
    );
    ensure!(
        grown < 1_000_000,
        "{ORIGINS} new Hosts grew the store by {grown} bytes"
    );

    let one = http::ensure_etag_per_origin(&url, &port)?;
    let first = http::send("GET", &url, &[("host", &one)], b"")?;
    ensure!(first.is_complete_ok(), "{}", first.describe());

    // An origin that comes back gets a gzip copy, with its own URLs.
    let gzip_headers = [("host", one.as_str()), ("accept-encoding", "gzip")];
    let mut gzipped = None;
    support::wait_until(
        Duration::from_secs(30),
        "a gzip copy for a returning Host",
        || {
            let response = http::send("GET", &url, &gzip_headers, b"")?;
            ensure!(response.is_complete_ok(), "{}", response.describe());
            let done = response.header("content-encoding") == Some("gzip");
            gzipped = done.then_some(response);
            Ok(done)
        },
    )?;
    let gzipped = gzipped.context("no gzip answer")?;
    ensure!(
        gunzip(&gzipped.body)? == first.body,
        "the gzip copy for {one} is not its identity answer compressed"
    );
    ensure!(
        case.upstream.requests_since(mark).is_empty(),
        "{}",
        case.upstream.request_log()
    );
    case.pmcache().ensure_no_server_errors()
}

/// Every `versions[*].dist.tarball` of a packument.
fn tarball_urls(body: &[u8]) -> Result<Vec<String>> {
    let document: serde_json::Value =
        serde_json::from_slice(body).context("packument is no JSON")?;
    let versions = document["versions"].as_object().context("no versions")?;
    Ok(versions
        .values()
        .filter_map(|version| version["dist"]["tarball"].as_str().map(str::to_owned))
        .collect())
}

/// Every request of `batch` was a complete 200.
fn ensure_all_ok(batch: &Batch, how: &str) -> Result<()> {
    let failures = batch.failures();
    ensure!(
        failures.is_empty(),
        "{} of {} requests made {how} failed:\n{}",
        failures.len(),
        batch.outcomes.len(),
        failures.join("\n")
    );
    Ok(())
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
