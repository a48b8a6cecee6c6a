//! The PyPI fixture distributions: built once per test process by
//! `tests/fixtures/pypi/build_dists.py` and loaded, with their manifest, into memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;

/// The fixture's wheels.
pub const LIB_1_0: &str = "demo_lib-1.0.0-py3-none-any.whl";
pub const LIB_1_1: &str = "demo_lib-1.1.0-py3-none-any.whl";
pub const UTIL: &str = "demo_util-2.0.0-py3-none-any.whl";
pub const BIG: &str = "demo_big-1.0.0-py3-none-any.whl";
/// The sdist that pip builds with its in-tree backend; depends on `Demo.Lib>=1.1` and `demo_util`.
pub const APP: &str = "demo_app-0.1.0.tar.gz";

/// One distribution file, as the manifest describes it, with its bytes.
pub struct Dist {
    pub filename: String,
    /// PEP 503 normalised project name.
    pub project: String,
    pub version: String,
    pub requires_python: Option<String>,
    pub sha256: String,
    pub size: u64,
    pub bytes: Bytes,
    /// PEP 658 core metadata (the wheel's METADATA) and its sha256; `None` for sdists.
    pub metadata: Option<(Bytes, String)>,
}

/// Every fixture distribution, by filename.
pub struct Dists {
    pub files: BTreeMap<String, Dist>,
}

impl Dists {
    /// The distribution named `filename`.
    pub fn get(&self, filename: &str) -> Result<&Dist> {
        self.files
            .get(filename)
            .with_context(|| format!("no fixture distribution {filename}"))
    }

    /// The files of `project` (normalised name), sorted by filename.
    pub fn of_project(&self, project: &str) -> Vec<&Dist> {
        self.files
            .values()
            .filter(|dist| dist.project == project)
            .collect()
    }

    /// Every normalised project name.
    pub fn projects(&self) -> Vec<&str> {
        let mut projects: Vec<&str> = self
            .files
            .values()
            .map(|dist| dist.project.as_str())
            .collect();
        projects.sort_unstable();
        projects.dedup();
        projects
    }
}

/// The fixture distributions, built on first use.
pub fn dists() -> Result<&'static Dists> {
    static DISTS: OnceLock<Result<Dists, String>> = OnceLock::new();
    DISTS
        .get_or_init(|| load().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow!("building the PyPI fixture distributions failed: {error}"))
}

fn load() -> Result<Dists> {
    let dir = build()?;
    let manifest_text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&manifest_text)?;
    let mut files = BTreeMap::new();
    for (filename, entry) in manifest {
        let text = |key: &str| -> Result<String> {
            entry[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("manifest entry {filename} lacks {key}"))
        };
        let bytes = Bytes::from(std::fs::read(dir.join(&filename))?);
        let sha256 = text("sha256")?;
        if super::sha256_hex(&bytes) != sha256 {
            bail!("{filename} does not match its manifest sha256");
        }
        let metadata = match entry["metadata_sha256"].as_str() {
            Some(digest) => {
                let metadata =
                    Bytes::from(std::fs::read(dir.join(format!("{filename}.metadata")))?);
                Some((metadata, digest.to_owned()))
            }
            None => None,
        };
        let dist = Dist {
            project: text("project")?,
            version: text("version")?,
            requires_python: entry["requires_python"].as_str().map(str::to_owned),
            size: entry["size"].as_u64().context("manifest size")?,
            sha256,
            bytes,
            metadata,
            filename: filename.clone(),
        };
        files.insert(filename, dist);
    }
    Ok(Dists { files })
}

/// Runs the build script into a directory keyed by the script's own digest under Cargo's
/// per-target scratch dir, so later runs reuse it; the output is deterministic, so a concurrent
/// builder racing to the same name is harmless.
fn build() -> Result<PathBuf> {
    let script = super::repo_root().join("tests/fixtures/pypi/build_dists.py");
    let script_bytes =
        std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = scratch.join(format!(
        "pypi-dists-{}",
        &super::sha256_hex(&script_bytes)[..16]
    ));
    if target.join("manifest.json").is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(scratch)?;
    let staging = tempfile::Builder::new()
        .prefix("pypi-dists-build-")
        .tempdir_in(scratch)?;
    let mut command = Command::new(super::python()?);
    command.arg(&script).arg(staging.path());
    let finished = super::run_bounded(
        command,
        &staging.path().join("logs"),
        Duration::from_secs(120),
    )?;
    if !finished.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
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
