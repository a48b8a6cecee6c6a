//! Real npm, yarn v1 and pnpm as subprocesses, each in a sandbox of its own: HOME, caches, store
//! and config files in the test's temp dir, nothing read from the machine's configuration (whose
//! `~/.npmrc` sets `omit-lockfile-registry-resolved`), and every request that is not for
//! 127.0.0.1 sent to an [`EgressTrap`]. yarn and pnpm are the project-local copies that
//! `scripts/install-test-deps.sh` puts under `target/test-tools/`, never global ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::client_run::ClientRun;
use super::egress_trap::{EgressTrap, route_through_trap};
use super::{Finished, run_bounded};

/// One install of the fixture tree takes a few seconds; the bound leaves room for a slow CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Where `scripts/install-test-deps.sh` installs yarn v1 and pnpm, relative to the repo root.
const TEST_TOOLS: &str = "target/test-tools/node_modules/.bin";

/// A private HOME with the config files every client reads, for one or more client runs.
pub struct Sandbox {
    root: PathBuf,
    registry: String,
    proxy: String,
}

impl Sandbox {
    /// A sandbox at `root` whose clients use `registry` and send anything not for loopback to
    /// `trap`. Its `home/.npmrc` is npm's `--userconfig` (and what pnpm and yarn read as the
    /// user's npmrc); `home/.yarnrc` turns yarn's self-update check off. The trap is given in
    /// the `*_PROXY` variables, which all three clients honour together with `NO_PROXY`, and not
    /// as `proxy` in the npmrc: yarn v1 would send loopback requests through it too.
    pub fn create(root: &Path, registry: &str, trap: &EgressTrap) -> Result<Self> {
        let sandbox = Self {
            root: root.to_owned(),
            registry: registry.to_owned(),
            proxy: trap.proxy_url(),
        };
        std::fs::create_dir_all(sandbox.home())?;
        std::fs::write(
            sandbox.npmrc(),
            format!(
                "registry={registry}\n\
                 audit=false\n\
                 fund=false\n\
                 update-notifier=false\n\
                 fetch-retries=2\n\
                 fetch-retry-mintimeout=200\n\
                 fetch-retry-maxtimeout=1000\n"
            ),
        )?;
        std::fs::write(sandbox.global_npmrc(), "")?;
        std::fs::write(
            sandbox.home().join(".yarnrc"),
            "disable-self-update-check true\n",
        )?;
        Ok(sandbox)
    }

