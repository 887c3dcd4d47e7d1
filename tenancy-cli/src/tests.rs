//! In-process tests of whole commands: `run_with_services` on a shared
//! in-memory store with a temporary `TENANCY_HOME`, scripted prompts and
//! captured output.

use std::sync::Arc;

use serde_json::Value;
use tenancy_core::{MemoryBackend, Session, StateBackend};

use crate::home::{Home, SessionFile, SessionSlot, SESSION_FORMAT};
use crate::io::testing::{test_io, Scripted};
use crate::{run_with_services, Services};

const LABEL: &str = "memory://test";
const PASSWORD: &str = "correct horse battery";

struct Harness {
    home: tempfile::TempDir,
    backend: Arc<dyn StateBackend>,
    services: Services,
}

#[derive(Debug)]
struct Outcome {
    code: i32,
    out: String,
    err: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Harness {
    fn new() -> Self {
        Self::on(Arc::new(MemoryBackend::new()))
    }

    fn on_store(store: tenancy_state::Store) -> Self {
        Harness {
            home: tempfile::tempdir().unwrap(),
            backend: store.backend(),
            services: Services::on_store(store, 4),
        }
    }

    fn on(backend: Arc<dyn StateBackend>) -> Self {
        Harness {
            home: tempfile::tempdir().unwrap(),
            services: Services::on_backend(backend.clone(), 4),
            backend,
        }
    }

    fn run_full(
        &self,
        args: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
        prompter: Scripted,
    ) -> Outcome {
        let home = self.home.path().to_string_lossy().into_owned();
        let mut vars: Vec<(&str, &str)> = vec![("TENANCY_HOME", &home)];
        vars.extend_from_slice(env);
        let mut t = test_io(stdin, &vars, prompter);
        let mut argv = vec!["tenancy"];
        argv.extend_from_slice(args);
        let code = run_with_services(argv, &mut t.io, &self.services, LABEL);
        Outcome {
            code,
            out: t.out.text(),
            err: t.err.text(),
        }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Outcome {
        self.run_full(args, stdin, &[], Scripted::default())
    }

    fn ok(&self, args: &[&str], stdin: &str) -> Outcome {
        let o = self.run(args, stdin);
        assert_eq!(o.code, 0, "{args:?}: {o:?}");
        o
    }

    fn fails(&self, args: &[&str], stdin: &str, code: i32) -> Outcome {
        let o = self.run(args, stdin);
        assert_eq!(o.code, code, "{args:?}: {o:?}");
        assert!(
            o.err.starts_with("error: ") || o.err.starts_with("{\"error\":"),
            "{args:?}: {o:?}"
        );
        assert_eq!(o.err.trim_end().lines().count(), 1, "one line: {o:?}");
        o
    }

    fn admin(&self) {
        self.ok(
            &["init", "--admin-password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        self.ok(
            &["admin", "login", "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
    }

    /// Creates a tenant and returns its secret.
    fn tenant(&self, id: &str, extra: &[&str]) -> String {
        let mut args = vec!["--output", "json", "tenant", "init", "--name", id];
        args.extend_from_slice(extra);
        let o = self.ok(&args, "");
        let v = o.json();
        assert_eq!(v["tenant"]["id"], id);
        assert!(o.err.contains("shown only this once"), "{o:?}");
        v["secret"].as_str().unwrap().to_string()
    }

    fn login(&self, id: &str, secret: &str) {
        self.ok(
            &["login", "--tenant", id, "--secret-stdin"],
            &format!("{secret}\n"),
        );
    }

    fn keys(&self) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            use tenancy_core::StateBackendExt;
            self.backend
                .list_keys(None)
                .await
                .unwrap()
                .into_iter()
                .map(|k| k.to_string())
                .collect()
        })
    }
}

#[test]
fn admin_workflow() {
    let h = Harness::new();
    h.fails(&["tenant", "list"], "", 3);
    h.fails(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        5,
    );
    h.fails(&["init", "--admin-password-stdin"], "short\n", 2);
    h.fails(&["init"], "", 2);
    h.admin();
    let o = h.fails(
        &["init", "--admin-password-stdin"],
        &format!("{PASSWORD}\n"),
        6,
    );
    assert!(o.err.contains("already exists"), "{o:?}");
    let o = h.fails(
        &["admin", "login", "--password-stdin"],
        "wrong password\n",
        3,
    );
    assert!(o.err.contains("wrong admin password"), "{o:?}");

    let s1 = h.tenant("acme", &["--plan", "pro", "--email", "ops@acme.test"]);
    let s2 = h.tenant("globex", &[]);
    h.tenant("initech", &["--secret-prefix", "init"]);
    assert_ne!(s1, s2);
    assert!(s1.starts_with("tnc_"));
    h.fails(&["tenant", "init", "--name", "acme"], "", 6);
    h.fails(&["tenant", "init", "--name", "Bad_Id"], "", 2);
    h.fails(&["tenant", "init", "--name", "default"], "", 2);

    let list = h.ok(&["--output", "json", "tenant", "list"], "").json();
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
    assert!(
        !h.ok(&["--output", "json", "tenant", "list"], "")
            .out
            .contains("$2"),
        "no hashes shown"
    );

    let show = h
        .ok(&["tenant", "show", "acme", "--output", "json"], "")
        .json();
    assert_eq!(show["status"], "active");
    assert_eq!(show["plan"], "pro");
    assert_eq!(show["email"], "ops@acme.test");
    assert!(!show.to_string().contains("hash"), "{show}");
    h.fails(&["tenant", "show", "nobody"], "", 5);
    h.fails(&["tenant", "show", "../etc"], "", 2);

    let table = h.ok(&["tenant", "list"], "").out;
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("globex"), "{table}");

    let o = h.ok(
        &[
            "--output",
            "json",
            "tenant",
            "update",
            "globex",
            "--plan",
            "basic",
            "--max-stacks",
            "2",
        ],
        "",
    );
    assert_eq!(o.json()["limits"]["max_stacks"], 2);
    assert_eq!(o.json()["plan"], "basic");
    h.fails(&["tenant", "update", "globex"], "", 2);
    h.fails(
        &["tenant", "update", "globex", "--expires-at", "tomorrow"],
        "",
        2,
    );

    h.ok(&["tenant", "suspend", "initech", "--reason", "unpaid"], "");
    let stats = h.ok(&["--output", "json", "tenant", "stats"], "").json();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_status"]["active"], 2);
    assert_eq!(stats["by_status"]["suspended"], 1);
    let filtered = h
        .ok(
            &[
                "--output",
                "json",
                "tenant",
                "list",
                "--status",
                "suspended",
            ],
            "",
        )
        .json();
    assert_eq!(filtered["tenants"].as_array().unwrap().len(), 1);

    let session = h.ok(&["--output", "json", "admin", "session"], "").json();
    assert_eq!(session["kind"], "admin");
    h.ok(&["admin", "logout"], "");
    h.fails(&["tenant", "list"], "", 3);
    h.fails(&["admin", "session"], "", 3);
}

#[test]
fn tenant_workflow_isolation_rotation_suspension_deletion() {
    let h = Harness::new();
    h.admin();
    let acme = h.tenant("acme", &[]);
    let globex = h.tenant("globex", &[]);

    h.fails(&["state", "list"], "", 4); // only an admin session: wrong mode
    h.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        "tnc_wrongwrongwrongwrongwrongwrong12\n",
        3,
    );
    h.fails(
        &["login", "--tenant", "nobody", "--secret-stdin"],
        &format!("{acme}\n"),
        3,
    );
    h.fails(
        &["login", "--tenant", "globex", "--secret-stdin"],
        &format!("{acme}\n"),
        3,
    );
    h.login("acme", &acme);
    let s = h.ok(&["--output", "json", "session"], "").json();
    assert_eq!(s["tenant"], "acme");

