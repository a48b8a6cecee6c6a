//! Last-access times collected in memory and written to the index in batches, so that a cache
//! hit costs no index write.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::Digest;

#[derive(Default)]
pub(crate) struct AccessLog {
    pending: Mutex<HashMap<Digest, u64>>,
}

impl AccessLog {
    pub(crate) fn note(&self, digest: Digest) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(digest, now_unix());
    }

    pub(crate) fn drain(&self) -> Vec<(Digest, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().collect()
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}
