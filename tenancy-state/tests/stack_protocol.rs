//! Stack state as the server's stack routes use it: documents kept byte for
//! byte, saves on top of the latest version, fencing tokens enforced by the
//! store, and deletes that keep the history. Each check runs on memory,
//! local files and S3.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use tenancy_core::{Error, StateBackend, TenantId};
use tenancy_state::stack::{Expected, SaveOptions, StackStore, StateDocument};
use tenancy_state::TenantScoped;

fn acme<B: StateBackend>(b: B) -> TenantScoped<B> {
    TenantScoped::new(b, &TenantId::new("acme").unwrap(), "v1").unwrap()
}

const TERRAFORM_STATE: &[u8] = b"{\n    \"version\": 3,\n    \"terraform_version\": \"0.11.11\",\n    \"serial\": 2,\n    \"lineage\": \"4e7c\",\n    \"modules\": [\n        {\n            \"path\": [\n                \"root\"\n            ],\n            \"outputs\": {\"z\": 1, \"a\": 2},\n            \"resources\": {},\n            \"depends_on\": []\n        }\n    ]\n}\n";

async fn documents_round_trip_byte_for_byte<B: StateBackend + Clone + 'static>(
    store: StackStore<B>,
) {
    let doc = StateDocument::from_bytes(TERRAFORM_STATE).unwrap();
    let v = store
        .save_document("web", "prod", &doc, SaveOptions::new(Expected::Latest))
        .await
        .unwrap();
    assert_eq!(v.serial, 1);
    let cur = store.current("web", "prod").await.unwrap().unwrap();
    assert_eq!(
        &cur.raw[..],
        TERRAFORM_STATE,
        "whitespace and key order kept"
    );
    assert_eq!(cur.document["modules"][0]["outputs"]["z"], json!(1));
    // a second store (another process or replica) reads the same bytes
    let other = StackStore::new(store.backend().clone());
    let again = other.version("web", "prod", 1).await.unwrap();
    assert_eq!(&again.raw[..], TERRAFORM_STATE);
    // a rollback writes the very same bytes again
    store
        .save_document(
            "web",
            "prod",
            &StateDocument::from_bytes(b" [1,2] ").unwrap(),
            SaveOptions::new(Expected::Latest),
        )
        .await
        .unwrap();
    store.rollback("web", "prod", 1, Some(2)).await.unwrap();
    let cur = store.current("web", "prod").await.unwrap().unwrap();
    assert_eq!((cur.serial, &cur.raw[..]), (3, TERRAFORM_STATE));
    // not JSON: refused, nothing written
    let err = StateDocument::from_bytes(b"{\"a\":").unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(StateDocument::from_bytes(b"   ").is_err());
}

async fn a_late_save_under_a_lost_lease_is_fenced<B: StateBackend + Clone + 'static>(
    store: StackStore<B>,
) {
    // A saves under its lock (token 5)
    let a = SaveOptions::new(Expected::Latest).fenced(Some(5));
    let doc = |n: u64| StateDocument::from_value(&json!({ "by": n })).unwrap();
    store.save_document("app", "dev", &doc(5), a).await.unwrap();
    // A's lease lapses; B takes the lock over (token 6) and saves
    let other = StackStore::new(store.backend().clone());
    let b = SaveOptions::new(Expected::Latest).fenced(Some(6));
    other.save_document("app", "dev", &doc(6), b).await.unwrap();
    // A's late save (its cached view still says serial 1) is refused
    for opts in [a, SaveOptions::new(Expected::Serial(2)).fenced(Some(5))] {
        let err = store
            .save_document("app", "dev", &doc(5), opts)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");
    }
    // ... and so are its rollback and its delete
    let err = store.rollback_with("app", "dev", 1, a).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let err = store.delete("app", "dev", a).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    // B's state survives, and B (or a later holder) goes on
    let cur = store.current("app", "dev").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.document.clone()), (2, json!({"by": 6})));
    assert_eq!(cur.fence, Some(6));
    let c = SaveOptions::new(Expected::Latest).fenced(Some(7));
    assert_eq!(
        other
            .save_document("app", "dev", &doc(7), c)
            .await
            .unwrap()
            .serial,
        3
    );
    let history = store.history("app", "dev").await.unwrap();
    let fences: Vec<_> = history.iter().map(|h| h.fence).collect();
    assert_eq!(fences, [Some(5), Some(6), Some(7)]);
}

