//! Named API key commands: `key create|list|revoke|rotate`.
//!
//! Without `--tenant` they work on the logged-in tenant's own keys (its
//! owner: the primary secret or an owner key; [`super::TenantApi`]); with
//! `--tenant ID` the admin works on any tenant's ([`super::Ctx::require_admin`]).
//! In both modes through the server in remote mode. A new or rotated key is
//! printed once; `-o json` prints the server's `CreatedKeyView` /
//! `RotatedKeyView` / `KeyList`, so scripts read the same document from the
//! CLI and the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenancy_core::{
    ApiKey, CreatedApiKey, KeyId, NewApiKey, RotatedApiKey, TenantId, TenantRegistry,
};
use tenancy_server::views::{CreatedKeyView, KeyList, KeyView, RotatedKeyView};

use super::{Ctx, TenantApi};
use crate::cli::{KeyCreateArgs, KeyListArgs, KeyRevokeArgs, KeyRotateArgs};
use crate::exit::CliError;
use crate::io::Cancelled;
use crate::output::{ago, time, Cell};

/// Whose keys a command works on: the tenant's own, or (admin) any tenant's.
enum Keys {
    Own(Box<dyn TenantApi>),
    Admin(Arc<dyn TenantRegistry>, TenantId),
}

impl Keys {
    async fn of(ctx: &mut Ctx<'_>, tenant: Option<TenantId>) -> anyhow::Result<Keys> {
        Ok(match tenant {
            Some(id) => Keys::Admin(ctx.require_admin().await?, id),
            None => Keys::Own(ctx.require_tenant().await?),
        })
    }

    fn tenant(&self) -> &TenantId {
        match self {
            Keys::Own(api) => api.id(),
            Keys::Admin(_, id) => id,
        }
    }

    async fn list(&self) -> tenancy_core::Result<Vec<ApiKey>> {
        match self {
            Keys::Own(api) => api.keys().await,
            Keys::Admin(r, id) => r.keys(id).await,
        }
    }

    async fn create(&self, new: NewApiKey) -> tenancy_core::Result<CreatedApiKey> {
        match self {
            Keys::Own(api) => api.create_key(new).await,
            Keys::Admin(r, id) => r.create_key(id, new).await,
        }
    }

    async fn revoke(&self, key: &KeyId) -> tenancy_core::Result<ApiKey> {
        match self {
            Keys::Own(api) => api.revoke_key(key).await,
            Keys::Admin(r, id) => r.revoke_key(id, key).await,
        }
    }

    async fn rotate(&self, key: &KeyId, grace: Duration) -> tenancy_core::Result<RotatedApiKey> {
        match self {
            Keys::Own(api) => api.rotate_key(key, grace).await,
            Keys::Admin(r, id) => r.rotate_key(id, key, grace).await,
        }
    }
}

fn optional_time(t: Option<chrono::DateTime<chrono::Utc>>) -> Cell {
    t.map_or_else(|| "-".into(), |t| time(&t).into())
}

fn key_pairs(k: &ApiKey, now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, Cell)> {
    vec![
        ("id", k.id.to_string().into()),
        ("name", k.name.clone().into()),
        ("role", k.role.to_string().into()),
        ("status", k.status_at(now).to_string().into()),
        ("key", k.hint().into()),
        ("created", time(&k.created_at).into()),
        ("expires", optional_time(k.expires_at)),
    ]
}

/// Prints a new key once, with the warning that it is not shown again.
fn show_key(ctx: &mut Ctx<'_>, created: &CreatedApiKey, headline: &str) -> anyhow::Result<()> {
    let now = ctx.now();
    if !ctx.is_json() {
        let mut out = ctx.out();
        out.line(headline)?;
        out.pairs(key_pairs(&created.key, now))?;
        out.line("")?;
        out.pairs(vec![("secret", created.secret.expose().into())])?;
    }
    ctx.warn(&format!(
        "API key {} is shown only this once and cannot be recovered; store it now (if lost, run `tenancy key rotate {}`)",
        created.key.name, created.key.id
    ))
}