    /// Appends `line` to the sandbox's user npmrc, as a CI job adds its registry credentials
    /// (`//host/npm/:_authToken=TOKEN`).
    pub fn add_to_npmrc(&self, line: &str) -> Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.npmrc())?;
        writeln!(file, "{line}")?;
        Ok(())
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// npm's `--userconfig`.
    fn npmrc(&self) -> PathBuf {
        self.home().join(".npmrc")
    }

    /// npm's `--globalconfig`: empty.
    fn global_npmrc(&self) -> PathBuf {
        self.root.join("global-npmrc")
    }

    fn path(&self, name: &str) -> Result<String> {
        Ok(self
            .root
            .join(name)
            .to_str()
            .context("sandbox path is not UTF-8")?
            .to_owned())
    }

    /// `npm ARGS` in `project`, with the sandbox's userconfig, an empty globalconfig, its own
    /// cache, no audit, fund or update notifier, and every request logged.
    pub fn npm(&self, project: &Path, args: &[&str]) -> Result<ClientRun> {
        let userconfig = self.npmrc();
        let globalconfig = self.global_npmrc();
        let cache = self.path("npm-cache")?;
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--userconfig",
            userconfig.to_str().context("sandbox path is not UTF-8")?,
            "--globalconfig",
            globalconfig.to_str().context("sandbox path is not UTF-8")?,
            "--cache",
            &cache,
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--loglevel=http",
        ]);
        self.run("npm", Path::new("npm"), project, &all)
    }

    /// `yarn install` (v1) in `project` with the sandbox's registry, its own cache folder and no
    /// prompts.
    pub fn yarn_install(&self, project: &Path) -> Result<ClientRun> {
        let cache = self.path("yarn-cache")?;
        let args = [
            "install",
            "--registry",
            &self.registry,
            "--cache-folder",
            &cache,
            "--non-interactive",
            "--no-progress",
            "--network-timeout",
            "30000",
            "--verbose",
        ];
        self.run("yarn", &test_tool("yarn")?, project, &args)
    }

    /// `pnpm install` in `project` with the sandbox's registry, its own store and cache, and
    /// pnpm's defaults otherwise (its release-age check included).
    pub fn pnpm_install(&self, project: &Path) -> Result<ClientRun> {
        let store = format!("--store-dir={}", self.path("pnpm-store")?);
        let cache = format!("--cache-dir={}", self.path("pnpm-cache")?);
        let registry = format!("--registry={}", self.registry);
        let args = [
            "install",
            &registry,
            &store,
            &cache,
            "--reporter=append-only",
            "--config.update-notifier=false",
            "--loglevel=debug",
        ];
        self.run("pnpm", &test_tool("pnpm")?, project, &args)
    }

    /// Runs `node -e SCRIPT` in `project` and returns its trimmed stdout.
    pub fn node(&self, project: &Path, script: &str) -> Result<String> {
        let run = self.run("node", Path::new("node"), project, &["-e", script])?;
        ensure!(run.success, "node -e failed:\n{}", run.output);
        Ok(run.stdout.trim().to_owned())
    }

    fn run(&self, label: &str, program: &Path, project: &Path, args: &[&str]) -> Result<ClientRun> {
        let mut command = Command::new(program);
        command.args(args);
        self.isolate(&mut command, project)?;
        let finished: Finished = run_bounded(command, &self.root.join("logs"), CLIENT_TIMEOUT)?;
        Ok(ClientRun::of(label, args, project, &finished))
    }

    /// A clean environment: the sandbox's HOME and XDG dirs, the trap as proxy for everything
    /// not on loopback, and nothing else from the machine.
    fn isolate(&self, command: &mut Command, project: &Path) -> Result<()> {
        super::clean_environment(command, project, &self.home())?;
        command
            .env("npm_config_userconfig", self.npmrc())
            .env("npm_config_globalconfig", self.global_npmrc())
            .env("NO_UPDATE_NOTIFIER", "1");
        route_through_trap(command, &self.proxy);
        Ok(())
    }
}

/// A project-local test tool (`yarn`, `pnpm`) installed by `scripts/install-test-deps.sh`.
pub fn test_tool(name: &str) -> Result<PathBuf> {
    let path = super::repo_root().join(TEST_TOOLS).join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (it installs yarn v1 and pnpm into \
         target/test-tools/)",
        path.display()
    );
    Ok(path)
}

/// The registry npm uses when nothing configures one (its built-in default), asked of npm itself
/// with empty user and global configs, so that no registry host is written in this repo.
pub fn default_registry(scratch: &Path) -> Result<String> {
    std::fs::create_dir_all(scratch.join("home"))?;
    // Two files: npm refuses to load one file as both user and global config.
    let user = scratch.join("empty-user-npmrc");
    let global = scratch.join("empty-global-npmrc");
    std::fs::write(&user, "")?;
    std::fs::write(&global, "")?;
    let mut command = Command::new("npm");
    command
        .args(["config", "get", "registry", "--userconfig"])
        .arg(&user)
        .arg("--globalconfig")
        .arg(&global)
        .env_clear()
        .current_dir(scratch)
        .env("PATH", super::subprocess_path()?)
        .env("HOME", scratch.join("home"))
        .env("LANG", "C.UTF-8");
    let finished = run_bounded(command, &scratch.join("logs"), Duration::from_secs(30))?;
    ensure!(
        finished.status.success(),
        "npm config get registry failed:\n{}",
        finished.output()
    );
    let registry = finished.stdout.trim().to_owned();
    ensure!(
        registry.starts_with("https://") || registry.starts_with("http://"),
        "npm's default registry {registry:?} is not an http(s) URL"
    );
    Ok(if registry.ends_with('/') {
        registry
    } else {
        format!("{registry}/")
    })
}
