//! Command handlers. Each takes a [`Ctx`]: where the commands go (a store
//! the CLI opens, [`Services`], or a tenancy-server), the output, and the
//! session files. Tenant commands work through [`TenantApi`], admin
//! commands through a `TenantRegistry`, the same way in both places.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod key;
pub(crate) mod lock;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod tenant;
pub(crate) mod tenant_api;

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tenancy_core::{
    Clock, Error, LockId, LockInfo, LockKey, LockManager, Secret, StateBackend, TenantId,
    TenantRegistry, TenantStatus,
};
use tenancy_lock::TenantLocks;
use tenancy_server::client::{Client, TenantCredential};

use crate::cli::OutputFormat;
use crate::exit::{CliError, UNAUTHORIZED};
use crate::home::{Home, SessionFile, SessionSlot, SESSION_FORMAT};
use crate::io::Io;
use crate::output::{paint, Out, Style};
pub(crate) use tenant_api::TenantApi;
use tenant_api::{ServerTenant, StoreTenant};

/// The store behind a command: registry, raw backend and lock manager.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// The tenant registry.
    pub registry: Arc<dyn TenantRegistry>,
    /// The whole store (tenant scoping is applied per command).
    pub backend: Arc<dyn StateBackend>,
    /// The lock manager for every tenant (wrapped per tenant).
    pub locks: Arc<dyn LockManager>,
    /// The clock for session times.
    pub clock: Arc<dyn Clock>,
    /// The same store with its concrete backend, for `doctor`'s checks
    /// below the trait (local files, the S3 probe).
    pub store: tenancy_state::Store,
    /// The audited registry (`registry` is its view as the store's
    /// holder; commands act through views naming their actor).
    pub audit: audit::AuditedRegistry,
    /// Audit entries that could not be written, warned about after the command.
    pub audit_failures: audit::Unrecorded,
}

/// For an S3 URL, " (or its bucket does not exist)": an object that is not
/// found may be a bucket that is not there.
pub(crate) fn or_no_bucket(url: &str) -> &'static str {
    if url.starts_with("s3://") {
        " (or its bucket does not exist)"
    } else {
        ""
    }
}

/// Where a command goes.
#[derive(Debug)]
pub(crate) enum Target<'a> {
    /// A store the CLI opened itself.
    Store(&'a Services),
    /// A tenancy-server (remote mode).
    Server(Client),
}

/// The admin's access to what `TenantRegistry` does not cover (any
/// tenant's locks, a tenant's usage against its limits): on the store, or
/// through the server's admin routes.
#[derive(Debug)]
pub(crate) enum AdminAccess<'a> {
    /// The store's lock manager, scoped per tenant.
    Store(&'a Services),
    /// The server's `/v1/tenants/{id}/locks`.
    Server(tenancy_server::client::HttpRegistry),
}

