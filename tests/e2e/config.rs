//! Settings that pmcache cannot run with stop `pmcache serve` at start, with a failing exit
//! status and one line on stderr naming the setting, its value and what is wrong: numbers
//! outside their range, networks that are no CIDR, upstreams set to a URL that cannot be
//! used (only `auto` may leave a frontend off), and policy settings that are no pattern, value or
//! route.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;

use crate::support::pmcache::{self, Launch};
use crate::support::{Finished, run_bounded};

/// Runs `pmcache serve --listen LISTEN` on a fresh data dir with `settings` to its exit.
fn serve_until_exit(dir: &TempDir, listen: &str, settings: &[(&str, &str)]) -> Result<Finished> {
    let data = dir.path().join("data");
    let data = data.to_str().context("temp dir is not UTF-8")?;
    let launch = Launch::bare(
        dir.path(),
        &["serve", "--listen", listen, "--data-dir", data],
    )?;
    let mut command = Command::new(pmcache::binary());
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env)
        .envs(settings.iter().copied())
        .current_dir(&launch.cwd);
    run_bounded(command, &dir.path().join("logs"), Duration::from_secs(30))
}

/// Each bad setting alone: pmcache exits with a failure before listening, and stderr is one
/// line, `pmcache: `, naming the setting and saying what is wrong with the value.
#[test]
fn bad_settings_stop_the_start_with_one_line_naming_them() -> Result<()> {
    let table: [(&str, &str, &str); 16] = [
        (
            "PMCACHE_SERVER_MAX_CONNECTIONS",
            "0",
            "server.max_connections = 0 is out of range: it may be 1 to 1000000",
        ),
        (
            "PMCACHE_SERVER_MAX_URI_LENGTH",
            "4MiB",
            "server.max_uri_length = 4MiB is out of range: it may be 256B to 1MiB",
        ),
        (
            "PMCACHE_UPSTREAM_READ_TIMEOUT",
            "0s",
            "upstream.read_timeout = 0s is out of range: it may be 100ms to 1h",
        ),
        (
            "PMCACHE_STORAGE_LOW_WATER_PERCENT",
            "150",
            "storage.low_water_percent = 150 is out of range: it may be 1 to 100",
        ),
        (
            "PMCACHE_NPM_METADATA_TTL",
            "2y",
            "npm.metadata_ttl = 2years is out of range: it may be 0s to 1year",
        ),
        (
            "PMCACHE_UPSTREAM_BREAKER_THRESHOLD",
            "100000",
            "upstream.breaker_threshold = 100000 is out of range: it may be 0 to 1000",
        ),
        (
            "PMCACHE_SERVER_TRUSTED_PROXIES",
            r#"["127.0.0.1/33"]"#,
            "server.trusted_proxies: \"127.0.0.1/33\": the prefix length must be 0 to 32",
        ),
        (
            "PMCACHE_PYPI_UPSTREAM",
            "ftp://127.0.0.1/simple/",
            "pypi.upstream = \"ftp://127.0.0.1/simple/\" cannot be used: its scheme is ftp, not http or https",
        ),
        (
            "PMCACHE_RUBYGEMS_UPSTREAM",
            "127.0.0.1/gems/",
            "rubygems.upstream = \"127.0.0.1/gems/\" cannot be used: it is not a URL",
        ),
        (
            "PMCACHE_NPM_UPSTREAM",
            "http://ci:secret@127.0.0.1:4873/",
            "npm.upstream = \"http://ci:secret@127.0.0.1:4873/\" cannot be used: it carries user info",
        ),
        (
            "PMCACHE_PACKAGIST_UPSTREAM",
            "http://127.0.0.1:8080/composer/?token=x",
            "cannot be used: a query or fragment would be lost",
        ),
        (
            "PMCACHE_PACKAGIST_UPSTREAM",
            "http://0.0.0.0:8080/composer/",
            "packagist.upstream = \"http://0.0.0.0:8080/composer/\" cannot be used: its host is no address",
        ),
        (
            "PMCACHE_POLICY_DENY",
            r#"["npm:event-stream@3.3.6", "ctx"]"#,
            "policy.deny: \"ctx\" is not a pattern: it names no ecosystem",
        ),
        (
            "PMCACHE_POLICY_UNKNOWN_RELEASE_TIME",
            "maybe",
            "unknown variant `maybe`, expected `deny` or `allow` in `policy.unknown_release_time`",
        ),
        (
            "PMCACHE_NPM_POLICY_MIN_RELEASE_AGE",
            "2y",
            "npm.policy.min_release_age = 2years is out of range: it may be 0s to 1year",
        ),
        (
            "PMCACHE_ROUTES",
            r#"[{ ecosystem = "npm", names = ["@acme/*"], upstream = "http://ci:secret@127.0.0.1:4873/" }]"#,
            "routes[0].upstream = \"http://ci:secret@127.0.0.1:4873/\" cannot be used: it carries user info",
        ),
    ];
    let dir = tempfile::Builder::new()
        .prefix("pmcache-e2e-config-")
        .tempdir()?;
    for (name, value, wanted) in table {
        let finished = serve_until_exit(&dir, "127.0.0.1:0", &[(name, value)])?;
        let stderr = finished.stderr.trim_end();
        ensure!(
            !finished.status.success()
                && stderr.lines().count() == 1
                && stderr.starts_with("pmcache: ")
                && stderr.contains(wanted)
                && finished.stdout.is_empty(),
            "{name}={value}: expected a failure with one line containing {wanted:?}:\n{}",
            finished.output()
        );
    }
    Ok(())
}

/// An npm upstream that is pmcache's own address (known only once it listens) stops the start
/// too, ending stderr with the line that says so; nothing was served.
#[test]
fn an_upstream_that_is_pmcache_itself_stops_the_start() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pmcache-e2e-config-")
        .tempdir()?;
    // A port that was free a moment ago: pmcache listens there and the upstream names it.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let upstream = format!("http://localhost:{port}/npm/");
    let finished = serve_until_exit(
        &dir,
        &format!("127.0.0.1:{port}"),
        &[
            ("PMCACHE_NPM_UPSTREAM", upstream.as_str()),
            ("PMCACHE_PYPI_ENABLED", "false"),
            ("PMCACHE_RUBYGEMS_ENABLED", "false"),
            ("PMCACHE_PACKAGIST_ENABLED", "false"),
        ],
    )?;
    let last = finished
        .stderr
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default();
    ensure!(
        !finished.status.success()
            && last.starts_with(&format!(
                "pmcache: npm.upstream = {upstream:?} cannot be used"
            ))
            && last.contains("loop back")
            && finished.stdout.is_empty(),
        "an npm upstream at pmcache's own address:\n{}",
        finished.output()
    );
    Ok(())
}
