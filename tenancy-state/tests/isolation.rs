//! Tenant isolation: random operation sequences by three tenants on one
//! shared backend (proptest), and bad keys refused with nothing written.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;
use tenancy_core::{
    DeleteMode, Error, MemoryBackend, PutMode, StateBackend, StateBackendExt, StateKey, TenantId,
};
use tenancy_state::stack::StackStore;
use tenancy_state::{LocalBackend, TenantScoped};

/// Tenant ids chosen so that one is a string prefix of another.
const TENANTS: [&str; 3] = ["acme", "acme-2", "beta"];
/// Keys shared by name between tenants, including nested ones.
const KEYS: [&str; 6] = ["a", "b", "d/x", "d/y", "d/e/z", "v1"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize, u8),
    Create(usize, usize, u8),
    Get(usize, usize),
    Delete(usize, usize),
    List(usize, Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS.len();
    let k = 0..KEYS.len();
    prop_oneof![
        (t.clone(), k.clone(), any::<u8>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        (t.clone(), k.clone(), any::<u8>()).prop_map(|(t, k, v)| Op::Create(t, k, v)),
        (t.clone(), k.clone()).prop_map(|(t, k)| Op::Get(t, k)),
        (t.clone(), k.clone()).prop_map(|(t, k)| Op::Delete(t, k)),
        (
            t,
            proptest::option::of(prop_oneof![Just(2usize), Just(4usize)])
        )
            .prop_map(|(t, p)| Op::List(t, p)),
    ]
}

/// The prefix keys used in `Op::List`: index 2 -> "d", index 4 -> "d/e".
fn list_prefix(i: usize) -> StateKey {
    match i {
        2 => StateKey::new("d").unwrap(),
        _ => StateKey::new("d/e").unwrap(),
    }
}

async fn run_ops<B: StateBackend + Clone>(shared: B, ops: Vec<Op>) {
    let scoped: Vec<TenantScoped<B>> = TENANTS
        .iter()
        .map(|t| TenantScoped::new(shared.clone(), &TenantId::new(*t).unwrap(), "v1").unwrap())
        .collect();
    let mut model: Vec<BTreeMap<StateKey, Vec<u8>>> = vec![BTreeMap::new(); TENANTS.len()];
    for op in ops {
        match op {
            Op::Put(t, k, v) => {
                let key = StateKey::new(KEYS[k]).unwrap();
                scoped[t]
                    .put(&key, Bytes::from(vec![v, t as u8]), PutMode::Overwrite)
                    .await
                    .unwrap();
                model[t].insert(key, vec![v, t as u8]);
            }
            Op::Create(t, k, v) => {
                let key = StateKey::new(KEYS[k]).unwrap();
                let r = scoped[t]
                    .put(&key, Bytes::from(vec![v, t as u8]), PutMode::Create)
                    .await;
                if model[t].contains_key(&key) {
                    assert!(
                        matches!(r, Err(Error::AlreadyExists { .. })),
                        "create of an existing key of tenant {t}: {r:?}"
                    );
                } else {
                    // another tenant's object of the same name never blocks it
                    r.unwrap();
                    model[t].insert(key, vec![v, t as u8]);
                }
            }
            Op::Get(t, k) => {
                let key = StateKey::new(KEYS[k]).unwrap();
                let got = scoped[t].get(&key).await.unwrap().map(|o| o.bytes.to_vec());
                assert_eq!(got.as_ref(), model[t].get(&key), "get {key} by tenant {t}");
            }
            Op::Delete(t, k) => {
                let key = StateKey::new(KEYS[k]).unwrap();
                scoped[t].delete(&key, DeleteMode::Any).await.unwrap();
                model[t].remove(&key);
            }
            Op::List(t, p) => {
                let prefix = p.map(list_prefix);
                let got = scoped[t].list_keys(prefix.as_ref()).await.unwrap();
                let want: Vec<StateKey> = model[t]
                    .keys()
                    .filter(|k| prefix.as_ref().is_none_or(|p| k.is_under(p)))
                    .cloned()
                    .collect();
                assert_eq!(got, want, "list {prefix:?} by tenant {t}");
            }
        }
    }
    // every tenant sees exactly its own objects, and the shared store holds
    // nothing outside the tenants' prefixes
    let mut all = Vec::new();
    for (t, s) in scoped.iter().enumerate() {
        let keys = s.list_keys(None).await.unwrap();
        assert_eq!(keys, model[t].keys().cloned().collect::<Vec<_>>());
        for k in &keys {
            let obj = s.get(k).await.unwrap().unwrap();
            assert_eq!(
                obj.bytes.last(),
                Some(&(t as u8)),
                "{k} belongs to tenant {t}"
            );
            all.push(s.prefix().join(k).unwrap());
        }
    }
    all.sort();
    assert_eq!(shared.list_keys(None).await.unwrap(), all);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tenants_are_isolated_on_memory(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(MemoryBackend::new(), ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn tenants_are_isolated_on_local_files(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(run_ops(LocalBackend::open(dir.path()).unwrap(), ops));
    }
}

fn bad_inputs() -> Vec<String> {
    vec![
        "..".into(),
        "%2e%2e".into(),
        "/abs".into(),
        "a//b".into(),
        "a\0b".into(),
        "a\\b".into(),
        "x".repeat(10 * 1024),
        "../other".into(),
        "a/../../b".into(),
        ".".into(),
        "".into(),
    ]
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn bad_keys_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let shared = LocalBackend::open(dir.path().join("store")).unwrap();
    let acme = TenantScoped::new(shared.clone(), &TenantId::new("acme").unwrap(), "v1").unwrap();
    let stacks = StackStore::new(acme.clone());
    for bad in bad_inputs() {
        let shown = format!("{:?}", &bad[..bad.len().min(20)]);
        let err = StateKey::new(bad.clone()).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{shown}: {err}");
        let err = StateKey::new("ok").unwrap().child(&bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "child {shown}: {err}"
        );
        let err = StateKey::segment(&bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "segment {shown}: {err}"
        );
        // every StackStore entry point validates stack and env names
        for (stack, env) in [(bad.as_str(), "prod"), ("web", bad.as_str())] {
            let e = stacks.save(stack, env, &json!(1), None).await.unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "save {shown}: {e}");
            let e = stacks.current(stack, env).await.unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput { .. }),
                "current {shown}: {e}"
            );
            let e = stacks.history(stack, env).await.unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput { .. }),
                "history {shown}: {e}"
            );
            let e = stacks.rollback(stack, env, 1, Some(1)).await.unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput { .. }),
                "rollback {shown}: {e}"
            );
            let e = stacks.prune(stack, env, 1).await.unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput { .. }),
                "prune {shown}: {e}"
            );
        }
        // a state version must be one safe segment too
        let e =
            TenantScoped::new(shared.clone(), &TenantId::new("acme").unwrap(), &bad).unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput { .. }),
            "version {shown}: {e}"
        );
    }
    // multi-segment names are not stack names
    let e = stacks
        .save("a/b", "prod", &json!(1), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
    assert!(
        files_under(dir.path()).is_empty(),
        "nothing was written: {:?}",
        files_under(dir.path())
    );
    assert!(shared.list_keys(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_scoped_backend_never_reaches_outside_its_prefix() {
    let shared = MemoryBackend::new();
    let other = StateKey::new("tenants/beta/v1/secret").unwrap();
    shared
        .put(&other, Bytes::from_static(b"beta"), PutMode::Overwrite)
        .await
        .unwrap();
    let registry = StateKey::new("registry/acme.yaml").unwrap();
    shared
        .put(&registry, Bytes::from_static(b"limits"), PutMode::Overwrite)
        .await
        .unwrap();
    let acme = TenantScoped::new(shared.clone(), &TenantId::new("acme").unwrap(), "v1").unwrap();
    assert!(acme.list_keys(None).await.unwrap().is_empty());
    for k in ["tenants/beta/v1/secret", "registry/acme.yaml", "secret"] {
        let k = StateKey::new(k).unwrap();
        assert!(acme.get(&k).await.unwrap().is_none());
        acme.delete(&k, DeleteMode::Any).await.unwrap();
    }
    assert!(shared.exists(&other).await.unwrap());
    assert!(shared.exists(&registry).await.unwrap());
    // keys written through the scope land below it
    acme.put(&StateKey::new("x").unwrap(), Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    assert!(shared
        .exists(&StateKey::new("tenants/acme/v1/x").unwrap())
        .await
        .unwrap());
}
