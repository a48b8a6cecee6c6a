//! The soak run behind `bench/soak.sh`, ignored in CI: real pip, npm, gem and composer installs
//! through one pmcache in front of the four fixture upstreams for a set time, with faults
//! injected into random artifacts and pmcache killed with SIGKILL at random moments and started
//! again on the same data directory. It checks, as it goes and at the end, that no client ever
//! installed wrong bytes, that every artifact pmcache had committed survives every kill, that
//! the store re-hashes clean (`pmcache verify`), and that a final round of every install works
//! from what is stored.
//!
//! Settings (environment): `PMCACHE_SOAK_SECONDS` (default 120), `PMCACHE_SOAK_SEED` (default:
//! the clock), `PMCACHE_SOAK_MAX_SIZE` (a `storage.max_size` such as `3MiB`, so that eviction
//! runs throughout; then an artifact missing after a restart may have been evicted, and what
//! counts is that `pmcache verify` finds the store consistent), `PMCACHE_SOAK_REPORT` (a file to
//! write the report to as well as stdout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;

use crate::support::composer::{Project as ComposerProject, Sandbox as ComposerSandbox};
use crate::support::dists::{APP as PY_APP, LIB_1_1, UTIL, dists};
use crate::support::egress_trap::EgressTrap;
use crate::support::fixture_server::Fault;
use crate::support::gem::Sandbox as GemSandbox;
use crate::support::npm::Sandbox as NpmSandbox;
use crate::support::npm_packages::packages as npm_packages;
use crate::support::npm_upstream::NpmUpstream;
use crate::support::packagist_packages::{APP as COMPOSER_APP, BASE as COMPOSER_BASE};
use crate::support::packagist_upstream::PackagistUpstream;
use crate::support::pip::Venv;
use crate::support::pmcache::{self, Pmcache};
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::rubygems_gems::{APP as GEM_APP, gems};
use crate::support::rubygems_upstream::RubygemsUpstream;

/// The gems `gem install proxfix_app` fetches.
const GEM_FILES: [&str; 2] = ["proxfix_app-0.1.0", "proxfix-base-1.1.0"];
/// The Composer releases `proxfix/app ^1.0` installs.
const COMPOSER_RELEASES: [(&str, &str); 2] = [(COMPOSER_APP, "1.0.0"), (COMPOSER_BASE, "1.1.0")];
/// Chance, in percent, that a round injects a fault, and that it kills pmcache.
const FAULT_PERCENT: u64 = 30;
const KILL_PERCENT: u64 = 20;
/// The latest moment in a round at which pmcache is killed.
const KILL_WITHIN_MS: u64 = 4000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ecosystem {
    Pip,
    Npm,
    Gem,
    Composer,
}

const ECOSYSTEMS: [Ecosystem; 4] = [
    Ecosystem::Pip,
    Ecosystem::Npm,
    Ecosystem::Gem,
    Ecosystem::Composer,
];

/// One artifact a round installs: where a fault can be injected, and its published sha256.
struct Artifact {
    /// The fixture's fault key for it.
    fault_key: String,
    sha256: String,
    /// Whether a client or pmcache can tell wrong bytes from right ones (a published digest);
    /// Composer dists without a `shasum` are trusted on first use, so corrupting their first
    /// download is not a fault pmcache can catch.
    verifiable: bool,
}

/// A small deterministic generator, so that a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The fixtures, the trap and pmcache in front of all four upstreams.
struct World {
    pmcache: Pmcache,
    pypi: PypiUpstream,
    npm: NpmUpstream,
    rubygems: RubygemsUpstream,
    packagist: PackagistUpstream,
    trap: EgressTrap,
    /// `storage.max_size`, when the run evicts.
    max_size: Option<String>,
    dir: TempDir,
}

