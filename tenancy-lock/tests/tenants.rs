//! Tenant isolation of `TenantLocks`: one tenant never sees or touches
//! another tenant's locks, whatever key or lock id it passes.

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{
    Error, LockId, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend, TenantId,
};
use tenancy_lock::{MemoryLockManager, StoreLockManager, TenantLocks};

const TTL: Duration = Duration::from_secs(60);

fn inners(clock: &ManualClock) -> Vec<Arc<dyn LockManager>> {
    vec![
        Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone()))),
        Arc::new(StoreLockManager::new(MemoryBackend::new()).with_clock(Arc::new(clock.clone()))),
    ]
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

#[tokio::test]
async fn tenants_are_isolated() {
    let clock = ManualClock::starting_now();
    for inner in inners(&clock) {
        let acme = TenantLocks::new(Arc::clone(&inner), tenant("acme"));
        let acme2 = TenantLocks::new(Arc::clone(&inner), tenant("acme2"));
        let globex = TenantLocks::new(Arc::clone(&inner), tenant("globex"));
        let key = LockKey::stack_env("web", "prod").expect("key");

        let a = acme
            .try_acquire(&LockRequest::new(key.clone(), TTL).operation("apply"))
            .await
            .expect("acme acquires");
        assert_eq!(a.key, key, "the tenant sees its own key name");
        assert_eq!(a.tenant, Some(tenant("acme")));

        // The same key name is a different lock for another tenant.
        let g = globex
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("globex acquires its own lock of the same name");
        assert_eq!(g.tenant, Some(tenant("globex")));
        let a2 = acme2
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acme2 is not inside acme's namespace");

        // The shared manager stores them under tenant:<id>:.
        let mut all: Vec<String> = inner
            .list("tenant:")
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.key.to_string())
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                "tenant:acme2:stack:web:env:prod",
                "tenant:acme:stack:web:env:prod",
                "tenant:globex:stack:web:env:prod"
            ]
        );

        // Each tenant lists only its own, with its own key names.
        for (view, lease) in [(&acme, &a), (&acme2, &a2), (&globex, &g)] {
            let listed = view.list("").await.expect("list");
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].lock_id, lease.lock_id);
            assert_eq!(listed[0].key, key);
            assert_eq!(listed[0].tenant.as_ref(), Some(view.tenant()));
            assert_eq!(view.list("stack:web").await.expect("list").len(), 1);
            assert!(view.list("tenant:").await.expect("list").is_empty());
        }

        // globex can neither renew, release nor force-unlock acme's lease,
        // even knowing its lock id, and even naming acme's full key.
        let full = LockKey::new("tenant:acme:stack:web:env:prod").expect("key");
        for k in [&key, &full] {
            assert!(globex.renew(k, a.lock_id, TTL).await.is_err());
            assert!(globex.release(k, a.lock_id).await.is_err());
            assert!(globex.force_unlock(k, a.lock_id).await.is_err());
        }
        assert!(globex.inspect(&full).await.expect("inspect").is_none());
        assert_eq!(
            acme.inspect(&key)
                .await
                .expect("inspect")
                .map(|i| i.lock_id),
            Some(a.lock_id),
            "acme's lock is untouched"
        );
        assert_eq!(
            globex
                .inspect(&key)
                .await
                .expect("inspect")
                .map(|i| i.lock_id),
            Some(g.lock_id),
            "globex's own lock is untouched by its refused calls"
        );

        // LockHeld from the wrapper names the tenant's key, not the stored one.
        match acme.try_acquire(&LockRequest::new(key.clone(), TTL)).await {
            Err(Error::LockHeld { holder }) => {
                assert_eq!(holder.key, key);
                assert_eq!(holder.tenant, Some(tenant("acme")));
                assert_eq!(holder.lock_id, a.lock_id);
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }

        // Each releases its own.
        acme.release(&key, a.lock_id).await.expect("release");
        assert!(acme.inspect(&key).await.expect("inspect").is_none());
        assert!(globex.inspect(&key).await.expect("inspect").is_some());
        globex.release(&key, g.lock_id).await.expect("release");
        acme2.release(&key, a2.lock_id).await.expect("release");
        assert!(matches!(
            acme.release(&key, LockId::new_random()).await,
            Err(Error::NotFound { .. })
        ));
    }
}

#[tokio::test]
async fn over_long_keys_after_prefixing_are_refused() {
    let clock = ManualClock::starting_now();
    for inner in inners(&clock) {
        let acme = TenantLocks::new(inner, tenant("acme"));
        let key = LockKey::new("k".repeat(510)).expect("valid without the prefix");
        let e = acme
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect_err("too long with the prefix");
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        assert!(acme.list("").await.expect("list").is_empty());
    }
}

