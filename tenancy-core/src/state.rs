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

use crate::backoff::Backoff;
use crate::clock::Clock;
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

    /// Reads several objects, answering in the order of `keys` (`None`
    /// where one does not exist). Each object is read as [`get`] would read
    /// it; the batch as a whole is not a snapshot. The default reads them
    /// concurrently, [`GET_MANY_CONCURRENCY`] at a time; a backend that can
    /// answer a batch in one round trip (PostgreSQL) overrides it.
    ///
    /// [`get`]: StateBackend::get
    async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
        futures::stream::iter(0..keys.len())
            .map(|i| self.get(&keys[i]))
            .buffered(GET_MANY_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// How many reads the default [`StateBackend::get_many`] has in flight.
pub const GET_MANY_CONCURRENCY: usize = 64;

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
            async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
                (**self).get_many(keys).await
            }
        }
    };
}

forward_state_backend!(Arc<T>);
forward_state_backend!(Box<T>);
forward_state_backend!(&T);

/// How many attempts [`StateBackendExt::update_with`] makes by default.
pub const MAX_CAS_ATTEMPTS: u32 = 200;

/// What one attempt of [`StateBackendExt::update_with`] decided, having seen
/// the current object.
#[derive(Debug)]
pub enum Step<T> {
    /// Write these bytes (`Create` when the object was absent, `Update` of
    /// the version just read otherwise), then return the value.
    Write(Bytes, T),
    /// Write nothing and return the value.
    Keep(T),
}

/// How [`StateBackendExt::update_with`] retries a lost compare-and-swap:
/// it sleeps through `clock` on `backoff` between at most `attempts`
/// attempts, then gives up with [`Error::Precondition`] naming `what`.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// Sleeps between attempts (a `ManualClock` in tests moves instead).
    pub clock: &'a dyn Clock,
    /// The schedule of those sleeps.
    pub backoff: Backoff,
    /// How many attempts in all.
    pub attempts: u32,
    /// Names the object in the final error, e.g. `tenant acme`.
    pub what: &'a str,
}

impl<'a> Retry<'a> {
    /// [`MAX_CAS_ATTEMPTS`] attempts on [`Backoff::cas`], sleeping through `clock`.
    pub fn new(clock: &'a dyn Clock, what: &'a str) -> Self {
        Retry {
            clock,
            backoff: Backoff::cas(),
            attempts: MAX_CAS_ATTEMPTS,
            what,
        }
    }

    /// The same retry with another number of attempts (at least 1).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    fn exhausted(&self) -> Error {
        Error::precondition(format!(
            "{} kept changing under concurrent writers ({} attempts); try again",
            self.what, self.attempts
        ))
    }
}

/// The outcome of [`StateBackendExt::update_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated<T> {
    /// What the winning attempt returned.
    pub value: T,
    /// The object's version now: the one written, or the one read when the
    /// attempt kept it (`None` when it kept an absent object).
    pub version: Option<Version>,
    /// Whether the attempt wrote.
    pub wrote: bool,
}

/// Convenience methods for every [`StateBackend`].
#[async_trait]
pub trait StateBackendExt: StateBackend {
    /// Deletes `key` if it is still at `version` where the backend can
    /// delete conditionally ([`DeleteMode::IfVersion`]), else whatever it
    /// holds ([`DeleteMode::Any`]: S3 has no conditional delete). Errors as
    /// [`StateBackend::delete`] (a moved object is [`Error::Precondition`]).
    async fn delete_if_unchanged(&self, key: &StateKey, version: Version) -> Result<()> {
        let mode = if self.capabilities().conditional_delete {
            DeleteMode::IfVersion(version)
        } else {
            DeleteMode::Any
        };
        self.delete(key, mode).await
    }

