//! Real `composer` (and `php`) as subprocesses in a sandbox of their own: HOME, `COMPOSER_HOME`
//! and `COMPOSER_CACHE_DIR` in the test's temp dir, no global Composer config or auth from the
//! machine, and every request that is not for 127.0.0.1 sent to an [`EgressTrap`]. Also the
//! projects Composer runs in (a `composer.json` naming one Composer repository and turning
//! packagist.org off), reading their `composer.lock`, and asking PHP what got installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Map, Value, json};

use super::client_run::ClientRun;
use super::egress_trap::{EgressTrap, route_through_trap};
use super::run_bounded;

/// One resolution and install of the fixture packages takes a few seconds; the bound leaves
/// room for a slow CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// A private HOME, Composer home and Composer cache, for one or more client runs.
pub struct Sandbox {
    root: PathBuf,
    proxy: String,
}

impl Sandbox {
    /// A sandbox at `root` whose clients send anything not for loopback to `trap`, through the
    /// `*_proxy` variables: Composer's `ProxyManager` reads `http_proxy`/`HTTP_PROXY` (on the
    /// CLI), `https_proxy`/`HTTPS_PROXY` and `no_proxy`/`NO_PROXY`, and hands them to curl.
    /// `COMPOSER_HOME` holds an empty `config.json`, so no global setting applies.
    pub fn create(root: &Path, trap: &EgressTrap) -> Result<Self> {
        let sandbox = Self {
            root: root.to_owned(),
            proxy: trap.proxy_url(),
        };
        for dir in [sandbox.home(), sandbox.composer_home(), sandbox.cache_dir()] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(sandbox.composer_home().join("config.json"), "{}\n")?;
        Ok(sandbox)
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// `COMPOSER_HOME`: global config and auth (both empty here).
    pub fn composer_home(&self) -> PathBuf {
        self.root.join("composer-home")
    }

    /// `COMPOSER_CACHE_DIR`: cached metadata (`repo/`) and archives (`files/`).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("composer-cache")
    }

    /// Empties Composer's cache, metadata and archives alike.
    pub fn clear_cache(&self) -> Result<()> {
        std::fs::remove_dir_all(self.cache_dir())?;
        std::fs::create_dir_all(self.cache_dir())?;
        Ok(())
    }

    /// `composer ARGS` in `project`.
    pub fn composer(&self, project: &Project, args: &[&str]) -> Result<ClientRun> {
        let mut command = Command::new("composer");
        command.args(args);
        self.isolate(&mut command, &project.dir)?;
        self.run("composer", command, &project.dir, args)
    }

    /// `composer install`: from `composer.lock` if there is one, else resolving first.
    pub fn install(&self, project: &Project) -> Result<ClientRun> {
        self.composer(project, &["install", "--no-progress"])
    }

    /// `composer update ARGS` (no args: every package).
    pub fn update(&self, project: &Project, args: &[&str]) -> Result<ClientRun> {
        let mut all = vec!["update", "--no-progress"];
        all.extend(args);
        self.composer(project, &all)
    }

    /// `composer require REQUIREMENT` (`proxfix/tool:dev-main`).
    pub fn require(&self, project: &Project, requirement: &str) -> Result<ClientRun> {
        self.composer(project, &["require", "--no-progress", requirement])
    }

    /// `composer audit --format=json`: full advisories from the repository's API (the table
    /// format of Composer 2.5 does not show advisory ids). It exits non-zero when it finds
    /// advisories, so the run is returned as is.
    pub fn audit(&self, project: &Project) -> Result<ClientRun> {
        self.composer(project, &["audit", "--format=json"])
    }

    /// Runs `php -r SCRIPT` in `project` after loading its `vendor/autoload.php`, and returns
    /// the trimmed stdout.
    pub fn php(&self, project: &Project, script: &str) -> Result<String> {
        let code = format!("require 'vendor/autoload.php'; {script}");
        let mut command = Command::new("php");
        command.args(["-r", &code]);
        self.isolate(&mut command, &project.dir)?;
        let run = self.run("php", command, &project.dir, &["-r", &code])?;
        ensure!(run.success, "php -r failed:\n{}", run.output);
        Ok(run.stdout.trim().to_owned())
    }

    /// The value of the class constant `constant` (`Proxfix\Base\Version::VERSION`), as PHP
    /// loads it from the project's vendor directory.
    pub fn php_constant(&self, project: &Project, constant: &str) -> Result<String> {
        self.php(project, &format!("echo \\{constant};"))
    }

