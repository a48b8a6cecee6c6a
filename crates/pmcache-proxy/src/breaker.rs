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

/// A request let through; it must report how it went, and a probe dropped without an outcome
/// (a relay whose client went away) frees the half-open breaker for the next request instead
/// of holding it half-open forever.
pub(crate) struct Ticket<'a> {
    breakers: &'a Breakers,
    origin: &'a str,
    probe: bool,
    settled: bool,
}

impl Ticket<'_> {
    /// The upstream answered.
    pub(crate) fn succeeded(mut self) {
        self.settled = true;
        self.breakers.succeeded(self.origin);
    }

    /// The upstream did not answer in time.
    pub(crate) fn failed(mut self) {
        self.settled = true;
        self.breakers
            .failed_at(self.origin, Instant::now(), self.probe);
    }

    /// Neither: the outcome says nothing of the upstream's health.
    pub(crate) fn neutral(mut self) {
        self.settled = true;
        if self.probe {
            self.breakers.abandoned(self.origin);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breakers.abandoned(self.origin);
        }
    }
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

    /// Whether a request to `origin` may be sent now; the ticket reports how it went.
    pub(crate) fn admit<'a>(&'a self, origin: &'a str) -> Result<Ticket<'a>, Open> {
        let probe = self.admit_at(origin, Instant::now())?;
        Ok(Ticket {
            breakers: self,
            origin,
            probe,
            settled: false,
        })
    }

    /// Ok(true) for the probe of a half-open breaker.
    fn admit_at(&self, origin: &str, now: Instant) -> Result<bool, Open> {
        if self.threshold == 0 {
            return Ok(false);
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = states.get_mut(origin) else {
            return Ok(false);
        };
        match state.open_until {
            None => Ok(false),
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
                Ok(true)
            }
        }
    }

    /// A probe ended without an outcome (its request was dropped): the next request probes.
    fn abandoned(&self, origin: &str) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get_mut(origin) {
            state.probing = false;
        }
    }

    /// `origin` answered: the breaker closes.
    fn succeeded(&self, origin: &str) {
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

    /// `origin` did not answer in time, to the probe (`probe`) or to a request sent earlier.
    fn failed_at(&self, origin: &str, now: Instant, probe: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(origin.to_owned()).or_default();
        state.failures = state.failures.saturating_add(1);
        // Only the probe's own outcome ends the probe: an older request timing out now must
        // not let a second probe run beside it.
        if probe {
            state.probing = false;
        }
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
        breakers.failed_at(ORIGIN, start, false);
        assert!(breakers.admit_at(ORIGIN, start).is_ok());
        breakers.failed_at(ORIGIN, start, false);
        let open = breakers.admit_at(ORIGIN, start).unwrap_err();
        assert_eq!(open.retry_after, Duration::from_secs(10));
        assert_eq!(breakers.open_count(), 1);

        let later = start + Duration::from_secs(11);
        assert!(breakers.admit_at(ORIGIN, later).is_ok(), "one probe");
        assert!(breakers.admit_at(ORIGIN, later).is_err(), "only one probe");
        breakers.failed_at(ORIGIN, later, true);
        assert!(breakers.admit_at(ORIGIN, later).is_err(), "reopened");

        let again = later + Duration::from_secs(11);
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        breakers.succeeded(ORIGIN);
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        assert!(breakers.admit_at(ORIGIN, again).is_ok());
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn a_probe_ending_without_a_verdict_lets_the_next_request_probe() {
        let breakers = Breakers::new(1, Duration::ZERO);
        breakers.failed_at(ORIGIN, Instant::now(), false);
        let probe = breakers.admit(ORIGIN).unwrap();
        // A request sent before the breaker opened times out meanwhile: still one probe.
        breakers.failed_at(ORIGIN, Instant::now(), false);
        assert!(breakers.admit(ORIGIN).is_err(), "one probe at a time");
        probe.neutral();
        breakers.admit(ORIGIN).unwrap().succeeded();
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn a_dropped_probe_lets_the_next_request_probe() {
        let breakers = Breakers::new(1, Duration::ZERO);
        breakers.failed_at(ORIGIN, Instant::now(), false);
        let probe = breakers.admit(ORIGIN).unwrap();
        assert!(breakers.admit(ORIGIN).is_err(), "one probe at a time");
        drop(probe);
        let again = breakers.admit(ORIGIN).unwrap();
        again.succeeded();
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn a_success_resets_the_count_and_zero_disables() {
        let breakers = Breakers::new(2, Duration::from_secs(10));
        let now = Instant::now();
        breakers.failed_at(ORIGIN, now, false);
        breakers.succeeded(ORIGIN);
        breakers.failed_at(ORIGIN, now, false);
        assert!(breakers.admit_at(ORIGIN, now).is_ok());

        let off = Breakers::new(0, Duration::from_secs(10));
        for _ in 0..10 {
            off.failed_at(ORIGIN, now, false);
        }
        assert!(off.admit_at(ORIGIN, now).is_ok());
    }
}
