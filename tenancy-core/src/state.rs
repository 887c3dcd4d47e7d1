//! The `StateBackend` trait: a small versioned key-value store with compare-and-swap.
//!
//! Every lock and registry write is built on [`PutMode::Create`] and
//! [`PutMode::Update`]; a backend that cannot do them says so in
//! [`Capabilities`] and refuses with [`Error::NotImplemented`], never fakes.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::StateKey;

/// An opaque object version (an ETag, a generation number, ...).
///
/// Only compare versions for equality; never parse or order them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version(pub String);

impl Version {
    /// The version as a string (e.g. for an HTTP `ETag`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write whatever is there.
    Overwrite,
    /// Write only if no object exists; else [`Error::AlreadyExists`].
    Create,
    /// Write only if the object's version is still this one; else [`Error::Precondition`]
    /// (also when the object is missing).
    Update(Version),
}

/// How a delete treats the existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteMode {
    /// Delete whatever is there; deleting a missing key is not an error.
    Any,
    /// Delete only if the version is still this one; else [`Error::Precondition`].
    IfVersion(Version),
}

/// What a backend can do. Suites and callers read this instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` is atomic.
    pub conditional_create: bool,
    /// `PutMode::Update` is atomic.
    pub conditional_update: bool,
    /// `DeleteMode::IfVersion` is atomic.
    pub conditional_delete: bool,
    /// `list` works.
    pub list: bool,
}

impl Capabilities {
    /// Everything supported.
    pub const ALL: Capabilities = Capabilities {
        conditional_create: true,
        conditional_update: true,
        conditional_delete: true,
        list: true,
    };

    /// True when locks and the registry can be built on this backend.
    pub fn supports_cas(&self) -> bool {
        self.conditional_create && self.conditional_update
    }
}

/// An object read from a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The content.
    pub bytes: Bytes,
    /// The version to pass to [`PutMode::Update`].
    pub version: Version,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The key, relative to the backend's root.
    pub key: StateKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, where the backend knows it.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A small versioned object store.
///
/// Keys are [`StateKey`]s, so they are already validated. `list(prefix)`
/// yields every key strictly below `prefix` (segment-wise: `a/b` lists
/// `a/b/c`, never `a/bc` or `a/b` itself), in no particular order, as a
/// stream so that it scales to any number of keys.
#[async_trait]
pub trait StateBackend: Send + Sync + Debug {
    /// A short name for errors and metrics: `memory`, `local`, `s3`, ...
    fn name(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Reads an object, or `None` if it does not exist.
    async fn get(&self, key: &StateKey) -> Result<Option<Object>>;

    /// Writes an object according to `mode` and returns its new version.
    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version>;

    /// Deletes an object according to `mode`.
    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()>;

    /// Streams the keys strictly below `prefix` (all keys for `None`).
    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>>;
}

macro_rules! forward_state_backend {
    ($ty:ty) => {
        #[async_trait]
        impl<T: StateBackend + ?Sized> StateBackend for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
                (**self).get(key).await
            }
            async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
                (**self).put(key, value, mode).await
            }
            async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
                (**self).delete(key, mode).await
            }
            fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
                (**self).list(prefix)
            }
        }
    };
}

forward_state_backend!(Arc<T>);
forward_state_backend!(Box<T>);
forward_state_backend!(&T);

/// Convenience methods for every [`StateBackend`].
#[async_trait]
pub trait StateBackendExt: StateBackend {
    /// All keys below `prefix`, sorted.
    async fn list_keys(&self, prefix: Option<&StateKey>) -> Result<Vec<StateKey>> {
        let mut keys: Vec<StateKey> = self.list(prefix).map_ok(|e| e.key).try_collect().await?;
        keys.sort();
        Ok(keys)
    }

    /// Reads and decodes a JSON object.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &StateKey,
    ) -> Result<Option<(T, Version)>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(obj) => {
                let v = serde_json::from_slice(&obj.bytes).map_err(|e| Error::Corrupt {
                    what: key.to_string(),
                    message: e.to_string(),
                })?;
                Ok(Some((v, obj.version)))
            }
        }
    }

    /// Encodes and writes a JSON object.
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &StateKey,
        value: &T,
        mode: PutMode,
    ) -> Result<Version> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::invalid(format!("cannot encode {key}: {e}")))?;
        self.put(key, Bytes::from(bytes), mode).await
    }

    /// True when the key exists.
    async fn exists(&self, key: &StateKey) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// Counts the keys below `prefix`.
    async fn count(&self, prefix: Option<&StateKey>) -> Result<u64> {
        let mut n = 0u64;
        let mut s = self.list(prefix);
        while let Some(e) = s.next().await {
            e?;
            n += 1;
        }
        Ok(n)
    }
}

impl<B: StateBackend + ?Sized> StateBackendExt for B {}
