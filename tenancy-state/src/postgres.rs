//! `PostgresBackend`: the `StateBackend` on a PostgreSQL database (feature
//! `postgres`), so the registry, stack state, locks, sessions, keys and the
//! audit trail live in the database a team already runs.
//!
//! # URL
//!
//! `postgres://user@host[:port]/db[?schema=NAME&sslmode=disable|prefer|require&pool_size=N&pool_timeout=SECS&connect_timeout=SECS&statement_timeout=SECS]`
//! (`postgresql://` too; `application_name`, `options` and
//! `target_session_attrs` pass to the server as in libpq). A password never
//! sits in the URL (one that does is refused without being echoed, also one
//! whose `/`, `?` or `#` ends the host early, leaving an `@` in the path):
//! it comes from `PGPASSWORD`, else the `~/.pgpass` file (or `PGPASSFILE`;
//! refused when group or others may read it), matched by host (`localhost`
//! for a Unix socket), port, database and user as libpq does. Every message
//! names the URL without a password.
//! `schema` (default `tenancy`; `[a-z_][a-z0-9_]*`, at most 63 bytes) keeps
//! several stores apart in one database. TLS is rustls (ring) with the
//! platform's certificate verifier: `sslmode=require` insists on it,
//! `prefer` (the default, as in libpq) uses it when the server offers it,
//! `disable` never does. Unlike libpq, `prefer` verifies the certificate
//! too and does not fall back to plaintext when the handshake fails: a
//! server whose certificate the platform does not trust is refused.
//!
//! # Schema
//!
//! ```text
//! <schema>.objects  (key TEXT COLLATE "C" PRIMARY KEY, bytes BYTEA, version BIGINT, updated TIMESTAMPTZ)
//!                   WITH (toast_tuple_target = 8160): rows under 8 KB inline, uncompressed
//! <schema>.versions a sequence: every write takes the next number as the object's version
//! <schema>.meta     (name, value): schema_version = 1
//! ```
//!
//! Created on first use by any process, idempotently (one transaction under
//! a transaction-scoped advisory lock, so two processes starting at once do
//! not both create it; the schema itself only when it is missing, so a role
//! without `CREATE` on the database works in a schema the DBA made for
//! it), and its version checked: a newer schema than this
//! build knows is refused rather than misread. A schema created by an
//! earlier build (before `toast_tuple_target` was set) works as it is; `ALTER
//! TABLE <schema>.objects SET (toast_tuple_target = 8160)` saves it the
//! compression of small records.
//!
//! # Operations: each one statement, atomic without locks or transactions
//!
//! - `get`: one `SELECT` by primary key; `get_many`: one `SELECT ... WHERE
//!   key = ANY($1)` per 500 keys (the registry's `list` reads its records
//!   so, not one round trip each).
//! - `put Create`: `INSERT ... ON CONFLICT DO NOTHING RETURNING version`:
//!   no row means the key exists (`AlreadyExists`). Of two creates exactly
//!   one inserts.
//! - `put Update(v)`: `UPDATE ... WHERE key = $1 AND version = $2
//!   RETURNING version`: no row means another write came first (or the
//!   object is gone): `Precondition`. Versions come from one sequence, so a
//!   version never repeats and there is no ABA.
//! - `put Overwrite`: `INSERT ... ON CONFLICT DO UPDATE`.
//! - `delete IfVersion(v)`: `DELETE ... WHERE key = $1 AND version = $2`;
//!   `delete Any` by key only.
//! - `list(prefix)`: keyset pagination in key order (`key > last ORDER BY
//!   key LIMIT 500`, never `OFFSET`) over the range `[prefix/, prefix0)`
//!   (`0` follows `/` in byte order; the column collates as bytes), so a
//!   `_` or `%` in a key is just a character (no `LIKE`). A page is one
//!   statement on a pooled connection, so a long listing holds no
//!   connection between pages.
//!
//! # Pool and failures
//!
//! A deadpool pool of at most `pool_size` connections (default 16); each
//! connection prepares a statement on first use and reuses it, so every
//! operation is one round trip (a pooler must pass prepared statements
//! through: PgBouncer 1.21+ in transaction mode does). A
//! request that finds it full waits up to `pool_timeout` (default 10 s),
//! then fails with a `Backend` error saying the pool is exhausted; a
//! database that cannot be reached fails within `connect_timeout` (default
//! 5 s) naming the URL. Both are temporary (`Error::is_temporary`): the
//! server answers 503, the CLI prints one line. A peer that stops
//! answering (a failover, a pulled cable) is given up within about a minute
//! (keepalives after 30 s of silence, three probes 10 s apart;
//! `TCP_USER_TIMEOUT` 30 s on unacknowledged writes). `statement_timeout=N`
//! has the server cancel a statement after N seconds (one waiting on a row
//! someone's open transaction locked, say: SQLSTATE 57014, a `Backend`
//! error). It is off by default because PgBouncer refuses startup options
//! it cannot track; behind one, `ALTER ROLE <user> SET statement_timeout =
//! '30s'` does the same. A statement
//! that fails midway changes nothing (each is atomic), so a database
//! restarted in the middle of a run leaves no half-written object; a write
//! whose answer was lost may have committed (a retried `Create` then finds
//! the key, a retried `Update` a newer version), as on every backend.
//! A column whose type someone altered is reported as `Corrupt`, never a
//! panic.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::stream::{self, BoxStream, StreamExt};
use tenancy_core::{
    Capabilities, DeleteMode, Error, ListEntry, Object, PutMode, Result, StateBackend, StateKey,
    Version,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::Config;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// The default schema name.
pub const DEFAULT_SCHEMA: &str = "tenancy";
const DEFAULT_POOL_SIZE: usize = 16;

/// Rows up to this size are stored inline and uncompressed (PostgreSQL's
/// default compresses any row over about 2 KB, on every write; usage and
/// lock records, rewritten by every reservation and renewal, are often a
/// few KB, and with many tenants reserving at once pglz took a quarter of
/// the database's CPU). Bigger objects (stack state) are compressed and
/// stored out of line as usual. 8160 is the largest value an 8 KB page allows.
const TOAST_TUPLE_TARGET: u32 = 8160;
const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const PAGE: i64 = 500;

/// What a `postgres://` URL says, with our own parameters taken out.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection settings (password from the environment, never the URL).
    pub pg: Config,
    /// The schema.
    pub schema: String,
    /// The most pooled connections.
    pub pool_size: usize,
    /// How long a request waits for a free connection.
    pub pool_timeout: Duration,
    /// The URL as messages show it (no password).
    pub shown: String,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.shown)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// A driver error as messages show it: the server's own message and
