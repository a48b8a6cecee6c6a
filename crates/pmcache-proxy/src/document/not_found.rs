//! The upstream's recent "no such document" answers, remembered in memory only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;

use crate::error::Error;

/// How long an upstream "no such document" (404/410) is believed without asking again, at most
/// (never longer than the request's TTL): long enough that a resolver asking for the same
/// missing name many times in one run costs one upstream request, short enough that a name
/// published meanwhile appears within the minute.
pub(super) const NOT_FOUND_TTL: Duration = Duration::from_secs(60);

/// The documents the upstream said it does not have. Kept in memory, bounded: any client can
/// name made-up packages, and none of them may cost an index write.
#[derive(Default)]
pub(crate) struct RecentNotFound {
    missing: Mutex<HashMap<String, Missing>>,
}

/// An upstream 404/410 for a document pmcache has no copy of.
struct Missing {
    at: Instant,
    url: String,
}

/// How many upstream 404s are remembered at most.
const MISSING_CAPACITY: usize = 10_000;

impl RecentNotFound {
    /// The 404 for `key` if the upstream gave one within `max_age` (any age for `None`).
    pub(super) fn missing(&self, key: &str, max_age: Option<Duration>) -> Option<Error> {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        let entry = missing.get(key)?;
        let recent = max_age.is_none_or(|max_age| entry.at.elapsed() < max_age);
        recent.then(|| Error::NotFound {
            url: entry.url.clone(),
        })
    }

    pub(super) fn record_missing(&self, key: &str, url: &Url) {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if missing.len() >= MISSING_CAPACITY {
            missing.retain(|_, entry| entry.at.elapsed() < NOT_FOUND_TTL);
        }
        if missing.len() >= MISSING_CAPACITY
            && let Some(any) = missing.keys().next().cloned()
        {
            missing.remove(&any);
        }
        let entry = Missing {
            at: Instant::now(),
            url: url.to_string(),
        };
        missing.insert(key.to_owned(), entry);
    }

    pub(crate) fn found(&self, key: &str) {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.remove(key);
    }
}
