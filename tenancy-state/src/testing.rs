//! Test support for this and other crates' tests: an S3 backend or a
//! PostgreSQL database on the test servers, or a loud skip.
//!
//! This is the one module of the crate that prints: it reports skipped tests
//! on stderr so that a missing S3 or PostgreSQL server is never silent.

use std::sync::Arc;

use tenancy_core::StateBackend;

/// True when a missing S3 server must fail the test instead of skipping it
/// (`TENANCY_REQUIRE_S3=1` or `CI=true`).
pub fn s3_required() -> bool {
    std::env::var("TENANCY_REQUIRE_S3").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test server the tests may need.
#[derive(Debug, Clone, Copy)]
enum Server {
    S3,
    Postgres,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::S3 => "S3",
            Server::Postgres => "PostgreSQL",
        }
    }

    fn required(self) -> (bool, &'static str) {
        match self {
            Server::S3 => (s3_required(), "TENANCY_REQUIRE_S3"),
            Server::Postgres => (postgres_required(), "TENANCY_REQUIRE_POSTGRES"),
        }
    }
}

/// `None` with a loud `SKIPPED` line when `server` is missing for `why`,
/// or a panic when it is required.
fn skip_or_panic<T>(test: &str, server: Server, why: &str) -> Option<T> {
    let (required, variable) = server.required();
    let name = server.name();
    if required {
        panic!(
            "{test}: {name} is required ({variable}=1 or CI=true) but {why}; run scripts/test.sh"
        );
    }
    // Straight to stderr, not eprintln!: the test harness captures the
    // latter for passing tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no {name} server (run scripts/test.sh): {why}"
    );
    None
}

/// The bucket of the S3 test server, or a loud skip (`None`) / panic exactly
/// as [`s3_backend_or_skip`] does.
fn test_bucket(test: &str) -> Option<String> {
    let endpoint = std::env::var("AWS_ENDPOINT").ok().filter(|v| !v.is_empty());
    let bucket = std::env::var("AWS_BUCKET").ok().filter(|v| !v.is_empty());
    match (endpoint, bucket) {
        (Some(_), Some(bucket)) if cfg!(feature = "s3") => Some(bucket),
        (Some(_), Some(_)) => skip_or_panic(
            test,
            Server::S3,
            "tenancy-state was built without feature `s3` (build with --features s3)",
        ),
        _ => skip_or_panic(test, Server::S3, "AWS_ENDPOINT and AWS_BUCKET are not set"),
    }
}

