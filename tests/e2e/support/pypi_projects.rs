//! A hundred generated PyPI projects shaped like the real index: names spelt every way PEP 503
//! normalises, long release histories, and a fifth of them with pages over a megabyte (a boto3-like
//! history of thousands of releases, or a numpy-like one of many wheel tags per release). One
//! version of each is installable: a real pure-Python wheel with its core metadata, depending on
//! two others so that the hundred form a tree. Generated in memory, deterministically, once per
//! test process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use anyhow::Result;

use super::calendar;
use super::dists::{Dist, Dists, Served};
use super::fixture_build::load_once;
use super::sha256_hex;
use super::wheel;

/// How many projects there are.
pub const PROJECT_COUNT: usize = 100;

const ADJECTIVES: [&str; 10] = [
    "amber", "brisk", "cobalt", "dusky", "eager", "fallow", "gilded", "hollow", "ivory", "jade",
];
const NOUNS: [&str; 10] = [
    "falcon", "otter", "lantern", "meadow", "quarry", "ridge", "sparrow", "thicket", "willow",
    "zephyr",
];

/// The CPython versions and platforms of a numpy-like project's wheels (5 × 5 per release).
const PYTHONS: [&str; 5] = ["cp38", "cp39", "cp310", "cp311", "cp312"];
const PLATFORMS: [&str; 5] = [
    "manylinux_2_17_x86_64.manylinux2014_x86_64",
    "manylinux_2_17_aarch64.manylinux2014_aarch64",
    "macosx_10_9_x86_64",
    "macosx_11_0_arm64",
    "win_amd64",
];

/// 2012-01-01T00:00:00Z, when the first project's history starts.
const HISTORY_START: u64 = 1_325_376_000;
const DAY: u64 = 86_400;

/// The shape of a project's release history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    /// A few dozen releases, each an sdist and a universal wheel: a page of a few kilobytes.
    Short,
    /// Thousands of releases, each an sdist and a universal wheel, like boto3: a page over 1 MB.
    Long,
    /// About a hundred releases of two dozen platform wheels and an sdist each, like numpy: a
    /// page over 1 MB.
    Wide,
}

/// The installable release of one project, as a hash-pinned requirement names it.
pub struct Pin {
    /// The name as the project spells it (and the requirement file writes it), e.g. `Amber_Otter`.
    pub name: String,
    /// PEP 503 normalised.
    pub project: String,
    /// The importable top-level module, which holds `VERSION`.
    pub module: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub history: History,
}

/// The generated catalogue and the pins that install one release of every project.
pub struct Projects {
    pub dists: Dists,
    /// One per project, in project order (the root of the dependency tree first).
    pub pins: Vec<Pin>,
}

impl Projects {
    /// A requirements file pinning every project with `==` and `--hash=sha256:…`, as
    /// `pip-compile --generate-hashes` writes one.
    pub fn requirements(&self) -> String {
        let mut text = String::new();
        for pin in &self.pins {
            let _ = writeln!(
                text,
                "{}=={} \\\n    --hash=sha256:{}",
                pin.name, pin.version, pin.sha256
            );
        }
        text
    }

    /// The normalised names of the projects whose pages are over a megabyte.
    pub fn big_projects(&self) -> Vec<&str> {
        self.pins
            .iter()
            .filter(|pin| pin.history != History::Short)
            .map(|pin| pin.project.as_str())
            .collect()
    }
}

/// The projects, generated on first use.
pub fn projects() -> Result<&'static Projects> {
    static PROJECTS: OnceLock<Result<Projects, String>> = OnceLock::new();
    load_once(&PROJECTS, "the generated PyPI projects", || Ok(generate()))
}

/// One project's identity and history, before its files are made.
struct Plan {
    name: String,
    project: String,
    module: String,
    history: History,
    versions: Vec<String>,
    /// The index in `versions` of the installable release.
    pinned: usize,
    /// When its first release was uploaded (seconds since the epoch).
    first_upload: u64,
}

