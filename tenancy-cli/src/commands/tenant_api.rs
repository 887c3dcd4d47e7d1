//! What tenant commands do, on a store or through a server: [`TenantApi`].
//!
//! [`StoreTenant`] works on the store the CLI opened (the tenant's
//! `TenantScoped` view, `StackQuota`, the store lock manager), after the
//! session was checked against the registry. [`ServerTenant`] sends each
//! operation as one request to a tenancy-server with the session token;
//! the server checks the session, scopes the keys and counts the quotas.
//! Handlers print the same output and exit codes for both.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tenancy_core::apikey::require_role;
use tenancy_core::{
    ApiKey, Caller, CreatedApiKey, Error, KeyId, Limits, LockId, LockInfo, LockKey, LockManager,
    LockRequest, NewApiKey, Result, Role, RotatedApiKey, StateBackend, StateKey, Tenant, TenantId,
    TenantStatus, Usage,
};
use tenancy_lock::{holder_fence, LimitedLocks, TenantLocks};
use tenancy_server::client::{StackClient, TenantClient};
use tenancy_state::stack::{
    Damaged, Expected, History, HistoryEntry, ListedStack, SaveOptions, StackStore, StateDocument,
};
use tenancy_state::stack_quota::StackQuota;
use tenancy_state::TenantScoped;

use super::Services;

/// A save or rollback that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// The new serial.
    pub serial: u64,
    /// When it was written.
    pub saved_at: DateTime<Utc>,
}

/// One stack environment in a listing (the store's shape, in both modes).
pub(crate) type StackEnvRow = ListedStack;

/// The tenant's stack environments and its stack limit.
#[derive(Debug, Clone)]
pub(crate) struct StackEnvs {
    /// Every stack environment, sorted.
    pub rows: Vec<StackEnvRow>,
    /// `max_stacks` in force.
    pub max_stacks: u64,
}

/// The operations behind `state`, `lock` and `tenant details|usage|stacks`.
#[async_trait]
pub(crate) trait TenantApi: Send + Sync {
    /// The tenant.
    fn id(&self) -> &TenantId;
    /// The tenant's record.
    async fn profile(&self) -> Result<Tenant>;
    /// Usage counters, the limits in force and the tenant's status.
    async fn usage(&self) -> Result<(Usage, Limits, TenantStatus)>;
    /// Saves a new version of `stack`/`env` on top of the latest, under
    /// the stack's lock when `lock_id` holds it.
    async fn save(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        lock_id: Option<LockId>,
    ) -> Result<Written>;
    /// The current document (`None` when there is none) or version `serial`.
    async fn document(&self, stack: &str, env: &str, serial: Option<u64>) -> Result<Option<Bytes>>;
    /// Every stack environment with its current version.
    async fn stack_envs(&self) -> Result<StackEnvs>;
    /// The versions of `stack`/`env` and what cannot be read.
    async fn history(&self, stack: &str, env: &str) -> Result<History>;
    /// Makes version `to` current again, as a new version.
    async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        lock_id: Option<LockId>,
    ) -> Result<Written>;
    /// Deletes `stack`/`env` (a tombstone version) and gives its stack
    /// back to `max_stacks` when it was the stack's last environment.
    async fn delete(&self, stack: &str, env: &str, lock_id: Option<LockId>) -> Result<Written>;
    /// The tenant's locks (keys relative to the tenant).
    fn locks(&self) -> Arc<dyn LockManager>;
    /// The tenant's named API keys (owner role).
    async fn keys(&self) -> Result<Vec<ApiKey>>;
    /// Creates a named key (owner role).
    async fn create_key(&self, new: NewApiKey) -> Result<CreatedApiKey>;
    /// Revokes a key (owner role).
    async fn revoke_key(&self, id: &KeyId) -> Result<ApiKey>;
    /// Rotates a key; the old one works for `grace` (owner role).
    async fn rotate_key(&self, id: &KeyId, grace: std::time::Duration) -> Result<RotatedApiKey>;
    /// Frees `key` whatever its lease, given its holder's lock id, and
    /// records it in the tenant's audit log (on a store here; through a
    /// server, the server does).
    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.locks().force_unlock(key, lock_id).await
    }
}

