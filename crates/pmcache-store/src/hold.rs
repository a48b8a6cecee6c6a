//! Holds: keeps a blob that is being committed and recorded apart from one being deleted.
//!
//! Content addressing means a fill may commit a digest at the very moment eviction or garbage
//! collection deletes it. A commit takes a hold on its digest before it looks for the blob file
//! and keeps it until the caller has written the index record naming the blob; a deletion claims
//! the digests it will delete, skipping held ones, and a commit of a claimed digest waits until
//! the deletion is over (it then finds no file and renames its own copy into place). Together
//! with the deletion re-reading the index inside its write transaction, no index entry can end
//! up naming a deleted blob.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::digest::Digest;

#[derive(Default)]
pub(crate) struct Holds {
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Default)]
struct State {
    held: HashMap<Digest, usize>,
    deleting: HashSet<Digest>,
}

/// Keeps a committed blob safe from eviction and garbage collection until dropped: hold it
/// until the index record naming the blob is written.
#[must_use = "the blob is protected only while the hold lives"]
pub struct Hold {
    holds: Arc<Holds>,
    digest: Digest,
}

/// Digests a deletion claimed; released when dropped.
pub(crate) struct Claim {
    holds: Arc<Holds>,
    pub(crate) digests: Vec<Digest>,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `digest`, first waiting for a deletion of it to finish.
    pub(crate) fn hold(self: &Arc<Self>, digest: Digest) -> Hold {
        let mut state = self.lock();
        while state.deleting.contains(&digest) {
            state = self.released.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        *state.held.entry(digest).or_default() += 1;
        Hold {
            holds: Arc::clone(self),
            digest,
        }
    }

    /// Claims the digests of `wanted` that nobody holds (or is deleting already).
    pub(crate) fn claim(self: &Arc<Self>, wanted: impl IntoIterator<Item = Digest>) -> Claim {
        let mut state = self.lock();
        let mut digests = Vec::new();
        for digest in wanted {
            if !state.held.contains_key(&digest) && state.deleting.insert(digest) {
                digests.push(digest);
            }
        }
        Claim {
            holds: Arc::clone(self),
            digests,
        }
    }

    pub(crate) fn is_held(&self, digest: &Digest) -> bool {
        self.lock().held.contains_key(digest)
    }
}

impl Hold {
    /// The digest held.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.holds.lock();
        if let Some(count) = state.held.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                state.held.remove(&self.digest);
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.holds.lock();
        for digest in &self.digests {
            state.deleting.remove(digest);
        }
        drop(state);
        self.holds.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_digests_are_not_claimed() {
        let holds = Arc::new(Holds::default());
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let hold = holds.hold(a);
        let claim = holds.claim([a, b]);
        assert_eq!(claim.digests, vec![b]);
        drop(hold);
        assert!(!holds.is_held(&a));
        assert!(holds.claim([a]).digests == vec![a]);
    }

    #[test]
    fn a_hold_waits_for_the_deletion() {
        let holds = Arc::new(Holds::default());
        let digest = Digest::of(b"x");
        let claim = holds.claim([digest]);
        let waiting = {
            let holds = Arc::clone(&holds);
            std::thread::spawn(move || holds.hold(digest).digest())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished());
        drop(claim);
        assert_eq!(waiting.join().unwrap(), digest);
    }
}