impl World {
    fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("pmcache-soak-").tempdir()?;
        let pypi = PypiUpstream::start(PageFormat::Json)?;
        let npm = NpmUpstream::start()?;
        let rubygems = RubygemsUpstream::start()?;
        let packagist = PackagistUpstream::start()?;
        let trap = EgressTrap::start()?;
        let max_size = std::env::var("PMCACHE_SOAK_MAX_SIZE").ok();
        let upstreams = Upstreams {
            pypi: &pypi,
            npm: &npm,
            rubygems: &rubygems,
            packagist: &packagist,
        };
        let pmcache = serve(dir.path(), &upstreams, max_size.as_deref())?;
        Ok(Self {
            pmcache,
            pypi,
            npm,
            rubygems,
            packagist,
            trap,
            max_size,
            dir,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn restart(&mut self) -> Result<()> {
        let upstreams = Upstreams {
            pypi: &self.pypi,
            npm: &self.npm,
            rubygems: &self.rubygems,
            packagist: &self.packagist,
        };
        self.pmcache = serve(self.dir.path(), &upstreams, self.max_size.as_deref())?;
        Ok(())
    }

    /// What an install of `ecosystem` fetches.
    fn artifacts(&self, ecosystem: Ecosystem) -> Result<Vec<Artifact>> {
        let verified = |fault_key: String, sha256: &str| Artifact {
            fault_key,
            sha256: sha256.to_owned(),
            verifiable: true,
        };
        Ok(match ecosystem {
            Ecosystem::Pip => [PY_APP, LIB_1_1, UTIL]
                .iter()
                .map(|file| Ok(verified((*file).to_owned(), &dists()?.get(file)?.sha256)))
                .collect::<Result<_>>()?,
            Ecosystem::Npm => npm_packages()?
                .demo_tree()?
                .into_iter()
                .map(|tarball| verified(tarball.filename.clone(), &tarball.sha256))
                .collect(),
            Ecosystem::Gem => GEM_FILES
                .iter()
                .map(|full| {
                    Ok(verified(
                        format!("gems/{full}.gem"),
                        &gems()?.gem(full)?.sha256,
                    ))
                })
                .collect::<Result<_>>()?,
            Ecosystem::Composer => COMPOSER_RELEASES
                .iter()
                .map(|(name, version)| {
                    let release = self.packagist.packages().release(name, version)?;
                    Ok(Artifact {
                        fault_key: self.packagist.codeload_path(name, version)?,
                        sha256: release.archive.sha256.clone(),
                        verifiable: release.shasum_published,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    fn set_fault(&self, ecosystem: Ecosystem, key: &str, fault: Fault) {
        match ecosystem {
            Ecosystem::Pip => self.pypi.set_fault(key, fault),
            Ecosystem::Npm => self.npm.set_fault(key, fault),
            Ecosystem::Gem => self.rubygems.set_fault(key, fault),
            Ecosystem::Composer => self.packagist.set_fault(key, fault),
        }
    }

    /// Stops (`down`) or restarts the upstream of `ecosystem`.
    fn set_upstream_down(&self, ecosystem: Ecosystem, down: bool) -> Result<()> {
        match (ecosystem, down) {
            (Ecosystem::Pip, true) => self.pypi.stop(),
            (Ecosystem::Npm, true) => self.npm.stop(),
            (Ecosystem::Gem, true) => self.rubygems.stop(),
            (Ecosystem::Composer, true) => self.packagist.stop(),
            (Ecosystem::Pip, false) => self.pypi.restart()?,
            (Ecosystem::Npm, false) => self.npm.restart()?,
            (Ecosystem::Gem, false) => self.rubygems.restart()?,
            (Ecosystem::Composer, false) => self.packagist.restart()?,
        }
        Ok(())
    }

    fn clear_fault(&self, ecosystem: Ecosystem, key: &str) {
        match ecosystem {
            Ecosystem::Pip => self.pypi.clear_fault(key),
            Ecosystem::Npm => self.npm.clear_fault(key),
            Ecosystem::Gem => self.rubygems.clear_fault(key),
            Ecosystem::Composer => self.packagist.clear_fault(key),
        }
    }

    /// One install of `ecosystem` in fresh directories under `round`, its result checked
    /// against the published bytes. `Err` is a failed install; a wrong result is reported by
    /// `Ok(Some(reason))`.
    fn install(&self, ecosystem: Ecosystem, round: &Path) -> Result<Option<String>> {
        let base = self.pmcache.base_url().to_owned();
        let wrong = |check: Result<()>| check.err().map(|error| format!("{error:#}"));
        match ecosystem {
            Ecosystem::Pip => {
                let venv = Venv::create(&round.join("venv"))?;
                venv.install(&format!("{base}/pypi/simple/"), &["demo-app"])?
                    .ensure_success("pip install demo-app")?;
                Ok(wrong(crate::pypi::check_demo_app_imports(&venv)))
            }
            Ecosystem::Npm => {
                let sandbox =
                    NpmSandbox::create(&round.join("client"), &format!("{base}/npm/"), &self.trap)?;
                let project = crate::npm::new_project(&round.join("project"), None)?;
                sandbox
                    .npm(&project, &["install"])?
                    .ensure_success("npm install")?;
                Ok(wrong(crate::npm::ensure_demo_tree(&sandbox, &project)))
            }
            Ecosystem::Gem => {
                let sandbox = GemSandbox::create(&round.join("client"), &self.trap)?;
                sandbox
                    .gem_install(&format!("{base}/rubygems/"), &[GEM_APP])?
                    .ensure_success("gem install")?;
                let checks: Result<()> = GEM_FILES.iter().try_for_each(|full| {
                    crate::rubygems::ensure_cached_gem(&sandbox.gem_home(), full)
                });
                Ok(wrong(checks))
            }
            Ecosystem::Composer => {
                let sandbox = ComposerSandbox::create(&round.join("client"), &self.trap)?;
                let project = ComposerProject::create(
                    &round.join("project"),
                    &format!("{base}/packagist"),
                    &[(COMPOSER_APP, "^1.0")],
                    None,
                )?;
                sandbox
                    .install(&project)?
                    .ensure_success("composer install")?;
                let version = sandbox.php_constant(&project, "Proxfix\\App\\Version::BASE_VERSION");
                Ok(wrong(version.and_then(|version| {
                    ensure!(version == "1.1.0", "proxfix/base {version} loaded");
                    Ok(())
                })))
            }
        }
    }
}

/// The four fixture upstreams pmcache fronts.
struct Upstreams<'a> {
    pypi: &'a PypiUpstream,
    npm: &'a NpmUpstream,
    rubygems: &'a RubygemsUpstream,
    packagist: &'a PackagistUpstream,
}

fn serve(scratch: &Path, upstreams: &Upstreams<'_>, max_size: Option<&str>) -> Result<Pmcache> {
    let (pypi, npm) = (upstreams.pypi.index_url(), upstreams.npm.registry_url());
    let rubygems = upstreams.rubygems.base_url();
    let packagist = format!("{}/", upstreams.packagist.repo_url());
    let trusted = pmcache::trusted_hosts(&[
        upstreams.pypi.files_addr(),
        upstreams.packagist.code_host_addr(),
    ]);
    let mut env = vec![
        ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
        ("PMCACHE_PYPI_UPSTREAM", pypi.as_str()),
        ("PMCACHE_NPM_UPSTREAM", npm.as_str()),
        ("PMCACHE_RUBYGEMS_UPSTREAM", rubygems.as_str()),
        ("PMCACHE_PACKAGIST_UPSTREAM", packagist.as_str()),
        ("PMCACHE_PYPI_METADATA_TTL", "5s"),
        ("PMCACHE_NPM_METADATA_TTL", "5s"),
        ("PMCACHE_RUBYGEMS_METADATA_TTL", "5s"),
        ("PMCACHE_PACKAGIST_METADATA_TTL", "5s"),
    ];
    if let Some(max_size) = max_size {
        env.push(("PMCACHE_STORAGE_MAX_SIZE", max_size));
    }
    Pmcache::serve(scratch, &scratch.join("data"), &env)
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    rounds: BTreeMap<Ecosystem, u32>,
    succeeded: u32,
    faults: BTreeMap<&'static str, u32>,
    kills: u32,
    /// Failed installs, by cause (the fault or kill of their round).
    failures: BTreeMap<String, u32>,
    /// Failures with no fault or kill to explain them, and wrong installs: each a bug.
    unexplained: Vec<String>,
    wrong_bytes: Vec<String>,
    lost: Vec<String>,
    /// `pmcache verify` runs against the live server after restarts, and those that found the
    /// store inconsistent.
    live_verifies: u32,
    inconsistent: Vec<String>,
}

impl Tally {
    fn report(&self, seconds: u64, seed: u64, verify: &str) -> String {
        let mut text = String::new();
        let rounds: u32 = self.rounds.values().sum();
        let _ = writeln!(text, "soak: {seconds} s, seed {seed}");
        let _ = writeln!(text, "installs: {rounds} ({:?})", self.rounds);
        let _ = writeln!(text, "succeeded: {}", self.succeeded);
        let _ = writeln!(text, "faults injected: {:?}", self.faults);
        let _ = writeln!(
            text,
            "pmcache killed (SIGKILL) and restarted: {}",
            self.kills
        );
        let _ = writeln!(text, "failed installs by cause: {:?}", self.failures);
        let _ = writeln!(text, "unexplained failures: {}", self.unexplained.len());
        for failure in &self.unexplained {
            let _ = writeln!(text, "  {failure}");
        }
        let _ = writeln!(text, "wrong bytes installed: {}", self.wrong_bytes.len());
        let _ = writeln!(text, "committed artifacts lost: {}", self.lost.len());
        let _ = writeln!(
            text,
            "live pmcache verify after restarts: {} run, {} inconsistent",
            self.live_verifies,
            self.inconsistent.len()
        );
        for finding in &self.inconsistent {
            let _ = writeln!(text, "  {finding}");
        }
        let _ = writeln!(text, "pmcache verify: {verify}");
        text
    }
}

#[test]
#[ignore = "a soak run of minutes: bench/soak.sh runs it"]
fn soak() -> Result<()> {
    let seconds: u64 = setting("PMCACHE_SOAK_SECONDS")?.unwrap_or(120);
    let seed: u64 = match setting("PMCACHE_SOAK_SEED")? {
        Some(seed) => seed,
        None => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
                | 1
        }
    };
    let mut rng = Rng(seed);
    let mut world = World::start()?;
    let mut tally = Tally::default();
    // Artifacts pmcache has committed: a client finished installing them.
    let mut committed: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut round = 0u32;
    while Instant::now() < deadline {
        round += 1;
        let ecosystem = ECOSYSTEMS[rng.below(4) as usize];
        let outcome = soak_round(&mut world, &mut rng, ecosystem, round, &mut tally)?;
        if outcome.killed {
            world.pmcache.kill9().ok();
            world.restart()?;
            if world.max_size.is_none() {
                check_committed(&world, &committed, &mut tally)?;
            }
            verify_live(&world, &mut tally)?;
        }
        if outcome.completed {
            committed.extend(outcome.digests);
        }
    }

    // A last round of every install, no faults: whatever was stored serves correct installs.
    for ecosystem in ECOSYSTEMS {
        round += 1;
        let dir = world.dir.path().join(format!("final-{round}"));
        match world.install(ecosystem, &dir) {
            Ok(None) => {}
            Ok(Some(wrong)) => tally
                .wrong_bytes
                .push(format!("final {ecosystem:?}: {wrong}")),
            Err(error) => tally
                .unexplained
                .push(format!("final {ecosystem:?}: {error:#}")),
        }
    }
    world.pmcache.stop()?;
    if world.max_size.is_none() {
        check_committed(&world, &committed, &mut tally)?;
    }
    let verified = pmcache::verify(world.dir.path(), &world.data_dir())?;
    let verify = verified.stdout.trim().to_owned();
    let cap = world
        .max_size
        .as_deref()
        .unwrap_or("none (nothing evicted)");
    let report = format!(
        "{}storage.max_size: {cap}\n",
        tally.report(seconds, seed, &verify)
    );
    println!("{report}");
    if let Some(path) = std::env::var_os("PMCACHE_SOAK_REPORT") {
        std::fs::write(path, &report)?;
    }
    ensure!(verified.status.success(), "pmcache verify failed: {verify}");
    ensure!(
        tally.unexplained.is_empty()
            && tally.wrong_bytes.is_empty()
            && tally.lost.is_empty()
            && tally.inconsistent.is_empty(),
        "the soak found problems:\n{report}"
    );
    world.trap.ensure_nothing_caught()
}

/// What one round came to.
struct Round {
    killed: bool,
    /// The install finished and was checked, with no kill during it.
    completed: bool,
    digests: Vec<String>,
}

fn soak_round(
    world: &mut World,
    rng: &mut Rng,
    ecosystem: Ecosystem,
    round: u32,
    tally: &mut Tally,
) -> Result<Round> {
    *tally.rounds.entry(ecosystem).or_default() += 1;
    let artifacts = world.artifacts(ecosystem)?;
    let fault = if rng.percent(FAULT_PERCENT) {
        let target = &artifacts[rng.below(artifacts.len() as u64) as usize];
        let (label, fault) = match rng.below(4) {
            0 if target.verifiable => ("corrupt", Some(Fault::Corrupt)),
            0 | 1 => ("cut", Some(Fault::Cut)),
            2 => (
                "throttle",
                Some(Fault::Throttle {
                    bytes_per_second: 512 * 1024,
                }),
            ),
            _ => ("upstream down", None),
        };
        match fault {
            Some(fault) => world.set_fault(ecosystem, &target.fault_key, fault),
            None => world.set_upstream_down(ecosystem, true)?,
        }
        *tally.faults.entry(label).or_default() += 1;
        Some((label, target.fault_key.clone()))
    } else {
        None
    };
    let killer = rng
        .percent(KILL_PERCENT)
        .then(|| kill_later(world.pmcache.pid(), rng.below(KILL_WITHIN_MS)));
    let dir = world.dir.path().join(format!("round-{round}"));
    let result = world.install(ecosystem, &dir);
    let killed = match killer {
        Some(killer) => killer
            .join()
            .map_err(|_| anyhow::anyhow!("killer panicked"))??,
        None => false,
    };
    if killed {
        tally.kills += 1;
    }
    match &fault {
        Some(("upstream down", _)) => world.set_upstream_down(ecosystem, false)?,
        Some((_, key)) => world.clear_fault(ecosystem, key),
        None => {}
    }
    let cause = match (&fault, killed) {
        (_, true) => Some("killed".to_owned()),
        (Some((label, _)), false) if *label != "throttle" => Some(format!("fault: {label}")),
        _ => None,
    };
    let label = format!("round {round} {ecosystem:?}");
    let completed = match result {
        Ok(None) => {
            tally.succeeded += 1;
            !killed
        }
        Ok(Some(wrong)) => {
            tally.wrong_bytes.push(format!("{label}: {wrong}"));
            false
        }
        Err(error) => {
            match cause {
                Some(cause) => {
                    let key = format!("{cause}, {ecosystem:?}");
                    *tally.failures.entry(key).or_default() += 1;
                }
                None => tally.unexplained.push(format!("{label}: {error:#}")),
            }
            false
        }
    };
    // Best effort: the install's log is the evidence, keep only failures' directories.
    if completed {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(Round {
        killed,
        completed,
        digests: artifacts.into_iter().map(|a| a.sha256).collect(),
    })
}

/// Sends SIGKILL to `pid` after `delay_ms`, if it still runs; tells whether it did.
fn kill_later(pid: u32, delay_ms: u64) -> std::thread::JoinHandle<Result<bool>> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(delay_ms));
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .context("running kill")?;
        Ok(status.success())
    })
}

/// `pmcache verify` against the server just restarted (through its control socket): every blob
/// hashes to its name and every index entry names a blob.
fn verify_live(world: &World, tally: &mut Tally) -> Result<()> {
    tally.live_verifies += 1;
    let verified = pmcache::verify(world.dir.path(), &world.data_dir())?;
    if !verified.status.success() {
        tally.inconsistent.push(verified.output());
    }
    Ok(())
}

/// Every artifact a completed install got from pmcache is still in its store.
fn check_committed(world: &World, committed: &BTreeSet<String>, tally: &mut Tally) -> Result<()> {
    let stored: BTreeSet<String> = pmcache::blobs(&world.data_dir())?.into_iter().collect();
    for digest in committed {
        if !stored.contains(digest) && !tally.lost.contains(digest) {
            tally.lost.push(digest.clone());
        }
    }
    Ok(())
}

fn setting(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={value:?} is not a number")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => bail!("{name}: {error}"),
    }
}
