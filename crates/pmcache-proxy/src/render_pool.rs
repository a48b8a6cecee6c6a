//! The threads that render upstream documents: one for large documents, and as many for the
//! others as there are cores beyond the first.
//!
//! Renders are CPU-bound and allocate several times their document's size. On tokio's
//! blocking pool they would run on whichever of its many threads is free, and glibc's malloc
//! gives busy threads arenas of their own and keeps each arena's high-water mark: 200 cold
//! documents at once peaked at 2.7 times the memory they needed (529 MiB against 192 MiB with a
//! single arena). A few long-lived threads keep those allocations in a few arenas, and sending
//! every large document to the same one keeps a multi-megabyte packument's high-water mark in
//! one arena rather than one per thread (two render threads for all sizes: 171-195 MiB for
//! that burst; one for all: 140 MiB at half the throughput).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Documents from this size on (their body, as received) render on the large-document thread.
const LARGE: u64 = 1 << 20;

/// The render threads: one queue for large documents, one for the rest.
pub(crate) struct RenderPools {
    large: RenderPool,
    small: RenderPool,
}

impl RenderPools {
    /// Starts the threads; they end when the pools are dropped.
    pub(crate) fn start() -> Result<RenderPools> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(RenderPools {
            large: RenderPool::start("pmcache-render-large", 1)?,
            small: RenderPool::start("pmcache-render", cores.saturating_sub(1).max(1))?,
        })
    }

    /// The pool for a document whose body is `size` bytes.
    pub(crate) fn for_size(&self, size: u64) -> &RenderPool {
        if size >= LARGE {
            &self.large
        } else {
            &self.small
        }
    }
}

/// A fixed set of render threads fed from one queue.
pub(crate) struct RenderPool {
    jobs: mpsc::Sender<Job>,
}

impl RenderPool {
    /// Starts `threads` threads named `name-N`; they end when the pool is dropped.
    fn start(name: &str, threads: usize) -> Result<RenderPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || work(&queue))
                .map_err(|e| Error::failed("cannot start a render thread", e))?;
        }
        Ok(RenderPool { jobs })
    }

    /// Runs `render` on a render thread and waits for its result; a panic in it is an internal
    /// error, not a lost thread.
    pub(crate) async fn run<T, F>(&self, render: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(render))
                .unwrap_or_else(|_| Err(Error::Internal("a render panicked".to_owned())));
            let _ = answer.send(outcome);
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("the render threads are gone".to_owned()))?;
        answered
            .await
            .map_err(|_| Error::Internal("a render thread dropped its job".to_owned()))?
    }
}

fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_run_and_panics_are_errors() {
        let pool = RenderPool::start("test-render", 1).expect("threads");
        assert_eq!(pool.run(|| Ok(2 + 2)).await.expect("runs"), 4);
        let panicked = pool
            .run(|| -> Result<()> { panic!("a renderer bug") })
            .await
            .expect_err("a panic is an error");
        assert!(panicked.to_string().contains("panicked"), "{panicked}");
        assert_eq!(
            pool.run(|| Ok("still serving")).await.expect("runs"),
            "still serving"
        );
    }
}

#[cfg(test)]
mod routing {
    use super::*;

    #[test]
    fn large_documents_go_to_their_own_thread() {
        let pools = RenderPools::start().expect("threads");
        assert!(std::ptr::eq(pools.for_size(LARGE), &pools.large));
        assert!(std::ptr::eq(pools.for_size(LARGE - 1), &pools.small));
    }
}
