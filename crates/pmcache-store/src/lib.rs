//! Content-addressed blob store.
