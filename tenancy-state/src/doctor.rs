//! `doctor`: finds every inconsistency a crash or a hand edit leaves in a
//! store, and repairs what is safe to repair (`tenancy doctor [--repair]`).
//!
//! [`doctor`] returns a [`DoctorReport`]: one [`Finding`] per problem, each
//! with its [`FindingKind`], the key or path it is about, a message naming
//! the next step, whether a repair fixes it and, after a repair, whether it
//! was fixed. It never prints; the CLI renders the report.
//!
//! # What is checked, and what a repair does
//!
//! | kind | found when | repair |
//! |---|---|---|
//! | `probe_marker` | an S3 store lacks `.tenancy-probe/verified` | runs the conditional-write probe, which leaves the marker (a store that fails it stays reported) |
//! | `damaged_record` | the manifest, a tenant record or an index entry does not decode, or a name under `registry/` is no record | none: restore it or fix it by hand |
//! | `orphan_index_entry` | an index entry names no record, or a record whose lookup id differs (a create or rotation killed halfway) | deleted, once older than [`HALF_CREATED_GRACE`] (a create in flight writes its index entry first) |
//! | `half_created_tenant` | a tenant whose `create` stopped halfway, its secret never shown (registry docs, "Half-created tenants") | rolled back: the record deleted by version, then its index entry, config and marker; only on backends with conditional delete (on S3 the next `tenancy tenant init --name ID` takes it over) |
//! | `incomplete_tenant` | a tenant lacks its config, state marker or usage record, and is not half-created | the missing objects written (`Create`: what exists stays); a tenant younger than [`HALF_CREATED_GRACE`] that was never changed is left to its create |
//! | `ownerless_reservation` | a reservation in a usage record that no job or worker record of the tenant names | released, once older than [`DoctorOptions::reservation_age`] |
//! | `expired_session` | a server-issued session record past its expiry (its owner never logged in again, which sweeps them) | deleted: it authenticates nothing |
//! | `damaged_session` | a session record that does not decode, or a name under `registry-sessions/` that is none | deleted: it authenticates nothing (its holder logs in again) |
//! | `temp_file` | a `.tmp-*` file on local files, or a probe object a killed probe left on S3 | removed, once older than [`DoctorOptions::temp_file_age`] |
//! | `file_mode` | a local file or directory (the root too) that group or others may use | chmod to 0600 / 0700, the modes the store creates |
//!
//! Deleted tenants are skipped by the tenant checks: their objects were
//! moved to the archive on purpose.
//!
//! **Owners of reservations.** The owners are the server's job and worker
//! records (`tenants/<id>/<version>/_server/jobs/` and `.../workers/`,
//! described in `tenancy-server`'s `jobs.rs`), whose format is the
//! server's. The doctor does not decode them: a record *names* a
//! reservation when the reservation's id appears in its bytes, which holds
//! for every record format that keeps the reservation and for damaged
//! records too, so a reservation is never taken for ownerless while any
//! record mentions it. The doctor releases only reservations no record
//! names that are older than the bound (1 h; the server's own reconciler
//! waits 60 s), and does not judge the owners' state (finished jobs,
//! deleted workers, missing queue markers): that stays the server's
//! reconciler's job.
//!
//! **Races.** Every repair is a compare-and-swap, a `Create`, or a delete
//! of something no live writer can still want (its age is past the bound);
//! a repair that loses a race reports the finding as not repaired. One
//! window is left: a create of the same id that lands between a rollback's
//! record delete and its deletes of the config and marker loses those two;
//! the next doctor reports that tenant as incomplete and `--repair` writes
//! them again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tenancy_core::StateBackendExt as _;
use tenancy_core::{
    layout as core_layout, Error, ListedReservation, Resource, Result, StateBackend, StateKey,
    TenantId, TenantRegistry, TenantStatus,
};

use crate::registry::layout;
use crate::registry::records::{from_yaml, KeyIndexEntry, SessionRecord, TenantRecord};
use crate::registry::{StoreRegistry, HALF_CREATED_GRACE};
use crate::{Store, TEMP_FILE_MAX_AGE};