    let o = h.ok(
        &[
            "--output", "json", "state", "put", "--stack", "web", "--env", "prod",
        ],
        "{\"replicas\": 1}",
    );
    assert_eq!(o.json()["serial"], 1);
    h.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{\"replicas\": 2}",
    );
    let got = h
        .ok(&["state", "get", "--stack", "web", "--env", "prod"], "")
        .json();
    assert_eq!(got, serde_json::json!({"replicas": 2}));
    let got = h
        .ok(
            &[
                "--output",
                "json",
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
        )
        .json();
    assert_eq!(got, serde_json::json!({"replicas": 1}));
    let hist = h
        .ok(
            &[
                "--output", "json", "state", "history", "--stack", "web", "--env", "prod",
            ],
            "",
        )
        .json();
    assert_eq!(hist["versions"].as_array().unwrap().len(), 2);
    h.ok(
        &[
            "state", "rollback", "--stack", "web", "--env", "prod", "--to", "1",
        ],
        "",
    );
    let got = h
        .ok(&["state", "get", "--stack", "web", "--env", "prod"], "")
        .json();
    assert_eq!(got, serde_json::json!({"replicas": 1}));
    let hist = h
        .ok(
            &[
                "--output", "json", "state", "history", "--stack", "web", "--env", "prod",
            ],
            "",
        )
        .json();
    assert_eq!(hist["versions"][2]["rolled_back_from"], 1);
    h.fails(
        &[
            "state", "rollback", "--stack", "web", "--env", "prod", "--to", "9",
        ],
        "",
        5,
    );
    h.fails(&["state", "get", "--stack", "web", "--env", "nope"], "", 5);

    let lock = h
        .ok(
            &[
                "--output",
                "json",
                "lock",
                "acquire",
                "--stack",
                "web",
                "--env",
                "prod",
                "--ttl",
                "60s",
                "--operation",
                "deploy",
            ],
            "",
        )
        .json();
    let lock_id = lock["lock_id"].as_str().unwrap().to_string();
    assert_eq!(lock["fencing_token"], 1);
    let o = h.fails(
        &["lock", "acquire", "--stack", "web", "--env", "prod"],
        "",
        6,
    );
    assert!(o.err.contains("held"), "{o:?}");
    let locks = h.ok(&["--output", "json", "lock", "list"], "").json();
    assert_eq!(locks["locks"].as_array().unwrap().len(), 1);
    assert_eq!(locks["locks"][0]["lock_id"], lock_id.as_str());
    h.ok(
        &[
            "lock", "renew", "--stack", "web", "--env", "prod", "--id", &lock_id, "--ttl", "2m",
        ],
        "",
    );

    // globex sees none of it and cannot touch it.
    h.login("globex", &globex);
    h.fails(&["state", "get", "--stack", "web", "--env", "prod"], "", 5);
    assert_eq!(
        h.ok(&["--output", "json", "state", "list"], "").json()["stacks"],
        serde_json::json!([])
    );
    assert_eq!(
        h.ok(&["--output", "json", "lock", "list"], "").json()["locks"],
        serde_json::json!([])
    );
    let o = h.run(
        &[
            "lock", "release", "--stack", "web", "--env", "prod", "--id", &lock_id,
        ],
        "",
    );
    assert_ne!(o.code, 0, "{o:?}");
    let o = h.run(
        &[
            "lock",
            "force-unlock",
            "--stack",
            "web",
            "--env",
            "prod",
            "--id",
            &lock_id,
        ],
        "",
    );
    assert_ne!(o.code, 0, "{o:?}");
    // globex can take its own lock of the same name.
    h.ok(&["lock", "acquire", "--stack", "web", "--env", "prod"], "");

    h.login("acme", &acme);
    assert_eq!(
        h.ok(&["--output", "json", "lock", "list"], "").json()["locks"][0]["lock_id"],
        lock_id.as_str()
    );
    h.ok(
        &[
            "lock", "release", "--stack", "web", "--env", "prod", "--id", &lock_id,
        ],
        "",
    );
    assert_eq!(
        h.ok(&["--output", "json", "lock", "list"], "").json()["locks"],
        serde_json::json!([])
    );

    // Rotation: the old session and the old secret stop working; state stays.
    h.fails(&["tenant", "rotate", "acme"], "", 2); // needs --yes without a terminal
    let rotated = h
        .ok(
            &["--output", "json", "tenant", "rotate", "acme", "--yes"],
            "",
        )
        .json();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, acme);
    let o = h.fails(&["state", "list"], "", 3);
    assert!(o.err.contains("rotated; log in again"), "{o:?}");
    h.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{acme}\n"),
        3,
    );
    h.login("acme", &new_secret);
    let got = h
        .ok(&["state", "get", "--stack", "web", "--env", "prod"], "")
        .json();
    assert_eq!(got, serde_json::json!({"replicas": 1}));

    // Suspension: the session and logins are refused until activation.
    h.ok(&["tenant", "suspend", "acme"], "");
    let o = h.fails(&["state", "list"], "", 4);
    assert!(o.err.contains("suspended"), "{o:?}");
    h.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{new_secret}\n"),
        4,
    );
    h.ok(&["tenant", "activate", "acme"], "");
    h.ok(&["state", "list"], "");
    h.login("acme", &new_secret);

    // Deletion: needs confirmation, archives the state, refuses logins.
    h.fails(&["tenant", "delete", "acme"], "", 2);
    assert!(h.keys().iter().any(|k| k.starts_with("tenants/acme/")));
    let deleted = h
        .ok(
            &["--output", "json", "tenant", "delete", "acme", "--confirm"],
            "",
        )
        .json();
    assert_eq!(deleted["status"], "deleted");
    let keys = h.keys();
    assert!(
        keys.iter().any(|k| k.starts_with("archive/acme/")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("tenants/acme/")),
        "{keys:?}"
    );
    h.fails(&["state", "list"], "", 4);
    h.fails(
        &["login", "--tenant", "acme", "--secret-stdin"],
        &format!("{new_secret}\n"),
        4,
    );
    let show = h
        .ok(&["--output", "json", "tenant", "show", "acme"], "")
        .json();
    assert_eq!(show["status"], "deleted");
}

