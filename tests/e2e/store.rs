//! Store end-to-end tests: `pmcache gc` and `pmcache verify` against a running server, eviction
//! under a small `storage.max_size`, and a full disk (a real, tiny tmpfs). Plain HTTP GETs play
//! pip against the PyPI fixture upstream.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};

use crate::support::dists::{BIG, Dist, LIB_1_0, LIB_1_1, UTIL, dists};
use crate::support::http;
use crate::support::pmcache::{self, Pmcache};
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::{sha256_hex, wait_until};

/// How long background eviction may take to bring the store under its cap.
const EVICTION_TIMEOUT: Duration = Duration::from_secs(20);

/// One test's world: the PyPI fixture (HTML pages) and pmcache in front of it.
type Case = crate::support::case::Case<PypiUpstream>;

impl Case {
    /// The path (from `/`) pmcache's project page links `filename` at.
    fn file_path(&self, dist: &Dist) -> Result<String> {
        file_path(self.pmcache(), dist)
    }

    /// GETs `path` and fails unless it is a complete 200 with `dist`'s published bytes.
    fn fetch(&self, path: &str, dist: &Dist) -> Result<()> {
        fetch(self.pmcache(), path, dist)
    }
}

fn file_path(pmcache: &Pmcache, dist: &Dist) -> Result<String> {
    let page_url = format!("{}{}/", pmcache.pypi_index_url(), dist.project);
    let page = http::get_with(&page_url, &[("accept", "text/html")])?;
    ensure!(page.status == 200, "GET {page_url}: {}", page.describe());
    let suffix = format!("/{}", dist.filename);
    page.text()
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|link| link.split('#').next().unwrap_or_default().to_owned())
        .find(|link| link.starts_with('/') && link.ends_with(&suffix))
        .with_context(|| format!("{page_url} has no root-relative link to {}", dist.filename))
}

fn fetch(pmcache: &Pmcache, path: &str, dist: &Dist) -> Result<()> {
    let url = format!("{}{path}", pmcache.base_url());
    let got = http::get_digest(&url)?;
    ensure!(
        got.status == 200 && got.body_error.is_none(),
        "GET {url}: HTTP {} after {} bytes, error {:?}",
        got.status,
        got.length,
        got.body_error
    );
    ensure!(
        got.length == dist.size && got.sha256 == dist.sha256,
        "GET {url}: {} bytes with sha256 {}, published {} bytes with {}",
        got.length,
        got.sha256,
        dist.size,
        dist.sha256
    );
    Ok(())
}

/// The blob file of `sha256` in the store.
fn blob_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir
        .join("blobs")
        .join(&sha256[0..2])
        .join(&sha256[2..4])
        .join(sha256)
}

/// GETs `project`'s page as HTML and as JSON, each identity and gzip-encoded.
fn read_every_rendering(pmcache: &Pmcache, project: &str) -> Result<()> {
    let url = format!("{}{project}/", pmcache.pypi_index_url());
    for accept in ["text/html", "application/vnd.pypi.simple.v1+json"] {
        for encoding in ["identity", "gzip"] {
            let page = http::get_with(&url, &[("accept", accept), ("accept-encoding", encoding)])?;
            ensure!(page.status == 200, "GET {url}: {}", page.describe());
        }
    }
    Ok(())
}

fn metric(pmcache: &Pmcache, name: &str) -> Result<f64> {
    pmcache
        .metric(name)?
        .with_context(|| format!("no metric {name} at /metrics"))
}

