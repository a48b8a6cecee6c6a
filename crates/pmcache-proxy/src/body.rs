//! Response bodies: in-memory bytes, committed blobs, and files still being filled.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

/// The body type of every pmcache response.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Bytes read per frame while following a fill: small, because a fill's readers wait on the
/// writer and fifty of them must stay within a few megabytes.
pub(crate) const CHUNK: u64 = 64 * 1024;

/// Bytes read per frame from a committed blob: larger, since each read is a trip to the
/// blocking pool and warm documents run to tens of megabytes.
const BLOB_CHUNK: u64 = 256 * 1024;

/// A body of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Streams `length` bytes of a complete file from `start`.
pub(crate) fn file_range(file: File, start: u64, length: u64) -> Body {
    let file = Arc::new(file);
    let end = start + length;
    let chunks = stream::try_unfold(start, move |offset| {
        let file = Arc::clone(&file);
        async move {
            if offset >= end {
                return Ok(None);
            }
            let want = (end - offset).min(BLOB_CHUNK);
            let bytes = read_at(file, offset, want).await?;
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob is shorter than its index record",
                ));
            }
            let next = offset + bytes.len() as u64;
            Ok(Some((Frame::data(bytes), next)))
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// Reads up to `want` bytes at `offset` on the blocking pool.
pub(crate) async fn read_at(file: Arc<File>, offset: u64, want: u64) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; want as usize];
        let read = file.read_at(&mut buffer, offset)?;
        buffer.truncate(read);
        Ok(Bytes::from(buffer))
    })
    .await
    .map_err(io::Error::other)?
}

/// Fails a relayed body whose next piece takes longer than `timeout`, so a stalled upstream
/// cannot hold a client connection open for ever.
pub(crate) fn with_idle_timeout(body: Body, timeout: std::time::Duration) -> Body {
    let frames = stream::try_unfold(body, move |mut body| async move {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream stalled mid-body",
            )),
            Ok(None) => Ok(None),
            Ok(Some(frame)) => Ok(Some((frame?, body))),
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// `body`, counting in `abandoned` when it is dropped before its end (the client hung up or
/// gave up part-way): a rise says clients time out on pmcache.
pub(crate) fn watch_abandon(
    body: Body,
    abandoned: prometheus_client::metrics::counter::Counter,
) -> Body {
    Watched {
        inner: body,
        ended: false,
        abandoned,
    }
    .boxed_unsync()
}

/// A body that knows whether it was read to the end.
struct Watched {
    inner: Body,
    ended: bool,
    abandoned: prometheus_client::metrics::counter::Counter,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(context);
        if let std::task::Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so: that is an end too.
        if !self.ended && !http_body::Body::is_end_stream(&self.inner) {
            self.abandoned.inc();
        }
    }
}