/// How old a reservation that no record names must be before `--repair`
/// releases it: 1 h.
pub const OWNERLESS_RESERVATION_AGE: Duration = Duration::from_secs(3600);

/// The prefixes, below a tenant's state root, of the records that own
/// reservations (the server's jobs and workers).
pub const OWNER_PREFIXES: [&str; 2] = ["_server/jobs", "_server/workers"];

/// What kind of inconsistency a [`Finding`] is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// An S3 store without the conditional-write probe's marker.
    ProbeMarker,
    /// A manifest, record or index entry that does not decode.
    DamagedRecord,
    /// An index entry that matches no record.
    OrphanIndexEntry,
    /// A tenant whose create stopped halfway.
    HalfCreatedTenant,
    /// A tenant missing its config, marker or usage record.
    IncompleteTenant,
    /// A reservation no job or worker record names.
    OwnerlessReservation,
    /// A server-issued session past its expiry.
    ExpiredSession,
    /// A session record that does not decode.
    DamagedSession,
    /// A temp file (or a probe object) left by a killed writer.
    TempFile,
    /// A local file or directory that group or others may use.
    FileMode,
}

impl FindingKind {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ProbeMarker => "probe_marker",
            FindingKind::DamagedRecord => "damaged_record",
            FindingKind::OrphanIndexEntry => "orphan_index_entry",
            FindingKind::HalfCreatedTenant => "half_created_tenant",
            FindingKind::IncompleteTenant => "incomplete_tenant",
            FindingKind::OwnerlessReservation => "ownerless_reservation",
            FindingKind::ExpiredSession => "expired_session",
            FindingKind::DamagedSession => "damaged_session",
            FindingKind::TempFile => "temp_file",
            FindingKind::FileMode => "file_mode",
        }
    }
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is.
    pub kind: FindingKind,
    /// The key (or, for local files, the path below the root; `.` for the root).
    pub key: String,
    /// What is wrong and the next step.
    pub message: String,
    /// True when `--repair` fixes it (now, not once it is older).
    pub repairable: bool,
    /// True when this run repaired it.
    pub repaired: bool,
}

/// What [`doctor`] found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// Whether repairs were made.
    pub repair: bool,
    /// How many tenant records were read.
    pub tenants: usize,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    /// The findings this run did not repair.
    pub fn remaining(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.repaired)
    }

    /// True when nothing is left to fix.
    pub fn is_clean(&self) -> bool {
        self.remaining().next().is_none()
    }
}

/// How [`doctor`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoctorOptions {
    /// Repair what is safe to repair.
    pub repair: bool,
    /// Temp files and probe objects older than this are removed by a repair.
    pub temp_file_age: Duration,
    /// Reservations no record names older than this are released by a repair.
    pub reservation_age: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            repair: false,
            temp_file_age: TEMP_FILE_MAX_AGE,
            reservation_age: OWNERLESS_RESERVATION_AGE,
        }
    }
}

struct Run<'a> {
    registry: &'a StoreRegistry,
    backend: &'a dyn StateBackend,
    options: DoctorOptions,
    report: DoctorReport,
}

impl Run<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.registry.clock().now()
    }

    /// Records a finding; when it is repairable and this is a repair,
    /// runs `fix` and records the outcome.
    async fn found<F, Fut>(
        &mut self,
        kind: FindingKind,
        key: String,
        message: String,
        repairable: bool,
        fix: F,
    ) where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let mut finding = Finding {
            kind,
            key,
            message,
            repairable,
            repaired: false,
        };
        if repairable && self.options.repair {
            match fix().await {
                Ok(true) => finding.repaired = true,
                Ok(false) => finding
                    .message
                    .push_str(" (not repaired: it changed meanwhile; run doctor again)"),
                Err(e) => finding.message.push_str(&format!(" (repair failed: {e})")),
            }
        }
        self.report.findings.push(finding);
    }
}

