//! HTTPS on pmcache's own listener (`[tls]`): real pip and npm install through it trusting the
//! tests' CA, ALPN picks HTTP/2 or HTTP/1.1, and SIGHUP swaps the certificate for new
//! connections while open ones go on, or keeps it when the new files are bad.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hyper::Version;

use crate::npm::{ensure_demo_tree, new_project};
use crate::pypi::check_demo_app_imports;
use crate::support::case::Case;
use crate::support::https::HttpsConnection;
use crate::support::npm::Sandbox;
use crate::support::npm_upstream::NpmUpstream;
use crate::support::pip::Venv;
use crate::support::pmcache::Pmcache;
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::tls::{ServerFiles, test_ca};
use crate::support::wait_until;

/// What a browser-grade client offers: HTTP/2 first.
const BOTH: [&[u8]; 2] = [b"h2", b"http/1.1"];
const HTTP1_ONLY: [&[u8]; 1] = [b"http/1.1"];
/// How long a reload may take to show.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_FAILED: &str = "TLS reload failed, keeping the current certificate";

/// A test's certificates: the CA file clients trust and the files pmcache is configured with.
struct Certificates {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    /// What `PMCACHE_TLS_CERT_FILE` and `PMCACHE_TLS_KEY_FILE` name.
    served: ServerFiles,
}

impl Certificates {
    /// A CA file and a first certificate, `first`, in the served place.
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pmcache-e2e-tls-")
            .tempdir()?;
        let ca_file = test_ca()?.write_ca_file(dir.path())?;
        let served = test_ca()?.issue_server_files(dir.path(), "first")?;
        Ok(Self {
            dir,
            ca_file,
            served,
        })
    }

    fn settings(&self) -> Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("PMCACHE_TLS_CERT_FILE", utf8(&self.served.cert)?),
            ("PMCACHE_TLS_KEY_FILE", utf8(&self.served.key)?),
        ])
    }

    /// Signs a new certificate `name` and copies it and its key over the served files.
    fn replace(&self, name: &str) -> Result<ServerFiles> {
        let next = test_ca()?.issue_server_files(&self.dir.path().join("next"), name)?;
        std::fs::copy(&next.cert, &self.served.cert)?;
        std::fs::copy(&next.key, &self.served.key)?;
        Ok(next)
    }
}

fn utf8(path: &Path) -> Result<String> {
    Ok(path.to_str().context("temp path is not UTF-8")?.to_owned())
}

/// The address in pmcache's `https://ADDRESS` listening line.
fn address(pmcache: &Pmcache) -> Result<SocketAddr> {
    let Some(address) = pmcache.base_url().strip_prefix("https://") else {
        bail!(
            "pmcache with [tls] listens on {}, not https://",
            pmcache.base_url()
        );
    };
    Ok(address.parse()?)
}

fn sighup(pmcache: &Pmcache) -> Result<()> {
    let sent = Command::new("kill")
        .args(["-HUP", &pmcache.pid().to_string()])
        .status()?;
    ensure!(sent.success(), "kill -HUP {} failed", pmcache.pid());
    Ok(())
}

/// pip installs demo-app from the PyPI fixture through pmcache over HTTPS, trusting the test CA
/// with `--cert`.
#[test]
fn pip_installs_over_https() -> Result<()> {
    let certificates = Certificates::new()?;
    let settings = certificates.settings()?;
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let case = Case::new(PypiUpstream::start(PageFormat::Json)?)?.serve_pypi(&settings)?;
    let index = case.index_url();
    ensure!(index.starts_with("https://"), "index URL {index}");
    let venv = Venv::create(&case.path("client"))?;
    let ca_file = utf8(&certificates.ca_file)?;
    venv.pip(&[
        "install",
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "--cert",
        &ca_file,
        "--index-url",
        &index,
        "demo-app",
    ])?
    .ensure_success("pip install --cert CA demo-app over HTTPS")?;
    check_demo_app_imports(&venv)?;
    // Without the CA, pip must refuse pmcache's certificate: the install above trusted it
    // because of --cert, not because verification was off.
    let untrusting = Venv::create(&case.path("untrusting"))?;
    let refused = untrusting.pip(&[
        "install",
        "--no-cache-dir",
        "--retries",
        "0",
        "--index-url",
        &index,
        "demo-app",
    ])?;
    ensure!(
        !refused.success && refused.output.contains("CERTIFICATE_VERIFY_FAILED"),
        "pip without the test CA did not fail on the certificate:\n{}",
        refused.output
    );
    case.ensure_no_egress()
}

/// npm installs the demo tree through pmcache over HTTPS with `cafile` in its userconfig; the
/// tarball URLs pmcache writes say https (npm fetches them over the same listener).
#[test]
fn npm_installs_over_https() -> Result<()> {
    let certificates = Certificates::new()?;
    let settings = certificates.settings()?;
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let case = Case::npm(NpmUpstream::start()?, &settings)?;
    let registry = case.registry();
    ensure!(registry.starts_with("https://"), "registry {registry}");
    let sandbox = Sandbox::create(&case.path("client"), &registry, &case.trap)?;
    sandbox.append_npmrc(&format!("cafile={}\n", utf8(&certificates.ca_file)?))?;
    let project = new_project(&case.path("project"), None)?;
    sandbox
        .npm(&project, &["install"])?
        .ensure_success("npm install over HTTPS")?;
    ensure_demo_tree(&sandbox, &project)?;
    let lockfile = std::fs::read_to_string(project.join("package-lock.json"))?;
    ensure!(
        lockfile.contains(&format!("\"resolved\": \"{registry}")),
        "package-lock.json resolves tarballs elsewhere than {registry}:\n{lockfile}"
    );
    case.ensure_no_egress()
}