/// SQLSTATE for an error the database reported (the driver's `Display`
/// says only "db error"), the cause for one on the connection.
struct Pg<'a>(&'a tokio_postgres::Error);

impl fmt::Display for Pg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(
                f,
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            )?;
            if let Some(detail) = db.detail() {
                write!(f, " ({detail})")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        if let Some(cause) = std::error::Error::source(self.0) {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

fn invalid(shown: &str, what: impl fmt::Display) -> Error {
    Error::invalid(format!("backend URL {shown}: {what}"))
}

/// A URL parameter of whole seconds, 1 to `max`.
fn seconds(shown: &str, name: &str, value: &str, max: u64) -> Result<Duration> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| invalid(shown, format!("{name} must be 1 to {max} seconds")))
}

/// Checks a schema name: `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub fn validate_schema(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "schema \"{}\" must be 1 to 63 of a-z 0-9 _, not starting with a digit",
            name.chars().take(80).collect::<String>().escape_debug()
        )))
    }
}

impl PostgresConfig {
    /// Parses a `postgres://` URL (see the module docs). The password comes
    /// from `PGPASSWORD` or the password file, never from the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("backend URL is not a postgres:// URL: {e}")))?;
        // A password holding '/', '?' or '#' ends the host early and would
        // be shown as the path or query: such a URL is refused unseen.
        if parsed.path().contains('@')
            || parsed.query().is_some_and(|q| q.contains('@'))
            || parsed.fragment().is_some()
        {
            return Err(Error::invalid(
                "backend URL has an '@' after its host or a '#' (a password in it?); it is not shown. \
                 A password must not sit in the URL: set PGPASSWORD or use a password file (~/.pgpass); \
                 write an '@' in a database name as %40",
            ));
        }
        let mut shown = parsed.clone();
        let _ = shown.set_password(None);
        shown.set_query(None);
        let shown = shown.to_string();
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(&shown, "the scheme is not postgres://"));
        }
        if parsed.password().is_some() {
            return Err(invalid(
                &shown,
                "a password must not sit in the URL; set PGPASSWORD or use a password file (~/.pgpass)",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid(&shown, "it names no host"));
        }
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut pool_timeout = DEFAULT_POOL_TIMEOUT;
        let mut passed = url::form_urlencoded::Serializer::new(String::new());
        let mut connect_timeout = None;
        let mut statement_timeout: Option<Duration> = None;
        let mut options = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "schema" => schema = v.to_string(),
                "pool_size" => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| invalid(&shown, "pool_size must be 1 to 1024"))?
                }
                "pool_timeout" => pool_timeout = seconds(&shown, &k, &v, 3600)?,
                "connect_timeout" => connect_timeout = Some(seconds(&shown, &k, &v, 3600)?),
                "statement_timeout" => {
                    statement_timeout = Some(seconds(&shown, &k, &v, 86_400)?)
                }
                "options" => options = Some(v.to_string()),
                "sslmode" | "application_name" | "target_session_attrs" => {
                    passed.append_pair(&k, &v);
                }
                other => {
                    return Err(invalid(
                        &shown,
                        format!(
                            "unknown parameter \"{}\" (known: schema, sslmode, pool_size, pool_timeout, connect_timeout, statement_timeout, application_name, options, target_session_attrs)",
                            other.chars().take(40).collect::<String>().escape_debug()
                        ),
                    ))
                }
            }
        }
        validate_schema(&schema).map_err(|e| invalid(&shown, e))?;
        let mut base = parsed.clone();
        // The form encoder writes a space as '+', which the driver reads as
        // a '+' (and encodes a real '+' as %2B): every '+' it wrote is a space.
        let query = passed.finish().replace('+', "%20");
        base.set_query((!query.is_empty()).then_some(query.as_str()));
        let mut pg = Config::from_str(base.as_str()).map_err(|e| invalid(&shown, e))?;
        pg.connect_timeout(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
        // The kernel gives up on a peer that stopped answering (a failover,
        // a pulled cable) after TCP_USER_TIMEOUT, with keepalives probing
        // idle pooled connections; `statement_timeout`, when asked for, has
        // the server cancel a statement that runs (or waits on a row lock)
        // longer. It is not on by default: PgBouncer refuses a startup
        // `options` it cannot track ("unsupported startup parameter in
        // options"); there, set it on the role instead. The URL's own
        // `options` come after ours, so a `-c statement_timeout=` there wins.
        let options = [
            statement_timeout.map(|t| format!("-c statement_timeout={}", t.as_millis())),
            options,
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        if !options.is_empty() {
            pg.options(options);
        }
        pg.keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        if pg.get_user().is_none_or(str::is_empty) {
            let user = std::env::var("PGUSER")
                .ok()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    invalid(
                        &shown,
                        "it names no user (postgres://USER@host/db) and PGUSER is not set",
                    )
                })?;
            pg.user(&user);
        }
        if let Some(password) = password_for(&pg, pg.get_user().unwrap_or_default(), &shown)? {
            pg.password(password);
        }
        Ok(PostgresConfig {
            pg,
            schema,
            pool_size,
            pool_timeout,
            shown,
        })
    }
}

