//! Fixture files made by a build script under `tests/fixtures/` (Python or Ruby): run once per
//! target dir into a directory keyed by the script's own digest, then loaded once per test process
//! and checked against the manifest the script writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;

/// What runs a build script.
#[derive(Clone, Copy, Debug)]
pub enum Interpreter {
    /// The real Python behind `python3` ([`super::python`]).
    Python,
    /// `ruby` from PATH: the RubyGems fixtures need the same Ruby (and `gem`) the tests run.
    Ruby,
}

impl Interpreter {
    fn program(self) -> Result<PathBuf> {
        match self {
            Self::Python => Ok(super::python()?.to_owned()),
            Self::Ruby => Ok(PathBuf::from("ruby")),
        }
    }
}

/// One build script and where its output goes.
pub struct Script {
    /// The script, relative to the repository root.
    pub path: &'static str,
    /// What runs it, as `INTERPRETER SCRIPT OUT_DIR`.
    pub interpreter: Interpreter,
    /// The name of its output directory, before the digest.
    pub output: &'static str,
    /// How long one run may take.
    pub timeout: Duration,
}

/// `load`'s result, computed on first use and kept in `cell`; a failure is reported as building
/// `what` failing, then and on every later call.
pub fn load_once<T>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    load: impl FnOnce() -> Result<T>,
) -> Result<&'static T> {
    cell.get_or_init(|| load().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow!("building {what} failed: {error}"))
}

/// The file `name` in the output `dir`, which must have the manifest's `sha256`.
pub fn read_verified(dir: &Path, name: &str, sha256: &str) -> Result<Bytes> {
    let bytes =
        Bytes::from(std::fs::read(dir.join(name)).with_context(|| format!("reading {name}"))?);
    if super::sha256_hex(&bytes) != sha256 {
        bail!("{name} does not match its manifest sha256");
    }
    Ok(bytes)
}

/// Runs `script` into a directory keyed by the script's own digest under Cargo's per-target
/// scratch dir, so later runs reuse it; the output is deterministic, so a concurrent builder
/// racing to the same name is harmless.
pub fn build(script: &Script) -> Result<PathBuf> {
    let path = super::repo_root().join(script.path);
    let script_bytes =
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = scratch.join(format!(
        "{}-{}",
        script.output,
        &super::sha256_hex(&script_bytes)[..16]
    ));
    if target.join("manifest.json").is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(scratch)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!("{}-build-", script.output))
        .tempdir_in(scratch)?;
    let mut command = Command::new(script.interpreter.program()?);
    command.arg(&path).arg(staging.path());
    let finished = super::run_bounded(command, &staging.path().join("logs"), script.timeout)?;
    if !finished.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            path.display(),
            finished.status,
            finished.output()
        );
    }
    std::fs::remove_dir_all(staging.path().join("logs"))?;
    let staging = staging.keep();
    if std::fs::rename(&staging, &target).is_err() {
        // Another process got there first with identical content.
        std::fs::remove_dir_all(&staging)?;
    }
    Ok(target)
}
