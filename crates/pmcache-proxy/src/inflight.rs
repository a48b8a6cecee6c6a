//! Single-flight verified fills: one upstream fetch per artifact however many clients miss it at
//! once. The fetch writes to a temp file in the store; every waiting client streams that file as
//! it grows. Nothing is committed unless the bytes match the published checksum, and no client
//! ever receives the final byte of a fill before that check passed, so a mismatch or a cut
//! upstream always reaches clients as a broken download, never as a complete-looking 200.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, stream};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use pmcache_store::{Store, Table};
use tokio::sync::watch;
use url::Url;

use crate::artifact::{self, ArtifactRecord};
use crate::body::{self, Body, CHUNK};
use crate::checksum::{Checksum, Verifier};
use crate::error::{Error, Result};
use crate::upstream::Upstream;

/// Where a fill stands; every waiting client watches it.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes are arriving; `written` of them are in `file`.
    Streaming {
        file: Arc<File>,
        length: Option<u64>,
        written: u64,
    },
    /// Verified and committed.
    Done { file: Arc<File>, size: u64 },
    /// Failed; clients abort their streams.
    Failed(Arc<Error>),
}

/// What a fill fetches and how it is checked.
#[derive(Clone)]
pub(crate) struct FillJob {
    pub(crate) key: String,
    pub(crate) url: Url,
    pub(crate) checksum: Option<Checksum>,
    /// `checksum` is the sha256 pmcache pinned on first fetch, not one the upstream published.
    pub(crate) pinned: bool,
    pub(crate) allow_redirect: Arc<dyn Fn(&Url) -> bool + Send + Sync>,
}

/// The fills in progress, by artifact key.
#[derive(Default)]
pub(crate) struct Fills {
    running: Mutex<HashMap<String, watch::Receiver<Progress>>>,
}

impl Fills {
    /// Joins the fill of `job`, starting it unless one is running. Fills are keyed by artifact
    /// and checksum, so a request that expects other bytes never joins a fill checked against
    /// a stale checksum.
    pub(crate) fn join(
        self: &Arc<Self>,
        job: FillJob,
        store: &Store,
        upstream: &Upstream,
    ) -> Result<watch::Receiver<Progress>> {
        let flight = job.flight_key();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(progress) = running.get(&flight) {
            return Ok(progress.clone());
        }
        // A fill that finished between the caller's look-up and this lock has already written
        // its record (before leaving `running`): serve that instead of fetching again.
        if let Some((record, file)) = artifact::stored(store, &job.key, job.checksum.as_ref())? {
            let done = Progress::Done {
                file: Arc::new(file),
                size: record.size,
            };
            return Ok(watch::channel(done).1);
        }
        let (sender, receiver) = watch::channel(Progress::Connecting);
        running.insert(flight.clone(), receiver.clone());
        let fills = Arc::clone(self);
        let (store, upstream) = (store.clone(), upstream.clone());
        // The fill runs on its own task so that it completes (and the cache fills) even when
        // the client that started it goes away.
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(fill(&job, &store, &upstream, &sender))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(Error::Internal("artifact fill panicked".to_owned())));
            let last = match outcome {
                Ok(done) => done,
                Err(error) => {
                    log_failure(&job, &error);
                    Progress::Failed(Arc::new(error))
                }
            };
            // Leave `running` before telling the waiters: a client that saw this fill fail and
            // asks again at once must start a new fill, not join the failed one. (A successful
            // fill wrote its record already, so a new request finds it in the store.)
            fills
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&flight);
            sender.send_replace(last);
        });
        Ok(receiver)
    }
}

impl FillJob {
    fn flight_key(&self) -> String {
        match &self.checksum {
            Some(checksum) => format!("{}#{checksum}", self.key),
            None => self.key.clone(),
        }
    }
}

fn log_failure(job: &FillJob, error: &Error) {
    match error {
        Error::Checksum {
            expected, actual, ..
        } => tracing::error!(
            url = %job.url, %expected, %actual,
            "upstream bytes do not match the published checksum; nothing stored"
        ),
        Error::PinMismatch { pinned, actual, .. } => tracing::error!(
            url = %job.url, %pinned, %actual,
            "upstream bytes differ from those pinned when first fetched; refused, nothing stored"
        ),
        _ => tracing::warn!(url = %job.url, error = %error, "artifact fill failed; nothing stored"),
    }
}

