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
const BODY_MEMORY: usize = 8 << 20;
/// Bytes of upstream bodies being rendered at once (a render holds its body, the parsed tree
/// and the rendered variants, several times the body). A body larger than this renders alone.
const RENDER_MEMORY: usize = 8 << 20;
/// Budgets count in KiB: a semaphore's permits are bounded, and finer grain buys nothing.
const UNIT: usize = 1024;

/// The budgets one proxy shares among its documents.
pub(crate) struct Budgets {
    body: Arc<Semaphore>,
    render: Arc<Semaphore>,
    /// The whole render budget, in units: what a body larger than the budget takes.
    render_units: usize,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets::new(BODY_MEMORY, RENDER_MEMORY)
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

/// A received body, ready to be rendered. One held in memory keeps its share of the body
/// budget until the render is done with it: bodies waiting for their render count too.
pub(crate) struct ReceivedBody {
    content: Received,
    reserved: Option<OwnedSemaphorePermit>,
}

enum Received {
    Memory(Bytes),
    Spilled(TempBlob),
}

/// A body's share of the body budget, released when dropped.
pub(crate) struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A render's share of the render budget, and how long it waited for it.
pub(crate) struct RenderPermit {
    _permit: OwnedSemaphorePermit,
    pub(crate) waited: Duration,
}

impl Budgets {
    /// Budgets of `body` and `render` bytes.
    fn new(body: usize, render: usize) -> Budgets {
        Budgets {
            body: Arc::new(Semaphore::new(body / UNIT)),
            render: Arc::new(Semaphore::new(render / UNIT)),
            render_units: render / UNIT,
        }
    }

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
        let units = units(size).min(self.render_units);
        let permit = Arc::clone(&self.render)
            .acquire_many_owned(units as u32)
            .await
            .map_err(|e| Error::failed("render budget closed", e))?;
        Ok(RenderPermit {
            _permit: permit,
            waited: started.elapsed(),
        })
    }
}

impl BodyBuffer {
    /// Appends a chunk: to memory if the budget has room, else to the temp file (created,
    /// with what memory held, the first time).
    pub(crate) async fn push(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.spilled.is_none() && self.reserve(chunk.len()) {
            self.memory.extend_from_slice(&chunk);
            return Ok(());
        }
        let mut pending = vec![chunk];
        // What memory held stays counted until it is written out.
        let mut written_out = None;
        let file = match self.spilled.take() {
            Some(file) => file,
            None => match self.store.create_temp() {
                Ok(file) => {
                    pending.insert(0, std::mem::take(&mut self.memory).freeze());
                    written_out = self.reserved.take();
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
        .map_err(|e| Error::failed("spill task failed", e))??;
        drop(written_out);
        self.spilled = Some(file);
        Ok(())
    }

    /// The whole body.
    pub(crate) fn finish(self) -> ReceivedBody {
        let content = match self.spilled {
            Some(file) => Received::Spilled(file),
            None => Received::Memory(self.memory.freeze()),
        };
        ReceivedBody {
            content,
            reserved: self.reserved,
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
        match &self.content {
            Received::Memory(bytes) => bytes.len() as u64,
            Received::Spilled(file) => file.written(),
        }
    }

    /// The body in memory (reading a spilled one back: blocking, call it on a render thread;
    /// the temp file is removed), and its share of the body budget, to drop once the render
    /// is done.
    pub(crate) fn into_bytes(self) -> Result<(Bytes, Reservation)> {
        let reservation = Reservation {
            _permit: self.reserved,
        };
        let bytes = match self.content {
            Received::Memory(bytes) => bytes,
            Received::Spilled(file) => read_back(&file)?,
        };
        Ok((bytes, reservation))
    }
}

fn read_back(file: &TempBlob) -> Result<Bytes> {
    let mut bytes = vec![0u8; file.written() as usize];
    std::os::unix::fs::FileExt::read_exact_at(&*file.shared_file(), &mut bytes, 0)
        .map_err(|e| Error::failed(format!("reading back {}", file.path().display()), e))?;
    Ok(Bytes::from(bytes))
}

fn units(bytes: u64) -> usize {
    bytes.div_ceil(UNIT as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Budgets of `body_kib` and `render_kib` KiB.
    fn budgets(body_kib: usize, render_kib: usize) -> Budgets {
        Budgets::new(body_kib * UNIT, render_kib * UNIT)
    }

    #[tokio::test]
    async fn bodies_past_the_memory_budget_spill_to_disk_and_read_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let budgets = budgets(4, 64);
        let mut first = budgets.body_buffer(&store);
        first
            .push(Bytes::from(vec![b'a'; 3000]))
            .await
            .expect("push");
        // The first body holds 3 of the 4 KiB until its render is done: the second spills.
        let mut second = budgets.body_buffer(&store);
        second
            .push(Bytes::from(vec![b'b'; 1500]))
            .await
            .expect("push");
        second
            .push(Bytes::from(vec![b'c'; 1500]))
            .await
            .expect("push");
        assert!(second.spilled.is_some(), "over budget, but still in memory");
        let (first, first_reservation) = first.finish().into_bytes().expect("bytes");
        assert_eq!(first.len(), 3000);
        let received = second.finish();
        assert_eq!(received.len(), 3000);
        let (second, _) = received.into_bytes().expect("read back");
        assert_eq!(&second[..1500], &[b'b'; 1500][..]);
        assert_eq!(&second[1500..], &[b'c'; 1500][..]);
        assert_eq!(budgets.body.available_permits(), 1);
        drop(first_reservation);
        assert_eq!(budgets.body.available_permits(), 4);
    }

    #[tokio::test]
    async fn renders_wait_for_room_and_large_ones_take_the_whole_budget() {
        let budgets = budgets(4, 8);
        let large = budgets.render_permit(1 << 30).await.expect("permit");
        assert_eq!(budgets.render.available_permits(), 0);
        drop(large);
        let small = budgets.render_permit(2048).await.expect("permit");
        assert_eq!(budgets.render.available_permits(), 6);
        drop(small);
    }
}