#[test]
fn modes_sessions_and_bad_input_change_nothing() {
    let h = Harness::new();
    h.admin();
    let secret = h.tenant("acme", &[]);
    h.ok(&["admin", "logout"], "");
    h.fails(&["state", "list"], "", 3); // no session at all
    h.login("acme", &secret);
    let o = h.fails(&["tenant", "list"], "", 4); // tenant session, admin command
    assert!(o.err.contains("tenant acme"), "{o:?}");
    h.fails(&["tenant", "init", "--name", "evil"], "", 4);
    h.fails(&["migrate", "--tenant", "acme"], "", 4);

    let before = h.keys();
    h.fails(
        &["state", "put", "--stack", "../x", "--env", "prod"],
        "{}",
        2,
    );
    h.fails(
        &["state", "put", "--stack", "web", "--env", "../../registry"],
        "{}",
        2,
    );
    h.fails(
        &["state", "put", "--stack", "a/b", "--env", "prod"],
        "{}",
        2,
    );
    h.fails(
        &["state", "get", "--stack", ".hidden", "--env", "prod"],
        "",
        2,
    );
    h.fails(
        &["lock", "acquire", "--stack", "web:x", "--env", "prod"],
        "",
        2,
    );
    h.fails(
        &[
            "lock",
            "release",
            "--stack",
            "web",
            "--env",
            "prod",
            "--id",
            "not-a-uuid",
        ],
        "",
        2,
    );
    h.fails(
        &[
            "lock", "acquire", "--stack", "web", "--env", "prod", "--ttl", "0s",
        ],
        "",
        2,
    );
    let o = h.fails(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{not json",
        2,
    );
    assert!(o.err.contains("not JSON"), "{o:?}");
    h.fails(&["state", "put", "--stack", "web", "--env", "prod"], "", 2);
    h.fails(
        &[
            "state",
            "put",
            "--stack",
            "web",
            "--env",
            "prod",
            "--file",
            "/nonexistent/x.json",
        ],
        "",
        2,
    );
    h.fails(
        &["login", "--tenant", "Not_An_Id", "--secret-stdin"],
        "x\n",
        2,
    );
    h.fails(&["login", "--secret-stdin"], "x\n", 2); // no tenant, no terminal
    h.fails(&["login", "--tenant", "acme"], "", 2); // no secret, no terminal
    h.fails(&["lock", "acquire"], "", 2); // clap usage error
    assert_eq!(h.keys(), before, "bad input changed the store");

    let home = Home::at(h.home.path());
    // Expired session.
    let mut file = home.load(SessionSlot::Tenant).unwrap().unwrap();
    let good = file.clone();
    file.session.expires_at = chrono::Utc::now() - chrono::Duration::seconds(1);
    home.save(SessionSlot::Tenant, &file).unwrap();
    let o = h.fails(&["state", "list"], "", 3);
    assert!(o.err.contains("expired"), "{o:?}");
    // A session for another backend.
    let other = SessionFile {
        backend: "file:///elsewhere".into(),
        ..good.clone()
    };
    home.save(SessionSlot::Tenant, &other).unwrap();
    let o = h.fails(&["state", "list"], "", 3);
    assert!(o.err.contains("file:///elsewhere"), "{o:?}");
    // Corrupted session file.
    std::fs::write(home.session_path(SessionSlot::Tenant), b"\x00garbage").unwrap();
    let o = h.fails(&["state", "list"], "", 3);
    assert!(o.err.contains("corrupted"), "{o:?}");
    // A forged session of a tenant that does not exist.
    let ghost = SessionFile {
        format: SESSION_FORMAT,
        backend: LABEL.into(),
        session: Session {
            kind: tenancy_core::SessionKind::Tenant {
                tenant: tenancy_core::TenantId::new("ghost").unwrap(),
                generation: 1,
            },
            ..good.session.clone()
        },
        token: None,
    };
    home.save(SessionSlot::Tenant, &ghost).unwrap();
    h.fails(&["state", "list"], "", 3);
    home.save(SessionSlot::Tenant, &good).unwrap();
    h.ok(&["state", "list"], "");
    assert_eq!(h.keys(), before);
    h.ok(&["logout"], "");
    h.fails(&["session"], "", 3);
}

#[test]
fn quota_on_new_stacks() {
    let h = Harness::new();
    h.admin();
    let secret = h.tenant("acme", &["--max-stacks", "2"]);
    h.login("acme", &secret);
    h.ok(&["state", "put", "--stack", "a", "--env", "prod"], "{}");
    h.ok(&["state", "put", "--stack", "a", "--env", "dev"], "{}");
    h.ok(&["state", "put", "--stack", "b", "--env", "prod"], "{}");
    let o = h.fails(&["state", "put", "--stack", "c", "--env", "prod"], "{}", 7);
    assert!(o.err.contains("stacks"), "{o:?}");
    // Existing stacks take new versions and environments.
    h.ok(
        &["state", "put", "--stack", "b", "--env", "prod"],
        "{\"v\": 2}",
    );
    h.ok(&["state", "put", "--stack", "b", "--env", "staging"], "{}");
    let stacks = h.ok(&["--output", "json", "tenant", "stacks"], "").json();
    assert_eq!(stacks["count"], 2);
    let usage = h.ok(&["--output", "json", "tenant", "usage"], "").json();
    assert_eq!(usage["usage"]["stacks"], 2);
    let stacks_quota = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "stacks")
        .unwrap()
        .clone();
    assert_eq!(stacks_quota["limit"], 2, "{usage}");
    assert_eq!(stacks_quota["remaining"], 0, "{usage}");
    let details = h.ok(&["--output", "json", "tenant", "details"], "").json();
    assert_eq!(details["id"], "acme");
}

