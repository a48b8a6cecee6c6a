//! Request bodies: read only for the three routes that relay one (npm's audit, Composer's
//! advisories and notify-batch), each within its own limit and `server.body_read_timeout`, and
//! all of them together within a budget of bytes, so that no client can make pmcache hold
//! large bodies it has no use for. Every other request's body is never read: its answer says
//! `Connection: close`, so the rest of the body is not waited for either.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
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
        Budget(Arc::new(Semaphore::new(BUDGET / UNIT)))
    }

    /// The body of a request whose route takes up to `limit` bytes (None: no body at all,
    /// and nothing is read).
    pub(crate) async fn receive(
        &self,
        parts: &Parts,
        body: Incoming,
        limit: Option<usize>,
        timeout: Duration,
    ) -> Result<Received, Refusal> {
        let Some(limit) = limit else {
            return Ok(Received {
                bytes: Bytes::new(),
                _share: None,
            });
        };
        // A body that announces its length holds only that much of the budget (a 413 comes
        // before it is read when it is over the limit); one that does not, the whole limit.
        let announced = announced_length(parts);
        if announced.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let reserve = announced.unwrap_or(limit).max(1);
        let units = u32::try_from(reserve.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let share = Arc::clone(&self.0)
            .try_acquire_many_owned(units)
            .map_err(|_| Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "pmcache is receiving as many request bodies as it holds at once; try again shortly".to_owned(),
            })?;
        let limit = announced.unwrap_or(limit);
        let bytes = read_within(body, limit, timeout).await?;
        Ok(Received {
            bytes,
            _share: Some(share),
        })
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

async fn read_within(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, Refusal> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Refusal {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: format!(
                "the request body did not arrive within {timeout:?} (server.body_read_timeout)"
            ),
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large(limit)),
        Err(error) => Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: format!("could not read the request body: {error}"),
        }),
    }
}
