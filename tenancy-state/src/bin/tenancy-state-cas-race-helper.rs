//! Test helper, not a tool: one contender of the cross-process
//! compare-and-swap race on a shared store (`tests/cross_process.rs`
//! starts several of these at once, on local files, S3 and PostgreSQL).
//!
//! Usage: `tenancy-state-cas-race-helper <dir> <contender> <rounds> [<store URL>]`.
//! The store is the URL (`s3://...`, `postgres://...`), else the directory
//! `<dir>` as local files. Opens the store (each contender its own
//! connections), says so with a file `<dir>/ready-<contender>`, waits
//! until `<dir>/go` exists, then
//! 1. create race: for each round r, tries `PutMode::Create` on
//!    `race/create/r<r>` and prints `create <r>` when it won;
//! 2. update race: for each round r, reads `race/update/obj` until it holds
//!    round r, then tries `PutMode::Update(version)` to round r+1 and prints
//!    `update <r>` when it won (on a lost CAS it reads again; when the
//!    object already holds a later round, someone else won round r).
//!
//! Exits 0 when done, 2 on bad arguments, 1 on any unexpected error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::sync::Arc;

use tenancy_core::{Error, PutMode, StateBackend, StateKey};
use tenancy_state::LocalBackend;

fn parse_round(bytes: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let round = s.split_whitespace().next().unwrap_or("");
    round
        .parse()
        .map_err(|e| format!("bad object content {s:?}: {e}"))
}

/// After a win, a moment's pause: on a store whose row locks queue writers
/// (PostgreSQL) the winner of one round would otherwise be first in line
/// for the next, round after round, and the race would test one process.
async fn step_back() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn run(dir: PathBuf, me: String, rounds: u64, store: Option<&str>) -> Result<(), String> {
    // Connected before the start, so that no contender races ahead while
    // the others are still opening the store.
    let backend: Arc<dyn StateBackend> = match store {
        Some(url) => tenancy_state::open(url).await.map_err(|e| e.to_string())?,
        None => Arc::new(LocalBackend::open(&dir).map_err(|e| e.to_string())?),
    };
    std::fs::write(dir.join(format!("ready-{me}")), b"ready").map_err(|e| e.to_string())?;
    let go = dir.join("go");
    let start = Instant::now();
    while !go.exists() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("no go file after 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut out = String::new();

    for r in 0..rounds {
        let key = StateKey::new(format!("race/create/r{r}")).map_err(|e| e.to_string())?;
        match backend
            .put(&key, Bytes::from(me.clone()), PutMode::Create)
            .await
        {
            Ok(_) => {
                out.push_str(&format!("create {r}\n"));
                step_back().await;
            }
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(format!("create round {r}: {e}")),
        }
    }

    let key = StateKey::new("race/update/obj").map_err(|e| e.to_string())?;
    for r in 0..rounds {
        loop {
            let obj = backend
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("race/update/obj is missing")?;
            let at = parse_round(&obj.bytes)?;
            if at > r {
                break; // someone else won round r
            }
            if at < r {
                return Err(format!("object went back to round {at} in round {r}"));
            }
            let next = Bytes::from(format!("{} {me}", r + 1));
            match backend.put(&key, next, PutMode::Update(obj.version)).await {
                Ok(_) => {
                    out.push_str(&format!("update {r}\n"));
                    step_back().await;
                    break;
                }
                Err(Error::Precondition { .. }) => continue,
                Err(e) => return Err(format!("update round {r}: {e}")),
            }
        }
    }
    print!("{out}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(me), Some(rounds)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: tenancy-state-cas-race-helper <dir> <contender> <rounds> [<store URL>]");
        return ExitCode::from(2);
    };
    let Ok(rounds) = rounds.parse::<u64>() else {
        eprintln!("rounds must be a number, got {rounds:?}");
        return ExitCode::from(2);
    };
    let store = args.get(4).map(String::as_str);
    match run(PathBuf::from(dir), me.clone(), rounds, store).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("contender {me}: {e}");
            ExitCode::FAILURE
        }
    }
}