fn generate() -> Projects {
    let plans: Vec<Plan> = (0..PROJECT_COUNT).map(plan).collect();
    let mut files = BTreeMap::new();
    let mut pins = Vec::with_capacity(PROJECT_COUNT);
    for (index, plan) in plans.iter().enumerate() {
        for (release, version) in plan.versions.iter().enumerate() {
            if release != plan.pinned {
                for dist in listed_release(plan, release, version) {
                    files.insert(dist.filename.clone(), dist);
                }
            }
        }
        let children: Vec<&Plan> = [2 * index + 1, 2 * index + 2]
            .iter()
            .filter_map(|child| plans.get(*child))
            .collect();
        let (dist, pin) = installable_release(index, &plans, &children);
        files.insert(dist.filename.clone(), dist);
        pins.push(pin);
    }
    Projects {
        dists: Dists::new(files),
        pins,
    }
}

/// The `index`th project: its name, spelling, history shape and versions.
fn plan(index: usize) -> Plan {
    let adjective = ADJECTIVES[index / NOUNS.len()];
    let noun = NOUNS[index % NOUNS.len()];
    let project = format!("{adjective}-{noun}");
    // Every spelling PEP 503 folds to the same project.
    let name = match index % 4 {
        0 => project.clone(),
        1 => format!("{}_{}", capitalize(adjective), capitalize(noun)),
        2 => format!("{adjective}.{noun}"),
        _ => format!("{}-{}", adjective.to_uppercase(), capitalize(noun)),
    };
    let decade = index / 10;
    let (history, count) = match index % 10 {
        2 => (History::Long, 1500 + 50 * decade),
        7 => (History::Wide, 90 + 4 * decade),
        _ => (History::Short, 3 + (index * 7) % 25),
    };
    let versions: Vec<String> = (0..count).map(version).collect();
    // Most pins take the latest release; some an older one, as lock files do.
    let pinned = if index % 7 == 3 {
        count * 2 / 3
    } else {
        count - 1
    };
    Plan {
        module: project.replace('-', "_"),
        name,
        project,
        history,
        versions,
        pinned,
        first_upload: HISTORY_START + index as u64 * 3 * DAY,
    }
}

/// The `release`th version of a history: 1.0.0, 1.0.1, … 1.0.9, 1.1.0, … 2.0.0 after 100.
fn version(release: usize) -> String {
    format!(
        "{}.{}.{}",
        1 + release / 100,
        (release / 10) % 10,
        release % 10
    )
}

