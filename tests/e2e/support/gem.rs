//! Real `gem` and `bundle` as subprocesses in a sandbox of their own: HOME, `GEM_HOME`, spec
//! cache, Bundler's user home, app config and install path in the test's temp dir, no gemrc or
//! Bundler config from the machine, and every request that is not for 127.0.0.1 sent to an
//! [`EgressTrap`]. Also the Gemfile projects Bundler runs in, and asking Ruby what got installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::client_run::ClientRun;
use super::egress_trap::{EgressTrap, route_through_trap};
use super::run_bounded;

/// One install of the fixture gems takes a few seconds; the bound leaves room for a slow CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The source a mirrored Gemfile names, and the key Bundler looks its mirror up by.
pub const RUBYGEMS_ORG: &str = "https://rubygems.org";
/// `bundle config set mirror.https://rubygems.org URL` as an environment variable: Bundler
/// (settings.rb `key_for`) normalises the URI with a trailing slash, turns `.` into `__` and
/// upcases.
pub const MIRROR_ENV: &str = "BUNDLE_MIRROR__HTTPS://RUBYGEMS__ORG/";
/// The sandbox's gemrc (`GEMRC`; HOME has no `.gemrc`): backtraces for messages, everything else
/// RubyGems' defaults. RubyGems still reads a system-wide gemrc if the machine has one: only
/// `--norc` skips that, and it would skip this file too.
const GEMRC: &str = "---\n:backtrace: true\n";

/// A private HOME, gem home and Bundler home, for one or more client runs.
pub struct Sandbox {
    root: PathBuf,
    proxy: String,
}

impl Sandbox {
    /// A sandbox at `root` whose clients send anything not for loopback to `trap`, through the
    /// `*_proxy` variables: RubyGems (`Gem::Request.get_proxy_from_env`) and Bundler's
    /// net-http-persistent (`proxy_from_env`, which uses `http_proxy` for https too) both honour
    /// them with `no_proxy`.
    pub fn create(root: &Path, trap: &EgressTrap) -> Result<Self> {
        let sandbox = Self {
            root: root.to_owned(),
            proxy: trap.proxy_url(),
        };
        for dir in [
            "home",
            "gem-home",
            "gem-spec-cache",
            "bundle-user-home",
            "bundle-app-config",
            "bundle",
        ] {
            std::fs::create_dir_all(sandbox.dir(dir))?;
        }
        std::fs::write(sandbox.gemrc(), GEMRC)?;
        std::fs::write(sandbox.bundle_user_config(), "")?;
        Ok(sandbox)
    }

    /// The directory `name` inside the sandbox (not created): for a fresh `BUNDLE_PATH`, say.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `GEM_HOME`: where `gem install` puts gems.
    pub fn gem_home(&self) -> PathBuf {
        self.dir("gem-home")
    }

    /// Bundler's user home (`BUNDLE_USER_HOME`), which holds its compact index cache.
    pub fn bundle_user_home(&self) -> PathBuf {
        self.dir("bundle-user-home")
    }

    /// The default `BUNDLE_PATH`.
    pub fn bundle_path(&self) -> PathBuf {
        self.dir("bundle")
    }

    fn gemrc(&self) -> PathBuf {
        self.dir("gemrc")
    }

    fn bundle_user_config(&self) -> PathBuf {
        self.bundle_user_home().join("config")
    }

    /// `gem install --clear-sources --source SOURCE --no-document ARGS`, into the sandbox's
    /// `GEM_HOME`.
    pub fn gem_install(&self, source: &str, args: &[&str]) -> Result<ClientRun> {
        let mut all = vec![
            "install",
            "--clear-sources",
            "--source",
            source,
            "--no-document",
        ];
        all.extend(args);
        self.gem(&all)
    }

    /// `gem ARGS` in the sandbox.
    pub fn gem(&self, args: &[&str]) -> Result<ClientRun> {
        let mut command = Command::new("gem");
        command.args(args);
        self.isolate(&mut command, &self.root)?;
        self.run("gem", command, &self.root, args)
    }

