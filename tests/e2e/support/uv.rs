//! Real uv (the pinned copy `scripts/install-test-deps.sh` puts under `target/test-tools/uv/`) in
//! a sandbox: its own HOME, no configuration files, no Python downloads, a cache dir the test
//! names, the test CA as its only extra trust, and every request not for loopback sent to an
//! [`EgressTrap`]. Its concurrency and timeouts stay at uv's defaults.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::client_run::ClientRun;
use super::egress_trap::{EgressTrap, route_through_trap};
use super::run_bounded;

/// Where `scripts/install-test-deps.sh` installs uv, relative to the repo root.
const UV: &str = "target/test-tools/uv/bin/uv";
/// A hundred projects take uv seconds; the bound leaves room for a slow CI and for uv's own
/// retries after a gateway timeout, so that a stalling proxy fails with uv's message.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(150);
const VENV_TIMEOUT: Duration = Duration::from_secs(60);

/// A private HOME and scratch space for uv runs.
pub struct Uv {
    root: PathBuf,
    /// `SSL_CERT_FILE`: the PEM roots uv trusts besides its built-in ones.
    ca_file: Option<PathBuf>,
    proxy: String,
}

impl Uv {
    /// A sandbox at `root` trusting `ca_file` (if any) and sending anything not for loopback to
    /// `trap`.
    pub fn create(root: &Path, ca_file: Option<&Path>, trap: &EgressTrap) -> Result<Self> {
        std::fs::create_dir_all(root.join("home"))?;
        Ok(Self {
            root: root.to_owned(),
            ca_file: ca_file.map(Path::to_owned),
            proxy: trap.proxy_url(),
        })
    }

    /// `uv venv --python PYTHON root/NAME` with the real `python3`; returns the venv's path.
    pub fn venv(&self, name: &str) -> Result<PathBuf> {
        let venv = self.root.join(name);
        let mut command = self.command()?;
        command
            .arg("venv")
            .arg("--python")
            .arg(super::python()?)
            .arg(&venv);
        let finished = run_bounded(command, &self.root.join("logs"), VENV_TIMEOUT)?;
        ensure!(
            finished.status.success(),
            "uv venv failed:\n{}",
            finished.output()
        );
        Ok(venv)
    }

    /// `uv pip install --require-hashes --index-url INDEX -r REQUIREMENTS` into `venv`, with
    /// `cache` as uv's cache dir.
    pub fn install_requirements(
        &self,
        venv: &Path,
        index_url: &str,
        requirements: &Path,
        cache: &Path,
    ) -> Result<ClientRun> {
        let python = venv.join("bin/python");
        let args = [
            "pip",
            "install",
            "--require-hashes",
            "--index-url",
            index_url,
            "--python",
            path_str(&python)?,
            "-r",
            path_str(requirements)?,
        ];
        let mut command = self.command()?;
        command.args(args).env("UV_CACHE_DIR", cache);
        let finished = run_bounded(command, &self.root.join("logs"), INSTALL_TIMEOUT)?;
        Ok(ClientRun::of("uv", &args, &self.root, &finished))
    }

    /// `uv pip install --index-url INDEX --python VENV PACKAGES…` into `venv`, with the
    /// sandbox's cache.
    pub fn pip_install(
        &self,
        venv: &Path,
        index_url: &str,
        packages: &[&str],
    ) -> Result<ClientRun> {
        let python = venv.join("bin/python");
        let mut args = vec![
            "pip",
            "install",
            "--index-url",
            index_url,
            "--python",
            path_str(&python)?,
        ];
        args.extend_from_slice(packages);
        let mut command = self.command()?;
        command.args(&args);
        let finished = run_bounded(command, &self.root.join("logs"), INSTALL_TIMEOUT)?;
        Ok(ClientRun::of("uv", &args, &self.root, &finished))
    }

    /// uv in the sandbox's clean environment.
    fn command(&self) -> Result<Command> {
        let mut command = Command::new(binary()?);
        super::clean_environment(&mut command, &self.root, &self.root.join("home"))?;
        command
            .env("UV_NO_CONFIG", "1")
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_CACHE_DIR", self.root.join("uv-cache"));
        if let Some(ca_file) = &self.ca_file {
            command.env("SSL_CERT_FILE", ca_file);
        }
        route_through_trap(&mut command, &self.proxy);
        Ok(command)
    }
}

/// The pinned uv; fails, naming the script that installs it, when it is missing.
pub fn binary() -> Result<PathBuf> {
    let path = super::repo_root().join(UV);
    ensure!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (it installs uv into target/test-tools/)",
        path.display()
    );
    Ok(path)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