#[test]
fn prompts_on_a_terminal() {
    let h = Harness::new();
    let p = |answers: &[&str]| Scripted {
        interactive: true,
        answers: answers.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let o = h.run_full(
        &["init"],
        "",
        &[],
        p(&[PASSWORD, "x1", PASSWORD, "x2", PASSWORD, "x3"]),
    );
    assert_eq!(o.code, 2, "{o:?}");
    let o = h.run_full(&["init"], "", &[], p(&[PASSWORD, PASSWORD]));
    assert_eq!(o.code, 0, "{o:?}");
    let o = h.run_full(&["admin", "login"], "", &[], p(&[PASSWORD]));
    assert_eq!(o.code, 0, "{o:?}");
    let secret = h.tenant("acme", &[]);
    let o = h.run_full(&["tenant", "rotate", "acme"], "", &[], p(&["n"]));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.err, "Cancelled; nothing changed.\n", "{o:?}");
    h.login("acme", &secret); // not rotated
    let o = h.run_full(&["tenant", "delete", "acme"], "", &[], p(&["acne"]));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.err, "Cancelled; nothing changed.\n", "{o:?}");
    let o = h.run_full(
        &["--output", "json", "tenant", "rotate", "acme"],
        "",
        &[],
        p(&["y"]),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let secret = o.json()["secret"].as_str().unwrap().to_string();
    let o = h.run_full(&["login"], "", &[], p(&["acme", &secret]));
    assert_eq!(o.code, 0, "{o:?}");
    // Environment variables instead of prompts.
    let o = h.run_full(
        &["login"],
        "",
        &[("TENANCY_TENANT", "acme"), ("TENANCY_SECRET", &secret)],
        Scripted::default(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let o = h.run_full(
        &["admin", "login"],
        "",
        &[("TENANCY_ADMIN_PASSWORD", PASSWORD)],
        Scripted::default(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let o = h.run_full(&["tenant", "delete", "acme"], "", &[], p(&["acme"]));
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn migrate_a_single_tenant_tree() {
    let h = Harness::new();
    h.admin();
    let secret = h.tenant("acme", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let legacy = tenancy_state::stack::StackStore::new(h.backend.clone());
        legacy
            .save("web", "prod", &serde_json::json!({"legacy": true}), None)
            .await
            .unwrap();
        legacy
            .save("db", "prod", &serde_json::json!({"legacy": "db"}), None)
            .await
            .unwrap();
    });
    let o = h.ok(&["--output", "json", "migrate", "--tenant", "acme"], "");
    let report = o.json();
    assert_eq!(report["clean"], true, "{o:?}");
    assert_eq!(report["copied"], report["source_objects"]);
    // Running it again copies nothing.
    let again = h
        .ok(
            &[
                "--output", "json", "migrate", "--tenant", "acme", "--from", "stacks",
            ],
            "",
        )
        .json();
    assert_eq!(again["copied"], 0);
    h.fails(&["migrate", "--tenant", "nobody"], "", 5);
    h.fails(&["migrate", "--tenant", "acme", "--from", "../x"], "", 2);
    h.login("acme", &secret);
    let got = h
        .ok(&["state", "get", "--stack", "web", "--env", "prod"], "")
        .json();
    assert_eq!(got, serde_json::json!({"legacy": true}));
    let list = h.ok(&["--output", "json", "state", "list"], "").json();
    assert_eq!(list["stacks"].as_array().unwrap().len(), 2);
}

#[test]
fn version_help_completions_and_usage_errors() {
    let h = Harness::new();
    let o = h.ok(&["version"], "");
    assert!(o.out.starts_with("tenancy 0."), "{o:?}");
    let v = h.ok(&["--output", "json", "version"], "").json();
    assert_eq!(v["name"], "tenancy");
    let o = h.ok(&["--help"], "");
    assert!(
        o.out.contains("Exit codes:") && o.out.contains("7  quota exceeded"),
        "{o:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = h.ok(&["completions", shell], "");
        assert!(o.out.contains("tenancy"), "{shell}");
    }
    let o = h.run(&["frobnicate"], "");
    assert_eq!(o.code, 2, "{o:?}");
    let o = h.run(&["completions", "powershell"], "");
    assert_eq!(o.code, 2, "{o:?}");
}

#[test]
fn lock_lifecycle_wait_renew_force_unlock() {
    let h = Harness::new();
    h.admin();
    let secret = h.tenant("acme", &[]);
    h.login("acme", &secret);
    let first = h
        .ok(
            &[
                "--output", "json", "lock", "acquire", "--stack", "s", "--env", "e", "--ttl", "1s",
            ],
            "",
        )
        .json();
    let first_id = first["lock_id"].as_str().unwrap().to_string();
    // Waiting outlasts the 1 s lease: the lock is taken over with a larger fencing token.
    let second = h
        .ok(
            &[
                "--output", "json", "lock", "acquire", "--stack", "s", "--env", "e", "--ttl",
                "60s", "--wait", "10s",
            ],
            "",
        )
        .json();
    let second_id = second["lock_id"].as_str().unwrap().to_string();
    assert_ne!(first_id, second_id);
    assert!(second["fencing_token"].as_u64().unwrap() > first["fencing_token"].as_u64().unwrap());
    // The old holder can neither renew nor release any more.
    let o = h.run(
        &[
            "lock", "renew", "--stack", "s", "--env", "e", "--id", &first_id,
        ],
        "",
    );
    assert_eq!(o.code, 6, "{o:?}");
    let o = h.run(
        &[
            "lock", "release", "--stack", "s", "--env", "e", "--id", &first_id,
        ],
        "",
    );
    assert_eq!(o.code, 6, "{o:?}");
    let renewed = h
        .ok(
            &[
                "--output", "json", "lock", "renew", "--stack", "s", "--env", "e", "--id",
                &second_id, "--ttl", "5m",
            ],
            "",
        )
        .json();
    assert_eq!(renewed["lock_id"], second_id.as_str());
    h.ok(
        &[
            "lock",
            "force-unlock",
            "--stack",
            "s",
            "--env",
            "e",
            "--id",
            &second_id,
        ],
        "",
    );
    assert_eq!(
        h.ok(&["--output", "json", "lock", "list"], "").json()["locks"],
        serde_json::json!([])
    );
    let table = h.ok(&["lock", "list"], "").out;
    assert_eq!(table.trim(), "No locks held.");
}

#[test]
fn state_writes_respect_the_stack_lock_and_its_fencing_token() {
    let h = Harness::new();
    h.admin();
    let secret = h.tenant("acme", &[]);
    h.login("acme", &secret);
    h.ok(
        &["state", "put", "--stack", "s", "--env", "e"],
        "{\"n\": 1}",
    );
    let lock = |ttl: &str| {
        h.ok(
            &[
                "--output", "json", "lock", "acquire", "--stack", "s", "--env", "e", "--ttl", ttl,
                "--wait", "10s",
            ],
            "",
        )
        .json()["lock_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = lock("1s");
    // locked: a put or rollback without the holder's id is refused, in one line
    let o = h.fails(
        &["state", "put", "--stack", "s", "--env", "e"],
        "{\"n\": 2}",
        6,
    );
    assert!(o.err.contains("--lock-id"), "{o:?}");
    h.fails(
        &[
            "state", "rollback", "--stack", "s", "--env", "e", "--to", "1",
        ],
        "",
        6,
    );
    // with it: saved
    h.ok(
        &[
            "state",
            "put",
            "--stack",
            "s",
            "--env",
            "e",
            "--lock-id",
            &first,
        ],
        "{\"n\": 2}",
    );
    // the lease runs out and a new holder takes over and saves
    let second = lock("60s");
    h.ok(
        &[
            "state",
            "put",
            "--stack",
            "s",
            "--env",
            "e",
            "--lock-id",
            &second,
        ],
        "{\"n\": 3}",
    );
    // the first holder's late writes are fenced off; the second's state survives
    h.fails(
        &[
            "state",
            "put",
            "--stack",
            "s",
            "--env",
            "e",
            "--lock-id",
            &first,
        ],
        "{\"n\": 99}",
        6,
    );
    h.fails(
        &[
            "state",
            "rollback",
            "--stack",
            "s",
            "--env",
            "e",
            "--to",
            "1",
            "--lock-id",
            &first,
        ],
        "",
        6,
    );
    let cur = h
        .ok(&["state", "get", "--stack", "s", "--env", "e"], "")
        .json();
    assert_eq!(cur["n"], 3);
    h.ok(
        &[
            "state",
            "rollback",
            "--stack",
            "s",
            "--env",
            "e",
            "--to",
            "1",
            "--lock-id",
            &second,
        ],
        "",
    );
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let h = Harness::new();
    h.admin();
    h.tenant("acme", &[]);
    let home = h.home.path().to_string_lossy().into_owned();
    let list = |terminal: bool, no_color: Option<&str>| {
        let mut env = vec![("TENANCY_HOME", home.as_str())];
        if let Some(v) = no_color {
            env.push(("NO_COLOR", v));
        }
        let mut t = test_io("", &env, Scripted::default());
        t.io.terminal.stdout = terminal;
        t.io.terminal.stderr = terminal;
        let code = run_with_services(["tenancy", "tenant", "list"], &mut t.io, &h.services, LABEL);
        assert_eq!(code, 0);
        t.out.text()
    };
    assert!(list(true, None).contains("\x1b[32mactive\x1b[0m"));
    assert!(!list(false, None).contains('\x1b'));
    assert!(!list(true, Some("1")).contains('\x1b'));
}

/// Backend calls per tenant command, the session check included (the
/// figures of benches/README.md): no read-only command writes, and a put to
/// an existing stack does not list the tenant's stacks.
#[test]
fn store_calls_per_command() {
    use tenancy_state::counting::{CallCounts, CountingBackend};
    let counting = Arc::new(CountingBackend::new(MemoryBackend::new()));
    let h = Harness::on(counting.clone());
    h.admin();
    let secret = h.tenant("acme", &[]);
    h.login("acme", &secret);
    h.ok(
        &["state", "put", "--stack", "web", "--env", "prod"],
        "{\"a\":1}",
    );
    let calls = |args: &[&str], stdin: &str| -> CallCounts {
        counting.reset();
        h.ok(args, stdin);
        counting.counts()
    };
    let n = |get, put, delete, list| CallCounts {
        get,
        put,
        delete,
        list,
        get_many: 0,
    };
    assert_eq!(
        calls(&["tenant", "list"], ""),
        CallCounts {
            get_many: 1,
            ..n(2, 0, 0, 1)
        },
        "admin: manifest, list, the records in one batch, and each usage (STACKS, COST)"
    );
    assert_eq!(
        calls(&["state", "get", "--stack", "web", "--env", "prod"], ""),
        n(2, 0, 0, 0)
    );
    assert_eq!(
        calls(
            &["state", "put", "--stack", "web", "--env", "prod"],
            "{\"a\":2}"
        ),
        n(3, 2, 0, 0),
        "record, the stack's lock, state.json; history entry, state.json: no listing"
    );
    assert_eq!(
        calls(
            &["lock", "acquire", "--stack", "web", "--env", "prod", "--ttl", "5m"],
            ""
        ),
        n(2, 1, 0, 0)
    );
}

#[cfg(unix)]
#[test]
fn a_home_writable_by_group_or_others_is_refused_with_the_fix_and_nothing_written() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new();
    h.admin();
    let session = Home::at(h.home.path()).session_path(SessionSlot::Admin);
    let before = std::fs::read(&session).unwrap();
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(h.home.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let o = h.fails(
            &["admin", "login", "--password-stdin"],
            &format!("{PASSWORD}\n"),
            2,
        );
        let fix = format!("run `chmod 700 {}`", h.home.path().display());
        assert!(o.err.contains("writable by group or others"), "{o:?}");
        assert!(o.err.contains(&fix), "{o:?}");
        // Reading a session that could have been planted is refused too.
        h.fails(&["tenant", "list"], "", 2);
        h.fails(&["admin", "logout"], "", 2);
        assert_eq!(
            std::fs::read(&session).unwrap(),
            before,
            "the session changed"
        );
    }
    std::fs::set_permissions(h.home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    h.ok(&["tenant", "list"], "");
}

#[cfg(unix)]
#[test]
fn a_home_owned_by_another_user_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let h = Harness::new();
    h.admin();
    let mine = std::fs::metadata(h.home.path()).unwrap().uid();
    let session = h.home.path().join("admin-session");
    let before = std::fs::read(&session).unwrap();
    // As root, give the home away; otherwise `/` belongs to someone else (root).
    let (home, owner) = if std::os::unix::fs::chown(h.home.path(), Some(65534), Some(65534)).is_ok()
    {
        (h.home.path().to_path_buf(), 65534)
    } else {
        (std::path::PathBuf::from("/"), 0)
    };
    assert_ne!(owner, mine);
    let home_str = home.to_string_lossy().into_owned();
    let o = h.run_full(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        &[("TENANCY_HOME", &home_str)],
        Scripted::default(),
    );
    assert_eq!(o.code, 2, "{o:?}");
    assert_eq!(o.err.trim_end().lines().count(), 1, "{o:?}");
    assert!(o.err.contains("belongs to another user"), "{o:?}");
    assert!(o.err.contains("set TENANCY_HOME"), "{o:?}");
    if home == h.home.path() {
        assert_eq!(
            std::fs::read(&session).unwrap(),
            before,
            "the session changed"
        );
    } else {
        assert!(!home.join("admin-session").exists());
    }
}

#[test]
fn admin_passwd_changes_the_one_credential_and_ends_every_admin_session() {
    let h = Harness::new();
    h.admin();
    // A second admin, logged in from another home on the same store.
    let other = Harness {
        home: tempfile::tempdir().unwrap(),
        backend: h.backend.clone(),
        services: h.services.clone(),
    };
    other.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    other.ok(&["tenant", "list"], "");

    let long = "x".repeat(73);
    let o = h.fails(
        &["admin", "passwd", "--new-password-stdin"],
        &format!("{long}\n"),
        2,
    );
    assert!(o.err.contains("8 to 72 bytes"), "{o:?}");
    h.fails(&["admin", "passwd", "--new-password-stdin"], "short\n", 2);
    let o = h.ok(
        &[
            "--output",
            "json",
            "admin",
            "passwd",
            "--new-password-stdin",
        ],
        "a brand new password\n",
    );
    assert_eq!(o.json()["generation"], 2);

    // Every admin session ended, this one and the other home's.
    h.fails(&["tenant", "list"], "", 3);
    let o = other.fails(&["tenant", "list"], "", 3);
    assert!(o.err.contains("admin credential changed"), "{o:?}");
    // The old password is refused; the new one works; a 72-byte prefix of a
    // longer password never does.
    h.fails(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        3,
    );
    h.ok(
        &["admin", "login", "--password-stdin"],
        "a brand new password\n",
    );
    h.ok(&["tenant", "list"], "");

    // Lost it: whoever holds the store resets it without a session.
    h.ok(&["admin", "logout"], "");
    h.fails(
        &["admin", "passwd", "--new-password-stdin"],
        "whatever123\n",
        3,
    );
    h.ok(
        &["admin", "passwd", "--reset", "--new-password-stdin"],
        "recovered password\n",
    );
    h.ok(
        &["admin", "login", "--password-stdin"],
        "recovered password\n",
    );
}

#[cfg(unix)]
#[test]
fn doctor_reports_repairs_and_is_clean_again_on_local_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let local = tenancy_state::LocalBackend::open(dir.path().join("store")).unwrap();
    let root = local.root().to_path_buf();
    let h = Harness::on_store(tenancy_state::Store::Local(local));
    h.fails(&["doctor"], "", 3);
    h.admin();
    let secret = h.tenant("acme", &[]);
    let o = h.ok(&["doctor"], "");
    assert!(o.out.contains("No problems found."), "{o:?}");

    // what crashes leave: an index entry whose create died before its
    // record, a killed writer's temp file; and a record others may read
    let orphan = root
        .join("registry-keys")
        .join("00112233445566778899aabbccddeeff.yaml");
    std::fs::write(&orphan, "tenant: ghost\ncreated_at: 2020-01-01T00:00:00Z\n").unwrap();
    std::fs::set_permissions(&orphan, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tmp = root.join("registry").join(".tmp-crashed");
    let f = std::fs::File::create(&tmp).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let record = root.join("registry").join("acme.yaml");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();

    let o = h.fails(&["--output", "json", "doctor"], "", 8);
    assert!(o.err.contains("tenancy doctor --repair"), "{o:?}");
    let v = o.json();
    let mut found: Vec<(String, String, bool)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["key"].as_str().unwrap().to_string(),
                f["repairable"].as_bool().unwrap(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("file_mode".into(), "registry/acme.yaml".into(), true),
            (
                "orphan_index_entry".into(),
                "registry-keys/00112233445566778899aabbccddeeff.yaml".into(),
                true
            ),
            ("temp_file".into(), "registry/.tmp-crashed".into(), true),
        ],
        "{v:#}"
    );
    let table = h.fails(&["doctor"], "", 8);
    assert!(table.out.contains("orphan_index_entry"), "{table:?}");

    let o = h.ok(&["--output", "json", "doctor", "--repair"], "");
    let v = o.json();
    assert_eq!(v["clean"], true, "{v:#}");
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["repaired"] == true));
    assert!(!tmp.exists());
    assert_eq!(
        std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = h.ok(&["doctor"], "");
    assert!(o.out.contains("No problems found."), "{o:?}");
    // the valid tenant still works
    h.login("acme", &secret);
    h.ok(&["tenant", "details"], "");
}

/// Runs `args` on a scripted terminal of `columns` columns (stdout and
/// stderr both terminals) with `env`.
fn on_terminal(h: &Harness, args: &[&str], env: &[(&str, &str)], columns: usize) -> Outcome {
    let home = h.home.path().to_string_lossy().into_owned();
    let mut vars = vec![("TENANCY_HOME", home.as_str())];
    vars.extend_from_slice(env);
    let mut t = test_io("", &vars, Scripted::default());
    t.io.terminal.stdout = true;
    t.io.terminal.stderr = true;
    t.io.terminal.columns = Some(columns);
    let mut argv = vec!["tenancy"];
    argv.extend_from_slice(args);
    let code = run_with_services(argv, &mut t.io, &h.services, LABEL);
    Outcome {
        code,
        out: t.out.text(),
        err: t.err.text(),
    }
}

/// Issue 13 item 6: tables by display width, fitted to the terminal (free
/// text cut with an ellipsis, ids whole), whole values into a pipe; colour
/// reset before each newline, none on a dumb terminal.
#[test]
fn terminal_tables_fit_align_and_reset_their_colour() {
    use crate::output::display_width;
    let h = Harness::new();
    h.admin();
    let long = "Acme Corporation International Holdings Worldwide";
    h.tenant("acme-international", &["--display-name", long]);
    h.tenant("kabushiki", &["--display-name", "株式会社アクメ"]);

    let o = on_terminal(&h, &["tenant", "list"], &[("TERM", "xterm")], 80);
    assert_eq!(o.code, 0, "{o:?}");
    let plain: Vec<String> = o
        .out
        .lines()
        .filter(|l| !l.starts_with("Total:"))
        .map(|l| {
            l.replace("\x1b[0m", "")
                .replace("\x1b[1m", "")
                .replace("\x1b[32m", "")
        })
        .collect();
    for line in &plain {
        assert!(display_width(line) <= 80, "wider than 80: {line:?}");
    }
    assert!(o.out.contains("acme-international"), "{o:?}");
    assert!(o.out.contains("Acme Corporation Int"), "{o:?}");
    assert!(o.out.contains('…'), "{o:?}");
    assert!(!o.out.contains("Worldwide"), "{o:?}");
    // CREATED starts at the same display column on every line.
    let created_at: Vec<usize> = plain
        .iter()
        .map(|l| display_width(&l[..l.rfind("  ").unwrap()]))
        .collect();
    assert!(created_at.windows(2).all(|w| w[0] == w[1]), "{plain:#?}");
    for line in o.out.split_inclusive('\n') {
        assert!(
            !line.contains('\x1b') || line.ends_with("\x1b[0m\n") || line.contains("\x1b[0m "),
            "{line:?}"
        );
        assert!(
            !line.starts_with("\x1b[0m"),
            "a reset after the newline: {line:?}"
        );
    }
    // COLUMNS overrides the terminal's width.
    let o = on_terminal(&h, &["tenant", "list"], &[("COLUMNS", "200")], 80);
    assert!(o.out.contains(long), "{o:?}");
    // A dumb terminal gets no colour, but still fits.
    let o = on_terminal(&h, &["tenant", "list"], &[("TERM", "dumb")], 80);
    assert!(!o.out.contains('\x1b'), "{o:?}");
    assert!(o.out.contains("Acme Corporation Int"), "{o:?}");
    assert!(o.out.contains('…'), "{o:?}");
    // A pipe (no terminal) gets whole values, whatever COLUMNS says.
    let o = h.run_full(
        &["tenant", "list"],
        "",
        &[("COLUMNS", "40")],
        Scripted::default(),
    );
    assert!(o.out.contains(long), "{o:?}");
    // Warnings: coloured word, reset before the newline.
    let o = on_terminal(&h, &["tenant", "init", "--name", "initech"], &[], 80);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.err.starts_with("\x1b[33mwarning:\x1b[0m "), "{o:?}");
}

/// A scripted terminal answering `answers` in order, and the questions it was asked.
fn terminal(answers: &[&str]) -> (Scripted, Arc<std::sync::Mutex<Vec<String>>>) {
    let p = Scripted {
        interactive: true,
        answers: answers.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let asked = p.asked.clone();
    (p, asked)
}

fn questions(asked: &Arc<std::sync::Mutex<Vec<String>>>) -> Vec<String> {
    asked.lock().unwrap().clone()
}

/// Issue 13 item 8: `tenant init` with no flags asks for every detail,
/// defaults in brackets, Enter accepts them, a bad answer is asked again.
#[test]
fn tenant_init_on_a_terminal_asks_for_each_detail() {
    let h = Harness::new();
    h.admin();
    let (p, asked) = terminal(&["Bad_Id", "acme", "", "ops@acme.test", "platinum", "pro", ""]);
    let o = h.run_full(&["-o", "json", "tenant", "init"], "", &[], p);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        questions(&asked),
        [
            "Tenant id (lowercase letters, digits, '-') [none]: ",
            "Tenant id (lowercase letters, digits, '-') [none]: ",
            "Display name [acme]: ",
            "Contact e-mail [none]: ",
            "Plan (free, basic, pro, enterprise) [free]: ",
            "Plan (free, basic, pro, enterprise) [free]: ",
            "Secret prefix [tnc]: ",
        ]
    );
    assert!(o.err.contains("try again"), "{o:?}");
    let v = o.json();
    assert_eq!(v["tenant"]["id"], "acme");
    assert_eq!(v["tenant"]["display_name"], "acme");
    assert_eq!(v["tenant"]["email"], "ops@acme.test");
    assert_eq!(v["tenant"]["plan"], "pro");
    assert!(v["secret"].as_str().unwrap().starts_with("tnc_"), "{v}");

    // Enter everywhere: the defaults; flags given are not asked.
    let (p, asked) = terminal(&["globex", "", ""]);
    let o = h.run_full(
        &[
            "-o", "json", "tenant", "init", "--plan", "basic", "--email", "g@x.test",
        ],
        "",
        &[],
        p,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(questions(&asked).len(), 3, "{:?}", questions(&asked));
    let v = o.json();
    assert_eq!(v["tenant"]["display_name"], "globex");
    assert_eq!(v["tenant"]["plan"], "basic");

    // The id by position (or --name) asks nothing; no terminal and no id is exit 2.
    let (p, asked) = terminal(&[]);
    let o = h.run_full(&["tenant", "init", "initech"], "", &[], p);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(questions(&asked).is_empty());
    let o = h.fails(&["tenant", "init"], "", 2);
    assert!(o.err.contains("no tenant id"), "{o:?}");
    // Three bad ids: exit 2, nothing created.
    let (p, _) = terminal(&["A", "B", "C"]);
    let o = h.run_full(&["tenant", "init"], "", &[], p);
    assert_eq!(o.code, 2, "{o:?}");
    let list = h.ok(&["-o", "json", "tenant", "list"], "").json();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 3);
}

/// Issue 13 item 8: wrong passwords and secrets are asked again (three
/// tries), the length is checked before the repeat, mismatches ask again,
/// an empty new password cancels.
#[test]
fn prompts_ask_again_and_cancel_cleanly() {
    let h = Harness::new();
    // init: too short (asked again before any repeat), then a mismatch, then right.
    let (p, asked) = terminal(&["short", PASSWORD, "mismatch", PASSWORD, PASSWORD]);
    let o = h.run_full(&["init"], "", &[], p);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        questions(&asked),
        [
            "New admin password: ",
            "New admin password: ",
            "Repeat the admin password: ",
            "New admin password: ",
            "Repeat the admin password: ",
        ]
    );
    assert!(o.err.contains("must be 8 to 72 bytes"), "{o:?}");
    assert!(
        o.err.contains("The two passwords differ; try again."),
        "{o:?}"
    );

    // admin login: two wrong passwords, then the right one.
    let (p, asked) = terminal(&["wrong one", "wrong two", PASSWORD]);
    let o = h.run_full(&["admin", "login"], "", &[], p);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(questions(&asked).len(), 3);
    assert_eq!(
        o.err.matches("Wrong admin password; try again.").count(),
        2,
        "{o:?}"
    );
    // Three wrong: exit 3 after the third.
    let (p, asked) = terminal(&["w1", "w2", "w3", PASSWORD]);
    let o = h.run_full(&["admin", "login"], "", &[], p);
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(questions(&asked).len(), 3);
    // Not typed: no second try.
    let o = h.fails(&["admin", "login", "--password-stdin"], "wrong\n", 3);
    assert!(o.err.contains("wrong admin password"), "{o:?}");
    h.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );

    // tenant login: a wrong secret, then the right one.
    let secret = h.tenant("acme", &[]);
    let (p, asked) = terminal(&["tnc_wrong", &secret]);
    let o = h.run_full(&["login", "acme"], "", &[], p);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(questions(&asked), ["Secret of tenant acme: "; 2]);

    // Declining is not an error: exit 0, one plain line, nothing changed.
    h.ok(&["state", "put", "--stack", "web", "--env", "prod"], "{}");
    let (p, _) = terminal(&["n"]);
    let o = h.run_full(
        &["state", "delete", "--stack", "web", "--env", "prod"],
        "",
        &[],
        p,
    );
    assert_eq!(
        (o.code, o.err.as_str()),
        (0, "Cancelled; nothing changed.\n"),
        "{o:?}"
    );
    assert!(!o.err.contains("error"), "{o:?}");
    h.ok(&["state", "get", "--stack", "web", "--env", "prod"], "");
    // An empty new admin password cancels `admin passwd`: the old one still works.
    let (p, _) = terminal(&[""]);
    let o = h.run_full(&["admin", "passwd"], "", &[], p);
    assert_eq!(
        (o.code, o.err.as_str()),
        (0, "Cancelled; nothing changed.\n"),
        "{o:?}"
    );
    h.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
}