    /// `bundle ARGS` in `project`, with the sandbox's Bundler homes, `BUNDLE_RETRY=0` (fail fast)
    /// and four jobs; `extra_env` comes last, so it may override any of them (`BUNDLE_PATH` for a
    /// fresh install path, say).
    pub fn bundle(
        &self,
        project: &Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<ClientRun> {
        let mut command = Command::new("bundle");
        command.args(args);
        self.isolate(&mut command, project)?;
        self.bundler_env(&mut command, project);
        command.envs(extra_env.iter().copied());
        let mut label = "bundle".to_owned();
        for (name, value) in extra_env {
            label = format!("{name}={value} {label}");
        }
        self.run(&label, command, project, args)
    }

    /// Runs `ruby -e SCRIPT` with the sandbox's gem home and returns its trimmed stdout: what
    /// `gem install` installed, asked of Ruby.
    pub fn ruby(&self, script: &str) -> Result<String> {
        let mut command = Command::new("ruby");
        command.args(["-e", script]);
        self.isolate(&mut command, &self.root)?;
        let run = self.run("ruby", command, &self.root, &["-e", script])?;
        ensure!(run.success, "ruby -e failed:\n{}", run.output);
        Ok(run.stdout.trim().to_owned())
    }

    /// Runs `bundle exec ruby -e SCRIPT` in `project` and returns its trimmed stdout: what the
    /// bundle resolved to, asked of Ruby.
    pub fn bundle_exec_ruby(
        &self,
        project: &Path,
        script: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<String> {
        let run = self.bundle(project, &["exec", "ruby", "-e", script], extra_env)?;
        ensure!(run.success, "bundle exec ruby -e failed:\n{}", run.output);
        Ok(run.stdout.trim().to_owned())
    }

    fn run(&self, label: &str, command: Command, dir: &Path, args: &[&str]) -> Result<ClientRun> {
        let finished = run_bounded(command, &self.dir("logs"), CLIENT_TIMEOUT)?;
        Ok(ClientRun::of(label, args, dir, &finished))
    }

    /// A clean environment: the sandbox's HOME, XDG dirs, gem home and gemrc, the trap as proxy
    /// for everything not on loopback, and nothing else from the machine.
    fn isolate(&self, command: &mut Command, dir: &Path) -> Result<()> {
        let gem_path = std::env::join_paths([self.gem_home().as_path(), bundler_gem_dir()?])?;
        super::clean_environment(command, dir, &self.dir("home"))?;
        command
            .env("GEMRC", self.gemrc())
            .env("GEM_HOME", self.gem_home())
            .env("GEM_PATH", gem_path)
            .env("GEM_SPEC_CACHE", self.dir("gem-spec-cache"));
        route_through_trap(command, &self.proxy);
        Ok(())
    }

    /// Bundler's homes and settings, all in the sandbox: user config and cache
    /// (`BUNDLE_USER_HOME`), app config, install path, and the Gemfile in `project`.
    fn bundler_env(&self, command: &mut Command, project: &Path) {
        command
            .env("BUNDLE_GEMFILE", project.join("Gemfile"))
            .env("BUNDLE_USER_HOME", self.bundle_user_home())
            .env("BUNDLE_USER_CONFIG", self.bundle_user_config())
            .env("BUNDLE_APP_CONFIG", self.dir("bundle-app-config"))
            .env("BUNDLE_PATH", self.bundle_path())
            .env("BUNDLE_RETRY", "0")
            .env("BUNDLE_JOBS", "4")
            // Tests may run as root; Bundler would warn on every run.
            .env("BUNDLE_SILENCE_ROOT_WARNING", "true")
            .env("BUNDLE_DISABLE_VERSION_CHECK", "true");
    }
}

/// The directory holding the `bundler` gem that `bundle` on PATH runs (on Debian, the packaged
/// Bundler is not the default gem, and a bare `GEM_PATH` would hide it), resolved once with the
/// inherited environment.
fn bundler_gem_dir() -> Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new("ruby")
            .args([
                "-e",
                "print Gem::Specification.find_by_name(\"bundler\").base_dir",
            ])
            .output()
            .map_err(|error| format!("ruby is needed by the RubyGems tests: {error}"))?;
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || dir.is_empty() {
            return Err(format!(
                "ruby could not locate the bundler gem: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(PathBuf::from(dir))
    })
    .as_deref()
    .map_err(|error| anyhow::anyhow!("{error}"))
}

/// Where a Gemfile sends Bundler.
#[derive(Clone, Copy, Debug)]
pub enum GemfileSource<'a> {
    /// `source "URL"`.
    Direct(&'a str),
    /// `source "https://rubygems.org"`, mirrored to `URL` through [`MIRROR_ENV`].
    Mirror(&'a str),
}

/// A Bundler project: a directory with a Gemfile, and the environment its runs need.
pub struct Project {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    /// Writes a Gemfile in `dir` with `source` and one `gem` line per `(name, requirements)`.
    pub fn create(dir: &Path, source: GemfileSource<'_>, gems: &[(&str, &[&str])]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (url, env) = match source {
            GemfileSource::Direct(url) => (url, Vec::new()),
            GemfileSource::Mirror(url) => {
                (RUBYGEMS_ORG, vec![(MIRROR_ENV.to_owned(), url.to_owned())])
            }
        };
        let mut gemfile = format!("source {}\n\n", ruby_string(url));
        for (name, requirements) in gems {
            let mut line = format!("gem {}", ruby_string(name));
            for requirement in *requirements {
                line.push_str(", ");
                line.push_str(&ruby_string(requirement));
            }
            gemfile.push_str(&line);
            gemfile.push('\n');
        }
        std::fs::write(dir.join("Gemfile"), gemfile)?;
        Ok(Self {
            dir: dir.to_owned(),
            env,
        })
    }

    /// The environment every `bundle` run of this project needs (the mirror setting), followed by
    /// `extra`.
    pub fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        env.extend_from_slice(extra);
        env
    }

    /// The project's `Gemfile.lock`.
    pub fn lockfile(&self) -> Result<String> {
        std::fs::read_to_string(self.dir.join("Gemfile.lock")).context("reading Gemfile.lock")
    }
}

/// `text` as a double-quoted Ruby string literal (Rust's escapes agree with Ruby's for the plain
/// ASCII of gem names, requirements and loopback URLs).
fn ruby_string(text: &str) -> String {
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;
    use crate::support::rubygems_gems::BAD;
    use crate::support::rubygems_upstream::{Kind, RubygemsUpstream};

    /// [`MIRROR_ENV`] is a form Bundler reads: a Gemfile naming rubygems.org installs from the
    /// mirror, which sees `X-Gemfile-Source`, and nothing leaves loopback.
    #[test]
    fn mirror_env_sends_a_rubygems_org_gemfile_to_the_mirror() -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("pmcache-e2e-gem-mirror-")
            .tempdir()?;
        let upstream = RubygemsUpstream::start()?;
        let trap = EgressTrap::start()?;
        let sandbox = Sandbox::create(&dir.path().join("client"), &trap)?;
        let source = upstream.base_url();
        let project = Project::create(
            &dir.path().join("project"),
            GemfileSource::Mirror(&source),
            &[(BAD, &[])],
        )?;
        sandbox
            .bundle(&project.dir, &["install"], &project.env(&[]))?
            .ensure_success("bundle install through the mirror")?;
        let loaded = sandbox.bundle_exec_ruby(
            &project.dir,
            "require \"proxfix_bad\"; puts ProxfixBad::VERSION",
            &project.env(&[]),
        )?;
        ensure!(
            loaded == "1.0.0",
            "unexpected proxfix_bad loaded: {loaded:?}"
        );
        ensure!(
            project
                .lockfile()?
                .contains("remote: https://rubygems.org/"),
            "the lockfile should keep the original source"
        );
        let versions = upstream
            .requests_since(0)
            .into_iter()
            .find(|logged| logged.kind == Kind::Versions)
            .context("the mirror saw no versions request")?;
        ensure!(
            versions
                .headers
                .get("x-gemfile-source")
                .is_some_and(|value| value.as_bytes() == b"https://rubygems.org/"),
            "the mirror request lacks X-Gemfile-Source: {:?}",
            versions.headers
        );
        let caught = trap.caught();
        ensure!(caught.is_empty(), "requests left loopback: {caught:?}");
        Ok(())
    }
}
