//! Real pip in a fresh virtualenv per use, isolated from the machine's pip configuration: its own
//! HOME, no config files, no cache, no version check, and an explicit index URL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::client_run::ClientRun;
use super::{Finished, run_bounded};

/// The `Accept` header pip sends for project pages (PEP 691 JSON first, then HTML).
pub const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

/// Creating a venv copies pip in; a pip run builds an sdist and fetches a handful of files.
const VENV_TIMEOUT: Duration = Duration::from_secs(60);
const PIP_TIMEOUT: Duration = Duration::from_secs(50);

/// A virtualenv with its own HOME and scratch space.
pub struct Venv {
    root: PathBuf,
}

impl Venv {
    /// A fresh venv at `root/venv` (with `root/home` as HOME) made by the real `python3`.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("home"))?;
        let mut command = Command::new(super::python()?);
        command.args(["-m", "venv"]).arg(root.join("venv"));
        isolate(&mut command, root)?;
        let finished = run_bounded(command, &root.join("logs"), VENV_TIMEOUT)?;
        if !finished.status.success() {
            bail!("python3 -m venv failed:\n{}", finished.output());
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("venv/bin").join(name)
    }

    /// `pip install --no-cache-dir --index-url INDEX PACKAGES…`.
    pub fn install(&self, index_url: &str, packages: &[&str]) -> Result<ClientRun> {
        let mut args = vec![
            "install",
            "--no-cache-dir",
            "--progress-bar",
            "off",
            "--index-url",
            index_url,
        ];
        args.extend_from_slice(packages);
        self.pip(&args)
    }

    /// `pip download --no-cache-dir --index-url INDEX -d DEST PACKAGES…`.
    pub fn download(&self, index_url: &str, dest: &Path, packages: &[&str]) -> Result<ClientRun> {
        let dest = dest.to_str().context("download dir is not UTF-8")?;
        let mut args = vec![
            "download",
            "--no-cache-dir",
            "--progress-bar",
            "off",
            "--index-url",
            index_url,
            "-d",
            dest,
        ];
        args.extend_from_slice(packages);
        self.pip(&args)
    }

    /// Runs `python -m pip ARGS` in the isolated environment.
    pub fn pip(&self, args: &[&str]) -> Result<ClientRun> {
        let mut command = Command::new(self.bin("python"));
        command.args(["-m", "pip"]).args(args);
        isolate(&mut command, &self.root)?;
        let finished = run_bounded(command, &self.root.join("logs"), PIP_TIMEOUT)?;
        Ok(ClientRun {
            success: finished.status.success(),
            stdout: finished.stdout.clone(),
            output: format!("$ pip {}\n{}", args.join(" "), finished.output()),
        })
    }

    /// Runs `python -c CODE` in the venv and returns its trimmed stdout.
    pub fn python(&self, code: &str) -> Result<String> {
        let mut command = Command::new(self.bin("python"));
        command.args(["-c", code]);
        isolate(&mut command, &self.root)?;
        let Finished {
            status,
            stdout,
            stderr,
        } = run_bounded(command, &self.root.join("logs"), Duration::from_secs(30))?;
        if !status.success() {
            bail!("python -c {code:?} failed ({status}):\n{stdout}\n{stderr}");
        }
        Ok(stdout.trim().to_owned())
    }
}

/// A clean environment: nothing from the machine's pip configuration or environment leaks in.
fn isolate(command: &mut Command, root: &Path) -> Result<()> {
    super::clean_environment(command, root, &root.join("home"))?;
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("PYTHONNOUSERSITE", "1");
    Ok(())
}
