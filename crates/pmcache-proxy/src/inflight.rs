//! Single-flight verified fills: one upstream fetch per artifact however many clients miss it at
//! once. The fetch writes to a temp file in the store; every waiting client streams that file as
//! it grows. Nothing is committed unless the bytes match the published checksum, and no client
//! ever receives the final byte of a fill before that check passed, so a mismatch or a cut
//! upstream always reaches clients as a broken download, never as a complete-looking 200.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, stream};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use pmcache_store::{Access, Sha256Writer, Store, Table, TempBlob};
use tokio::sync::watch;
use url::Url;

use crate::artifact_record::{self, ArtifactRecord, StoredBy};
use crate::body::{Body, CHUNK};
use crate::checksum::{Checksum, Verifier};
use crate::error::{Error, Result};
use crate::spool::{Reader, Spool};
use crate::upstream::Upstream;

/// Where a fill stands; every waiting client watches it. The bytes themselves are in the
/// fill's [`Spool`].
#[derive(Clone)]
pub(crate) enum Progress {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes are arriving; `written` of them are in the spool.
    Streaming { length: Option<u64>, written: u64 },
    /// Verified (and committed, when the store could take it).
    Done { size: u64 },
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
    pub(crate) keep: Keep,
}

/// What becomes of a fill's bytes, as the role of the request that would start it allows.
#[derive(Clone, Debug)]
pub(crate) enum Keep {
    /// Verified bytes are stored, recorded as filled by this request.
    Store(StoredBy),
    /// Verified and streamed, never stored (a read-role miss). Joins a storing fill already
    /// under way rather than fetching a second time.
    Relay,
    /// Joins a storing fill under way, but starts none: a read-role miss under
    /// `read_misses = "refuse"`.
    JoinOnly,
}

impl Keep {
    fn stores(&self) -> bool {
        matches!(self, Keep::Store(_))
    }

    /// How a copy found in the store is opened: only a request that may store counts as a use.
    fn access(&self) -> Access {
        match self {
            Keep::Store(_) => Access::Note,
            Keep::Relay | Keep::JoinOnly => Access::Quiet,
        }
    }
}

/// One client of a fill: the fill's progress and its place in the fill's bytes.
pub(crate) struct Follower {
    pub(crate) progress: watch::Receiver<Progress>,
    reader: Reader,
}

/// A fill clients can join.
struct Running {
    progress: watch::Receiver<Progress>,
    spool: Arc<Spool>,
}

/// The fills in progress, by artifact key.
#[derive(Default)]
pub(crate) struct Fills {
    running: Mutex<HashMap<String, Running>>,
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
    ) -> Result<Follower> {
        let storing = job.flight_key();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fill) = running.get(&storing) {
            // Registered under the lock, before the fill can move its window past byte 0.
            return Ok(fill.follower());
        }
        // A fill that finished between the caller's look-up and this lock has already written
        // its record (before leaving `running`): serve that instead of fetching again.
        if let Some((record, file)) =
            artifact_record::stored(store, &job.key, job.checksum.as_ref(), |digest| {
                store.open_blob_as(digest, job.keep.access())
            })?
        {
            let spool = Spool::of_file(Arc::new(file), record.size);
            let done = Progress::Done { size: record.size };
            return Ok(Follower {
                progress: watch::channel(done).1,
                reader: spool.reader(),
            });
        }
        // Relays share one fetch among themselves, apart from storing fills: a storing request
        // never waits on bytes that will not be kept.
        let flight = match job.keep {
            Keep::Store(_) => storing,
            Keep::Relay => format!("relay:{storing}"),
            Keep::JoinOnly => {
                return Err(Error::ReadMissRefused {
                    url: job.url.to_string(),
                });
            }
        };
        // A relay's bytes are only in memory: a request that comes once the first bytes are
        // gone starts a relay of its own.
        if let Some(fill) = running.get(&flight)
            && let Some(reader) = fill.spool.reader_from_start()
        {
            return Ok(Follower {
                progress: fill.progress.clone(),
                reader,
            });
        }
        let (sender, receiver) = watch::channel(Progress::Connecting);
        let spool = Arc::new(match job.keep.stores() {
            true => Spool::default(),
            false => Spool::relay(),
        });
        let follower = Follower {
            progress: receiver.clone(),
            reader: spool.reader(),
        };
        running.insert(
            flight.clone(),
            Running {
                progress: receiver,
                spool: Arc::clone(&spool),
            },
        );
        let fill = Fill {
            job,
            store: store.clone(),
            upstream: upstream.clone(),
            spool,
            sender,
            fills: Arc::clone(self),
            flight,
        };
        // The fill runs on its own task so that it completes (and the cache fills) even when
        // the client that started it goes away.
        tokio::spawn(fill.run());
        Ok(follower)
    }

    /// Takes `spool`'s fill out of the joinable ones (and only it: a newer fill of the same
    /// flight may have replaced it).
    fn leave(&self, flight: &str, spool: &Arc<Spool>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running
            .get(flight)
            .is_some_and(|fill| Arc::ptr_eq(&fill.spool, spool))
        {
            running.remove(flight);
        }
    }
}