impl AdminAccess<'_> {
    /// Tenant `id`'s held locks, sorted by key (`NotFound` for an unknown tenant).
    pub(crate) async fn list(&self, id: &TenantId) -> tenancy_core::Result<Vec<LockInfo>> {
        let mut all = match self {
            AdminAccess::Store(s) => {
                s.registry.get(id).await?;
                TenantLocks::new(s.locks.clone(), id.clone())
                    .list("")
                    .await?
            }
            AdminAccess::Server(r) => r.tenant_locks(id).await?,
        };
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// The tenants that pass `filter` with their usage counters (one
    /// request through a server), and the records that cannot be read.
    pub(crate) async fn list_with_usage(
        &self,
        filter: tenancy_core::TenantFilter,
    ) -> tenancy_core::Result<(Vec<(tenancy_core::Tenant, tenancy_core::Usage)>, Vec<Error>)> {
        use tenancy_core::registry::TenantRegistryExt;
        match self {
            AdminAccess::Store(s) => {
                use futures::{StreamExt, TryStreamExt};
                let (tenants, errors) = s.registry.list_partial(filter).await;
                let registry = &s.registry;
                let out = futures::stream::iter(tenants)
                    .map(|t| async move {
                        let u = registry.usage(&t.id).await?;
                        Ok::<_, tenancy_core::Error>((t, u))
                    })
                    .buffered(tenancy_core::GET_MANY_CONCURRENCY)
                    .try_collect()
                    .await?;
                Ok((out, errors))
            }
            AdminAccess::Server(r) => Ok((r.list_with_usage(filter).await?, Vec::new())),
        }
    }

    /// One tenant with its usage counters (one request through a server).
    pub(crate) async fn show(
        &self,
        id: &TenantId,
    ) -> tenancy_core::Result<(tenancy_core::Tenant, tenancy_core::Usage)> {
        match self {
            AdminAccess::Store(s) => {
                let t = s.registry.get(id).await?;
                let u = s.registry.usage(id).await?;
                Ok((t, u))
            }
            AdminAccess::Server(r) => r.get_with_usage(id).await,
        }
    }

    /// Tenant `id`'s usage against its limits (one request through a server).
    pub(crate) async fn stats(
        &self,
        id: &TenantId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> tenancy_core::Result<tenancy_server::views::StatsView> {
        match self {
            AdminAccess::Store(s) => {
                let t = s.registry.get(id).await?;
                let u = s.registry.usage(id).await?;
                Ok(tenancy_server::views::StatsView::new(&t, u, now))
            }
            AdminAccess::Server(r) => r.stats(id).await,
        }
    }

    /// Force-unlocks tenant `id`'s `key` held by `lock_id`.
    pub(crate) async fn force_unlock(
        &self,
        id: &TenantId,
        key: &LockKey,
        lock_id: LockId,
    ) -> tenancy_core::Result<()> {
        match self {
            AdminAccess::Store(s) => {
                s.registry.get(id).await?;
                let done = TenantLocks::new(s.locks.clone(), id.clone())
                    .force_unlock(key, lock_id)
                    .await;
                s.audit_as(tenancy_core::audit::Actor::admin())
                    .record_result(
                        &tenancy_core::audit::Scope::Tenant(id.clone()),
                        "lock.force_unlock",
                        tenancy_state::audited::lock_target(key),
                        &done,
                        |_| tenancy_state::audited::unlock_detail(&lock_id, None),
                    )
                    .await;
                done
            }
            AdminAccess::Server(r) => r.force_unlock_tenant_lock(id, key, lock_id).await,
        }
    }
}

/// What a handler works with.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// The store or the server.
    pub target: Target<'a>,
    /// Streams, environment, prompts.
    pub io: &'a mut Io,
    /// `--output`.
    pub format: OutputFormat,
    /// Where the session files live.
    pub home: Home,
    /// The backend URL sessions are bound to (a server's base URL in remote mode).
    pub backend_url: String,
    /// The clock for session times.
    pub clock: Arc<dyn Clock>,
}

