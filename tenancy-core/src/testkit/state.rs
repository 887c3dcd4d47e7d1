//! The `StateBackend` conformance suite: one public function per check.
//!
//! Every check takes the backend under test and the suite's sizes, works
//! under a fresh [`unique_prefix`], deletes what it wrote, and returns
//! [`Outcome::Skipped`] when the backend's capabilities rule it out (after
//! checking that the backend refuses the mode instead of faking it).
//! [`state_suite!`](crate::state_suite) makes one test per check.

use bytes::Bytes;
use futures::future::join_all;
use futures::TryStreamExt;

use super::{unique_prefix, Outcome};
use crate::error::Error;
use crate::keys::{StateKey, MAX_KEY_LEN};
use crate::state::{DeleteMode, PutMode, StateBackend, StateBackendExt, Version};

/// Sizes of the suite; the defaults are what the issue asks for.
#[derive(Debug, Clone, Copy)]
pub struct StateSuiteOptions {
    /// Rounds of each race.
    pub race_rounds: usize,
    /// Contenders per race round.
    pub contenders: usize,
    /// Keys written for the list test.
    pub list_keys: usize,
}

impl Default for StateSuiteOptions {
    fn default() -> Self {
        StateSuiteOptions {
            race_rounds: 50,
            contenders: 16,
            list_keys: 2_000,
        }
    }
}

/// The checks of this suite, in the order [`state_suite!`](crate::state_suite) lists them.
pub const CHECKS: [&str; 11] = [
    "round_trip",
    "overwrite",
    "delete",
    "key_charset",
    "create_conflict",
    "create_race",
    "update",
    "update_race",
    "conditional_delete",
    "list",
    "get_many",
];

/// Get and put round trips: missing keys, empty and 256 KiB objects.
pub async fn round_trip(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    check_round_trip(b, &root).await;
    finish(b, &root, Outcome::Passed).await
}

/// An overwrite changes the content and the version.
pub async fn overwrite(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    check_overwrite(b, &root).await;
    finish(b, &root, Outcome::Passed).await
}

/// Delete removes; deleting a missing key is no error.
pub async fn delete(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    check_delete(b, &root).await;
    finish(b, &root, Outcome::Passed).await
}

/// Every character a key may hold, and the longest key, work and list back.
pub async fn key_charset(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    check_key_charset(b, &root).await;
    finish(b, &root, Outcome::Passed).await
}

/// A second `Create` of a key is `AlreadyExists` and changes nothing.
pub async fn create_conflict(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().conditional_create {
        check_create_conflict(b, &root).await;
        Outcome::Passed
    } else {
        refuses(b, &root, PutMode::Create).await;
        Outcome::skipped("backend reports no conditional create")
    };
    finish(b, &root, out).await
}

/// Of concurrent `Create`s of one key exactly one wins, round after round.
pub async fn create_race(b: &dyn StateBackend, opts: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().conditional_create {
        check_create_race(b, &root, opts).await;
        Outcome::Passed
    } else {
        refuses(b, &root, PutMode::Create).await;
        Outcome::skipped("backend reports no conditional create")
    };
    finish(b, &root, out).await
}

/// `Update` with the current version wins; stale or missing is `Precondition`.
pub async fn update(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().conditional_update {
        check_update(b, &root).await;
        Outcome::Passed
    } else {
        refuses(b, &root, PutMode::Update(Version("1".into()))).await;
        Outcome::skipped("backend reports no conditional update")
    };
    finish(b, &root, out).await
}

/// Of concurrent `Update`s on one version exactly one wins, round after round.
pub async fn update_race(b: &dyn StateBackend, opts: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().conditional_update {
        check_update_race(b, &root, opts).await;
        Outcome::Passed
    } else {
        refuses(b, &root, PutMode::Update(Version("1".into()))).await;
        Outcome::skipped("backend reports no conditional update")
    };
    finish(b, &root, out).await
}

