//! The audit trail (`tenancy_state::audit`) on memory, local files and S3:
//! appends chain, `verify` finds every modified, missing, moved or
//! rewritten entry and names it, `prune` keeps the rest verifiable, and
//! concurrent writers never fork a chain.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tenancy_core::{Clock, MemoryBackend, PutMode, StateBackend, StateKey, TenantId};
use tenancy_state::audit::{Actor, AuditLog, Filter, Head, NewEntry, Outcome, ProblemKind, Scope};
use tenancy_state::LocalBackend;

fn entry(action: &str, target: &str) -> NewEntry {
    NewEntry {
        actor: Actor::admin(),
        action: action.into(),
        target: target.into(),
        via: "cli".into(),
        request_id: None,
        outcome: Outcome::Ok,
        detail: json!({}),
    }
}

fn acme() -> Scope {
    Scope::Tenant(TenantId::new("acme").unwrap())
}

fn key(seq: u64) -> StateKey {
    StateKey::new(format!("audit/tenants/acme/entries/{seq:020}.json")).unwrap()
}

/// Every backend of the run: memory, local files, and S3 when configured.
async fn backends(
    test: &str,
) -> Vec<(
    &'static str,
    Arc<dyn StateBackend>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out: Vec<(
        &'static str,
        Arc<dyn StateBackend>,
        Option<tempfile::TempDir>,
    )> = vec![
        ("memory", Arc::new(MemoryBackend::new()), None),
        (
            "local files",
            Arc::new(LocalBackend::open(dir.path()).unwrap()),
            Some(dir),
        ),
    ];
    if let Some(s3) = tenancy_state::testing::s3_backend_or_skip(test).await {
        out.push(("s3", s3, None));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_chain_and_verify_on_every_backend() {
    for (name, b, _dir) in backends("audit::appends_chain_and_verify").await {
        let log = AuditLog::new(b.clone());
        assert_eq!(log.head(&acme()).await.unwrap(), None, "{name}");
        let mut last = None;
        for i in 0..20 {
            let action = if i % 2 == 0 {
                "tenant.update"
            } else {
                "key.create"
            };
            last = Some(
                log.append(&acme(), entry(action, "tenant acme"))
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert_eq!(last.seq, 20, "{name}");
        let all = log.list(&acme(), &Filter::default()).await.unwrap();
        assert_eq!(all.len(), 20, "{name}");
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash, "{name}");
        }
        assert_eq!(all[0].prev, tenancy_state::audit::GENESIS, "{name}");
        let keys = log
            .list(
                &acme(),
                &Filter {
                    action: Some("key.".into()),
                    ..Filter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(keys.len(), 10, "{name}");
        let head = log.head(&acme()).await.unwrap().unwrap();
        assert_eq!(
            (head.seq, head.hash.clone()),
            (20, last.hash.clone()),
            "{name}"
        );
        let v = log.verify(&acme(), Some(&head)).await.unwrap();
        assert!(v.is_intact(), "{name}: {:?}", v.problems);
        assert_eq!(v.entries, 20, "{name}");
        // The admin log is another chain.
        assert_eq!(log.head(&Scope::Admin).await.unwrap(), None, "{name}");
        let a = log
            .append(&Scope::Admin, entry("admin.passwd", "admin"))
            .await
            .unwrap();
        assert_eq!(a.seq, 1, "{name}");
        // A head round-trips through its printed form.
        let printed = head.to_string();
        assert_eq!(printed.parse::<Head>().unwrap(), head, "{name}");
        assert!("12:nothex".parse::<Head>().is_err());
    }
}

async fn rewrite(b: &dyn StateBackend, seq: u64, f: impl FnOnce(String) -> String) {
    let k = key(seq);
    let o = b.get(&k).await.unwrap().unwrap();
    let text = f(String::from_utf8(o.bytes.to_vec()).unwrap());
    b.put(&k, Bytes::from(text), PutMode::Overwrite)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_modified_missing_moved_and_rewritten_entries() {
    for (name, b, _dir) in backends("audit::verify_names_problems").await {
        let log = AuditLog::new(b.clone());
        for i in 1..=10 {
            log.append(
                &acme(),
                entry("tenant.update", &format!("tenant acme #{i}")),
            )
            .await
            .unwrap();
        }
        let head = log.head(&acme()).await.unwrap().unwrap();

        // Modified: entry 4's action changed on disk.
        rewrite(&*b, 4, |t| t.replace("tenant.update", "tenant.create")).await;
        let v = log.verify(&acme(), None).await.unwrap();
        assert_eq!(v.problems.len(), 1, "{name}: {:?}", v.problems);
        assert_eq!(
            (v.problems[0].seq, v.problems[0].kind),
            (4, ProblemKind::Modified),
            "{name}"
        );
        rewrite(&*b, 4, |t| t.replace("tenant.create", "tenant.update")).await;
        assert!(
            log.verify(&acme(), None).await.unwrap().is_intact(),
            "{name}"
        );

        // Moved: entries 6 and 7 swapped.
        let six = b.get(&key(6)).await.unwrap().unwrap().bytes;
        let seven = b.get(&key(7)).await.unwrap().unwrap().bytes;
        b.put(&key(6), seven.clone(), PutMode::Overwrite)
            .await
            .unwrap();
        b.put(&key(7), six.clone(), PutMode::Overwrite)
            .await
            .unwrap();
        let v = log.verify(&acme(), None).await.unwrap();
        let moved: Vec<u64> = v
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::Moved)
            .map(|p| p.seq)
            .collect();
        assert_eq!(moved, [6, 7], "{name}: {:?}", v.problems);
        b.put(&key(6), six, PutMode::Overwrite).await.unwrap();
        b.put(&key(7), seven, PutMode::Overwrite).await.unwrap();

        // Missing: entry 3 deleted.
        let three = b.get(&key(3)).await.unwrap().unwrap().bytes;
        b.delete(&key(3), tenancy_core::DeleteMode::Any)
            .await
            .unwrap();
        let v = log.verify(&acme(), None).await.unwrap();
        assert_eq!(v.problems.len(), 1, "{name}: {:?}", v.problems);
        assert_eq!(
            (v.problems[0].seq, v.problems[0].kind),
            (3, ProblemKind::Missing),
            "{name}"
        );
        b.put(&key(3), three, PutMode::Create).await.unwrap();
        assert!(
            log.verify(&acme(), Some(&head)).await.unwrap().is_intact(),
            "{name}"
        );

        // Rewritten: the whole chain replaced by a consistent new one.
        for seq in 1..=10 {
            b.delete(&key(seq), tenancy_core::DeleteMode::Any)
                .await
                .unwrap();
        }
        b.delete(
            &StateKey::new("audit/tenants/acme/tip.json").unwrap(),
            tenancy_core::DeleteMode::Any,
        )
        .await
        .ok();
        // (by another process: this log remembers the real tail)
        let forger = AuditLog::new(b.clone());
        for _ in 1..=10 {
            forger
                .append(&acme(), entry("tenant.update", "forged"))
                .await
                .unwrap();
        }
        assert!(
            log.verify(&acme(), None).await.unwrap().is_intact(),
            "{name}"
        );
        let v = log.verify(&acme(), Some(&head)).await.unwrap();
        assert_eq!(v.problems.len(), 1, "{name}: {:?}", v.problems);
        assert_eq!(v.problems[0].kind, ProblemKind::Rewritten, "{name}");
        assert_eq!(v.problems[0].seq, 10, "{name}");
    }
}

#[tokio::test]
async fn prune_keeps_the_rest_verifiable() {
    let clock = tenancy_core::ManualClock::starting_now();
    let b: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let log = AuditLog::new(b.clone()).with_clock(Arc::new(clock.clone()));
    for _ in 0..5 {
        log.append(&acme(), entry("tenant.update", "old"))
            .await
            .unwrap();
    }
    clock.advance(std::time::Duration::from_secs(3600));
    let cut_at = clock.now();
    for _ in 0..3 {
        log.append(&acme(), entry("tenant.update", "new"))
            .await
            .unwrap();
    }
    let head = log.head(&acme()).await.unwrap().unwrap();
    assert_eq!(log.prune(&acme(), cut_at).await.unwrap(), 5);
    let v = log.verify(&acme(), Some(&head)).await.unwrap();
    assert!(v.is_intact(), "{:?}", v.problems);
    assert_eq!((v.first, v.entries), (6, 3));
    // Appends go on after the cut, and the chain still holds.
    let next = log
        .append(&acme(), entry("tenant.update", "after"))
        .await
        .unwrap();
    assert_eq!(next.seq, 9);
    assert!(log.verify(&acme(), Some(&head)).await.unwrap().is_intact());
    // A modified first kept entry no longer links to the cut.
    let k = key(6);
    let o = b.get(&k).await.unwrap().unwrap();
    let text = String::from_utf8(o.bytes.to_vec())
        .unwrap()
        .replace("new", "NEW");
    b.put(&k, Bytes::from(text), PutMode::Overwrite)
        .await
        .unwrap();
    let v = log.verify(&acme(), None).await.unwrap();
    assert_eq!(v.problems[0].seq, 6, "{:?}", v.problems);
    // Nothing old enough: nothing pruned.
    assert_eq!(log.prune(&acme(), cut_at).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_writers_never_fork_a_chain() {
    for (name, b, dir) in backends("audit::eight_concurrent_writers").await {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                // On local files each writer opens the directory itself,
                // like a separate process.
                let backend: Arc<dyn StateBackend> = match &dir {
                    Some(d) => Arc::new(LocalBackend::open(d.path()).unwrap()),
                    None => b.clone(),
                };
                tokio::spawn(async move {
                    let log = AuditLog::new(backend);
                    for i in 0..15 {
                        log.append(&acme(), entry("tenant.update", &format!("w{w} #{i}")))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let log = AuditLog::new(b.clone());
        let v = log.verify(&acme(), None).await.unwrap();
        assert!(v.is_intact(), "{name}: {:?}", v.problems);
        assert_eq!(v.entries, 120, "{name}");
        assert_eq!(v.head.unwrap().seq, 120, "{name}");
        let all = log.list(&acme(), &Filter::default()).await.unwrap();
        let mut targets: Vec<&str> = all.iter().map(|e| e.target.as_str()).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 120, "{name}: an entry was lost or doubled");
    }
}

#[tokio::test]
async fn an_append_after_an_append_is_one_conditional_write_and_a_stale_memory_still_chains() {
    use tenancy_state::counting::CountingBackend;
    let counting = Arc::new(CountingBackend::new(MemoryBackend::new()));
    let log = AuditLog::new(counting.clone());
    log.append(&acme(), entry("tenant.create", "tenant acme"))
        .await
        .unwrap();
    counting.reset();
    log.append(&acme(), entry("tenant.update", "tenant acme"))
        .await
        .unwrap();
    let c = counting.take();
    assert_eq!((c.get, c.put, c.list), (0, 1, 0), "{c:?}");
    // Another process appends: this log's memory is stale, and its next
    // append loses the race once, reads forward and chains onto it.
    let other = AuditLog::new(counting.clone());
    other
        .append(&acme(), entry("tenant.suspend", "tenant acme"))
        .await
        .unwrap();
    let e = log
        .append(&acme(), entry("tenant.activate", "tenant acme"))
        .await
        .unwrap();
    assert_eq!(e.seq, 4);
    let v = log.verify(&acme(), None).await.unwrap();
    assert!(v.is_intact(), "{:?}", v.problems);
    assert_eq!(v.entries, 4);
}
