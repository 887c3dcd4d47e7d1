//! Cross-process lock race on one shared store: local files, and S3 and
//! PostgreSQL when their test servers are up.
//!
//! A custom harness (`harness = false`): run normally, this binary starts
//! several copies of itself as child processes (`TENANCY_LOCK_CHILD` set)
//! that share one store (a directory through `LocalBackend::open`, or the
//! URL in `TENANCY_LOCK_STORE`: one S3 prefix, one PostgreSQL schema) and
//! each take the same lock many times. Inside the lock, a child checks that nobody else is
//! inside (a marker file made with `create_new`), increments a plain counter
//! file with a racy read-then-write, and appends its fencing token to a log.
//! Mutual exclusion holds only if the counter ends at the number of
//! acquisitions and the logged tokens strictly increase.
//!
//! A second scenario crashes a child while it holds a lock: the lock stays
//! held, is taken over once its TTL has passed (read through a clock set
//! past the expiry, instead of sleeping), and the dead holder's lease is
//! refused afterwards.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{Error, LockId, LockKey, LockManager, LockRequest, ManualClock, StateBackend};
use tenancy_lock::{Backoff, StoreLockManager};
use tenancy_state::LocalBackend;

const PROCESSES: usize = 6;
const ACQUISITIONS: usize = 25;
const CHILD: &str = "TENANCY_LOCK_CHILD";
const DIR: &str = "TENANCY_LOCK_DIR";
const STORE: &str = "TENANCY_LOCK_STORE";

fn store_dir(root: &Path) -> PathBuf {
    root.join("store")
}

fn cs_dir(root: &Path) -> PathBuf {
    root.join("critical-section")
}

/// A lock manager on the shared store: `TENANCY_LOCK_STORE`'s URL, else
/// local files under `root`.
async fn manager(root: &Path) -> StoreLockManager<Arc<dyn StateBackend>> {
    let backend: Arc<dyn StateBackend> = match std::env::var(STORE) {
        Ok(url) => tenancy_state::open(&url).await.expect("the shared store"),
        Err(_) => Arc::new(LocalBackend::open(store_dir(root)).expect("local backend")),
    };
    StoreLockManager::new(backend).with_backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(20),
        factor: 2.0,
        jitter: 0.5,
    })
}

/// One contender process: take the lock `ACQUISITIONS` times.
async fn child_race(root: &Path, id: &str) -> Result<(), String> {
    let locks = manager(root).await;
    let key = LockKey::new("race:shared").map_err(|e| e.to_string())?;
    let req = LockRequest::new(key.clone(), Duration::from_secs(60)).who(format!("child-{id}"));
    let cs = cs_dir(root);
    for n in 0..ACQUISITIONS {
        let lease = locks
            .acquire(&req, Duration::from_secs(120))
            .await
            .map_err(|e| format!("child {id} acquire {n}: {e}"))?;
        // Nobody else may be inside.
        let marker = cs.join("inside");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .map_err(|e| format!("child {id}: two holders at once ({e})"))?;
        let counter = cs.join("counter");
        let value: u64 = fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        std::thread::yield_now();
        fs::write(&counter, (value + 1).to_string()).map_err(|e| e.to_string())?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(cs.join("tokens.log"))
            .map_err(|e| e.to_string())?;
        writeln!(log, "{}", lease.fencing_token).map_err(|e| e.to_string())?;
        fs::remove_file(&marker).map_err(|e| e.to_string())?;
        locks
            .release(&key, lease.lock_id)
            .await
            .map_err(|e| format!("child {id} release {n}: {e}"))?;
    }
    Ok(())
}

/// A holder that dies without releasing: prints its lease and exits.
async fn child_crash(root: &Path) -> Result<(), String> {
    let locks = manager(root).await;
    let key = LockKey::new("race:crash").map_err(|e| e.to_string())?;
    let lease = locks
        .try_acquire(&LockRequest::new(key, Duration::from_secs(30)).operation("doomed"))
        .await
        .map_err(|e| e.to_string())?;
    println!("{} {}", lease.lock_id, lease.fencing_token);
    std::process::exit(0); // no release, no destructors: a crash as far as the lock knows
}