/// `tenancy key create --name N --role R [--expires D] [--tenant ID]`.
pub(crate) async fn create(ctx: &mut Ctx<'_>, args: KeyCreateArgs) -> anyhow::Result<()> {
    let KeyCreateArgs {
        name,
        role,
        expires,
        tenant,
    } = args;
    tenancy_core::apikey::validate_key_name(&name).map_err(|e| CliError::usage(e.to_string()))?;
    let expires_at = match expires {
        None => None,
        Some(d) if d.is_zero() => {
            return Err(CliError::usage("--expires must be longer than 0s").into())
        }
        Some(d) => Some(ctx.now() + tenancy_core::clock::chrono_duration(d)),
    };
    let keys = Keys::of(ctx, tenant).await?;
    let created = keys
        .create(NewApiKey {
            name,
            role: role.into(),
            expires_at,
        })
        .await
        .with_context(|| format!("creating an API key for tenant {}", keys.tenant()))?;
    if ctx.is_json() {
        let now = ctx.now();
        ctx.out().json(&CreatedKeyView {
            key: KeyView::new(&created.key, now),
            secret: created.secret.expose().to_string(),
        })?;
    }
    let headline = format!(
        "Created API key {} ({}) of tenant {}.",
        created.key.name,
        created.key.id,
        keys.tenant()
    );
    show_key(ctx, &created, &headline)
}

/// `tenancy key list [--tenant ID]`.
pub(crate) async fn list(ctx: &mut Ctx<'_>, args: KeyListArgs) -> anyhow::Result<()> {
    let keys = Keys::of(ctx, args.tenant).await?;
    let all = keys.list().await?;
    let now = ctx.now();
    if ctx.is_json() {
        return ctx.out().json(&KeyList {
            keys: all.iter().map(|k| KeyView::new(k, now)).collect(),
        });
    }
    let rows = all
        .iter()
        .map(|k| {
            vec![
                k.id.to_string().into(),
                k.name.clone().into(),
                k.role.to_string().into(),
                k.status_at(now).to_string().into(),
                k.hint().into(),
                time(&k.created_at).into(),
                optional_time(k.expires_at),
                k.last_used_at
                    .map_or_else(|| "never".into(), |t| ago(&t, now).into()),
            ]
        })
        .collect();
    ctx.out().table(
        &[
            "ID", "NAME", "ROLE", "STATUS", "KEY", "CREATED", "EXPIRES", "LAST USED",
        ],
        rows,
        &format!(
            "Tenant {} has no API keys; create one with `tenancy key create --name NAME --role viewer`.",
            keys.tenant()
        ),
    )
}

/// `tenancy key revoke KEY_ID [--yes] [--tenant ID]`.
pub(crate) async fn revoke(ctx: &mut Ctx<'_>, args: KeyRevokeArgs) -> anyhow::Result<()> {
    let KeyRevokeArgs { id, yes, tenant } = args;
    let keys = Keys::of(ctx, tenant).await?;
    if !yes {
        match ctx.io.confirm(&format!(
            "Revoke API key {id} of tenant {}? Requests with it are refused from now on. [y/N] ",
            keys.tenant()
        ))? {
            Some(true) => {}
            Some(false) => return Err(Cancelled.into()),
            None => {
                return Err(CliError::usage(format!(
                    "revoking needs confirmation; pass --yes (`tenancy key revoke {id} --yes`)"
                ))
                .into())
            }
        }
    }
    let key = keys
        .revoke(&id)
        .await
        .with_context(|| format!("revoking API key {id} of tenant {}", keys.tenant()))?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&KeyView::new(&key, now))
    } else {
        ctx.out().line(&format!(
            "Revoked API key {} ({}) of tenant {}: it is refused from the next request on.",
            key.name,
            key.id,
            keys.tenant()
        ))
    }
}

/// `tenancy key rotate KEY_ID [--grace D] [--tenant ID]`.
pub(crate) async fn rotate(ctx: &mut Ctx<'_>, args: KeyRotateArgs) -> anyhow::Result<()> {
    let KeyRotateArgs { id, grace, tenant } = args;
    let keys = Keys::of(ctx, tenant).await?;
    let rotated = keys
        .rotate(&id, grace)
        .await
        .with_context(|| format!("rotating API key {id} of tenant {}", keys.tenant()))?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&RotatedKeyView {
            key: KeyView::new(&rotated.created.key, now),
            secret: rotated.created.secret.expose().to_string(),
            previous: KeyView::new(&rotated.previous, now),
        })?;
    }
    let old = &rotated.previous;
    let until = match old.expires_at {
        Some(at) if at > now => format!("keeps working until {}", time(&at)),
        _ => "stopped working".to_string(),
    };
    let headline = format!(
        "Rotated API key {} of tenant {}: the old key {} {until}; the new one is {}.",
        old.name,
        keys.tenant(),
        old.id,
        rotated.created.key.id
    );
    show_key(ctx, &rotated.created, &headline)
}
