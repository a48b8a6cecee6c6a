//! Real clients at full concurrency against fixture upstreams that behave like the real ones:
//! HTTPS with HTTP/2 by ALPN from the tests' own CA, and documents of real size.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use hyper::StatusCode;

use crate::support::fixture_server::{self, FixtureServer, full_body};
use crate::support::{run_bounded, tls};

/// A TLS fixture answers HTTP/2 to a client that offers `h2` by ALPN, keeping one connection for
/// several requests, and HTTP/1.1 to one that does not; it counts both.
#[test]
fn fixture_tls_serves_http2_by_alpn_and_http1_otherwise() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pmcache-e2e-tls-")
        .tempdir()?;
    let ca = tls::test_ca()?;
    let ca_file = ca.write_ca_file(dir.path())?;
    let bound = FixtureServer::bind("tls-fixture", 1)?.with_tls(ca.server_config());
    let server = bound.serve(vec![fixture_server::handler(|_request| async {
        let mut response = hyper::Response::new(full_body(Bytes::from_static(b"hello\n")));
        *response.status_mut() = StatusCode::OK;
        response
    })]);
    let url = format!("{}/hello", server.base_url(0));
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");

    let versions = curl(dir.path(), &ca_file, "--http2", &[&url, &url])?;
    ensure!(
        versions == ["2", "2"],
        "curl --http2 saw versions {versions:?}"
    );
    ensure!(
        server.connections(0) == 1,
        "{} connections",
        server.connections(0)
    );
    ensure!(
        server.http2_requests(0) == 2,
        "{} HTTP/2 requests",
        server.http2_requests(0)
    );

    let versions = curl(dir.path(), &ca_file, "--http1.1", &[&url])?;
    ensure!(
        versions == ["1.1"],
        "curl --http1.1 saw versions {versions:?}"
    );
    ensure!(
        server.connections(0) == 2,
        "{} connections",
        server.connections(0)
    );
    ensure!(
        server.http1_requests(0) == 1,
        "{} HTTP/1.1 requests",
        server.http1_requests(0)
    );
    // curl asked one URL after the other.
    ensure!(
        server.peak_in_flight(0) == 1,
        "peak {}",
        server.peak_in_flight(0)
    );
    Ok(())
}

/// Fetches `urls` in one curl run (so on one connection) trusting only `ca_file`, and returns the
/// HTTP version of each response.
fn curl(dir: &Path, ca_file: &Path, version: &str, urls: &[&str]) -> Result<Vec<String>> {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--fail"])
        .args(["--write-out", "%{http_version}\\n", version, "--cacert"])
        .arg(ca_file);
    for url in urls {
        command.args(["--output", "/dev/null", url]);
    }
    command
        .env_clear()
        .env("PATH", crate::support::subprocess_path()?)
        .env("HOME", dir);
    let finished = run_bounded(command, &dir.join("logs"), Duration::from_secs(30))
        .context("curl is needed by this test")?;
    ensure!(
        finished.status.success(),
        "curl failed:\n{}",
        finished.output()
    );
    Ok(finished.stdout.lines().map(str::to_owned).collect())
}