impl Running {
    fn follower(&self) -> Follower {
        Follower {
            progress: self.progress.clone(),
            reader: self.spool.reader(),
        }
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

/// One fill and everything it reports to.
struct Fill {
    job: FillJob,
    store: Store,
    upstream: Upstream,
    spool: Arc<Spool>,
    sender: watch::Sender<Progress>,
    fills: Arc<Fills>,
    flight: String,
}

/// Where a fill's bytes go: the temp file that becomes the blob, or (once the store cannot
/// take them) only to the clients.
enum Sink {
    Disk(TempBlob),
    /// Hashes what passes, as the temp file did.
    Memory(Sha256Writer),
}

impl Sink {
    fn sha256_hex(&self) -> String {
        match self {
            Sink::Disk(temp) => temp.digest_so_far().to_hex(),
            Sink::Memory(hasher) => hasher.clone().finish().to_hex(),
        }
    }
}

impl Fill {
    async fn run(self) {
        let outcome = AssertUnwindSafe(self.fetch())
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(Error::Internal("artifact fill panicked".to_owned())));
        let last = match outcome {
            Ok(done) => done,
            // Clients hang up on relays all the time (a HEAD, a cancelled job): nothing was
            // going to be kept, so nothing failed.
            Err(error) if !self.job.keep.stores() && self.spool.abandoned() => {
                tracing::debug!(url = %self.job.url, "every client left a relay; stopped");
                Progress::Failed(Arc::new(error))
            }
            Err(error) => {
                log_failure(&self.job, &error);
                Progress::Failed(Arc::new(error))
            }
        };
        // Leave the joinable fills before telling the waiters: a client that saw this fill fail
        // and asks again at once must start a new fill, not join the failed one. (A successful
        // fill wrote its record already, so a new request finds it in the store.)
        self.fills.leave(&self.flight, &self.spool);
        self.sender.send_replace(last);
    }

    async fn fetch(&self) -> Result<Progress> {
        let job = &self.job;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let mut fetched = self
            .upstream
            .get(&job.url, &headers, job.allow_redirect.as_ref())
            .await?;
        let length = fetched.content_length();
        let framed = fetched.is_framed();
        let mut sink = match job.keep.stores() {
            true => match self.store.create_temp() {
                Ok(temp) => {
                    self.spool.set_file(temp.shared_file());
                    Sink::Disk(temp)
                }
                Err(error) => self.store_failed(error, Sha256Writer::default())?,
            },
            false => Sink::Memory(Sha256Writer::default()),
        };
        self.sender
            .send_replace(Progress::Streaming { length, written: 0 });
        let mut verifier = Verifier::new(job.checksum.clone());
        let mut written = 0u64;
        while let Some(chunk) = fetched.next_chunk().await? {
            verifier.update(&chunk);
            written += chunk.len() as u64;
            if let Some(announced) = length
                && written > announced
            {
                return Err(length_error(job, announced, written));
            }
            sink = self.write(sink, chunk).await?;
            self.sender.send_modify(|p| {
                if let Progress::Streaming { written: w, .. } = p {
                    *w = written;
                }
            });
        }
        if let Some(announced) = length
            && announced != written
        {
            return Err(length_error(job, announced, written));
        }
        if let Err((expected, actual)) = verifier.finish(&sink.sha256_hex()) {
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
        let Sink::Disk(temp) = sink else {
            if !job.keep.stores() {
                tracing::debug!(url = %job.url, size = written, "artifact relayed, not stored: the request may not fill the cache");
                return Ok(Progress::Done { size: written });
            }
            self.store.fill_served_not_stored();
            // The store reported the full disk once; one line per fill would flood the log.
            tracing::debug!(url = %job.url, size = written, "artifact served, not stored: the store is full");
            return Ok(Progress::Done { size: written });
        };
        if job.checksum.is_none() && !framed {
            // Nothing vouches for these bytes and a cut connection would look like this same
            // ending: serve them, but never keep them.
            tracing::warn!(url = %job.url, "no checksum and no length: served, not stored");
            return Ok(Progress::Done { size: written });
        }
        self.commit(temp).await;
        Ok(Progress::Done { size: written })
    }

    /// Writes a chunk where the fill's bytes go, switching to memory when the store is full.
    async fn write(&self, sink: Sink, chunk: bytes::Bytes) -> Result<Sink> {
        let mut sink = match sink {
            Sink::Disk(mut temp) => match temp.write_all(&chunk) {
                Ok(()) => {
                    self.spool.wrote(temp.written());
                    return Ok(Sink::Disk(temp));
                }
                // The temp file goes with `temp`; readers keep their handle on what it holds.
                Err(error) => self.store_failed(error, temp.into_hasher())?,
            },
            memory @ Sink::Memory(_) => memory,
        };
        if let Sink::Memory(hasher) = &mut sink {
            hasher.update(&chunk);
        }
        self.spool.push(chunk).await.map_err(|_| {
            Error::Internal("every client left a fill that is not being stored".to_owned())
        })?;
        Ok(sink)
    }

    /// After a failed store write: go on in memory if the disk is full, else fail.
    fn store_failed(&self, error: pmcache_store::Error, hashed: Sha256Writer) -> Result<Sink> {
        if !error.is_storage_full() {
            return Err(error.into());
        }
        self.store.storage_failed(&error);
        // New requests start a fill of their own, which tries the disk again.
        self.fills.leave(&self.flight, &self.spool);
        Ok(Sink::Memory(hashed))
    }

    /// Commits the verified bytes and records them; clients get them whether or not that works.
    async fn commit(&self, temp: TempBlob) {
        let committing = self.store.clone();
        let job = &self.job;
        let (key, url, verified) = (job.key.clone(), job.url.to_string(), job.checksum.clone());
        let stored_by = match &job.keep {
            Keep::Store(by) => Some(by.clone()),
            Keep::Relay | Keep::JoinOnly => None,
        };
        // fsync, rename and the index write are blocking: keep them off the runtime.
        let outcome = tokio::task::spawn_blocking(move || {
            let committed = committing.commit(temp)?;
            let record = ArtifactRecord {
                url,
                digest: committed.digest,
                size: committed.size,
                verified,
                pin_only: false,
                stored_by,
            };
            committing.put(Table::Artifacts, &key, &record)?;
            // Only now may eviction take the blob: the record naming it is written.
            drop(committed.hold);
            Ok::<_, pmcache_store::Error>(record)
        })
        .await;
        match outcome {
            Ok(Ok(record)) => {
                let by = record.stored_by.as_ref();
                tracing::info!(
                    url = %job.url, digest = %record.digest, size = record.size,
                    role = by.map(|by| by.role.as_str()), token = by.and_then(|by| by.token.as_deref()),
                    "artifact stored"
                );
            }
            Ok(Err(error)) => {
                self.store.storage_failed(&error);
                self.store.fill_served_not_stored();
                if !error.is_storage_full() {
                    tracing::error!(url = %job.url, error = %error, "artifact served, not stored");
                }
            }
            Err(error) => tracing::error!(url = %job.url, %error, "commit task failed"),
        }
    }
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
            Progress::Done { size } => return Ok(Some(*size)),
            Progress::Failed(error) => return Err(Error::Shared(Arc::clone(error))),
        }
        if progress.changed().await.is_err() {
            return Err(Error::Internal(
                "artifact fill ended without a result".to_owned(),
            ));
        }
    }
}

