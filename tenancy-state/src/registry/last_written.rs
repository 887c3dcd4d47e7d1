//! The usage records this registry wrote last, by tenant: where the next
//! read-modify-write of a record starts instead of reading it.
//!
//! This is not a read cache: nothing is ever answered from it. A quota
//! operation passes the remembered object to
//! [`StateBackendExt::update_from`](tenancy_core::StateBackendExt::update_from),
//! which writes [`PutMode::Update`](tenancy_core::PutMode::Update) of its
//! version; if anyone else wrote the record since, that write is refused
//! and the operation reads the record and decides again. So a reservation
//! costs the tenant record's read and one write, a commit or a release one
//! write, and a record written elsewhere is never missed.
//!
//! Where other processes write a tenant's record too (server replicas, a CLI
//! beside a server), a remembered record would often be stale and each
//! operation would pay for a refused write before its read. So an entry is
//! used only while that has paid off: once a write by someone else is seen,
//! the tenant's operations read first (as without this) until so many reads
//! in a row have found the record where this registry left it, and that
//! number doubles (up to [`MAX_PENALTY`]) each time someone else's write is
//! seen again. Registries taking turns on one tenant thus settle to a read
//! and a write per operation, as if nothing were remembered, after at most
//! two refused writes; a lone registry after one CLI write pays one refused
//! write and one read.

use tenancy_core::{Object, TenantId, Version};

use crate::memo::Memo;

/// How many tenants' records are remembered at most (a forgotten one only
/// costs its next operation a read).
pub(crate) const LAST_WRITTEN_ENTRIES: usize = 4096;

/// The most confirming reads an entry waits for before it is used again.
pub(crate) const MAX_PENALTY: u32 = 64;

#[derive(Debug)]
struct Entry {
    object: Object,
    /// Reads that must still find the record unmoved before it is used.
    wait: u32,
    /// How many the next sighting of someone else's write makes it wait.
    penalty: u32,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct LastWritten {
    entries: Memo<TenantId, Entry>,
}

impl Default for LastWritten {
    fn default() -> Self {
        LastWritten {
            entries: Memo::new(LAST_WRITTEN_ENTRIES),
        }
    }
}

/// What one operation on a tenant's record started from.
#[derive(Debug)]
pub(crate) struct Start {
    /// The version remembered, used or not.
    remembered: Option<Version>,
    /// Whether the operation was given the remembered record to start from.
    used: bool,
}

impl LastWritten {
    /// Where an operation on `id`'s record starts: the remembered record
    /// if it is to be used.
    pub(crate) fn start(&self, id: &TenantId) -> (Option<Object>, Start) {
        self.entries.read(id, |e| match e {
            None => (
                None,
                Start {
                    remembered: None,
                    used: false,
                },
            ),
            Some(e) => {
                let known = (e.wait == 0).then(|| e.object.clone());
                let used = known.is_some();
                let remembered = Some(e.object.version.clone());
                (known, Start { remembered, used })
            }
        })
    }

    /// The operation that began at `start` wrote `object`, having decided on
    /// the record at version `decided_on`.
    pub(crate) fn wrote(
        &self,
        id: &TenantId,
        start: &Start,
        decided_on: Option<&Version>,
        object: Object,
    ) {
        self.entries.write(id, |old| {
            let (wait, penalty) = match (old, &start.remembered) {
                (Some(e), Some(remembered)) if decided_on == Some(remembered) => {
                    if start.used {
                        // Started from it, and it was current.
                        (0, e.penalty / 2)
                    } else {
                        // A read found the record where it was left.
                        (e.wait.saturating_sub(1), e.penalty)
                    }
                }
                (Some(e), Some(_)) => {
                    // Someone else wrote since.
                    let penalty = (e.penalty * 2).clamp(1, MAX_PENALTY);
                    (penalty, penalty)
                }
                _ => (0, 0),
            };
            Entry {
                object,
                wait,
                penalty,
            }
        });
    }

    /// The operation that began at `start` failed after deciding on the
    /// record at version `decided_on` (`None`: absent, or it never read):
    /// a record that moved under the entry is forgotten.
    pub(crate) fn failed(
        &self,
        id: &TenantId,
        start: &Start,
        decided_on: Option<Option<&Version>>,
    ) {
        if let Some(seen) = decided_on {
            if seen != start.remembered.as_ref() {
                self.entries.forget(id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: usize) -> TenantId {
        TenantId::new(format!("t-{n}")).unwrap()
    }

    fn obj(v: &str) -> Object {
        Object {
            bytes: bytes::Bytes::from_static(b"{}"),
            version: Version(v.to_string()),
        }
    }

    fn v(n: &str) -> Version {
        Version(n.to_string())
    }

    #[test]
    fn an_entry_is_used_only_while_nobody_else_writes() {
        let lw = LastWritten::default();
        let t = id(1);
        let (known, s) = lw.start(&t);
        assert!(known.is_none());
        lw.wrote(&t, &s, None, obj("1"));
        // Nothing to compare with: used.
        let (known, s) = lw.start(&t);
        assert_eq!(known.as_ref().map(|o| o.version.0.as_str()), Some("1"));
        // Its write was refused; the read found version 7: someone else
        // wrote. The next operation reads first.
        lw.wrote(&t, &s, Some(&v("7")), obj("8"));
        let (known, s) = lw.start(&t);
        assert!(known.is_none());
        // That read finds the record where this registry left it: used again.
        lw.wrote(&t, &s, Some(&v("8")), obj("9"));
        let (known, s) = lw.start(&t);
        assert!(known.is_some());
        // Someone else again: two confirming reads now, then four.
        lw.wrote(&t, &s, Some(&v("10")), obj("11"));
        for (n, wait) in [(11, 2), (12, 1)] {
            let (known, s) = lw.start(&t);
            assert!(known.is_none(), "still {wait} reads to wait");
            lw.wrote(&t, &s, Some(&v(&n.to_string())), obj(&(n + 1).to_string()));
        }
        let (known, s) = lw.start(&t);
        assert!(known.is_some());
        lw.wrote(&t, &s, Some(&v("20")), obj("21"));
        let mut waited = 0;
        let mut n = 21;
        while lw.start(&t).0.is_none() {
            let (_, s) = lw.start(&t);
            lw.wrote(&t, &s, Some(&v(&n.to_string())), obj(&(n + 1).to_string()));
            n += 1;
            waited += 1;
        }
        assert_eq!(waited, 4);
    }

    #[test]
    fn a_failure_on_a_moved_record_forgets_it() {
        let lw = LastWritten::default();
        let t = id(1);
        let (_, s) = lw.start(&t);
        lw.wrote(&t, &s, None, obj("1"));
        let (_, s) = lw.start(&t);
        lw.failed(&t, &s, Some(Some(&Version("1".into()))));
        assert!(
            lw.start(&t).0.is_some(),
            "refused on the record it knew: kept"
        );
        let (_, s) = lw.start(&t);
        lw.failed(&t, &s, Some(None));
        let (known, s) = lw.start(&t);
        assert!(
            known.is_none() && s.remembered.is_none(),
            "the record is gone: forgotten"
        );
    }

    #[test]
    fn at_most_so_many_tenants_are_remembered() {
        let lw = LastWritten::default();
        for n in 0..LAST_WRITTEN_ENTRIES + 10 {
            let (_, s) = lw.start(&id(n));
            lw.wrote(&id(n), &s, None, obj("1"));
        }
        assert_eq!(lw.entries.len(), LAST_WRITTEN_ENTRIES);
        let last = id(LAST_WRITTEN_ENTRIES + 9);
        assert!(lw.start(&last).0.is_some());
    }
}