    /// Read-modify-write of one object with compare-and-swap: the one retry
    /// loop behind every registry and lock-store write.
    ///
    /// Each attempt reads `key`, passes the object (or `None`) to `f`, and
    /// does what `f` decided: a [`Step::Write`] goes out as
    /// [`PutMode::Create`] when the object was absent and as
    /// [`PutMode::Update`] of the version read otherwise. A lost race (the
    /// put is refused as [`Error::AlreadyExists`] or [`Error::Precondition`])
    /// sleeps on the retry's backoff and tries again with a fresh read;
    /// after `retry.attempts` attempts it gives up with a `Precondition`
    /// that says the object kept changing. Errors from `f` and every other
    /// backend error are returned at once. Needs a backend with
    /// compare-and-swap ([`Capabilities::supports_cas`]).
    ///
    /// ```
    /// use tenancy_core::{MemoryBackend, Retry, StateBackend, StateBackendExt, StateKey, Step, SystemClock};
    /// # futures::executor::block_on(async {
    /// let store = MemoryBackend::new();
    /// let key = StateKey::new("counter")?;
    /// for _ in 0..3 {
    ///     store
    ///         .update_with(&key, Retry::new(&SystemClock, "the counter"), |current| {
    ///             let n = current.map_or(0, |o| o.bytes.len());
    ///             Ok(Step::Write(vec![b'x'; n + 1].into(), n + 1))
    ///         })
    ///         .await?;
    /// }
    /// assert_eq!(store.get(&key).await?.unwrap().bytes.len(), 3);
    /// # Ok::<_, tenancy_core::Error>(()) }).unwrap();
    /// ```
    async fn update_with<T, F>(
        &self,
        key: &StateKey,
        retry: Retry<'_>,
        mut f: F,
    ) -> Result<Updated<T>>
    where
        T: Send,
        F: FnMut(Option<&Object>) -> Result<Step<T>> + Send,
    {
        update_attempts(self, key, retry, &mut f).await
    }

