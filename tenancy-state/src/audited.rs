//! [`Audited<R>`]: a [`TenantRegistry`] layer (as object_store's and
//! OpenDAL's layers wrap a store) that appends one entry to the audit trail
//! ([`crate::audit`]) for every change made through it, and the one helper
//! ([`Audited::record_result`]) for the changes made elsewhere (stack
//! rollback and delete, lock force-unlock).
//!
//! # What is recorded
//!
//! | call | action | outcome |
//! |---|---|---|
//! | `bootstrap` | `registry.bootstrap` | |
//! | `set_admin_password` | `admin.credential` | |
//! | `create`, `update`, `suspend`, `activate`, `rotate`, `delete`, `purge` | `tenant.<call>` | |
//! | `create_key`, `revoke_key`, `rotate_key` | `key.create`, `key.revoke`, `key.rotate` | |
//! | `login_tenant`, `login_admin` (and, in a [`AuditContext::login`] view, `authenticate`, `authenticate_caller`, `verify_admin`) | `session.login` | refusals aggregated |
//! | `revoke_session` | `session.logout` (the caller's own session) or `session.revoke` | |
//! | `reserve` refused with `QuotaExceeded` | `quota.refused` | aggregated |
//!
//!
//! Outside the registry, through [`Audited::record_result`] (or
//! [`Audited::record`]): `stack.rollback`, `stack.delete`,
//! `lock.force_unlock` (server and CLI), `audit.prune` and `store.repair`
//! (`tenancy doctor --repair`, one entry naming the repaired keys).
//!
//! Reads, credential checks outside a login view (the server's per-request
//! authentication), and the usage bookkeeping (`reserve` that succeeds,
//! `commit`, `release`, `record_usage`, `release_recording`, `touch_key`)
//! are not changes the trail records.
//!
//! **Outcomes** ([`outcome_of`]): `ok` for a change made; `refused` for a
//! credential, role, status or quota refusal (`Unauthorized`,
//! `SessionExpired`, `CredentialsRotated`, `Forbidden`, `QuotaExceeded`);
//! `failed` for a store failure (`Backend`, `Corrupt`: the change may be
//! half made). Any other error (not found, invalid input, a conflict, a
//! precondition) changed nothing and went back to the caller: no entry.
//!
//! # Which log
//!
//! **An action about one tenant goes to that tenant's log**
//! (`Scope::Tenant`), whoever made it (the admin creating or suspending it,
//! the tenant managing its keys, a refused login as it), so the tenant's
//! log is its whole story and `GET /v1/tenant/audit` shows it. **Actions
//! about no one tenant go to the admin log** (`Scope::Admin`): the
//! registry's bootstrap, the admin credential, admin sessions, and refused
//! tenant logins naming a tenant that does not exist (so a flood of
//! made-up ids never creates a log per id).
//!
//! # Who and from where
//!
//! Each view carries an [`AuditContext`]: the actor, `via` (`cli`: a CLI on
//! the store itself, or `server`) and the server's request id.
//! [`Audited::with_context`] makes a cheap view for one request or command
//! (shared log, counters and reporter); the server builds one per request
//! from its admin guard or tenant layer, the CLI one per command from its
//! session. A login the server refuses before any registry call (its
//! tenant layer, its admin guard) is recorded with
//! [`Audited::record_refused_login`] / [`Audited::record_refused_admin_login`].
//!
//! # Refusal floods
//!
//! Refused logins and quota refusals can be repeated by anyone at the rate
//! the server admits, so they are **aggregated**: per (log, action, actor
//! kind and id, target, via) the first refusal is written at once with
//! `"failures": 1`, later ones within [`REFUSAL_WINDOW`] (a minute) are only
//! counted in memory, and the first refusal after the window writes one
//! entry with the count since the last entry. [`Audited::flush_refusals`]
//! writes the counts of windows that have closed (the server runs it on its
//! reconcile schedule), [`Audited::flush_all_refusals`] every count (a CLI
//! at exit, a server at shutdown). **A crash loses** the counts not yet
//! written: at most a window's worth of refusals per key beyond the first,
//! which is always written. At most [`MAX_REFUSAL_KEYS`] keys are
//! counted; beyond that, refusals are counted under one overflow key of
//! the admin log.
//!
//! # When an append fails
//!
//! **The action stands and the failure is reported**, never swallowed:
//! the change was already made (a tenant created, a secret shown once), so
//! failing the call would make the caller retry a done change or lose a
//! secret. Every failed append is counted ([`Audited::unrecorded`]) and
//! passed to the reporter ([`Audited::on_failure`]): the server logs it as
//! an error and counts it in `tenancy_audit_unrecorded_total`, the CLI
//! prints a warning after the command. Entries hold ids, names and
//! outcomes only: never a secret, hash or session token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde_json::{json, Value};
use tenancy_core::{
    ApiKey, AuthenticatedSession, Caller, Clock, CreatedApiKey, CreatedTenant, Error, ErrorKind,
    IssuedSession, KeyId, ListedReservation, NewApiKey, NewTenant, Reservation, Resource, Result,
    RotatedApiKey, Secret, ServerSession, SessionId, SessionOwner, StateBackend, SystemClock,
    Tenant, TenantFilter, TenantId, TenantRegistry, TenantUpdate, Usage, UsageEvent,
};

