//! The PyPI fixture distributions: built once per test process by
//! `tests/fixtures/pypi/build_dists.py` and loaded, with their manifest, into memory; and the
//! shape every PyPI fixture catalogue shares ([`Dists`]), which the generated projects of
//! [`super::pypi_projects`] use too.

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

/// One distribution file as project pages list it, with its bytes when the files server serves
/// it.
pub struct Dist {
    pub filename: String,
    /// PEP 503 normalised project name.
    pub project: String,
    pub version: String,
    pub requires_python: Option<String>,
    pub sha256: String,
    pub size: u64,
    /// When it was uploaded (RFC 3339 with microseconds), as PEP 700's `upload-time` says.
    pub upload_time: String,
    /// sha256 of its PEP 658 core metadata, as pages announce it; `None` for sdists.
    pub metadata_sha256: Option<String>,
    /// What the files server answers with; `None` for a file that pages list but that no test
    /// fetches (the thousands of old releases on a big project's page), answered with 404.
    pub served: Option<Served>,
}

/// The bytes of a served distribution file.
pub struct Served {
    pub bytes: Bytes,
    /// PEP 658 core metadata (the wheel's METADATA); `None` for sdists.
    pub metadata: Option<Bytes>,
}

impl Dist {
    /// The bytes served for this file; fails for a file that pages only list.
    pub fn bytes(&self) -> Result<&Bytes> {
        self.served
            .as_ref()
            .map(|served| &served.bytes)
            .with_context(|| format!("{} is listed but not served", self.filename))
    }
}

/// A catalogue of distribution files, by filename, and the files of each project.
pub struct Dists {
    pub files: BTreeMap<String, Dist>,
    /// Normalised project name -> its filenames, sorted.
    by_project: BTreeMap<String, Vec<String>>,
}

impl Dists {
    /// The catalogue of `files`.
    pub fn new(files: BTreeMap<String, Dist>) -> Self {
        let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for dist in files.values() {
            by_project
                .entry(dist.project.clone())
                .or_default()
                .push(dist.filename.clone());
        }
        Self { files, by_project }
    }

    /// The distribution named `filename`.
    pub fn get(&self, filename: &str) -> Result<&Dist> {
        self.files
            .get(filename)
            .with_context(|| format!("no fixture distribution {filename}"))
    }

    /// The files of `project` (normalised name), sorted by filename.
    pub fn of_project(&self, project: &str) -> Vec<&Dist> {
        self.by_project
            .get(project)
            .into_iter()
            .flatten()
            .filter_map(|filename| self.files.get(filename))
            .collect()
    }

    /// Every normalised project name, sorted.
    pub fn projects(&self) -> Vec<&str> {
        self.by_project.keys().map(String::as_str).collect()
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
        let metadata_sha256 = entry["metadata_sha256"].as_str().map(str::to_owned);
        let metadata = match &metadata_sha256 {
            Some(digest) => Some(read_verified(
                &dir,
                &format!("{filename}.metadata"),
                digest,
            )?),
            None => None,
        };
        let dist = Dist {
            project: text("project")?,
            version: text("version")?,
            requires_python: entry["requires_python"].as_str().map(str::to_owned),
            size: entry["size"].as_u64().context("manifest size")?,
            sha256,
            upload_time: String::new(),
            metadata_sha256,
            served: Some(Served { bytes, metadata }),
            filename: filename.clone(),
        };
        files.insert(filename, dist);
    }
    // Per project, in filename order: the n-th file was uploaded on the n-th of January.
    let mut uploaded: BTreeMap<String, usize> = BTreeMap::new();
    for dist in files.values_mut() {
        let day = uploaded.entry(dist.project.clone()).or_default();
        *day += 1;
        dist.upload_time = format!("2026-01-{day:02}T12:00:00.000000Z");
    }
    Ok(Dists::new(files))
}
