//! Idle connections: a connection with no request in progress (HTTP/2: no open stream) for
//! `server.idle_timeout` is closed, so that a client cannot keep a place under the connection
//! limits by opening connections and then saying nothing.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use pmcache_proxy::Body;
use tokio::time::Instant;

/// How often a connection busy past its idle deadline is looked at again.
const BUSY_POLL: Duration = Duration::from_secs(1);

/// What one connection is doing: its requests in progress (until their response bodies are
/// sent or dropped), and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    busy: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            busy: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// Marks a request begun; it ends when the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// Keeps the request busy until `response`'s body has been sent or dropped.
    pub(crate) fn until_sent(busy: Busy, response: Response<Body>) -> Response<Body> {
        response.map(|inner| UntilSent { inner, _busy: busy }.boxed_unsync())
    }

    /// Whether a request is in progress.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Completes once the connection has been idle for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            // `busy` first: a request ends by setting `last` and then lowering `busy` (on
            // another thread, for HTTP/2), so seeing it idle means seeing when it became so.
            let busy = self.busy.load(Ordering::SeqCst) > 0;
            let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let deadline = last + timeout;
            if !busy && Instant::now() >= deadline {
                return;
            }
            // Busy now, or not idle long enough: look again when it could be.
            tokio::time::sleep_until(deadline.max(Instant::now() + BUSY_POLL)).await;
        }
    }
}

/// A response body holding its request busy; all else is the body's own (its length above
/// all, so that hyper still sends `Content-Length`).
struct UntilSent {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for UntilSent {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request in progress.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let busy = activity.begin();
        let idle = activity.idle_for(Duration::from_secs(60));
        tokio::pin!(idle);
        // Busy for two minutes: never idle meanwhile.
        tokio::select! {
            () = &mut idle => panic!("idle while a request runs"),
            () = tokio::time::sleep(Duration::from_secs(120)) => {}
        }
        drop(busy);
        let ended = Instant::now();
        idle.await;
        assert!(ended.elapsed() >= Duration::from_secs(60));
        assert!(ended.elapsed() < Duration::from_secs(61));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_keeps_the_connection_busy_until_dropped() {
        let activity = Activity::new();
        let response =
            Activity::until_sent(activity.begin(), Response::new(pmcache_proxy::full("body")));
        assert_eq!(activity.busy.load(Ordering::SeqCst), 1);
        // Its length still shows, for Content-Length.
        assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(4));
        drop(response);
        assert_eq!(activity.busy.load(Ordering::SeqCst), 0);
    }
}