use crate::audit::{Actor, AuditLog, Entry, NewEntry, Outcome, Scope};

/// Refusals of one key within this long after its last entry are counted,
/// not written.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// The most refusal keys counted at once.
pub const MAX_REFUSAL_KEYS: usize = 10_000;

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A CLI working on the store itself.
    Cli,
    /// The tenancy server.
    Server,
}

impl Via {
    /// `cli` or `server`, as entries hold it.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Cli => "cli",
            Via::Server => "server",
        }
    }
}

/// Who acts through a view, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// Who.
    pub actor: Actor,
    /// From where.
    pub via: Via,
    /// The server's request id.
    pub request_id: Option<String>,
    /// Whether this view's credential checks (`authenticate`,
    /// `authenticate_caller`, `verify_admin`) are logins to record (the
    /// CLI's `login` and `admin login` on a store).
    pub login: bool,
}

impl AuditContext {
    /// `actor` on a CLI working on the store.
    pub fn cli(actor: Actor) -> Self {
        AuditContext {
            actor,
            via: Via::Cli,
            request_id: None,
            login: false,
        }
    }

    /// `actor` through the server, in request `request_id`.
    pub fn server(actor: Actor, request_id: Option<String>) -> Self {
        AuditContext {
            actor,
            via: Via::Server,
            request_id,
            login: false,
        }
    }

    /// The same context, with credential checks recorded as logins.
    pub fn login(mut self) -> Self {
        self.login = true;
        self
    }
}

/// An entry that could not be appended (see the module docs).
#[derive(Debug)]
pub struct AuditFailure<'a> {
    /// The log it was for.
    pub scope: &'a Scope,
    /// The entry.
    pub entry: &'a NewEntry,
    /// Why it was not appended.
    pub error: &'a Error,
}

/// Told about every entry that could not be appended.
pub type FailureReporter = Arc<dyn Fn(&AuditFailure<'_>) + Send + Sync>;

/// The outcome an entry records for a call that returned `result`, or
/// `None` when the call changed nothing and is not recorded (see the module
/// docs).
pub fn outcome_of<T>(result: &Result<T>) -> Option<Outcome> {
    match result {
        Ok(_) => Some(Outcome::Ok),
        Err(e) => error_outcome(e),
    }
}

/// The outcome of a call that failed with `e` (see [`outcome_of`]).
pub fn error_outcome(e: &Error) -> Option<Outcome> {
    {
        match e.kind() {
            ErrorKind::Unauthorized
            | ErrorKind::SessionExpired
            | ErrorKind::CredentialsRotated
            | ErrorKind::Forbidden
            | ErrorKind::QuotaExceeded => Some(Outcome::Refused),
            ErrorKind::Backend | ErrorKind::Corrupt => Some(Outcome::Failed),
            ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::Precondition
            | ErrorKind::Fenced
            | ErrorKind::LockHeld
            | ErrorKind::InvalidInput
            | ErrorKind::NotImplemented => None,
        }
    }
}

/// What a refusal is aggregated by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefusalKey {
    scope: Scope,
    via: Via,
    action: String,
    actor_kind: String,
    actor_id: Option<String>,
    target: String,
}

