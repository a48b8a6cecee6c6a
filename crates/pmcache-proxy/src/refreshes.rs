//! Document refreshes under way: at most one per document, run on a task of its own and joined
//! by every request that needs that document meanwhile, so they all get the same answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::document::Document;
use crate::error::{Error, Result};

/// What every request joined to one refresh gets.
pub(crate) type Outcome = std::result::Result<Document, Arc<Error>>;

/// A refresh that any number of requests can wait for.
#[derive(Clone)]
pub(crate) struct Joinable {
    pub(crate) outcome: Shared<BoxFuture<'static, Outcome>>,
    /// When it started: the stale deadline counts from here, whoever joined later, so that
    /// every request waiting on one refresh gets the same answer.
    pub(crate) started: Instant,
}

/// The refreshes under way, by document key.
#[derive(Default)]
pub(crate) struct Refreshes {
    running: Mutex<HashMap<String, Joinable>>,
}

impl Refreshes {
    /// The refresh of `key` under way, or `refresh` started on its own task: it runs to the end
    /// whoever waits for it, so a client that hangs up (or a request that stops waiting and
    /// serves its stale copy) cannot cancel it half-way.
    pub(crate) fn join_or_start<F>(self: &Arc<Self>, key: &str, refresh: F) -> Joinable
    where
        F: Future<Output = Result<Document>> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(joinable) = running.get(key) {
            return joinable.clone();
        }
        let leave = Leave {
            refreshes: Arc::clone(self),
            key: key.to_owned(),
        };
        // The task's own removal waits for this lock, so it cannot run before the insert below.
        let task = tokio::spawn(async move {
            let outcome = refresh.await.map_err(Arc::new);
            // Leave before anyone sees the outcome: a request that comes after a failure
            // starts a new refresh instead of joining the failed one.
            drop(leave);
            outcome
        });
        let document = key.to_owned();
        let outcome = async move {
            task.await.unwrap_or_else(|error| {
                Err(Arc::new(Error::failed(
                    format!("the refresh of {document} failed"),
                    error,
                )))
            })
        }
        .boxed()
        .shared();
        let joinable = Joinable {
            outcome,
            started: Instant::now(),
        };
        running.insert(key.to_owned(), joinable.clone());
        joinable
    }

    fn finished(&self, key: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(key);
    }
}

/// Removes a refresh from the map when its task ends, however it ends: a refresh that panicked
/// must not stay joinable, or its document would fail for good.
struct Leave {
    refreshes: Arc<Refreshes>,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.refreshes.finished(&self.key);
    }
}
