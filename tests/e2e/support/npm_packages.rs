//! The npm fixture packages: built once per test process by `tests/fixtures/npm/build_packages.py`
//! and loaded, with their manifest, into memory.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;

use super::fixture_build::{Interpreter, Script, build, load_once, read_verified};

/// The build script.
const SCRIPT: Script = Script {
    path: "tests/fixtures/npm/build_packages.py",
    interpreter: Interpreter::Python,
    output: "npm-packages",
    timeout: Duration::from_secs(60),
};

/// The fixture's package names.
pub const SCOPED: &str = "@demo/scoped";
pub const LEFT: &str = "demo-left";
pub const BIG: &str = "demo-big";
/// The `demo-left` that `@demo/scoped`'s `^1.1.0` must resolve to (`latest` is 2.0.0).
pub const LEFT_RESOLVED: &str = "1.2.0";

/// One published version: its tarball and what the registry says about it.
pub struct Tarball {
    pub name: String,
    pub version: String,
    /// `<basename>-<version>.tgz`, the last segment of its conventional URL.
    pub filename: String,
    pub dependencies: serde_json::Map<String, serde_json::Value>,
    /// Publish time (RFC 3339), as in the packument's `time`.
    pub time: String,
    /// `dist.integrity`: `sha512-<base64>`.
    pub integrity: String,
    /// `dist.shasum`: hex sha1.
    pub shasum: String,
    pub sha256: String,
    pub size: u64,
    pub file_count: u64,
    pub unpacked_size: u64,
    /// sha256 of each file inside `package/`, by its path there.
    pub contents: BTreeMap<String, String>,
    pub bytes: Bytes,
}

impl Tarball {
    /// `<name>/-/<filename>`: its path below a registry base URL, by npm's convention.
    pub fn registry_path(&self) -> String {
        format!("{}/-/{}", self.name, self.filename)
    }
}

/// One package: every version and the document-level fields.
pub struct Package {
    pub description: String,
    pub dist_tags: serde_json::Map<String, serde_json::Value>,
    pub created: String,
    pub modified: String,
    pub versions: BTreeMap<String, Tarball>,
}

/// Every fixture package, by name.
pub struct Packages {
    pub packages: BTreeMap<String, Package>,
}

impl Packages {
    /// The package named `name`.
    pub fn package(&self, name: &str) -> Result<&Package> {
        self.packages
            .get(name)
            .with_context(|| format!("no fixture package {name}"))
    }

    /// `name@version`.
    pub fn tarball(&self, name: &str, version: &str) -> Result<&Tarball> {
        self.package(name)?
            .versions
            .get(version)
            .with_context(|| format!("no fixture version {name}@{version}"))
    }

    /// The tarball of `name` whose file name is `filename`, if there is one.
    pub fn by_filename(&self, name: &str, filename: &str) -> Option<&Tarball> {
        self.packages
            .get(name)?
            .versions
            .values()
            .find(|tarball| tarball.filename == filename)
    }

    /// The versions a `@demo/scoped` + `demo-big` project installs, root dependencies first.
    pub fn demo_tree(&self) -> Result<Vec<&Tarball>> {
        Ok(vec![
            self.tarball(SCOPED, "1.0.0")?,
            self.tarball(BIG, "1.0.0")?,
            self.tarball(LEFT, LEFT_RESOLVED)?,
        ])
    }
}

/// The fixture packages, built on first use.
pub fn packages() -> Result<&'static Packages> {
    static PACKAGES: OnceLock<Result<Packages, String>> = OnceLock::new();
    load_once(&PACKAGES, "the npm fixture packages", load)
}

fn load() -> Result<Packages> {
    let dir = build(&SCRIPT)?;
    let manifest_text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&manifest_text)?;
    let mut packages = BTreeMap::new();
    for (name, entry) in manifest {
        let text = |value: &serde_json::Value, key: &str| -> Result<String> {
            value[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("manifest entry {name} lacks {key}"))
        };
        let object = |value: &serde_json::Value, key: &str| {
            value[key]
                .as_object()
                .cloned()
                .with_context(|| format!("manifest entry {name} lacks {key}"))
        };
        let mut versions = BTreeMap::new();
        for (version, published) in object(&entry, "versions")? {
            let file = text(&published, "file")?;
            let sha256 = text(&published, "sha256")?;
            let bytes = read_verified(&dir, &file, &sha256)?;
            let number = |key: &str| {
                published[key]
                    .as_u64()
                    .with_context(|| format!("manifest entry {name}@{version} lacks {key}"))
            };
            let contents = object(&published, "contents")?
                .into_iter()
                .map(|(path, digest)| Ok((path, digest.as_str().context("digest")?.to_owned())))
                .collect::<Result<_>>()?;
            let filename = file
                .rsplit('/')
                .next()
                .context("tarball path without a file name")?
                .to_owned();
            let tarball = Tarball {
                name: name.clone(),
                version: version.clone(),
                filename,
                dependencies: object(&published, "dependencies")?,
                time: text(&published, "time")?,
                integrity: text(&published, "integrity")?,
                shasum: text(&published, "shasum")?,
                size: number("size")?,
                file_count: number("fileCount")?,
                unpacked_size: number("unpackedSize")?,
                sha256,
                contents,
                bytes,
            };
            versions.insert(version, tarball);
        }
        let package = Package {
            description: text(&entry, "description")?,
            dist_tags: object(&entry, "dist-tags")?,
            created: text(&entry, "created")?,
            modified: text(&entry, "modified")?,
            versions,
        };
        packages.insert(name, package);
    }
    Ok(Packages { packages })
}
