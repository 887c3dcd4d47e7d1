//! `TtlMap`: a small map whose entries expire after a fixed time and whose
//! size is bounded, for the server's caches of verified, failed and
//! refused credentials.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries live `ttl` after their insert; at `capacity` an insert first
/// drops the expired entries, then everything if the map is still full (a
/// flood of distinct keys can cost cache hits, never memory).
#[derive(Debug)]
pub(crate) struct TtlMap<K, V> {
    ttl: Duration,
    capacity: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlMap<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        TtlMap {
            ttl,
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long an entry lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of a fresh entry; an expired one is removed.
    pub(crate) fn get(&self, k: &K) -> Option<V> {
        let mut map = self.lock();
        match map.get(k) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                map.remove(k);
                None
            }
            None => None,
        }
    }

    /// Inserts (or refreshes) `k`.
    pub(crate) fn insert(&self, k: K, v: V) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&k) {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(k, (Instant::now(), v));
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Removes the entries `f` picks and returns their keys.
    pub(crate) fn remove_where(&self, mut f: impl FnMut(&K, &V) -> bool) -> Vec<K>
    where
        K: Clone,
    {
        let mut gone = Vec::new();
        self.lock().retain(|k, (_, v)| {
            let hit = f(k, v);
            if hit {
                gone.push(k.clone());
            }
            !hit
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let m = TtlMap::new(Duration::from_secs(3600), 3);
        for k in 0..3 {
            m.insert(k, k * 10);
        }
        assert_eq!(m.get(&1), Some(10));
        m.insert(1, 11);
        assert_eq!(
            m.get(&1),
            Some(11),
            "a refresh of a present key keeps the others"
        );
        assert!(m.get(&0).is_some());
        m.insert(3, 30);
        assert!(m.get(&0).is_none(), "full of fresh entries: it starts over");
        assert_eq!(m.get(&3), Some(30));

        let expired = TtlMap::new(Duration::ZERO, 8);
        expired.insert("k", ());
        assert!(
            expired.get(&"k").is_none(),
            "an entry older than the ttl is gone"
        );
        expired.clear();
    }
}