fn spawn_child(root: &Path, mode: &str) -> std::process::Child {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .env(CHILD, mode)
        .env(DIR, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

async fn race(root: &Path) {
    fs::create_dir_all(cs_dir(root)).expect("mkdir");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| spawn_child(root, &format!("race-{i}")))
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("child ran");
        assert!(out.status.success(), "a child failed: {:?}", out.status);
    }
    let total = PROCESSES * ACQUISITIONS;
    let counter: usize = fs::read_to_string(cs_dir(root).join("counter"))
        .expect("counter")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(counter, total, "no lost update: mutual exclusion held");
    let tokens: Vec<u64> = fs::read_to_string(cs_dir(root).join("tokens.log"))
        .expect("log")
        .lines()
        .map(|l| l.parse().expect("token"))
        .collect();
    assert_eq!(tokens.len(), total);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase in the order the lock was held"
    );
    println!("cross_process race: {PROCESSES} processes x {ACQUISITIONS} acquisitions ok");
}

async fn crash(root: &Path) {
    let out = spawn_child(root, "crash")
        .wait_with_output()
        .expect("child ran");
    assert!(out.status.success(), "the crashing child failed to acquire");
    let line = String::from_utf8(out.stdout).expect("utf8");
    let mut parts = line.split_whitespace();
    let dead = LockId::parse(parts.next().expect("lock id")).expect("lock id");
    let dead_token: u64 = parts.next().expect("token").parse().expect("token");

    let key = LockKey::new("race:crash").expect("key");
    let req = LockRequest::new(key.clone(), Duration::from_secs(30));
    // Right after the crash the lease still holds.
    match manager(root).await.try_acquire(&req).await {
        Err(Error::LockHeld { holder }) => {
            assert_eq!(holder.lock_id, dead);
            assert_eq!(holder.operation, "doomed");
        }
        other => panic!("the dead holder's lease still holds, got {other:?}"),
    }
    // Once the TTL has passed (a clock 31 s ahead), it is taken over.
    let later = ManualClock::new(chrono::Utc::now() + chrono::Duration::seconds(31));
    let survivor = manager(root).await.with_clock(Arc::new(later));
    let taken = survivor.try_acquire(&req).await.expect("takeover");
    assert!(taken.fencing_token > dead_token);
    // The dead holder's lease is refused from any process.
    for m in [manager(root).await, survivor] {
        let e = m
            .renew(&key, dead, Duration::from_secs(30))
            .await
            .expect_err("stale renew");
        assert!(matches!(e, Error::Precondition { .. }), "{e}");
        let e = m.release(&key, dead).await.expect_err("stale release");
        assert!(matches!(e, Error::Precondition { .. }), "{e}");
        assert_eq!(
            m.inspect(&key).await.expect("inspect").map(|i| i.lock_id),
            Some(taken.lock_id)
        );
    }
    println!("cross_process crash: taken over after the TTL, dead lease refused: ok");
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        // No ignored tests (nextest asks for those with `--ignored`).
        if !std::env::args().any(|a| a == "--ignored") {
            println!("cross_process: test");
        }
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(mode) = std::env::var(CHILD) {
        let root = PathBuf::from(std::env::var(DIR).expect("child needs its directory"));
        let result = rt.block_on(async {
            match mode.strip_prefix("race-") {
                Some(id) => child_race(&root, id).await,
                None => child_crash(&root).await,
            }
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let shared = [
        tenancy_state::testing::s3_url_or_skip("cross_process on s3", "lock-race"),
        tenancy_state::testing::postgres_url_or_skip("cross_process on postgres"),
    ];
    for url in std::iter::once(None).chain(shared.into_iter().flatten().map(Some)) {
        // The children inherit the store through the environment.
        match &url {
            Some(u) => std::env::set_var(STORE, u),
            None => std::env::remove_var(STORE),
        }
        println!(
            "cross_process on {}",
            url.as_deref().unwrap_or("local files")
        );
        let dir = tempfile::tempdir().expect("temp dir");
        rt.block_on(async {
            race(dir.path()).await;
            crash(dir.path()).await;
        });
    }
    ExitCode::SUCCESS
}
