//! Migration of a single-tenant `stacks/` tree into a tenant's state root.
//!
//! [`migrate_stacks`] copies every object below a source prefix (for example
//! `stacks`, as a single-tenant tool left it) to
//! `tenants/<id>/<version>/stacks/...` on the same backend.
//!
//! - **Tenant data only**: a source on or below one of the store's reserved
//!   top-level names ([`RESERVED_PREFIXES`]: the registry's records, key
//!   index, usage and sessions, the manifest, the archive, the locks, the
//!   locks-held records, every tenant's tree, the probe marker) is refused
//!   with [`Error::InvalidInput`] before anything is read.
//! - **Keeps the stack/env structure**: the tree below the last `stacks`
//!   segment of the source is kept, so `--from stacks/app` copies
//!   `stacks/app/prod/state.json` to `tenants/<id>/v1/stacks/app/prod/state.json`.
//!   A source without a `stacks` segment is itself the root of a stacks
//!   tree (`legacy/web/prod/state.json` becomes `.../stacks/web/prod/state.json`).
//! - **Counts against `max_stacks`**: the stacks the copy would add (a
//!   `<stack>/<env>/state.json` whose stack the tenant does not have yet) are
//!   counted against the tenant's limit up front. Over it, the migration is
//!   refused with [`Error::QuotaExceeded`] before anything is written,
//!   unless [`MigrateOptions::force`] is set (the report then says
//!   [`MigrationReport::forced_over_quota`]). Within it, the new stacks are
//!   reserved as [`Resource::Stacks`] through the registry (atomically, like
//!   `state put` of a new stack), committed when the copy is verified and
//!   released when it fails.
//! - **Dry run** ([`MigrateOptions::dry_run`]): lists and reads, never
//!   writes; the report lists what a real run would copy.
//! - **Idempotent**: an object already present at the destination with the
//!   same bytes is skipped, so an interrupted migration is finished by
//!   running it again.
//! - **Never overwrites** a destination object that differs (the tenant may
//!   have moved on since): it is listed in [`MigrationReport::conflicts`].
//! - **Never deletes** the source.
//! - **Verifies** the object counts at the end: every source object must be
//!   present at the destination, or the migration fails with
//!   [`Error::Precondition`] saying how many are missing.
//!
//! The copied objects are usually plain JSON (another tool's `state.json`
//! and `history/001.json`); the stack store reads them as the stacks' state
//! (see [`crate::stack`]).

use std::collections::{BTreeSet, HashSet};

use futures::StreamExt;

use tenancy_core::{
    Error, PutMode, Reservation, Resource, Result, StateBackend, StateKey, Tenant, TenantRegistry,
    TenantStatus,
};

use crate::object::PROBE_PREFIX;
use crate::registry::layout::{API_KEYS, ARCHIVE, KEY_INDEX, MANIFEST, RECORDS, SESSIONS, USAGE};

/// The top-level names the shared store keeps for itself; `migrate` refuses a
/// source on or below any of them.
pub const RESERVED_PREFIXES: &[&str] = &[
    MANIFEST,
    RECORDS,
    KEY_INDEX,
    API_KEYS,
    USAGE,
    SESSIONS,
    ARCHIVE,
    tenancy_core::layout::TENANTS,
    tenancy_core::layout::LOCKS,
    tenancy_core::layout::LOCKS_HELD,
    PROBE_PREFIX,
    crate::audit::AUDIT,
];

/// How [`migrate_stacks`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Plan only: list and read, write nothing; the report says what a real
    /// run would copy.
    pub dry_run: bool,
    /// Copy even when the new stacks take the tenant above its `max_stacks`.
    pub force: bool,
}