/// A backend URL `s3://$AWS_BUCKET/<label>-<uuid>` on the S3 test server,
/// for tests that start a binary (CLI, server) on it; skips or panics like
/// [`s3_backend_or_skip`].
pub fn s3_url_or_skip(test: &str, label: &str) -> Option<String> {
    let bucket = test_bucket(test)?;
    Some(format!(
        "s3://{bucket}/{label}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// An S3 backend on `$AWS_BUCKET` of the test server at `$AWS_ENDPOINT`,
/// under a fresh random prefix (`test-<uuid>`), with conditional writes
/// probed. Without those variables it prints
/// `SKIPPED <test>: no S3 server (run scripts/test.sh)` to stderr and
/// returns `None`, unless S3 is required ([`s3_required`]), in which case it
/// panics; it also panics when the server is configured but unusable, or
/// when S3 is required and the crate was built without feature `s3`.
pub async fn s3_backend_or_skip(test: &str) -> Option<Arc<dyn StateBackend>> {
    Some(s3_store_or_skip(test).await?.backend())
}

/// Like [`s3_backend_or_skip`], keeping the concrete type ([`crate::Store`])
/// for checks below the trait (the doctor's).
pub async fn s3_store_or_skip(test: &str) -> Option<crate::Store> {
    let bucket = test_bucket(test)?;
    connect(test, &bucket).await
}

#[cfg(feature = "s3")]
async fn connect(test: &str, bucket: &str) -> Option<crate::Store> {
    use crate::{ObjectStoreBackend, S3Config};
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let config = S3Config::from_env(bucket, Some(&prefix));
    let backend = match ObjectStoreBackend::s3(config) {
        Ok(b) => b,
        Err(e) => panic!("{test}: cannot configure the S3 test backend: {e}"),
    };
    if let Err(e) = backend.probe_conditional_writes().await {
        panic!("{test}: the S3 test server at $AWS_ENDPOINT is unusable: {e}");
    }
    Some(crate::Store::Object(backend))
}

#[cfg(not(feature = "s3"))]
async fn connect(test: &str, _bucket: &str) -> Option<crate::Store> {
    // test_bucket already refused: without the feature it never returns a bucket.
    skip_or_panic(
        test,
        Server::S3,
        "tenancy-state was built without feature `s3`",
    )
}

/// True when a missing PostgreSQL server must fail the test instead of
/// skipping it (`TENANCY_REQUIRE_POSTGRES=1` or `CI=true`).
pub fn postgres_required() -> bool {
    std::env::var("TENANCY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A `postgres://` URL on the test server (`TENANCY_TEST_POSTGRES_URL`, else
/// `DATABASE_URL`) with a fresh schema (`t_<uuid>`), for tests that start a
/// binary on it; without one it prints `SKIPPED <test>: no PostgreSQL
/// server (run scripts/test.sh)` and returns `None`, or panics when
/// PostgreSQL is required ([`postgres_required`]) or the crate was built
/// without feature `postgres`.
pub fn postgres_url_or_skip(test: &str) -> Option<String> {
    let base = std::env::var("TENANCY_TEST_POSTGRES_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|v| v.starts_with("postgres://") || v.starts_with("postgresql://"));
    let why = match (&base, cfg!(feature = "postgres")) {
        (Some(_), true) => None,
        (Some(_), false) => Some(
            "tenancy-state was built without feature `postgres` (build with --features postgres)",
        ),
        (None, _) => Some("TENANCY_TEST_POSTGRES_URL (or DATABASE_URL) is not set"),
    };
    if let Some(why) = why {
        return skip_or_panic(test, Server::Postgres, why);
    }
    let base = base?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{sep}schema=t_{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// A PostgreSQL backend on the test server in a fresh schema, or a loud
/// skip exactly as [`postgres_url_or_skip`]; panics when the server is
/// configured but cannot be used.
#[cfg(feature = "postgres")]
pub async fn postgres_backend_or_skip(test: &str) -> Option<Arc<dyn StateBackend>> {
    Some(Arc::new(postgres_or_skip(test).await?))
}

/// Like [`postgres_backend_or_skip`], keeping the concrete type.
#[cfg(feature = "postgres")]
pub async fn postgres_or_skip(test: &str) -> Option<crate::postgres::PostgresBackend> {
    let url = postgres_url_or_skip(test)?;
    match crate::postgres::PostgresBackend::open(&url).await {
        Ok(b) => Some(b),
        Err(e) => panic!("{test}: the PostgreSQL test server is configured but unusable: {e}"),
    }
}

/// A PostgreSQL cluster of a test's own, on a free loopback port, for tests
/// that stop and restart the database (the shared test server must stay up
/// for the tests running beside them). Made with the server binaries of
/// `scripts/postgres-server.sh` (`TENANCY_TEST_POSTGRES_BIN`), trust
/// authentication, as the `postgres` user when the test runs as root.
/// Dropping it stops the cluster and removes its directory.
#[derive(Debug)]
pub struct PostgresCluster {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PostgresCluster {
    /// Makes and starts the cluster, or skips loudly (`None`) when there are
    /// no server binaries, or panics when PostgreSQL is required
    /// ([`postgres_required`]).
    pub fn start_or_skip(test: &str) -> Option<PostgresCluster> {
        let Some(bin) = std::env::var_os("TENANCY_TEST_POSTGRES_BIN") else {
            return skip_or_panic(
                test,
                Server::Postgres,
                "TENANCY_TEST_POSTGRES_BIN (its server binaries) is not set",
            );
        };
        let dir =
            std::env::temp_dir().join(format!("tenancy-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let as_postgres = is_root();
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{test}: cannot give {} to the postgres user",
                dir.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = PostgresCluster {
            dir,
            bin: bin.into(),
            port,
            as_postgres,
        };
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "-U".as_ref(),
                "tenancy".as_ref(),
            ],
        );
        cluster.start();
        Some(cluster)
    }

    /// The cluster's URL (its `postgres` database, schema `tenancy`).
    pub fn url(&self) -> String {
        format!(
            "postgres://tenancy@127.0.0.1:{}/postgres?sslmode=disable&connect_timeout=2",
            self.port
        )
    }

    /// Starts the (stopped) cluster on its port and waits until it answers.
    pub fn start(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1",
            self.dir.display(),
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Stops the cluster the way a crash does (`pg_ctl stop -m immediate`:
    /// no checkpoint, connections cut; the next start replays the WAL).
    pub fn crash(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-w".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "stop".as_ref(),
            ],
        );
    }

    fn command(&self, program: &str) -> std::process::Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