fn older_than(then: DateTime<Utc>, now: DateTime<Utc>, bound: Duration) -> bool {
    match chrono::Duration::from_std(bound) {
        Ok(b) => now - then > b,
        Err(_) => false,
    }
}

/// Checks `store` (through `registry`, which must be on the same store; its
/// clock decides ages) and, with `options.repair`, repairs what is safe to
/// repair. An error means the store could not be read at all (the manifest
/// is missing, a listing failed); everything else is a finding.
pub async fn doctor(
    store: &Store,
    registry: &StoreRegistry,
    options: DoctorOptions,
) -> Result<DoctorReport> {
    let backend = registry.backend().clone();
    let mut run = Run {
        registry,
        backend: backend.as_ref(),
        options,
        report: DoctorReport {
            repair: options.repair,
            ..Default::default()
        },
    };
    if let Store::Object(object) = store {
        check_probe(&mut run, object).await?;
    }
    if !check_manifest(&mut run).await? {
        return Ok(run.report);
    }
    let records = check_records(&mut run).await?;
    check_index(&mut run, &records).await?;
    for (rec, _) in records.valid.values() {
        if rec.status == TenantStatus::Deleted {
            continue;
        }
        check_tenant(&mut run, rec).await?;
        check_reservations(&mut run, rec).await?;
    }
    check_sessions(&mut run).await?;
    if let Store::Local(local) = store {
        check_local_files(&mut run, local)?;
    }
    Ok(run.report)
}

async fn check_probe(run: &mut Run<'_>, object: &crate::ObjectStoreBackend) -> Result<()> {
    if !object.has_probe_marker().await? {
        run.found(
            FindingKind::ProbeMarker,
            ".tenancy-probe/verified".into(),
            "the store was never checked for conditional writes (no probe marker); \
             `tenancy doctor --repair` runs the probe"
                .into(),
            true,
            || async {
                object.probe_conditional_writes().await?;
                Ok(true)
            },
        )
        .await;
    }
    let bound = run.options.temp_file_age;
    let now = run.now();
    for (key, modified) in object.probe_leftovers().await? {
        let old = older_than(modified, now, bound);
        let message = if old {
            "a probe object left by a probe that was stopped before its cleanup".to_string()
        } else {
            format!(
                "a probe object younger than {}s: a probe may be running; run doctor again later",
                bound.as_secs()
            )
        };
        let k = key.clone();
        run.found(FindingKind::TempFile, key, message, old, || async move {
            object.delete_probe_leftover(&k).await?;
            Ok(true)
        })
        .await;
    }
    Ok(())
}

/// False when the manifest is damaged (nothing else can be trusted then).
async fn check_manifest(run: &mut Run<'_>) -> Result<bool> {
    let key = layout::manifest()?;
    let Some(obj) = run.backend.get(&key).await? else {
        return Err(Error::not_found(
            "registry manifest tenants.yaml: the registry is not initialised (run `tenancy init`)",
        ));
    };
    if let Err(e) = crate::registry::writes_decode_manifest(&obj.bytes) {
        run.found(
            FindingKind::DamagedRecord,
            key.to_string(),
            format!("{e}; restore tenants.yaml from a backup"),
            false,
            || async { Ok(false) },
        )
        .await;
        return Ok(false);
    }
    Ok(true)
}

struct Records {
    /// Decoded records and the lookup ids they hold.
    valid: HashMap<TenantId, (TenantRecord, String)>,
    /// Tenants whose record exists but does not decode.
    damaged: HashSet<TenantId>,
}