/// `PGPASSWORD`, else the first matching line of the password file
/// (`PGPASSFILE`, else `~/.pgpass`): `host:port:database:user:password`,
/// `*` matching anything, `\:` and `\\` escaped, as libpq reads it. A file
/// that group or others may read is refused (libpq ignores it, which leaves
/// its user wondering why the password is wrong).
fn password_for(pg: &Config, user: &str, shown: &str) -> Result<Option<String>> {
    if let Some(p) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
        return Ok(Some(p));
    }
    let Some(path) = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))
    else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(invalid(
                shown,
                format!(
                    "the password file {} may be read by group or others (mode {:o}); chmod 0600 it",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    let (host, port, db) = pgpass_target(pg, user);
    Ok(pgpass_lookup(&text, &host, &port, &db, user))
}

/// What a password file line is matched against for `pg`: the first host
/// as libpq names it (`localhost` for a Unix socket, an IPv6 address without
/// brackets), the port, and the database (the user's name when none).
fn pgpass_target(pg: &Config, user: &str) -> (String, String, String) {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(_)) => "localhost".to_string(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
    let db = pg.get_dbname().filter(|d| !d.is_empty()).unwrap_or(user);
    (host, port, db.to_string())
}

/// The password of the first line of a password file that matches.
fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = pgpass_fields(line);
            let [h, p, d, u, pw] = fields.as_slice() else {
                return None;
            };
            let m = |field: &str, value: &str| field == "*" || field == value;
            (m(h, host) && m(p, port) && m(d, db) && m(u, user)).then(|| pw.clone())
        })
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// The `StateBackend` on PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresBackend {
    pool: Pool,
    schema: Arc<str>,
    shown: Arc<str>,
    sql: Arc<Statements>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("url", &self.shown)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The statements, with the schema in them (quoted; it was validated).