/// The refusals of one key since its last entry.
#[derive(Debug)]
struct Window {
    written_at: DateTime<Utc>,
    pending: u64,
    /// The last refusal counted and not written: its context and detail.
    last: Option<(AuditContext, Value)>,
}

struct Shared {
    log: AuditLog<Arc<dyn StateBackend>>,
    clock: Arc<dyn Clock>,
    refusals: Mutex<HashMap<RefusalKey, Window>>,
    unrecorded: AtomicU64,
    report: Option<FailureReporter>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("unrecorded", &self.unrecorded.load(Ordering::Relaxed))
            .field("report", &self.report.is_some())
            .finish_non_exhaustive()
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Audited<R> {
    inner: R,
    shared: Arc<Shared>,
    ctx: AuditContext,
}

/// The target of a stack environment's entries: `stack <stack>/<env>`.
pub fn stack_target(stack: &str, env: &str) -> String {
    format!("stack {stack}/{env}")
}

/// The target of a lock's entries: `lock <key>`.
pub fn lock_target(key: &tenancy_core::LockKey) -> String {
    format!("lock {key}")
}

/// What a force-unlock's entry says of the lock it ended: its lock id and,
/// when known, its holder and fencing token (never its `info`, which a
/// client wrote).
pub fn unlock_detail(
    lock_id: &tenancy_core::LockId,
    holder: Option<&tenancy_core::LockInfo>,
) -> Value {
    match holder {
        Some(h) => json!({
            "lock_id": lock_id,
            "holder": h.who,
            "fencing_token": h.fencing_token,
        }),
        None => json!({ "lock_id": lock_id }),
    }
}

/// What a stack rollback's or delete's entry says: the version written
/// (and the serial rolled back to).
pub fn stack_detail(serial: u64, to: Option<u64>) -> Value {
    json!({ "serial": serial, "to": to })
}

fn tenant_target(id: &TenantId) -> String {
    format!("tenant {id}")
}

fn session_target(id: &SessionId) -> String {
    format!("session {id}")
}

fn key_detail(k: &ApiKey) -> Value {
    json!({ "name": k.name, "role": k.role, "expires_at": k.expires_at })
}

/// The names of the fields an update sets (never their values: metadata
/// and limits can be large).
fn update_fields(u: &TenantUpdate) -> Vec<&'static str> {
    let mut f = Vec::new();
    let set = [
        ("display_name", u.display_name.is_some()),
        ("email", u.email.is_some()),
        ("plan", u.plan.is_some()),
        ("limits", u.limits.is_some()),
        ("metadata", u.metadata.is_some()),
        ("expires_at", u.expires_at.is_some()),
    ];
    for (name, is_set) in set {
        if is_set {
            f.push(name);
        }
    }
    f
}

fn error_detail(e: &Error) -> Value {
    json!({ "error": e.kind().code() })
}

impl<R> Audited<R> {
    /// `inner` with its changes recorded in the audit logs on `backend`, as
    /// a CLI on the store with actor `store` until [`Audited::with_context`].
    pub fn new(inner: R, backend: Arc<dyn StateBackend>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Audited {
            inner,
            shared: Arc::new(Shared {
                log: AuditLog::new(backend),
                clock,
                refusals: Mutex::new(HashMap::new()),
                unrecorded: AtomicU64::new(0),
                report: None,
            }),
            ctx: AuditContext::cli(Actor::store()),
        }
    }