/// `DeleteMode::IfVersion` refuses a stale version and deletes the current one.
pub async fn conditional_delete(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().conditional_delete {
        check_conditional_delete(b, &root).await;
        Outcome::Passed
    } else {
        Outcome::skipped("backend reports no conditional delete")
    };
    finish(b, &root, out).await
}

/// A listing returns exactly the keys below a prefix (thousands, with
/// neighbours that must not show), nested prefixes and sizes.
pub async fn list(b: &dyn StateBackend, opts: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    let out = if b.capabilities().list {
        check_list(b, &root, opts).await;
        Outcome::Passed
    } else {
        Outcome::skipped("backend reports no list")
    };
    finish(b, &root, out).await
}

/// `get_many` answers in the order asked, `None` for missing keys, the
/// same objects and versions as `get`, for batches beyond one page (1,200
/// keys), repeated keys and an empty batch.
pub async fn get_many(b: &dyn StateBackend, _: StateSuiteOptions) -> Outcome {
    let root = unique_prefix();
    check_get_many(b, &root).await;
    finish(b, &root, Outcome::Passed).await
}

async fn check_get_many(b: &dyn StateBackend, root: &StateKey) {
    assert!(b.get_many(&[]).await.expect("empty batch").is_empty());
    let key = |i: usize| root.child(&format!("many/k{i:05}")).expect("valid");
    let stored: Vec<usize> = (0..1_200).filter(|i| i % 3 != 0).collect();
    for chunk in stored.chunks(64) {
        let puts = chunk.iter().map(|&i| {
            let k = key(i);
            async move {
                b.put(&k, Bytes::from(format!("v{i}")), PutMode::Overwrite)
                    .await
            }
        });
        for r in join_all(puts.collect::<Vec<_>>()).await {
            r.expect("put for get_many");
        }
    }
    // Reversed order, every third key missing, one key asked twice.
    let mut asked: Vec<StateKey> = (0..1_200).rev().map(key).collect();
    asked.push(key(1));
    let got = b.get_many(&asked).await.expect("get_many");
    assert_eq!(got.len(), asked.len(), "one answer per key asked");
    let mut singles = Vec::with_capacity(asked.len());
    for chunk in asked.chunks(64) {
        for r in join_all(chunk.iter().map(|k| b.get(k))).await {
            singles.push(r.expect("get"));
        }
    }
    for ((k, o), single) in asked.iter().zip(&got).zip(singles) {
        match (o, single) {
            (None, None) => {}
            (Some(o), Some(s)) => {
                assert_eq!(o.bytes, s.bytes, "bytes of {k}");
                assert_eq!(o.version, s.version, "version of {k}");
            }
            (o, s) => panic!("{k}: get_many says {o:?}, get says {s:?}"),
        }
    }
    let present = got.iter().filter(|o| o.is_some()).count();
    assert_eq!(
        present,
        stored.len() + 1,
        "every stored key, and key 1 twice"
    );
    assert!(got[2].is_none(), "asked[2] is key 1197, never written");
    assert_eq!(
        got[1].as_ref().map(|o| o.bytes.clone()),
        Some(Bytes::from("v1198")),
        "answers follow the order asked"
    );
}

async fn finish(b: &dyn StateBackend, root: &StateKey, out: Outcome) -> Outcome {
    cleanup(b, root).await;
    out
}

async fn refuses(b: &dyn StateBackend, root: &StateKey, mode: PutMode) {
    let k = root.child("unsupported/x").expect("valid");
    let err = b
        .put(&k, Bytes::from_static(b"x"), mode.clone())
        .await
        .expect_err("a mode the backend does not support must be refused, not faked");
    assert!(
        matches!(err, Error::NotImplemented { .. }),
        "unsupported {mode:?} must give NotImplemented, got {err}"
    );
}

