//! `TenantScoped<B>`: confines any `StateBackend` to one tenant's state root
//! (`tenants/<id>/<version>`, from core's `layout`), on [`Prefixed`].

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tenancy_core::{
    layout, Capabilities, DeleteMode, ListEntry, Object, PutMode, Result, StateBackend, StateKey,
    Tenant, TenantId, Version,
};

use crate::Prefixed;

/// A [`StateBackend`] that sees only one tenant's state: a [`Prefixed`]
/// whose prefix is the tenant's state root, so a key cannot escape it and
/// listings are stripped of it.
///
/// ```
/// use tenancy_core::{MemoryBackend, PutMode, StateBackend, StateKey, TenantId};
/// use tenancy_state::TenantScoped;
/// # futures::executor::block_on(async {
/// let shared = MemoryBackend::new();
/// let acme = TenantScoped::new(shared.clone(), &TenantId::new("acme")?, "v1")?;
/// let key = StateKey::new("stacks/web/prod/state.json")?;
/// acme.put(&key, "{}".into(), PutMode::Create).await?;
/// let raw = StateKey::new("tenants/acme/v1/stacks/web/prod/state.json")?;
/// assert!(shared.get(&raw).await?.is_some());
/// # Ok::<_, tenancy_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TenantScoped<B>(Prefixed<B>);

impl<B: StateBackend> TenantScoped<B> {
    /// Scopes `inner` to `tenants/<tenant>/<version>`; `version` must be one
    /// key segment (e.g. `v1`).
    pub fn new(inner: B, tenant: &TenantId, version: &str) -> Result<Self> {
        Ok(TenantScoped(Prefixed::new(
            inner,
            layout::state_root(tenant, version)?,
        )))
    }

    /// Scopes `inner` to the tenant's [`Tenant::state_root`].
    pub fn for_tenant(inner: B, tenant: &Tenant) -> Result<Self> {
        Ok(TenantScoped(Prefixed::new(inner, tenant.state_root()?)))
    }

    /// The prefix every key is stored under.
    pub fn prefix(&self) -> &StateKey {
        self.0.prefix()
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        self.0.inner()
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> B {
        self.0.into_inner()
    }
}

#[async_trait]
impl<B: StateBackend> StateBackend for TenantScoped<B> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.0.get(key).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.0.put(key, value, mode).await
    }

    async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
        self.0.get_many(keys).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.0.delete(key, mode).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        self.0.list(prefix)
    }
}
