//! Stack state: history, rollback, optimistic concurrency, retention, plain
//! JSON from other tools, damaged objects,
//! interrupted saves, stale writers, and backend call counts.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use serde_json::json;
use tenancy_core::testkit::{HookBackend, Op};
use tenancy_core::MemoryBackend;
use tenancy_core::{Error, PutMode, StateBackend, StateBackendExt, StateKey, TenantId};
use tenancy_state::counting::CountingBackend;
use tenancy_state::stack::StackStore;
use tenancy_state::{LocalBackend, TenantScoped};

fn acme<B: StateBackend>(b: B) -> TenantScoped<B> {
    TenantScoped::new(b, &TenantId::new("acme").unwrap(), "v1").unwrap()
}

fn key(s: &str) -> StateKey {
    StateKey::new(s).unwrap()
}

async fn exercise_history<B: StateBackend>(store: StackStore<B>) {
    assert!(store.current("web", "prod").await.unwrap().is_none());
    assert!(store.history("web", "prod").await.unwrap().is_empty());
    let v1 = store
        .save("web", "prod", &json!({"n": 1}), None)
        .await
        .unwrap();
    assert_eq!(v1.serial, 1);
    let v2 = store
        .save("web", "prod", &json!({"n": 2}), Some(1))
        .await
        .unwrap();
    assert_eq!(v2.serial, 2);
    let v3 = store
        .save("web", "prod", &json!({"n": 3}), Some(2))
        .await
        .unwrap();
    let cur = store.current("web", "prod").await.unwrap().unwrap();
    assert_eq!(cur.serial, 3);
    assert_eq!(cur.document, json!({"n": 3}));
    assert_eq!(cur.saved_at, Some(v3.saved_at));
    for (s, n) in [(1, 1), (2, 2), (3, 3)] {
        let snap = store.version("web", "prod", s).await.unwrap();
        assert_eq!(snap.serial, s);
        assert_eq!(snap.document, json!({ "n": n }));
    }
    for missing in [0, 4, 99] {
        let err = store.version("web", "prod", missing).await.unwrap_err();
        assert!(err.is_not_found(), "version {missing}: {err}");
    }
    let h = store.history("web", "prod").await.unwrap();
    let serials: Vec<u64> = h.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![1, 2, 3]);
    assert!(h.iter().all(|e| e.size > 0 && e.rolled_back_from.is_none()));

    // rollback writes a new version equal to an old one
    let r = store.rollback("web", "prod", 1, Some(3)).await.unwrap();
    assert_eq!(r.serial, 4);
    let cur = store.current("web", "prod").await.unwrap().unwrap();
    assert_eq!(cur.document, json!({"n": 1}));
    assert_eq!(cur.rolled_back_from, Some(1));
    let h = store.history("web", "prod").await.unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h[3].rolled_back_from, Some(1));
    let err = store.rollback("web", "prod", 9, Some(4)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // other stacks and environments are independent
    store
        .save("web", "staging", &json!({"s": 1}), None)
        .await
        .unwrap();
    store.save("db", "prod", &json!({}), None).await.unwrap();
    assert_eq!(
        store.stacks().await.unwrap(),
        vec![
            ("db".to_string(), "prod".to_string()),
            ("web".to_string(), "prod".to_string()),
            ("web".to_string(), "staging".to_string()),
        ]
    );
}

#[tokio::test]
async fn history_and_rollback_memory() {
    exercise_history(StackStore::new(acme(MemoryBackend::new()))).await;
}

#[tokio::test]
async fn history_and_rollback_local() {
    let dir = tempfile::tempdir().unwrap();
    let backend = acme(LocalBackend::open(dir.path()).unwrap());
    exercise_history(StackStore::new(backend)).await;
    let on_disk = dir
        .path()
        .join("tenants/acme/v1/stacks/web/prod/history/000001.json");
    assert!(on_disk.is_file(), "layout {}", on_disk.display());
    assert!(dir
        .path()
        .join("tenants/acme/v1/stacks/web/prod/state.json")
        .is_file());
}