async fn a_delete_keeps_the_history_and_a_rollback_undoes_it<B: StateBackend + Clone + 'static>(
    store: StackStore<B>,
) {
    store
        .save("web", "prod", &json!({"n": 1}), None)
        .await
        .unwrap();
    store
        .save("web", "prod", &json!({"n": 2}), Some(1))
        .await
        .unwrap();
    store
        .save("web", "dev", &json!({"n": 1}), None)
        .await
        .unwrap();
    let gone = store
        .delete("web", "prod", SaveOptions::new(Expected::Latest))
        .await
        .unwrap();
    assert_eq!(gone.serial, 3);
    // gone for readers, kept in the history
    assert!(store.current("web", "prod").await.unwrap().is_none());
    let fresh = StackStore::new(store.backend().clone());
    assert!(fresh.current("web", "prod").await.unwrap().is_none());
    assert_eq!(
        fresh.stacks().await.unwrap(),
        [("web".to_string(), "dev".to_string())]
    );
    let history = fresh.history("web", "prod").await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[2].deleted && !history[1].deleted);
    assert!(fresh
        .version("web", "prod", 3)
        .await
        .unwrap_err()
        .is_not_found());
    // deleting it again: not found, nothing written
    let err = fresh
        .delete("web", "prod", SaveOptions::new(Expected::Latest))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // a new first save goes on above the tombstone, from any store
    let again = fresh
        .save("web", "prod", &json!({"n": "new"}), None)
        .await
        .unwrap();
    assert_eq!(again.serial, 4);
    // and a rollback to a version before the delete restores it
    fresh
        .delete("web", "prod", SaveOptions::new(Expected::Serial(4)))
        .await
        .unwrap();
    let back = store.rollback("web", "prod", 2, None).await.unwrap();
    assert_eq!(back.serial, 6);
    let cur = fresh.current("web", "prod").await.unwrap().unwrap();
    assert_eq!(
        (cur.document, cur.rolled_back_from),
        (json!({"n": 2}), Some(2))
    );
    assert_eq!(fresh.stacks().await.unwrap().len(), 2);
}

async fn latest_saves_from_many_writers_all_land<B: StateBackend + Clone + 'static>(
    store: StackStore<B>,
) {
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let s = StackStore::new(store.backend().clone());
            tokio::spawn(async move {
                let doc = StateDocument::from_value(&json!({ "writer": i })).unwrap();
                s.save_document("busy", "prod", &doc, SaveOptions::new(Expected::Latest))
                    .await
                    .map(|v| v.serial)
            })
        })
        .collect();
    let mut serials = Vec::new();
    for t in tasks {
        serials.push(t.await.unwrap().unwrap());
    }
    serials.sort_unstable();
    assert_eq!(
        serials,
        (1..=8).collect::<Vec<_>>(),
        "each save got its own serial"
    );
    assert_eq!(store.history("busy", "prod").await.unwrap().len(), 8);
}

macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(tenancy_state::stack::StackStore::new(super::acme(
                        tenancy_core::MemoryBackend::new(),
                    )))
                    .await;
                }
            )*
        }
        mod local_files {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let b = tenancy_state::LocalBackend::open(dir.path()).unwrap();
                    super::$check(tenancy_state::stack::StackStore::new(super::acme(b))).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(b) = tenancy_state::testing::s3_backend_or_skip(concat!(
                        "stack_protocol::s3::",
                        stringify!($check)
                    ))
                    .await
                    else {
                        return;
                    };
                    super::$check(tenancy_state::stack::StackStore::new(super::acme(b))).await;
                }
            )*
        }
    };
}

on_every_backend!(
    documents_round_trip_byte_for_byte,
    a_late_save_under_a_lost_lease_is_fenced,
    a_delete_keeps_the_history_and_a_rollback_undoes_it,
    latest_saves_from_many_writers_all_land,
);