/// A tenant on the store the CLI opened.
#[derive(Debug)]
pub(crate) struct StoreTenant {
    /// The store, its registry acting as the tenant (quota refusals name it).
    services: Services,
    /// The tenant's changes outside the registry (rollback, delete) are
    /// recorded through this.
    audit: super::audit::AuditedRegistry,
    tenant: Tenant,
    /// The named key the command runs as (`None`: the primary secret).
    key: Option<ApiKey>,
    stacks: StackStore<TenantScoped<Arc<dyn StateBackend>>>,
    locks: Arc<dyn LockManager>,
}

impl StoreTenant {
    /// `caller` (its session or credential already checked) on `services`'
    /// store. The caller's role is applied here, as the server's role guard
    /// applies it to its routes: a viewer's lock manager refuses writes.
    pub(crate) fn new(services: &Services, caller: Caller) -> anyhow::Result<Self> {
        let Caller { tenant, key } = caller;
        let scoped = TenantScoped::for_tenant(services.backend.clone(), &tenant)
            .with_context(|| format!("scoping the backend to tenant {}", tenant.id))?;
        let mut locks: Arc<dyn LockManager> =
            Arc::new(TenantLocks::new(services.locks.clone(), tenant.id.clone()));
        if let Some(k) = key.as_ref().filter(|k| !k.role.allows(Role::Operator)) {
            locks = Arc::new(ReadOnlyLocks {
                inner: locks,
                key: k.clone(),
            });
        }
        let actor = match &key {
            Some(k) => tenancy_core::audit::Actor::key(k.id.as_str(), &k.name),
            None => tenancy_core::audit::Actor::tenant(&tenant.id),
        };
        let mut services = services.clone();
        services.registry = services.acting_as(actor.clone());
        Ok(StoreTenant {
            audit: services.audit_as(actor),
            services,
            tenant,
            key,
            stacks: StackStore::new(scoped),
            locks,
        })
    }

    /// `Forbidden` naming the role needed when the caller's is weaker.
    fn require(&self, needed: Role) -> Result<()> {
        let held = self.key.as_ref().map_or(Role::Owner, |k| k.role);
        require_role(held, self.key.as_ref(), needed)
    }

    /// The fencing token of the stack's lock that `lock_id` holds; refused
    /// while someone else holds it (the server's rule for its stack routes).
    async fn fence(&self, stack: &str, env: &str, lock_id: Option<LockId>) -> Result<Option<u64>> {
        let key = LockKey::stack_env(stack, env)?;
        let now = self.services.clock.now();
        holder_fence(&*self.locks, &key, lock_id, None, now).await
    }

    /// Records a rollback or delete of `stack`/`env` in the tenant's log.
    async fn record(
        &self,
        stack: &str,
        env: &str,
        action: &str,
        to: Option<u64>,
        done: &Result<tenancy_state::stack::StackVersion>,
    ) {
        use tenancy_state::audited::{stack_detail, stack_target};
        self.audit
            .record_result(
                &tenancy_core::audit::Scope::Tenant(self.tenant.id.clone()),
                action,
                stack_target(stack, env),
                done,
                |v| stack_detail(v.serial, to),
            )
            .await;
    }

    fn quota(&self) -> StackQuota<'_, TenantScoped<Arc<dyn StateBackend>>> {
        StackQuota::new(&self.stacks, &*self.services.registry, &self.tenant)
    }
}

fn written(v: tenancy_state::stack::StackVersion) -> Written {
    Written {
        serial: v.serial,
        saved_at: v.saved_at,
    }
}

fn no_state(stack: &str, env: &str) -> Error {
    Error::not_found(format!("no state for stack {stack} env {env}"))
}

#[async_trait]
impl TenantApi for StoreTenant {
    fn id(&self) -> &TenantId {
        &self.tenant.id
    }

    async fn profile(&self) -> Result<Tenant> {
        Ok(self.tenant.clone())
    }

    async fn usage(&self) -> Result<(Usage, Limits, TenantStatus)> {
        let t = &self.tenant;
        let mut u = self.services.registry.usage(&t.id).await?;
        let l = t.limits();
        // Locks taken through a server count; the CLI's own do not.
        u.locks_held = LimitedLocks::new(
            self.locks.clone(),
            self.services.backend.clone(),
            t.id.clone(),
            l.max_locks,
        )?
        .with_clock(self.services.clock.clone())
        .held()
        .await?;
        Ok((u, l, t.effective_status(self.services.clock.now())))
    }

    async fn save(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        lock_id: Option<LockId>,
    ) -> Result<Written> {
        self.require(Role::Operator)?;
        let fence = self.fence(stack, env, lock_id).await?;
        let opts = SaveOptions::new(Expected::Latest).fenced(fence);
        self.quota().save(stack, env, doc, opts).await.map(written)
    }

