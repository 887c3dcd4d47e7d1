//! `Prefixed<B>`: any [`StateBackend`] seen below a root prefix, like
//! object_store's `PrefixStore`. The one place a prefix is applied to keys
//! and stripped from listings; [`TenantScoped`](crate::TenantScoped) is
//! built on it.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tenancy_core::{
    Capabilities, DeleteMode, ListEntry, Object, PutMode, Result, StateBackend, StateKey, Version,
};

/// A [`StateBackend`] that stores every key below `prefix` in `inner`.
///
/// Keys are joined with [`StateKey::join`], so they cannot climb out (keys
/// are validated and never contain `..`); listings are stripped of the
/// prefix, and entries that do not lie below it are dropped. The name and
/// capabilities are the inner backend's.
///
/// ```
/// use tenancy_core::{MemoryBackend, PutMode, StateBackend, StateKey};
/// use tenancy_state::Prefixed;
/// # futures::executor::block_on(async {
/// let shared = MemoryBackend::new();
/// let team = Prefixed::new(shared.clone(), StateKey::new("teams/blue")?);
/// team.put(&StateKey::new("a")?, "1".into(), PutMode::Create).await?;
/// assert!(shared.get(&StateKey::new("teams/blue/a")?).await?.is_some());
/// # Ok::<_, tenancy_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Prefixed<B> {
    inner: B,
    prefix: StateKey,
}

impl<B: StateBackend> Prefixed<B> {
    /// `inner`, seen below `prefix`.
    pub fn new(inner: B, prefix: StateKey) -> Self {
        Prefixed { inner, prefix }
    }

    /// The prefix every key is stored under.
    pub fn prefix(&self) -> &StateKey {
        &self.prefix
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> B {
        self.inner
    }

    fn full(&self, key: &StateKey) -> Result<StateKey> {
        self.prefix.join(key)
    }
}

#[async_trait]
impl<B: StateBackend> StateBackend for Prefixed<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.inner.get(&self.full(key)?).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.inner.put(&self.full(key)?, value, mode).await
    }

    async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
        let full = keys
            .iter()
            .map(|k| self.full(k))
            .collect::<Result<Vec<_>>>()?;
        self.inner.get_many(&full).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.inner.delete(&self.full(key)?, mode).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        let full = match prefix {
            None => self.prefix.clone(),
            Some(p) => match self.full(p) {
                Ok(k) => k,
                Err(e) => return stream::once(async move { Err(e) }).boxed(),
            },
        };
        let root = &self.prefix;
        self.inner
            .list(Some(&full))
            .filter_map(move |item| {
                let out = match item {
                    Ok(mut e) => e.key.strip_prefix(root).map(|key| {
                        e.key = key;
                        Ok(e)
                    }),
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(out)
            })
            .boxed()
    }
}