/// A client offering `h2` gets HTTP/2, one offering only `http/1.1` gets HTTP/1.1; both are
/// served, and a plain-HTTP request to the TLS port gets no HTTP answer.
#[test]
fn alpn_chooses_http2_or_http1() -> Result<()> {
    let certificates = Certificates::new()?;
    let settings = certificates.settings()?;
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let case = Case::new(())?.serve(&settings)?;
    let address = address(case.pmcache())?;
    for (offered, protocol, version) in [
        (&BOTH[..], &b"h2"[..], Version::HTTP_2),
        (&HTTP1_ONLY[..], &b"http/1.1"[..], Version::HTTP_11),
    ] {
        let mut connection = HttpsConnection::open(address, &certificates.ca_file, offered)?;
        ensure!(
            connection.alpn.as_deref() == Some(protocol),
            "offered {offered:?}, ALPN chose {:?}",
            connection.alpn
        );
        for _ in 0..2 {
            let answer = connection.get("/healthz")?;
            ensure!(
                answer.status == 200 && answer.version == version && answer.body.starts_with(b"ok"),
                "GET /healthz over {version:?}: {} {:?} {:?}",
                answer.status,
                answer.version,
                answer.body
            );
        }
    }
    let plain = crate::support::http::attempt(&format!("http://{address}/healthz"))?;
    ensure!(
        !matches!(plain, crate::support::http::Attempt::Response(ref response) if response.status == 200),
        "a plain-HTTP request to the TLS listener was answered 200"
    );
    Ok(())
}

/// SIGHUP after the files were replaced: the next connection gets the new certificate while
/// connections opened before (HTTP/2 and HTTP/1.1) keep working. Then SIGHUP with a broken
/// certificate file: one warning, and new connections still get the last good certificate.
#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() -> Result<()> {
    let certificates = Certificates::new()?;
    let settings = certificates.settings()?;
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let case = Case::new(())?.serve(&settings)?;
    let pmcache = case.pmcache();
    let address = address(pmcache)?;
    let ca_file = &certificates.ca_file;
    let mut open_h2 = HttpsConnection::open(address, ca_file, &BOTH)?;
    let mut open_h1 = HttpsConnection::open(address, ca_file, &HTTP1_ONLY)?;
    ensure!(
        open_h2.certificate == certificates.served.der,
        "pmcache did not present the configured certificate"
    );
    ensure!(open_h2.get("/healthz")?.status == 200 && open_h1.get("/healthz")?.status == 200);

    let second = certificates.replace("second")?;
    ensure!(second.der != certificates.served.der);
    sighup(pmcache)?;
    wait_until(
        RELOAD_TIMEOUT,
        "a new connection to present the second certificate",
        || Ok(HttpsConnection::open(address, ca_file, &BOTH)?.certificate == second.der),
    )?;
    for (connection, version) in [
        (&mut open_h2, Version::HTTP_2),
        (&mut open_h1, Version::HTTP_11),
    ] {
        let answer = connection.get("/healthz")?;
        ensure!(
            answer.status == 200 && answer.version == version,
            "a {version:?} connection opened before the reload answered {} {:?}",
            answer.status,
            answer.version
        );
        ensure!(connection.certificate == certificates.served.der);
    }
    ensure!(
        pmcache.events_starting(RELOAD_FAILED).is_empty(),
        "a good reload logged a failure"
    );

    // A half-written certificate: the reload fails, and says so once.
    std::fs::write(
        &certificates.served.cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    )?;
    sighup(pmcache)?;
    wait_until(RELOAD_TIMEOUT, "pmcache to log the failed reload", || {
        Ok(!pmcache.events_starting(RELOAD_FAILED).is_empty())
    })?;
    let failures = pmcache.events_starting(RELOAD_FAILED);
    ensure!(
        failures.len() == 1 && failures[0].level() == "WARN",
        "the failed reload logged {:?}",
        failures
            .iter()
            .map(|event| event.message())
            .collect::<Vec<_>>()
    );
    ensure!(
        failures[0].mentions("cert.pem"),
        "the warning does not name the file: {}",
        failures[0].message()
    );
    let after = HttpsConnection::open(address, ca_file, &BOTH)?;
    ensure!(
        after.certificate == second.der,
        "after a failed reload pmcache no longer presents the last good certificate"
    );
    ensure!(open_h2.get("/healthz")?.status == 200);
    Ok(())
}

/// One file without the other is a configuration error, not plain HTTP.
#[test]
fn a_certificate_without_its_key_does_not_start() -> Result<()> {
    let certificates = Certificates::new()?;
    let cert = utf8(&certificates.served.cert)?;
    let started = Case::new(())?.serve(&[("PMCACHE_TLS_CERT_FILE", cert.as_str())]);
    let Err(error) = started else {
        bail!("pmcache started with tls.cert_file and no tls.key_file");
    };
    ensure!(
        format!("{error:#}").contains("tls.key_file"),
        "the error does not name tls.key_file: {error:#}"
    );
    Ok(())
}
