//! Where the clients of one fill read its bytes: the temp file in the store while it can be
//! written, and a bounded window in memory once it cannot (a full disk).
//!
//! A full disk must not break downloads: the bytes already written stay readable from the
//! temp file (open file handles survive its removal), and what arrives afterwards is kept in
//! memory only until every client of the fill has read it. The fill waits for the slowest
//! client when the window is full, so memory stays bounded whatever the artifact's size.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use crate::body;

/// The most bytes a fill keeps in memory for clients that have not read them yet.
const MEMORY_WINDOW: u64 = 8 * 1024 * 1024;
/// The same for a relay (a read-role miss, never on disk): read-role clients are the untrusted
/// ones, and each relay they leave unread holds its window.
const RELAY_WINDOW: u64 = 1024 * 1024;

pub(crate) struct Spool {
    state: Mutex<State>,
    /// The most bytes kept in memory.
    window: u64,
    /// Woken when a reader moves on, so a fill waiting for room in the window looks again.
    advanced: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    file: Option<Arc<File>>,
    /// Bytes readable from `file`.
    on_disk: u64,
    /// The offset of the first byte in `memory`.
    memory_start: u64,
    memory: VecDeque<Bytes>,
    /// Each reader's position; dropped readers leave dead entries.
    readers: Vec<Weak<AtomicU64>>,
}

/// A reader's place in a spool; its position counts for the window while it lives.
pub(crate) struct Reader {
    spool: Arc<Spool>,
    position: Arc<AtomicU64>,
}

/// Every reader of a spool in memory has gone: nobody is left to serve.
#[derive(Debug)]
pub(crate) struct Abandoned;

impl Default for Spool {
    fn default() -> Spool {
        Spool {
            state: Mutex::default(),
            window: MEMORY_WINDOW,
            advanced: tokio::sync::Notify::new(),
        }
    }
}

impl Spool {
    /// A spool for a relay: in memory only, with the smaller window.
    pub(crate) fn relay() -> Spool {
        Spool {
            window: RELAY_WINDOW,
            ..Spool::default()
        }
    }

    /// A spool reading `size` bytes of `file`.
    pub(crate) fn of_file(file: Arc<File>, size: u64) -> Arc<Spool> {
        let spool = Spool::default();
        {
            let mut state = spool.lock();
            state.file = Some(file);
            state.on_disk = size;
        }
        Arc::new(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new reader from the first byte.
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        let position = Arc::new(AtomicU64::new(0));
        self.lock().readers.push(Arc::downgrade(&position));
        Reader {
            spool: Arc::clone(self),
            position,
        }
    }

    /// A new reader from the first byte, if that byte can still be read (a spool in memory
    /// drops what every reader has passed).
    pub(crate) fn reader_from_start(self: &Arc<Self>) -> Option<Reader> {
        let mut state = self.lock();
        if state.file.is_none() && state.memory_start > 0 {
            return None;
        }
        let position = Arc::new(AtomicU64::new(0));
        state.readers.push(Arc::downgrade(&position));
        Some(Reader {
            spool: Arc::clone(self),
            position,
        })
    }

    /// The temp file the fill writes.
    pub(crate) fn set_file(&self, file: Arc<File>) {
        self.lock().file = Some(file);
    }

    /// `written` bytes are now in the file.
    pub(crate) fn wrote(&self, written: u64) {
        let mut state = self.lock();
        state.on_disk = written;
        state.memory_start = written;
    }

    /// Whether every reader has gone.
    pub(crate) fn abandoned(&self) -> bool {
        self.lock().slowest().is_none()
    }

    /// Keeps `chunk` in memory for the readers, waiting for room in the window.
    pub(crate) async fn push(&self, chunk: Bytes) -> Result<(), Abandoned> {
        loop {
            let advanced = self.advanced.notified();
            {
                let mut state = self.lock();
                let slowest = state.slowest().ok_or(Abandoned)?;
                state.trim(slowest);
                if state.buffered() < self.window {
                    state.memory.push_back(chunk);
                    return Ok(());
                }
            }
            advanced.await;
        }
    }
}

impl State {
    fn slowest(&mut self) -> Option<u64> {
        self.readers.retain(|reader| reader.strong_count() > 0);
        self.readers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|position| position.load(Ordering::Relaxed))
            .min()
    }