async fn check_round_trip(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("rt/obj.json").expect("valid");
    assert!(
        b.get(&k).await.expect("get missing").is_none(),
        "missing key must read as None"
    );
    let v = b
        .put(&k, Bytes::from_static(b"{\"a\":1}"), PutMode::Overwrite)
        .await
        .expect("put");
    let obj = b.get(&k).await.expect("get").expect("present after put");
    assert_eq!(&obj.bytes[..], b"{\"a\":1}", "round trip content");
    assert_eq!(obj.version, v, "get returns the version put returned");

    let empty = root.child("rt/empty").expect("valid");
    b.put(&empty, Bytes::new(), PutMode::Overwrite)
        .await
        .expect("put empty");
    let obj = b
        .get(&empty)
        .await
        .expect("get")
        .expect("empty object exists");
    assert!(obj.bytes.is_empty(), "empty object round trip");

    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let bigk = root.child("rt/big.bin").expect("valid");
    b.put(&bigk, Bytes::from(big.clone()), PutMode::Overwrite)
        .await
        .expect("put big");
    let obj = b.get(&bigk).await.expect("get").expect("big exists");
    assert_eq!(&obj.bytes[..], &big[..], "256 KiB round trip");
}

async fn check_overwrite(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("ow/obj").expect("valid");
    let v1 = b
        .put(&k, Bytes::from_static(b"one"), PutMode::Overwrite)
        .await
        .expect("put 1");
    let v2 = b
        .put(&k, Bytes::from_static(b"two"), PutMode::Overwrite)
        .await
        .expect("put 2");
    assert_ne!(v1, v2, "overwrite must change the version");
    let obj = b.get(&k).await.expect("get").expect("present");
    assert_eq!(&obj.bytes[..], b"two", "overwrite wins");
    assert_eq!(obj.version, v2);
}

