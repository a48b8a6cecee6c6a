//! One end-to-end test's world, whatever the ecosystem: a temp dir, a fixture upstream `U`, an
//! egress trap for clients, and pmcache (once started) on the temp dir's `data/` with the
//! settings the test chose. Each ecosystem has a constructor here that points pmcache at its
//! fixture; a test module adds its own helpers with an `impl Case<ItsUpstream>` block.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tempfile::TempDir;

use super::egress_trap::EgressTrap;
use super::fault_upstream::FaultUpstream;
use super::npm_upstream::NpmUpstream;
use super::packagist_upstream::PackagistUpstream;
use super::pmcache::{LOG_FILTER, Launch, Pmcache};
use super::pypi_upstream::{PageFormat, PypiUpstream};
use super::rubygems_upstream::RubygemsUpstream;
use super::tls;

/// One test's world. Fields drop in order: pmcache first (printing its log), the temp dir last.
pub struct Case<U> {
    pmcache: Option<Pmcache>,
    pub upstream: U,
    pub trap: EgressTrap,
    pub dir: TempDir,
    /// What pmcache was last started with, on top of the harness's minimal environment.
    settings: Vec<(String, String)>,
}

impl<U> Case<U> {
    /// A new temp dir (named after the test's module), `upstream` and an egress trap; no pmcache
    /// yet.
    pub fn new(upstream: U) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pmcache-e2e-{}-", module_name()))
            .tempdir()?;
        Ok(Self {
            pmcache: None,
            upstream,
            trap: EgressTrap::start()?,
            dir,
            settings: Vec::new(),
        })
    }

    /// Starts pmcache on the case's data dir with `settings` (a later setting of the same
    /// variable wins), and keeps them for [`Case::restart`].
    pub fn serve(mut self, settings: &[(&str, &str)]) -> Result<Self> {
        self.settings = owned(settings);
        self.spawn()?;
        Ok(self)
    }

    /// Starts pmcache again with the settings it last started with. A pmcache still running is
    /// killed first.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// Starts pmcache again with `extra` on top of the settings it last started with (they are
    /// kept for later restarts).
    pub fn restart_with(&mut self, extra: &[(&str, &str)]) -> Result<()> {
        self.settings.extend(owned(extra));
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        // A restart keeps the address, as an operator's does: lockfiles and client caches
        // made before it still name pmcache's URLs.
        let listen = match &self.pmcache {
            Some(old) => format!("127.0.0.1:{}", old.port()?),
            None => "127.0.0.1:0".to_owned(),
        };
        // The old process goes (and prints its log) before the new one opens the data dir.
        self.pmcache = None;
        let mut launch = Launch::serve(self.dir.path(), &self.data_dir(), &[])?;
        for arg in &mut launch.args {
            if arg == "127.0.0.1:0" {
                arg.clone_from(&listen);
            }
        }
        launch.env.extend(self.settings.iter().cloned());
        self.pmcache = Some(Pmcache::spawn(launch)?);
        Ok(())
    }

    /// The running pmcache.
    ///
    /// # Panics
    /// If the case never started one: a test's own mistake, not a finding.
    pub fn pmcache(&self) -> &Pmcache {
        self.pmcache
            .as_ref()
            .expect("this case runs without pmcache")
    }

    /// The running pmcache, to stop or kill.
    ///
    /// # Panics
    /// If the case never started one.
    pub fn pmcache_mut(&mut self) -> &mut Pmcache {
        self.pmcache
            .as_mut()
            .expect("this case runs without pmcache")
    }

    /// pmcache, if this case started one (clients may talk to the fixture directly).
    pub fn started(&self) -> Option<&Pmcache> {
        self.pmcache.as_ref()
    }

    /// pmcache's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `name` in the case's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// No request tried to leave loopback.
    pub fn ensure_no_egress(&self) -> Result<()> {
        self.trap.ensure_nothing_caught()
    }
}

impl Case<PypiUpstream> {
    /// The PyPI fixture in `format`, and pmcache with it as PyPI upstream (its hosts trusted)
    /// and `settings`.
    pub fn pypi(format: PageFormat, settings: &[(&str, &str)]) -> Result<Self> {
        Case::new(PypiUpstream::start(format)?)?.serve_pypi(settings)
    }

    /// Starts pmcache with the fixture as PyPI upstream (its hosts trusted) and `settings`: for
    /// a test that prepares the data dir first.
    pub fn serve_pypi(self, settings: &[(&str, &str)]) -> Result<Self> {
        let (index, trusted) = (self.upstream.index_url(), self.upstream.trusted_hosts());
        let mut all = vec![
            ("PMCACHE_PYPI_UPSTREAM", index.as_str()),
            ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
        ];
        all.extend_from_slice(settings);
        self.serve(&all)
    }

    /// The index URL pip gets: pmcache's `/pypi/simple/`.
    pub fn index_url(&self) -> String {
        self.pmcache().pypi_index_url()
    }
}

