//! Soft delete and purge: a deleted tenant's state is moved from
//! `tenants/<id>/` to `archive/<id>/<deleted_at>/` (copy, then a conditional
//! delete of the source where the store has one), so running delete again
//! resumes an interrupted move; purge removes archived objects older than a
//! grace period and keeps the record (ids are never reused).

use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDateTime;
use futures::stream::StreamExt;
use tenancy_core::clock::chrono_duration;
use tenancy_core::{
    DeleteMode, Error, Object, Result, StateBackendExt, StateKey, Step, Tenant, TenantId,
    TenantStatus,
};

use super::records::TenantRecord;
use super::writes::name_tenant;
use super::{layout, StoreRegistry};

impl StoreRegistry {
    /// Moves everything below `tenants/<id>/` to `archive/<id>/<ts>/`, copy
    /// then delete, so an interrupted move is resumed by running it again.
    /// Returns the number of objects moved.
    async fn archive_state(&self, t: &Tenant) -> Result<u64> {
        let deleted_at = t.deleted_at.unwrap_or_else(|| self.now());
        let src_root = layout::tenant_root(&t.id)?;
        let dst_root = layout::archive_dir(&t.id, deleted_at)?;
        let conditional_delete = self.backend.capabilities().conditional_delete;
        let mut keys = Vec::new();
        {
            let mut listing = self.backend.list(Some(&src_root));
            while let Some(e) = listing.next().await {
                keys.push(e?.key);
            }
        }
        let mut moved = 0u64;
        for src in keys {
            let Some(rest) = src.strip_prefix(&src_root) else {
                continue;
            };
            let dst = dst_root.join(&rest)?;
            let mut done = false;
            for _ in 0..3 {
                let Some(obj) = self.backend.get(&src).await? else {
                    done = true;
                    break;
                };
                self.copy_to(&dst, obj.bytes).await?;
                let mode = if conditional_delete {
                    DeleteMode::IfVersion(obj.version)
                } else {
                    DeleteMode::Any
                };
                match self.backend.delete(&src, mode).await {
                    Ok(()) => {
                        moved += 1;
                        done = true;
                        break;
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
            if !done {
                return Err(Error::precondition(format!(
                    "{src} kept changing while tenant {} was being archived; run delete again",
                    t.id
                )));
            }
        }
        Ok(moved)
    }

    /// Writes `bytes` at `dst` with a compare-and-swap: Create, or Update of
    /// the version found if a different object is there (a resumed move).
    async fn copy_to(&self, dst: &StateKey, bytes: Bytes) -> Result<()> {
        let step = |current: Option<&Object>| {
            Ok(match current {
                Some(o) if o.bytes == bytes => Step::Keep(()),
                _ => Step::Write(bytes.clone(), ()),
            })
        };
        self.backend
            .update_with(dst, self.retry(dst.as_str()), step)
            .await?;
        Ok(())
    }

    pub(super) async fn delete_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let (current, _) = self.get_record(id).await?;
        if current.status == TenantStatus::Deleted {
            // Resume an interrupted archive move, or refuse a second delete.
            let t = self.view(&current)?;
            let moved = self.archive_state(&t).await?;
            if moved == 0 {
                return Err(Error::precondition(format!(
                    "tenant {id} is already deleted"
                )));
            }
            return Ok(t);
        }
        let t = self
            .modify(id, |t: &mut TenantRecord, now| {
                t.effective_status(now)
                    .transition(TenantStatus::Deleted)
                    .map_err(|e| name_tenant(e, id))?;
                t.status = TenantStatus::Deleted;
                t.deleted_at = Some(now);
                Ok(())
            })
            .await?;
        self.archive_state(&t).await?;
        Ok(t)
    }

    pub(super) async fn purge_archive(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        let (t, _) = self.get_record(id).await?;
        if t.status != TenantStatus::Deleted {
            return Err(Error::precondition(format!(
                "tenant {id} is {}, not deleted; only a deleted tenant's archive can be purged",
                t.effective_status(self.now())
            )));
        }
        let root = layout::archive_root(id)?;
        // A grace longer than time goes back keeps everything.
        let cutoff = self
            .now()
            .checked_sub_signed(chrono_duration(grace))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut doomed = Vec::new();
        {
            let mut listing = self.backend.list(Some(&root));
            while let Some(e) = listing.next().await {
                let key = e?.key;
                let Some(rest) = key.strip_prefix(&root) else {
                    continue;
                };
                let ts = rest.segments().next().unwrap_or_default();
                // Only objects under a timestamp this registry wrote are touched.
                if let Ok(at) = NaiveDateTime::parse_from_str(ts, layout::ARCHIVE_TS_FORMAT) {
                    if at.and_utc() <= cutoff {
                        doomed.push(key);
                    }
                }
            }
        }
        let mut removed = 0;
        for key in doomed {
            self.backend.delete(&key, DeleteMode::Any).await?;
            removed += 1;
        }
        // The count of locks it held through a server: once the deletion
        // itself is older than the grace, a deleted tenant holds none that
        // matter, and the record would outlive it.
        let held = tenancy_core::layout::locks_held(id)?;
        if t.deleted_at.is_some_and(|at| at <= cutoff) && self.backend.exists(&held).await? {
            match self.backend.delete(&held, DeleteMode::Any).await {
                Ok(()) => removed += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