    /// Stamps entries and measures refusal windows with `clock`. Call it
    /// before making views: it starts a new set of counters.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let log = self.shared.log.clone().with_clock(clock.clone());
        self.rebuilt(|s| Shared {
            log,
            clock,
            refusals: Mutex::new(HashMap::new()),
            unrecorded: AtomicU64::new(0),
            report: s.report.clone(),
        })
    }

    /// Tells `report` about every entry that could not be appended. Call
    /// it before making views: it starts a new set of counters.
    pub fn on_failure(self, report: FailureReporter) -> Self {
        self.rebuilt(|s| Shared {
            log: s.log.clone(),
            clock: s.clock.clone(),
            refusals: Mutex::new(HashMap::new()),
            unrecorded: AtomicU64::new(0),
            report: Some(report),
        })
    }

    fn rebuilt(self, f: impl FnOnce(&Shared) -> Shared) -> Self {
        let shared = Arc::new(f(&self.shared));
        Audited {
            inner: self.inner,
            shared,
            ctx: self.ctx,
        }
    }

    /// The same registry acting as `ctx` (shared log, counters and reporter).
    pub fn with_context(&self, ctx: AuditContext) -> Self
    where
        R: Clone,
    {
        Audited {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            ctx,
        }
    }

    /// This view's context.
    pub fn context(&self) -> &AuditContext {
        &self.ctx
    }

    /// The logs (to list, verify, prune).
    pub fn log(&self) -> &AuditLog<Arc<dyn StateBackend>> {
        &self.shared.log
    }

    /// The registry below.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// How many entries could not be appended since this layer was made.
    pub fn unrecorded(&self) -> u64 {
        self.shared.unrecorded.load(Ordering::Relaxed)
    }

    fn entry(
        &self,
        ctx: &AuditContext,
        action: &str,
        target: String,
        outcome: Outcome,
        detail: Value,
    ) -> NewEntry {
        NewEntry {
            actor: ctx.actor.clone(),
            action: action.to_string(),
            target,
            via: ctx.via.as_str().to_string(),
            request_id: ctx.request_id.clone(),
            outcome,
            // always an object: the API documents `detail` as one
            detail: match detail {
                Value::Null => Value::Object(serde_json::Map::new()),
                d => d,
            },
        }
    }

    async fn append(&self, scope: &Scope, entry: NewEntry) -> Option<Entry> {
        match self.shared.log.append(scope, entry.clone()).await {
            Ok(e) => Some(e),
            Err(error) => {
                self.shared.unrecorded.fetch_add(1, Ordering::Relaxed);
                if let Some(report) = &self.shared.report {
                    report(&AuditFailure {
                        scope,
                        entry: &entry,
                        error: &error,
                    });
                }
                None
            }
        }
    }

    /// Appends one entry as this view's actor; a failure is counted and
    /// reported (see the module docs), and the entry is `None`.
    pub async fn record(
        &self,
        scope: &Scope,
        action: &str,
        target: impl Into<String>,
        outcome: Outcome,
        detail: Value,
    ) -> Option<Entry> {
        let entry = self.entry(&self.ctx, action, target.into(), outcome, detail);
        self.append(scope, entry).await
    }

    /// Records what a call that returned `result` came to ([`outcome_of`]:
    /// nothing for a call that changed nothing); a refusal's detail also
    /// names the error's code. The one helper for changes made outside
    /// the registry (stack rollback and delete, lock force-unlock).
    pub async fn record_result<T>(
        &self,
        scope: &Scope,
        action: &str,
        target: impl Into<String>,
        result: &Result<T>,
        detail: impl FnOnce(&T) -> Value,
    ) -> Option<Entry> {
        let outcome = outcome_of(result)?;
        let detail = match result {
            Ok(v) => detail(v),
            Err(e) => error_detail(e),
        };
        self.record(scope, action, target, outcome, detail).await
    }

    /// Records a refusal anyone can repeat cheaply, aggregated (see the
    /// module docs). `detail` gets `failures` (the count since the last
    /// entry of its key) added.
    pub async fn record_refusal(
        &self,
        scope: &Scope,
        action: &str,
        target: impl Into<String>,
        detail: Value,
    ) -> Option<Entry> {
        let target = target.into();
        let now = self.shared.clock.now();
        let window = chrono::Duration::from_std(REFUSAL_WINDOW).unwrap_or(chrono::Duration::MAX);
        let mut key = RefusalKey {
            scope: scope.clone(),
            via: self.ctx.via,
            action: action.to_string(),
            actor_kind: self.ctx.actor.kind.clone(),
            actor_id: self.ctx.actor.id.clone(),
            target: target.clone(),
        };
        let (scope, target, failures) = {
            let mut map = self
                .shared
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_REFUSAL_KEYS && !map.contains_key(&key) {
                key = RefusalKey {
                    scope: Scope::Admin,
                    via: self.ctx.via,
                    action: action.to_string(),
                    actor_kind: "overflow".into(),
                    actor_id: None,
                    target: "refusals beyond the counted keys".into(),
                };
            }
            let (scope, target) = (key.scope.clone(), key.target.clone());
            match map.get_mut(&key) {
                Some(w) if now - w.written_at < window => {
                    w.pending += 1;
                    w.last = Some((self.ctx.clone(), detail));
                    return None;
                }
                Some(w) => {
                    let n = w.pending + 1;
                    w.pending = 0;
                    w.last = None;
                    w.written_at = now;
                    (scope, target, n)
                }
                None => {
                    map.insert(
                        key,
                        Window {
                            written_at: now,
                            pending: 0,
                            last: None,
                        },
                    );
                    (scope, target, 1)
                }
            }
        };
        let entry = self.entry(
            &self.ctx,
            action,
            target,
            Outcome::Refused,
            with_failures(detail, failures),
        );
        self.append(&scope, entry).await
    }

    /// Writes the counted refusals of every window that has closed; returns
    /// how many entries were written.
    pub async fn flush_refusals(&self) -> u64 {
        self.flush(false).await
    }

    /// Writes every counted refusal, open windows too (a CLI at exit, a
    /// server at shutdown); returns how many entries were written.
    pub async fn flush_all_refusals(&self) -> u64 {
        self.flush(true).await
    }

    async fn flush(&self, all: bool) -> u64 {
        let now = self.shared.clock.now();
        let window = chrono::Duration::from_std(REFUSAL_WINDOW).unwrap_or(chrono::Duration::MAX);
        let due: Vec<(RefusalKey, u64, AuditContext, Value)> = {
            let mut map = self
                .shared
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            map.retain(|key, w| {
                let closed = now - w.written_at >= window;
                if w.pending > 0 && (all || closed) {
                    if let Some((ctx, detail)) = w.last.take() {
                        due.push((key.clone(), w.pending, ctx, detail));
                    }
                    w.pending = 0;
                    w.written_at = now;
                    return true;
                }
                // A closed window with nothing counted is forgotten.
                !closed
            });
            due
        };
        let mut written = 0;
        for (key, n, ctx, detail) in due {
            let entry = self.entry(
                &ctx,
                &key.action,
                key.target,
                Outcome::Refused,
                with_failures(detail, n),
            );
            if self.append(&key.scope, entry).await.is_some() {
                written += 1;
            }
        }
        written
    }
}

