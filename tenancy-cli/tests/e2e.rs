//! End-to-end tests of the built `tenancy` binary: both workflows, races and
//! bad input, on local files and on S3 (moto; skipped loudly without
//! `AWS_ENDPOINT`/`AWS_BUCKET`, failing instead when `TENANCY_REQUIRE_S3=1`
//! or `CI=true`). Each user is a separate `TENANCY_HOME`.
//!
//! The workflows also run in remote mode: through the built
//! `tenancy-server` binary on the same stores, the CLI process without any
//! `AWS_*` variable and, when the tests run as root, as user `nobody`, who
//! cannot read the store directory at all.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};
use tenancy_core::{StateBackend, StateBackendExt};

const PASSWORD: &str = "e2e admin password";

/// Where the store is: a backend URL, plus a handle for checking it directly.
struct Store {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn local_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_file_path(dir.path().join("store"))
        .unwrap()
        .to_string();
    Store {
        url,
        _dir: Some(dir),
    }
}

/// An S3 store under a fresh prefix, or `None` (printed) when there is no S3 server.
fn s3_store(test: &str) -> Option<Store> {
    Some(Store {
        url: tenancy_state::testing::s3_url_or_skip(test, "cli-e2e")?,
        _dir: None,
    })
}

/// A PostgreSQL store in a fresh schema, or `None` (printed) when there is no server.
fn postgres_store(test: &str) -> Option<Store> {
    Some(Store {
        url: tenancy_state::testing::postgres_url_or_skip(test)?,
        _dir: None,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Store {
    fn backend(&self) -> std::sync::Arc<dyn StateBackend> {
        runtime().block_on(tenancy_state::open(&self.url)).unwrap()
    }

    fn keys(&self) -> Vec<String> {
        let b = self.backend();
        runtime()
            .block_on(b.list_keys(None))
            .unwrap()
            .into_iter()
            .map(|k| k.to_string())
            .collect()
    }

    fn user(&self) -> User {
        User {
            home: tempfile::tempdir().unwrap(),
            url: self.url.clone(),
            remote: None,
        }
    }
}

/// One person at one machine: a `TENANCY_HOME` of their own.
struct User {
    home: tempfile::TempDir,
    url: String,
    /// Remote mode: no `AWS_*` variables, and this uid when set.
    remote: Option<Option<u32>>,
}

/// The uid remote users run as: `nobody` when the tests run as root (so the
/// store is out of their reach), else none (the same user).
fn remote_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    (me == 0).then_some(65534)
}

fn server_bin() -> PathBuf {
    let p = Path::new(bin()).with_file_name("tenancy-server");
    assert!(
        p.exists(),
        "{} is missing: the remote runs need the server binary; run the workspace's tests (scripts/test.sh, or cargo test --workspace)",
        p.display()
    );
    p
}

/// A `tenancy-server` process on a store, for the remote runs.
struct ServerProc {
    child: Child,
    base: String,
    metrics: String,
}

impl ServerProc {
    /// Starts the server on `store` with `admin` as its admin token (which
    /// bootstraps the registry there, as `tenancy init` would).
    fn start(store: &Store, admin: &str) -> ServerProc {
        use std::io::BufRead;
        let mut child = Command::new(server_bin())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--backend", &store.url])
            .env("TENANCY_ADMIN_TOKEN", admin)
            .env("TENANCY_BCRYPT_COST", "4")
            .env("RUST_LOG", "warn")
            .env_remove("TENANCY_BACKEND")
            .env_remove("TENANCY_ADMIN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tenancy-server");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        let mut metrics = None;
        while base.is_none() || metrics.is_none() {
            let line = lines
                .next()
                .expect("the server prints its addresses")
                .unwrap();
            if let Some(rest) = line.strip_prefix("tenancy-server listening on ") {
                base = Some(format!(
                    "http://{}",
                    rest.split_whitespace().next().unwrap()
                ));
            } else if let Some(rest) = line.strip_prefix("tenancy-server metrics on ") {
                metrics = Some(rest.trim().to_string());
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        ServerProc {
            child,
            base: base.unwrap(),
            metrics: metrics.unwrap(),
        }
    }

    /// How many requests the server has answered (its
    /// `tenant_api_requests_total`, summed over routes and statuses).
    fn requests(&self) -> u64 {
        self.requests_of("tenant_api_requests_total{")
    }

    /// The sum of the request counters whose line starts with `prefix`.
    fn requests_of(&self, prefix: &str) -> u64 {
        use std::io::Read;
        let rest = self.metrics.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_once('/').unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(conn, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's users work: on the store directly, or through a server on it.
struct Setup {
    store: Store,
    server: Option<ServerProc>,
}

impl Setup {
    fn direct(store: Store) -> Setup {
        Setup {
            store,
            server: None,
        }
    }

    fn remote(store: Store) -> Setup {
        let server = ServerProc::start(&store, PASSWORD);
        Setup {
            store,
            server: Some(server),
        }
    }

    fn is_remote(&self) -> bool {
        self.server.is_some()
    }

    /// A user of this setup: through the server when there is one.
    fn user(&self) -> User {
        match &self.server {
            None => self.store.user(),
            Some(server) => {
                let uid = remote_uid();
                let home = tempfile::tempdir().unwrap();
                if let Some(uid) = uid {
                    std::os::unix::fs::chown(home.path(), Some(uid), Some(uid)).unwrap();
                }
                User {
                    home,
                    url: server.base.clone(),
                    remote: Some(uid),
                }
            }
        }
    }

    /// Someone at the store itself (its operator): always direct.
    fn operator(&self) -> User {
        self.store.user()
    }

    /// Creates the registry: `tenancy init` on the store; through a
    /// server, `init` explains that the server made it (the server
    /// bootstrapped it with [`PASSWORD`] at its start).
    fn init(&self, admin: &User) {
        if self.is_remote() {
            let r = admin.fails(
                &["init", "--admin-password-stdin"],
                &format!("{PASSWORD}\n"),
                2,
            );
            assert!(r.err.contains("bootstraps its own registry"), "{r:?}");
        } else {
            admin.ok(
                &["init", "--admin-password-stdin"],
                &format!("{PASSWORD}\n"),
            );
            admin.fails(
                &["init", "--admin-password-stdin"],
                &format!("{PASSWORD}\n"),
                6,
            );
        }
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
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

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tenancy")
}

impl User {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--backend")
            .arg(&self.url)
            .args(args)
            .env("TENANCY_HOME", self.home.path())
            .env("TENANCY_BCRYPT_COST", "4")
            .env_remove("TENANCY_BACKEND")
            .env_remove("TENANCY_ADMIN_PASSWORD")
            .env_remove("TENANCY_TENANT")
            .env_remove("TENANCY_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = self.remote {
            for (name, _) in std::env::vars_os() {
                let name_str = name.to_string_lossy();
                if name_str.starts_with("AWS_") || name_str.starts_with("PGPASS") {
                    c.env_remove(name);
                }
            }
            if let Some(uid) = uid {
                use std::os::unix::process::CommandExt;
                c.uid(uid).gid(uid).current_dir("/");
            }
        }
        c
    }

    /// Writes `text` to `name` in this user's home, readable by them.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).unwrap();
        if let Some(Some(uid)) = self.remote {
            std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        }
        p
    }

    fn spawn(&self, args: &[&str], stdin: &str) -> Child {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        // The child may exit (e.g. on bad flags) before reading its input.
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
        self.spawn(args, stdin).wait_with_output().unwrap().into()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> Run {
        let r = self.run(args, stdin);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        r
    }

    fn json(&self, args: &[&str], stdin: &str) -> Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        self.ok(&a, stdin).json()
    }

    /// Fails with `code` and a one-line error message.
    fn fails(&self, args: &[&str], stdin: &str, code: i32) -> Run {
        let r = self.run(args, stdin);
        assert_eq!(r.code, code, "{args:?}: {r:?}");
        assert!(
            r.err.starts_with("error: ") || r.err.starts_with("{\"error\":"),
            "{args:?}: {r:?}"
        );
        assert_eq!(r.err.trim_end().lines().count(), 1, "{args:?}: {r:?}");
        assert!(!r.err.contains("panicked"), "{r:?}");
        r
    }

    fn session_file(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn login(&self, tenant: &str, secret: &str) {
        self.ok(
            &["login", "--tenant", tenant, "--secret-stdin"],
            &format!("{secret}\n"),
        );
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn create_tenant(admin: &User, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["tenant", "init", "--name", id];
    args.extend_from_slice(extra);
    let v = admin.json(&args, "");
    assert_eq!(v["tenant"]["id"], id);
    assert_eq!(v["tenant"]["status"], "active");
    v["secret"].as_str().unwrap().to_string()
}

/// Both workflows, start to end.
fn workflows(setup: &Setup) {
    let store = &setup.store;
    let admin = setup.user();
    setup.init(&admin);
    admin.fails(&["tenant", "list"], "", 3);
    admin.fails(
        &["admin", "login", "--password-stdin"],
        "not the password\n",
        3,
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(mode(&admin.session_file("admin-session")), 0o600);

    // Three tenants; list and show as JSON.
    let acme_secret = create_tenant(
        &admin,
        "acme",
        &["--plan", "pro", "--display-name", "Acme Corp"],
    );
    let globex_secret = create_tenant(&admin, "globex", &["--email", "it@globex.test"]);
    let _initech_secret = create_tenant(&admin, "initech", &["--max-stacks", "1"]);
    let list = admin.json(&["tenant", "list"], "");
    let ids: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex", "initech"]);
    assert!(list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "active"));
    let show = admin.json(&["tenant", "show", "acme"], "");
    assert_eq!(show["status"], "active");
    assert_eq!(show["display_name"], "Acme Corp");
    let table = admin.ok(&["tenant", "list"], "").out;
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(
        !table.contains('\x1b'),
        "no colour without a terminal: {table:?}"
    );

    // Tenant teams, each on their own machine.
    let acme = setup.user();
    let globex = setup.user();
    acme.login("acme", &acme_secret);
    assert_eq!(mode(&acme.session_file("session")), 0o600);
    globex.login("globex", &globex_secret);
    acme.fails(&["tenant", "list"], "", 4); // a tenant session cannot run admin commands
                                            // A remote user cannot use the store itself: no AWS_* variables or
                                            // PostgreSQL password, and
                                            // (as nobody, when the tests run as root) no access to its directory.
    if let Some(uid) = acme.remote {
        let at_store = User {
            home: tempfile::tempdir().unwrap(),
            url: store.url.clone(),
            remote: Some(uid),
        };
        if let Some(uid) = uid {
            std::os::unix::fs::chown(at_store.home.path(), Some(uid), Some(uid)).unwrap();
        }
        if uid.is_some() || store.url.starts_with("s3://") || store.url.starts_with("postgres://") {
            let r = at_store.run(
                &["login", "--tenant", "acme", "--secret-stdin"],
                &acme_secret,
            );
            assert_ne!(r.code, 0, "a remote user reached the store: {r:?}");
        }
    }
    // The session file keeps the server's token in remote mode, never the secret.
    let kept = std::fs::read_to_string(acme.session_file("session")).unwrap();
    assert!(!kept.contains(&acme_secret), "{kept}");
    assert_eq!(
        kept.contains("\"token\": \"tns_"),
        setup.is_remote(),
        "{kept}"
    );
    let shown = acme.json(&["session"], "");
    assert_eq!(shown["backend"], acme.url.as_str());
    assert_eq!(shown["tenant"], "acme");

    let v1 = acme.json(
        &["state", "put", "--stack", "web", "--env", "prod"],
        r#"{"replicas": 1}"#,
    );
    assert_eq!(v1["serial"], 1);
    let file = acme.file("state.json", r#"{"replicas": 3, "image": "web:2"}"#);
    let v2 = acme.json(
        &[
            "state",
            "put",
            "--stack",
            "web",
            "--env",
            "prod",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(v2["serial"], 2);
    let got: Value = serde_json::from_str(
        &acme
            .ok(&["state", "get", "--stack", "web", "--env", "prod"], "")
            .out,
    )
    .unwrap();
    assert_eq!(got, json!({"replicas": 3, "image": "web:2"}));
    let history = acme.json(&["state", "history", "--stack", "web", "--env", "prod"], "");
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
    acme.ok(
        &[
            "state", "rollback", "--stack", "web", "--env", "prod", "--to", "1",
        ],
        "",
    );
    let got = acme.json(&["state", "get", "--stack", "web", "--env", "prod"], "");
    assert_eq!(got, json!({"replicas": 1}));
    assert_eq!(
        acme.json(&["state", "history", "--stack", "web", "--env", "prod"], "")["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let lock = acme.json(
        &[
            "lock",
            "acquire",
            "--stack",
            "web",
            "--env",
            "prod",
            "--ttl",
            "5m",
            "--operation",
            "deploy",
        ],
        "",
    );
    let lock_id = lock["lock_id"].as_str().unwrap().to_string();
    assert!(lock["fencing_token"].as_u64().unwrap() >= 1);
    let locks = acme.json(&["lock", "list"], "");
    assert_eq!(locks["locks"].as_array().unwrap().len(), 1);
    assert_eq!(locks["locks"][0]["operation"], "deploy");
    acme.fails(
        &["lock", "acquire", "--stack", "web", "--env", "prod"],
        "",
        6,
    );

    // No cross-tenant access.
    globex.fails(&["state", "get", "--stack", "web", "--env", "prod"], "", 5);
    assert_eq!(globex.json(&["state", "list"], "")["stacks"], json!([]));
    assert_eq!(globex.json(&["lock", "list"], "")["locks"], json!([]));
    assert_ne!(
        globex
            .run(
                &["lock", "release", "--stack", "web", "--env", "prod", "--id", &lock_id],
                ""
            )
            .code,
        0
    );
    assert_ne!(
        globex
            .run(
                &[
                    "lock",
                    "force-unlock",
                    "--stack",
                    "web",
                    "--env",
                    "prod",
                    "--id",
                    &lock_id
                ],
                ""
            )
            .code,
        0
    );
    assert_eq!(
        acme.json(&["lock", "list"], "")["locks"][0]["lock_id"],
        lock_id.as_str()
    );
    globex.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        r#"{"globex": true}"#,
    );
    assert_eq!(
        acme.json(&["state", "get", "--stack", "web", "--env", "prod"], ""),
        json!({"replicas": 1})
    );
    acme.ok(
        &[
            "lock", "release", "--stack", "web", "--env", "prod", "--id", &lock_id,
        ],
        "",
    );
    assert_eq!(acme.json(&["lock", "list"], "")["locks"], json!([]));

    // Rotate: the old secret and the old session fail; the new secret works; state is kept.
    let rotated = admin.json(&["tenant", "rotate", "acme", "--yes"], "");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, acme_secret);
    let r = acme.fails(&["state", "list"], "", 3);
    assert!(r.err.contains("rotated"), "{r:?}");
    acme.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{acme_secret}\n"),
        3,
    );
    acme.login("acme", &new_secret);
    assert_eq!(
        acme.json(&["state", "get", "--stack", "web", "--env", "prod"], ""),
        json!({"replicas": 1})
    );

    // Suspend: login and the existing session fail; then activate.
    admin.ok(&["tenant", "suspend", "acme", "--reason", "audit"], "");
    assert_eq!(
        admin.json(&["tenant", "show", "acme"], "")["status"],
        "suspended"
    );
    let r = acme.fails(&["state", "list"], "", 4);
    assert!(r.err.contains("suspended"), "{r:?}");
    setup.user().fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{new_secret}\n"),
        4,
    );
    admin.ok(&["tenant", "activate", "acme"], "");
    acme.ok(&["state", "list"], "");
    globex.ok(&["state", "list"], "");

    // Quota: initech may keep one stack.
    let initech = setup.user();
    let initech_secret = admin.json(&["tenant", "rotate", "initech", "--yes"], "")["secret"]
        .as_str()
        .unwrap()
        .to_string();
    initech.login("initech", &initech_secret);
    initech.ok(&["state", "put", "--stack", "one", "--env", "prod"], "{}");
    initech.fails(
        &["state", "put", "--stack", "two", "--env", "prod"],
        "{}",
        7,
    );

    // Migrate a single-tenant stacks/ tree into globex.
    let rt = runtime();
    let backend = store.backend();
    rt.block_on(async {
        let legacy = tenancy_state::stack::StackStore::new(backend.clone());
        legacy
            .save("legacy", "prod", &json!({"from": "single-tenant"}), None)
            .await
            .unwrap();
        legacy
            .save("legacy", "dev", &json!({"from": "dev"}), None)
            .await
            .unwrap();
    });
    // Migrating works on the store itself: through a server it is refused
    // with what to do, and the store's operator runs it.
    if setup.is_remote() {
        let r = admin.fails(
            &["migrate", "--tenant", "globex", "--from", "stacks"],
            "",
            2,
        );
        assert!(r.err.contains("works on a store directly"), "{r:?}");
    }
    let operator = setup.operator();
    operator.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let report = operator.json(&["migrate", "--tenant", "globex", "--from", "stacks"], "");
    assert_eq!(report["clean"], true, "{report}");
    assert!(report["copied"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(
        globex.json(&["state", "get", "--stack", "legacy", "--env", "prod"], ""),
        json!({"from": "single-tenant"})
    );
    acme.fails(
        &["state", "get", "--stack", "legacy", "--env", "prod"],
        "",
        5,
    );

    // Delete: archived, and login fails.
    admin.fails(&["tenant", "delete", "acme"], "", 2);
    let deleted = admin.json(&["tenant", "delete", "acme", "--confirm"], "");
    assert_eq!(deleted["status"], "deleted");
    let keys = store.keys();
    assert!(
        keys.iter().any(|k| k.starts_with("archive/acme/")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("tenants/acme/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("tenants/globex/")),
        "{keys:?}"
    );
    acme.fails(&["state", "list"], "", 4);
    setup.user().fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{new_secret}\n"),
        4,
    );
    let stats = admin.json(&["tenant", "stats"], "");
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_status"]["deleted"], 1);

    admin.ok(&["admin", "logout"], "");
    assert!(!admin.session_file("admin-session").exists());
    admin.fails(&["tenant", "list"], "", 3);
}

/// Bad input: a clear one-line error, the right code, and no change to the store.
fn bad_input(store: &Store) {
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "acme", &[]);
    let team = store.user();
    team.fails(&["state", "list"], "", 3); // missing session
    team.login("acme", &secret);
    team.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        r#"{"ok": true}"#,
    );
    let before = store.keys();

    // The refused logins below are recorded in the audit trail: the only
    // objects bad input may add.
    let stranger = store.user();
    stranger.fails(
        &["login", "--tenant", "nobody", "--secret-stdin"],
        &format!("{secret}\n"),
        3,
    );
    stranger.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        "tnc_0000000000000000000000000000000000\n",
        3,
    );
    stranger.fails(
        &["login", "--tenant", "ACME!", "--secret-stdin"],
        &format!("{secret}\n"),
        2,
    );
    assert!(!stranger.session_file("session").exists());
    admin.fails(&["tenant", "show", "Not-Valid"], "", 2);
    admin.fails(&["tenant", "show", "nobody"], "", 5);
    admin.fails(&["tenant", "suspend", "nobody"], "", 5);
    admin.fails(&["tenant", "init", "--name", "x"], "", 2);
    admin.fails(
        &[
            "tenant",
            "init",
            "--name",
            "ok-name",
            "--secret-prefix",
            "BAD",
        ],
        "",
        2,
    );
    for (stack, env) in [
        ("../../registry", "prod"),
        ("web", ".."),
        ("web", "../globex"),
        ("a/b", "prod"),
        ("web", "%2e%2e"),
    ] {
        team.fails(&["state", "put", "--stack", stack, "--env", env], "{}", 2);
        team.fails(&["state", "get", "--stack", stack, "--env", env], "", 2);
        team.fails(&["lock", "acquire", "--stack", stack, "--env", env], "", 2);
    }
    let r = team.fails(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "this is not json",
        2,
    );
    assert!(r.err.contains("not JSON"), "{r:?}");
    team.fails(
        &[
            "lock", "release", "--stack", "web", "--env", "prod", "--id", "123",
        ],
        "",
        2,
    );
    team.fails(
        &[
            "lock", "acquire", "--stack", "web", "--env", "prod", "--ttl", "forever",
        ],
        "",
        2,
    );

    // Expired session.
    let path = team.session_file("session");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut v: Value = serde_json::from_str(&good).unwrap();
    v["session"]["expires_at"] = json!("2000-01-01T00:00:00Z");
    std::fs::write(&path, v.to_string()).unwrap();
    let r = team.fails(&["state", "list"], "", 3);
    assert!(r.err.contains("expired"), "{r:?}");
    // Corrupted session.
    std::fs::write(&path, "{\"format\": 1, \"backend\": ").unwrap();
    let r = team.fails(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{}",
        3,
    );
    assert!(r.err.contains("corrupted"), "{r:?}");
    // An admin session file copied into the tenant slot is refused.
    std::fs::copy(admin.session_file("admin-session"), &path).unwrap();
    team.fails(&["state", "list"], "", 3);
    std::fs::write(&path, good).unwrap();
    team.ok(&["state", "list"], "");

    let after = store.keys();
    let added: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(
        added,
        [
            "audit/admin/entries/00000000000000000003.json",
            "audit/tenants/acme/entries/00000000000000000003.json",
        ],
        "bad input changed the store beyond recording the two refused logins"
    );
    assert!(
        before.iter().all(|k| after.contains(k)),
        "bad input removed objects"
    );
}

/// Several processes race for one lock: exactly one wins, the rest get exit 6.
fn lock_race(store: &Store, contenders: usize) {
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "racers", &[]);
    let users: Vec<User> = (0..contenders).map(|_| store.user()).collect();
    for u in &users {
        u.login("racers", &secret);
    }
    for round in 0..3 {
        let env = format!("round{round}");
        let children: Vec<Child> = users
            .iter()
            .map(|u| {
                u.spawn(
                    &[
                        "--output", "json", "lock", "acquire", "--stack", "race", "--env", &env,
                        "--ttl", "5m",
                    ],
                    "",
                )
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().into())
            .collect();
        let winners: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {runs:#?}");
        for r in runs.iter().filter(|r| r.code != 0) {
            assert_eq!(r.code, 6, "round {round}: {r:?}");
            assert!(r.err.contains("held"), "{r:?}");
        }
        let won = winners[0].json();
        let listed = users[0].json(&["lock", "list"], "");
        let mine: Vec<&Value> = listed["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["key"] == format!("stack:race:env:{env}").as_str())
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["lock_id"], won["lock_id"]);
    }

    // Concurrent saves of one stack's state: each is based on the version it
    // read, so no two commit the same serial and none is lost silently.
    let children: Vec<Child> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            u.spawn(
                &[
                    "--output", "json", "state", "put", "--stack", "raced", "--env", "prod",
                ],
                &format!("{{\"writer\": {i}}}"),
            )
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    assert!(runs.iter().all(|r| r.code == 0 || r.code == 6), "{runs:#?}");
    let mut serials: Vec<u64> = runs
        .iter()
        .filter(|r| r.code == 0)
        .map(|r| r.json()["serial"].as_u64().unwrap())
        .collect();
    serials.sort();
    assert!(!serials.is_empty(), "{runs:#?}");
    assert_eq!(
        serials,
        (1..=serials.len() as u64).collect::<Vec<_>>(),
        "{runs:#?}"
    );
    let hist = users[0].json(
        &["state", "history", "--stack", "raced", "--env", "prod"],
        "",
    );
    assert_eq!(hist["versions"].as_array().unwrap().len(), serials.len());
}

/// A burst of processes each creating a different new stack never ends above
/// the tenant's max stacks.
fn quota_burst(store: &Store, contenders: usize) {
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "bursty", &["--max-stacks", "2"]);
    let users: Vec<User> = (0..contenders).map(|_| store.user()).collect();
    for u in &users {
        u.login("bursty", &secret);
    }
    let children: Vec<Child> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            u.spawn(
                &["state", "put", "--stack", &format!("s{i}"), "--env", "prod"],
                "{}",
            )
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    let won = runs.iter().filter(|r| r.code == 0).count();
    assert_eq!(won, 2, "{runs:#?}");
    assert!(runs.iter().all(|r| r.code == 0 || r.code == 7), "{runs:#?}");
    let stacks = users[0].json(&["tenant", "stacks"], "");
    assert_eq!(stacks["count"], 2, "{stacks}");
}

#[test]
fn workflows_on_local_files() {
    workflows(&Setup::direct(local_store()));
}

#[test]
fn workflows_through_a_server_on_local_files() {
    workflows(&Setup::remote(local_store()));
}

#[test]
fn workflows_on_s3() {
    if let Some(store) = s3_store("workflows_on_s3") {
        workflows(&Setup::direct(store));
    }
}

#[test]
fn workflows_through_a_server_on_s3() {
    if let Some(store) = s3_store("workflows_through_a_server_on_s3") {
        workflows(&Setup::remote(store));
    }
}

#[test]
fn bad_input_on_local_files() {
    bad_input(&local_store());
}

#[test]
fn bad_input_on_s3() {
    if let Some(store) = s3_store("bad_input_on_s3") {
        bad_input(&store);
    }
}

#[test]
fn lock_race_on_local_files() {
    lock_race(&local_store(), 6);
}

#[test]
fn lock_race_on_s3() {
    if let Some(store) = s3_store("lock_race_on_s3") {
        lock_race(&store, 4);
    }
}

#[test]
fn the_default_backend_lives_under_tenancy_home() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: &str| -> Run {
        let mut child = Command::new(bin())
            .args(args)
            .env("TENANCY_HOME", home.path())
            .env("TENANCY_BCRYPT_COST", "4")
            .env_remove("TENANCY_BACKEND")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    };
    let r = run(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(home.path().join("data").join("tenants.yaml").exists());
    assert_eq!(mode(&home.path().join("data")), 0o700);
    let r = run(&["version"], "");
    assert_eq!(r.code, 0);
    assert!(
        r.out.contains("s3"),
        "the binary supports s3:// by default: {r:?}"
    );
    let r = run(&["--backend", "ftp://nowhere", "tenant", "list"], "");
    assert_eq!(r.code, 2, "{r:?}");
    let r = run(
        &["--backend", "s3://user:pass@bucket/x", "tenant", "list"],
        "",
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!r.err.contains("pass@"), "credentials echoed: {r:?}");
}

/// Every directory and file below `dir` whose mode is not 0700 / 0600.
fn not_private_below(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            if mode != want {
                bad.push(format!("{} is {mode:o}", p.display()));
            }
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    bad
}

#[test]
fn a_store_made_through_an_explicit_file_url_is_private_to_its_user() {
    let store = local_store();
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "acme", &[]);
    let team = store.user();
    team.login("acme", &secret);
    team.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{\"a\": 1}",
    );
    team.ok(
        &[
            "lock", "acquire", "--stack", "web", "--env", "prod", "--ttl", "5m",
        ],
        "",
    );
    let root = store._dir.as_ref().unwrap().path();
    assert!(root.join("store").join("tenants.yaml").is_file());
    let mut bad = not_private_below(root);
    bad.extend(not_private_below(admin.home.path()));
    bad.extend(not_private_below(team.home.path()));
    assert!(bad.is_empty(), "readable by others: {bad:?}");
}

#[test]
fn quota_burst_on_local_files() {
    quota_burst(&local_store(), 6);
}

#[test]
fn quota_burst_on_s3() {
    if let Some(store) = s3_store("quota_burst_on_s3") {
        quota_burst(&store, 4);
    }
}

fn admin_of(store: &Store) -> User {
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin
}

fn put_raw(store: &Store, key: &str, bytes: &str) {
    let b = store.backend();
    runtime()
        .block_on(b.put(
            &tenancy_core::StateKey::new(key).unwrap(),
            bytes.to_string().into(),
            tenancy_core::PutMode::Overwrite,
        ))
        .unwrap();
}

/// Item 9: one damaged registry record or `state.json` hurts only itself.
fn damaged_objects(store: &Store) {
    let admin = admin_of(store);
    let secret = create_tenant(&admin, "acme", &[]);
    create_tenant(&admin, "globex", &[]);
    let team = store.user();
    team.login("acme", &secret);
    for (env, doc) in [
        ("prod", r#"{"n": 1}"#),
        ("prod", r#"{"n": 2}"#),
        ("dev", "{}"),
    ] {
        team.ok(&["state", "put", "--stack", "web", "--env", env], doc);
    }
    put_raw(store, "registry/globex.yaml", "id: [globex\n");
    put_raw(
        store,
        "tenants/acme/v1/stacks/web/prod/state.json",
        "{\"format\":1,\"ser",
    );

    // tenant list and stats go on, showing the damaged record
    let r = admin.run(&["--output", "json", "tenant", "list"], "");
    assert_eq!(r.code, 0, "{r:?}");
    let list = r.json();
    assert_eq!(list["tenants"][0]["id"], "acme", "{list}");
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["damaged"][0]["id"], "globex", "{list}");
    assert!(r.err.contains("registry/globex.yaml"), "{r:?}");
    let table = admin.ok(&["tenant", "list"], "");
    assert!(table.out.contains("damaged"), "{table:?}");
    assert_eq!(admin.json(&["tenant", "stats"], "")["damaged"], 1);

    // state list goes on; history and intact versions stay readable
    let r = team.run(&["--output", "json", "state", "list"], "");
    assert_eq!(r.code, 0, "{r:?}");
    let list = r.json()["stacks"].clone();
    assert_eq!(list[0]["env"], "dev", "{list}");
    assert_eq!(list[0]["serial"], 1, "{list}");
    assert!(list[1]["damaged"].is_string(), "{list}");
    assert!(r.err.contains("tenancy state rollback"), "{r:?}");
    assert_eq!(
        team.json(
            &[
                "state",
                "get",
                "--stack",
                "web",
                "--env",
                "prod",
                "--version",
                "1"
            ],
            ""
        ),
        json!({"n": 1})
    );
    let history = team.json(&["state", "history", "--stack", "web", "--env", "prod"], "");
    let serials: Vec<&Value> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["serial"])
        .collect();
    assert_eq!(serials, [&json!(1), &json!(2)], "{history}");
    // the damaged state.json is listed apart, without a serial
    assert_eq!(history["damaged"][0]["serial"], Value::Null, "{history}");
    let r = team.fails(&["state", "get", "--stack", "web", "--env", "prod"], "", 1);
    assert!(r.err.contains("state.json"), "{r:?}");
    // rollback to an intact version works and repairs the stack
    team.ok(
        &[
            "state", "rollback", "--stack", "web", "--env", "prod", "--to", "1",
        ],
        "",
    );
    assert_eq!(
        team.json(&["state", "get", "--stack", "web", "--env", "prod"], ""),
        json!({"n": 1})
    );
    assert_eq!(
        team.json(&["state", "history", "--stack", "web", "--env", "prod"], "")["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// The single-tenant tree of the seed documents: plain JSON.
const PLAIN_TREE: [(&str, &str); 5] = [
    ("stacks/app/prod/state.json", r#"{"resources": ["a", "b"]}"#),
    (
        "stacks/app/prod/history/001.json",
        r#"{"resources": ["a"]}"#,
    ),
    ("stacks/app/staging/state.json", r#"{"resources": []}"#),
    (
        "stacks/web/prod/state.json",
        r#"{"serial": 4, "resources": ["w"]}"#,
    ),
    ("stacks/db/prod/state.json", "{}"),
];

/// Item 10: what our tools write (or copy in), our tools read; migrated
/// stacks count against max_stacks; `--from stacks/app` keeps the
/// structure; `--dry-run` shows the plan and writes nothing.
fn plain_tree_migration(store: &Store) {
    let admin = admin_of(store);
    for (k, v) in PLAIN_TREE {
        put_raw(store, k, v);
    }
    // a real single-tenant tree, migrated whole: state get/list/history work
    let solo_secret = create_tenant(&admin, "solo", &[]);
    let report = admin.json(&["migrate", "--tenant", "solo"], "");
    assert_eq!(report["clean"], true, "{report}");
    let solo = store.user();
    solo.login("solo", &solo_secret);
    assert_eq!(
        solo.json(&["state", "get", "--stack", "app", "--env", "prod"], ""),
        json!({"resources": ["a", "b"]})
    );
    assert_eq!(
        solo.json(&["state", "list"], "")["stacks"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let h = solo.json(&["state", "history", "--stack", "app", "--env", "prod"], "");
    assert_eq!(h["versions"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(
        solo.json(
            &[
                "state",
                "get",
                "--stack",
                "app",
                "--env",
                "prod",
                "--version",
                "1"
            ],
            ""
        ),
        json!({"resources": ["a"]})
    );
    let saved = solo.json(
        &["state", "put", "--stack", "app", "--env", "prod"],
        r#"{"resources": ["c"]}"#,
    );
    assert_eq!(saved["serial"], 3);
    assert_eq!(
        solo.json(&["state", "history", "--stack", "app", "--env", "prod"], "")["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(admin.json(&["tenant", "show", "solo"], "")["id"], "solo");
    let usage = solo.json(&["tenant", "usage"], "");
    assert_eq!(
        usage["usage"]["stacks"], 3,
        "migrated stacks are counted: {usage}"
    );

    // a tenant with room for 2 stacks: the dry run shows the plan, writes nothing
    let tight_secret = create_tenant(&admin, "tight", &["--max-stacks", "2"]);
    let before = store.keys();
    let dry = admin.json(&["migrate", "--tenant", "tight", "--dry-run"], "");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["copies"].as_array().unwrap().len(), 5, "{dry}");
    assert_eq!(dry["new_stacks"], json!(["app", "db", "web"]), "{dry}");
    let table = admin.ok(&["migrate", "--tenant", "tight", "--dry-run"], "");
    assert!(
        table
            .out
            .contains("tenants/tight/v1/stacks/app/prod/history/001.json"),
        "{table:?}"
    );
    assert!(table.err.contains("--force"), "{table:?}");
    assert_eq!(store.keys(), before, "a dry run wrote");
    // over the quota: refused up front, saying how to go on
    let r = admin.fails(&["migrate", "--tenant", "tight"], "", 7);
    assert!(
        r.err.contains("--force") && r.err.contains("max_stacks"),
        "{r:?}"
    );
    assert_eq!(store.keys(), before, "a refused migration wrote");
    // one stack keeps its stack/env structure
    admin.ok(
        &["migrate", "--tenant", "tight", "--from", "stacks/app"],
        "",
    );
    let tight = store.user();
    tight.login("tight", &tight_secret);
    let stacks = tight.json(&["tenant", "stacks"], "");
    assert_eq!(
        stacks["stacks"],
        json!([{"stack": "app", "envs": ["prod", "staging"]}]),
        "{stacks}"
    );
    // the rest needs --force, and says so
    admin.fails(&["migrate", "--tenant", "tight"], "", 7);
    let forced = admin.ok(&["migrate", "--tenant", "tight", "--force"], "");
    assert!(forced.err.contains("over its max_stacks"), "{forced:?}");
    assert_eq!(tight.json(&["tenant", "stacks"], "")["count"], 3);
    tight.fails(
        &["state", "put", "--stack", "new", "--env", "prod"],
        "{}",
        7,
    );
}

/// Item 11: migrate copies tenant data only: every reserved prefix is refused
/// and nothing is copied.
fn reserved_prefixes(store: &Store) {
    let admin = admin_of(store);
    create_tenant(&admin, "acme", &[]);
    create_tenant(&admin, "globex", &[]);
    let before = store.keys();
    for from in [
        "registry",
        "registry-keys",
        "registry-usage",
        "registry/globex.yaml",
        "archive",
        "archive/globex",
        "locks",
        "locks-held",
        "tenants",
        "tenants/globex",
        "tenants.yaml",
    ] {
        let r = admin.fails(&["migrate", "--tenant", "acme", "--from", from], "", 2);
        assert!(r.err.contains("reserved"), "--from {from}: {r:?}");
        admin.fails(
            &["migrate", "--tenant", "acme", "--from", from, "--dry-run"],
            "",
            2,
        );
    }
    admin.fails(
        &["migrate", "--tenant", "acme", "--from", ".tenancy-probe"],
        "",
        2,
    );
    assert_eq!(store.keys(), before, "a refused migration copied something");
}

#[test]
fn damaged_objects_hurt_only_themselves_on_local_files() {
    damaged_objects(&local_store());
}

#[test]
fn damaged_objects_hurt_only_themselves_on_s3() {
    if let Some(store) = s3_store("damaged_objects_hurt_only_themselves_on_s3") {
        damaged_objects(&store);
    }
}

#[test]
fn a_migrated_plain_tree_is_read_counted_and_kept_in_shape_on_local_files() {
    plain_tree_migration(&local_store());
}

#[test]
fn a_migrated_plain_tree_is_read_counted_and_kept_in_shape_on_s3() {
    if let Some(store) = s3_store("a_migrated_plain_tree_is_read_counted_and_kept_in_shape_on_s3") {
        plain_tree_migration(&store);
    }
}

#[test]
fn migrate_refuses_every_reserved_prefix_on_local_files() {
    reserved_prefixes(&local_store());
}

#[test]
fn migrate_refuses_every_reserved_prefix_on_s3() {
    if let Some(store) = s3_store("migrate_refuses_every_reserved_prefix_on_s3") {
        reserved_prefixes(&store);
    }
}

/// Item 15: `tenancy doctor` reports leftovers, `--repair` fixes what it
/// can (exit 8 while a problem remains), and the valid tenant is untouched.
fn doctor_on(store: &Store) {
    let admin = admin_of(store);
    let secret = create_tenant(&admin, "acme", &[]);
    let clean = admin.json(&["doctor"], "");
    assert_eq!(clean["clean"], true, "{clean:#}");
    let orphan = "registry-keys/00112233445566778899aabbccddeeff.yaml";
    put_raw(
        store,
        orphan,
        "tenant: ghost\ncreated_at: 2020-01-01T00:00:00Z\n",
    );
    put_raw(store, "registry/broken.yaml", "{ not: [yaml");
    let before: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.contains("acme"))
        .collect();

    let found = admin.fails(&["--output", "json", "doctor"], "", 8);
    let v = found.json();
    let kinds: Vec<(String, String, bool)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["key"].as_str().unwrap().into(),
                f["repairable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "damaged_record".into(),
                "registry/broken.yaml".into(),
                false
            ),
            ("orphan_index_entry".into(), orphan.into(), true),
        ],
        "{v:#}"
    );
    // the damaged record remains: exit 8, the orphan is gone
    let repaired = admin.fails(&["doctor", "--repair"], "", 8);
    assert!(repaired.out.contains("repaired"), "{repaired:?}");
    assert!(!store.keys().contains(&orphan.to_string()));
    // the repair is in the admin log, naming what it removed
    let log = admin.json(&["audit", "list", "--action", "store.repair"], "");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log:#}");
    assert_eq!(entries[0]["detail"]["keys"][0], orphan, "{log:#}");
    let b = store.backend();
    runtime()
        .block_on(b.delete(
            &tenancy_core::StateKey::new("registry/broken.yaml").unwrap(),
            tenancy_core::DeleteMode::Any,
        ))
        .unwrap();
    let again = admin.ok(&["doctor"], "");
    assert!(again.out.contains("No problems found."), "{again:?}");
    let after: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.contains("acme"))
        .collect();
    assert_eq!(after, before, "nothing valid was touched");
    let team = store.user();
    team.login("acme", &secret);
    team.ok(&["tenant", "details"], "");
}

#[test]
fn doctor_reports_and_repairs_on_local_files() {
    doctor_on(&local_store());
}

#[test]
fn doctor_reports_and_repairs_on_s3() {
    if let Some(store) = s3_store("doctor_reports_and_repairs_on_s3") {
        doctor_on(&store);
    }
}

/// Remote mode costs one HTTP request per command beyond login (the
/// figure in benches/README.md): each command below is counted by the
/// server's own request counter.
#[test]
fn one_request_per_command_through_a_server() {
    let setup = Setup::remote(local_store());
    let server = setup.server.as_ref().unwrap();
    let admin = setup.user();
    let tenant = setup.user();
    let counts: std::cell::RefCell<Vec<(String, u64)>> = Default::default();
    let count = |user: &User, args: &[&str], stdin: &str| -> Run {
        let before = server.requests();
        let r = user.ok(args, stdin);
        let n = server.requests() - before;
        counts.borrow_mut().push((args.join(" "), n));
        r
    };
    count(
        &admin,
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let created = count(
        &admin,
        &["--output", "json", "tenant", "init", "--name", "acme"],
        "",
    )
    .json();
    let secret = created["secret"].as_str().unwrap().to_string();
    count(&admin, &["tenant", "list"], "");
    count(&admin, &["tenant", "show", "acme"], "");
    count(&admin, &["tenant", "stats"], "");
    count(
        &admin,
        &["tenant", "update", "acme", "--max-stacks", "9"],
        "",
    );
    count(&admin, &["admin", "session"], "");
    count(
        &tenant,
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{secret}\n"),
    );
    count(&tenant, &["session"], "");
    count(&tenant, &["tenant", "details"], "");
    count(&tenant, &["tenant", "usage"], "");
    count(
        &tenant,
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{}",
    );
    count(
        &tenant,
        &["state", "put", "--stack", "web", "--env", "prod"],
        r#"{"v": 2}"#,
    );
    count(
        &tenant,
        &["state", "get", "--stack", "web", "--env", "prod"],
        "",
    );
    count(
        &tenant,
        &[
            "state",
            "get",
            "--stack",
            "web",
            "--env",
            "prod",
            "--version",
            "1",
        ],
        "",
    );
    count(&tenant, &["state", "list"], "");
    count(&tenant, &["tenant", "stacks"], "");
    count(
        &tenant,
        &["state", "history", "--stack", "web", "--env", "prod"],
        "",
    );
    count(
        &tenant,
        &[
            "state", "rollback", "--stack", "web", "--env", "prod", "--to", "1",
        ],
        "",
    );
    let lock = count(
        &tenant,
        &[
            "--output", "json", "lock", "acquire", "--stack", "web", "--env", "prod",
        ],
        "",
    )
    .json();
    let id = lock["lock_id"].as_str().unwrap().to_string();
    count(&tenant, &["lock", "list"], "");
    count(
        &tenant,
        &[
            "lock", "renew", "--stack", "web", "--env", "prod", "--id", &id,
        ],
        "",
    );
    count(
        &tenant,
        &[
            "state",
            "put",
            "--stack",
            "web",
            "--env",
            "prod",
            "--lock-id",
            &id,
        ],
        r#"{"v": 3}"#,
    );
    count(
        &tenant,
        &[
            "lock", "release", "--stack", "web", "--env", "prod", "--id", &id,
        ],
        "",
    );
    count(&admin, &["tenant", "rotate", "acme", "--yes"], "");
    count(&admin, &["tenant", "suspend", "acme"], "");
    count(&admin, &["tenant", "activate", "acme"], "");
    count(&tenant, &["logout"], "");
    // A deleted tenant's counters are dropped: count the admin's own.
    let admins = "tenant_api_requests_total{tenant=\"-\"";
    let before = server.requests_of(admins);
    admin.ok(&["tenant", "delete", "acme", "--confirm"], "");
    counts.borrow_mut().push((
        "tenant delete acme --confirm".into(),
        server.requests_of(admins) - before,
    ));
    count(&admin, &["admin", "logout"], "");
    let counts = counts.into_inner();
    for (command, n) in &counts {
        println!("{n}  tenancy {command}");
    }
    // Login is the exchange; a tenant login also reads the profile it prints.
    let allowed = |command: &str| if command.starts_with("login ") { 2 } else { 1 };
    let over: Vec<_> = counts.iter().filter(|(c, n)| *n != allowed(c)).collect();
    assert!(
        over.is_empty(),
        "commands not costing the requests they should: {over:?}"
    );
}

/// A server that is down is one line, "cannot reach", exit 1; a server
/// URL with a path, query or credentials is refused before any request.
#[test]
fn a_server_that_is_down_is_one_cannot_reach_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user = User {
        home: tempfile::tempdir().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        remote: Some(None),
    };
    for (args, stdin) in [
        (vec!["login", "--tenant", "acme", "--secret-stdin"], "s\n"),
        (vec!["admin", "login", "--password-stdin"], "password1\n"),
    ] {
        let r = user.fails(&args, stdin, 1);
        assert!(
            r.err
                .contains(&format!("cannot reach http://127.0.0.1:{port}")),
            "{r:?}"
        );
    }
    assert!(!user.session_file("session").exists());
    let with_credentials = User {
        home: tempfile::tempdir().unwrap(),
        url: "http://u:p@127.0.0.1:1".into(),
        remote: Some(None),
    };
    let r = with_credentials.fails(&["session"], "", 2);
    assert!(r.err.contains("credentials"), "{r:?}");
    assert!(!r.err.contains("u:p"), "{r:?}");
}

/// Issue 13's first items, on a store and through a server: a session
/// remembers its backend, bare commands print their help, refusals say
/// the real reason, a state that already holds is "unchanged".
fn sessions_help_and_true_hints(setup: &Setup) {
    let admin = setup.user();
    setup.init(&admin);
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "acme", &[]);
    let team = setup.user();
    // A mistyped secret fails its checksum before anything is asked.
    let mut typo = secret.clone().into_bytes();
    let at = typo.len() - 3;
    typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let r = team.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{typo}\n"),
        3,
    );
    assert!(r.err.contains("checksum"), "{r:?}");
    team.login("acme", &secret);
    // The session remembers its backend: no --backend needed afterwards.
    let bare = |u: &User, args: &[&str], stdin: &str| -> Run {
        let c = u.command(args);
        let all: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into()).collect();
        let mut plain = Command::new(bin());
        plain
            .args(&all[2..])
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        for (k, v) in c.get_envs() {
            if v.is_none() {
                plain.env_remove(k);
            }
        }
        if let Some(Some(uid)) = u.remote {
            use std::os::unix::process::CommandExt;
            plain.uid(uid).gid(uid).current_dir("/");
        }
        user_run(plain, stdin)
    };
    let r = bare(&team, &["--output", "json", "session"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["backend"], team.url.as_str());
    let r = bare(
        &team,
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{}",
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = bare(&admin, &["--output", "json", "tenant", "show", "acme"], "");
    assert_eq!(r.code, 0, "{r:?}");

    // Errors under --output json are one JSON document on stderr.
    let r = team.run(
        &[
            "-o", "json", "state", "get", "--stack", "nope", "--env", "x",
        ],
        "",
    );
    assert_eq!(r.code, 5, "{r:?}");
    let e: Value = serde_json::from_str(r.err.trim()).unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{e}");
    assert_eq!(e["error"]["exit_code"], 5, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nope"),
        "{e}"
    );
    // History of an unknown stack is "not found", like `state get`.
    team.fails(
        &["state", "history", "--stack", "nope", "--env", "x"],
        "",
        5,
    );
    // Re-applying a state that holds: unchanged, exit 0.
    let r = admin.ok(&["tenant", "activate", "acme"], "");
    assert!(r.out.contains("already active; unchanged"), "{r:?}");
    assert_eq!(
        admin.json(&["tenant", "activate", "acme"], "")["status"],
        "active"
    );
    admin.ok(&["tenant", "suspend", "acme"], "");
    let r = admin.ok(&["tenant", "suspend", "acme"], "");
    assert!(r.out.contains("already suspended; unchanged"), "{r:?}");
    let r = team.fails(&["state", "list"], "", 4);
    assert!(
        r.err.contains("suspended; ask the admin to activate it"),
        "{r:?}"
    );
    let r = admin.ok(&["tenant", "delete", "acme", "--confirm"], "");
    assert!(r.out.contains("archived under archive/acme/2"), "{r:?}");
    let r = admin.ok(&["tenant", "delete", "acme", "--confirm"], "");
    assert!(r.out.contains("already deleted; unchanged"), "{r:?}");
    // Refusals name the real reason and no false "changed meanwhile".
    let r = admin.fails(&["tenant", "update", "acme", "--plan", "pro"], "", 6);
    assert!(r.err.contains("deleted"), "{r:?}");
    assert!(!r.err.contains("meanwhile"), "{r:?}");
    let r = admin.fails(&["tenant", "activate", "acme"], "", 6);
    assert!(!r.err.contains("meanwhile"), "{r:?}");
    let r = setup.user().fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{secret}\n"),
        4,
    );
    assert!(r.err.contains("new tenant"), "{r:?}");
    assert!(!r.err.contains("activate it"), "{r:?}");
}

#[test]
fn sessions_help_and_true_hints_on_local_files() {
    sessions_help_and_true_hints(&Setup::direct(local_store()));
}

#[test]
fn sessions_help_and_true_hints_through_a_server() {
    sessions_help_and_true_hints(&Setup::remote(local_store()));
}

/// Bare commands print their formatted help (exit 2); a closed stdout is
/// quiet (exit 0, nothing on stderr).
#[test]
fn bare_commands_print_help_and_closed_pipes_are_quiet() {
    let user = local_store().user();
    for args in [&[][..], &["tenant"], &["lock"], &["admin"], &["state"]] {
        let r = user.run(args, "");
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.err.contains("Usage:"), "{args:?}: {r:?}");
        assert!(r.err.lines().count() > 5, "not the formatted help: {r:?}");
        assert!(!r.err.starts_with("error:"), "{args:?}: {r:?}");
    }
    // stdout is a pipe whose reader is gone before anything is written.
    for args in [&["completions", "bash"][..], &["--help"], &["version"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = user
            .command(args)
            .stdout(Stdio::from(writer))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// Backend URLs are checked before anything is created or read.
#[test]
fn backend_urls_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("store");
    let missing_url = url::Url::from_file_path(&missing).unwrap().to_string();
    let cases: [(&str, i32, &str); 6] = [
        ("x", 2, "is not a URL or a path"),
        ("file://relative/path", 2, "names a host"),
        ("memory://", 2, "one process"),
        ("ftp://host/x", 2, "not one tenancy knows"),
        ("s3://", 2, "names no bucket"),
        (&missing_url, 5, "no store at"),
    ];
    for (url, code, says) in cases {
        let user = User {
            home: tempfile::tempdir().unwrap(),
            url: url.to_string(),
            remote: None,
        };
        let r = user.fails(
            &["login", "--tenant", "acme", "--secret-stdin"],
            "s\n",
            code,
        );
        assert!(r.err.contains(says), "{url}: {r:?}");
    }
    assert!(
        !missing.exists(),
        "a command other than init created the store"
    );
    // Forgetting --backend at login: the default store has no registry.
    let user = User {
        home: tempfile::tempdir().unwrap(),
        url: String::new(),
        remote: None,
    };
    let mut c = Command::new(bin());
    c.args(["login", "--tenant", "acme", "--secret-stdin"])
        .env("TENANCY_HOME", user.home.path().join("h"))
        .env_remove("TENANCY_BACKEND");
    let out = user_run(c, "s\n");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.err.contains("no store at") || out.err.contains("no registry at"),
        "{out:?}"
    );
    assert!(!out.err.contains("wrong secret"), "{out:?}");
}

fn user_run(mut c: Command, stdin: &str) -> Run {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap().into()
}

/// Issue 13 item 7, on a store and through a server: `state delete` gives
/// the stack back, the admin lists and force-unlocks any tenant's locks,
/// and CI runs tenant commands with TENANCY_TENANT/TENANCY_SECRET alone.
fn state_and_locks_for_admins_and_ci(setup: &Setup) {
    let admin = setup.user();
    setup.init(&admin);
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "acme", &["--max-stacks", "1"]);
    let team = setup.user();
    team.login("acme", &secret);
    let at = ["--stack", "web", "--env", "prod"];
    let with = |first: &[&str]| -> Vec<String> {
        first
            .iter()
            .chain(at.iter())
            .map(|s| s.to_string())
            .collect()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    team.ok(&args(&with(&["state", "put"])), "{\"n\": 1}");
    // Refused without confirmation off a terminal; nothing deleted.
    team.fails(&args(&with(&["state", "delete"])), "", 2);
    assert_eq!(
        team.json(&args(&with(&["state", "get"])), ""),
        json!({"n": 1})
    );
    let gone = team.json(&args(&with(&["state", "delete", "--yes"])), "");
    assert_eq!(gone["deleted"], true);
    assert_eq!(team.json(&["state", "list"], "")["stacks"], json!([]));
    team.fails(&args(&with(&["state", "get"])), "", 5);
    // The stack was given back: another stack fits under max_stacks 1.
    team.ok(&["state", "put", "--stack", "api", "--env", "prod"], "{}");
    team.fails(&args(&with(&["state", "put"])), "{}", 7);

    // The admin's view of the tenant's locks, without its secret.
    let lock = team.json(&args(&with(&["lock", "acquire", "--ttl", "5m"])), "");
    let id = lock["lock_id"].as_str().unwrap().to_string();
    let listed = admin.json(&["lock", "list", "--tenant", "acme"], "");
    assert_eq!(listed["locks"][0]["lock_id"], id.as_str(), "{listed}");
    assert_eq!(listed["locks"][0]["key"], "stack:web:env:prod", "{listed}");
    admin.fails(&["lock", "list", "--tenant", "ghost"], "", 5);
    team.fails(&["lock", "list", "--tenant", "acme"], "", 4);
    let wrong = uuid::Uuid::new_v4().to_string();
    let r = admin.fails(
        &args(&with(&[
            "lock",
            "force-unlock",
            "--tenant",
            "acme",
            "--id",
            &wrong,
        ])),
        "",
        6,
    );
    assert!(r.err.contains("lock list"), "{r:?}");
    admin.ok(
        &args(&with(&[
            "lock",
            "force-unlock",
            "--tenant",
            "acme",
            "--id",
            &id,
        ])),
        "",
    );
    assert_eq!(team.json(&["lock", "list"], "")["locks"], json!([]));

    // CI: no login, the two variables.
    let ci = setup.user();
    let run_ci = |args: &[&str], stdin: &str, secret: &str| -> Run {
        let env = [("TENANCY_TENANT", "acme"), ("TENANCY_SECRET", secret)];
        run_with_env(&ci, args, &env, stdin)
    };
    let r = run_ci(&["--output", "json", "state", "list"], "", &secret);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["stacks"][0]["stack"], "api", "{r:?}");
    let r = run_ci(
        &["state", "put", "--stack", "api", "--env", "prod"],
        "{\"ci\": 1}",
        &secret,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_ci(&["--output", "json", "session"], "", &secret);
    assert_eq!(r.json()["kind"], "environment", "{r:?}");
    assert!(!ci.session_file("session").exists());
    let r = run_ci(&["state", "list"], "", "tns_wrong");
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn state_and_locks_for_admins_and_ci_on_local_files() {
    state_and_locks_for_admins_and_ci(&Setup::direct(local_store()));
}

#[test]
fn state_and_locks_for_admins_and_ci_through_a_server() {
    state_and_locks_for_admins_and_ci(&Setup::remote(local_store()));
}

/// A bad TENANCY_BCRYPT_COST fails only the commands that hash, with a
/// clear message; the others run.
#[test]
fn a_bad_bcrypt_cost_fails_only_commands_that_hash() {
    let store = local_store();
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let bad = |args: &[&str], stdin: &str| -> Run {
        run_with_env(&admin, args, &[("TENANCY_BCRYPT_COST", "99")], stdin)
    };
    let r = bad(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(r.code, 0, "login only verifies: {r:?}");
    assert_eq!(bad(&["tenant", "list"], "").code, 0);
    let r = bad(&["tenant", "init", "--name", "acme"], "");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("TENANCY_BCRYPT_COST"), "{r:?}");
    assert_eq!(admin.json(&["tenant", "list"], "")["tenants"], json!([]));
}

/// S3 mistakes are named: a missing bucket, and missing credentials (no
/// dump of the EC2 instance-metadata fallback).
#[test]
fn s3_mistakes_name_the_bucket_and_the_variables() {
    let Some(store) = s3_store("s3_mistakes_name_the_bucket_and_the_variables") else {
        return;
    };
    let rest = store.url.trim_start_matches("s3://");
    let prefix = rest.split_once('/').map(|(_, p)| p).unwrap_or("p");
    let missing = User {
        home: tempfile::tempdir().unwrap(),
        url: format!("s3://no-such-bucket-{}/{prefix}", std::process::id()),
        remote: None,
    };
    let r = missing.fails(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
        5,
    );
    assert!(r.err.contains("bucket no-such-bucket-"), "{r:?}");
    assert!(!r.err.contains(".tenancy-probe"), "{r:?}");
    let no_credentials = User {
        home: tempfile::tempdir().unwrap(),
        url: store.url.clone(),
        remote: Some(None), // no AWS_* at all
    };
    let r = no_credentials.fails(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
        3,
    );
    assert!(r.err.contains("AWS_ACCESS_KEY_ID"), "{r:?}");
    assert!(!r.err.contains("169.254"), "{r:?}");
}

/// The binary with `env` set and every colour and width variable of the
/// caller's environment removed first, so only `env` decides.
fn run_with_env(user: &User, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut c = user.command(args);
    for name in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TERM", "COLUMNS"] {
        c.env_remove(name);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    user_run(c, stdin)
}

/// `script` runs `args` on a real pseudo-terminal of `columns` columns
/// with `env`, typing `typed`; `None` (printed) where util-linux's
/// `script` is missing.
fn on_a_pty(
    user: &User,
    args: &[&str],
    env: &[(&str, &str)],
    columns: u16,
    typed: &str,
) -> Option<Run> {
    if !Path::new("/usr/bin/script").exists() {
        println!("SKIPPED: no /usr/bin/script for a pseudo-terminal");
        return None;
    }
    let c = user.command(args);
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = format!("stty cols {columns} rows 40 2>/dev/null; exec");
    line.push(' ');
    line.push_str(&quote(c.get_program().to_str().unwrap()));
    for a in c.get_args() {
        line.push(' ');
        line.push_str(&quote(a.to_str().unwrap()));
    }
    let mut s = Command::new("/usr/bin/script");
    s.args(["-qefc", &line, "/dev/null"]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    for name in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "COLUMNS"] {
        s.env_remove(name);
    }
    s.env("TERM", "xterm-256color");
    for (k, v) in env {
        s.env(k, v);
    }
    let mut child = s
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for line in typed.split_inclusive('\n') {
        // One line at a time, after the prompt had time to appear.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = input.write_all(line.as_bytes());
        let _ = input.flush();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(input);
    let mut run: Run = child.wait_with_output().unwrap().into();
    // The terminal's line endings, as a program sees its own output.
    run.out = run.out.replace("\r\n", "\n");
    Some(run)
}

/// Issue 13 item 6 on the real binary: colour only where it may go
/// (CLICOLOR_FORCE into a pipe, never with NO_COLOR or on TERM=dumb),
/// reset before the newline; tables cut to the terminal's width, but never
/// into a pipe.
#[test]
fn terminal_output_colour_and_width() {
    let store = local_store();
    let admin = admin_of(&store);
    let long = "Acme Corporation International Holdings Worldwide";
    create_tenant(&admin, "acme-international", &["--display-name", long]);
    create_tenant(&admin, "kabushiki", &["--display-name", "株式会社アクメ"]);

    // A pipe: no colour, whole values whatever COLUMNS says.
    let r = run_with_env(&admin, &["tenant", "list"], &[("COLUMNS", "30")], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.out.contains('\x1b'), "{r:?}");
    assert!(r.out.contains(long), "{r:?}");
    // Alignment by display width: CREATED starts in the same column.
    let created: Vec<usize> = r
        .out
        .lines()
        .filter(|l| !l.starts_with("Total:"))
        .map(|l| unicode_width::UnicodeWidthStr::width(&l[..l.rfind("  ").unwrap()]))
        .collect();
    assert!(created.windows(2).all(|w| w[0] == w[1]), "{}", r.out);
    // CLICOLOR_FORCE: colour into the pipe, each line reset before its newline.
    let r = run_with_env(&admin, &["tenant", "list"], &[("CLICOLOR_FORCE", "1")], "");
    assert!(r.out.contains("\x1b[32mactive\x1b[0m"), "{r:?}");
    for line in r.out.split_inclusive('\n') {
        assert!(
            !line.starts_with("\x1b[0m"),
            "reset after a newline: {line:?}"
        );
        assert_eq!(
            line.matches("\x1b[0m").count(),
            line.matches("\x1b[").count() / 2,
            "{line:?}"
        );
    }
    let r = run_with_env(
        &admin,
        &["tenant", "list"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        "",
    );
    assert!(!r.out.contains('\x1b'), "{r:?}");

    // A real terminal, 76 columns: colour, the display name cut, ids whole.
    let Some(r) = on_a_pty(&admin, &["tenant", "list"], &[], 76, "") else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("\x1b[32mactive\x1b[0m"), "{r:?}");
    assert!(r.out.contains("acme-international"), "{r:?}");
    assert!(r.out.contains('…') && !r.out.contains("Worldwide"), "{r:?}");
    for line in r.out.lines() {
        let plain = line
            .replace("\x1b[0m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[32m", "");
        assert!(
            unicode_width::UnicodeWidthStr::width(plain.as_str()) <= 76,
            "{line:?}"
        );
    }
    // TERM=dumb: no colour on the terminal either.
    let r = on_a_pty(&admin, &["tenant", "list"], &[("TERM", "dumb")], 70, "").unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.out.contains("\x1b["), "{r:?}");
}

/// Issue 13 item 8 on the real binary, on a real terminal: a declined
/// confirmation is exit 0 and one plain line; a wrong typed password is
/// asked again.
#[test]
fn prompts_on_a_real_terminal() {
    let store = local_store();
    let admin = admin_of(&store);
    create_tenant(&admin, "acme", &[]);
    let Some(r) = on_a_pty(&admin, &["tenant", "rotate", "acme"], &[], 100, "n\n") else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Cancelled; nothing changed."), "{r:?}");
    assert!(!r.out.contains("error"), "{r:?}");
    let r = on_a_pty(&admin, &["tenant", "delete", "acme"], &[], 100, "nope\n").unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Cancelled; nothing changed."), "{r:?}");
    assert_eq!(
        admin.json(&["tenant", "show", "acme"], "")["status"],
        "active"
    );
    let typed = format!("wrong password\n{PASSWORD}\n");
    let r = on_a_pty(&admin, &["admin", "login"], &[], 100, &typed).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Wrong admin password; try again."), "{r:?}");
    assert!(r.out.contains("Logged in as the admin"), "{r:?}");
}

/// Issue 13 item 10: help topics, examples and the pointer in every
/// command's help, global options apart, completion install instructions.
#[test]
fn help_topics_examples_and_completion_instructions() {
    let user = local_store().user();
    let r = user.ok(&["help", "exit-codes"], "");
    assert!(
        r.out.contains("7  quota exceeded") && r.out.contains("8  doctor"),
        "{r:?}"
    );
    let r = user.ok(&["-o", "json", "help", "environment"], "");
    for var in [
        "TENANCY_HOME",
        "TENANCY_SECRET",
        "NO_COLOR",
        "CLICOLOR_FORCE",
        "COLUMNS",
    ] {
        assert!(r.out.contains(var), "{var}: {r:?}");
    }
    let r = user.ok(&["--help"], "");
    assert!(r.out.contains("tenancy help exit-codes"), "{r:?}");
    for args in [
        &["tenant", "init", "--help"][..],
        &["state", "put", "--help"],
        &["lock", "release", "-h"],
        &["admin", "passwd", "--help"],
    ] {
        let r = user.ok(args, "");
        assert!(r.out.contains("Examples:\n  "), "{args:?}: {r:?}");
        assert!(
            r.out.contains("`tenancy help environment`"),
            "{args:?}: {r:?}"
        );
        let global = r
            .out
            .find("Global options:")
            .unwrap_or_else(|| panic!("{r:?}"));
        assert!(r.out[global..].contains("--backend"), "{args:?}: {r:?}");
    }
    let r = user.ok(&["completions", "--help"], "");
    for says in [
        "~/.bashrc",
        "fpath=",
        "~/.config/fish/completions/tenancy.fish",
    ] {
        assert!(r.out.contains(says), "{says}: {r:?}");
    }
    // An unknown topic is clap's usage error.
    let r = user.run(&["help", "no-such-topic"], "");
    assert_eq!(r.code, 2, "{r:?}");
}

/// Issue 13 item 10: ids by position with the old flags kept, and one
/// confirmation flag (`--yes`/`-y`, `--confirm` still accepted).
fn ids_by_position_and_yes(setup: &Setup) {
    let admin = setup.user();
    setup.init(&admin);
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let v = admin.json(&["tenant", "init", "acme", "--plan", "pro"], "");
    assert_eq!(v["tenant"]["plan"], "pro");
    let secret = v["secret"].as_str().unwrap().to_string();
    create_tenant(&admin, "globex", &[]); // --name still works
    admin.fails(&["tenant", "init", "initech", "--name", "initech"], "", 2);
    let team = setup.user();
    team.ok(&["login", "acme", "--secret-stdin"], &format!("{secret}\n"));
    let at = ["--stack", "web", "--env", "prod"];
    let mut acquire = vec!["lock", "acquire"];
    acquire.extend(at);
    let id = team.json(&acquire, "")["lock_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin.json(&["lock", "list", "acme"], "")["locks"][0]["lock_id"],
        id.as_str()
    );
    assert_eq!(
        admin.json(&["lock", "list", "--tenant", "acme"], "")["locks"][0]["lock_id"],
        id.as_str()
    );
    let mut renew = vec!["lock", "renew"];
    renew.extend(at);
    renew.push(&id);
    team.ok(&renew, "");
    let mut release = vec!["lock", "release"];
    release.extend(at);
    release.push(&id);
    team.ok(&release, "");
    assert_eq!(team.json(&["lock", "list"], "")["locks"], json!([]));
    let id = team.json(&acquire, "")["lock_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut release_flag = vec!["lock", "release"];
    release_flag.extend(at);
    release_flag.extend(["--id", &id]);
    team.ok(&release_flag, "");
    let mut none = vec!["lock", "release"];
    none.extend(at);
    let r = team.run(&none, "");
    assert_eq!(r.code, 2, "a lock id is required: {r:?}");
    // One confirmation flag.
    let r = admin.fails(&["tenant", "rotate", "acme"], "", 2);
    assert!(r.err.contains("--yes"), "{r:?}");
    admin.ok(&["tenant", "rotate", "acme", "-y"], "");
    let r = admin.fails(&["tenant", "delete", "globex"], "", 2);
    assert!(
        r.err.contains("--yes") && !r.err.contains("--confirm"),
        "{r:?}"
    );
    assert_eq!(
        admin.json(&["tenant", "delete", "globex", "-y"], "")["status"],
        "deleted"
    );
    create_tenant(&admin, "initech", &[]);
    admin.ok(&["tenant", "delete", "initech", "--confirm"], "");
    let help = admin.ok(&["tenant", "delete", "--help"], "");
    assert!(
        help.out.contains("--yes") && !help.out.contains("--confirm"),
        "{help:?}"
    );
}

#[test]
fn ids_by_position_and_yes_on_local_files() {
    ids_by_position_and_yes(&Setup::direct(local_store()));
}

#[test]
fn ids_by_position_and_yes_through_a_server() {
    ids_by_position_and_yes(&Setup::remote(local_store()));
}

/// Issue 13 items 8 and 10 on the real binary: `migrate ID`, piped and
/// environment secrets trimmed.
#[test]
fn migrate_by_position_and_trimmed_secrets() {
    let store = local_store();
    let admin = store.user();
    admin.ok(
        &["init", "--admin-password-stdin"],
        &format!("  {PASSWORD}\r\n"),
    );
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let mut c = admin.command(&["admin", "login"]);
    c.env("TENANCY_ADMIN_PASSWORD", format!("{PASSWORD} \r"));
    assert_eq!(user_run(c, "").code, 0);
    let secret = create_tenant(&admin, "acme", &[]);
    let v = admin.json(&["migrate", "acme", "--dry-run"], "");
    assert_eq!(v["tenant"], "acme", "{v}");
    admin.ok(&["migrate", "--tenant", "acme", "--dry-run"], "");
    admin.fails(&["migrate"], "", 2);
    let team = store.user();
    team.ok(
        &["login", "acme", "--secret-stdin"],
        &format!("\t{secret} \r\n"),
    );
}

/// Issue 13 item 9, on a store and through a server: `tenant list` hides
/// deleted tenants unless `--all`, says what an empty filter found and
/// totals; `tenant stats ID` is used / limit / available per resource.
fn admin_views(setup: &Setup) {
    let admin = setup.user();
    setup.init(&admin);
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    create_tenant(&admin, "acme", &["--max-stacks", "3"]);
    create_tenant(&admin, "gone", &[]);
    admin.ok(&["tenant", "delete", "gone", "--yes"], "");
    let ids = |v: &Value| -> Vec<String> {
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&admin.json(&["tenant", "list"], "")), ["acme"]);
    assert_eq!(
        ids(&admin.json(&["tenant", "list", "--all"], "")),
        ["acme", "gone"]
    );
    assert_eq!(
        ids(&admin.json(&["tenant", "list", "--status", "deleted"], "")),
        ["gone"]
    );
    let table = admin.ok(&["tenant", "list"], "").out;
    assert!(
        table.contains("Total: 1 tenant, 0 stacks (1 deleted tenant hidden"),
        "{table}"
    );
    let r = admin.ok(&["tenant", "list", "--status", "suspended"], "");
    assert_eq!(r.out.trim(), "No suspended tenants.", "{r:?}");
    let stats = admin.json(&["tenant", "stats", "acme"], "");
    let stacks = stats["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "stacks")
        .unwrap()
        .clone();
    assert_eq!(
        (stacks["limit"].as_u64(), stacks["remaining"].as_u64()),
        (Some(3), Some(3)),
        "{stats}"
    );
    let table = admin.ok(&["tenant", "stats", "acme"], "").out;
    assert!(table.starts_with("RESOURCE"), "{table}");
    assert!(table.contains("REMAINING"), "{table}");
    admin.fails(&["tenant", "stats", "ghost"], "", 5);
}

#[test]
fn admin_views_on_local_files() {
    admin_views(&Setup::direct(local_store()));
}

#[test]
fn admin_views_through_a_server() {
    admin_views(&Setup::remote(local_store()));
}

/// Named API keys through the real binary: an owner creates a viewer key,
/// a user logs in with it and is refused writes (exit 4), the key is
/// rotated with a grace (the old one keeps working) and revoked (the next
/// command is refused, exit 3); the admin lists any tenant's keys; a
/// mistyped key is refused by its checksum.
fn key_lifecycle(setup: &Setup) {
    let admin = setup.user();
    setup.init(&admin);
    admin.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let secret = create_tenant(&admin, "acme", &[]);
    let owner = setup.user();
    owner.login("acme", &secret);
    let created = owner.json(&["key", "create", "--name", "ci", "--role", "viewer"], "");
    let ci = created["secret"].as_str().unwrap().to_string();
    let ci_id = created["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["key"]["role"], "viewer");
    let listed = owner.json(&["key", "list"], "");
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(
        !serde_json::to_string(&listed).unwrap().contains(&ci),
        "the list shows the key"
    );
    owner.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{\"a\":1}\n",
    );

    let reader = setup.user();
    reader.login("acme", &ci);
    let got = reader.ok(&["state", "get", "--stack", "web", "--env", "prod"], "");
    assert!(got.out.contains("\"a\""), "{got:?}");
    let r = reader.fails(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{\"a\":2}\n",
        4,
    );
    assert!(r.err.contains("operator role"), "{r:?}");
    let r = reader.fails(&["key", "list"], "", 4);
    assert!(r.err.contains("owner role"), "{r:?}");
    reader.fails(
        &["lock", "acquire", "--stack", "web", "--env", "prod"],
        "",
        4,
    );

    // Rotation with a grace: the old key still works, the new one too.
    let rotated = owner.json(&["key", "rotate", &ci_id, "--grace", "1h"], "");
    let new = rotated["secret"].as_str().unwrap().to_string();
    let new_id = rotated["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(rotated["previous"]["rotated_to"], new_id.as_str());
    reader.ok(&["state", "list"], "");
    let second = setup.user();
    second.login("acme", &new);
    second.ok(&["state", "list"], "");

    // Revocation: the next command of its session is refused.
    owner.ok(&["key", "revoke", &ci_id, "--yes"], "");
    let r = reader.fails(&["state", "list"], "", 3);
    assert!(r.err.contains("revoked"), "{r:?}");
    second.ok(&["state", "list"], "");

    let all = admin.json(&["key", "list", "--tenant", "acme"], "");
    let statuses: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["revoked", "active"]);
    admin.ok(&["key", "revoke", &new_id, "--yes", "--tenant", "acme"], "");
    second.fails(&["state", "list"], "", 3);

    // A mistyped key: refused by its checksum.
    let mut typo: Vec<char> = new.chars().collect();
    let i = typo.len() - 8;
    typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
    let typo: String = typo.into_iter().collect();
    let r = setup.user().fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{typo}\n"),
        3,
    );
    assert!(r.err.contains("checksum"), "{r:?}");
}

#[test]
fn key_lifecycle_on_local_files() {
    key_lifecycle(&Setup::direct(local_store()));
}

#[test]
fn key_lifecycle_through_a_server_on_local_files() {
    key_lifecycle(&Setup::remote(local_store()));
}

#[test]
fn workflows_on_postgres() {
    if let Some(store) = postgres_store("workflows_on_postgres") {
        workflows(&Setup::direct(store));
    }
}

#[test]
fn workflows_through_a_server_on_postgres() {
    if let Some(store) = postgres_store("workflows_through_a_server_on_postgres") {
        workflows(&Setup::remote(store));
    }
}

#[test]
fn key_lifecycle_on_postgres() {
    if let Some(store) = postgres_store("key_lifecycle_on_postgres") {
        key_lifecycle(&Setup::direct(store));
    }
}

#[test]
fn lock_race_on_postgres() {
    if let Some(store) = postgres_store("lock_race_on_postgres") {
        lock_race(&store, 8);
    }
}

/// The database crashes between commands and comes back (a cluster of the
/// test's own: the shared one serves the tests beside it). While it is
/// down every command fails with one line and exit 1 (direct: naming the
/// database without a password; through a server: the server's 503), and
/// a `state put` made then leaves nothing behind; once it is back the next
/// command works, without restarting the server, on exactly what was there.
#[test]
fn a_database_restart_gives_one_line_errors_and_loses_nothing() {
    let Some(pg) = tenancy_state::testing::PostgresCluster::start_or_skip(
        "a_database_restart_gives_one_line_errors_and_loses_nothing",
    ) else {
        return;
    };
    let setups = [
        Setup::direct(Store {
            url: format!("{}&schema=direct", pg.url()),
            _dir: None,
        }),
        Setup::remote(Store {
            url: format!("{}&schema=remote", pg.url()),
            _dir: None,
        }),
    ];
    for setup in &setups {
        let admin = setup.user();
        setup.init(&admin);
        admin.ok(
            &["admin", "login", "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        let secret = create_tenant(&admin, "steady", &[]);
        let team = setup.user();
        team.login("steady", &secret);
        let put = ["state", "put", "--stack", "web", "--env", "prod"];
        let get = ["state", "get", "--stack", "web", "--env", "prod"];
        team.ok(&put, "{\"n\":1}");
        let history = team
            .ok(&["state", "history", "--stack", "web", "--env", "prod"], "")
            .out;

        pg.crash();
        for (args, stdin) in [
            (&put[..], "{\"n\":2}"),
            (&get[..], ""),
            (&["tenant", "list"][..], ""),
        ] {
            let who = if args[0] == "tenant" { &admin } else { &team };
            let r = who.run(args, stdin);
            assert_eq!(r.code, 1, "{args:?}: {r:?}");
            assert_eq!(r.err.trim_end().lines().count(), 1, "one line: {r:?}");
            assert!(!r.err.contains("panicked"), "{r:?}");
            if setup.is_remote() {
                assert!(r.err.contains("backend_unavailable"), "{r:?}");
            } else {
                assert!(r.err.contains("postgres://tenancy@127.0.0.1"), "{r:?}");
                assert!(!r.err.contains("PGPASSWORD="), "{r:?}");
            }
        }

        pg.start();
        let mut back = team.run(&get, "");
        for _ in 0..100 {
            if back.code == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            back = team.run(&get, "");
        }
        assert_eq!(back.code, 0, "not back within 10 s: {back:?}");
        let doc = |r: &Run| serde_json::from_str::<Value>(&r.out).unwrap();
        assert_eq!(
            doc(&back),
            json!({"n": 1}),
            "the save made while down left nothing"
        );
        assert_eq!(
            team.ok(&["state", "history", "--stack", "web", "--env", "prod"], "")
                .out,
            history
        );
        let usage = team.json(&["tenant", "usage"], "");
        assert_eq!(usage["usage"]["stacks"], 1, "{usage}");
        team.ok(&put, "{\"n\":3}");
        assert_eq!(doc(&team.ok(&get, "")), json!({"n": 3}));
    }
}
