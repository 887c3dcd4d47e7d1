//! `HookBackend<B>`: fault injection around any [`StateBackend`] for tests.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::keys::StateKey;
use crate::state::{Capabilities, DeleteMode, ListEntry, Object, PutMode, StateBackend, Version};

/// The operation a hook is about to let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `get(key)`.
    Get(StateKey),
    /// `put(key, _, mode)`.
    Put(StateKey, PutMode),
    /// `delete(key, mode)`.
    Delete(StateKey, DeleteMode),
    /// `list(prefix)`.
    List(Option<StateKey>),
}

impl Op {
    /// The key (or list prefix) of the operation.
    pub fn key(&self) -> Option<&StateKey> {
        match self {
            Op::Get(k) | Op::Put(k, _) | Op::Delete(k, _) => Some(k),
            Op::List(p) => p.as_ref(),
        }
    }

    /// True for a put or a delete.
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Put(..) | Op::Delete(..))
    }
}

/// A hook: runs before an operation; an `Err` fails the operation with it.
pub type HookFn = Arc<dyn Fn(Op) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A [`StateBackend`] that forwards to `B` with, as set:
///
/// - a **capability override** ([`HookBackend::with_capabilities`]): a mode
///   the override rules out is refused with `NotImplemented` before `B` is
///   called, as a backend without it would (never faked);
/// - a **hook** ([`HookBackend::set_hook`]) awaited before each operation:
///   it may fail the operation (a crash between two writes) or do other
///   work first (a concurrent writer landing at exactly that moment);
/// - a **delay** ([`HookBackend::with_delay`]) before each operation.
///
/// ```
/// use std::sync::Arc;
/// use futures::FutureExt;
/// use tenancy_core::testkit::{HookBackend, Op};
/// use tenancy_core::{Error, MemoryBackend, PutMode, StateBackend, StateKey};
/// # futures::executor::block_on(async {
/// let b = HookBackend::new(MemoryBackend::new());
/// b.set_hook(|op| async move {
///     match op {
///         Op::Put(k, _) if k.as_str().ends_with("state.json") => Err(Error::backend("test", "crash")),
///         _ => Ok(()),
///     }
/// }.boxed());
/// let k = StateKey::new("a/state.json")?;
/// assert!(b.put(&k, "x".into(), PutMode::Overwrite).await.is_err());
/// b.clear_hook();
/// b.put(&k, "x".into(), PutMode::Overwrite).await?;
/// # Ok::<_, Error>(()) }).unwrap();
/// ```
pub struct HookBackend<B> {
    inner: B,
    capabilities: Option<Capabilities>,
    delay: Option<Duration>,
    hook: RwLock<Option<HookFn>>,
}

impl<B: fmt::Debug> fmt::Debug for HookBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookBackend")
            .field("inner", &self.inner)
            .field("capabilities", &self.capabilities)
            .field("delay", &self.delay)
            .field(
                "hooked",
                &self.hook.read().map(|h| h.is_some()).unwrap_or(false),
            )
            .finish()
    }
}

impl<B: StateBackend> HookBackend<B> {
    /// Forwards everything to `inner` until told otherwise.
    pub fn new(inner: B) -> Self {
        HookBackend {
            inner,
            capabilities: None,
            delay: None,
            hook: RwLock::new(None),
        }
    }

    /// Reports `caps` instead of the inner backend's capabilities, and
    /// refuses the modes they rule out.
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.capabilities = Some(caps);
        self
    }

    /// Waits `d` before every operation.
    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Runs `hook` before every operation from now on (replacing any other).
    pub fn set_hook<F>(&self, hook: F)
    where
        F: Fn(Op) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        *self.hook.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
    }

    /// Removes the hook.
    pub fn clear_hook(&self) {
        *self.hook.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The wrapped backend (operations on it bypass the hook).
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn current(&self) -> Option<HookFn> {
        self.hook.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn before(&self, op: Op) -> Result<()> {
        let caps = self.capabilities();
        let refused = match &op {
            Op::Put(_, PutMode::Create) => !caps.conditional_create,
            Op::Put(_, PutMode::Update(_)) => !caps.conditional_update,
            Op::Delete(_, DeleteMode::IfVersion(_)) => !caps.conditional_delete,
            Op::List(_) => !caps.list,
            _ => false,
        };
        if refused {
            return Err(Error::not_implemented(format!(
                "{op:?} on the {} backend",
                self.name()
            )));
        }
        if let Some(d) = self.delay {
            futures_timer::Delay::new(d).await;
        }
        match self.current() {
            Some(hook) => hook(op).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<B: StateBackend> StateBackend for HookBackend<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
            .unwrap_or_else(|| self.inner.capabilities())
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.before(Op::Get(key.clone())).await?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.before(Op::Put(key.clone(), mode.clone())).await?;
        self.inner.put(key, value, mode).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.before(Op::Delete(key.clone(), mode.clone())).await?;
        self.inner.delete(key, mode).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        let prefix = prefix.cloned();
        stream::once(async move {
            match self.before(Op::List(prefix.clone())).await {
                Ok(()) => self.inner.list(prefix.as_ref()),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}