async fn check_delete(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("del/obj").expect("valid");
    b.put(&k, Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .expect("put");
    b.delete(&k, DeleteMode::Any).await.expect("delete");
    assert!(
        b.get(&k).await.expect("get").is_none(),
        "deleted key reads as None"
    );
    b.delete(&k, DeleteMode::Any)
        .await
        .expect("deleting a missing key is not an error");
}

async fn check_key_charset(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("chars/A-z_0.9:x=y@z/v1.json").expect("valid");
    b.put(&k, Bytes::from_static(b"c"), PutMode::Overwrite)
        .await
        .expect("put charset key");
    assert_eq!(
        &b.get(&k).await.expect("get").expect("present").bytes[..],
        b"c"
    );
    // the longest key the type allows must work too
    let base = root.child("long").expect("valid");
    let mut s = base.as_str().to_string();
    while s.len() + 101 <= MAX_KEY_LEN {
        s.push('/');
        s.push_str(&"k".repeat(100));
    }
    let long = StateKey::new(s).expect("long key is valid");
    b.put(&long, Bytes::from_static(b"l"), PutMode::Overwrite)
        .await
        .expect("put long key");
    assert!(
        b.get(&long).await.expect("get").is_some(),
        "long key round trip"
    );
    let listed = b.list_keys(Some(&base)).await.expect("list long");
    assert_eq!(listed, vec![long], "long key lists back exactly");
}

async fn check_create_conflict(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("create/obj").expect("valid");
    b.put(&k, Bytes::from_static(b"first"), PutMode::Create)
        .await
        .expect("create new");
    let err = b
        .put(&k, Bytes::from_static(b"second"), PutMode::Create)
        .await
        .expect_err("create on an existing key must fail");
    assert!(
        matches!(err, Error::AlreadyExists { .. }),
        "want AlreadyExists, got {err}"
    );
    let obj = b.get(&k).await.expect("get").expect("present");
    assert_eq!(
        &obj.bytes[..],
        b"first",
        "a refused create leaves the object unchanged"
    );
}

async fn check_update(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("update/obj").expect("valid");
    let v1 = b
        .put(&k, Bytes::from_static(b"v1"), PutMode::Overwrite)
        .await
        .expect("put");
    let v2 = b
        .put(&k, Bytes::from_static(b"v2"), PutMode::Update(v1.clone()))
        .await
        .expect("update with the current version");
    assert_ne!(v1, v2);
    let err = b
        .put(&k, Bytes::from_static(b"stale"), PutMode::Update(v1))
        .await
        .expect_err("update with a stale version must fail");
    assert!(
        matches!(err, Error::Precondition { .. }),
        "want Precondition, got {err}"
    );
    let obj = b.get(&k).await.expect("get").expect("present");
    assert_eq!(
        &obj.bytes[..],
        b"v2",
        "a refused update leaves the object unchanged"
    );
    assert_eq!(obj.version, v2);

    let missing = root.child("update/missing").expect("valid");
    let err = b
        .put(&missing, Bytes::from_static(b"x"), PutMode::Update(v2))
        .await
        .expect_err("update of a missing key must fail");
    assert!(
        matches!(err, Error::Precondition { .. }),
        "want Precondition, got {err}"
    );
    assert!(
        b.get(&missing).await.expect("get").is_none(),
        "nothing written"
    );
}

async fn check_conditional_delete(b: &dyn StateBackend, root: &StateKey) {
    let k = root.child("cdel/obj").expect("valid");
    let v1 = b
        .put(&k, Bytes::from_static(b"1"), PutMode::Overwrite)
        .await
        .expect("put");
    let v2 = b
        .put(&k, Bytes::from_static(b"2"), PutMode::Overwrite)
        .await
        .expect("put");
    let err = b
        .delete(&k, DeleteMode::IfVersion(v1))
        .await
        .expect_err("stale conditional delete must fail");
    assert!(
        matches!(err, Error::Precondition { .. }),
        "want Precondition, got {err}"
    );
    assert!(
        b.get(&k).await.expect("get").is_some(),
        "refused delete keeps the object"
    );
    b.delete(&k, DeleteMode::IfVersion(v2))
        .await
        .expect("conditional delete");
    assert!(b.get(&k).await.expect("get").is_none());
}

async fn check_list(b: &dyn StateBackend, root: &StateKey, opts: StateSuiteOptions) {
    let many = root.child("list/many").expect("valid");
    let mut want = Vec::with_capacity(opts.list_keys);
    for chunk in (0..opts.list_keys).collect::<Vec<_>>().chunks(64) {
        let puts = chunk.iter().map(|i| {
            let k = many.child(&format!("d{}/k{i:06}", i % 7)).expect("valid");
            want.push(k.clone());
            async move {
                b.put(&k, Bytes::from_static(b"x"), PutMode::Overwrite)
                    .await
            }
        });
        let puts: Vec<_> = puts.collect();
        for r in join_all(puts).await {
            r.expect("put for list");
        }
    }
    // neighbours that must not show up under `many`
    for n in ["list/many-sibling", "list/manyx/k", "list/other/k"] {
        b.put(
            &root.child(n).expect("valid"),
            Bytes::from_static(b"n"),
            PutMode::Overwrite,
        )
        .await
        .expect("put neighbour");
    }
    want.sort();
    let got = b.list_keys(Some(&many)).await.expect("list");
    assert_eq!(
        got.len(),
        want.len(),
        "list returns every key under the prefix, no more"
    );
    assert_eq!(got, want, "list returns exactly the keys under the prefix");

    let sub = many.child("d3").expect("valid");
    let got_sub = b.list_keys(Some(&sub)).await.expect("list sub");
    let want_sub: Vec<_> = want.iter().filter(|k| k.is_under(&sub)).cloned().collect();
    assert_eq!(got_sub, want_sub, "nested prefix");

    let entries: Vec<_> = b
        .list(Some(&many))
        .try_collect()
        .await
        .expect("list entries");
    assert!(entries.iter().all(|e| e.size == 1), "list reports sizes");

    let none = root.child("list/nothing-here").expect("valid");
    assert!(b
        .list_keys(Some(&none))
        .await
        .expect("list empty")
        .is_empty());
}

async fn check_create_race(b: &dyn StateBackend, root: &StateKey, opts: StateSuiteOptions) {
    for round in 0..opts.race_rounds {
        let k = root.child(&format!("race-create/r{round}")).expect("valid");
        let attempts = (0..opts.contenders).map(|c| {
            let k = k.clone();
            async move {
                b.put(&k, Bytes::from(format!("c{c}")), PutMode::Create)
                    .await
                    .map(|_| c)
            }
        });
        let results = join_all(attempts).await;
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(c) => winners.push(c),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => panic!("create race round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "create race round {round}: winners {winners:?}"
        );
        let obj = b.get(&k).await.expect("get").expect("present");
        assert_eq!(
            &obj.bytes[..],
            format!("c{}", winners[0]).as_bytes(),
            "create race round {round}: the stored value is the winner's"
        );
    }
}

async fn check_update_race(b: &dyn StateBackend, root: &StateKey, opts: StateSuiteOptions) {
    let k = root.child("race-update/obj").expect("valid");
    let mut v = b
        .put(&k, Bytes::from_static(b"start"), PutMode::Overwrite)
        .await
        .expect("put");
    for round in 0..opts.race_rounds {
        let attempts = (0..opts.contenders).map(|c| {
            let k = k.clone();
            let v = v.clone();
            async move {
                b.put(&k, Bytes::from(format!("r{round}c{c}")), PutMode::Update(v))
                    .await
                    .map(|nv| (c, nv))
            }
        });
        let results = join_all(attempts).await;
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(w) => winners.push(w),
                Err(Error::Precondition { .. }) => {}
                Err(e) => panic!("update race round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "update race round {round}: {} winners",
            winners.len()
        );
        let (c, nv) = winners.pop().expect("one winner");
        let obj = b.get(&k).await.expect("get").expect("present");
        assert_eq!(&obj.bytes[..], format!("r{round}c{c}").as_bytes());
        assert_eq!(obj.version, nv);
        v = nv;
    }
}

async fn cleanup(b: &dyn StateBackend, root: &StateKey) {
    let keys = b.list_keys(Some(root)).await.unwrap_or_default();
    for chunk in keys.chunks(64) {
        join_all(chunk.iter().map(|k| b.delete(k, DeleteMode::Any))).await;
    }
}

/// What the state suite runs on: a backend, or a pair of a guard that must
/// outlive the checks (a temporary directory, a server) and a backend.
pub trait StateFixture {
    /// The backend under test.
    fn backend(&self) -> &dyn StateBackend;
}

impl<B: StateBackend> StateFixture for B {
    fn backend(&self) -> &dyn StateBackend {
        self
    }
}

impl<G, B: StateBackend> StateFixture for (G, B) {
    fn backend(&self) -> &dyn StateBackend {
        &self.1
    }
}

/// One `#[tokio::test]` per check of the state suite, on a fresh fixture
/// from `$make` (a future of `Option<F>`, `F:` [`StateFixture`]; `None`
/// skips, e.g. when a server is missing). `strict:` first fails on any skipped
/// check; a second argument gives the [`StateSuiteOptions`].
///
/// ```
/// tenancy_core::state_suite!(strict: async { Some(tenancy_core::MemoryBackend::new()) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! state_suite {
    (strict: $make:expr $(, $opts:expr)?) => {
        $crate::__state_suite!(true, $make $(, $opts)?);
    };
    ($make:expr $(, $opts:expr)?) => {
        $crate::__state_suite!(false, $make $(, $opts)?);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __state_suite {
    ($strict:expr, $make:expr) => {
        $crate::__state_suite!(
            $strict,
            $make,
            $crate::testkit::state::StateSuiteOptions::default()
        );
    };
    ($strict:expr, $make:expr, $opts:expr) => {
        $crate::__testkit_tests!(state, $strict, f => ($crate::testkit::state::StateFixture::backend(&f), $opts), $make, [
            round_trip, overwrite, delete, key_charset, create_conflict, create_race,
            update, update_race, conditional_delete, list, get_many,
        ]);
    };
}