struct Statements {
    get: String,
    create: String,
    update: String,
    overwrite: String,
    delete_any: String,
    delete_if: String,
    get_many: String,
    list_all: String,
    list_range: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let t = format!("\"{schema}\".objects");
        let seq = format!("nextval('\"{schema}\".versions')");
        Statements {
            get: format!("SELECT bytes, version FROM {t} WHERE key = $1"),
            create: format!(
                "INSERT INTO {t} (key, bytes, version, updated) VALUES ($1, $2, {seq}, now()) \
                 ON CONFLICT (key) DO NOTHING RETURNING version"
            ),
            update: format!(
                "UPDATE {t} SET bytes = $2, version = {seq}, updated = now() \
                 WHERE key = $1 AND version = $3 RETURNING version"
            ),
            overwrite: format!(
                "INSERT INTO {t} (key, bytes, version, updated) VALUES ($1, $2, {seq}, now()) \
                 ON CONFLICT (key) DO UPDATE SET bytes = EXCLUDED.bytes, version = EXCLUDED.version, \
                 updated = EXCLUDED.updated RETURNING version"
            ),
            delete_any: format!("DELETE FROM {t} WHERE key = $1"),
            delete_if: format!("DELETE FROM {t} WHERE key = $1 AND version = $2"),
            get_many: format!("SELECT key, bytes, version FROM {t} WHERE key = ANY($1)"),
            list_all: format!(
                "SELECT key, octet_length(bytes)::BIGINT, updated FROM {t} \
                 WHERE key > $1 ORDER BY key LIMIT $2"
            ),
            list_range: format!(
                "SELECT key, octet_length(bytes)::BIGINT, updated FROM {t} \
                 WHERE key > $1 AND key < $3 ORDER BY key LIMIT $2"
            ),
        }
    }
}

/// An object from its `bytes` and `version` columns.
fn object(bytes: Vec<u8>, version: i64) -> Object {
    Object {
        bytes: Bytes::from(bytes),
        version: Version(version.to_string()),
    }
}

fn parse_version(v: &Version) -> Option<i64> {
    v.0.parse().ok()
}

impl PostgresBackend {
    /// Connects to the database of `url` (see the module docs), creating or
    /// checking the schema.
    pub async fn open(url: &str) -> Result<Self> {
        Self::connect(PostgresConfig::from_url(url)?).await
    }

