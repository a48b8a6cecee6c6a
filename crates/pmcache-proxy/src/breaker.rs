//! Circuit breakers, one per upstream origin: after a run of timeouts (connecting or waiting for
//! an answer), requests to that origin fail at once (clients get the stale copy or a 503 with
//! Retry-After) instead of each waiting out the same timeout; after a cooldown one probe request
//! is let through, and its success closes the breaker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long other requests wait, at most, while a probe is out: the probe decides soon.
const PROBE_RETRY: Duration = Duration::from_secs(1);

/// The breakers of every upstream origin.
pub(crate) struct Breakers {
    /// Consecutive failures that open a breaker; 0 disables breakers.
    threshold: u32,
    cooldown: Duration,
    states: Mutex<HashMap<String, State>>,
}

#[derive(Default)]
struct State {
    failures: u32,
    /// Set while open: when the next probe may go.
    open_until: Option<Instant>,
    /// A probe request is out.
    probing: bool,
}

/// Why a request was not sent.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) failures: u32,
    pub(crate) retry_after: Duration,
}

impl Breakers {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breakers {
        Breakers {
            threshold,
            cooldown,
            states: Mutex::default(),
        }
    }

    /// Whether a request to `origin` may be sent now.
    pub(crate) fn admit(&self, origin: &str) -> Result<(), Open> {
        self.admit_at(origin, Instant::now())
    }

    fn admit_at(&self, origin: &str, now: Instant) -> Result<(), Open> {
        if self.threshold == 0 {
            return Ok(());
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = states.get_mut(origin) else {
            return Ok(());
        };
        match state.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(Open {
                failures: state.failures,
                retry_after: until - now,
            }),
            Some(_) if state.probing => Err(Open {
                failures: state.failures,
                retry_after: PROBE_RETRY,
            }),
            Some(_) => {
                state.probing = true;
                tracing::info!(origin, "circuit half-open: sending one probe request");
                Ok(())
            }
        }
    }

    /// `origin` answered: the breaker closes.
    pub(crate) fn succeeded(&self, origin: &str) {
        if self.threshold == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.remove(origin)
            && state.open_until.is_some()
        {
            tracing::info!(origin, "circuit closed: the upstream answers again");
        }
    }

    /// `origin` could not be reached or did not answer in time.
    pub(crate) fn failed(&self, origin: &str) {
        self.failed_at(origin, Instant::now());
    }

    fn failed_at(&self, origin: &str, now: Instant) {
        if self.threshold == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(origin.to_owned()).or_default();
        state.failures = state.failures.saturating_add(1);
        state.probing = false;
        if state.failures >= self.threshold {
            if state.open_until.is_none() {
                tracing::warn!(
                    origin,
                    failures = state.failures,
                    cooldown = ?self.cooldown,
                    "circuit open: requests to this upstream fail at once until a probe succeeds"
                );
            }
            state.open_until = Some(now + self.cooldown);
        }
    }

    /// Origins whose breaker is open now, for metrics.
    pub(crate) fn open_count(&self) -> usize {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.values().filter(|s| s.open_until.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "http://127.0.0.1:9";

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breakers = Breakers::new(2, Duration::from_secs(10));
        let start = Instant::now();
        breakers.failed_at(ORIGIN, start);
        assert!(breakers.admit_at(ORIGIN, start).is_ok());
        breakers.failed_at(ORIGIN, start);
        let open = breakers.admit_at(ORIGIN, start).unwrap_err();
        assert_eq!(open.retry_after, Duration::from_secs(10));
        assert_eq!(breakers.open_count(), 1);

        let later = start + Duration::from_secs(11);
        assert!(breakers.admit_at(ORIGIN, later).is_ok(), "one probe");
        assert!(breakers.admit_at(ORIGIN, later).is_err(), "only one probe");
        breakers.failed_at(ORIGIN, later);
        assert!(breakers.admit_at(ORIGIN, later).is_err(), "reopened");

        let again = later + Duration::from_secs(11);
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        breakers.succeeded(ORIGIN);
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn a_success_resets_the_count_and_zero_disables() {
        let breakers = Breakers::new(2, Duration::from_secs(10));
        let now = Instant::now();
        breakers.failed_at(ORIGIN, now);
        breakers.succeeded(ORIGIN);
        breakers.failed_at(ORIGIN, now);
        assert!(breakers.admit_at(ORIGIN, now).is_ok());

        let off = Breakers::new(0, Duration::from_secs(10));
        for _ in 0..10 {
            off.failed_at(ORIGIN, now);
        }
        assert!(off.admit_at(ORIGIN, now).is_ok());
    }
}