#[tokio::test]
async fn stale_save_is_refused_and_changes_nothing() {
    let store = StackStore::new(MemoryBackend::new());
    store.save("s", "e", &json!(1), None).await.unwrap();
    store.save("s", "e", &json!(2), Some(1)).await.unwrap();
    for expected in [None, Some(1), Some(5)] {
        let err = store
            .save("s", "e", &json!("stale"), expected)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Precondition { .. }),
            "{expected:?}: {err}"
        );
    }
    let cur = store.current("s", "e").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document), (2, json!(2)));
    assert_eq!(store.history("s", "e").await.unwrap().len(), 2);
    let err = store
        .save("new", "e", &json!(1), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    assert!(store.current("new", "e").await.unwrap().is_none());
}

#[tokio::test]
async fn two_stores_on_one_backend_see_each_others_saves() {
    let backend = Arc::new(MemoryBackend::new());
    let a = StackStore::new(backend.clone());
    let b = StackStore::new(backend.clone());
    a.save("s", "e", &json!("a1"), None).await.unwrap();
    assert_eq!(a.current("s", "e").await.unwrap().unwrap().serial, 1);
    b.save("s", "e", &json!("b2"), Some(1)).await.unwrap();
    // a's cached view of serial 1 is stale now
    let err = a.save("s", "e", &json!("a2"), Some(1)).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    a.save("s", "e", &json!("a3"), Some(2)).await.unwrap();
    assert_eq!(
        b.current("s", "e").await.unwrap().unwrap().document,
        json!("a3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_have_one_winner_per_serial() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::open(dir.path()).unwrap());
    StackStore::new(backend.clone())
        .save("s", "e", &json!(0), None)
        .await
        .unwrap();
    for round in 1..=10u64 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                // separate stores: no shared cache
                let store = StackStore::new(backend.clone());
                tokio::spawn(async move {
                    store
                        .save("s", "e", &json!({"round": round, "by": i}), Some(round))
                        .await
                        .map(|v| (i, v.serial))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(w) => winners.push(w),
                Err(Error::Precondition { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let store = StackStore::new(backend.clone());
        let cur = store.current("s", "e").await.unwrap().unwrap();
        assert_eq!(cur.serial, round + 1);
        assert_eq!(winners[0].1, round + 1);
        assert_eq!(cur.document, json!({"round": round, "by": winners[0].0}));
    }
    let h = StackStore::new(backend).history("s", "e").await.unwrap();
    assert_eq!(h.len(), 11);
}

#[tokio::test]
async fn prune_and_retention() {
    let backend = Arc::new(MemoryBackend::new());
    let store = StackStore::new(backend.clone());
    let mut serial = None;
    for i in 0..10 {
        serial = Some(
            store
                .save("s", "e", &json!(i), serial)
                .await
                .unwrap()
                .serial,
        );
    }
    assert!(matches!(
        store.prune("s", "e", 0).await.unwrap_err(),
        Error::InvalidInput { .. }
    ));
    assert_eq!(store.prune("s", "e", 4).await.unwrap(), 6);
    assert_eq!(store.prune("s", "e", 4).await.unwrap(), 0);
    let serials: Vec<u64> = store
        .history("s", "e")
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(serials, vec![7, 8, 9, 10]);
    assert!(store.version("s", "e", 6).await.unwrap_err().is_not_found());
    assert_eq!(store.prune("nothing", "here", 3).await.unwrap(), 0);

    let kept = StackStore::new(backend.clone()).with_retention(3);
    let mut serial = None;
    for i in 0..70 {
        serial = Some(kept.save("r", "e", &json!(i), serial).await.unwrap().serial);
    }
    let serials: Vec<u64> = kept
        .history("r", "e")
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(serials, vec![68, 69, 70]);
    let stored = backend
        .list_keys(Some(&key("stacks/r/e/history")))
        .await
        .unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
    // rolling back to a pruned version is NotFound
    assert!(kept
        .rollback("r", "e", 2, Some(70))
        .await
        .unwrap_err()
        .is_not_found());
}

/// Makes every write of a `state.json` fail, like a crash between the two
/// steps of a save.
fn fail_state_writes(b: &HookBackend<MemoryBackend>) {
    b.set_hook(|op| {
        async move {
            match op {
                Op::Put(k, _) if k.file_name() == "state.json" => {
                    Err(Error::backend("test", "simulated crash before state.json"))
                }
                _ => Ok(()),
            }
        }
        .boxed()
    });
}

#[tokio::test]
async fn interrupted_save_stays_consistent_for_readers_and_is_rolled_forward() {
    let backend = Arc::new(HookBackend::new(MemoryBackend::new()));
    let store = StackStore::new(backend.clone());
    store.save("s", "e", &json!("one"), None).await.unwrap();
    store.save("s", "e", &json!("two"), Some(1)).await.unwrap();

    fail_state_writes(&backend);
    let err = store
        .save("s", "e", &json!("interrupted"), Some(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    backend.clear_hook();
    // the pending entry exists but no reader sees it
    assert!(backend
        .inner()
        .exists(&key("stacks/s/e/history/000003.json"))
        .await
        .unwrap());
    let reader = StackStore::new(backend.clone());
    let cur = reader.current("s", "e").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document.clone()), (2, json!("two")));
    let h: Vec<u64> = reader
        .history("s", "e")
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(h, vec![1, 2], "history hides the pending entry");
    assert!(reader
        .version("s", "e", 3)
        .await
        .unwrap_err()
        .is_not_found());

    // the next writer based on serial 2 loses, and commits the pending entry
    let err = reader
        .save("s", "e", &json!("late"), Some(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let cur = reader.current("s", "e").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document), (3, json!("interrupted")));
    let h: Vec<u64> = reader
        .history("s", "e")
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(h, vec![1, 2, 3]);
    assert_eq!(
        reader.version("s", "e", 3).await.unwrap().document,
        json!("interrupted")
    );
    reader
        .save("s", "e", &json!("four"), Some(3))
        .await
        .unwrap();
}

#[tokio::test]
async fn interrupted_first_save_is_invisible_then_rolled_forward() {
    let backend = Arc::new(HookBackend::new(MemoryBackend::new()));
    fail_state_writes(&backend);
    let store = StackStore::new(backend.clone());
    assert!(store.save("s", "e", &json!("first"), None).await.is_err());
    backend.clear_hook();
    assert!(store.current("s", "e").await.unwrap().is_none());
    assert!(store.history("s", "e").await.unwrap().is_empty());
    assert!(store.stacks().await.unwrap().is_empty());
    let err = store
        .save("s", "e", &json!("other"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let cur = store.current("s", "e").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document), (1, json!("first")));
}

#[tokio::test]
async fn a_stale_writer_after_pruning_leaves_no_visible_stray() {
    let backend = Arc::new(MemoryBackend::new());
    let slow = StackStore::new(backend.clone());
    let fast = StackStore::new(backend.clone()).with_retention(2);
    fast.save("s", "e", &json!(1), None).await.unwrap();
    assert_eq!(slow.current("s", "e").await.unwrap().unwrap().serial, 1);
    let mut serial = 1;
    for i in 2..=6 {
        serial = fast
            .save("s", "e", &json!(i), Some(serial))
            .await
            .unwrap()
            .serial;
    }
    // entry 2 was pruned, so the slow writer's claim of serial 2 succeeds,
    // but its commit must not
    let err = slow
        .save("s", "e", &json!("stale"), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let cur = slow.current("s", "e").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document), (6, json!(6)));
    let h: Vec<u64> = slow
        .history("s", "e")
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(h, vec![5, 6]);
    assert!(slow.version("s", "e", 2).await.unwrap_err().is_not_found());
    assert!(
        !backend
            .exists(&key("stacks/s/e/history/000002.json"))
            .await
            .unwrap(),
        "the stray entry was removed"
    );
}

#[tokio::test]
async fn backend_calls_per_operation() {
    let counting = Arc::new(CountingBackend::new(acme(MemoryBackend::new())));
    let store = StackStore::new(counting.clone());
    store.save("s", "e", &json!(1), None).await.unwrap();
    assert_eq!(counting.take().total(), 2, "first save");
    store.save("s", "e", &json!(2), Some(1)).await.unwrap();
    let c = counting.take();
    assert_eq!((c.put, c.total()), (2, 2), "save after save: {c:?}");
    store.current("s", "e").await.unwrap();
    assert_eq!(counting.take().total(), 1, "read");
    store.save("s", "e", &json!(3), Some(2)).await.unwrap();
    assert_eq!(counting.take().total(), 2, "save after read");
    // a fresh store (another process) must read state.json first
    let fresh = StackStore::new(counting.clone());
    fresh.save("s", "e", &json!(4), Some(3)).await.unwrap();
    assert_eq!(counting.take().total(), 3, "save without a prior read");
    store.rollback("s", "e", 1, Some(4)).await.unwrap();
    let c = counting.take();
    assert!(c.total() <= 5, "rollback: {c:?}");
}

#[tokio::test]
async fn corrupt_state_is_reported() {
    let backend = Arc::new(MemoryBackend::new());
    backend
        .put(
            &key("stacks/s/e/state.json"),
            Bytes::from_static(b"{not json"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let store = StackStore::new(backend);
    let err = store.current("s", "e").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback_s3() {
    let Some(b) =
        tenancy_state::testing::s3_backend_or_skip("stack::history_and_rollback_s3").await
    else {
        return;
    };
    exercise_history(StackStore::new(acme(b))).await;
}

async fn put_raw<B: StateBackend>(b: &B, k: &str, bytes: &'static [u8]) {
    b.put(&key(k), Bytes::from_static(bytes), PutMode::Overwrite)
        .await
        .unwrap();
}

/// Item 9: one damaged `state.json` or history entry hurts only itself.
async fn damaged_objects_hurt_only_themselves<B: StateBackend>(store: StackStore<B>) {
    for n in 1..=3 {
        let expected = (n > 1).then(|| n - 1);
        store
            .save("web", "prod", &json!({ "n": n }), expected)
            .await
            .unwrap();
    }
    store
        .save("web", "dev", &json!({"dev": 1}), None)
        .await
        .unwrap();
    put_raw(
        store.backend(),
        "stacks/web/prod/state.json",
        b"{\"format\":1,\"ser",
    )
    .await;

    let err = store.current("web", "prod").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // the other environment is untouched
    assert_eq!(
        store.current("web", "dev").await.unwrap().unwrap().document,
        json!({"dev": 1})
    );
    // history and intact versions are still readable
    let report = store.history_report("web", "prod").await.unwrap();
    let serials: Vec<u64> = report.entries.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![1, 2, 3]);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].serial, None);
    assert_eq!(report.damaged[0].key, key("stacks/web/prod/state.json"));
    assert_eq!(
        store.version("web", "prod", 2).await.unwrap().document,
        json!({"n": 2})
    );
    // rollback needs a readable state.json; restore writes over the damaged one
    assert!(store.rollback("web", "prod", 2, Some(3)).await.is_err());
    let restored = store.restore("web", "prod", 2).await.unwrap();
    assert_eq!(restored.serial, 4);
    let cur = store.current("web", "prod").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document.clone()), (4, json!({"n": 2})));
    assert_eq!(cur.rolled_back_from, Some(2));
    let err = store.restore("web", "prod", 1).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let h = store.history("web", "prod").await.unwrap();
    assert_eq!(h.iter().map(|e| e.serial).collect::<Vec<_>>(), [1, 2, 3, 4]);

    // a damaged history entry: listed as damaged, the versions around it stay
    put_raw(
        store.backend(),
        "stacks/web/prod/history/000002.json",
        b"garbage",
    )
    .await;
    let report = store.history_report("web", "prod").await.unwrap();
    let serials: Vec<u64> = report.entries.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![1, 3, 4]);
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].serial, Some(2));
    let err = store.version("web", "prod", 2).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(
        store.version("web", "prod", 1).await.unwrap().document,
        json!({"n": 1})
    );
    let back = store.rollback("web", "prod", 1, Some(4)).await.unwrap();
    assert_eq!(back.serial, 5);
    assert_eq!(
        store
            .current("web", "prod")
            .await
            .unwrap()
            .unwrap()
            .document,
        json!({"n": 1})
    );
}

