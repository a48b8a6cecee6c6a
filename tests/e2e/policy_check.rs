//! `pmcache policy check` as an operator runs it: the binary reads the configuration `serve`
//! would (file, then environment), prints where a package comes from and whether it is served
//! and why, and exits 0 when served, 3 when refused, 1 on a question it cannot answer.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use tempfile::TempDir;

use crate::support::pmcache::{self, Launch};
use crate::support::{Finished, run_bounded};

/// A fleet's policy: 7 days for everything, the own scope exempt and routed to the own
/// registry, one PyPI project denied, private PyPI names routed nowhere.
const FLEET: &str = r#"
[policy]
min_release_age = "7d"
min_release_age_exclude = ["npm:@acme/*"]
deny = ["pypi:ctx", "npm:event-stream@3.3.6"]

[[routes]]
ecosystem = "npm"
names = ["@acme/*"]
upstream = "https://npm.internal.example/"

[[routes]]
ecosystem = "pypi"
names = ["acme-*"]
upstream = "none"
"#;

/// Runs `pmcache policy check ARGS` with the fleet's config file and `env` to its exit.
fn check(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Result<Finished> {
    let config = dir.path().join("pmcache.toml");
    std::fs::write(&config, FLEET)?;
    let config = config.to_string_lossy().into_owned();
    let mut argv = vec!["policy", "check", "--config", config.as_str()];
    argv.extend_from_slice(args);
    let launch = Launch::bare(dir.path(), &argv)?;
    let mut command = Command::new(pmcache::binary());
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env)
        .envs(env.iter().copied())
        .current_dir(&launch.cwd);
    run_bounded(command, &dir.path().join("logs"), Duration::from_secs(30))
}

fn ensure_exit(run: &Finished, code: i32, wanted: &[&str]) -> Result<()> {
    ensure!(
        run.status.code() == Some(code),
        "exit {:?}, wanted {code}:\n{}",
        run.status.code(),
        run.output()
    );
    for text in wanted {
        ensure!(
            run.stdout.contains(text),
            "no {text:?} in:\n{}",
            run.output()
        );
    }
    Ok(())
}

/// A version published 2 hours ago is refused under the section's age (the environment's
/// `1d` over the file's `7d`), with the reason a client would print and when it shows; an
/// exempt routed scope names its private upstream; a denied project in another spelling and a
/// name routed nowhere are refused; a version with no time given is explained, not guessed.
#[test]
fn policy_check_says_what_the_configuration_does_and_why() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let section = [("PMCACHE_NPM_POLICY_MIN_RELEASE_AGE", "1d")];

    let young = check(
        &dir,
        &["npm", "left-pad", "1.3.0", "--published", "2h"],
        &section,
    )?;
    ensure_exit(
        &young,
        3,
        &[
            "npm:left-pad\n  upstream: the npm upstream\n",
            "version 1.3.0: refused: pmcache policy: npm:left-pad@1.3.0 was published 2 hours ago; min_release_age is 1d (shown from ",
        ],
    )?;
    let old = check(
        &dir,
        &["npm", "left-pad", "1.3.0", "--published", "3d"],
        &section,
    )?;
    ensure_exit(&old, 0, &["version 1.3.0: served"])?;
    let unknown = check(&dir, &["npm", "left-pad", "1.3.0"], &[])?;
    ensure_exit(
        &unknown,
        0,
        &["min_release_age: 7d", "give --published TIME"],
    )?;

    let private = check(
        &dir,
        &["npm", "@acme/tool", "2.0.0", "--published", "1m"],
        &[],
    )?;
    ensure_exit(
        &private,
        0,
        &[
            "upstream: https://npm.internal.example/ (routes[0]); never the public npm upstream",
            "in min_release_age_exclude",
            "version 2.0.0: served",
        ],
    )?;

    let denied = check(&dir, &["pypi", "CTX"], &[])?;
    ensure_exit(
        &denied,
        3,
        &[
            "pypi:ctx",
            "package: refused: pmcache policy: pypi:ctx is denied",
        ],
    )?;
    let nowhere = check(&dir, &["pypi", "Acme_Internal"], &[])?;
    ensure_exit(
        &nowhere,
        3,
        &["pypi:acme-internal", "upstream: none (routes[1])"],
    )?;

    let bad = check(&dir, &["cargo", "serde"], &[])?;
    ensure!(
        bad.status.code() == Some(1) && bad.stderr.trim().lines().count() == 1,
        "an unknown ecosystem:\n{}",
        bad.output()
    );
    Ok(())
}
