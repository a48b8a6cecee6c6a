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

/// Bytes read per frame from a committed blob. hyper queues at most about its `max_buf_size`
/// (tens of KiB, see the server's connection settings) before asking for the next frame, so a
/// stream holds about this much plus that: with 64 KiB, 200 downloads at once hold about 20 MB.
/// Reads the page cache answers cost no trip to the blocking pool ([`read_at`]), so smaller
/// frames cost a system call each, not a thread hand-off.
const BLOB_CHUNK: u64 = 64 * 1024;

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

/// Reads up to `want` bytes at `offset`: at once when the page cache holds them (a read that
/// cannot block), else on the blocking pool.
pub(crate) async fn read_at(file: Arc<File>, offset: u64, want: u64) -> io::Result<Bytes> {
    let mut buffer = vec![0u8; want as usize];
    if let Some(read) = pmcache_store::read_cached_at(&file, &mut buffer, offset) {
        buffer.truncate(read);
        return Ok(Bytes::from(buffer));
    }
    tokio::task::spawn_blocking(move || {
        let read = file.read_at(&mut buffer, offset)?;
        buffer.truncate(read);
        Ok(Bytes::from(buffer))
    })
    .await
    .map_err(io::Error::other)?
}

/// Frames a relay holds for a client that reads slower than the upstream sends.
const RELAY_FRAMES: usize = 4;

/// Relays `body` through a task of its own, so that neither side can hold the other for long:
/// a piece of the upstream body that takes longer than `timeout` fails the client's body, and a
/// client that takes nothing for `timeout` ends the relay. Either way the upstream stream is
/// dropped, which gives its share of the HTTP/2 connection window back to the other streams
/// (hyper stops polling a body whose client does not read, so a timer inside the body alone
/// would never fire).
pub(crate) fn relay(mut body: Body, timeout: std::time::Duration) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Frame<Bytes>>>(RELAY_FRAMES);
    tokio::spawn(async move {
        loop {
            let frame = match tokio::time::timeout(timeout, body.frame()).await {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream stalled mid-body",
                )),
                Ok(None) => return,
                Ok(Some(frame)) => frame,
            };
            let failed = frame.is_err();
            let delivered = tokio::time::timeout(timeout, sender.send(frame)).await;
            if failed || !matches!(delivered, Ok(Ok(()))) {
                return;
            }
        }
    });
    let frames = stream::unfold(receiver, |mut receiver| async move {
        let frame = receiver.recv().await?;
        Some((frame, receiver))
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
        failed: false,
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
    /// pmcache ended it with an error (a fill that failed verification): not the client's doing.
    failed: bool,
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
            std::task::Poll::Ready(Some(Err(_))) => self.failed = true,
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
            || self.failed
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
    async fn a_relay_gives_up_on_a_client_that_stops_reading() {
        let (upstream, upstream_frames) =
            tokio::sync::mpsc::channel::<io::Result<Frame<Bytes>>>(64);
        let frames = stream::unfold(upstream_frames, |mut frames| async move {
            Some((frames.recv().await?, frames))
        });
        let mut relayed = relay(
            StreamBody::new(frames).boxed_unsync(),
            std::time::Duration::from_millis(50),
        );
        upstream
            .send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .expect("relay reads");
        let first = relayed.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first")));
        // The client reads no more: the relay drops the upstream body once its queue stays full.
        for _ in 0..RELAY_FRAMES + 1 {
            let _ = upstream
                .send(Ok(Frame::data(Bytes::from_static(b"more"))))
                .await;
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), upstream.closed())
            .await
            .expect("the relay let go of the upstream body");
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