/// What a migration did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Where the objects came from.
    pub source: String,
    /// Where they went: `tenants/<id>/<version>/stacks`.
    pub destination: String,
    /// True for a dry run: nothing was written.
    pub dry_run: bool,
    /// Objects found below the source.
    pub source_objects: u64,
    /// Objects copied by this run (a dry run: that it would copy).
    pub copied: u64,
    /// Source and destination of each object copied (a dry run: that would be).
    pub copies: Vec<(StateKey, StateKey)>,
    /// Objects already present with identical content.
    pub skipped_identical: u64,
    /// Destination objects that differ from their source and were left alone.
    pub conflicts: Vec<StateKey>,
    /// Bytes copied by this run (a dry run: that it would copy).
    pub bytes_copied: u64,
    /// Source objects found at the destination when verifying (0 for a dry run).
    pub verified_objects: u64,
    /// Stacks the tenant had before.
    pub existing_stacks: u64,
    /// Stacks the migration adds, sorted; they count against `max_stacks`.
    pub new_stacks: Vec<String>,
    /// The tenant's `max_stacks`.
    pub max_stacks: u64,
    /// True when the new stacks exceed `max_stacks` and
    /// [`MigrateOptions::force`] copied them anyway (for a dry run: when a
    /// real run would need `force`).
    pub forced_over_quota: bool,
}

impl MigrationReport {
    /// True when every source object is at the destination with the same
    /// content (for a dry run: when no destination object conflicts).
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty() && (self.dry_run || self.verified_objects == self.source_objects)
    }

    /// Stacks the tenant would have after the migration.
    pub fn stacks_after(&self) -> u64 {
        self.existing_stacks + self.new_stacks.len() as u64
    }
}

/// The reserved top-level name `key` is on or below, if any.
pub fn reserved_prefix(key: &StateKey) -> Option<&'static str> {
    let first = key.segments().next()?;
    RESERVED_PREFIXES.iter().copied().find(|r| *r == first)
}

/// The root of the stacks tree `from` is in: `from` up to its last `stacks`
/// segment, or `from` itself when it has none.
fn tree_root(from: &StateKey) -> Result<StateKey> {
    let segs: Vec<&str> = from.segments().collect();
    match segs.iter().rposition(|s| *s == "stacks") {
        Some(i) => StateKey::new(segs[..=i].join("/")),
        None => Ok(from.clone()),
    }
}

/// The stack a key below a tenant's `stacks/` root makes, if it is a stack
/// environment's `state.json`.
fn stack_of(rest: &StateKey) -> Option<String> {
    let segs: Vec<&str> = rest.segments().collect();
    match segs.as_slice() {
        [stack, _env, "state.json"] => Some(stack.to_string()),
        _ => None,
    }
}