fn with_failures(detail: Value, failures: u64) -> Value {
    let mut detail = match detail {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("detail".into(), other);
            m
        }
    };
    detail.insert("failures".into(), json!(failures));
    Value::Object(detail)
}

impl<R: TenantRegistry> Audited<R> {
    /// Records a call about tenant `id` that returned `result`.
    async fn tenant_change<T>(
        &self,
        id: &TenantId,
        action: &str,
        result: &Result<T>,
        detail: impl FnOnce(&T) -> Value,
    ) {
        self.record_result(
            &Scope::Tenant(id.clone()),
            action,
            tenant_target(id),
            result,
            detail,
        )
        .await;
    }

    /// The log of a login as tenant `id` that `error` refused: the
    /// tenant's, or the admin log when no such tenant exists.
    async fn login_scope(&self, id: &TenantId, error: &Error) -> (Scope, String) {
        let exists = match error.kind() {
            ErrorKind::Unauthorized => self.inner.get(id).await.is_ok(),
            _ => true,
        };
        if exists {
            (Scope::Tenant(id.clone()), tenant_target(id))
        } else {
            (Scope::Admin, "an unknown tenant".to_string())
        }
    }

    /// This view's context for a login that succeeded as `who`: a view
    /// that did not know who was logging in (`anonymous`) now does.
    fn logged_in(&self, who: Actor) -> AuditContext {
        let mut ctx = self.ctx.clone();
        if ctx.actor.kind == "anonymous" {
            ctx.actor = who;
        }
        ctx
    }