    /// Connects with a parsed configuration.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let PostgresConfig {
            pg,
            schema,
            pool_size,
            pool_timeout,
            shown,
        } = config;
        let connect_timeout = pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        } else {
            let _ = rustls::crypto::ring::default_provider().install_default();
            use rustls_platform_verifier::ConfigVerifierExt as _;
            let tls = rustls::ClientConfig::with_platform_verifier().map_err(|e| {
                Error::backend("postgres", format!("{shown}: cannot set up TLS: {e}"))
            })?;
            Manager::from_config(
                pg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            )
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(pool_timeout))
            // Connecting may take connect_timeout per address the host
            // resolves to, and then TLS and authentication.
            .create_timeout(Some(pool_timeout.max(connect_timeout * 2)))
            .recycle_timeout(Some(pool_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::backend("postgres", format!("{shown}: {e}")))?;
        let backend = PostgresBackend {
            pool,
            sql: Arc::new(Statements::new(&schema)),
            schema: schema.into(),
            shown: shown.into(),
        };
        backend.ensure_schema().await?;
        Ok(backend)
    }

    /// The URL as messages show it (no password).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The pool (for tests of its limits).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Column `i` of a row, or `Corrupt` when the table's column is not of
    /// the type this build made it with (someone altered it), or NULL.
    fn column<'r, T: tokio_postgres::types::FromSql<'r>>(
        &self,
        row: &'r tokio_postgres::Row,
        i: usize,
    ) -> Result<T> {
        row.try_get(i).map_err(|e| Error::Corrupt {
            what: format!("{}: schema \"{}\"", self.shown, self.schema),
            message: format!("{e}; the table's columns are not as this build made them"),
        })
    }

    fn fail(&self, what: &str, e: impl fmt::Display) -> Error {
        Error::backend("postgres", format!("{} ({what}): {e}", self.shown))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        use deadpool_postgres::{PoolError, TimeoutType};
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => self.fail(
                "connection pool",
                format!(
                    "no free connection within the pool timeout (all {} in use); retry, or raise pool_size",
                    self.pool.status().max_size
                ),
            ),
            PoolError::Timeout(TimeoutType::Create) => self.fail(
                "cannot connect",
                "connecting, TLS and authentication took longer than the pool allows; check the server and network",
            ),
            PoolError::Timeout(TimeoutType::Recycle) => self.fail(
                "connection pool",
                "checking a pooled connection took too long; check the server and network",
            ),
            deadpool_postgres::PoolError::Backend(e) => self.fail("cannot connect", Pg(&e)),
            e => self.fail("cannot connect", e),
        })
    }

    /// A pooled connection and `sql` prepared on it (once per connection:
    /// after that a statement is one round trip, not two).
    async fn prepared(
        &self,
        what: &str,
        sql: &str,
    ) -> Result<(deadpool_postgres::Object, tokio_postgres::Statement)> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.fail(what, Pg(&e)))?;
        Ok((client, statement))
    }

    async fn ensure_schema(&self) -> Result<()> {
        let mut client = self.client().await?;
        let s = &*self.schema;
        let check = format!("SELECT value FROM \"{s}\".meta WHERE name = 'schema_version'");
        let found = match client.query_opt(&check, &[]).await {
            Ok(row) => row.map(|r| self.column::<String>(&r, 0)).transpose()?,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(self.fail("reading the schema version", Pg(&e))),
        };
        let found = match found {
            Some(v) => v,
            None => {
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| self.fail("creating the schema", Pg(&e)))?;
                // The schema is created only when missing: CREATE SCHEMA IF
                // NOT EXISTS checks the right to create in the database
                // first, which a role the DBA made a schema for often lacks.
                let create = format!(
                    "SELECT pg_advisory_xact_lock(hashtext('tenancy-schema:{s}')); \
                     DO $$ BEGIN IF to_regnamespace('\"{s}\"') IS NULL THEN CREATE SCHEMA \"{s}\"; END IF; END $$; \
                     CREATE TABLE IF NOT EXISTS \"{s}\".objects (\
                       key TEXT COLLATE \"C\" PRIMARY KEY, \
                       bytes BYTEA NOT NULL, \
                       version BIGINT NOT NULL, \
                       updated TIMESTAMPTZ NOT NULL DEFAULT now()) \
                       WITH (toast_tuple_target = {TOAST_TUPLE_TARGET}); \
                     CREATE SEQUENCE IF NOT EXISTS \"{s}\".versions; \
                     CREATE TABLE IF NOT EXISTS \"{s}\".meta (name TEXT PRIMARY KEY, value TEXT NOT NULL); \
                     INSERT INTO \"{s}\".meta (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}') \
                       ON CONFLICT (name) DO NOTHING;"
                );
                tx.batch_execute(&create)
                    .await
                    .map_err(|e| self.fail("creating the schema", Pg(&e)))?;
                let row = tx
                    .query_one(&check, &[])
                    .await
                    .map_err(|e| self.fail("reading the schema version", Pg(&e)))?;
                let v: String = self.column(&row, 0)?;
                tx.commit()
                    .await
                    .map_err(|e| self.fail("creating the schema", Pg(&e)))?;
                v
            }
        };
        match found.parse::<i64>() {
            Ok(SCHEMA_VERSION) => Ok(()),
            Ok(n) if n > SCHEMA_VERSION => Err(Error::not_implemented(format!(
                "{}: schema \"{s}\" is at version {n}, newer than this build of tenancy knows ({SCHEMA_VERSION}); upgrade tenancy",
                self.shown
            ))),
            _ => Err(Error::Corrupt {
                what: format!("{}: schema \"{s}\"", self.shown),
                message: format!("schema_version is {found:?}"),
            }),
        }
    }

    async fn page(&self, after: &str, upper: Option<&str>) -> Result<Vec<ListEntry>> {
        let rows = match upper {
            None => {
                let (client, st) = self.prepared("list", &self.sql.list_all).await?;
                client.query(&st, &[&after, &PAGE]).await
            }
            Some(hi) => {
                let (client, st) = self.prepared("list", &self.sql.list_range).await?;
                client.query(&st, &[&after, &PAGE, &hi]).await
            }
        }
        .map_err(|e| self.fail("list", Pg(&e)))?;
        rows.iter()
            .map(|r| {
                let key: String = self.column(r, 0)?;
                let size: i64 = self.column(r, 1)?;
                let updated: DateTime<Utc> = self.column(r, 2)?;
                Ok(ListEntry {
                    key: StateKey::new(key)?,
                    size: size.max(0) as u64,
                    last_modified: Some(updated),
                })
            })
            .collect()
    }
}

