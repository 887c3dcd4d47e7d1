//! tenancy-state: the `StateBackend` implementations, one type per backend
//! ([`LocalBackend`] on local files, [`ObjectStoreBackend`] on object_store:
//! S3 behind feature `s3`; core's `MemoryBackend` for `memory://`), the
//! prefix wrapper [`Prefixed`] and the tenant scope built on it
//! [`TenantScoped`], [`open`] to pick one by URL, stack state with history ([`stack::StackStore`]), the
//! tenant registry stored on any backend ([`StoreRegistry`]), the
//! single-tenant migration ([`migrate_stacks`]), and a call-counting
//! wrapper ([`counting::CountingBackend`]).
//!
//! ```
//! use tenancy_core::TenantId;
//! use tenancy_state::{stack::StackStore, LocalBackend, TenantScoped};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let shared = LocalBackend::open(dir.path())?;
//! let acme = TenantScoped::new(shared, &TenantId::new("acme")?, "v1")?;
//! let stacks = StackStore::new(acme);
//! let v1 = stacks.save("web", "prod", &serde_json::json!({"replicas": 2}), None).await?;
//! let now = stacks.current("web", "prod").await?.expect("saved");
//! assert_eq!(now.serial, v1.serial);
//! # Ok::<_, tenancy_core::Error>(()) }).unwrap();
//! ```
//!
//! Local files: see the `local` module docs in the source (`src/local.rs`)
//! for how compare-and-swap works across processes.

pub mod audit;
pub mod audited;
pub mod counting;
pub mod doctor;
mod local;
mod memo;
pub mod migrate;
mod object;
#[cfg(feature = "postgres")]
pub mod postgres;
mod prefix;
pub mod registry;
pub mod scoped;
pub mod stack;
pub mod stack_quota;
pub mod testing;

use std::sync::Arc;

use tenancy_core::{Error, Result, StateBackend};

pub use local::{LocalBackend, TEMP_FILE_MAX_AGE};
pub use migrate::{migrate_stacks, MigrateOptions, MigrationReport};
pub use object::ObjectStoreBackend;
#[cfg(feature = "s3")]
pub use object::S3Config;
pub use prefix::Prefixed;
pub use registry::layout::archive_dir;
pub use registry::{run_blocking, BlockingRunner, StoreRegistry};
pub use scoped::TenantScoped;

/// When [`open_with`] checks that a remote store honours conditional writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Probe {
    /// Before the first conditional write of the process: read the probe
    /// marker the store keeps, and probe (leaving the marker) when there is
    /// none. Reads never probe. What [`open`] does.
    #[default]
    Lazy,
    /// Probe now, before `open_with` returns, and record the result in the
    /// store (`tenancy init`, a doctor check).
    Now,
    /// Trust the store without a request: the caller knows it was probed,
    /// e.g. because it holds a registry (`tenancy init` creates one only
    /// after the probe passed).
    Assume,
}

/// How [`open_with`] opens a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// When to check conditional writes (remote stores only; memory and
    /// local files are always exact).
    pub probe: Probe,
}

/// A store opened by URL: the backend, and its concrete type for the
/// checks that look below [`StateBackend`] (`doctor`: temp files and file
/// modes on local files, the probe marker on S3).
#[derive(Debug, Clone)]
pub enum Store {
    /// Local files.
    Local(LocalBackend),
    /// An object store (S3).
    Object(ObjectStoreBackend),
    /// Any other backend (memory, a wrapper): only the trait is looked at.
    Other(Arc<dyn StateBackend>),
}

impl Store {
    /// The backend, as every other part of the toolkit takes it.
    pub fn backend(&self) -> Arc<dyn StateBackend> {
        match self {
            Store::Local(b) => Arc::new(b.clone()),
            Store::Object(b) => Arc::new(b.clone()),
            Store::Other(b) => b.clone(),
        }
    }
}

/// Opens a backend from a URL with [`OpenOptions::default`]:
///
/// - `memory://`: a fresh in-memory store;
/// - `file:///abs/path`, `file://relative/path`, or a bare path: local files
///   (the directory is created);
/// - `s3://bucket/optional/prefix`: an S3-compatible bucket configured from
///   the `AWS_*` variables (see `S3Config::from_env`, feature `s3`);
///   conditional writes are checked before the first conditional write
///   ([`Probe::Lazy`]). Without feature `s3` this gives
///   [`Error::NotImplemented`] saying to build with `--features s3`;
/// - `postgres://user@host[:port]/db[?schema=...]`: a PostgreSQL database
///   (`postgres::PostgresBackend`, feature `postgres`; the password from
///   `PGPASSWORD` or `~/.pgpass`, never the URL).
///
/// A malformed URL or an unknown scheme gives [`Error::InvalidInput`]. A URL
/// with credentials in it (`s3://key:secret@bucket`) is refused without
/// echoing it, so the credentials never reach an error message or a log.
pub async fn open(url: &str) -> Result<Arc<dyn StateBackend>> {
    open_with(url, OpenOptions::default()).await
}

/// Opens a backend from a URL (see [`open`]) with `options`.
pub async fn open_with(url: &str, options: OpenOptions) -> Result<Arc<dyn StateBackend>> {
    Ok(open_store(url, options).await?.backend())
}

