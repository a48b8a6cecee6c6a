//! Machinery shared by the end-to-end tests: the pmcache process, fixture upstreams, clients, and
//! bounded waits. Every server listens on 127.0.0.1, on port 0 unless a test says otherwise.

pub mod calendar;
pub mod case;
pub mod client_run;
pub mod composer;
pub mod concurrent;
pub mod dists;
pub mod egress_trap;
pub mod fault_upstream;
pub mod fixture_build;
pub mod fixture_server;
pub mod gem;
pub mod http;
pub mod https;
pub mod npm;
pub mod npm_packages;
pub mod npm_tarball;
pub mod npm_tree;
pub mod npm_upstream;
pub mod packagist_packages;
pub mod packagist_upstream;
pub mod pip;
pub mod pmcache;
pub mod pypi_projects;
pub mod pypi_upstream;
pub mod raw_http;
pub mod rubygems_gems;
pub mod rubygems_upstream;
pub mod tls;
pub mod uv;
pub mod wheel;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root: the test binary belongs to `crates/pmcache`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether something listens on `addr`. A connection whose two ends are the same address is
/// TCP's simultaneous open with itself (the kernel picked the stopped port as the client's
/// ephemeral port), not a listener.
pub fn listens(addr: std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect(addr) {
        Ok(stream) => stream.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

/// Polls `condition` every 50 ms until it holds, or fails after `timeout` naming `what`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished subprocess left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Both streams, labelled, for error messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion with its output in files under `scratch`, killing it after
/// `timeout`.
pub fn run_bounded(mut command: Command, scratch: &Path, timeout: Duration) -> Result<Finished> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::fs::create_dir_all(scratch)?;
    let stdout_path = scratch.join(format!("run-{run}.stdout"));
    let stderr_path = scratch.join(format!("run-{run}.stderr"));
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path)?)
        .stderr(File::create(&stderr_path)?)
        .spawn()
        .with_context(|| format!("spawning {description}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{description} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read_lossy(&stdout_path),
                read_lossy(&stderr_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Finished {
        status,
        stdout: read_lossy(&stdout_path),
        stderr: read_lossy(&stderr_path),
    })
}

/// A file's content as text, or a note saying why it could not be read.
pub fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

/// The decompressed content of a gzip body.
pub fn gunzip(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut decoded)
        .context("the body is not gzip")?;
    Ok(decoded)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The real Python interpreter behind `python3` on PATH, resolved once with the inherited
/// environment: version-manager shims need the real HOME, which tests replace.
pub fn python() -> Result<&'static Path> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let output = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .map_err(|error| format!("python3 is needed by the end-to-end tests: {error}"))?;
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !output.status.success() || path.is_empty() {
                return Err(format!(
                    "python3 could not report its executable: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(PathBuf::from(path))
        })
        .as_deref()
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// A subprocess environment with nothing from the machine in it: run in `dir`, PATH for the real
/// tools, HOME and the XDG directories under `home`, a UTF-8 locale. Callers add what their
/// client needs.
pub fn clean_environment(command: &mut Command, dir: &Path, home: &Path) -> Result<()> {
    command
        .env_clear()
        .current_dir(dir)
        .env("PATH", subprocess_path()?)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("LANG", "C.UTF-8");
    Ok(())
}

/// PATH for subprocesses: the real Python's directory first, so `python3` works without shims.
pub fn subprocess_path() -> Result<String> {
    let python_dir = python()?
        .parent()
        .context("python has no parent directory")?;
    let inherited = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
    Ok(format!("{}:{inherited}", python_dir.display()))
}
