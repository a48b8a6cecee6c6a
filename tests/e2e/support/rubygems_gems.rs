//! The RubyGems fixture gems: built once per test process by
//! `tests/fixtures/rubygems/build_gems.rb` (real `gem build` and `gem generate_index`) and loaded,
//! with their manifest, quick gemspecs and legacy index files, into memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::Value;

use super::fixture_build::{Interpreter, Script, build, load_once, read_verified};

/// The build script: ten `gem build` runs and two `gem generate_index` runs.
const SCRIPT: Script = Script {
    path: "tests/fixtures/rubygems/build_gems.rb",
    interpreter: Interpreter::Ruby,
    output: "rubygems-gems",
    timeout: Duration::from_secs(120),
};

/// The fixture's gem names.
pub const BASE: &str = "proxfix-base";
/// 0.1.0 depends on `proxfix-base` `>= 1.0.0`, `~> 1.0`.
pub const APP: &str = "proxfix_app";
/// 1.0.0 for the ruby platform and for [`NATIVE_PLATFORM`].
pub const NATIVE: &str = "proxfix_native";
/// 1.0.0 and the prerelease 2.0.0.pre1.
pub const PRE: &str = "proxfix_pre";
/// An ordinary gem that tests corrupt in flight.
pub const BAD: &str = "proxfix_bad";
/// The platform of the binary `proxfix_native` build.
pub const NATIVE_PLATFORM: &str = "x86_64-linux";
/// The `proxfix-base` that is built but held back until a test publishes it.
pub const HELD_BASE: &str = "proxfix-base-1.2.0";
/// The legacy index files, as named below the source URL.
pub const LEGACY_INDEXES: [&str; 3] = [
    "specs.4.8.gz",
    "latest_specs.4.8.gz",
    "prerelease_specs.4.8.gz",
];

/// One built gem, as the manifest describes it, with its bytes.
pub struct Gem {
    pub name: String,
    pub version: String,
    /// `ruby`, or the binary build's platform (`x86_64-linux`).
    pub platform: String,
    /// `name-version` or `name-version-platform`: the stem of its `.gem` and `.gemspec.rz`.
    pub full_name: String,
    /// Not published when the fixture upstream starts.
    pub held: bool,
    /// Its publication time, as in its compact index line.
    pub created_at: String,
    /// Its exact `/info/NAME` line, without the newline.
    pub info_line: String,
    /// Hex sha256 of the `.gem`.
    pub sha256: String,
    pub bytes: Bytes,
    /// `Zlib::Deflate(Marshal.dump(spec))` as `gem generate_index` writes it.
    pub gemspec: Bytes,
    pub gemspec_sha256: String,
}

impl Gem {
    /// `version` or `version-platform`: how `/versions` and `/info/NAME` list it.
    pub fn versions_entry(&self) -> String {
        if self.platform == "ruby" {
            self.version.clone()
        } else {
            format!("{}-{}", self.version, self.platform)
        }
    }

    /// `FULL_NAME.gem`, the file name under `gems/`.
    pub fn filename(&self) -> String {
        format!("{}.gem", self.full_name)
    }

    /// `FULL_NAME.gemspec.rz`, the file name under `quick/Marshal.4.8/`.
    pub fn gemspec_filename(&self) -> String {
        format!("{}.gemspec.rz", self.full_name)
    }
}

/// Every fixture gem, in publication order, and the legacy index of the published ones.
pub struct Gems {
    pub gems: Vec<Gem>,
    /// `specs.4.8.gz`, `latest_specs.4.8.gz` and `prerelease_specs.4.8.gz`, by file name.
    pub indexes: BTreeMap<String, Bytes>,
}

impl Gems {
    /// The gem whose full name is `full_name` (`proxfix_native-1.0.0-x86_64-linux`).
    pub fn gem(&self, full_name: &str) -> Result<&Gem> {
        self.gems
            .iter()
            .find(|gem| gem.full_name == full_name)
            .with_context(|| format!("no fixture gem {full_name}"))
    }

    /// The gem whose `.gem` file is `filename`, if there is one.
    pub fn by_filename(&self, filename: &str) -> Option<&Gem> {
        self.gems.iter().find(|gem| gem.filename() == filename)
    }

    /// The gem whose quick gemspec is `filename`, if there is one.
    pub fn by_gemspec_filename(&self, filename: &str) -> Option<&Gem> {
        self.gems
            .iter()
            .find(|gem| gem.gemspec_filename() == filename)
    }

    /// Every build of `name` (held ones included), in publication order.
    pub fn versions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Gem> + 'a {
        self.gems.iter().filter(move |gem| gem.name == name)
    }

    /// Every gem name, sorted.
    pub fn names(&self) -> BTreeSet<&str> {
        self.gems.iter().map(|gem| gem.name.as_str()).collect()
    }

    /// The legacy index file `filename` (`specs.4.8.gz`…).
    pub fn index(&self, filename: &str) -> Result<&Bytes> {
        self.indexes
            .get(filename)
            .with_context(|| format!("no legacy index file {filename}"))
    }
}

/// The fixture gems, built on first use.
pub fn gems() -> Result<&'static Gems> {
    static GEMS: OnceLock<Result<Gems, String>> = OnceLock::new();
    load_once(&GEMS, "the RubyGems fixture gems", load)
}

fn load() -> Result<Gems> {
    let dir = build(&SCRIPT)?;
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let entries = manifest["gems"]
        .as_array()
        .context("manifest lacks the gems list")?;
    let mut gems = Vec::with_capacity(entries.len());
    for entry in entries {
        let text = |key: &str| -> Result<String> {
            entry[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("manifest entry {entry} lacks {key}"))
        };
        let sha256 = text("sha256")?;
        let gemspec_sha256 = text("gemspec_sha256")?;
        gems.push(Gem {
            name: text("name")?,
            version: text("version")?,
            platform: text("platform")?,
            full_name: text("full_name")?,
            held: entry["held"]
                .as_bool()
                .with_context(|| format!("manifest entry {entry} lacks held"))?,
            created_at: text("created_at")?,
            info_line: text("info_line")?,
            bytes: read_verified(&dir, &text("file")?, &sha256)?,
            sha256,
            gemspec: read_verified(&dir, &text("gemspec_file")?, &gemspec_sha256)?,
            gemspec_sha256,
        });
    }
    let mut indexes = BTreeMap::new();
    for filename in LEGACY_INDEXES {
        let sha256 = manifest["indexes"][filename]
            .as_str()
            .with_context(|| format!("manifest lacks the sha256 of {filename}"))?;
        indexes.insert(filename.to_owned(), read_verified(&dir, filename, sha256)?);
    }
    Ok(Gems { gems, indexes })
}
