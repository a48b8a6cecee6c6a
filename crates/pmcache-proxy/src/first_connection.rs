//! One connection attempt at a time to an upstream origin pmcache has no connection to.
//!
//! The client learns that a connection speaks HTTP/2 only once TLS has negotiated it (ALPN), so
//! a burst of requests to a cold origin would each open a connection of their own (a cold uv
//! install: fifty TLS handshakes, of which one connection is kept). Instead the first request
//! to a cold origin goes alone; the others wait until it has its answer (or fails), then share
//! the pooled connection, or open their own over HTTP/1.1. An origin counts as cold again once
//! nothing has been heard from it for as long as the pool keeps idle connections. Plain `http://`
//! origins are not held (no ALPN: they speak HTTP/1.1, one connection per request anyway), and
//! nobody waits longer than the connect timeout for someone else's connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Origins bounded in number: metadata names few hosts, and a stale entry costs one gated
/// request.
const CAPACITY: usize = 1024;

#[derive(Default)]
pub(crate) struct FirstConnections {
    origins: Mutex<HashMap<String, State>>,
}

enum State {
    /// A first request is under way; the receiver sees `true` once it has an outcome.
    Connecting(watch::Receiver<bool>),
    /// The last outcome from this origin (an answer or a failure), and when.
    Settled(Instant),
}

/// Held by the first request to a cold origin; dropping it lets the others go. Dropped before
/// [`Opening::settled`] (the request was cancelled), the origin stays cold: the next request
/// opens the connection instead.
pub(crate) struct Opening<'a> {
    gate: &'a FirstConnections,
    origin: String,
    done: watch::Sender<bool>,
    settled: bool,
}

impl FirstConnections {
    /// Waits while another request opens the first connection to `origin`; `Some` when this
    /// request is to open it. `warm_for` is how long the pool keeps an idle connection.
    pub(crate) async fn enter(
        &self,
        origin: &str,
        warm_for: Duration,
        wait_at_most: Duration,
    ) -> Option<Opening<'_>> {
        if origin.starts_with("http:") {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait_at_most;
        loop {
            let mut waiting = {
                let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
                match origins.get(origin) {
                    Some(State::Settled(at)) if at.elapsed() < warm_for => return None,
                    Some(State::Connecting(receiver)) => receiver.clone(),
                    _ => {
                        if origins.len() >= CAPACITY {
                            origins.retain(|_, state| matches!(state, State::Connecting(_)));
                        }
                        let (done, receiver) = watch::channel(false);
                        origins.insert(origin.to_owned(), State::Connecting(receiver));
                        return Some(Opening {
                            gate: self,
                            origin: origin.to_owned(),
                            done,
                            settled: false,
                        });
                    }
                }
            };
            // Ends when the first request has an outcome, or its sender is dropped with it; past
            // the deadline this request goes ahead on a connection of its own.
            let outcome = tokio::time::timeout_at(deadline, waiting.wait_for(|done| *done)).await;
            if outcome.is_err() {
                return None;
            }
        }
    }

    /// Notes that `origin` answered or failed just now: it stays warm for a while.
    pub(crate) fn heard_from(&self, origin: &str) {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = origins.get_mut(origin)
            && matches!(state, State::Settled(_))
        {
            *state = State::Settled(Instant::now());
        }
    }
}

impl Opening<'_> {
    /// The first request has its outcome (an answer or a failure): the origin is warm.
    pub(crate) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut origins = self.gate.origins.lock().unwrap_or_else(|p| p.into_inner());
        let origin = std::mem::take(&mut self.origin);
        if self.settled {
            origins.insert(origin, State::Settled(Instant::now()));
        } else {
            origins.remove(&origin);
        }
        drop(origins);
        self.done.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    const WARM: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_first_request_goes_alone_and_the_rest_follow_its_outcome() {
        let gate = FirstConnections::default();
        let wait = Duration::from_secs(60);
        let first = gate
            .enter("https://a", WARM, wait)
            .await
            .expect("cold: this one opens");
        let second = gate.enter("https://a", WARM, wait);
        tokio::pin!(second);
        // Still connecting: the second waits.
        assert!(second.as_mut().now_or_never().is_none());
        // Another origin is not held up, and plain HTTP never is.
        assert!(gate.enter("https://b", WARM, wait).await.is_some());
        assert!(gate.enter("http://c", WARM, wait).await.is_none());
        first.settled();
        assert!(second.await.is_none(), "warm now: no gate");
        gate.heard_from("https://a");
        let cold_again = gate.enter("https://a", Duration::ZERO, wait).await;
        assert!(
            cold_again.is_some(),
            "cold again once the pool's idle time passed"
        );
    }

    #[tokio::test]
    async fn a_cancelled_opener_leaves_the_origin_cold_and_waits_are_bounded() {
        let gate = FirstConnections::default();
        let wait = Duration::from_secs(60);
        let cancelled = gate.enter("https://a", WARM, wait).await.expect("opens");
        drop(cancelled);
        let next = gate.enter("https://a", WARM, wait).await;
        assert!(
            next.is_some(),
            "the next request opens the connection instead"
        );
        // A waiter goes ahead on its own once its bound passes.
        let waiter = gate
            .enter("https://a", WARM, Duration::from_millis(10))
            .await;
        assert!(waiter.is_none());
    }
}