/// Issue 13 item 8: secrets and passwords lose surrounding whitespace and
/// CR wherever they are read.
#[test]
fn secrets_are_trimmed_wherever_they_are_read() {
    let h = Harness::new();
    h.ok(
        &["init", "--admin-password-stdin"],
        &format!("  {PASSWORD} \r\n"),
    );
    // The stored password is the trimmed one: typed, piped or from the environment.
    h.ok(
        &["admin", "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let (p, _) = terminal(&[&format!("\t{PASSWORD}\r")]);
    assert_eq!(h.run_full(&["admin", "login"], "", &[], p).code, 0);
    let padded = format!(" {PASSWORD}\r");
    let o = h.run_full(
        &["admin", "login"],
        "",
        &[("TENANCY_ADMIN_PASSWORD", &padded)],
        Scripted::default(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let secret = h.tenant("acme", &[]);
    h.ok(
        &["login", "acme", "--secret-stdin"],
        &format!(" {secret}\r\n"),
    );
    let padded = format!("{secret}  \r");
    let o = h.run_full(
        &["login", "--tenant", "acme"],
        "",
        &[("TENANCY_SECRET", &padded)],
        Scripted::default(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let (p, _) = terminal(&[&format!(" {secret} ")]);
    assert_eq!(h.run_full(&["login", "acme"], "", &[], p).code, 0);
    // Whitespace is not a secret.
    let o = h.run_full(
        &["login", "acme"],
        "",
        &[("TENANCY_SECRET", " \r")],
        Scripted::default(),
    );
    assert_eq!(o.code, 2, "{o:?}");
}