async fn check_records(run: &mut Run<'_>) -> Result<Records> {
    let mut out = Records {
        valid: HashMap::new(),
        damaged: HashSet::new(),
    };
    let prefix = layout::records()?;
    let keys: Vec<StateKey> = {
        let mut listed = run.backend.list(Some(&prefix));
        let mut keys = Vec::new();
        while let Some(entry) = listed.next().await {
            keys.push(entry?.key);
        }
        keys
    };
    for key in keys {
        let Some(id) = layout::record_id(&key) else {
            run.found(
                FindingKind::DamagedRecord,
                key.to_string(),
                format!("{key} is not a tenant record name (registry/<id>.yaml); move it out of registry/"),
                false,
                || async { Ok(false) },
            )
            .await;
            continue;
        };
        match run.registry.read_record(&id).await {
            Ok(Some((rec, _))) => {
                run.report.tenants += 1;
                let lookup = rec.credential.lookup_id.clone();
                out.valid.insert(id, (rec, lookup));
            }
            Ok(None) => {}
            Err(Error::Corrupt { what, message }) => {
                run.report.tenants += 1;
                out.damaged.insert(id.clone());
                run.found(
                    FindingKind::DamagedRecord,
                    key.to_string(),
                    format!("{what} does not decode ({message}); restore it from a backup, or fix it by hand"),
                    false,
                    || async { Ok(false) },
                )
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn check_index(run: &mut Run<'_>, records: &Records) -> Result<()> {
    let prefix = StateKey::new(layout::KEY_INDEX)?;
    let entries = {
        let mut listed = run.backend.list(Some(&prefix));
        let mut entries = Vec::new();
        while let Some(entry) = listed.next().await {
            entries.push(entry?);
        }
        entries
    };
    let by_lookup: HashMap<&str, &TenantId> = records
        .valid
        .iter()
        .map(|(id, (_, lookup))| (lookup.as_str(), id))
        .collect();
    let now = run.now();
    for entry in entries {
        let key = entry.key;
        let lookup = key
            .as_str()
            .strip_prefix(layout::KEY_INDEX)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix(".yaml"))
            .unwrap_or("")
            .to_string();
        let Some(obj) = run.backend.get(&key).await? else {
            continue;
        };
        let decoded: Result<KeyIndexEntry> = from_yaml(&obj.bytes, &format!("index entry {key}"));
        let (named, written) = match &decoded {
            Ok(e) => (Some(e.tenant.clone()), e.created_at),
            Err(_) => (None, entry.last_modified.unwrap_or(now)),
        };
        let owner = by_lookup.get(lookup.as_str()).copied();
        match (&decoded, owner, &named) {
            // the current entry of a record
            (Ok(_), Some(owner), Some(named)) if owner == named => continue,
            // a tenant with a damaged record: cannot tell
            (_, _, Some(named)) if records.damaged.contains(named) => continue,
            (Err(e), Some(owner), _) => {
                let message = format!(
                    "{e}: the API-key index entry of tenant {owner} does not decode, so its key \
                     cannot log in; rotate the tenant's secret (`tenancy tenant rotate {owner}`)"
                );
                run.found(
                    FindingKind::DamagedRecord,
                    key.to_string(),
                    message,
                    false,
                    || async { Ok(false) },
                )
                .await;
                continue;
            }
            _ => {}
        }
        let old = older_than(written, now, HALF_CREATED_GRACE);
        let who = named
            .as_ref()
            .map(|t| format!("tenant {t}"))
            .unwrap_or_else(|| "no readable tenant".into());
        let message = if old {
            format!("the API-key index entry names {who}, whose record does not hold this key (a create or rotation stopped halfway); it is ignored, and `--repair` deletes it")
        } else {
            format!(
                "the API-key index entry names {who}, whose record does not hold this key; \
                 it is younger than {}s, so a create may be in flight: run doctor again later",
                HALF_CREATED_GRACE.as_secs()
            )
        };
        let backend = run.backend;
        let version = obj.version.clone();
        let k = key.clone();
        run.found(
            FindingKind::OrphanIndexEntry,
            key.to_string(),
            message,
            old,
            || async move {
                match backend.delete_if_unchanged(&k, version).await {
                    Ok(()) => Ok(true),
                    Err(Error::Precondition { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }
    Ok(())
}

async fn check_tenant(run: &mut Run<'_>, rec: &TenantRecord) -> Result<()> {
    let id = &rec.id;
    let registry = run.registry;
    if registry.is_half_created(rec).await? {
        let can = run.backend.capabilities().conditional_delete;
        let next = if can {
            format!(
                "`--repair` rolls it back; or `tenancy tenant init --name {id}` creates it anew"
            )
        } else {
            format!(
                "`tenancy tenant init --name {id}` creates it anew (the {} backend has no \
                 conditional delete, so doctor does not roll it back)",
                run.backend.name()
            )
        };
        run.found(
            FindingKind::HalfCreatedTenant,
            layout::record(id)?.to_string(),
            format!(
                "tenant {id} was created at {} but its creation stopped halfway and its secret was never shown: {next}",
                rec.created_at.to_rfc3339()
            ),
            can,
            || registry.roll_back_half_created(id),
        )
        .await;
        return Ok(());
    }
    let mut missing = Vec::new();
    for key in [
        layout::tenant_config(id)?,
        layout::state_marker(id, &rec.storage.version)?,
        layout::usage(id)?,
    ] {
        if run.backend.get(&key).await?.is_none() {
            missing.push(key.to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let in_flight = rec.revision == 1 && !older_than(rec.created_at, run.now(), HALF_CREATED_GRACE);
    let message = if in_flight {
        format!(
            "tenant {id} lacks {}; it was created less than {}s ago, so its create may be in flight: run doctor again later",
            missing.join(", "),
            HALF_CREATED_GRACE.as_secs()
        )
    } else {
        format!(
            "tenant {id} lacks {} (a create stopped halfway); `--repair` writes them",
            missing.join(", ")
        )
    };
    run.found(
        FindingKind::IncompleteTenant,
        layout::record(id)?.to_string(),
        message,
        !in_flight,
        || async { registry.finish_tenant(rec).await.map(|_| true) },
    )
    .await;
    Ok(())
}

/// The bytes of every record below the tenant's owner prefixes.
async fn owner_records(backend: &dyn StateBackend, rec: &TenantRecord) -> Result<Vec<Vec<u8>>> {
    let root = core_layout::state_root(&rec.id, &rec.storage.version)?;
    let mut out = Vec::new();
    for prefix in OWNER_PREFIXES {
        let prefix = StateKey::new(format!("{root}/{prefix}"))?;
        let keys = {
            let mut listed = backend.list(Some(&prefix));
            let mut keys = Vec::new();
            while let Some(entry) = listed.next().await {
                keys.push(entry?.key);
            }
            keys
        };
        for key in keys {
            if let Some(obj) = backend.get(&key).await? {
                out.push(obj.bytes.to_vec());
            }
        }
    }
    Ok(out)
}

fn names(records: &[Vec<u8>], needle: &str) -> bool {
    let needle = needle.as_bytes();
    records
        .iter()
        .any(|r| r.windows(needle.len()).any(|w| w == needle))
}

async fn check_reservations(run: &mut Run<'_>, rec: &TenantRecord) -> Result<()> {
    let registry = run.registry;
    let listed: Vec<ListedReservation> = match registry.reservations(&rec.id).await {
        Ok(l) => l,
        // rolled back by this run, or deleted meanwhile
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    if listed.is_empty() {
        return Ok(());
    }
    let owners = owner_records(run.backend, rec).await?;
    let now = run.now();
    let bound = run.options.reservation_age;
    for l in listed {
        let r = l.reservation;
        // Only job and worker records name their reservations; a stack or
        // state reservation has no record to be named by.
        if !Resource::JOBS_AND_WORKERS.contains(&r.resource)
            || names(&owners, &r.id.hyphenated().to_string())
        {
            continue;
        }
        let old = older_than(r.created_at, now, bound);
        let state = if l.committed { "committed" } else { "pending" };
        let message = if old {
            format!(
                "the {state} reservation of {} {} for tenant {} is named by no job or worker record; `--repair` releases it",
                r.amount,
                r.resource.as_str(),
                r.tenant
            )
        } else {
            format!(
                "the {state} reservation of {} {} for tenant {} is named by no job or worker record yet; it is younger than {}s, so its owner may be being written (the server's reconciler handles it): run doctor again later",
                r.amount,
                r.resource.as_str(),
                r.tenant,
                bound.as_secs()
            )
        };
        let key = format!("{}#{}", layout::usage(&rec.id)?, r.id);
        run.found(
            FindingKind::OwnerlessReservation,
            key,
            message,
            old,
            || async move { registry.release(&r).await.map(|()| true) },
        )
        .await;
    }
    Ok(())
}

/// Expired and damaged server-issued session records.
async fn check_sessions(run: &mut Run<'_>) -> Result<()> {
    let prefix = StateKey::new(layout::SESSIONS)?;
    let keys: Vec<StateKey> = {
        let mut listed = run.backend.list(Some(&prefix));
        let mut keys = Vec::new();
        while let Some(entry) = listed.next().await {
            keys.push(entry?.key);
        }
        keys
    };
    let now = run.now();
    for key in keys {
        let Some(obj) = run.backend.get(&key).await? else {
            continue;
        };
        let decoded = layout::session_of(&key)
            .map(|_| from_yaml::<SessionRecord>(&obj.bytes, &format!("session record {key}")));
        let (kind, message) = match decoded {
            Some(Ok(rec)) if rec.expires_at > now => continue,
            Some(Ok(rec)) => (
                FindingKind::ExpiredSession,
                format!(
                    "a session that expired at {} (its owner has not logged in since); it authenticates nothing, and `--repair` deletes it",
                    rec.expires_at.to_rfc3339()
                ),
            ),
            Some(Err(e)) => (
                FindingKind::DamagedSession,
                format!("{e}; it authenticates nothing (its holder logs in again), and `--repair` deletes it"),
            ),
            None => (
                FindingKind::DamagedSession,
                format!("{key} is not a session record name; it authenticates nothing, and `--repair` deletes it"),
            ),
        };
        let backend = run.backend;
        let version = obj.version.clone();
        let k = key.clone();
        run.found(kind, key.to_string(), message, true, || async move {
            match backend.delete_if_unchanged(&k, version).await {
                Ok(()) => Ok(true),
                Err(Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await;
    }
    Ok(())
}

fn check_local_files(run: &mut Run<'_>, local: &crate::LocalBackend) -> Result<()> {
    let files = local.files();
    let root = files.root().to_path_buf();
    let bound = run.options.temp_file_age;
    for f in files.inspect()? {
        let rel = f
            .path
            .strip_prefix(&root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| f.path.display().to_string());
        let rel = if rel.is_empty() { ".".to_string() } else { rel };
        // synchronous repairs, so no future is needed
        let (kind, message, repairable) = match f.temp_age {
            Some(age) if age > bound => (
                FindingKind::TempFile,
                format!(
                    "a temp file {}s old, left by a writer that was stopped before its rename; `--repair` removes it",
                    age.as_secs()
                ),
                true,
            ),
            Some(age) => (
                FindingKind::TempFile,
                format!(
                    "a temp file {}s old: a write may be in progress; run doctor again later",
                    age.as_secs()
                ),
                false,
            ),
            None => (
                FindingKind::FileMode,
                format!(
                    "mode {:o}: group or others may use this {}, which holds secrets' hashes and every tenant's state; `--repair` makes it {}",
                    f.mode,
                    if f.is_dir { "directory" } else { "file" },
                    if f.is_dir { "0700" } else { "0600" }
                ),
                true,
            ),
        };
        let mut finding = Finding {
            kind,
            key: rel,
            message,
            repairable,
            repaired: false,
        };
        if repairable && run.options.repair {
            let outcome = match kind {
                FindingKind::TempFile => files.remove_temp(&f.path, bound),
                _ => files.make_private(&f.path, f.is_dir).map(|()| true),
            };
            match outcome {
                Ok(true) => finding.repaired = true,
                Ok(false) => finding
                    .message
                    .push_str(" (not repaired: it changed meanwhile; run doctor again)"),
                Err(e) => finding.message.push_str(&format!(" (repair failed: {e})")),
            }
        }
        run.report.findings.push(finding);
    }
    Ok(())
}
