//! Errors of the store: always ours (a disk or index fault), never the client's or an upstream's.

use std::path::PathBuf;

/// A store failure, with the path or table involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file of the store failed.
    #[error("store I/O failed at {path}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded index database failed (opening, a transaction, a table).
    #[error("store index failed while {action}")]
    Index {
        /// What the store was doing, e.g. "committing a blob".
        action: &'static str,
        /// redb's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record in the index does not decode: written by another version, or corrupted.
    #[error("store record {key} in {table} is unreadable")]
    Record {
        /// The index table holding the record.
        table: &'static str,
        /// The record's key.
        key: String,
        /// Why its JSON does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// The data directory was written in a layout this pmcache does not read.
    #[error(
        "{path} holds data layout version {found}, and this pmcache reads version {}: run the pmcache that wrote it, or give this one another data directory",
        crate::layout::LAYOUT_VERSION
    )]
    Layout {
        /// The data directory holding the unknown layout.
        path: PathBuf,
        /// The version its layout file names (quoted when it is not a number).
        found: String,
    },
    /// A string that should name a blob is not 64 hex digits.
    #[error("not a sha256 digest: {0:?}")]
    BadDigest(String),
    /// A configured size (such as `storage.max_size`) does not parse.
    #[error("not a size: {0:?} (expected a number with an optional unit such as 512MiB or 10GiB)")]
    BadSize(String),
}

/// Result with the store's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

pub(crate) fn index<E>(action: &'static str) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::Index {
        action,
        source: Box::new(source),
    }
}
