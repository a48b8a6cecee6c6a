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
/// gave up part-way): a rise says clients time out on pmcache. `length` is the announced
/// `Content-Length`: hyper stops polling a body once that many bytes are out, so reaching it
/// is an end too.
pub(crate) fn watch_abandon(
    body: Body,
    length: Option<u64>,
    abandoned: prometheus_client::metrics::counter::Counter,
) -> Body {
    Watched {
        inner: body,
        sent: 0,
        length,
        ended: false,
        abandoned,
    }
    .boxed_unsync()
}

/// A body that knows whether it was read to the end.
struct Watched {
    inner: Body,
    sent: u64,
    length: Option<u64>,
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
        match &polled {
            std::task::Poll::Ready(None) => self.ended = true,
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
                self.sent += bytes;
            }
            _ => {}
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
        let complete = self.ended
            || http_body::Body::is_end_stream(&self.inner)
            || self.length == Some(self.sent);
        if !complete {
            self.abandoned.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(
        body: Body,
        length: Option<u64>,
    ) -> (Body, prometheus_client::metrics::counter::Counter) {
        let counter = prometheus_client::metrics::counter::Counter::default();
        (watch_abandon(body, length, counter.clone()), counter)
    }

    #[tokio::test]
    async fn bodies_read_to_their_length_or_end_are_not_abandoned() {
        let (mut body, counter) = watched(full(vec![1u8; 10]), Some(10));
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.data_ref().map(Bytes::len), Some(10));
        // hyper drops the body here: it has written the whole Content-Length.
        drop(body);
        assert_eq!(counter.get(), 0);

        let (body, counter) = watched(empty(), Some(0));
        drop(body);
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn bodies_dropped_part_way_are_abandoned() {
        let chunks = stream::iter([
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"def"))),
        ]);
        let (mut body, counter) = watched(StreamBody::new(chunks).boxed_unsync(), Some(6));
        body.frame().await.expect("a frame").expect("data");
        drop(body);
        assert_eq!(counter.get(), 1);
    }
}
