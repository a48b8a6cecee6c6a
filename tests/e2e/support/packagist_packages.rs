//! The Packagist fixture packages: built once per test process by
//! `tests/fixtures/packagist/build_packages.py` (GitHub-like zipballs of small Composer packages)
//! and loaded, with their manifest and security advisories, into memory.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::fixture_build::{Interpreter, Script, build, load_once, read_verified};

/// The build script: a handful of small zips, no subprocesses.
const SCRIPT: Script = Script {
    path: "tests/fixtures/packagist/build_packages.py",
    interpreter: Interpreter::Python,
    output: "packagist-packages",
    timeout: Duration::from_secs(60),
};

/// The fixture's package names (Composer names are lower case).
pub const BASE: &str = "proxfix/base";
/// 1.0.0, requiring `proxfix/base: ^1.0`; it has a regenerated archive ([`REGENERATED`]).
pub const APP: &str = "proxfix/app";
/// 2.0.0, and the branches `dev-main` (default) and `dev-feature/x`.
pub const TOOL: &str = "proxfix/tool";
/// 1.0.0, affected by the advisory [`ADVISORY_ID`].
pub const VULN: &str = "proxfix/vuln";
/// 1.0.0, requiring the virtual package [`LOG_IMPLEMENTATION`].
pub const LOGGER: &str = "proxfix/logger";
/// A virtual package: no p2 file of its own; `proxfix/base` 1.1.0 and later provide it.
pub const LOG_IMPLEMENTATION: &str = "proxfix/log-implementation";
/// The `proxfix/base` version that is built but held back until a test publishes it.
pub const HELD_BASE: &str = "1.2.0";
/// The one version whose code host can serve other bytes for the same reference.
pub const REGENERATED: (&str, &str) = (APP, "1.0.0");
/// The advisory against `proxfix/vuln` 1.0.0, and its CVE.
pub const ADVISORY_ID: &str = "PKSA-fx7q-2vnm-9k3d";
pub const ADVISORY_CVE: &str = "CVE-2099-12345";

/// One zip archive as the manifest describes it, with its bytes.
pub struct Archive {
    /// Its path in the build output.
    pub file: String,
    /// Hex sha1: what `dist.shasum` publishes, when it publishes anything.
    pub sha1: String,
    pub sha256: String,
    pub bytes: Bytes,
}

/// One version of one package (a tag, or a branch such as `dev-main`).
pub struct Release {
    pub name: String,
    /// As Composer shows it: `1.0.0`, `dev-main`, `dev-feature/x`.
    pub version: String,
    /// `1.0.0.0`, or the branch version itself.
    pub version_normalized: String,
    /// The fake 40-hex commit the version points at.
    pub reference: String,
    /// `OWNER/REPO` on the code host.
    pub repository: String,
    /// The archive's single top-level folder, `OWNER-REPO-SHORTREF`.
    pub top_folder: String,
    pub archive: Archive,
    /// Other bytes for the same reference, as a code host that rebuilt the zipball serves them.
    pub regenerated: Option<Archive>,
    /// Whether `dist.shasum` carries the archive's sha1 (else `""`, as for GitHub zipballs).
    pub shasum_published: bool,
    /// Not published when the fixture repository starts.
    pub held: bool,
    pub description: String,
    /// composer.json `type`.
    pub package_type: String,
    pub license: Value,
    /// Release time, as Packagist writes it (`2024-06-01T01:00:00+00:00`).
    pub time: String,
    pub require: Map<String, Value>,
    pub autoload: Value,
    /// The other metadata keys (`suggest`, `extra`, `default-branch`), in Packagist's order.
    pub extra_fields: Map<String, Value>,
}

impl Release {
    /// A branch (`dev-*`): listed in `NAME~dev.json`, not `NAME.json`.
    pub fn is_branch(&self) -> bool {
        self.version.starts_with("dev-")
    }

    /// `dist.shasum`: the sha1 of the archive, or `""`.
    pub fn shasum(&self) -> &str {
        if self.shasum_published {
            &self.archive.sha1
        } else {
            ""
        }
    }

    /// `NAME VERSION`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// Every fixture release and the advisories against them.
pub struct Packages {
    /// In the build script's order: by package, oldest first.
    pub releases: Vec<Release>,
    /// Full advisory records, as Packagist's advisories API returns them.
    pub advisories: Vec<Value>,
}

impl Packages {
    /// `name` at `version`.
    pub fn release(&self, name: &str, version: &str) -> Result<&Release> {
        self.releases
            .iter()
            .find(|release| release.name == name && release.version == version)
            .with_context(|| format!("no fixture release {name} {version}"))
    }

    /// Every release of `name` (held ones included), oldest first.
    pub fn releases_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Release> + 'a {
        self.releases
            .iter()
            .filter(move |release| release.name == name)
    }

    /// The release of code host repository `repository` (`OWNER/REPO`) at commit `reference`.
    pub fn by_reference(&self, repository: &str, reference: &str) -> Option<&Release> {
        self.releases
            .iter()
            .find(|release| release.repository == repository && release.reference == reference)
    }