#[async_trait]
impl StateBackend for PostgresBackend {
    fn name(&self) -> &str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        let (client, st) = self.prepared("get", &self.sql.get).await?;
        let row = client
            .query_opt(&st, &[&key.as_str()])
            .await
            .map_err(|e| self.fail("get", Pg(&e)))?;
        row.map(|r| Ok(object(self.column(&r, 0)?, self.column(&r, 1)?)))
            .transpose()
    }

    async fn get_many(&self, keys: &[StateKey]) -> Result<Vec<Option<Object>>> {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(PAGE as usize) {
            let (client, st) = self.prepared("get", &self.sql.get_many).await?;
            let wanted: Vec<&str> = batch.iter().map(StateKey::as_str).collect();
            let rows = client
                .query(&st, &[&wanted])
                .await
                .map_err(|e| self.fail("get", Pg(&e)))?;
            let found: std::collections::HashMap<String, Object> = rows
                .iter()
                .map(|r| {
                    let o = object(self.column(r, 1)?, self.column(r, 2)?);
                    Ok((self.column(r, 0)?, o))
                })
                .collect::<Result<_>>()?;
            // A key asked twice is answered twice.
            out.extend(batch.iter().map(|k| found.get(k.as_str()).cloned()));
        }
        Ok(out)
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        let k = key.as_str();
        let v: &[u8] = &value;
        let row = match &mode {
            PutMode::Create => {
                let (client, st) = self.prepared("put", &self.sql.create).await?;
                client.query_opt(&st, &[&k, &v]).await
            }
            PutMode::Overwrite => {
                let (client, st) = self.prepared("put", &self.sql.overwrite).await?;
                client.query_opt(&st, &[&k, &v]).await
            }
            PutMode::Update(want) => match parse_version(want) {
                // A version no write of this store made can never match.
                None => Ok(None),
                Some(want) => {
                    let (client, st) = self.prepared("put", &self.sql.update).await?;
                    client.query_opt(&st, &[&k, &v, &want]).await
                }
            },
        }
        .map_err(|e| self.fail("put", Pg(&e)))?;
        match (row, &mode) {
            (Some(r), _) => Ok(Version(self.column::<i64>(&r, 0)?.to_string())),
            (None, PutMode::Create) => Err(Error::already_exists(format!("key {key}"))),
            (None, PutMode::Update(want)) => Err(Error::precondition(format!(
                "key {key} is no longer at version {want}"
            ))),
            (None, PutMode::Overwrite) => Err(self.fail("put", "the write returned no version")),
        }
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        let k = key.as_str();
        match &mode {
            DeleteMode::Any => {
                let (client, st) = self.prepared("delete", &self.sql.delete_any).await?;
                client
                    .execute(&st, &[&k])
                    .await
                    .map_err(|e| self.fail("delete", Pg(&e)))?;
                Ok(())
            }
            DeleteMode::IfVersion(want) => {
                let n = match parse_version(want) {
                    None => 0,
                    Some(want) => {
                        let (client, st) = self.prepared("delete", &self.sql.delete_if).await?;
                        client
                            .execute(&st, &[&k, &want])
                            .await
                            .map_err(|e| self.fail("delete", Pg(&e)))?
                    }
                };
                if n == 1 {
                    Ok(())
                } else {
                    Err(Error::precondition(format!(
                        "key {key} is no longer at version {want}"
                    )))
                }
            }
        }
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        // Strictly below `prefix`: the keys in (prefix/, prefix0); no key
        // is `prefix/` itself, so `key > prefix/` starts at the first one.
        let (after, upper) = match prefix {
            None => (String::new(), None),
            Some(p) => (format!("{p}/"), Some(format!("{p}0"))),
        };
        let state = Some((after, upper));
        stream::unfold(state, move |state| async move {
            let (after, upper) = state?;
            match self.page(&after, upper.as_deref()).await {
                Err(e) => Some((vec![Err(e)], None)),
                Ok(page) => {
                    let full = page.len() as i64 == PAGE;
                    let next = page
                        .last()
                        .map(|e| e.key.as_str().to_string())
                        .filter(|_| full)
                        .map(|last| (last, upper));
                    Some((page.into_iter().map(Ok).collect(), next))
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> (String, String, String) {
        let config = PostgresConfig::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        pgpass_target(&config.pg, config.pg.get_user().unwrap_or_default())
    }

    #[test]
    fn a_password_file_line_is_matched_as_libpq_names_the_target() {
        let t = |h: &str, p: &str, d: &str| (h.to_string(), p.to_string(), d.to_string());
        assert_eq!(
            target("postgres://app@db.example:6432/prod"),
            t("db.example", "6432", "prod")
        );
        // IPv6 without brackets, the default port, the user's name as the database.
        assert_eq!(target("postgres://app@[::1]/"), t("::1", "5432", "app"));
        // A percent-encoded database name is matched decoded.
        assert_eq!(target("postgres://app@h/my%20db"), t("h", "5432", "my db"));
        #[cfg(unix)]
        assert_eq!(
            target("postgres://app@%2Fvar%2Frun%2Fpostgresql/prod"),
            t("localhost", "5432", "prod")
        );
    }

    #[test]
    fn no_connection_waits_forever_and_the_urls_options_come_last() {
        let c = PostgresConfig::from_url("postgres://app@h/db").unwrap();
        // Nothing in the startup packet a pooler could refuse.
        assert_eq!(c.pg.get_options(), None);
        assert!(c.pg.get_keepalives());
        assert_eq!(c.pg.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(c.pg.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        let c = PostgresConfig::from_url(
            "postgres://app@h/db?statement_timeout=5&options=-c%20statement_timeout%3D9s",
        )
        .unwrap();
        assert_eq!(
            c.pg.get_options(),
            Some("-c statement_timeout=5000 -c statement_timeout=9s")
        );
        for bad in ["0", "86401", "x"] {
            let e =
                PostgresConfig::from_url(&format!("postgres://app@h/db?statement_timeout={bad}"))
                    .unwrap_err();
            assert!(e.to_string().contains("statement_timeout must be"), "{e}");
        }
    }

    #[test]
    fn the_first_matching_line_gives_the_password_and_escapes_are_read() {
        let file = "# comment\n\
                    other:5432:prod:app:wrong\n\
                    db:*:prod:app:pa\\:ss\\\\word\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(file, "db", "6432", "prod", "app").as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            pgpass_lookup(file, "x", "1", "y", "z").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            pgpass_lookup("db:5432:prod:app\n", "db", "5432", "prod", "app"),
            None
        );
    }
}
