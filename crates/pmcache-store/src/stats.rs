//! What the store counts for metrics, and whether its disk is full.
//!
//! A full disk (ENOSPC, or EDQUOT for a quota) is not an outage for a cache: what is stored is
//! still served, and misses stream through to clients without being kept. The condition is
//! logged once when it starts (then at most once a minute while it lasts) rather than once per
//! request, and clears by itself at the next write that succeeds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How often a persisting full disk is logged again.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// ENOSPC and EDQUOT on Linux.
const STORAGE_FULL_ERRNOS: [i32; 2] = [28, 122];

/// A snapshot of the store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of blobs the index knows (as of the last commit, eviction or maintenance pass).
    pub size_bytes: u64,
    /// The configured cap; 0 when unbounded.
    pub max_size_bytes: u64,
    /// Whether the last write failed for lack of space.
    pub full: bool,
    /// Blobs evicted to stay under the cap.
    pub evicted_blobs: u64,
    /// Bytes of the evicted blobs.
    pub evicted_bytes: u64,
    /// Maintenance (eviction and garbage collection) passes run.
    pub gc_runs: u64,
    /// Unreferenced blobs and stale temp files removed.
    pub collected_files: u64,
    /// Bytes of the removed unreferenced blobs and temp files.
    pub collected_bytes: u64,
    /// Blobs moved to quarantine because their content did not match their name.
    pub quarantined_blobs: u64,
    /// Fills served to clients but not stored because a store write failed.
    pub uncommitted_fills: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) size: AtomicU64,
    pub(crate) max_size: AtomicU64,
    full: AtomicBool,
    last_full_log: Mutex<Option<Instant>>,
    pub(crate) evicted_blobs: AtomicU64,
    pub(crate) evicted_bytes: AtomicU64,
    pub(crate) gc_runs: AtomicU64,
    pub(crate) collected_files: AtomicU64,
    pub(crate) collected_bytes: AtomicU64,
    pub(crate) quarantined_blobs: AtomicU64,
    uncommitted_fills: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            size_bytes: get(&self.size),
            max_size_bytes: get(&self.max_size),
            full: self.full.load(Ordering::Relaxed),
            evicted_blobs: get(&self.evicted_blobs),
            evicted_bytes: get(&self.evicted_bytes),
            gc_runs: get(&self.gc_runs),
            collected_files: get(&self.collected_files),
            collected_bytes: get(&self.collected_bytes),
            quarantined_blobs: get(&self.quarantined_blobs),
            uncommitted_fills: get(&self.uncommitted_fills),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn subtract(counter: &AtomicU64, amount: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
            Some(value.saturating_sub(amount))
        });
    }

    /// Counts a fill that reached its clients but not the store.
    pub(crate) fn uncommitted(&self) {
        Counters::add(&self.uncommitted_fills, 1);
    }

    /// Records a failed write; only a full disk changes the state.
    pub(crate) fn failed(&self, error: &Error) {
        if error.is_storage_full() {
            self.full_now(error);
        }
    }

    fn full_now(&self, error: &Error) {
        let was_full = self.full.swap(true, Ordering::Relaxed);
        let mut last = self.last_full_log.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= FULL_LOG_EVERY);
        if !was_full || due {
            *last = Some(Instant::now());
            tracing::error!(
                error = %chain(error),
                "the store's disk is full: serving what is cached; misses stream through without \
                 being stored until space is freed (raise the disk or lower storage.max_size)"
            );
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// A store write succeeded: space is back if it was gone.
    pub(crate) fn writable(&self) {
        if self.full.swap(false, Ordering::Relaxed) {
            tracing::info!("the store's disk has space again: fills are stored again");
        }
    }
}

/// An error and its causes in one line.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

impl Error {
    /// True when the failure is a full disk or an exhausted quota.
    pub fn is_storage_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && io
                    .raw_os_error()
                    .is_some_and(|code| STORAGE_FULL_ERRNOS.contains(&code))
            {
                return true;
            }
            // redb's errors carry the I/O error in their text only, not as a source.
            let text = error.to_string();
            if STORAGE_FULL_ERRNOS
                .iter()
                .any(|code| text.contains(&format!("(os error {code})")))
            {
                return true;
            }
            cause = error.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_full_disk_in_the_chain() {
        let full = Error::Io {
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(full.is_storage_full());
        let denied = Error::Io {
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert!(!denied.is_storage_full());
    }

    #[test]
    fn full_clears_on_the_next_write() {
        let counters = Counters::default();
        counters.failed(&Error::Io {
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(28),
        });
        counters.uncommitted();
        assert!(counters.snapshot().full);
        assert_eq!(counters.snapshot().uncommitted_fills, 1);
        counters.writable();
        assert!(!counters.snapshot().full);
    }
}
