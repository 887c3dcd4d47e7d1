//! Key names of the registry on its store (see the [registry docs](super)):
//! records, the API-key index and usage sit outside `tenants/<id>/`, so a
//! tenant that can write its own prefix can change none of them.

use tenancy_core::{Result, SessionId, SessionOwner, StateKey, TenantId};

pub(crate) use tenancy_core::layout::tenant_root;

/// The manifest.
pub(crate) const MANIFEST: &str = "tenants.yaml";
/// The prefix of tenant records.
pub(crate) const RECORDS: &str = "registry";
/// The prefix of the API-key index.
pub(crate) const KEY_INDEX: &str = "registry-keys";
/// The prefix of the tenants' named API keys.
pub(crate) const API_KEYS: &str = "registry-apikeys";
/// The prefix of usage records.
pub(crate) const USAGE: &str = "registry-usage";
/// The prefix of archived state.
pub(crate) const ARCHIVE: &str = "archive";
/// The prefix of server-issued session records.
pub(crate) const SESSIONS: &str = "registry-sessions";

fn key(s: String) -> Result<StateKey> {
    StateKey::new(s)
}

/// `tenants.yaml`.
pub(crate) fn manifest() -> Result<StateKey> {
    key(MANIFEST.into())
}
/// `registry`.
pub(crate) fn records() -> Result<StateKey> {
    key(RECORDS.into())
}
/// `registry/<id>.yaml`.
pub(crate) fn record(id: &TenantId) -> Result<StateKey> {
    key(format!("{RECORDS}/{id}.yaml"))
}
/// The tenant id of a key below `registry/`, if it names a record.
pub(crate) fn record_id(k: &StateKey) -> Option<TenantId> {
    let rest = k.as_str().strip_prefix(RECORDS)?.strip_prefix('/')?;
    let id = rest.strip_suffix(".yaml")?;
    TenantId::new(id).ok()
}
/// `registry-keys/<lookup-id>.yaml`.
pub(crate) fn key_index(lookup_id: &str) -> Result<StateKey> {
    key(format!("{KEY_INDEX}/{lookup_id}.yaml"))
}
/// `registry-apikeys/<id>.yaml`: the tenant's named API keys.
pub(crate) fn api_keys(id: &TenantId) -> Result<StateKey> {
    key(format!("{API_KEYS}/{id}.yaml"))
}
/// `registry-usage/<id>.yaml`.
pub(crate) fn usage(id: &TenantId) -> Result<StateKey> {
    key(format!("{USAGE}/{id}.yaml"))
}
/// `tenants/<id>/tenant.yaml`.
pub(crate) fn tenant_config(id: &TenantId) -> Result<StateKey> {
    tenant_root(id)?.child("tenant.yaml")
}
/// `tenants/<id>/<version>/layout.yaml`.
pub(crate) fn state_marker(id: &TenantId, version: &str) -> Result<StateKey> {
    tenancy_core::layout::state_root(id, version)?.child("layout.yaml")
}
/// `archive/<id>`.
pub(crate) fn archive_root(id: &TenantId) -> Result<StateKey> {
    key(format!("{ARCHIVE}/{id}"))
}

/// `archive/<id>/<deleted_at as 20240501T120000Z>`: where a deletion at
/// `deleted_at` moved the tenant's state.
pub fn archive_dir(id: &TenantId, deleted_at: chrono::DateTime<chrono::Utc>) -> Result<StateKey> {
    archive_root(id)?.child(&deleted_at.format(ARCHIVE_TS_FORMAT).to_string())
}

pub(crate) const ARCHIVE_TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// `registry-sessions/admin` or `registry-sessions/tenants/<id>`: one
/// owner's sessions, so listing them reads no other owner's.
pub(crate) fn session_dir(owner: &SessionOwner) -> Result<StateKey> {
    match owner {
        SessionOwner::Admin => key(format!("{SESSIONS}/admin")),
        SessionOwner::Tenant(id) => key(format!("{SESSIONS}/tenants/{id}")),
    }
}
/// `<session_dir>/<session-id>.yaml`.
pub(crate) fn session(owner: &SessionOwner, id: &SessionId) -> Result<StateKey> {
    session_dir(owner)?.child(&format!("{id}.yaml"))
}
/// The owner and id a key below `registry-sessions/` names, if it is a
/// session record's name.
pub(crate) fn session_of(k: &StateKey) -> Option<(SessionOwner, SessionId)> {
    let rest = k.as_str().strip_prefix(SESSIONS)?.strip_prefix('/')?;
    let (dir, file) = rest.rsplit_once('/')?;
    let owner = match dir {
        "admin" => SessionOwner::Admin,
        _ => SessionOwner::Tenant(TenantId::new(dir.strip_prefix("tenants/")?).ok()?),
    };
    let id = SessionId::parse(file.strip_suffix(".yaml")?).ok()?;
    Some((owner, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keys() {
        let id = TenantId::new("acme").unwrap();
        assert_eq!(record(&id).unwrap().as_str(), "registry/acme.yaml");
        assert_eq!(record_id(&record(&id).unwrap()), Some(id.clone()));
        assert_eq!(
            record_id(&StateKey::new("registry/acme.json").unwrap()),
            None
        );
        assert_eq!(
            record_id(&StateKey::new("registry/x/acme.yaml").unwrap()),
            None
        );
        assert_eq!(usage(&id).unwrap().as_str(), "registry-usage/acme.yaml");
        assert_eq!(
            api_keys(&id).unwrap().as_str(),
            "registry-apikeys/acme.yaml"
        );
        assert_eq!(
            state_marker(&id, "v1").unwrap().as_str(),
            "tenants/acme/v1/layout.yaml"
        );
        assert_eq!(
            tenant_config(&id).unwrap().as_str(),
            "tenants/acme/tenant.yaml"
        );
        assert_eq!(
            key_index("ab12").unwrap().as_str(),
            "registry-keys/ab12.yaml"
        );
        assert_eq!(archive_root(&id).unwrap().as_str(), "archive/acme");
        let sid = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let owner = SessionOwner::Tenant(id);
        let k = session(&owner, &sid).unwrap();
        assert_eq!(
            k.as_str(),
            "registry-sessions/tenants/acme/0123456789abcdef0123456789abcdef.yaml"
        );
        assert_eq!(session_of(&k), Some((owner, sid.clone())));
        let k = session(&SessionOwner::Admin, &sid).unwrap();
        assert_eq!(session_of(&k), Some((SessionOwner::Admin, sid)));
        assert_eq!(
            session_of(&StateKey::new("registry-sessions/x/y.yaml").unwrap()),
            None
        );
    }
}