    async fn document(&self, stack: &str, env: &str, serial: Option<u64>) -> Result<Option<Bytes>> {
        Ok(match serial {
            Some(n) => Some(self.stacks.version(stack, env, n).await?.raw),
            None => self.stacks.current(stack, env).await?.map(|s| s.raw),
        })
    }

    async fn stack_envs(&self) -> Result<StackEnvs> {
        let held = self.locks.list("stack:").await?;
        let rows = self.stacks.listing(&held).await?;
        Ok(StackEnvs {
            rows,
            max_stacks: self.tenant.limits().max_stacks,
        })
    }

    async fn history(&self, stack: &str, env: &str) -> Result<History> {
        self.stacks.history_report(stack, env).await
    }

    async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        lock_id: Option<LockId>,
    ) -> Result<Written> {
        self.require(Role::Operator)?;
        let fence = self.fence(stack, env, lock_id).await?;
        // A damaged state.json cannot say its serial: restore over it instead.
        let done = match self.stacks.current(stack, env).await {
            Ok(Some(cur)) => {
                let opts = SaveOptions::new(Some(cur.serial)).fenced(fence);
                self.quota().rollback(stack, env, to, opts).await
            }
            Ok(None) => Err(no_state(stack, env)),
            Err(Error::Corrupt { .. }) => self.stacks.restore(stack, env, to).await,
            Err(e) => Err(e),
        };
        self.record(stack, env, "stack.rollback", Some(to), &done)
            .await;
        done.map(written)
    }

    async fn delete(&self, stack: &str, env: &str, lock_id: Option<LockId>) -> Result<Written> {
        self.require(Role::Operator)?;
        let fence = self.fence(stack, env, lock_id).await?;
        let opts = SaveOptions::new(Expected::Latest).fenced(fence);
        let done = self.quota().delete(stack, env, opts).await.map(|(v, _)| v);
        self.record(stack, env, "stack.delete", None, &done).await;
        Ok(written(done?))
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        self.locks.clone()
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        let done = self.locks.force_unlock(key, lock_id).await;
        self.audit
            .record_result(
                &tenancy_core::audit::Scope::Tenant(self.tenant.id.clone()),
                "lock.force_unlock",
                tenancy_state::audited::lock_target(key),
                &done,
                |_| tenancy_state::audited::unlock_detail(&lock_id, None),
            )
            .await;
        done
    }

    async fn keys(&self) -> Result<Vec<ApiKey>> {
        self.require(Role::Owner)?;
        self.services.registry.keys(&self.tenant.id).await
    }

    async fn create_key(&self, new: NewApiKey) -> Result<CreatedApiKey> {
        self.require(Role::Owner)?;
        self.services
            .registry
            .create_key(&self.tenant.id, new)
            .await
    }

    async fn revoke_key(&self, id: &KeyId) -> Result<ApiKey> {
        self.require(Role::Owner)?;
        self.services.registry.revoke_key(&self.tenant.id, id).await
    }

    async fn rotate_key(&self, id: &KeyId, grace: std::time::Duration) -> Result<RotatedApiKey> {
        self.require(Role::Owner)?;
        self.services
            .registry
            .rotate_key(&self.tenant.id, id, grace)
            .await
    }
}

/// A viewer's locks on a store: listing and inspecting pass, every write
/// is refused naming the role it needs (the server's role guard does the
/// same for `/v1/locks`).
#[derive(Debug)]
struct ReadOnlyLocks {
    inner: Arc<dyn LockManager>,
    key: ApiKey,
}

impl ReadOnlyLocks {
    fn refuse<T>(&self) -> Result<T> {
        // Only keys weaker than operator get this layer, so this refuses.
        require_role(self.key.role, Some(&self.key), Role::Operator)?;
        Err(Error::forbidden("this needs the operator role"))
    }
}

#[async_trait]
impl LockManager for ReadOnlyLocks {
    async fn try_acquire(&self, _: &LockRequest) -> Result<LockInfo> {
        self.refuse()
    }
    async fn acquire(&self, _: &LockRequest, _: std::time::Duration) -> Result<LockInfo> {
        self.refuse()
    }
    async fn renew(&self, _: &LockKey, _: LockId, _: std::time::Duration) -> Result<LockInfo> {
        self.refuse()
    }
    async fn release(&self, _: &LockKey, _: LockId) -> Result<()> {
        self.refuse()
    }
    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        self.inner.inspect(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.inner.list(prefix).await
    }
    async fn force_unlock(&self, _: &LockKey, _: LockId) -> Result<()> {
        self.refuse()
    }
}

