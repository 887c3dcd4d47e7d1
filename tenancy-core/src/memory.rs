//! `MemoryBackend`: an in-process `StateBackend` with full compare-and-swap.
//!
//! It lives in core because it needs no I/O: tests, the testkit, lock and
//! registry tests, and embedders who want a throwaway store use it.
//! `memory://` opens one; it passes the whole state conformance suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::keys::StateKey;
use crate::state::{Capabilities, DeleteMode, ListEntry, Object, PutMode, StateBackend, Version};

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<StateKey, (Bytes, u64, chrono::DateTime<Utc>)>,
    next_version: u64,
}

/// An in-memory [`StateBackend`]. Versions are a counter per store, so a
/// deleted and re-created key never gets a version it had before. Cloning
/// shares the same store (`memory://` opens a fresh one).
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse_version(v: &Version) -> Option<u64> {
    v.0.parse().ok()
}

#[async_trait]
impl StateBackend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        Ok(self.lock().objects.get(key).map(|(b, v, _)| Object {
            bytes: b.clone(),
            version: Version(v.to_string()),
        }))
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        let mut inner = self.lock();
        let current = inner.objects.get(key).map(|(_, v, _)| *v);
        match (&mode, current) {
            (PutMode::Overwrite, _) => {}
            (PutMode::Create, None) => {}
            (PutMode::Create, Some(_)) => {
                return Err(Error::already_exists(format!("key {key}")));
            }
            (PutMode::Update(want), Some(have)) if parse_version(want) == Some(have) => {}
            (PutMode::Update(want), _) => {
                return Err(Error::precondition(format!(
                    "key {key} is no longer at version {want}"
                )));
            }
        }
        inner.next_version += 1;
        let v = inner.next_version;
        inner.objects.insert(key.clone(), (value, v, Utc::now()));
        Ok(Version(v.to_string()))
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        let mut inner = self.lock();
        if let DeleteMode::IfVersion(want) = &mode {
            let current = inner.objects.get(key).map(|(_, v, _)| *v);
            if current.is_none() || parse_version(want) != current {
                return Err(Error::precondition(format!(
                    "key {key} is no longer at version {want}"
                )));
            }
        }
        inner.objects.remove(key);
        Ok(())
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        let inner = self.lock();
        let entries: Vec<Result<ListEntry>> = match prefix {
            None => inner
                .objects
                .iter()
                .map(|(k, (b, _, t))| entry(k, b, t))
                .collect(),
            Some(p) => inner
                .objects
                .range(p.clone()..)
                .skip_while(|(k, _)| !k.is_under(p))
                .take_while(|(k, _)| k.as_str().starts_with(p.as_str()))
                .filter(|(k, _)| k.is_under(p))
                .map(|(k, (b, _, t))| entry(k, b, t))
                .collect(),
        };
        stream::iter(entries).boxed()
    }
}

fn entry(k: &StateKey, b: &Bytes, t: &chrono::DateTime<Utc>) -> Result<ListEntry> {
    Ok(ListEntry {
        key: k.clone(),
        size: b.len() as u64,
        last_modified: Some(*t),
    })
}
