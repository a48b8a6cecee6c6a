//! The PyPI fixture distributions: built once per test process by
//! `tests/fixtures/pypi/build_dists.py` and loaded, with their manifest, into memory.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;

use super::fixture_build::{Interpreter, Script, build, load_once, read_verified};

/// The build script; it packs a 20 MiB wheel, hence the longer bound.
const SCRIPT: Script = Script {
    path: "tests/fixtures/pypi/build_dists.py",
    interpreter: Interpreter::Python,
    output: "pypi-dists",
    timeout: Duration::from_secs(120),
};

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
    load_once(&DISTS, "the PyPI fixture distributions", load)
}

fn load() -> Result<Dists> {
    let dir = build(&SCRIPT)?;
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
        let sha256 = text("sha256")?;
        let bytes = read_verified(&dir, &filename, &sha256)?;
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