    /// Records a tenant login (as `who`, when it succeeded) that came to
    /// `done` (the entry's detail, or the error).
    async fn tenant_login(
        &self,
        id: &TenantId,
        who: Actor,
        done: std::result::Result<Value, &Error>,
    ) {
        match done {
            Ok(detail) => {
                let ctx = self.logged_in(who);
                let entry = self.entry(
                    &ctx,
                    "session.login",
                    tenant_target(id),
                    Outcome::Ok,
                    detail,
                );
                self.append(&Scope::Tenant(id.clone()), entry).await;
            }
            Err(e) => match error_outcome(e) {
                Some(Outcome::Refused) => {
                    let (scope, target) = self.login_scope(id, e).await;
                    let mut detail = error_detail(e);
                    if scope == Scope::Admin {
                        detail["tenant"] = json!(id);
                    }
                    self.record_refusal(&scope, "session.login", target, detail)
                        .await;
                }
                Some(outcome) => {
                    self.record(
                        &Scope::Tenant(id.clone()),
                        "session.login",
                        tenant_target(id),
                        outcome,
                        error_detail(e),
                    )
                    .await;
                }
                None => {}
            },
        }
    }

    /// Records an admin login that came to `done`.
    async fn admin_login(&self, done: std::result::Result<Value, &Error>) {
        match done {
            Ok(detail) => {
                let ctx = self.logged_in(Actor::admin());
                let entry = self.entry(&ctx, "session.login", "admin".into(), Outcome::Ok, detail);
                self.append(&Scope::Admin, entry).await;
            }
            Err(e) => match error_outcome(e) {
                Some(Outcome::Refused) => {
                    self.record_refusal(&Scope::Admin, "session.login", "admin", error_detail(e))
                        .await;
                }
                Some(outcome) => {
                    self.record(
                        &Scope::Admin,
                        "session.login",
                        "admin",
                        outcome,
                        error_detail(e),
                    )
                    .await;
                }
                None => {}
            },
        }
    }

    /// Records a refused tenant login that never reached the registry (the
    /// server's tenant layer refused the credential first): aggregated, in
    /// the log of `tenant` when it names one that exists, else the admin log.
    pub async fn record_refused_login(&self, tenant: Option<&TenantId>, error: &Error) {
        match tenant {
            Some(id) => self.tenant_login(id, Actor::anonymous(), Err(error)).await,
            None => {
                if error_outcome(error) == Some(Outcome::Refused) {
                    self.record_refusal(
                        &Scope::Admin,
                        "session.login",
                        "an unknown tenant",
                        error_detail(error),
                    )
                    .await;
                }
            }
        }
    }

    /// Records a refused admin login that never reached the registry (the
    /// server's admin guard refused the credential first).
    pub async fn record_refused_admin_login(&self, error: &Error) {
        self.admin_login(Err(error)).await;
    }
}

/// What a call came to: the entry's detail, or the error.
fn done<T>(r: &Result<T>, detail: impl FnOnce(&T) -> Value) -> std::result::Result<Value, &Error> {
    r.as_ref().map(detail)
}

fn session_detail(s: &IssuedSession) -> Value {
    json!({ "session": s.session.id, "key": s.session.session.key, "expires_at": s.session.session.expires_at })
}

