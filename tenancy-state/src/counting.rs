//! `CountingBackend<B>`: counts the calls made to a backend, per operation,
//! for benches and tests that check how many round trips an operation costs.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tenancy_core::{
    Capabilities, DeleteMode, ListEntry, Object, PutMode, Result, StateBackend, StateKey, Version,
};

/// How many calls of each kind a [`CountingBackend`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `get` calls.
    pub get: u64,
    /// `put` calls (any mode).
    pub put: u64,
    /// `delete` calls (any mode).
    pub delete: u64,
    /// `list` calls (one per stream, however many entries it yields).
    pub list: u64,
    /// `get_many` calls (one per batch, however many keys it reads).
    pub get_many: u64,
}

impl CallCounts {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.get + self.put + self.delete + self.list + self.get_many
    }
}

/// Wraps a backend and counts the calls made to it. Counting is a relaxed
/// atomic increment per call; everything else is forwarded unchanged.
#[derive(Debug, Default)]
pub struct CountingBackend<B> {
    inner: B,
    get: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
    get_many: AtomicU64,
}

impl<B> CountingBackend<B> {
    /// Wraps `inner` with all counters at zero.
    pub fn new(inner: B) -> Self {
        CountingBackend {
            inner,
            get: AtomicU64::new(0),
            put: AtomicU64::new(0),
            delete: AtomicU64::new(0),
            list: AtomicU64::new(0),
            get_many: AtomicU64::new(0),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            get: self.get.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            get_many: self.get_many.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for c in [
            &self.get,
            &self.put,
            &self.delete,
            &self.list,
            &self.get_many,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Returns the counts and resets them.
    pub fn take(&self) -> CallCounts {
        CallCounts {
            get: self.get.swap(0, Ordering::Relaxed),
            put: self.put.swap(0, Ordering::Relaxed),
            delete: self.delete.swap(0, Ordering::Relaxed),
            list: self.list.swap(0, Ordering::Relaxed),
            get_many: self.get_many.swap(0, Ordering::Relaxed),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

#[async_trait]
impl<B: StateBackend> StateBackend for CountingBackend<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.get.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.put.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, value, mode).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.delete.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key, mode).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        self.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
        self.get_many.fetch_add(1, Ordering::Relaxed);
        self.inner.get_many(keys).await
    }
}