/// Copies the tree below `from` into `tenants/<id>/<version>/stacks/` of
/// `tenant`, calling `progress(done, total)` after each object. The rules
/// (reserved sources, structure, the stack quota through `registry`, dry
/// run, idempotence) are in the [module docs](self).
pub async fn migrate_stacks(
    backend: &dyn StateBackend,
    registry: &dyn TenantRegistry,
    tenant: &Tenant,
    from: &StateKey,
    options: MigrateOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<MigrationReport> {
    if let Some(reserved) = reserved_prefix(from) {
        return Err(Error::invalid(format!(
            "cannot migrate {from}: {reserved}/ is reserved for the store's own records, not tenant data; pass the prefix of a single-tenant stacks tree (e.g. --from stacks)"
        )));
    }
    if tenant.status == TenantStatus::Deleted {
        return Err(Error::precondition(format!(
            "tenant {} is deleted; nothing can be migrated into it",
            tenant.id
        )));
    }
    let dest_root = tenant.state_root()?.child("stacks")?;
    let root = tree_root(from)?;

    let mut sources = Vec::new();
    {
        let mut listing = backend.list(Some(from));
        while let Some(e) = listing.next().await {
            let e = e?;
            sources.push((e.key, e.size));
        }
    }
    sources.sort();
    let total = sources.len() as u64;
    let mut report = MigrationReport {
        source: from.to_string(),
        destination: dest_root.to_string(),
        dry_run: options.dry_run,
        source_objects: total,
        max_stacks: tenant.limits().max_stacks,
        ..Default::default()
    };
    let mut plan = Vec::with_capacity(sources.len());
    for (src, size) in sources {
        let Some(rest) = src.strip_prefix(&root) else {
            continue;
        };
        let dst = dest_root.join(&rest)?;
        plan.push((src, dst, rest, size));
    }

    // the stack quota, up front
    let mut existing = BTreeSet::new();
    {
        let mut listing = backend.list(Some(&dest_root));
        while let Some(e) = listing.next().await {
            if let Some(s) = e?.key.strip_prefix(&dest_root).as_ref().and_then(stack_of) {
                existing.insert(s);
            }
        }
    }
    let new_stacks: BTreeSet<String> = plan
        .iter()
        .filter_map(|(_, _, rest, _)| stack_of(rest))
        .filter(|s| !existing.contains(s))
        .collect();
    report.existing_stacks = existing.len() as u64;
    report.new_stacks = new_stacks.into_iter().collect();
    let over = report.stacks_after() > report.max_stacks && !report.new_stacks.is_empty();
    if over && !options.force && !options.dry_run {
        return Err(Error::QuotaExceeded {
            tenant: tenant.id.to_string(),
            resource: Resource::Stacks.as_str().into(),
            limit: report.max_stacks,
            requested: report.stacks_after(),
            retry_after: None,
        });
    }
    report.forced_over_quota = over;
    let mut reservation: Option<Reservation> = None;
    if !options.dry_run && !report.new_stacks.is_empty() {
        match registry
            .reserve(&tenant.id, Resource::Stacks, report.new_stacks.len() as u64)
            .await
        {
            Ok(r) => reservation = Some(r),
            // over the limit and forced: copy without holding capacity
            Err(Error::QuotaExceeded { .. }) if options.force => report.forced_over_quota = true,
            Err(e) => return Err(e),
        }
    }

    let copied = copy(backend, &plan, &mut report, progress).await;
    let done = match copied {
        Ok(()) if options.dry_run => Ok(()),
        Ok(()) => verify(backend, &dest_root, from, &plan, &mut report).await,
        Err(e) => Err(e),
    };
    if let Some(r) = &reservation {
        // a failed settle expires by itself (the reservation TTL)
        let _ = match &done {
            Ok(()) => registry.commit(r).await,
            Err(_) => registry.release(r).await,
        };
    }
    done.map(|()| report)
}

async fn copy(
    backend: &dyn StateBackend,
    plan: &[(StateKey, StateKey, StateKey, u64)],
    report: &mut MigrationReport,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<()> {
    let total = plan.len() as u64;
    progress(0, total);
    for (i, (src, dst, _, size)) in plan.iter().enumerate() {
        if report.dry_run {
            match backend.get(dst).await? {
                None => {
                    report.copied += 1;
                    report.bytes_copied += size;
                    report.copies.push((src.clone(), dst.clone()));
                }
                Some(existing) => match backend.get(src).await? {
                    Some(obj) if obj.bytes == existing.bytes => report.skipped_identical += 1,
                    _ => report.conflicts.push(dst.clone()),
                },
            }
            progress(i as u64 + 1, total);
            continue;
        }
        let Some(obj) = backend.get(src).await? else {
            return Err(Error::precondition(format!(
                "{src} disappeared while it was being migrated; run the migration again"
            )));
        };
        match backend.put(dst, obj.bytes.clone(), PutMode::Create).await {
            Ok(_) => {
                report.copied += 1;
                report.bytes_copied += obj.bytes.len() as u64;
                report.copies.push((src.clone(), dst.clone()));
            }
            Err(Error::AlreadyExists { .. }) => match backend.get(dst).await? {
                Some(existing) if existing.bytes == obj.bytes => report.skipped_identical += 1,
                _ => report.conflicts.push(dst.clone()),
            },
            Err(e) => return Err(e),
        }
        progress(i as u64 + 1, total);
    }
    Ok(())
}

async fn verify(
    backend: &dyn StateBackend,
    dest_root: &StateKey,
    from: &StateKey,
    plan: &[(StateKey, StateKey, StateKey, u64)],
    report: &mut MigrationReport,
) -> Result<()> {
    let expected: HashSet<&StateKey> = plan.iter().map(|(_, dst, _, _)| dst).collect();
    let mut listing = backend.list(Some(dest_root));
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
    Ok(())
}