/// `pmcache verify` run while `serve` runs moves a corrupted blob to quarantine (exit status
/// non-zero: the store was inconsistent), the next request fetches the file again, and
/// `pmcache gc` through the server then removes an unreferenced blob and a stale temp file.
#[test]
fn verify_and_gc_run_against_the_serving_process() -> Result<()> {
    let case = Case::pypi(PageFormat::Html, &[])?;
    let lib = dists()?.get(LIB_1_0)?;
    let path = case.file_path(lib)?;
    case.fetch(&path, lib)?;
    let data_dir = case.data_dir();
    pmcache::ensure_stored(&data_dir, &[&lib.sha256])?;
    ensure!(
        data_dir.join("control.sock").exists(),
        "serve made no control socket"
    );

    std::fs::write(blob_path(&data_dir, &lib.sha256), b"flipped bits")?;
    let verified = pmcache::verify(case.dir.path(), &data_dir)?;
    println!("pmcache verify:\n{}", verified.output());
    ensure!(
        !verified.status.success(),
        "verify passed over a corrupt blob:\n{}",
        verified.output()
    );
    ensure!(
        verified.stdout.contains("through the running server")
            && verified
                .stdout
                .contains(&format!("quarantined blob {}", lib.sha256)),
        "verify did not quarantine through the server:\n{}",
        verified.output()
    );
    pmcache::ensure_not_stored(&data_dir, &[&lib.sha256])?;
    let quarantined = std::fs::read_dir(data_dir.join("quarantine"))?.count();
    ensure!(quarantined == 1, "{quarantined} files in quarantine/");

    let fetches = case.upstream.artifact_requests(LIB_1_0);
    case.fetch(&path, lib)?;
    ensure!(
        case.upstream.artifact_requests(LIB_1_0) == fetches + 1,
        "the quarantined file was not fetched again"
    );
    pmcache::ensure_stored(&data_dir, &[&lib.sha256])?;
    let again = pmcache::verify(case.dir.path(), &data_dir)?;
    ensure!(
        again.status.success(),
        "verify after the refetch:\n{}",
        again.output()
    );

    let orphan = b"a blob no record names";
    let orphan_path = blob_path(&data_dir, &sha256_hex(orphan));
    std::fs::create_dir_all(orphan_path.parent().context("fan-out dir")?)?;
    std::fs::write(&orphan_path, orphan)?;
    let stale = data_dir.join("tmp").join("left-by-a-dead-process.part");
    std::fs::write(&stale, b"partial")?;
    File::options()
        .write(true)
        .open(&stale)?
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))?;
    let collected = pmcache::gc(case.dir.path(), &data_dir)?;
    println!("pmcache gc:\n{}", collected.output());
    ensure!(
        collected.status.success() && collected.stdout.contains("through the running server"),
        "gc through the server failed:\n{}",
        collected.output()
    );
    ensure!(
        collected
            .stdout
            .contains("removed 1 unreferenced blobs (22 bytes) and 1 stale temp files (7 bytes)"),
        "gc report:\n{}",
        collected.output()
    );
    ensure!(!orphan_path.exists() && !stale.exists(), "gc left them");
    pmcache::ensure_stored(&data_dir, &[&lib.sha256])?;
    case.fetch(&path, lib)?;
    ensure!(metric(case.pmcache(), "pmcache_store_gc_runs_total")? >= 1.0);
    Ok(())
}

