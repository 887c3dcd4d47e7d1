//! `TenantScoped<B>`: confines any `StateBackend` to one tenant's state root
//! (`tenants/<id>/<version>`), applying the prefix in one place.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tenancy_core::{
    Capabilities, DeleteMode, ListEntry, Object, PutMode, Result, StateBackend, StateKey, Tenant,
    TenantId, Version,
};

/// A [`StateBackend`] that sees only one tenant's state.
///
/// Every key is joined below [`TenantScoped::prefix`] with
/// [`StateKey::join`] (so it cannot escape it: keys are validated and never
/// contain `..`), and listings are stripped of the prefix; entries that do
/// not lie below it are dropped. The scope forwards the inner backend's name
/// and capabilities.
///
/// ```
/// use tenancy_core::{PutMode, StateBackend, StateKey, TenantId};
/// use tenancy_state::{ObjectBackend, TenantScoped};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let shared = ObjectBackend::memory();
/// let acme = TenantScoped::new(shared.clone(), &TenantId::new("acme")?, "v1")?;
/// let key = StateKey::new("stacks/web/prod/state.json")?;
/// acme.put(&key, "{}".into(), PutMode::Create).await?;
/// let raw = StateKey::new("tenants/acme/v1/stacks/web/prod/state.json")?;
/// assert!(shared.get(&raw).await?.is_some());
/// # Ok::<_, tenancy_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TenantScoped<B: StateBackend> {
    inner: B,
    prefix: StateKey,
}

impl<B: StateBackend> TenantScoped<B> {
    /// Scopes `inner` to `tenants/<tenant>/<version>`; `version` must be one
    /// key segment (e.g. `v1`).
    pub fn new(inner: B, tenant: &TenantId, version: &str) -> Result<Self> {
        Ok(TenantScoped {
            inner,
            prefix: tenancy_core::layout::state_root(tenant, version)?,
        })
    }

    /// Scopes `inner` to the tenant's [`Tenant::state_root`].
    pub fn for_tenant(inner: B, tenant: &Tenant) -> Result<Self> {
        Ok(TenantScoped {
            inner,
            prefix: tenant.state_root()?,
        })
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

    fn scoped(&self, key: &StateKey) -> Result<StateKey> {
        self.prefix.join(key)
    }
}

#[async_trait]
impl<B: StateBackend> StateBackend for TenantScoped<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.inner.get(&self.scoped(key)?).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.inner.put(&self.scoped(key)?, value, mode).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.inner.delete(&self.scoped(key)?, mode).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        let full = match prefix {
            None => self.prefix.clone(),
            Some(p) => match self.scoped(p) {
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
