//! End-to-end test of the audit trail with the built `tenancy` binary on
//! local files: 8 CLI processes at once, each doing a few audited actions
//! on the same logs, never fork a chain or lose an entry (`tenancy audit
//! verify` passes, the count is exact, the numbers are 1..=N), and a
//! swapped or edited entry file makes `verify` exit 8 naming the entries.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PASSWORD: &str = "audit e2e admin password";
const WORKERS: usize = 8;

struct Run {
    code: i32,
    out: String,
    err: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.out, self.err
        )
    }
}

/// One person at one machine: a `TENANCY_HOME` of their own, on `url`.
struct User {
    home: tempfile::TempDir,
    url: String,
}

impl User {
    fn new(url: &str) -> User {
        User {
            home: tempfile::tempdir().unwrap(),
            url: url.to_string(),
        }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
            .arg("--backend")
            .arg(&self.url)
            .args(args)
            .env("TENANCY_HOME", self.home.path())
            .env("TENANCY_BCRYPT_COST", "4")
            .env("NO_COLOR", "1")
            .env_remove("TENANCY_BACKEND")
            .env_remove("TENANCY_ADMIN_PASSWORD")
            .env_remove("TENANCY_TENANT")
            .env_remove("TENANCY_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().unwrap().into()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> Run {
        let r = self.run(args, stdin);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(
            !r.err.contains("warning: the change was made"),
            "{args:?}: {r:?}"
        );
        r
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        let r = self.ok(&a, "");
        serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    }

    fn admin_login(&self) {
        self.ok(
            &["admin", "login", "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
    }
}

fn entries(admin: &User, tenant: Option<&str>) -> Vec<Value> {
    let mut args = vec!["audit", "list"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    admin.json(&args)["entries"].as_array().unwrap().clone()
}

/// The numbers of a log are 1..=n without a gap or a repeat.
fn assert_contiguous(entries: &[Value], what: &str) {
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=entries.len() as u64).collect();
    assert_eq!(seqs, want, "{what}");
}

#[test]
fn eight_cli_processes_at_once_never_fork_or_lose_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_file_path(dir.path().join("store"))
        .unwrap()
        .to_string();
    let admin = User::new(&url);
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.admin_login();
    let created = admin.json(&["tenant", "init", "acme"]);
    let secret = created["secret"].as_str().unwrap().to_string();

    // Each worker, at the same time as the others: an admin login (admin
    // log), an update of acme and a refused login as acme (acme's log), a
    // tenant of its own (its log), a login as acme with the right secret
    // (acme's log).
    let workers: Vec<User> = (0..WORKERS).map(|_| User::new(&url)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let secret = secret.clone();
                s.spawn(move || {
                    w.admin_login();
                    let name = format!("worker {i}");
                    w.ok(&["tenant", "update", "acme", "--display-name", &name], "");
                    let r = w.run(&["login", "acme", "--secret-stdin"], "tnc_not_the_secret\n");
                    assert_eq!(r.code, 3, "{r:?}");
                    w.ok(&["tenant", "init", &format!("worker-{i}")], "");
                    w.ok(&["login", "acme", "--secret-stdin"], &format!("{secret}\n"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });

    // The admin log: bootstrap, the first admin login, one login per worker.
    let admin_log = entries(&admin, None);
    assert_eq!(admin_log.len(), 2 + WORKERS, "{admin_log:#?}");
    assert_contiguous(&admin_log, "admin log");
    assert_eq!(
        admin_log
            .iter()
            .filter(|e| e["action"] == "session.login" && e["outcome"] == "ok")
            .count(),
        1 + WORKERS
    );
    // acme's log: its creation, and per worker an update, a refused and a
    // successful login.
    let acme = entries(&admin, Some("acme"));
    assert_eq!(acme.len(), 1 + 3 * WORKERS, "{acme:#?}");
    assert_contiguous(&acme, "acme's log");
    let count = |action: &str, outcome: &str| {
        acme.iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("tenant.update", "ok"), WORKERS);
    assert_eq!(count("session.login", "refused"), WORKERS);
    assert_eq!(count("session.login", "ok"), WORKERS);
    for e in &acme {
        assert_eq!(e["via"], "cli", "{e}");
        let text = e.to_string();
        assert!(!text.contains(&secret) && !text.contains("$2"), "{text}");
    }
    let ok_login = acme
        .iter()
        .find(|e| e["action"] == "session.login" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(ok_login["actor"]["kind"], "tenant", "{ok_login}");
    assert_eq!(ok_login["actor"]["id"], "acme", "{ok_login}");
    for i in 0..WORKERS {
        let own = entries(&admin, Some(&format!("worker-{i}")));
        assert_eq!(own.len(), 1, "{own:#?}");
        assert_eq!(own[0]["action"], "tenant.create");
    }

    // Every chain verifies, through the CLI.
    for args in [
        vec!["audit", "verify"],
        vec!["audit", "verify", "--tenant", "acme"],
    ] {
        let v = admin.json(&args);
        assert_eq!(v["intact"], true, "{v}");
    }
    let head = admin.ok(&["audit", "head", "--tenant", "acme"], "");
    let head = head.out.trim().to_string();
    assert!(head.starts_with(&format!("{}:", 1 + 3 * WORKERS)), "{head}");
    admin.ok(
        &["audit", "verify", "--tenant", "acme", "--head", &head],
        "",
    );

    // Swap two entry files: verify names both and exits 8.
    let entries_dir = dir.path().join("store/audit/tenants/acme/entries");
    let file = |n: u64| entries_dir.join(format!("{n:020}.json"));
    let (a, b) = (
        std::fs::read(file(3)).unwrap(),
        std::fs::read(file(4)).unwrap(),
    );
    std::fs::write(file(3), &b).unwrap();
    std::fs::write(file(4), &a).unwrap();
    let r = admin.run(&["audit", "verify", "--tenant", "acme"], "");
    assert_eq!(r.code, 8, "{r:?}");
    assert!(
        r.out.contains("moved") && r.out.contains('3') && r.out.contains('4'),
        "{r:?}"
    );
    assert!(
        r.err
            .starts_with("error: the tenant acme log is not intact"),
        "{r:?}"
    );
    std::fs::write(file(3), &a).unwrap();
    std::fs::write(file(4), &b).unwrap();
    admin.ok(&["audit", "verify", "--tenant", "acme"], "");

    // Edit one: named as modified; the JSON says where.
    let edited = String::from_utf8(a.clone())
        .unwrap()
        .replace("\"cli\"", "\"server\"");
    std::fs::write(file(3), edited).unwrap();
    let r = admin.run(&["-o", "json", "audit", "verify", "--tenant", "acme"], "");
    assert_eq!(r.code, 8, "{r:?}");
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["problems"][0]["seq"], 3, "{v}");
    assert_eq!(v["problems"][0]["kind"], "modified", "{v}");
    std::fs::write(file(3), &a).unwrap();

    // A rewrite of the whole chain from entry 3 on is caught by the head
    // kept outside the store.
    std::fs::remove_file(file(1 + 3 * WORKERS as u64)).unwrap();
    admin.ok(&["audit", "verify", "--tenant", "acme"], "");
    let r = admin.run(
        &["audit", "verify", "--tenant", "acme", "--head", &head],
        "",
    );
    assert_eq!(r.code, 8, "{r:?}");
    assert!(r.out.contains("rewritten"), "{r:?}");
}