mod property {
    //! Random operation sequences by three tenants on one shared store:
    //! nothing one tenant does is visible to, or changes, another's locks.

    use std::collections::HashMap;

    use proptest::prelude::*;
    use tenancy_core::LockInfo;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Acquire {
            tenant: usize,
            key: usize,
        },
        Release {
            tenant: usize,
            key: usize,
            victim: usize,
        },
        Renew {
            tenant: usize,
            key: usize,
            victim: usize,
        },
        ForceUnlock {
            tenant: usize,
            key: usize,
            victim: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let t = 0..3usize;
        let k = 0..3usize;
        prop_oneof![
            (t.clone(), k.clone()).prop_map(|(tenant, key)| Op::Acquire { tenant, key }),
            (t.clone(), k.clone(), t.clone()).prop_map(|(tenant, key, victim)| Op::Release {
                tenant,
                key,
                victim
            }),
            (t.clone(), k.clone(), t.clone()).prop_map(|(tenant, key, victim)| Op::Renew {
                tenant,
                key,
                victim
            }),
            (t.clone(), k, t).prop_map(|(tenant, key, victim)| Op::ForceUnlock {
                tenant,
                key,
                victim
            }),
        ]
    }

    async fn check(ops: Vec<Op>) {
        let clock = ManualClock::starting_now();
        let inner: Arc<dyn LockManager> =
            Arc::new(StoreLockManager::new(MemoryBackend::new()).with_clock(Arc::new(clock)));
        let names = ["acme", "acme2", "globex"];
        let views: Vec<_> = names
            .iter()
            .map(|n| TenantLocks::new(Arc::clone(&inner), tenant(n)))
            .collect();
        let keys: Vec<LockKey> = ["stack:a", "stack:a:env:b", "tenant:acme:stack:a"]
            .iter()
            .map(|k| LockKey::new(*k).expect("key"))
            .collect();
        // The model: who holds (tenant, key), with which lease.
        let mut model: HashMap<(usize, usize), LockInfo> = HashMap::new();
        for op in ops {
            match op {
                Op::Acquire { tenant, key } => {
                    let r = views[tenant]
                        .try_acquire(&LockRequest::new(keys[key].clone(), TTL))
                        .await;
                    match model.get(&(tenant, key)) {
                        Some(h) => match r {
                            Err(Error::LockHeld { holder }) => {
                                assert_eq!(holder.lock_id, h.lock_id)
                            }
                            other => panic!("expected LockHeld, got {other:?}"),
                        },
                        None => {
                            model.insert((tenant, key), r.expect("free in this tenant"));
                        }
                    }
                }
                Op::Release {
                    tenant,
                    key,
                    victim,
                }
                | Op::Renew {
                    tenant,
                    key,
                    victim,
                }
                | Op::ForceUnlock {
                    tenant,
                    key,
                    victim,
                } => {
                    let Some(lease) = model.get(&(victim, key)).cloned() else {
                        continue;
                    };
                    let view = &views[tenant];
                    let k = &keys[key];
                    let r = match op {
                        Op::Release { .. } => view.release(k, lease.lock_id).await,
                        Op::Renew { .. } => view.renew(k, lease.lock_id, TTL).await.map(|_| ()),
                        _ => view.force_unlock(k, lease.lock_id).await,
                    };
                    if tenant == victim {
                        r.expect("a tenant can act on its own lease");
                        if !matches!(op, Op::Renew { .. }) {
                            model.remove(&(victim, key));
                        }
                    } else {
                        assert!(
                            r.is_err(),
                            "tenant {tenant} acted on tenant {victim}'s lock"
                        );
                    }
                }
            }
            // Every tenant sees exactly its own locks.
            for (t, view) in views.iter().enumerate() {
                let mut seen: Vec<_> = view
                    .list("")
                    .await
                    .expect("list")
                    .into_iter()
                    .map(|i| (i.key, i.lock_id.to_string()))
                    .collect();
                seen.sort();
                let mut want: Vec<_> = model
                    .iter()
                    .filter(|((mt, _), _)| *mt == t)
                    .map(|((_, k), i)| (keys[*k].clone(), i.lock_id.to_string()))
                    .collect();
                want.sort();
                assert_eq!(seen, want, "tenant {t}'s view");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn tenants_never_touch_each_other(ops in proptest::collection::vec(op(), 1..40)) {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(check(ops));
        }
    }
}
