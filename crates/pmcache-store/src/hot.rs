//! The hot-blob cache: the bytes of small, recently served blobs kept in memory, bounded by
//! bytes, so that a warm small answer (a wheel of a few KiB, a project page) costs no `openat`,
//! read or `close` (only a `stat` that the file is still there). Blobs are immutable, so a
//! cached copy is never stale; deleting or quarantining a blob drops it here too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Digest;

/// Blobs up to this size are kept; larger ones stream from disk. A wheel or tarball of a few
/// KiB and most project pages fit; measured answers above this size are bound by copying bytes,
/// not by opening the file.
pub(crate) const HOT_BLOB_MAX: u64 = 64 * 1024;

/// The bytes all cached blobs may take together.
const HOT_BYTES: usize = 16 << 20;

/// Least recently used small blobs, bounded by their total size.
pub(crate) struct HotBlobs {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    /// Use order: the smallest tick is the least recently used.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: usize,
}

struct Entry {
    bytes: Bytes,
    tick: u64,
}

impl Default for HotBlobs {
    fn default() -> HotBlobs {
        HotBlobs::with_capacity(HOT_BYTES)
    }
}

impl HotBlobs {
    fn with_capacity(capacity: usize) -> HotBlobs {
        HotBlobs {
            state: Mutex::default(),
            capacity,
        }
    }

    /// The cached bytes of `digest`, marking them used.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Bytes> {
        let mut state = self.lock();
        let tick = state.next_tick();
        let entry = state.entries.get_mut(digest)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let bytes = entry.bytes.clone();
        state.order.remove(&old);
        state.order.insert(tick, *digest);
        Some(bytes)
    }

    /// Keeps `bytes` as the content of `digest`, evicting the least recently used blobs over
    /// the capacity.
    pub(crate) fn insert(&self, digest: Digest, bytes: Bytes) {
        if bytes.len() as u64 > HOT_BLOB_MAX {
            return;
        }
        let mut state = self.lock();
        state.remove(&digest);
        let tick = state.next_tick();
        state.bytes += bytes.len();
        state.order.insert(tick, digest);
        state.entries.insert(digest, Entry { bytes, tick });
        while state.bytes > self.capacity {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            if let Some(entry) = state.entries.remove(&oldest) {
                state.bytes -= entry.bytes.len();
            }
        }
    }

    /// Forgets `digest` (its blob is being deleted or quarantined).
    pub(crate) fn remove(&self, digest: &Digest) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some(entry) = self.entries.remove(digest) {
            self.order.remove(&entry.tick);
            self.bytes -= entry.bytes.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn keeps_the_most_recently_used_within_its_capacity() {
        let hot = HotBlobs::with_capacity(3000);
        hot.insert(digest(1), Bytes::from(vec![1u8; 1000]));
        hot.insert(digest(2), Bytes::from(vec![2u8; 1000]));
        hot.insert(digest(3), Bytes::from(vec![3u8; 1000]));
        // Using 1 makes 2 the least recently used.
        assert!(hot.get(&digest(1)).is_some());
        hot.insert(digest(4), Bytes::from(vec![4u8; 1000]));
        assert!(hot.get(&digest(2)).is_none());
        for kept in [1, 3, 4] {
            assert_eq!(hot.get(&digest(kept)).map(|b| b[0]), Some(kept));
        }
        assert_eq!(hot.lock().bytes, 3000);
    }

    #[test]
    fn refuses_large_blobs_and_forgets_removed_ones() {
        let hot = HotBlobs::with_capacity(1 << 20);
        let large = usize::try_from(HOT_BLOB_MAX).expect("fits") + 1;
        hot.insert(digest(1), Bytes::from(vec![0u8; large]));
        assert!(hot.get(&digest(1)).is_none());
        hot.insert(digest(2), Bytes::from_static(b"small"));
        hot.insert(digest(2), Bytes::from_static(b"small"));
        assert_eq!(hot.lock().bytes, 5, "a second insert replaces the first");
        hot.remove(&digest(2));
        assert!(hot.get(&digest(2)).is_none());
        let state = hot.lock();
        assert_eq!((state.bytes, state.order.len()), (0, 0));
    }
}
