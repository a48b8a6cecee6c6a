//! A generated npm registry the size of a real project's dependency tree: several hundred
//! packages with real tarballs, a dependency graph that a root project pulls in whole (semver
//! ranges of every common form, shared dependencies, some packages needed at two majors), and
//! packuments as large as real ones (popular packages have tens to hundreds of versions): about
//! half of tens of kilobytes, a third of hundreds, a tenth of one to four megabytes (`exports`
//! maps), and three "giants" whose thousands of versions make 7-9 MB, as the most depended-on
//! packages of the real registry have; 145 MB in all. Generated in-process from a fixed seed, so
//! the same bytes on every run, once per test process (two to five seconds on two busy cores).
//!
//! Every range the graph uses resolves, in each major, to the highest stable version of that
//! major, which is also the only one a resolver may pick (the `latest` tag is the highest stable
//! version overall; prereleases match no range). So the set of installed versions does not
//! depend on a client's resolution details: [`Tree::installed`] is what any correct client
//! installs.

mod packument;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::calendar;
use super::fixture_build::load_once;
use super::npm_packages::{Package, Packages, Tarball};
use super::npm_tarball::pack;

/// How many packages the tree has.
const PACKAGE_COUNT: usize = 400;
/// How many of the first packages the root project depends on directly.
const ROOT_DEPENDENCIES: usize = 16;
/// Where the giants sit in the package order, and how many versions each has (real packuments of
/// packages like these run from 5 to 30 MB).
const GIANTS: [(usize, usize); 3] = [(3, 2000), (97, 2400), (241, 3000)];
/// The last packages in the order are the small utilities everything uses: extra dependency edges
/// favour them, so they are shared and needed at several majors.
const POPULAR: usize = 30;
const SEED: u64 = 0x706d_6361_6368_6532;

/// The generated registry and the project that installs all of it.
pub struct Tree {
    pub packages: Packages,
    /// Each packument, made once, waiting for a registry base URL.
    templates: BTreeMap<String, packument::Template>,
    /// The root project's `dependencies`.
    pub root_dependencies: Map<String, Value>,
    /// Every `(name, version)` an install of the root project puts in `node_modules`.
    pub installed: BTreeSet<(String, String)>,
    /// The packages with thousands of versions.
    pub giants: Vec<String>,
}

impl Tree {
    /// The root project's `package.json`.
    pub fn package_json(&self) -> String {
        let manifest = json!({
            "name": "pmcache-e2e-tree",
            "version": "1.0.0",
            "private": true,
            "dependencies": self.root_dependencies,
        });
        format!("{manifest:#}\n")
    }

    /// The tarballs an install of the root project fetches, one per installed version.
    pub fn installed_tarballs(&self) -> Result<Vec<&Tarball>> {
        self.installed
            .iter()
            .map(|(name, version)| self.packages.tarball(name, version))
            .collect()
    }

    /// The full packument of `name`, as the registry serves it, with tarball URLs on `base` (a
    /// registry base URL ending in `/`).
    pub fn packument(&self, name: &str, base: &str) -> Result<Bytes> {
        let template = self
            .templates
            .get(name)
            .with_context(|| format!("no package {name} in the tree"))?;
        Ok(template.render(base))
    }
}

/// The tree, generated on first use.
pub fn tree() -> Result<&'static Tree> {
    static TREE: OnceLock<Result<Tree, String>> = OnceLock::new();
    load_once(&TREE, "the generated npm tree", generate)
}

/// A splitmix64 generator: deterministic, and enough for shaping fixtures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// An index below `length` (which must not be zero).
    fn index(&mut self, length: usize) -> usize {
        (self.next() % length as u64) as usize
    }

    fn chance(&mut self, probability: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// A semver version as the generator makes them: a release, or a prerelease `-beta.N`/`-rc.N`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    prerelease: Option<String>,
}

impl Version {
    fn release(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
            prerelease: None,
        }
    }

    fn is_stable(&self) -> bool {
        self.prerelease.is_none()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(prerelease) = &self.prerelease {
            write!(formatter, "-{prerelease}")?;
        }
        Ok(())
    }
}