impl<'a> Ctx<'a> {
    /// The result writer (stdout).
    pub(crate) fn out(&mut self) -> Out<'_> {
        Out::stdout(self.io, self.format)
    }

    /// True for `--output json`.
    pub(crate) fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// An informational line on stderr.
    pub(crate) fn note(&mut self, msg: &str) -> anyhow::Result<()> {
        writeln!(self.io.stderr, "{msg}")?;
        Ok(())
    }

    /// A warning on stderr.
    pub(crate) fn warn(&mut self, msg: &str) -> anyhow::Result<()> {
        let color = self.io.stderr_color();
        writeln!(
            self.io.stderr,
            "{} {msg}",
            paint(color, Style::Yellow, "warning:")
        )?;
        Ok(())
    }

    /// The current time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// True in remote mode.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.target, Target::Server(_))
    }

    /// The store the CLI opened; in remote mode, the refusal of `command`
    /// (which works on a store itself) with what to do instead.
    pub(crate) fn store(&self, command: &str, instead: &str) -> anyhow::Result<&'a Services> {
        match &self.target {
            Target::Store(s) => Ok(s),
            Target::Server(_) => Err(CliError::usage(format!(
                "`{command}` works on a store directly, not through the server at {}; {instead}",
                self.backend_url
            ))
            .into()),
        }
    }

    fn check_backend(&self, file: &SessionFile, slot: SessionSlot) -> anyhow::Result<()> {
        if file.backend == self.backend_url {
            return Ok(());
        }
        let login = match slot {
            SessionSlot::Admin => "tenancy admin login",
            SessionSlot::Tenant => "tenancy login --tenant ID",
        };
        Err(CliError::new(
            UNAUTHORIZED,
            format!(
                "your session is for backend {}, not {}; drop --backend (and TENANCY_BACKEND) to use it, or log in to {} with `tenancy --backend {} {login}`",
                file.backend, self.backend_url, self.backend_url, self.backend_url
            ),
        )
        .into())
    }

    /// The session token of a remote session file (refused when the file
    /// was written by a direct login).
    fn token(&self, file: &SessionFile, slot: SessionSlot) -> anyhow::Result<Secret> {
        match &file.token {
            Some(t) => Ok(Secret::new(t.clone())),
            None => Err(CliError::not_logged_in(format!(
                "the session holds no server session token; run `{}` again",
                slot.login_command()
            ))
            .into()),
        }
    }

    /// Checks the admin session (present, this backend, not expired; on a
    /// store also the admin credential's generation) and returns the
    /// registry to work on: the store's, or the server's admin API.
    pub(crate) async fn require_admin(&mut self) -> anyhow::Result<Arc<dyn TenantRegistry>> {
        let now = self.now();
        let Some(file) = self.home.load(SessionSlot::Admin)? else {
            if let Ok(Some(t)) = self.home.load(SessionSlot::Tenant) {
                let who = t
                    .session
                    .tenant_id()
                    .map(|t| format!("tenant {t}"))
                    .unwrap_or_else(|| "a tenant".into());
                return Err(Error::forbidden(format!(
                    "admin command refused: you are logged in as {who}, not as the admin; run `tenancy admin login`"
                ))
                .into());
            }
            return Err(CliError::not_logged_in(
                "not logged in as the admin; run `tenancy admin login`",
            )
            .into());
        };
        self.check_backend(&file, SessionSlot::Admin)?;
        file.session.check_expiry(now)?;
        let services = match &self.target {
            // The server checks the session on every request.
            Target::Server(client) => {
                let token = self.token(&file, SessionSlot::Admin)?;
                return Ok(Arc::new(client.registry(token)));
            }
            Target::Store(services) => *services,
        };
        // One manifest read: its absence means no registry.
        let current = match services.registry.admin_generation().await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => {
                return Err(Error::not_found(format!(
                    "no registry at {} any more; create one with `tenancy init`",
                    self.backend_url
                ))
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        match file.session.validate_admin(now, current) {
            Err(Error::CredentialsRotated { .. }) => Err(CliError::new(
                UNAUTHORIZED,
                "the admin credential changed since this session began; run `tenancy admin login`",
            )
            .into()),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(services.acting_as(tenancy_core::audit::Actor::admin())),
        }
    }

    /// Checks the admin session and returns the admin's access to any
    /// tenant's locks (no tenant secret needed).
    pub(crate) async fn require_admin_access(&mut self) -> anyhow::Result<AdminAccess<'a>> {
        self.require_admin().await?;
        match &self.target {
            Target::Store(services) => Ok(AdminAccess::Store(services)),
            Target::Server(client) => {
                let file = self.home.load(SessionSlot::Admin)?.ok_or_else(|| {
                    CliError::not_logged_in("not logged in as the admin; run `tenancy admin login`")
                })?;
                let token = self.token(&file, SessionSlot::Admin)?;
                Ok(AdminAccess::Server(client.registry(token)))
            }
        }
    }

    /// Checks the tenant session (on a store: against the registry, status
    /// and credential generation; through a server: the server checks it
    /// on every request) and returns what tenant commands work on.
    pub(crate) async fn require_tenant(&mut self) -> anyhow::Result<Box<dyn TenantApi>> {
        if let Some((id, secret)) = self.env_credentials()? {
            return self.tenant_from_env(id, secret).await;
        }
        let now = self.now();
        let Some(file) = self.home.load(SessionSlot::Tenant)? else {
            if let Ok(Some(_)) = self.home.load(SessionSlot::Admin) {
                return Err(Error::forbidden(
                    "tenant command refused: you are logged in as the admin, not as a tenant; run `tenancy login --tenant ID`",
                )
                .into());
            }
            return Err(CliError::not_logged_in(
                "not logged in as a tenant; run `tenancy login --tenant ID`",
            )
            .into());
        };
        self.check_backend(&file, SessionSlot::Tenant)?;
        file.session.check_expiry(now)?;
        let Some(id) = file.session.tenant_id().cloned() else {
            return Err(CliError::not_logged_in(
                "the tenant session holds no tenant; run `tenancy login --tenant ID`",
            )
            .into());
        };
        let services = match &self.target {
            Target::Server(client) => {
                let token = self.token(&file, SessionSlot::Tenant)?;
                let client = client.tenant(TenantCredential::Session(token));
                return Ok(Box::new(ServerTenant::new(id, client)));
            }
            Target::Store(services) => *services,
        };
        let tenant = match services.registry.get(&id).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                return Err(CliError::not_logged_in(format!(
                    "tenant {id} no longer exists; log in as another tenant with `tenancy login --tenant ID`"
                ))
                .into())
            }
            Err(e) => return Err(e).with_context(|| format!("checking the session of tenant {id}")),
        };
        if let Err(e) = file.session.validate_tenant(&tenant, now) {
            if let Error::Forbidden { .. } = e {
                let status = tenant.effective_status(now);
                let what = match status {
                    TenantStatus::Deleted => {
                        "was deleted and its state archived; ask the admin for a new tenant"
                    }
                    TenantStatus::Suspended => "is suspended; ask the admin to activate it",
                    TenantStatus::Expired => "has expired; ask the admin to activate it",
                    TenantStatus::Active => "may not run this command",
                };
                return Err(Error::forbidden(format!("tenant {id} {what}")).into());
            }
            return Err(e.into());
        }
        // A session opened with a named key: the key must still be usable,
        // and its role is the session's.
        let key = match &file.session.key {
            None => None,
            Some(kid) => {
                let key = match services.registry.key(&id, kid).await {
                    Ok(k) => Some(k),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("checking the API key of the session of tenant {id}")
                        })
                    }
                };
                file.session.validate_key(key.as_ref(), now)?;
                key
            }
        };
        Ok(Box::new(StoreTenant::new(
            services,
            tenancy_core::Caller { tenant, key },
        )?))
    }

    /// `TENANCY_TENANT` and `TENANCY_SECRET`, when both are set: tenant
    /// commands then authenticate with them instead of a session (for CI,
    /// like `GH_TOKEN`); one without the other is refused.
    pub(crate) fn env_credentials(&self) -> anyhow::Result<Option<(TenantId, Secret)>> {
        match (self.io.var("TENANCY_TENANT"), self.io.var("TENANCY_SECRET")) {
            (Some(t), Some(s)) => {
                let id = TenantId::new(t.trim()).map_err(|e| {
                    CliError::usage(format!("TENANCY_TENANT is not a tenant id: {e}"))
                })?;
                Ok(Some((id, Secret::new(s.trim().to_string()))))
            }
            _ => Ok(None),
        }
    }

    async fn tenant_from_env(
        &self,
        id: TenantId,
        secret: Secret,
    ) -> anyhow::Result<Box<dyn TenantApi>> {
        let refused = |e: Error| {
            match e {
            Error::Unauthorized { .. } => anyhow::Error::new(Error::unauthorized(format!(
                "TENANCY_TENANT/TENANCY_SECRET refused: unknown tenant {id} or wrong secret; check both"
            ))),
            e => anyhow::Error::new(e).context(format!(
                "authenticating tenant {id} with TENANCY_TENANT/TENANCY_SECRET"
            )),
        }
        };
        match &self.target {
            Target::Store(services) => {
                let caller = services
                    .registry
                    .authenticate_caller(Some(&id), &secret)
                    .await
                    .map_err(refused)?;
                Ok(Box::new(StoreTenant::new(services, caller)?))
            }
            Target::Server(client) => {
                let credential = TenantCredential::Secret {
                    secret,
                    tenant: Some(id.clone()),
                };
                Ok(Box::new(ServerTenant::new(id, client.tenant(credential))))
            }
        }
    }

    /// Writes a session file for this backend (`token`: the server's
    /// session token in remote mode).
    pub(crate) fn save_session(
        &self,
        slot: SessionSlot,
        session: tenancy_core::Session,
        token: Option<&Secret>,
    ) -> anyhow::Result<()> {
        self.home.save(
            slot,
            &SessionFile {
                format: SESSION_FORMAT,
                backend: self.backend_url.clone(),
                session,
                token: token.map(|t| t.expose().to_string()),
            },
        )
    }
}