    /// Every package name, sorted.
    pub fn names(&self) -> BTreeSet<&str> {
        self.releases
            .iter()
            .map(|release| release.name.as_str())
            .collect()
    }

    /// The full advisory records against `name`.
    pub fn advisories_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.advisories
            .iter()
            .filter(move |advisory| advisory["packageName"] == name)
    }
}

/// The fixture packages, built on first use.
pub fn packages() -> Result<&'static Packages> {
    static PACKAGES: OnceLock<Result<Packages, String>> = OnceLock::new();
    load_once(&PACKAGES, "the Packagist fixture packages", load)
}

fn load() -> Result<Packages> {
    let dir = build(&SCRIPT)?;
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let entries = manifest["packages"]
        .as_array()
        .context("manifest lacks the packages list")?;
    let releases = entries
        .iter()
        .map(|entry| release(&dir, entry))
        .collect::<Result<_>>()?;
    let advisories = manifest["advisories"]
        .as_array()
        .context("manifest lacks the advisories")?
        .clone();
    Ok(Packages {
        releases,
        advisories,
    })
}

/// One manifest entry, with its archives read and checked against their sha256.
fn release(dir: &std::path::Path, entry: &Value) -> Result<Release> {
    let text = |key: &str| -> Result<String> {
        entry[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("manifest entry {entry} lacks {key}"))
    };
    let flag = |key: &str| -> Result<bool> {
        entry[key]
            .as_bool()
            .with_context(|| format!("manifest entry {entry} lacks {key}"))
    };
    let object = |key: &str| -> Result<Map<String, Value>> {
        entry[key]
            .as_object()
            .cloned()
            .with_context(|| format!("manifest entry {entry} lacks {key}"))
    };
    let regenerated = match &entry["regenerated"] {
        Value::Null => None,
        described => Some(archive(dir, described)?),
    };
    Ok(Release {
        name: text("name")?,
        version: text("version")?,
        version_normalized: text("version_normalized")?,
        reference: text("reference")?,
        repository: text("repository")?,
        top_folder: text("top_folder")?,
        archive: archive(dir, entry)?,
        regenerated,
        shasum_published: flag("shasum_published")?,
        held: flag("held")?,
        description: text("description")?,
        package_type: text("type")?,
        license: entry["license"].clone(),
        time: text("time")?,
        require: object("require")?,
        autoload: entry["autoload"].clone(),
        extra_fields: object("extra_fields")?,
    })
}

/// The archive `described` names (`file`, `sha1`, `sha256`).
fn archive(dir: &std::path::Path, described: &Value) -> Result<Archive> {
    let text = |key: &str| -> Result<String> {
        described[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("manifest archive {described} lacks {key}"))
    };
    let file = text("file")?;
    let sha256 = text("sha256")?;
    Ok(Archive {
        bytes: read_verified(dir, &file, &sha256)?,
        sha1: text("sha1")?,
        file,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use anyhow::ensure;

    use super::*;
    use crate::support::sha256_hex;

    /// The archives look like GitHub zipballs of the manifest's commits, and the fixture holds
    /// what the tests rely on.
    #[test]
    fn builds_github_like_zipballs() -> Result<()> {
        let packages = packages()?;
        ensure!(
            packages
                .names()
                .into_iter()
                .eq([APP, BASE, LOGGER, TOOL, VULN])
        );
        for release in &packages.releases {
            let archive = &release.archive;
            ensure!(sha256_hex(&archive.bytes) == archive.sha256);
            ensure!(release.reference.len() == 40 && archive.sha1.len() == 40);
            // GitHub writes the commit as the zip comment, the last bytes of the archive.
            ensure!(archive.bytes.ends_with(release.reference.as_bytes()));
            let (owner, repo) = release.repository.split_once('/').context("OWNER/REPO")?;
            ensure!(release.top_folder == format!("{owner}-{repo}-{}", &release.reference[..7]));
            ensure!(
                packages
                    .by_reference(&release.repository, &release.reference)
                    .is_some_and(|found| found.label() == release.label())
            );
            ensure!(release.is_branch() == release.version.starts_with("dev-"));
            ensure!(release.shasum().is_empty() != release.shasum_published);
        }
        let held: Vec<String> = packages
            .releases
            .iter()
            .filter(|release| release.held)
            .map(Release::label)
            .collect();
        ensure!(held == [format!("{BASE} {HELD_BASE}")]);
        let (name, version) = REGENERATED;
        let release = packages.release(name, version)?;
        let regenerated = release
            .regenerated
            .as_ref()
            .context("regenerated archive")?;
        ensure!(regenerated.bytes != release.archive.bytes);
        ensure!(regenerated.bytes.ends_with(release.reference.as_bytes()));
        ensure!(
            sha256_hex(&regenerated.bytes) == regenerated.sha256 && !regenerated.file.is_empty()
        );
        ensure!(packages.release(TOOL, "dev-feature/x")?.is_branch());
        let advisories: Vec<&Value> = packages.advisories_of(VULN).collect();
        ensure!(advisories.len() == 1 && advisories[0]["advisoryId"] == ADVISORY_ID);
        ensure!(advisories[0]["cve"] == ADVISORY_CVE);
        Ok(())
    }
}