    fn run(&self, label: &str, command: Command, dir: &Path, args: &[&str]) -> Result<ClientRun> {
        let finished = run_bounded(command, &self.root.join("logs"), CLIENT_TIMEOUT)?;
        Ok(ClientRun::of(label, args, dir, &finished))
    }

    /// A clean environment: the sandbox's HOME, XDG dirs, Composer home and cache, no prompts,
    /// the trap as proxy for everything not on loopback, and nothing else from the machine.
    fn isolate(&self, command: &mut Command, dir: &Path) -> Result<()> {
        super::clean_environment(command, dir, &self.home())?;
        command
            .env("COMPOSER_HOME", self.composer_home())
            .env("COMPOSER_CACHE_DIR", self.cache_dir())
            .env("COMPOSER_NO_INTERACTION", "1")
            // Tests may run as root; Composer would warn (and, interactive, ask) on every run.
            .env("COMPOSER_ALLOW_SUPERUSER", "1")
            .env("COMPOSER_DISABLE_XDEBUG_WARN", "1");
        route_through_trap(command, &self.proxy);
        Ok(())
    }
}

/// A Composer project: a directory with a `composer.json`.
pub struct Project {
    pub dir: PathBuf,
}

impl Project {
    /// Writes a `composer.json` in `dir` whose only repository is the Composer repository at
    /// `repository_url` (packagist.org turned off), with `secure-http: false` (Composer refuses
    /// plain http otherwise, loopback included), `require` as given and, if set,
    /// `minimum-stability`.
    pub fn create(
        dir: &Path,
        repository_url: &str,
        require: &[(&str, &str)],
        minimum_stability: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let require: Map<String, Value> = require
            .iter()
            .map(|(name, constraint)| ((*name).to_owned(), json!(constraint)))
            .collect();
        let mut manifest = json!({
            "name": "pmcache-e2e/project",
            "description": "A project of pmcache's end-to-end tests",
            "type": "project",
            "repositories": [
                { "type": "composer", "url": repository_url },
                { "packagist.org": false },
            ],
            "require": require,
            "config": { "secure-http": false },
        });
        if let (Some(stability), Some(object)) = (minimum_stability, manifest.as_object_mut()) {
            object.insert("minimum-stability".to_owned(), json!(stability));
        }
        std::fs::write(
            dir.join("composer.json"),
            serde_json::to_string_pretty(&manifest)? + "\n",
        )?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The project's `composer.json` as it stands (`composer require` edits it).
    pub fn manifest(&self) -> Result<Value> {
        read_json(&self.dir.join("composer.json"))
    }

    /// The project's `composer.lock`.
    pub fn lock(&self) -> Result<Value> {
        read_json(&self.dir.join("composer.lock"))
    }

    /// The `composer.lock` entry of `name` (from `packages`).
    pub fn locked(&self, name: &str) -> Result<Value> {
        let lock = self.lock()?;
        lock["packages"]
            .as_array()
            .context("composer.lock has no packages list")?
            .iter()
            .find(|package| package["name"] == name)
            .cloned()
            .with_context(|| format!("composer.lock does not lock {name}:\n{lock:#}"))
    }

    /// Deletes `vendor/`, so that the next install starts from nothing but the lock.
    pub fn remove_vendor(&self) -> Result<()> {
        let vendor = self.dir.join("vendor");
        if vendor.exists() {
            std::fs::remove_dir_all(vendor)?;
        }
        Ok(())
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sandbox's proxy variables are a form Composer honours: a repository off loopback is
    /// asked of the trap (a `CONNECT` for https), and the run fails without leaving the machine.
    #[test]
    fn requests_off_loopback_go_to_the_trap() -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("pmcache-e2e-composer-trap-")
            .tempdir()?;
        let trap = EgressTrap::start()?;
        let sandbox = Sandbox::create(&dir.path().join("client"), &trap)?;
        let project = Project::create(
            &dir.path().join("project"),
            "https://repo.example.invalid",
            &[("proxfix/base", "^1.0")],
            Some("stable"),
        )?;
        ensure!(project.manifest()?["minimum-stability"] == "stable");
        sandbox
            .update(&project, &[])?
            .ensure_failure("composer update against a repository off loopback")?;
        let caught = trap.caught();
        ensure!(
            caught
                .iter()
                .any(|line| line.starts_with("CONNECT repo.example.invalid:443 ")),
            "the trap should have caught the repository request: {caught:?}"
        );
        Ok(())
    }
}
