//! Cross-process compare-and-swap on one shared store: 8 processes x 50
//! rounds of a create race and an update race, exactly one winner per
//! round, on local files (one directory), S3 (one prefix of the test
//! bucket) and PostgreSQL (one schema of the test server).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use tenancy_core::{PutMode, StateBackend, StateKey};
use tenancy_state::testing::{postgres_url_or_skip, s3_url_or_skip};
use tenancy_state::LocalBackend;

const PROCESSES: usize = 8;
const ROUNDS: u64 = 50;

#[tokio::test]
async fn eight_processes_fifty_rounds_one_winner_each_on_local_files() {
    race(None).await;
}

#[tokio::test]
async fn eight_processes_fifty_rounds_one_winner_each_on_s3() {
    if let Some(url) = s3_url_or_skip("cas race on s3", "cas-race") {
        race(Some(url)).await;
    }
}

#[tokio::test]
async fn eight_processes_fifty_rounds_one_winner_each_on_postgres() {
    if let Some(url) = postgres_url_or_skip("cas race on postgres") {
        race(Some(url)).await;
    }
}

/// The race on the store at `url`, else on local files in the test's directory.
async fn race(url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn StateBackend> = match &url {
        Some(u) => tenancy_state::open(u).await.unwrap(),
        None => Arc::new(LocalBackend::open(dir.path()).unwrap()),
    };
    let obj = StateKey::new("race/update/obj").unwrap();
    backend
        .put(&obj, Bytes::from_static(b"0 start"), PutMode::Create)
        .await
        .unwrap();

    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_tenancy-state-cas-race-helper"))
                .arg(dir.path())
                .arg(format!("p{i}"))
                .arg(ROUNDS.to_string())
                .args(url.iter())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Start the race once every contender has opened the store.
    for _ in 0..6000 {
        let ready = (0..PROCESSES)
            .filter(|i| dir.path().join(format!("ready-p{i}")).exists())
            .count();
        if ready == PROCESSES {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(dir.path().join("go"), b"go").unwrap();

    let mut create_wins: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut update_wins: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "contender {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let (what, round) = line.split_once(' ').unwrap();
            let round: u64 = round.parse().unwrap();
            match what {
                "create" => create_wins.entry(round).or_default().push(i),
                "update" => update_wins.entry(round).or_default().push(i),
                other => panic!("unexpected line {other:?}"),
            }
        }
    }
    for r in 0..ROUNDS {
        assert_eq!(
            create_wins.get(&r).map(Vec::len),
            Some(1),
            "create round {r}: winners {:?}",
            create_wins.get(&r)
        );
        assert_eq!(
            update_wins.get(&r).map(Vec::len),
            Some(1),
            "update round {r}: winners {:?}",
            update_wins.get(&r)
        );
        let key = StateKey::new(format!("race/create/r{r}")).unwrap();
        let stored = backend.get(&key).await.unwrap().unwrap();
        let winner = create_wins[&r][0];
        assert_eq!(
            &stored.bytes[..],
            format!("p{winner}").as_bytes(),
            "create round {r}: the stored value is the winner's"
        );
    }
    let last = backend.get(&obj).await.unwrap().unwrap();
    let text = String::from_utf8(last.bytes.to_vec()).unwrap();
    let winner = update_wins[&(ROUNDS - 1)][0];
    assert_eq!(text, format!("{ROUNDS} p{winner}"), "final update");
    // more than one process took part in the races
    let distinct: std::collections::BTreeSet<usize> =
        update_wins.values().flatten().copied().collect();
    assert!(distinct.len() > 1, "only {distinct:?} ever won");
}