/// Opens a backend from a URL like [`open_with`], keeping its concrete type.
pub async fn open_store(url: &str, options: OpenOptions) -> Result<Store> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::invalid(
            "backend URL is empty; use memory://, file:///path, s3://bucket/prefix or postgres://user@host/db",
        ));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return open_postgres(url).await;
    }
    if has_userinfo(url) {
        return Err(Error::invalid(
            "backend URL must not contain credentials (user:password@); \
             give S3 credentials through the AWS_* environment variables",
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        if url.contains(':') && !url.starts_with('/') && !url.starts_with('.') {
            // `postgres:/user:secret@db`: one slash short, and maybe a
            // password in it; such a URL is not echoed.
            let shown = if url.contains('@') {
                "(not shown: it has an '@')".to_string()
            } else {
                format!("\"{url}\"")
            };
            return Err(Error::invalid(format!(
                "backend URL {shown} is neither scheme://... nor a path; \
                 use memory://, file:///path, s3://bucket/prefix or postgres://user@host/db"
            )));
        }
        return Ok(Store::Local(LocalBackend::open(url)?));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "memory" | "mem" => {
            if !rest.trim_matches('/').is_empty() {
                return Err(Error::invalid(format!(
                    "backend URL \"{url}\": memory:// takes no path"
                )));
            }
            Ok(Store::Other(Arc::new(tenancy_core::MemoryBackend::new())))
        }
        "file" => Ok(Store::Local(LocalBackend::open(file_path(url, rest)?)?)),
        "s3" => open_s3(url, rest, options).await,
        other => Err(Error::invalid(format!(
            "backend URL \"{url}\" has unsupported scheme \"{other}\"; \
             use memory://, file:///path, s3://bucket/prefix or postgres://user@host/db"
        ))),
    }
}

/// `postgres://user@host/db`: the database (feature `postgres`).
#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Store> {
    Ok(Store::Other(Arc::new(
        postgres::PostgresBackend::open(url).await?,
    )))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Store> {
    Err(Error::not_implemented(
        "postgres:// backends: this build of tenancy has no PostgreSQL support (build with --features postgres)",
    ))
}

/// The directory of a `file://` URL: `file:///abs` is absolute (percent
/// escapes decoded), `file://rel/path` is relative to the working directory.
/// True when the URL's authority part carries `user[:password]@`.
fn has_userinfo(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
        .unwrap_or(false)
}

fn file_path(url: &str, rest: &str) -> Result<std::path::PathBuf> {
    if rest.is_empty() {
        return Err(Error::invalid(format!(
            "backend URL \"{url}\" names no directory"
        )));
    }
    if rest.starts_with('/') {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("backend URL \"{url}\": {e}")))?;
        parsed.to_file_path().map_err(|()| {
            Error::invalid(format!(
                "backend URL \"{url}\" is not a local absolute path"
            ))
        })
    } else if rest.starts_with("localhost/") {
        file_path(url, &rest["localhost".len()..])
    } else {
        Ok(std::path::PathBuf::from(rest))
    }
}

/// Splits `bucket/prefix` of an `s3://` URL.
fn s3_location(url: &str, rest: &str) -> Result<(String, Option<String>)> {
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (rest, ""),
    };
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(Error::invalid(format!(
            "backend URL \"{url}\": \"{bucket}\" is not a valid bucket name \
             (3-63 lowercase letters, digits, '-' or '.')"
        )));
    }
    if prefix.is_empty() {
        return Ok((bucket.to_string(), None));
    }
    tenancy_core::StateKey::new(prefix)
        .map_err(|e| Error::invalid(format!("backend URL \"{url}\": bad prefix: {e}")))?;
    Ok((bucket.to_string(), Some(prefix.to_string())))
}

#[cfg(feature = "s3")]
async fn open_s3(url: &str, rest: &str, options: OpenOptions) -> Result<Store> {
    let (bucket, prefix) = s3_location(url, rest)?;
    let backend = ObjectStoreBackend::s3(S3Config::from_env(bucket, prefix.as_deref()))?;
    let backend = match options.probe {
        Probe::Lazy => backend,
        Probe::Now => {
            backend.probe_conditional_writes().await?;
            backend
        }
        Probe::Assume => backend.assume_probed(),
    };
    Ok(Store::Object(backend))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(url: &str, rest: &str, _: OpenOptions) -> Result<Store> {
    s3_location(url, rest)?;
    Err(Error::not_implemented(format!(
        "backend URL \"{url}\": S3 support is not built in; build tenancy-state with --features s3"
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_in_urls_are_refused_without_echo() {
        for url in [
            "s3://AKIAXXX:supersecret@bucket/p",
            "file://user@localhost/tmp/x",
        ] {
            let err = open(url).await.expect_err("refused");
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                !msg.contains("supersecret") && !msg.contains("AKIA") && !msg.contains("user@"),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn urls() {
        assert_eq!(open("memory://").await.unwrap().name(), "memory");
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("a b");
        let u = url::Url::from_file_path(&abs).unwrap();
        assert_eq!(open(u.as_str()).await.unwrap().name(), "local");
        assert!(abs.is_dir(), "file:// URL with an escaped space");
        let bare = dir.path().join("bare");
        open(bare.to_str().unwrap()).await.unwrap();
        assert!(bare.is_dir());
        for bad in [
            "",
            "ftp://x",
            "memory://junk",
            "s3://",
            "s3://B",
            "s3://bucket/../x",
            "file://",
            "c:x",
        ] {
            let err = open(bad).await.unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}: {err}");
        }
    }

    #[cfg(not(feature = "s3"))]
    #[tokio::test]
    async fn s3_needs_the_feature() {
        let err = open("s3://bucket/p").await.unwrap_err();
        assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
        assert!(err.to_string().contains("--features s3"), "{err}");
    }
}
