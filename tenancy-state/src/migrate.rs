//! Migration of a single-tenant `stacks/` tree into a tenant's state root.
//!
//! [`migrate_stacks`] copies every object below a source prefix (for example
//! `stacks`, as a single-tenant tool left it) to
//! `tenants/<id>/<version>/stacks/...` on the same backend.
//!
//! - **Idempotent**: an object already present at the destination with the
//!   same bytes is skipped, so an interrupted migration is finished by
//!   running it again.
//! - **Never overwrites** a destination object that differs (the tenant may
//!   have moved on since): it is listed in [`MigrationReport::conflicts`].
//! - **Never deletes** the source.
//! - **Verifies** the object counts at the end: every source object must be
//!   present at the destination, or the migration fails with
//!   [`Error::Precondition`] saying how many are missing.

use std::collections::HashSet;

use futures::StreamExt;

use tenancy_core::{Error, PutMode, Result, StateBackend, StateKey, Tenant, TenantStatus};

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Where the objects came from.
    pub source: String,
    /// Where they went: `tenants/<id>/<version>/stacks`.
    pub destination: String,
    /// Objects found below the source.
    pub source_objects: u64,
    /// Objects copied by this run.
    pub copied: u64,
    /// Objects already present with identical content.
    pub skipped_identical: u64,
    /// Destination objects that differ from their source and were left alone.
    pub conflicts: Vec<StateKey>,
    /// Bytes copied by this run.
    pub bytes_copied: u64,
    /// Source objects found at the destination when verifying.
    pub verified_objects: u64,
}

impl MigrationReport {
    /// True when every source object is at the destination with the same content.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty() && self.verified_objects == self.source_objects
    }
}

/// Copies the tree below `from` into `tenants/<id>/<version>/stacks/` of
/// `tenant`, calling `progress(done, total)` after each object.
///
/// `from` is usually `stacks`; the part of each key below `from` is kept, so
/// `stacks/web/prod/state.json` becomes
/// `tenants/<id>/v1/stacks/web/prod/state.json`.
pub async fn migrate_stacks(
    backend: &dyn StateBackend,
    tenant: &Tenant,
    from: &StateKey,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<MigrationReport> {
    if tenant.status == TenantStatus::Deleted {
        return Err(Error::precondition(format!(
            "tenant {} is deleted; nothing can be migrated into it",
            tenant.id
        )));
    }
    let dest_root = tenant.state_root()?.child("stacks")?;
    let tenants_root = StateKey::new(tenancy_core::layout::TENANTS)?;
    if from == &dest_root
        || dest_root.is_under(from)
        || from.is_under(&dest_root)
        || from.is_under(&tenants_root)
        || from == &tenants_root
    {
        return Err(Error::invalid(format!(
            "cannot migrate {from} into {dest_root}: the source must be a single-tenant tree outside tenants/"
        )));
    }

    let mut keys = Vec::new();
    {
        let mut listing = backend.list(Some(from));
        while let Some(e) = listing.next().await {
            keys.push(e?.key);
        }
    }
    keys.sort();
    let total = keys.len() as u64;
    let mut report = MigrationReport {
        source: from.to_string(),
        destination: dest_root.to_string(),
        source_objects: total,
        ..Default::default()
    };
    progress(0, total);

    let mut expected = HashSet::with_capacity(keys.len());
    for (i, src) in keys.iter().enumerate() {
        let Some(rest) = src.strip_prefix(from) else {
            continue;
        };
        let dst = dest_root.join(&rest)?;
        expected.insert(dst.clone());
        let Some(obj) = backend.get(src).await? else {
            return Err(Error::precondition(format!(
                "{src} disappeared while it was being migrated; run the migration again"
            )));
        };
        match backend.put(&dst, obj.bytes.clone(), PutMode::Create).await {
            Ok(_) => {
                report.copied += 1;
                report.bytes_copied += obj.bytes.len() as u64;
            }
            Err(Error::AlreadyExists { .. }) => match backend.get(&dst).await? {
                Some(existing) if existing.bytes == obj.bytes => report.skipped_identical += 1,
                _ => report.conflicts.push(dst),
            },
            Err(e) => return Err(e),
        }
        progress(i as u64 + 1, total);
    }

    let mut listing = backend.list(Some(&dest_root));
    while let Some(e) = listing.next().await {
        if expected.contains(&e?.key) {
            report.verified_objects += 1;
        }
    }
    if report.verified_objects != report.source_objects {
        return Err(Error::precondition(format!(
            "migration of {from} into {dest_root} is incomplete: {} source objects, {} found at the destination",
            report.source_objects, report.verified_objects
        )));
    }
    Ok(report)
}
