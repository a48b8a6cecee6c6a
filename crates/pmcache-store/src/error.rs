//! Errors of the store: always ours (a disk or index fault), never the client's or an upstream's.

use std::path::PathBuf;

/// A store failure, with the path or table involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store I/O failed at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store index failed while {action}")]
    Index {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store record {key} in {table} is unreadable")]
    Record {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} holds data layout version {found}, and this pmcache reads version {}: run the pmcache that wrote it, or give this one another data directory",
        crate::layout::LAYOUT_VERSION
    )]
    Layout { path: PathBuf, found: String },
    #[error("not a sha256 digest: {0:?}")]
    BadDigest(String),
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