impl Case<FaultUpstream> {
    /// The fault upstream, and pmcache with only the PyPI frontend in front of it and `settings`.
    pub fn faults(settings: &[(&str, &str)]) -> Result<Self> {
        let upstream = FaultUpstream::start()?;
        let index = upstream.index_url();
        let mut all = vec![
            ("PMCACHE_NPM_ENABLED", "false"),
            ("PMCACHE_RUBYGEMS_ENABLED", "false"),
            ("PMCACHE_PACKAGIST_ENABLED", "false"),
            ("PMCACHE_PYPI_UPSTREAM", index.as_str()),
        ];
        all.extend_from_slice(settings);
        Case::new(upstream)?.serve(&all)
    }
}

impl Case<NpmUpstream> {
    /// `upstream` (the fixture registry or the tree over TLS), and pmcache with it as npm
    /// upstream (trusting the tests' CA), the npm frontend's debug log, the PyPI frontend off,
    /// and `settings`.
    pub fn npm(upstream: NpmUpstream, settings: &[(&str, &str)]) -> Result<Self> {
        let case = Case::new(upstream)?;
        let ca_file = tls::test_ca()?.write_ca_file(case.dir.path())?;
        let ca_file = ca_file
            .to_str()
            .context("temp dir is not UTF-8")?
            .to_owned();
        let registry = case.upstream.registry_url();
        let filter = format!("{LOG_FILTER},pmcache_npm=debug");
        let mut all = vec![
            ("PMCACHE_NPM_UPSTREAM", registry.as_str()),
            ("PMCACHE_UPSTREAM_CA_FILE", ca_file.as_str()),
            ("PMCACHE_PYPI_ENABLED", "false"),
            ("RUST_LOG", filter.as_str()),
        ];
        all.extend_from_slice(settings);
        case.serve(&all)
    }

    /// `http://127.0.0.1:PORT/npm/`: the registry URL clients get.
    pub fn registry(&self) -> String {
        format!("{}/npm/", self.pmcache().base_url())
    }
}

impl Case<RubygemsUpstream> {
    /// The fixture gem server and the trap, no pmcache: clients talk to the fixture directly.
    pub fn rubygems_fixture() -> Result<Self> {
        Case::new(RubygemsUpstream::start()?)
    }

    /// The fixture gem server, and pmcache in front of it with index files fresh for `ttl`, the
    /// other frontends off.
    pub fn rubygems(ttl: &str) -> Result<Self> {
        Self::rubygems_with(ttl, &[])
    }

    /// As [`Case::rubygems`], with `settings` on top.
    pub fn rubygems_with(ttl: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let case = Self::rubygems_fixture()?;
        let upstream = case.upstream.base_url();
        let mut all = vec![
            ("PMCACHE_RUBYGEMS_UPSTREAM", upstream.as_str()),
            ("PMCACHE_RUBYGEMS_METADATA_TTL", ttl),
            ("PMCACHE_PYPI_ENABLED", "false"),
            ("PMCACHE_NPM_ENABLED", "false"),
        ];
        all.extend_from_slice(settings);
        case.serve(&all)
    }
}

impl Case<PackagistUpstream> {
    /// The fixture Composer repository and the trap, no pmcache: Composer talks to the fixture
    /// directly.
    pub fn packagist_fixture() -> Result<Self> {
        Case::new(PackagistUpstream::start()?)
    }

    /// The fixture repository, and pmcache in front of it with metadata fresh for `ttl`, the
    /// other frontends off, and the settings `extra` makes of the fixture.
    pub fn packagist(
        ttl: &str,
        extra: impl FnOnce(&PackagistUpstream) -> Vec<(String, String)>,
    ) -> Result<Self> {
        let case = Self::packagist_fixture()?;
        let upstream = format!("{}/", case.upstream.repo_url());
        let trusted = case.upstream.trusted_hosts();
        let extra = extra(&case.upstream);
        let mut all = vec![
            ("PMCACHE_PACKAGIST_UPSTREAM", upstream.as_str()),
            ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
            ("PMCACHE_PACKAGIST_METADATA_TTL", ttl),
            ("PMCACHE_PYPI_ENABLED", "false"),
            ("PMCACHE_NPM_ENABLED", "false"),
            ("PMCACHE_RUBYGEMS_ENABLED", "false"),
        ];
        all.extend(
            extra
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        case.serve(&all)
    }
}

fn owned(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// The module of the running test (`npm` for `npm::some_test`): libtest names each test's thread
/// after the test. Kept short: pmcache's control socket lives in the data dir, and a socket path
/// has a length limit.
fn module_name() -> String {
    let thread = std::thread::current();
    let module = thread
        .name()
        .and_then(|name| name.split("::").next())
        .unwrap_or("case");
    module
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(20)
        .collect()
}
