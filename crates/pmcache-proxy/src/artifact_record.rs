//! What the store keeps for an artifact: its record, and whether a stored copy still stands for
//! what the upstream publishes. A leaf: serving (`artifact`) and filling (`inflight`) both read
//! it, neither is read by it.

use pmcache_store::{Digest, Store, Table};

use crate::checksum::{Algorithm, Checksum};
use crate::error::Result;
use crate::role::{Caller, Role};

/// What the store holds for an artifact (table `artifacts`, key `<ecosystem>/<upstream url>`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ArtifactRecord {
    /// The upstream URL the bytes were fetched from.
    pub url: String,
    /// The sha256 of the stored bytes: the blob's name.
    pub digest: Digest,
    /// The artifact's length in bytes.
    pub size: u64,
    /// The published checksum the bytes were verified against; None when none was published.
    pub verified: Option<Checksum>,
    /// The blob was evicted: the record only keeps `digest` as the sha256 the artifact is
    /// pinned to, so that a refetch bringing other bytes is still refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pin_only: bool,
    /// Who caused the bytes to be stored: the role and token name of the request that started
    /// the fill (None in records written before roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<StoredBy>,
}

/// The request that filled an artifact (never a read-role one: those are not stored).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredBy {
    /// Its role.
    pub role: Role,
    /// The name of its token; None for a request without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl StoredBy {
    /// What a record says of `caller`.
    pub(crate) fn of(caller: &Caller) -> StoredBy {
        StoredBy {
            role: caller.role,
            token: caller.token.clone(),
        }
    }
}

impl ArtifactRecord {
    /// What is kept of a record whose blob goes: a pin when the bytes were stored with no
    /// published checksum, or verified against their own sha256 (a refetch checked against a
    /// pin, or a published sha256), else nothing.
    pub(crate) fn detached(self) -> Option<ArtifactRecord> {
        let pin = match &self.verified {
            None => true,
            Some(checksum) => {
                checksum.algorithm == Algorithm::Sha256 && checksum.hex == self.digest.to_hex()
            }
        };
        pin.then_some(ArtifactRecord {
            pin_only: true,
            ..self
        })
    }
}

/// The stored copy of an artifact, if there is one verified against `checksum` (the one now
/// published) and its blob is still there, as `open` opens it (which counts for eviction as the
/// caller's access says).
pub(crate) fn stored<T>(
    store: &Store,
    key: &str,
    checksum: Option<&Checksum>,
    open: impl FnOnce(&Digest) -> pmcache_store::Result<Option<T>>,
) -> Result<Option<(ArtifactRecord, T)>> {
    let Some(record) = store.get::<ArtifactRecord>(Table::Artifacts, key)? else {
        return Ok(None);
    };
    if record.pin_only {
        return Ok(None);
    }
    if !vouches_for(checksum, &record) {
        // The upstream now publishes another checksum for this URL: the stored bytes are not
        // what it vouches for any more, so fetch and verify again.
        tracing::warn!(url = %record.url, "published checksum changed; fetching again");
        return Ok(None);
    }
    let Some(file) = open(&record.digest)? else {
        tracing::warn!(url = %record.url, digest = %record.digest, "blob missing; fetching again");
        return Ok(None);
    };
    Ok(Some((record, file)))
}

/// Whether `record`'s bytes are what `checksum` (if any) stands for: the checksum they were
/// verified against, or a sha256 equal to their own (a pin).
fn vouches_for(checksum: Option<&Checksum>, record: &ArtifactRecord) -> bool {
    match checksum {
        None => true,
        Some(checksum) => {
            record.verified.as_ref() == Some(checksum)
                || (checksum.algorithm == Algorithm::Sha256
                    && checksum.hex == record.digest.to_hex())
        }
    }
}

/// The sha256 of the bytes first stored under `key`, as a checksum every later copy must match.
pub(crate) fn pinned(store: &Store, key: &str) -> Result<Option<Checksum>> {
    Ok(store
        .get::<ArtifactRecord>(Table::Artifacts, key)?
        .map(|record| Checksum {
            algorithm: Algorithm::Sha256,
            hex: record.digest.to_hex(),
        }))
}