async fn fill(
    job: &FillJob,
    store: &Store,
    upstream: &Upstream,
    progress: &watch::Sender<Progress>,
) -> Result<Progress> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let mut fetched = upstream
        .get(&job.url, &headers, job.allow_redirect.as_ref())
        .await?;
    let length = fetched.content_length();
    let framed = fetched.is_framed();
    let mut temp = store.create_temp()?;
    let file = temp.shared_file();
    progress.send_replace(Progress::Streaming {
        file: Arc::clone(&file),
        length,
        written: 0,
    });
    let mut verifier = Verifier::new(job.checksum.clone());
    while let Some(chunk) = fetched.next_chunk().await? {
        verifier.update(&chunk);
        temp.write_all(&chunk)?;
        let written = temp.written();
        if let Some(announced) = length
            && written > announced
        {
            return Err(length_error(job, announced, written));
        }
        progress.send_modify(|p| {
            if let Progress::Streaming { written: w, .. } = p {
                *w = written;
            }
        });
    }
    let size = temp.written();
    if let Some(announced) = length
        && announced != size
    {
        return Err(length_error(job, announced, size));
    }
    if let Err((expected, actual)) = verifier.finish(&temp.digest_so_far().to_hex()) {
        let url = job.url.to_string();
        return Err(match job.pinned {
            true => Error::PinMismatch {
                url,
                pinned: expected,
                actual,
            },
            false => Error::Checksum {
                url,
                expected,
                actual,
            },
        });
    }
    if job.checksum.is_none() && !framed {
        // Nothing vouches for these bytes and a cut connection would look like this same
        // ending: serve them, but never keep them.
        tracing::warn!(url = %job.url, "no checksum and no length: served, not stored");
        return Ok(Progress::Done { file, size });
    }
    let committing = store.clone();
    let (key, url, verified) = (job.key.clone(), job.url.to_string(), job.checksum.clone());
    // fsync, rename and the index write are blocking: keep them off the runtime.
    let digest = tokio::task::spawn_blocking(move || {
        let (digest, size) = committing.commit(temp)?;
        let record = ArtifactRecord {
            url,
            digest,
            size,
            verified,
        };
        committing.put(Table::Artifacts, &key, &record)?;
        Ok::<_, Error>(digest)
    })
    .await
    .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
    tracing::info!(url = %job.url, %digest, size, "artifact stored");
    Ok(Progress::Done { file, size })
}

fn length_error(job: &FillJob, announced: u64, actual: u64) -> Error {
    Error::Length {
        url: job.url.to_string(),
        announced,
        actual,
    }
}

/// Waits for the fill's response headers; Err if it failed before sending any byte.
pub(crate) async fn started(progress: &mut watch::Receiver<Progress>) -> Result<Option<u64>> {
    loop {
        match &*progress.borrow_and_update() {
            Progress::Connecting => {}
            Progress::Streaming { length, .. } => return Ok(*length),
            Progress::Done { size, .. } => return Ok(Some(*size)),
            Progress::Failed(error) => return Err(Error::Shared(Arc::clone(error))),
        }
        if progress.changed().await.is_err() {
            return Err(Error::Internal(
                "artifact fill ended without a result".to_owned(),
            ));
        }
    }
}

/// How many bytes a client may be sent now. While the fill runs, the last byte of a body of
/// known length is held back until the checksum has passed.
fn sendable(progress: &Progress) -> std::result::Result<(Option<Arc<File>>, u64, bool), io::Error> {
    match progress {
        Progress::Connecting => Ok((None, 0, false)),
        Progress::Streaming {
            file,
            length,
            written,
        } => {
            let limit = match length {
                Some(length) => (*written).min(length.saturating_sub(1)),
                None => *written,
            };
            Ok((Some(Arc::clone(file)), limit, false))
        }
        Progress::Done { file, size } => Ok((Some(Arc::clone(file)), *size, true)),
        Progress::Failed(error) => Err(io::Error::other(error.to_string())),
    }
}

/// A body that follows the fill: it sends bytes as they are written and verified, ends when the
/// fill has committed, and fails (aborting the client's transfer) if the fill fails.
pub(crate) fn follow(progress: watch::Receiver<Progress>) -> Body {
    let chunks = stream::try_unfold((progress, 0u64), |(mut progress, offset)| async move {
        loop {
            let (file, limit, done) = sendable(&progress.borrow_and_update())?;
            if let Some(file) = file
                && offset < limit
            {
                let bytes: Bytes = body::read_at(file, offset, (limit - offset).min(CHUNK)).await?;
                if bytes.is_empty() {
                    return Err(io::Error::other("fill file shorter than reported"));
                }
                let next = offset + bytes.len() as u64;
                return Ok(Some((Frame::data(bytes), (progress, next))));
            }
            if done {
                return Ok(None);
            }
            if progress.changed().await.is_err() {
                return Err(io::Error::other("artifact fill ended without a result"));
            }
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}
