//! Memory bounds for upstream documents: bodies being received, and renders.
//!
//! Reading a body never waits for anything but the upstream. On an HTTP/2 connection every
//! stream shares one flow-control window, so a body left unread while its reader waits for a
//! permit stalls the bodies of every other stream, the ones holding the permits included, until
//! the read timeout. Bodies are therefore always read as they arrive: into memory while the
//! shared budget allows, into a temp file in the store beyond it. Only rendering (parsing and
//! rewriting a whole body, which multiplies its size in memory) waits for room, and it waits
//! with its body already received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pmcache_store::{Store, TempBlob};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Bytes of document bodies held in memory while they are received, all readers together;
/// beyond it bodies go to temp files.
const BODY_MEMORY: usize = 32 << 20;
/// Bytes of upstream bodies being rendered at once (a render holds its body, the parsed tree
/// and the rendered variants, several times the body). A body larger than this renders alone.
const RENDER_MEMORY: usize = 24 << 20;
/// Budgets count in KiB: a semaphore's permits are bounded, and finer grain buys nothing.
const UNIT: usize = 1024;

/// The budgets one proxy shares among its documents.
pub(crate) struct Budgets {
    body: Arc<Semaphore>,
    render: Arc<Semaphore>,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            body: Arc::new(Semaphore::new(BODY_MEMORY / UNIT)),
            render: Arc::new(Semaphore::new(RENDER_MEMORY / UNIT)),
        }
    }
}

/// A body being received: in memory under the budget, then in a temp file.
pub(crate) struct BodyBuffer {
    budget: Arc<Semaphore>,
    store: Store,
    memory: BytesMut,
    /// The part of the body budget `memory` holds.
    reserved: Option<OwnedSemaphorePermit>,
    spilled: Option<TempBlob>,
}

/// A received body, ready to be rendered.
pub(crate) enum ReceivedBody {
    Memory(Bytes),
    Spilled(TempBlob),
}

/// A render's share of the render budget, and how long it waited for it.
pub(crate) struct RenderPermit {
    _permit: OwnedSemaphorePermit,
    pub(crate) waited: Duration,
}

impl Budgets {
    /// An empty buffer for one body.
    pub(crate) fn body_buffer(&self, store: &Store) -> BodyBuffer {
        BodyBuffer {
            budget: Arc::clone(&self.body),
            store: store.clone(),
            memory: BytesMut::new(),
            reserved: None,
            spilled: None,
        }
    }

    /// Waits for room to render a body of `size` bytes.
    pub(crate) async fn render_permit(&self, size: u64) -> Result<RenderPermit> {
        let started = Instant::now();
        let units = units(size).min(RENDER_MEMORY / UNIT);
        let permit = Arc::clone(&self.render)
            .acquire_many_owned(units as u32)
            .await
            .map_err(|e| Error::Internal(format!("render budget closed: {e}")))?;
        Ok(RenderPermit {
            _permit: permit,
            waited: started.elapsed(),
        })
    }
}

impl BodyBuffer {
    /// Bytes received so far.
    pub(crate) fn len(&self) -> u64 {
        match &self.spilled {
            Some(file) => file.written(),
            None => self.memory.len() as u64,
        }
    }

    /// Appends a chunk: to memory if the budget has room, else to the temp file (created,
    /// with what memory held, the first time).
    pub(crate) async fn push(&mut self, chunk: Bytes) -> Result<()> {
        if self.spilled.is_none() && self.reserve(chunk.len()) {
            self.memory.extend_from_slice(&chunk);
            return Ok(());
        }
        let mut pending = vec![chunk];
        let file = match self.spilled.take() {
            Some(file) => file,
            None => match self.store.create_temp() {
                Ok(file) => {
                    pending.insert(0, std::mem::take(&mut self.memory).freeze());
                    self.reserved = None;
                    file
                }
                // No disk to spill to (full, or failing): memory it is, over budget; the
                // document size limit still bounds it.
                Err(error) => {
                    tracing::debug!(%error, "document body kept in memory over its budget");
                    for chunk in pending {
                        self.memory.extend_from_slice(&chunk);
                    }
                    return Ok(());
                }
            },
        };
        let file = tokio::task::spawn_blocking(move || {
            let mut file = file;
            for chunk in &pending {
                file.write_all(chunk)?;
            }
            Ok::<_, pmcache_store::Error>(file)
        })
        .await
        .map_err(|e| Error::Internal(format!("spill task failed: {e}")))??;
        self.spilled = Some(file);
        Ok(())
    }

    /// The whole body.
    pub(crate) fn finish(self) -> ReceivedBody {
        match self.spilled {
            Some(file) => ReceivedBody::Spilled(file),
            None => ReceivedBody::Memory(self.memory.freeze()),
        }
    }

    fn reserve(&mut self, bytes: usize) -> bool {
        // Counted by the KiB the buffer grows past, so small chunks cost no permit each.
        let needed = units((self.memory.len() + bytes) as u64);
        let held = self
            .reserved
            .as_ref()
            .map_or(0, |permit| permit.num_permits());
        if needed <= held {
            return true;
        }
        match Arc::clone(&self.budget).try_acquire_many_owned((needed - held) as u32) {
            Ok(more) => {
                match &mut self.reserved {
                    Some(permit) => permit.merge(more),
                    None => self.reserved = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

impl ReceivedBody {
    /// The body's length.
    pub(crate) fn len(&self) -> u64 {
        match self {
            ReceivedBody::Memory(bytes) => bytes.len() as u64,
            ReceivedBody::Spilled(file) => file.written(),
        }
    }

    /// The body in memory (reading a spilled one back, on the blocking pool); the temp file
    /// is removed.
    pub(crate) async fn into_bytes(self) -> Result<Bytes> {
        match self {
            ReceivedBody::Memory(bytes) => Ok(bytes),
            ReceivedBody::Spilled(file) => tokio::task::spawn_blocking(move || {
                let mut bytes = vec![0u8; file.written() as usize];
                std::os::unix::fs::FileExt::read_exact_at(&*file.shared_file(), &mut bytes, 0)
                    .map_err(|e| {
                        Error::Internal(format!("reading back {}: {e}", file.path().display()))
                    })?;
                Ok(Bytes::from(bytes))
            })
            .await
            .map_err(|e| Error::Internal(format!("read-back task failed: {e}")))?,
        }
    }
}

fn units(bytes: u64) -> usize {
    bytes.div_ceil(UNIT as u64) as usize
}