/// What kind of package a draft is: how many versions it has and how much each one's manifest
/// says, which together make its packument's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A few versions, short manifests: tens of kilobytes.
    Light,
    /// Tens of versions, some with an `exports` map: hundreds of kilobytes.
    Medium,
    /// Tens of versions with large `exports` maps (as `@babel/runtime` has): around a megabyte.
    Heavy,
    /// Thousands of versions and a long readme: many megabytes.
    Giant,
}

impl Profile {
    /// The profile of the package at `index`, and its number of versions.
    fn draw(rng: &mut Rng, index: usize) -> (Self, usize) {
        if let Some((_, count)) = GIANTS.iter().find(|(at, _)| *at == index) {
            return (Self::Giant, *count);
        }
        match rng.between(0, 99) {
            0..=11 => (Self::Heavy, rng.between(30, 90) as usize),
            12..=55 => (Self::Medium, rng.between(15, 70) as usize),
            _ => (Self::Light, rng.between(2, 14) as usize),
        }
    }
}

/// One package while the tree is generated.
struct Draft {
    name: String,
    /// Every version in semver order (the order they were published).
    versions: Vec<Version>,
    /// Publish time of each version, in seconds since the epoch.
    times: Vec<u64>,
    /// The majors something depends on.
    required: BTreeSet<u64>,
    /// The dependencies of every version of a major, by major.
    dependencies: BTreeMap<u64, Map<String, Value>>,
    profile: Profile,
}

impl Draft {
    /// The majors with at least one stable version, lowest first (never 0: `^0.x` ranges
    /// narrow to a minor, which the graph does not use).
    fn stable_majors(&self) -> Vec<u64> {
        let majors: BTreeSet<u64> = self
            .versions
            .iter()
            .filter(|version| version.is_stable() && version.major > 0)
            .map(|version| version.major)
            .collect();
        majors.into_iter().collect()
    }

    /// The stable versions of `major`, lowest first.
    fn stable_in(&self, major: u64) -> Vec<&Version> {
        self.versions
            .iter()
            .filter(|version| version.is_stable() && version.major == major)
            .collect()
    }

    /// The version every range on `major` resolves to: its highest stable version.
    fn top(&self, major: u64) -> &Version {
        self.stable_in(major)
            .pop()
            .expect("only majors with stable versions are required")
    }
}

fn generate() -> Result<Tree> {
    let mut rng = Rng(SEED);
    let names = names(&mut rng);
    let mut drafts: Vec<Draft> = names
        .into_iter()
        .enumerate()
        .map(|(index, name)| draft(&mut rng, index, name))
        .collect();
    let root_dependencies = connect(&mut rng, &mut drafts);
    let mut installed = BTreeSet::new();
    for draft in &drafts {
        for &major in &draft.required {
            installed.insert((draft.name.clone(), draft.top(major).to_string()));
        }
    }
    let giants = drafts
        .iter()
        .filter(|draft| draft.profile == Profile::Giant)
        .map(|draft| draft.name.clone())
        .collect();
    let mut packages = BTreeMap::new();
    let mut templates = BTreeMap::new();
    for (name, package, template) in publish_all(&drafts)? {
        packages.insert(name.clone(), package);
        templates.insert(name, template);
    }
    Ok(Tree {
        packages: Packages { packages },
        templates,
        root_dependencies,
        installed,
        giants,
    })
}

