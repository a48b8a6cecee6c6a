//! One connection attempt at a time to an upstream origin pmcache has no connection to.
//!
//! The client learns that a connection speaks HTTP/2 only once TLS has negotiated it (ALPN), so
//! a burst of requests to a cold origin would each open a connection of their own (a cold uv
//! install: fifty TLS handshakes, of which one connection is kept). Instead the first request
//! to a cold origin goes alone; the others wait until it has its answer (or fails), then share
//! the pooled connection, or open their own over HTTP/1.1. An origin counts as cold again once
//! nothing has been heard from it for as long as the pool keeps idle connections.

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

/// Held by the first request to a cold origin; dropping it lets the others go.
pub(crate) struct Opening<'a> {
    gate: &'a FirstConnections,
    origin: String,
    done: watch::Sender<bool>,
}

impl FirstConnections {
    /// Waits while another request opens the first connection to `origin`; `Some` when this
    /// request is to open it. `warm_for` is how long the pool keeps an idle connection.
    pub(crate) async fn enter(&self, origin: &str, warm_for: Duration) -> Option<Opening<'_>> {
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
                        });
                    }
                }
            };
            // Ends when the first request has an outcome, or its sender is dropped with it.
            let _ = waiting.wait_for(|done| *done).await;
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

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut origins = self.gate.origins.lock().unwrap_or_else(|p| p.into_inner());
        origins.insert(
            std::mem::take(&mut self.origin),
            State::Settled(Instant::now()),
        );
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
        let first = gate
            .enter("https://a", WARM)
            .await
            .expect("cold: this one opens");
        let second = gate.enter("https://a", WARM);
        tokio::pin!(second);
        // Still connecting: the second waits.
        assert!(second.as_mut().now_or_never().is_none());
        // Another origin is not held up.
        assert!(gate.enter("https://b", WARM).await.is_some());
        drop(first);
        assert!(second.await.is_none(), "warm now: no gate");
        gate.heard_from("https://a");
        assert!(
            gate.enter("https://a", Duration::ZERO).await.is_some(),
            "cold again"
        );
    }
}
