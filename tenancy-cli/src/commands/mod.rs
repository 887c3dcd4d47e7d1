//! Command handlers. Each takes a [`Ctx`]: the registry, backend and lock
//! manager as trait objects ([`Services`]), the output, and the session files.

pub(crate) mod admin;
pub(crate) mod lock;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod tenant;

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tenancy_core::{Clock, Error, LockManager, StateBackend, Tenant, TenantRegistry, TenantStatus};

use crate::cli::OutputFormat;
use crate::exit::{CliError, UNAUTHORIZED};
use crate::home::{Home, SessionFile, SessionSlot, SESSION_FORMAT};
use crate::io::Io;
use crate::output::{paint, Out, Style};

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
}

/// What a handler works with.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// Registry, backend, locks.
    pub services: &'a Services,
    /// Streams, environment, prompts.
    pub io: &'a mut Io,
    /// `--output`.
    pub format: OutputFormat,
    /// Where the session files live.
    pub home: Home,
    /// The backend URL sessions are bound to.
    pub backend_url: String,
}

impl<'a> Ctx<'a> {
    /// The result writer (stdout).
    pub(crate) fn out(&mut self) -> Out<'_> {
        let color = self.io.stdout_color();
        Out::new(&mut *self.io.stdout, self.format, color)
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
        self.services.clock.now()
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
                "your session is for backend {}, not {}; log in to this backend with `{login}`",
                file.backend, self.backend_url
            ),
        )
        .into())
    }

    /// Checks the admin session: present, this backend, not expired, admin.
    pub(crate) async fn require_admin(&mut self) -> anyhow::Result<()> {
        let now = self.now();
        match self.home.load(SessionSlot::Admin)? {
            Some(file) => {
                self.check_backend(&file, SessionSlot::Admin)?;
                file.session.check_expiry(now)?;
                // One manifest read: its absence means no registry.
                let current = match self.services.registry.admin_generation().await {
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
                    other => Ok(other?),
                }
            }
            None => {
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
                Err(CliError::not_logged_in(
                    "not logged in as the admin; run `tenancy admin login`",
                )
                .into())
            }
        }
    }

    /// Checks the tenant session against the registry (status and credential
    /// generation) and returns the tenant.
    pub(crate) async fn require_tenant(&mut self) -> anyhow::Result<Tenant> {
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
        let Some(id) = file.session.tenant_id() else {
            return Err(CliError::not_logged_in(
                "the tenant session holds no tenant; run `tenancy login --tenant ID`",
            )
            .into());
        };
        let tenant = match self.services.registry.get(id).await {
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
        Ok(tenant)
    }

    /// Writes a session file for this backend.
    pub(crate) fn save_session(
        &self,
        slot: SessionSlot,
        session: tenancy_core::Session,
    ) -> anyhow::Result<()> {
        self.home.save(
            slot,
            &SessionFile {
                format: SESSION_FORMAT,
                backend: self.backend_url.clone(),
                session,
            },
        )
    }
}
