//! The data directory's format version: which layout of blobs, temp files and index it holds.
//!
//! Like a versioned cache bucket, a layout never changes in place: a new layout of `blobs/`,
//! `tmp/` or the index tables is a new version, and a pmcache that does not know a directory's
//! version refuses it rather than reading or rewriting what it does not understand. A directory
//! written before the version file existed holds layout 1, which this pmcache reads as it is.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, Result, io};

/// The layout this build reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// The file naming the layout, at the top of the data directory.
const VERSION_FILE: &str = "LAYOUT";

/// Checks that `root` holds a layout this build knows, recording the version in a directory
/// that has none yet (a new directory, or one written before versions were recorded).
pub(crate) fn check(root: &Path) -> Result<()> {
    let path = root.join(VERSION_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match parse(&text) {
            Some(LAYOUT_VERSION) => Ok(()),
            found => Err(Error::Layout {
                path: root.to_path_buf(),
                found: found.map_or_else(|| format!("{:?}", text.trim()), |v| v.to_string()),
            }),
        },
        Err(error) if error.kind() == ErrorKind::NotFound => record(root),
        Err(error) => Err(io(path)(error)),
    }
}

/// The version a version file names: its one line, a decimal number.
fn parse(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// Writes the version file through a temp file and a rename, so a crash leaves either no file
/// (the next start writes it again) or a whole one.
fn record(root: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(io(root))?;
    let path = root.join(VERSION_FILE);
    let temp = root.join(format!("{VERSION_FILE}.{}.tmp", std::process::id()));
    fs::write(&temp, format!("{LAYOUT_VERSION}\n")).map_err(io(&temp))?;
    fs::rename(&temp, &path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        check(&root).unwrap();
        let text = fs::read_to_string(root.join(VERSION_FILE)).unwrap();
        assert_eq!(parse(&text), Some(LAYOUT_VERSION));
        check(&root).unwrap();
    }

    #[test]
    fn a_directory_from_before_versions_is_layout_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs")).unwrap();
        fs::write(dir.path().join("index.redb"), b"").unwrap();
        check(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(VERSION_FILE)).unwrap();
        assert_eq!(text, "1\n");
    }

    #[test]
    fn a_newer_or_unreadable_version_is_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(VERSION_FILE), "2\n").unwrap();
        let error = check(dir.path()).unwrap_err().to_string();
        assert!(error.contains("layout version 2"), "{error}");
        assert!(error.contains("reads version 1"), "{error}");
        assert!(!error.contains('\n'), "{error}");

        fs::write(dir.path().join(VERSION_FILE), "banana").unwrap();
        let error = check(dir.path()).unwrap_err().to_string();
        assert!(error.contains("\"banana\""), "{error}");
    }
}
