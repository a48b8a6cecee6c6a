//! Last-access times collected in memory and written to the index in batches, so that a cache
//! hit costs no index write. Times are milliseconds since the Unix epoch: eviction orders blobs
//! read within the same second too.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::Digest;

/// Whether opening a blob counts as a use of it for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The read keeps the blob from eviction longer (a client was served it).
    Note,
    /// Leaves eviction order as it was: a read by a caller that may not change the cache.
    Quiet,
}

#[derive(Default)]
pub(crate) struct AccessLog {
    pending: Mutex<HashMap<Digest, u64>>,
}

impl AccessLog {
    pub(crate) fn note(&self, digest: Digest) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(digest, now_millis());
    }

    pub(crate) fn drain(&self) -> Vec<(Digest, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().collect()
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