#[async_trait]
impl<R: TenantRegistry> TenantRegistry for Audited<R> {
    async fn is_bootstrapped(&self) -> Result<bool> {
        self.inner.is_bootstrapped().await
    }
    async fn bootstrap(&self, p: &Secret) -> Result<()> {
        let r = self.inner.bootstrap(p).await;
        self.record_result(&Scope::Admin, "registry.bootstrap", "registry", &r, |_| {
            Value::Null
        })
        .await;
        r
    }
    async fn admin_generation(&self) -> Result<u64> {
        self.inner.admin_generation().await
    }
    async fn set_admin_password(&self, p: &Secret) -> Result<u64> {
        let r = self.inner.set_admin_password(p).await;
        self.record_result(
            &Scope::Admin,
            "admin.credential",
            "admin",
            &r,
            |g| json!({ "generation": g }),
        )
        .await;
        r
    }
    async fn verify_admin(&self, p: &Secret) -> Result<()> {
        let r = self.inner.verify_admin(p).await;
        if self.ctx.login {
            self.admin_login(done(&r, |_| Value::Null)).await;
        }
        r
    }
    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        let asked = new.id.clone();
        let r = self.inner.create(new).await;
        match (&r, asked) {
            (Ok(c), _) => {
                self.tenant_change(&c.tenant.id, "tenant.create", &r, |c| {
                    json!({ "plan": c.tenant.plan.as_str(), "display_name": c.tenant.display_name })
                })
                .await
            }
            (Err(_), Some(id)) => {
                self.tenant_change(&id, "tenant.create", &r, |_| Value::Null)
                    .await
            }
            (Err(_), None) => {
                self.record_result(&Scope::Admin, "tenant.create", "a new tenant", &r, |_| {
                    Value::Null
                })
                .await;
            }
        }
        r
    }
    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        self.inner.get(id).await
    }
    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        self.inner.list(filter)
    }
    async fn update(&self, id: &TenantId, u: TenantUpdate) -> Result<Tenant> {
        let fields = update_fields(&u);
        let r = self.inner.update(id, u).await;
        self.tenant_change(
            id,
            "tenant.update",
            &r,
            |t| json!({ "fields": fields, "revision": t.revision }),
        )
        .await;
        r
    }
    async fn suspend(&self, id: &TenantId, reason: Option<String>) -> Result<Tenant> {
        let detail = json!({ "reason": reason });
        let r = self.inner.suspend(id, reason).await;
        self.tenant_change(id, "tenant.suspend", &r, |_| detail)
            .await;
        r
    }
    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        let r = self.inner.activate(id).await;
        self.tenant_change(id, "tenant.activate", &r, |_| Value::Null)
            .await;
        r
    }
    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        let r = self.inner.rotate(id).await;
        self.tenant_change(
            id,
            "tenant.rotate",
            &r,
            |c| json!({ "generation": c.tenant.credential.generation }),
        )
        .await;
        r
    }
    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        let r = self.inner.delete(id).await;
        self.tenant_change(id, "tenant.delete", &r, |_| Value::Null)
            .await;
        r
    }
    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        let r = self.inner.purge(id, grace).await;
        self.tenant_change(
            id,
            "tenant.purge",
            &r,
            |n| json!({ "removed": n, "grace_seconds": grace.as_secs() }),
        )
        .await;
        r
    }
    async fn authenticate(&self, id: &TenantId, s: &Secret) -> Result<Tenant> {
        let r = self.inner.authenticate(id, s).await;
        if self.ctx.login {
            self.tenant_login(id, Actor::tenant(id), done(&r, |_| Value::Null))
                .await;
        }
        r
    }
    async fn authenticate_key(&self, s: &Secret) -> Result<Tenant> {
        self.inner.authenticate_key(s).await
    }
    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        self.inner.usage(id).await
    }
    async fn reserve(&self, id: &TenantId, res: Resource, n: u64) -> Result<Reservation> {
        let r = self.inner.reserve(id, res, n).await;
        if let Err(e @ Error::QuotaExceeded { .. }) = &r {
            let mut detail = error_detail(e);
            detail["resource"] = json!(res);
            detail["amount"] = json!(n);
            self.record_refusal(
                &Scope::Tenant(id.clone()),
                "quota.refused",
                format!("quota {}", res.as_str()),
                detail,
            )
            .await;
        }
        r
    }
    async fn commit(&self, r: &Reservation) -> Result<()> {
        self.inner.commit(r).await
    }
    async fn release(&self, r: &Reservation) -> Result<()> {
        self.inner.release(r).await
    }
    async fn record_usage(&self, id: &TenantId, e: UsageEvent) -> Result<Usage> {
        self.inner.record_usage(id, e).await
    }
    async fn release_recording(&self, r: &Reservation, e: UsageEvent) -> Result<bool> {
        self.inner.release_recording(r, e).await
    }
    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
        self.inner.reservations(id).await
    }
    async fn login_tenant(&self, id: &TenantId, s: &Secret) -> Result<IssuedSession> {
        let r = self.inner.login_tenant(id, s).await;
        self.tenant_login(id, Actor::tenant(id), done(&r, session_detail))
            .await;
        r
    }
    async fn login_admin(&self, p: &Secret) -> Result<IssuedSession> {
        let r = self.inner.login_admin(p).await;
        self.admin_login(done(&r, session_detail)).await;
        r
    }
    async fn authenticate_session(&self, t: &Secret) -> Result<AuthenticatedSession> {
        self.inner.authenticate_session(t).await
    }
    async fn sessions(&self, o: &SessionOwner) -> Result<Vec<ServerSession>> {
        self.inner.sessions(o).await
    }
    async fn revoke_session(&self, o: &SessionOwner, id: &SessionId) -> Result<()> {
        let r = self.inner.revoke_session(o, id).await;
        let own = self.ctx.actor.session.as_deref() == Some(id.as_str());
        let action = if own {
            "session.logout"
        } else {
            "session.revoke"
        };
        let scope = match o {
            SessionOwner::Admin => Scope::Admin,
            SessionOwner::Tenant(t) => Scope::Tenant(t.clone()),
        };
        self.record_result(&scope, action, session_target(id), &r, |_| Value::Null)
            .await;
        r
    }
    async fn authenticate_caller(&self, id: Option<&TenantId>, s: &Secret) -> Result<Caller> {
        let r = self.inner.authenticate_caller(id, s).await;
        if self.ctx.login {
            match &r {
                Ok(c) => {
                    let who = match &c.key {
                        Some(k) => Actor::key(k.id.as_str(), &k.name),
                        None => Actor::tenant(&c.tenant.id),
                    };
                    self.tenant_login(&c.tenant.id, who, Ok(Value::Null)).await
                }
                Err(e) => self.record_refused_login(id, e).await,
            }
        }
        r
    }
    async fn create_key(&self, t: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
        let r = self.inner.create_key(t, new).await;
        let target = match &r {
            Ok(c) => format!("key {}", c.key.id),
            Err(_) => "a new key".to_string(),
        };
        self.record_result(&Scope::Tenant(t.clone()), "key.create", target, &r, |c| {
            key_detail(&c.key)
        })
        .await;
        r
    }
    async fn keys(&self, t: &TenantId) -> Result<Vec<ApiKey>> {
        self.inner.keys(t).await
    }
    async fn key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
        self.inner.key(t, id).await
    }
    async fn revoke_key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
        let r = self.inner.revoke_key(t, id).await;
        self.record_result(
            &Scope::Tenant(t.clone()),
            "key.revoke",
            format!("key {id}"),
            &r,
            key_detail,
        )
        .await;
        r
    }
    async fn rotate_key(&self, t: &TenantId, id: &KeyId, grace: Duration) -> Result<RotatedApiKey> {
        let r = self.inner.rotate_key(t, id, grace).await;
        self.record_result(
            &Scope::Tenant(t.clone()),
            "key.rotate",
            format!("key {id}"),
            &r,
            |k| {
                let mut d = key_detail(&k.created.key);
                d["new_key"] = json!(k.created.key.id);
                d["grace_seconds"] = json!(grace.as_secs());
                d["old_key_expires_at"] = json!(k.previous.expires_at);
                d
            },
        )
        .await;
        r
    }
    async fn touch_key(&self, t: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        self.inner.touch_key(t, id, at).await
    }
}