/// Every draft's tarballs and packument, made on every core: this is the bulk of the work. Each
/// package draws from a generator seeded by its position, so the output does not depend on how
/// the work is split.
fn publish_all(drafts: &[Draft]) -> Result<Vec<(String, Package, packument::Template)>> {
    let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get().min(8));
    let mut published: Vec<(usize, String, Package, packument::Template)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|worker| {
                    scope.spawn(move || {
                        drafts
                            .iter()
                            .enumerate()
                            .skip(worker)
                            .step_by(workers)
                            .map(|(index, draft)| {
                                let (package, template) = publish(index, draft)?;
                                Ok((index, draft.name.clone(), package, template))
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("a tree generator thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
    published.sort_by_key(|(index, ..)| *index);
    Ok(published
        .into_iter()
        .map(|(_, name, package, template)| (name, package, template))
        .collect())
}

/// The package at `index`: its tarballs and its packument.
fn publish(index: usize, draft: &Draft) -> Result<(Package, packument::Template)> {
    let mut rng = Rng(SEED ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let order = draft.versions.iter().map(ToString::to_string).collect();
    let details = packument::Details::generate(&mut rng, &draft.name, draft.profile, order);
    let package = package(draft, &details.description)?;
    let template = packument::template(&draft.name, &package, &details);
    Ok((package, template))
}

/// [`PACKAGE_COUNT`] distinct package names, some scoped, in generation order.
fn names(rng: &mut Rng) -> Vec<String> {
    const ADJECTIVES: [&str; 24] = [
        "fast", "tiny", "deep", "lazy", "pure", "safe", "smart", "strict", "plain", "quick",
        "simple", "solid", "super", "micro", "mini", "neat", "open", "rapid", "raw", "clean",
        "fresh", "light", "proper", "shallow",
    ];
    const NOUNS: [&str; 40] = [
        "merge", "clone", "glob", "path", "stream", "buffer", "color", "chalk", "debug", "event",
        "emitter", "queue", "cache", "parse", "string", "array", "object", "promise", "retry",
        "semver", "hash", "crypto", "url", "query", "json", "yaml", "ansi", "style", "signal",
        "lock", "map", "set", "date", "time", "format", "escape", "match", "pattern", "walk",
        "watch",
    ];
    const SUFFIXES: [&str; 8] = ["js", "core", "utils", "lite", "plus", "parser", "kit", "x"];
    const SCOPES: [&str; 4] = ["@tree", "@kit", "@forge", "@orbit"];
    let mut seen = BTreeSet::new();
    let mut names = Vec::with_capacity(PACKAGE_COUNT);
    while names.len() < PACKAGE_COUNT {
        let base = if rng.chance(0.6) {
            format!("{}-{}", rng.pick(&ADJECTIVES), rng.pick(&NOUNS))
        } else {
            format!("{}-{}", rng.pick(&NOUNS), rng.pick(&SUFFIXES))
        };
        let name = if rng.chance(0.12) {
            format!("{}/{base}", rng.pick(&SCOPES))
        } else {
            base
        };
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// The package at `index` in the order: its versions and their publish times.
fn draft(rng: &mut Rng, index: usize, name: String) -> Draft {
    let (profile, count) = Profile::draw(rng, index);
    let versions = history(rng, count, profile == Profile::Giant);
    // Published between 2014 and mid-2025, the oldest first; a giant about daily.
    let start = rng.between(1_388_534_400, 1_577_836_800);
    let end = 1_748_736_000u64;
    let step = (end - start) / count as u64;
    let mut time = start;
    let times = (0..count)
        .map(|_| {
            time += rng.between(step / 2, step);
            time
        })
        .collect();
    Draft {
        name,
        versions,
        times,
        required: BTreeSet::new(),
        dependencies: BTreeMap::new(),
        profile,
    }
}

/// `count` versions in increasing semver order: patches, minors and occasional majors, with
/// betas and release candidates before some majors, and one major at least 1.
fn history(rng: &mut Rng, count: usize, giant: bool) -> Vec<Version> {
    let major_rate = if giant { 0.004 } else { 1.2 / count as f64 };
    let mut current = if rng.chance(0.4) {
        Version::release(0, 1, 0)
    } else {
        Version::release(1, 0, 0)
    };
    let mut versions = vec![current.clone()];
    while versions.len() < count {
        let remaining = count - versions.len();
        let bump_major = current.major == 0 && remaining == 1 || rng.chance(major_rate);
        if bump_major {
            let next = current.major + 1;
            if giant || rng.chance(0.2) {
                let tag = if rng.chance(0.5) { "beta" } else { "rc" };
                for n in 0..rng.between(1, 4).min(remaining.saturating_sub(1) as u64) {
                    let mut pre = Version::release(next, 0, 0);
                    pre.prerelease = Some(format!("{tag}.{n}"));
                    versions.push(pre);
                }
            }
            current = Version::release(next, 0, 0);
        } else if rng.chance(0.2) {
            current = Version::release(current.major, current.minor + 1, 0);
        } else {
            current = Version::release(current.major, current.minor, current.patch + 1);
        }
        versions.push(current.clone());
    }
    versions.truncate(count);
    if !versions.iter().any(|v| v.is_stable() && v.major > 0) {
        // Only the last slot can be left: make it the first 1.x.
        let last = versions.len() - 1;
        versions[last] = Version::release(versions[last].major.max(1), 0, 0);
    }
    versions
}

/// Draws the dependency graph: the root depends on the first [`ROOT_DEPENDENCIES`] packages,
/// every later package hangs under an earlier one (so the root reaches it), and each needed
/// major adds a few edges to later packages (so dependencies are shared, and some are needed at
/// two majors). Edges only point forward, so there are no cycles. Returns the root's
/// dependencies.
fn connect(rng: &mut Rng, drafts: &mut [Draft]) -> Map<String, Value> {
    let mut root = Map::new();
    for index in 0..drafts.len() {
        if index < ROOT_DEPENDENCIES {
            let major = *drafts[index]
                .stable_majors()
                .last()
                .expect("a stable major");
            drafts[index].required.insert(major);
            root.insert(
                drafts[index].name.clone(),
                range(rng, &drafts[index], major),
            );
        } else {
            let parent = rng.index(index);
            let parent_majors: Vec<u64> = drafts[parent].required.iter().copied().collect();
            let parent_major = *rng.pick(&parent_majors);
            depend(rng, drafts, (parent, parent_major), index);
        }
        let majors: Vec<u64> = drafts[index].required.iter().copied().collect();
        for major in majors {
            for _ in 0..rng.between(0, 3) {
                let later = drafts.len() - index - 1;
                if later == 0 {
                    break;
                }
                let target = if rng.chance(0.5) && later > POPULAR {
                    drafts.len() - 1 - rng.index(POPULAR)
                } else {
                    index + 1 + rng.index(later)
                };
                depend(rng, drafts, (index, major), target);
            }
        }
    }
    root
}

/// Makes major `from.1` of package `from.0` depend on package `target`, mostly on its newest
/// major, sometimes on an older one.
fn depend(rng: &mut Rng, drafts: &mut [Draft], from: (usize, u64), target: usize) {
    let name = drafts[target].name.clone();
    if drafts[from.0]
        .dependencies
        .get(&from.1)
        .is_some_and(|existing| existing.contains_key(&name))
    {
        return;
    }
    let majors = drafts[target].stable_majors();
    let major = if rng.chance(0.2) {
        *rng.pick(&majors)
    } else {
        *majors.last().expect("a stable major")
    };
    let spec = range(rng, &drafts[target], major);
    drafts[target].required.insert(major);
    drafts[from.0]
        .dependencies
        .entry(from.1)
        .or_default()
        .insert(name, spec);
}

/// A range over `major` of `draft` in one of the forms real manifests use, each resolving to the
/// major's highest stable version and to nothing outside the major.
fn range(rng: &mut Rng, draft: &Draft, major: u64) -> Value {
    let stable = draft.stable_in(major);
    let top = draft.top(major);
    let floor = rng.pick(&stable);
    let text = match rng.between(0, 99) {
        0..=69 => format!("^{floor}"),
        70..=79 => format!("~{}.{}.{}", top.major, top.minor, rng.between(0, top.patch)),
        80..=84 => format!("{major}.x"),
        85..=92 => format!(">={floor} <{}.0.0", major + 1),
        _ => top.to_string(),
    };
    Value::String(text)
}

/// The published package for `draft`: a real tarball for every version.
fn package(draft: &Draft, description: &str) -> Result<Package> {
    let mut versions = BTreeMap::new();
    for (version, &time) in draft.versions.iter().zip(&draft.times) {
        let dependencies = draft
            .dependencies
            .get(&version.major)
            .cloned()
            .unwrap_or_default();
        let tarball = tarball(&draft.name, description, version, dependencies, time)?;
        versions.insert(version.to_string(), tarball);
    }
    let latest = draft
        .versions
        .iter()
        .rfind(|version| version.is_stable())
        .context("a package without a stable version")?;
    let mut dist_tags = Map::new();
    dist_tags.insert("latest".to_owned(), latest.to_string().into());
    if let Some(last) = draft.versions.last().filter(|last| !last.is_stable()) {
        dist_tags.insert("next".to_owned(), last.to_string().into());
    }
    Ok(Package {
        description: description.to_owned(),
        dist_tags,
        created: rfc3339(draft.times[0]),
        modified: rfc3339(*draft.times.last().context("no versions")?),
        versions,
    })
}

/// One version's tarball: `package.json`, `index.js`, `README.md` and `LICENSE`.
fn tarball(
    name: &str,
    description: &str,
    version: &Version,
    dependencies: Map<String, Value>,
    time: u64,
) -> Result<Tarball> {
    let basename = name.rsplit('/').next().unwrap_or(name);
    let mut manifest = json!({
        "name": name,
        "version": version.to_string(),
        "description": description,
        "main": "index.js",
        "license": "MIT",
        "repository": {"type": "git", "url": format!("git+https://github.com/tree-fixtures/{basename}.git")},
    });
    if !dependencies.is_empty() {
        manifest["dependencies"] = Value::Object(dependencies.clone());
    }
    let files = [
        ("package.json", format!("{manifest:#}\n").into_bytes()),
        (
            "index.js",
            format!(
                "'use strict';\n\nmodule.exports = {{ name: '{name}', version: '{version}' }};\n"
            )
            .into_bytes(),
        ),
        (
            "README.md",
            format!("# {name}\n\n{description}\n").into_bytes(),
        ),
        ("LICENSE", packument::LICENSE.as_bytes().to_vec()),
    ];
    let packed = pack(&files)?;
    Ok(Tarball {
        name: name.to_owned(),
        version: version.to_string(),
        filename: format!("{basename}-{version}.tgz"),
        dependencies,
        time: rfc3339(time),
        integrity: packed.integrity,
        shasum: packed.shasum,
        sha256: packed.sha256,
        size: packed.bytes.len() as u64,
        file_count: packed.file_count,
        unpacked_size: packed.unpacked_size,
        contents: packed.contents,
        bytes: packed.bytes,
    })
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.000Z`, as the registry writes times.
fn rfc3339(seconds: u64) -> String {
    format!("{}.000Z", calendar::date_time(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::ensure;

    #[test]
    fn formats_times_like_the_registry() -> Result<()> {
        ensure!(rfc3339(0) == "1970-01-01T00:00:00.000Z");
        ensure!(rfc3339(1_748_736_000) == "2025-06-01T00:00:00.000Z");
        ensure!(rfc3339(951_825_600 + 3_661) == "2000-02-29T13:01:01.000Z");
        Ok(())
    }

    /// The tree has the promised shape: every package installed at least once, some twice, every
    /// installed version's dependencies installed, giants of several megabytes; and it is quick
    /// to make.
    #[test]
    fn generates_a_connected_tree_with_giants() -> Result<()> {
        let started = std::time::Instant::now();
        let tree = tree()?;
        let generated = started.elapsed();
        let installed_names: BTreeSet<&str> = tree
            .installed
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        ensure!(
            installed_names.len() == PACKAGE_COUNT,
            "{} packages installed",
            installed_names.len()
        );
        ensure!(
            tree.installed.len() > PACKAGE_COUNT + 20,
            "{} versions installed",
            tree.installed.len()
        );
        for tarball in tree.installed_tarballs()? {
            for name in tarball.dependencies.keys() {
                ensure!(
                    installed_names.contains(name.as_str()),
                    "{name} not installed"
                );
            }
        }
        let started = std::time::Instant::now();
        let mut total = 0;
        let mut sizes = Vec::new();
        let mut histogram = [0usize; 4];
        for name in tree.packages.packages.keys() {
            let document = tree.packument(name, "https://127.0.0.1:1/registry/")?;
            total += document.len();
            histogram[match document.len() {
                0..100_000 => 0,
                100_000..1_000_000 => 1,
                1_000_000..4_000_000 => 2,
                _ => 3,
            }] += 1;
            if tree.giants.contains(name) {
                sizes.push((name.clone(), document.len()));
            }
        }
        let tarballs: usize = tree
            .packages
            .packages
            .values()
            .map(|p| p.versions.len())
            .sum();
        eprintln!(
            "generated {tarballs} tarballs in {generated:?}; rendered {total} packument bytes in {:?}; \
             {} versions installed; packuments <100 KB, <1 MB, <4 MB, more: {histogram:?}; \
             giants {sizes:?}; root {}",
            started.elapsed(),
            tree.installed.len(),
            tree.package_json()
        );
        ensure!(sizes.len() == GIANTS.len() && sizes.iter().all(|(_, size)| *size > 4_000_000));
        Ok(())
    }
}