fn capitalize(word: &str) -> String {
    let mut characters = word.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

/// The files of a release that pages list but nobody installs: their digests and sizes are
/// made up (deterministically), and the files server answers 404 for them.
fn listed_release(plan: &Plan, release: usize, version: &str) -> Vec<Dist> {
    let mut filenames = vec![format!("{}-{version}.tar.gz", plan.module)];
    match plan.history {
        History::Short | History::Long => {
            filenames.push(format!("{}-{version}-py3-none-any.whl", plan.module));
        }
        History::Wide => {
            for python in PYTHONS {
                for platform in PLATFORMS {
                    filenames.push(format!(
                        "{}-{version}-{python}-{python}-{platform}.whl",
                        plan.module
                    ));
                }
            }
        }
    }
    // Old releases supported older Pythons.
    let requires_python = if release < plan.versions.len() / 3 {
        ">=3.6"
    } else {
        ">=3.8"
    };
    filenames
        .into_iter()
        .enumerate()
        .map(|(position, filename)| {
            let sha256 = sha256_hex(filename.as_bytes());
            let wheel = filename.ends_with(".whl");
            let size = 20_000 + u64::from_str_radix(&sha256[..5], 16).unwrap_or(0);
            Dist {
                project: plan.project.clone(),
                version: version.to_owned(),
                requires_python: Some(requires_python.to_owned()),
                size,
                upload_time: upload_time(plan, release, position),
                metadata_sha256: wheel
                    .then(|| sha256_hex(format!("{filename}.metadata").as_bytes())),
                served: None,
                sha256,
                filename,
            }
        })
        .collect()
}

/// The installable release: a universal wheel importing as `plan.module`, requiring `children`
/// (one by its own spelling, one normalised, each bounded to its pinned major version) and,
/// behind markers that never hold here, other projects.
fn installable_release(index: usize, plans: &[Plan], children: &[&Plan]) -> (Dist, Pin) {
    let plan = &plans[index];
    let version = &plan.versions[plan.pinned];
    let mut requires_dist = Vec::new();
    for (position, child) in children.iter().enumerate() {
        let child_version = &child.versions[child.pinned];
        let major = child_version.split('.').next().unwrap_or("1");
        let next_major = major.parse::<u32>().unwrap_or(1) + 1;
        let spelling = if position == 0 {
            &child.name
        } else {
            &child.project
        };
        requires_dist.push(format!("{spelling}<{next_major},>={major}.0"));
    }
    // Resolution must skip these: an extra nobody asks for, and an interpreter nobody runs.
    let elsewhere = |offset: usize| &plans[(index + offset) % plans.len()].name;
    requires_dist.push(format!("{}>=1.0; extra == \"speed\"", elsewhere(37)));
    requires_dist.push(format!("{}>=1.0; python_version < \"3.0\"", elsewhere(61)));
    let mut metadata = format!(
        "Metadata-Version: 2.1\nName: {}\nVersion: {version}\nSummary: Generated fixture project {}\n\
         Requires-Python: >=3.8\nProvides-Extra: speed\n",
        plan.name, plan.project
    );
    for requirement in &requires_dist {
        let _ = writeln!(metadata, "Requires-Dist: {requirement}");
    }
    let init = format!("VERSION = \"{version}\"\n");
    let built = wheel::build(
        &plan.module,
        version,
        &[(format!("{}/__init__.py", plan.module), init.into_bytes())],
        &metadata,
    );
    let filename = format!("{}-{version}-py3-none-any.whl", plan.module);
    let sha256 = sha256_hex(&built.bytes);
    let dist = Dist {
        filename: filename.clone(),
        project: plan.project.clone(),
        version: version.clone(),
        requires_python: Some(">=3.8".to_owned()),
        sha256: sha256.clone(),
        size: built.bytes.len() as u64,
        upload_time: upload_time(plan, plan.pinned, 0),
        metadata_sha256: Some(sha256_hex(&built.metadata)),
        served: Some(Served {
            bytes: built.bytes,
            metadata: Some(built.metadata),
        }),
    };
    let pin = Pin {
        name: plan.name.clone(),
        project: plan.project.clone(),
        module: plan.module.clone(),
        version: version.clone(),
        filename,
        sha256,
        history: plan.history,
    };
    (dist, pin)
}

/// When the `position`th file of the `release`th release of `plan` was uploaded: releases a day
/// apart, files of one release a few minutes apart.
fn upload_time(plan: &Plan, release: usize, position: usize) -> String {
    let seconds = plan.first_upload + release as u64 * DAY + position as u64 * 137;
    rfc3339(
        seconds,
        (release * 7919 + position * 104_729) as u32 % 1_000_000,
    )
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339(seconds: u64, micros: u32) -> String {
    format!("{}.{micros:06}Z", calendar::date_time(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() -> Result<()> {
        for (seconds, expected) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (HISTORY_START, "2012-01-01T00:00:00.000000Z"),
            (951_782_400 + 3661, "2000-02-29T01:01:01.000000Z"),
            (1_767_225_599, "2025-12-31T23:59:59.000000Z"),
        ] {
            anyhow::ensure!(
                rfc3339(seconds, 0) == expected,
                "{seconds}: {}",
                rfc3339(seconds, 0)
            );
        }
        Ok(())
    }
}