    /// [`update_with`](Self::update_with), starting from an object the
    /// caller believes current (the one it last wrote, say) instead of
    /// reading it: the first attempt passes `known` to `f` and writes
    /// [`PutMode::Update`] of `known`'s version. A stale `known` is refused
    /// by that write; then, and also when `f` keeps `known` or fails on it
    /// (a stale object can justify neither), it goes on exactly as
    /// `update_with` from a fresh read, without sleeping first and without
    /// counting the first attempt. So whatever it returns was decided on
    /// the object as it was when written or read, never on a stale one; a
    /// current `known` saves the read.
    async fn update_from<T, F>(
        &self,
        key: &StateKey,
        known: Option<Object>,
        retry: Retry<'_>,
        mut f: F,
    ) -> Result<Updated<T>>
    where
        T: Send,
        F: FnMut(Option<&Object>) -> Result<Step<T>> + Send,
    {
        if let Some(known) = known {
            if let Ok(Step::Write(bytes, value)) = f(Some(&known)) {
                match self.put(key, bytes, PutMode::Update(known.version)).await {
                    Ok(version) => {
                        return Ok(Updated {
                            value,
                            version: Some(version),
                            wrote: true,
                        })
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        update_attempts(self, key, retry, &mut f).await
    }

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

/// The attempts of [`StateBackendExt::update_with`]: read, decide, write
/// conditionally, back off and retry on a lost race.
async fn update_attempts<B, T, F>(
    b: &B,
    key: &StateKey,
    retry: Retry<'_>,
    f: &mut F,
) -> Result<Updated<T>>
where
    B: StateBackend + ?Sized,
    T: Send,
    F: FnMut(Option<&Object>) -> Result<Step<T>> + Send,
{
    for attempt in 0..retry.attempts.max(1) {
        let current = b.get(key).await?;
        let mode = match &current {
            None => PutMode::Create,
            Some(o) => PutMode::Update(o.version.clone()),
        };
        match f(current.as_ref())? {
            Step::Keep(value) => {
                return Ok(Updated {
                    value,
                    version: current.map(|o| o.version),
                    wrote: false,
                })
            }
            Step::Write(bytes, value) => match b.put(key, bytes, mode).await {
                Ok(version) => {
                    return Ok(Updated {
                        value,
                        version: Some(version),
                        wrote: true,
                    })
                }
                Err(e) if e.is_conflict() => {
                    if attempt + 1 < retry.attempts {
                        retry.clock.sleep(retry.backoff.next_delay(attempt)).await;
                    }
                }
                Err(e) => return Err(e),
            },
        }
    }
    Err(retry.exhausted())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{MemoryBackend, SystemClock};

    fn key() -> StateKey {
        StateKey::new("counter").unwrap()
    }

    /// Appends `x` to whatever `f` is shown, remembering each object shown.
    fn append(
        seen: &mut Vec<Bytes>,
    ) -> impl FnMut(Option<&Object>) -> Result<Step<()>> + Send + '_ {
        move |current| {
            let mut b = current.map_or_else(Vec::new, |o| o.bytes.to_vec());
            seen.push(Bytes::from(b.clone()));
            b.push(b'x');
            Ok(Step::Write(b.into(), ()))
        }
    }

    /// `update_from(known)` with [`append`]: its outcome and the objects
    /// it was shown.
    async fn append_from(store: &MemoryBackend, known: Object) -> (Updated<()>, Vec<Bytes>) {
        let mut seen = Vec::new();
        let out = store
            .update_from(
                &key(),
                Some(known),
                Retry::new(&SystemClock, "it"),
                append(&mut seen),
            )
            .await
            .unwrap();
        (out, seen)
    }

    #[tokio::test]
    async fn update_from_a_current_object_does_not_read_it() {
        let store = MemoryBackend::new();
        let v = store
            .put(&key(), Bytes::from_static(b"a"), PutMode::Create)
            .await
            .unwrap();
        // Bytes the store does not hold, at the version it does: had the
        // update read the object, it would have appended to "a".
        let known = Object {
            bytes: Bytes::from_static(b"known"),
            version: v,
        };
        let (out, seen) = append_from(&store, known).await;
        assert!(out.wrote);
        assert_eq!(seen, vec![Bytes::from_static(b"known")]);
        assert_eq!(store.get(&key()).await.unwrap().unwrap().bytes, "knownx");
    }

    /// A store whose object went from "a" to `now`, and "a" as it was.
    async fn moved_on(now: &'static [u8]) -> (MemoryBackend, Object) {
        let store = MemoryBackend::new();
        let old = store
            .put(&key(), Bytes::from_static(b"a"), PutMode::Create)
            .await
            .unwrap();
        store
            .put(
                &key(),
                Bytes::from_static(now),
                PutMode::Update(old.clone()),
            )
            .await
            .unwrap();
        let stale = Object {
            bytes: Bytes::from_static(b"a"),
            version: old,
        };
        (store, stale)
    }

    #[tokio::test]
    async fn update_from_a_stale_object_decides_again_on_a_fresh_read() {
        let (store, stale) = moved_on(b"ab").await;
        let (_, seen) = append_from(&store, stale).await;
        assert_eq!(
            seen,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"ab")]
        );
        assert_eq!(store.get(&key()).await.unwrap().unwrap().bytes, "abx");
    }

    #[tokio::test]
    async fn update_from_never_returns_a_decision_made_on_a_stale_object() {
        let (store, stale) = moved_on(b"ok").await;
        // Refuses the stale object, keeps the current one: neither the
        // refusal nor a keep decided on the stale object may come back.
        for keep in [false, true] {
            let out = store
                .update_from(
                    &key(),
                    Some(stale.clone()),
                    Retry::new(&SystemClock, "it"),
                    |current| match current.map(|o| o.bytes.clone()) {
                        Some(b) if b == "ok" => Ok(Step::Keep("fresh")),
                        _ if keep => Ok(Step::Keep("stale")),
                        _ => Err(Error::precondition("decided on the stale object")),
                    },
                )
                .await
                .unwrap();
            assert_eq!(out.value, "fresh");
            assert!(!out.wrote);
        }
    }
}