#[tokio::test]
async fn damaged_objects_hurt_only_themselves_on_memory() {
    damaged_objects_hurt_only_themselves(StackStore::new(acme(MemoryBackend::new()))).await;
}

#[tokio::test]
async fn damaged_objects_hurt_only_themselves_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = acme(LocalBackend::open(dir.path()).unwrap());
    damaged_objects_hurt_only_themselves(StackStore::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_objects_hurt_only_themselves_on_s3() {
    let Some(b) = tenancy_state::testing::s3_backend_or_skip(
        "stack::damaged_objects_hurt_only_themselves_on_s3",
    )
    .await
    else {
        return;
    };
    damaged_objects_hurt_only_themselves(StackStore::new(acme(b))).await;
}

/// Item 10: plain JSON written by another tool (the seed layout:
/// `state.json` and `history/001.json`) is read as the stack's state, and
/// the next save wraps it without losing a version.
async fn plain_json_is_read_as_the_stack_state<B: StateBackend>(store: StackStore<B>) {
    put_raw(
        store.backend(),
        "stacks/app/prod/history/001.json",
        b"{\"resources\":[\"a\"]}",
    )
    .await;
    put_raw(
        store.backend(),
        "stacks/app/prod/state.json",
        b"{\"resources\":[\"a\",\"b\"]}",
    )
    .await;
    // Terraform-style: the document's serial
    put_raw(
        store.backend(),
        "stacks/tf/prod/state.json",
        b"{\"version\":4,\"serial\":7}",
    )
    .await;

    let cur = store.current("app", "prod").await.unwrap().unwrap();
    assert_eq!(cur.serial, 2);
    assert!(cur.plain);
    assert_eq!(cur.document, json!({"resources": ["a", "b"]}));
    let tf = store.current("tf", "prod").await.unwrap().unwrap();
    assert_eq!(tf.serial, 7);
    let h = store.history("app", "prod").await.unwrap();
    assert_eq!(h.iter().map(|e| e.serial).collect::<Vec<_>>(), [1, 2]);
    assert!(h.iter().all(|e| e.plain));
    assert_eq!(
        store.version("app", "prod", 1).await.unwrap().document,
        json!({"resources": ["a"]})
    );
    assert_eq!(
        store.stacks().await.unwrap(),
        vec![
            ("app".to_string(), "prod".to_string()),
            ("tf".to_string(), "prod".to_string())
        ]
    );

    // the next save wraps it: versions 1 and 2 stay in the history
    let v3 = store
        .save("app", "prod", &json!({"resources": ["c"]}), Some(2))
        .await
        .unwrap();
    assert_eq!(v3.serial, 3);
    let cur = store.current("app", "prod").await.unwrap().unwrap();
    assert!(!cur.plain);
    let h = store.history("app", "prod").await.unwrap();
    assert_eq!(h.iter().map(|e| e.serial).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        store.version("app", "prod", 2).await.unwrap().document,
        json!({"resources": ["a", "b"]})
    );
    let back = store.rollback("app", "prod", 1, Some(3)).await.unwrap();
    assert_eq!(back.serial, 4);
    assert_eq!(
        store
            .current("app", "prod")
            .await
            .unwrap()
            .unwrap()
            .document,
        json!({"resources": ["a"]})
    );
    // a stale save over plain state is refused like any other
    let err = store
        .save("tf", "prod", &json!({}), Some(6))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let tf = store
        .save("tf", "prod", &json!({"serial": 8}), Some(7))
        .await
        .unwrap();
    assert_eq!(tf.serial, 8);
    assert_eq!(
        store
            .history("tf", "prod")
            .await
            .unwrap()
            .iter()
            .map(|e| e.serial)
            .collect::<Vec<_>>(),
        [7, 8]
    );
}

#[tokio::test]
async fn plain_json_from_another_tool_is_read_as_the_stack_state_on_memory() {
    plain_json_is_read_as_the_stack_state(StackStore::new(acme(MemoryBackend::new()))).await;
}

#[tokio::test]
async fn plain_json_from_another_tool_is_read_as_the_stack_state_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = acme(LocalBackend::open(dir.path()).unwrap());
    plain_json_is_read_as_the_stack_state(StackStore::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_from_another_tool_is_read_as_the_stack_state_on_s3() {
    let Some(b) = tenancy_state::testing::s3_backend_or_skip(
        "stack::plain_json_from_another_tool_is_read_as_the_stack_state_on_s3",
    )
    .await
    else {
        return;
    };
    plain_json_is_read_as_the_stack_state(StackStore::new(acme(b))).await;
}
