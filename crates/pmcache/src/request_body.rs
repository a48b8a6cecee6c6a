//! Request bodies: read only for the three routes that relay one (npm's audit, Composer's
//! advisories and notify-batch), each within its own limit and `server.body_read_timeout`, and
//! all of them together within a budget of bytes, so that no client can make pmcache hold
//! large bodies it has no use for. Every other request's body is never read: its answer says
//! `Connection: close`, so the rest of the body is not waited for either.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Method, StatusCode};
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::input::Refusal;

/// The most bytes of request bodies held at once, over every connection.
const BUDGET: usize = 64 << 20;
/// The budget is counted in units of this many bytes (a semaphore's permits are `u32`).
const UNIT: usize = 1 << 10;

/// A body read whole, and its share of the budget, held while the request is answered.
pub(crate) struct Received {
    pub(crate) bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

/// The bytes of request bodies pmcache may hold at once.
pub(crate) struct Budget(Arc<Semaphore>);

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget::of(BUDGET)
    }

    fn of(bytes: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(bytes / UNIT)))
    }

    /// The body of a request whose route takes up to `limit` bytes (None: no body at all,
    /// and nothing is read).
    pub(crate) async fn receive<B>(
        &self,
        parts: &Parts,
        body: B,
        limit: Option<usize>,
        timeout: Duration,
    ) -> Result<Received, Refusal>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let Some(limit) = limit else {
            return Ok(Received {
                bytes: Bytes::new(),
                _share: None,
            });
        };
        // A body announced over the limit gets its 413 before a byte of it is read.
        let announced = announced_length(parts);
        if announced.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let limit = announced.unwrap_or(limit);
        tokio::time::timeout(timeout, self.collect(body, limit))
            .await
            .map_err(|_| Refusal {
                status: StatusCode::REQUEST_TIMEOUT,
                reason: format!(
                    "the request body did not arrive within {timeout:?} (server.body_read_timeout)"
                ),
            })?
    }

    /// Reads a body of at most `limit` bytes, taking its share of the budget as its bytes
    /// arrive: a client that announces a large body and trickles it holds only what it sent.
    async fn collect<B>(&self, mut body: B, limit: usize) -> Result<Received, Refusal>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut bytes = BytesMut::new();
        let mut share: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: format!("could not read the request body: {error}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let size = bytes.len() + data.len();
            if size > limit {
                return Err(too_large(limit));
            }
            self.hold(&mut share, size)?;
            bytes.extend_from_slice(&data);
        }
        Ok(Received {
            bytes: bytes.freeze(),
            _share: share,
        })
    }

    /// Grows `share` to cover `size` bytes.
    fn hold(&self, share: &mut Option<OwnedSemaphorePermit>, size: usize) -> Result<(), Refusal> {
        let needed = size.div_ceil(UNIT);
        let held = share.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if needed <= held {
            return Ok(());
        }
        let more = u32::try_from(needed - held).unwrap_or(u32::MAX);
        let more = Arc::clone(&self.0)
            .try_acquire_many_owned(more)
            .map_err(|_| Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "pmcache is receiving as many request bodies as it holds at once; try again shortly".to_owned(),
            })?;
        match share {
            Some(share) => share.merge(more),
            None => *share = Some(more),
        }
        Ok(())
    }
}

/// Whether a request may carry a body pmcache will not read (anything but GET and HEAD): its
/// answer then closes the connection.
pub(crate) fn unread(parts: &Parts, limit: Option<usize>) -> bool {
    limit.is_none() && parts.method != Method::GET && parts.method != Method::HEAD
}

/// The `Content-Length` a request announced, if it is one number.
fn announced_length(parts: &Parts) -> Option<usize> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large(limit: usize) -> Refusal {
    Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: format!("the request body is over this route's {limit}-byte limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A request's head, announcing `length` when given.
    fn parts(length: Option<usize>) -> Parts {
        let mut request = http::Request::post("/npm/-/npm/v1/security/advisories/bulk");
        if let Some(length) = length {
            request = request.header(http::header::CONTENT_LENGTH, length);
        }
        request.body(()).expect("request").into_parts().0
    }

    fn full(bytes: usize) -> Full<Bytes> {
        Full::new(Bytes::from(vec![b'x'; bytes]))
    }

    #[tokio::test]
    async fn bodies_hold_their_share_until_answered_and_the_budget_refuses_past_it() {
        let budget = Budget::of(4 * UNIT);
        let first = budget
            .receive(&parts(None), full(3 * UNIT), Some(8 * UNIT), TIMEOUT)
            .await
            .expect("within the budget");
        assert_eq!(first.bytes.len(), 3 * UNIT);
        let refused = budget
            .receive(&parts(None), full(2 * UNIT), Some(8 * UNIT), TIMEOUT)
            .await
            .err()
            .expect("past the budget");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        let second = budget
            .receive(&parts(None), full(2 * UNIT), Some(8 * UNIT), TIMEOUT)
            .await
            .expect("room again once the first was answered");
        assert_eq!(second.bytes.len(), 2 * UNIT);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_413_announced_or_not() {
        let budget = Budget::of(64 * UNIT);
        let unannounced = budget
            .receive(&parts(None), full(2 * UNIT), Some(UNIT), TIMEOUT)
            .await
            .err()
            .expect("over the limit");
        assert_eq!(unannounced.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Announced over the limit: refused before reading (this body would never end).
        let never = StreamBody::new(futures_util::stream::pending::<
            Result<http_body::Frame<Bytes>, std::io::Error>,
        >());
        let announced = budget
            .receive(&parts(Some(2 * UNIT)), never, Some(UNIT), TIMEOUT)
            .await
            .err()
            .expect("announced over the limit");
        assert_eq!(announced.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.0.available_permits(), 64);
    }

    /// A client announcing a large body and trickling it holds only what it sent, and gets a
    /// 408 at the read timeout.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_holds_only_what_arrived() {
        let budget = Arc::new(Budget::of(16 * UNIT));
        use futures_util::StreamExt as _;
        let chunk: Result<_, std::io::Error> =
            Ok(http_body::Frame::data(Bytes::from(vec![b'x'; UNIT])));
        let trickle = StreamBody::new(
            futures_util::stream::iter([chunk]).chain(futures_util::stream::pending()),
        );
        let waiting = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                budget
                    .receive(&parts(Some(8 * UNIT)), trickle, Some(8 * UNIT), TIMEOUT)
                    .await
                    .err()
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(budget.0.available_permits(), 15);
        let refused = waiting.await.expect("task").expect("timed out");
        assert_eq!(refused.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.0.available_permits(), 16);
    }
}
