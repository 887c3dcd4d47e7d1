//! Server-issued sessions: login (the secret or admin credential exchanged
//! for a random token), the token check, listing and revocation.
//!
//! # Layout and format
//!
//! ```text
//! registry-sessions/admin/<session-id>.yaml          admin sessions
//! registry-sessions/tenants/<tenant>/<session-id>.yaml   one tenant's sessions
//! ```
//!
//! Outside `tenants/<id>/`, so a tenant that can write its own prefix can
//! neither forge nor extend a session; one directory per owner, so listing
//! a tenant's sessions reads none of another's. A record holds the kind,
//! the tenant, the credential generation at login, the token's SHA-256,
//! the creation and expiry times and, at most once per
//! [`LAST_USED_GRANULARITY`], the last use. The token (`tns_<owner>_<32
//! base62>`, about 190 random bits from the OS CSPRNG) is returned once and
//! never stored; its SHA-256 is enough for a random token (nothing to
//! brute-force), and its first 128 bits are the session id, which names the
//! record, so a check is one read and never a scan.
//!
//! # The check
//!
//! [`authenticate_session`](tenancy_core::TenantRegistry::authenticate_session)
//! reads the record by the id the token gives, compares the token's
//! SHA-256 in constant time, then applies core's `Session` rules: expiry,
//! the generation (the tenant record's, or the manifest's for an admin
//! session: a rotation or an admin credential change ends every older
//! session) and the tenant's status. Two reads, no bcrypt (three for a
//! session opened with a named key: its key set is read too, so a revoked
//! or expired key ends its sessions on the next check). A record that
//! does not decode authenticates nothing.
//!
//! # Writes
//!
//! Login writes the record with `Create` (a token collision is impossible
//! in practice and would be refused, not overwritten), then deletes the
//! owner's expired records (best effort; `tenancy doctor --repair` removes
//! what is left). Revocation deletes the record (by version where the
//! backend can), so the next check on any replica finds nothing. The
//! last-use time is written with `Update(version)` of the record just
//! read, so it can never bring a revoked record back.

use std::time::Duration;

use futures::StreamExt;
use tenancy_core::credentials::{constant_time_eq, sha256_hex};
use tenancy_core::session::{generate_session_token, parse_session_token};
use tenancy_core::StateBackendExt as _;
use tenancy_core::{
    AuthenticatedSession, Error, IssuedSession, PutMode, Result, Secret, ServerSession, Session,
    SessionId, SessionOwner, StateKey, TenantRegistry,
};

use super::layout;
use super::records::{from_yaml, to_yaml, SessionRecord};
use super::StoreRegistry;

/// How stale a session's recorded last use may get: it is written at most
/// this often per session (10 min).
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(600);

const NO_SESSION: &str =
    "invalid session token: the session was revoked, ended or never existed; log in again";

impl StoreRegistry {
    pub(super) async fn login_tenant_session(
        &self,
        id: &tenancy_core::TenantId,
        secret: &Secret,
    ) -> Result<IssuedSession> {
        self.ensure_cas()?;
        // The primary secret or a named key: a key's session has its role.
        let caller = self.authenticate_any(Some(id), secret).await?;
        let session = Session::for_caller(&caller, self.now());
        self.issue(SessionOwner::Tenant(id.clone()), session).await
    }

    pub(super) async fn login_admin_session(&self, password: &Secret) -> Result<IssuedSession> {
        self.ensure_cas()?;
        let generation = self.verify_admin_generation(password).await?;
        self.issue(SessionOwner::Admin, Session::admin(self.now(), generation))
            .await
    }

    async fn issue(&self, owner: SessionOwner, session: Session) -> Result<IssuedSession> {
        let token = generate_session_token(&owner);
        let id = SessionId::of_token(token.expose());
        let record = SessionRecord::new(&session, sha256_hex(token.expose().as_bytes()));
        self.backend
            .put(
                &layout::session(&owner, &id)?,
                to_yaml(&record, "a session record")?,
                PutMode::Create,
            )
            .await?;
        // Tidying: a failure here is not the caller's problem.
        let _ = self.sweep_expired(&owner).await;
        Ok(IssuedSession {
            session: ServerSession {
                id,
                session,
                last_used_at: None,
            },
            token,
        })
    }

    /// The owner's session records that decode, with their keys and versions.
    async fn owner_records(
        &self,
        owner: &SessionOwner,
    ) -> Result<Vec<(StateKey, SessionRecord, tenancy_core::Version)>> {
        let dir = layout::session_dir(owner)?;
        let keys: Vec<StateKey> = {
            let mut listed = self.backend.list(Some(&dir));
            let mut keys = Vec::new();
            while let Some(entry) = listed.next().await {
                keys.push(entry?.key);
            }
            keys
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if layout::session_of(&key).is_none() {
                continue;
            }
            let Some(obj) = self.backend.get(&key).await? else {
                continue;
            };
            // A damaged record authenticates nothing and lists as nothing.
            if let Ok(rec) = from_yaml::<SessionRecord>(&obj.bytes, "a session record") {
                out.push((key, rec, obj.version));
            }
        }
        Ok(out)
    }