/// With `storage.max_size` just under what is stored, the least recently used blob is evicted at
/// start; fetching it again takes the store over the cap, and the blob least recently used by
/// then goes in the background. Evicted files are fetched again, whole.
#[test]
fn eviction_keeps_the_store_under_max_size() -> Result<()> {
    let mut case = Case::pypi(PageFormat::Html, &[])?;
    let (old, middle, recent) = (
        dists()?.get(LIB_1_0)?,
        dists()?.get(UTIL)?,
        dists()?.get(LIB_1_1)?,
    );
    let paths = [old, middle, recent]
        .iter()
        .map(|dist| case.file_path(dist))
        .collect::<Result<Vec<_>>>()?;
    // Last access is kept in milliseconds: each fetch (an upstream fetch, an fsync'd commit and
    // an index write) takes longer than one, so the three are ordered as fetched.
    for (path, dist) in paths.iter().zip([old, middle, recent]) {
        case.fetch(path, dist)?;
    }
    // Every stored rendering of the project pages is read again: now the most recent.
    for project in [&old.project, &middle.project] {
        read_every_rendering(case.pmcache(), project)?;
    }
    let size = metric(case.pmcache(), "pmcache_store_size_bytes")? as u64;
    case.pmcache_mut().stop()?;

    let cap = (size - 1).to_string();
    let data_dir = case.data_dir();
    case.restart_with(&[
        ("PMCACHE_STORAGE_MAX_SIZE", &cap),
        ("PMCACHE_STORAGE_LOW_WATER_PERCENT", "100"),
    ])?;
    wait_until(EVICTION_TIMEOUT, "the oldest blob to be evicted", || {
        Ok(!blob_path(&data_dir, &old.sha256).exists())
    })?;
    pmcache::ensure_stored(&data_dir, &[&middle.sha256, &recent.sha256])?;
    ensure!(metric(case.pmcache(), "pmcache_store_evicted_blobs_total")? == 1.0);

    let fetches = case.upstream.artifact_requests(LIB_1_0);
    case.fetch(&paths[0], old)?;
    ensure!(case.upstream.artifact_requests(LIB_1_0) == fetches + 1);
    wait_until(
        EVICTION_TIMEOUT,
        "the next least recently used blob to go",
        || Ok(!blob_path(&data_dir, &middle.sha256).exists()),
    )?;
    pmcache::ensure_stored(&data_dir, &[&old.sha256, &recent.sha256])?;
    let now = metric(case.pmcache(), "pmcache_store_size_bytes")? as u64;
    ensure!(now < size, "store holds {now} bytes, cap {cap}");
    case.fetch(&paths[1], middle)?;
    let verified = pmcache::verify(case.dir.path(), &data_dir)?;
    ensure!(verified.status.success(), "{}", verified.output());
    Ok(())
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` at `path`. Where mounting is not permitted (not root), an error,
    /// unless `PMCACHE_TEST_SKIP_ROOT=1` asks to skip: then None, and a printed `SKIPPED` line.
    /// A test that cannot run must not pass silently.
    fn tmpfs(path: &Path, size: &str) -> Result<Option<Mount>> {
        std::fs::create_dir_all(path)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        let reason = match mounted {
            Ok(output) if output.status.success() => {
                return Ok(Some(Mount {
                    path: path.to_owned(),
                }));
            }
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(error) => format!("cannot run mount: {error}"),
        };
        if std::env::var("PMCACHE_TEST_SKIP_ROOT").as_deref() == Ok("1") {
            println!("SKIPPED (PMCACHE_TEST_SKIP_ROOT=1): cannot mount a tmpfs: {reason}");
            return Ok(None);
        }
        anyhow::bail!(
            "this test mounts a tmpfs, which needs root: {reason}; run it as root (CI does), or \
             set PMCACHE_TEST_SKIP_ROOT=1 to skip it"
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a process still holding a file must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem of `dir` until it is full. Space pmcache (process `pid`) frees later,
/// when it closes its last handle on an unlinked temp file of a failed fill, must not make the
/// disk look free again: once it holds no deleted file open, the disk is topped up again.
fn fill_disk(dir: &Path, pid: u32) -> Result<PathBuf> {
    let path = top_up(dir)?;
    wait_until(
        Duration::from_secs(15),
        "pmcache to close its unlinked temp files",
        || Ok(deleted_files_open(pid, dir)?.is_empty()),
    )
    .with_context(|| format!("still open: {:?}", deleted_files_open(pid, dir)))?;
    top_up(dir)?;
    Ok(path)
}

/// The unlinked files below `dir` that process `pid` holds open (`/proc/PID/fd` links ending in
/// ` (deleted)`).
fn deleted_files_open(pid: u32, dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = dir.to_string_lossy();
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed between listing and reading is not open any more.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target_text = target.to_string_lossy();
        if target_text.starts_with(dir.as_ref()) && target_text.ends_with(" (deleted)") {
            deleted.push(target);
        }
    }
    Ok(deleted)
}

/// Appends to `dir/filler` until the filesystem is full.
fn top_up(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = File::options().create(true).append(true).open(&path)?;
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => return Err(error.into()),
        }
    }
    // Any last partial page too.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
    Ok(path)
}

/// On a full disk (a 6 MiB tmpfs), cached files are still served and misses stream through
/// whole: a 20 MiB wheel whose temp write fails mid-body, and small wheels that cannot be
/// written at all. One log line reports it; the metrics show it; once space is freed the next
/// fill is stored again.
#[test]
fn a_full_disk_serves_misses_without_storing_them() -> Result<()> {
    let case = Case::new(PypiUpstream::start(PageFormat::Html)?)?;
    let data_dir = case.data_dir();
    let Some(mount) = Mount::tmpfs(&data_dir, "6m")? else {
        return Ok(());
    };
    // Declared after the mount, so dropped (pmcache stopped) before it is unmounted.
    let case = case.serve_pypi(&[])?;
    let pmcache = case.pmcache();
    let (cached, small, big) = (
        dists()?.get(UTIL)?,
        dists()?.get(LIB_1_0)?,
        dists()?.get(BIG)?,
    );
    let [cached_path, small_path, big_path] =
        [cached, small, big].map(|dist| file_path(pmcache, dist));
    let (cached_path, small_path, big_path) = (cached_path?, small_path?, big_path?);
    fetch(pmcache, &cached_path, cached)?;

    // 20 MiB into 6 MiB: the temp write fails part-way; the client still gets every byte.
    fetch(pmcache, &big_path, big)?;
    pmcache::ensure_not_stored(&data_dir, &[&big.sha256])?;
    pmcache::wait_for_empty_tmp(&data_dir)?;

    let filler = fill_disk(&data_dir, pmcache.pid())?;
    for _ in 0..3 {
        // Whatever pmcache freed since (a temp file it let go of late) is taken again: the
        // disk is full when the miss comes.
        top_up(&data_dir)?;
        fetch(pmcache, &small_path, small)?;
    }
    pmcache::ensure_not_stored(&data_dir, &[&small.sha256])?;
    fetch(pmcache, &cached_path, cached)?;
    ensure!(metric(pmcache, "pmcache_store_full")? == 1.0);
    ensure!(metric(pmcache, "pmcache_store_uncommitted_fills_total")? >= 4.0);
    let full_lines = pmcache.events_starting("the store's disk is full").len();
    ensure!(
        full_lines == 1,
        "{full_lines} full-disk log events, expected 1 (the log is printed below)"
    );

    std::fs::remove_file(&filler)?;
    fetch(pmcache, &small_path, small)?;
    pmcache::ensure_stored(&data_dir, &[&small.sha256])?;
    ensure!(metric(pmcache, "pmcache_store_full")? == 0.0);
    if pmcache
        .events_starting("the store's disk has space again")
        .is_empty()
    {
        bail!("no recovery event in the log (printed below)");
    }
    drop(case);
    drop(mount);
    Ok(())
}

/// The data directory carries a layout version. One written before versions existed (no
/// `LAYOUT` file) serves its cached files as it is, with no migration; one of a newer layout
/// stops `serve` and `verify` at start with one line naming both versions, and is left as it was.
#[test]
fn the_data_directory_layout_version_is_checked_at_start() -> Result<()> {
    let mut case = Case::pypi(PageFormat::Html, &[])?;
    let lib = dists()?.get(LIB_1_0)?;
    let path = case.file_path(lib)?;
    case.fetch(&path, lib)?;
    let data_dir = case.data_dir();
    let layout = data_dir.join("LAYOUT");
    ensure!(
        std::fs::read_to_string(&layout)? == "1\n",
        "a new data directory got no layout version 1"
    );

    case.pmcache_mut().stop()?;
    std::fs::remove_file(&layout)?;
    case.restart()?;
    let fetches = case.upstream.artifact_requests(LIB_1_0);
    case.fetch(&path, lib)?;
    ensure!(
        case.upstream.artifact_requests(LIB_1_0) == fetches,
        "the cached file of an unversioned directory was fetched again"
    );
    ensure!(layout.exists(), "the unversioned directory was not marked");

    case.pmcache_mut().stop()?;
    std::fs::write(&layout, "2\n")?;
    let data = data_dir.to_str().context("data dir is not UTF-8")?;
    let launch = pmcache::Launch::bare(
        &case.path(""),
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data],
    )?;
    let mut command = Command::new(pmcache::binary());
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env)
        .current_dir(&launch.cwd);
    let served = crate::support::run_bounded(
        command,
        &case.path("").join("logs"),
        Duration::from_secs(30),
    )?;
    let verified = pmcache::verify(&case.path(""), &data_dir)?;
    for (what, finished) in [("serve", &served), ("verify", &verified)] {
        let line = finished.stderr.trim();
        ensure!(
            !finished.status.success()
                && line.lines().count() == 1
                && line.contains("data layout version 2")
                && line.contains("reads version 1"),
            "{what} on a layout 2 directory:\n{}",
            finished.output()
        );
    }
    ensure!(
        std::fs::read_to_string(&layout)? == "2\n",
        "the layout file was rewritten"
    );
    pmcache::ensure_stored(&data_dir, &[&lib.sha256])
}
