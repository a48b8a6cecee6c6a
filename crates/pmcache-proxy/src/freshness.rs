//! Whether a cached metadata document may be served without asking the upstream: a pure function
//! of the record's fetch time, the configured TTL and the clock, so it is tested without sleeping.

use std::time::Duration;

/// The verdict on a cached document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than the TTL: serve it, no upstream contact.
    Fresh,
    /// At or past the TTL: revalidate (conditional request), serve it if the upstream fails.
    Stale,
}

/// Judges a document fetched at `fetched_at` (unix seconds) at time `now`. A TTL of zero makes
/// every document stale, i.e. revalidated on every request. A clock that went backwards counts
/// the document as stale rather than fresh for ever.
pub fn assess(fetched_at: u64, ttl: Duration, now: u64) -> Freshness {
    match now.checked_sub(fetched_at) {
        Some(age) if u128::from(age) < ttl.as_millis().div_ceil(1000) => Freshness::Fresh,
        _ => Freshness::Stale,
    }
}

/// Seconds since the unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn younger_than_ttl_is_fresh() {
        assert_eq!(
            assess(1000, Duration::from_secs(600), 1599),
            Freshness::Fresh
        );
        assert_eq!(
            assess(1000, Duration::from_secs(600), 1600),
            Freshness::Stale
        );
    }

    #[test]
    fn zero_ttl_always_revalidates() {
        assert_eq!(assess(1000, Duration::ZERO, 1000), Freshness::Stale);
    }

    #[test]
    fn clock_going_backwards_is_stale() {
        assert_eq!(
            assess(2000, Duration::from_secs(600), 1000),
            Freshness::Stale
        );
    }
}
