//! `Memo`: a bounded in-process map from a key to what this process last
//! wrote or found under it (an audit log's tail, a tenant's usage record),
//! so its next conditional write can start there instead of reading.
//!
//! Nothing is ever answered from a memo: every use of a remembered value is
//! a write conditional on it, which a stale value loses. Forgetting is
//! therefore always safe; beyond its bound a memo forgets an arbitrary
//! other entry to make room.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Memo<K, V> {
    entries: Mutex<HashMap<K, V>>,
    bound: usize,
}

impl<K: Eq + Hash + Clone, V> Memo<K, V> {
    /// An empty memo of at most `bound` entries.
    pub(crate) fn new(bound: usize) -> Self {
        Memo {
            entries: Mutex::new(HashMap::new()),
            bound: bound.max(1),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<K, V>> {
        // Every change is one insert or remove: a panic elsewhere while the
        // lock was held cannot have left an entry half-made.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` of the entry for `key`.
    pub(crate) fn read<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.entries().get(key))
    }

    /// Sets the entry for `key` to `f` of the one it replaces.
    pub(crate) fn write(&self, key: &K, f: impl FnOnce(Option<&V>) -> V) {
        let mut entries = self.entries();
        let value = f(entries.get(key));
        if entries.len() >= self.bound && !entries.contains_key(key) {
            if let Some(other) = entries.keys().next().cloned() {
                entries.remove(&other);
            }
        }
        entries.insert(key.clone(), value);
    }

    /// Forgets the entry for `key`.
    pub(crate) fn forget(&self, key: &K) {
        self.entries().remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_so_many_entries_are_kept_and_the_newest_always() {
        let m = Memo::new(8);
        for n in 0..20 {
            m.write(&n, |old| {
                assert!(old.is_none());
                n * 10
            });
            assert!(m.len() <= 8);
            assert_eq!(m.read(&n, |v| v.copied()), Some(n * 10));
        }
        m.write(&19, |old| old.map_or(0, |v| v + 1));
        assert_eq!(m.read(&19, |v| v.copied()), Some(191));
        m.forget(&19);
        assert_eq!(m.read(&19, |v| v.copied()), None);
    }
}