/// A tenant through a tenancy-server, one request per operation.
#[derive(Debug)]
pub(crate) struct ServerTenant {
    id: TenantId,
    client: TenantClient,
    stacks: StackClient,
}

impl ServerTenant {
    /// Tenant `id` as `client` authenticates.
    pub(crate) fn new(id: TenantId, client: TenantClient) -> Self {
        let stacks = client.stacks();
        ServerTenant { id, client, stacks }
    }
}

fn sent(w: tenancy_server::views::StackWritten) -> Written {
    Written {
        serial: w.serial,
        saved_at: w.saved_at,
    }
}

#[async_trait]
impl TenantApi for ServerTenant {
    fn id(&self) -> &TenantId {
        &self.id
    }

    async fn profile(&self) -> Result<Tenant> {
        self.client.me().await?.profile.to_tenant()
    }

    async fn usage(&self) -> Result<(Usage, Limits, TenantStatus)> {
        let me = self.client.me().await?;
        Ok((me.usage, me.limits, me.status))
    }

    async fn save(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        lock_id: Option<LockId>,
    ) -> Result<Written> {
        let bytes = Bytes::copy_from_slice(doc.as_bytes());
        self.stacks
            .save(stack, env, bytes, lock_id.as_ref())
            .await
            .map(sent)
    }

    async fn document(&self, stack: &str, env: &str, serial: Option<u64>) -> Result<Option<Bytes>> {
        Ok(match serial {
            Some(n) => Some(self.stacks.version(stack, env, n).await?.bytes),
            None => self.stacks.current(stack, env).await?.map(|d| d.bytes),
        })
    }

    async fn stack_envs(&self) -> Result<StackEnvs> {
        let list = self.stacks.list().await?;
        let now = chrono::Utc::now();
        let rows = list
            .stacks
            .into_iter()
            .map(|s| {
                let current = match (s.damaged, s.serial) {
                    (Some(message), _) => Err(message),
                    (None, Some(n)) => Ok((n, s.saved_at)),
                    (None, None) => Err("the server sent no serial".to_string()),
                };
                let locked_by = match (&s.locked_by, LockKey::stack_env(&s.stack, &s.env)) {
                    (Some(l), Ok(key)) => Some(l.to_lock_info(key, Some(self.id.clone()), now)?),
                    _ => None,
                };
                Ok(StackEnvRow {
                    stack: s.stack,
                    env: s.env,
                    current,
                    locked_by,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StackEnvs {
            rows,
            max_stacks: list.max_stacks,
        })
    }

    async fn history(&self, stack: &str, env: &str) -> Result<History> {
        let h = self.stacks.history(stack, env).await?;
        let entries = h
            .versions
            .into_iter()
            .map(|v| HistoryEntry {
                serial: v.serial,
                saved_at: v.saved_at,
                size: v.size,
                rolled_back_from: v.rolled_back_from,
                plain: v.plain,
                deleted: v.deleted,
                fence: v.fencing_token,
            })
            .collect();
        let damaged = h
            .damaged
            .into_iter()
            .map(|d| {
                Ok(Damaged {
                    key: StateKey::new(d.key)?,
                    serial: d.serial,
                    message: d.message,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(History { entries, damaged })
    }

    async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        lock_id: Option<LockId>,
    ) -> Result<Written> {
        self.stacks
            .rollback(stack, env, to, lock_id.as_ref())
            .await
            .map(sent)
    }

    async fn delete(&self, stack: &str, env: &str, lock_id: Option<LockId>) -> Result<Written> {
        self.stacks
            .delete(stack, env, lock_id.as_ref())
            .await
            .map(sent)
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::new(self.client.locks())
    }

    // The server's role guard applies the role to these (403 naming it).
    async fn keys(&self) -> Result<Vec<ApiKey>> {
        self.client.keys().await
    }

    async fn create_key(&self, new: NewApiKey) -> Result<CreatedApiKey> {
        self.client.create_key(new).await
    }

    async fn revoke_key(&self, id: &KeyId) -> Result<ApiKey> {
        self.client.revoke_key(id).await
    }

    async fn rotate_key(&self, id: &KeyId, grace: std::time::Duration) -> Result<RotatedApiKey> {
        self.client.rotate_key(id, grace).await
    }
}