    async fn sweep_expired(&self, owner: &SessionOwner) -> Result<()> {
        let now = self.now();
        for (key, rec, version) in self.owner_records(owner).await? {
            if rec.expires_at <= now {
                self.delete_record(&key, version).await?;
            }
        }
        Ok(())
    }

    async fn delete_record(&self, key: &StateKey, version: tenancy_core::Version) -> Result<()> {
        match self.backend.delete_if_unchanged(key, version).await {
            Ok(()) | Err(Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn authenticate_by_session(
        &self,
        token: &Secret,
    ) -> Result<AuthenticatedSession> {
        let Some((owner, id)) = parse_session_token(token.expose()) else {
            return Err(Error::unauthorized(NO_SESSION));
        };
        let key = layout::session(&owner, &id)?;
        let Some(obj) = self.backend.get(&key).await? else {
            return Err(Error::unauthorized(NO_SESSION));
        };
        let what = format!("session record {key}");
        let rec: SessionRecord =
            from_yaml(&obj.bytes, &what).map_err(|_| Error::unauthorized(NO_SESSION))?;
        let digest = sha256_hex(token.expose().as_bytes());
        if !constant_time_eq(rec.token_sha256.as_bytes(), digest.as_bytes()) {
            return Err(Error::unauthorized(NO_SESSION));
        }
        let session = rec
            .session(&what)
            .map_err(|_| Error::unauthorized(NO_SESSION))?;
        let now = self.now();
        let mut key_of_session = None;
        let tenant = match (&owner, session.tenant_id()) {
            (SessionOwner::Admin, None) => {
                let current = self.stored_admin_generation().await?;
                session.validate_admin(now, current)?;
                None
            }
            (SessionOwner::Tenant(t), Some(named)) if t == named => {
                session.check_expiry(now)?;
                let tenant = match self.get(t).await {
                    Ok(tenant) => tenant,
                    Err(Error::NotFound { .. }) => return Err(Error::unauthorized(NO_SESSION)),
                    Err(e) => return Err(e),
                };
                session.validate_tenant(&tenant, now)?;
                if let Some(kid) = &session.key {
                    let key = self.session_key(t, kid).await?;
                    session.validate_key(key.as_ref(), now)?;
                    key_of_session = key;
                }
                Some(tenant)
            }
            // A record filed under another owner than it names.
            _ => return Err(Error::unauthorized(NO_SESSION)),
        };
        let due = rec.last_used_at.is_none_or(|at| {
            chrono::Duration::from_std(LAST_USED_GRANULARITY).is_ok_and(|g| now - at >= g)
        });
        let mut last_used_at = rec.last_used_at;
        if due {
            let mut touched = rec.clone();
            touched.last_used_at = Some(now);
            // Update by version: a revocation in between wins. Best effort.
            if let Ok(bytes) = to_yaml(&touched, "a session record") {
                if self
                    .backend
                    .put(&key, bytes, PutMode::Update(obj.version))
                    .await
                    .is_ok()
                {
                    last_used_at = Some(now);
                }
            }
        }
        Ok(AuthenticatedSession {
            session: ServerSession {
                id,
                session,
                last_used_at,
            },
            tenant,
            key: key_of_session,
        })
    }

    pub(super) async fn list_sessions(&self, owner: &SessionOwner) -> Result<Vec<ServerSession>> {
        if let SessionOwner::Tenant(t) = owner {
            // NotFound for an unknown tenant.
            self.get_record(t).await?;
        }
        let now = self.now();
        let mut out = Vec::new();
        for (key, rec, _) in self.owner_records(owner).await? {
            let Some((_, id)) = layout::session_of(&key) else {
                continue;
            };
            if rec.expires_at <= now {
                continue;
            }
            let Ok(session) = rec.session(key.as_str()) else {
                continue;
            };
            out.push(ServerSession {
                id,
                session,
                last_used_at: rec.last_used_at,
            });
        }
        out.sort_by(|a, b| (a.session.issued_at, &a.id).cmp(&(b.session.issued_at, &b.id)));
        Ok(out)
    }

    pub(super) async fn revoke(&self, owner: &SessionOwner, id: &SessionId) -> Result<()> {
        let key = layout::session(owner, id)?;
        let Some(obj) = self.backend.get(&key).await? else {
            return Err(Error::not_found(format!("session {id} of {owner}")));
        };
        self.delete_record(&key, obj.version).await
    }
}