    /// Drops the chunks every reader has passed.
    fn trim(&mut self, slowest: u64) {
        while let Some(front) = self.memory.front() {
            let end = self.memory_start + front.len() as u64;
            if end > slowest {
                break;
            }
            self.memory_start = end;
            self.memory.pop_front();
        }
    }

    fn buffered(&self) -> u64 {
        self.memory.iter().map(|chunk| chunk.len() as u64).sum()
    }

    /// Up to `want` bytes at `offset` from memory.
    fn read_memory(&self, offset: u64, want: u64) -> io::Result<Bytes> {
        let mut start = self.memory_start;
        if offset < start {
            return Err(io::Error::other("fill reader fell behind its window"));
        }
        for chunk in &self.memory {
            let end = start + chunk.len() as u64;
            if offset < end {
                let from = (offset - start) as usize;
                let to = from + (want.min(end - offset) as usize);
                return Ok(chunk.slice(from..to));
            }
            start = end;
        }
        Ok(Bytes::new())
    }
}

impl Reader {
    /// The reader's position.
    pub(crate) fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// Up to `want` bytes at the reader's position (empty if none are there yet), and moves
    /// past them.
    pub(crate) async fn read(&self, want: u64) -> io::Result<Bytes> {
        let offset = self.position();
        let from_file = {
            let state = self.spool.lock();
            match &state.file {
                Some(file) if offset < state.on_disk => {
                    Some((Arc::clone(file), want.min(state.on_disk - offset)))
                }
                _ => None,
            }
        };
        let bytes = match from_file {
            Some((file, want)) => body::read_at(file, offset, want).await?,
            None => self.spool.lock().read_memory(offset, want)?,
        };
        self.position
            .store(offset + bytes.len() as u64, Ordering::Relaxed);
        self.spool.advanced.notify_one();
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn readers_continue_from_the_file_into_memory() {
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(b"abc").unwrap();
        let spool = Arc::new(Spool::default());
        spool.set_file(Arc::new(temp));
        spool.wrote(3);
        let reader = spool.reader();
        spool.push(Bytes::from_static(b"defg")).await.unwrap();
        assert_eq!(&reader.read(10).await.unwrap()[..], b"abc");
        assert_eq!(&reader.read(2).await.unwrap()[..], b"de");
        assert_eq!(&reader.read(10).await.unwrap()[..], b"fg");
        assert!(reader.read(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_memory_spool_takes_new_readers_only_while_it_holds_the_first_byte() {
        let spool = Arc::new(Spool::relay());
        let first = spool.reader();
        spool.push(Bytes::from_static(b"abc")).await.unwrap();
        let early = spool.reader_from_start().expect("nothing dropped yet");
        assert_eq!(&first.read(10).await.unwrap()[..], b"abc");
        assert_eq!(&early.read(10).await.unwrap()[..], b"abc");
        // Both readers are past "abc": the next push drops it.
        spool.push(Bytes::from_static(b"def")).await.unwrap();
        assert!(spool.reader_from_start().is_none());
    }

    #[tokio::test]
    async fn the_window_waits_for_the_slowest_reader_and_nobody_left_abandons() {
        let spool = Arc::new(Spool::default());
        let reader = spool.reader();
        let chunk = Bytes::from(vec![0u8; MEMORY_WINDOW as usize]);
        spool.push(chunk.clone()).await.unwrap();
        let pushing = {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move { spool.push(Bytes::from_static(b"next")).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pushing.is_finished(), "the window is full");
        while reader.position() < MEMORY_WINDOW {
            reader.read(MEMORY_WINDOW).await.unwrap();
        }
        pushing.await.unwrap().unwrap();
        assert_eq!(&reader.read(10).await.unwrap()[..], b"next");
        drop(reader);
        assert!(spool.push(Bytes::from_static(b"x")).await.is_err());
    }
}