/// How many bytes a client may have been sent by now, and whether that is all. While the fill
/// runs, the last byte of a body of known length is held back until the checksum has passed.
fn sendable(progress: &Progress) -> std::result::Result<(u64, bool), io::Error> {
    match progress {
        Progress::Connecting => Ok((0, false)),
        Progress::Streaming { length, written } => {
            let limit = match length {
                Some(length) => (*written).min(length.saturating_sub(1)),
                None => *written,
            };
            Ok((limit, false))
        }
        Progress::Done { size } => Ok((*size, true)),
        Progress::Failed(error) => Err(io::Error::other(error.to_string())),
    }
}

/// A body that follows the fill: it sends bytes as they are written and verified, ends when the
/// fill is done, and fails (aborting the client's transfer) if the fill fails.
pub(crate) fn follow(follower: Follower) -> Body {
    let chunks = stream::try_unfold(follower, |mut follower| async move {
        loop {
            let (limit, done) = sendable(&follower.progress.borrow_and_update())?;
            let offset = follower.reader.position();
            if offset < limit {
                let bytes = follower.reader.read((limit - offset).min(CHUNK)).await?;
                if bytes.is_empty() {
                    return Err(io::Error::other("fill spool shorter than reported"));
                }
                return Ok(Some((Frame::data(bytes), follower)));
            }
            if done {
                return Ok(None);
            }
            if follower.progress.changed().await.is_err() {
                return Err(io::Error::other("artifact fill ended without a result"));
            }
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}
