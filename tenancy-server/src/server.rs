//! The binary's command line, startup (backend, registry bootstrap, admin
//! token) and graceful serving. `main.rs` only calls into here and prints.
//!
//! # The admin token
//!
//! There is one admin credential, the registry's (a bcrypt hash with a
//! generation, in `tenants.yaml`); the server never keeps a second one.
//!
//! - `TENANCY_ADMIN_TOKEN` or `--admin-token-file` gives a token of 8 to 72
//!   bytes (anything else is a startup error: bcrypt would silently read
//!   only the first 72). On a store without a registry, the registry is
//!   bootstrapped with it. On a bootstrapped store it must match the stored
//!   credential, or the server refuses to start and says how to change it
//!   (`PUT /v1/admin/credential`, `tenancy admin passwd`).
//! - With neither, on a store without a registry, a token is generated, the
//!   registry bootstrapped with its hash, and the token handed to the caller
//!   to print once. The listeners are bound before that, so a start that
//!   cannot listen never generates a token nobody sees. On later starts the
//!   registry's credential is used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use tenancy_core::credentials::{
    generate_secret, DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST,
};
use tenancy_core::{Error, Secret, TenantRegistry};
use tenancy_state::StoreRegistry;
use tokio::net::TcpListener;

use crate::app_state::{AppState, ServerConfig, SharedStores};
use crate::auth::AuthConfig;
pub use crate::listener::ConnLimits;

/// The command line of `tenancy-server`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tenancy-server",
    version,
    about = "The tenancy multi-tenant HTTP API"
)]
pub struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "TENANCY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Backend URL: `file:///path`, `memory://`, `s3://bucket/prefix`,
    /// `postgres://user@host/db` (password from `PGPASSWORD` or `~/.pgpass`)
    /// [default: local files under $TENANCY_HOME/data, TENANCY_HOME defaulting to ~/.tenancy].
    #[arg(long, env = "TENANCY_BACKEND")]
    pub backend: Option<String>,
    /// A file holding the admin token (else TENANCY_ADMIN_TOKEN, else generated on first start).
    #[arg(long, env = "TENANCY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Seconds a cached tenant credential is trusted before its record is re-read:
    /// the bound for changes made by other replicas or the CLI.
    #[arg(long, env = "TENANCY_AUTH_REFRESH_SECS", default_value_t = 5)]
    pub auth_refresh_secs: u64,
    /// The largest request body, in bytes.
    #[arg(long, env = "TENANCY_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Seconds before a request is answered 503.
    #[arg(long, env = "TENANCY_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Seconds between two reconciles of every tenant's jobs and workers with
    /// its quota reservations (also run at start and when a quota is refused).
    #[arg(long, env = "TENANCY_RECONCILE_INTERVAL_SECS", default_value_t = 60)]
    pub reconcile_interval_secs: u64,
    /// Seconds a half-done job or worker step must be old before the
    /// reconciler finishes or undoes it.
    #[arg(long, env = "TENANCY_RECONCILE_GRACE_SECS", default_value_t = 60)]
    pub reconcile_grace_secs: u64,
    /// Seconds a client may take to send a complete request head.
    #[arg(long, env = "TENANCY_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection without a request in flight may stay silent.
    #[arg(long, env = "TENANCY_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// The most client connections open at once (beyond it, new ones wait).
    #[arg(long, env = "TENANCY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds shutdown waits for requests in flight before dropping them.
    #[arg(long, env = "TENANCY_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Address of the separate Prometheus listener (`/metrics` only), or
    /// `off`. Keep it off the public network: it names every tenant.
    #[arg(long, env = "TENANCY_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// Seconds a lock taken through the stack routes (Terraform) lasts; every
    /// save made under it extends it again (1 to 86400).
    #[arg(long, env = "TENANCY_STACK_LOCK_TTL_SECS", default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub stack_lock_ttl_secs: u64,
    /// The largest stack state document a save accepts, in bytes.
    #[arg(long, env = "TENANCY_STACK_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub stack_body_limit: usize,
    /// The log format on stderr: `text` (colour only on a terminal, never
    /// with NO_COLOR or TERM=dumb) or `json` (one object per line).
    #[arg(long, env = "TENANCY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of the server's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's json formatter).
    Json,
}

impl Args {
    /// Checks the listen addresses before anything starts: each must be
    /// `HOST:PORT` (an IP address or a host name, and a port number), or
    /// `off` for the metrics listener. The error is one line, for a usage
    /// error (exit 2).
    pub fn check(&self) -> Result<(), String> {
        check_addr("--listen", &self.listen)?;
        match self.metrics_listen.trim() {
            "off" | "" => Ok(()),
            addr => check_addr("--metrics-listen", addr),
        }
    }

    /// The connection limits the flags give.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        }
    }
}

/// `HOST:PORT` with a port number and a host that is an IP address (IPv6
/// in brackets) or a DNS name; no lookup is made here.
fn check_addr(flag: &str, value: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{flag} {:?} is not an address: expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
            value.escape_debug().to_string()
        ))
    };
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad();
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && !host.starts_with(['-', '.']);
    if !host_ok || port.parse::<u16>().is_err() {
        return bad();
    }
    Ok(())
}

/// A server ready to serve: bound, bootstrapped, with its router.
#[derive(Debug)]
pub struct Prepared {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    limits: ConnLimits,
    router: Router,
    state: AppState,
    generated_admin_token: Option<Secret>,
    backend: String,
}

impl Prepared {
    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound address of the metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.metrics_listener.as_ref().map(TcpListener::local_addr)
    }

    /// The admin token generated at this start, to be shown once.
    pub fn generated_admin_token(&self) -> Option<&Secret> {
        self.generated_admin_token.as_ref()
    }

    /// The backend URL in use.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then finishes the requests in flight
    /// within the drain timeout (see `listener.rs` for the connection
    /// limits). The reconciler and the metrics listener run beside it.
    pub async fn serve(self) -> std::io::Result<()> {
        use futures::FutureExt;
        let stop = shutdown_signal().shared();
        let reconciler = crate::reconcile::spawn(self.state.clone());
        let metrics = self.metrics_listener.map(|l| {
            let router = crate::routes::metrics_app(self.state.clone());
            tokio::spawn(crate::listener::serve(l, router, self.limits, stop.clone()))
        });
        let served = crate::listener::serve(self.listener, self.router, self.limits, stop).await;
        reconciler.abort();
        // The refusals counted since their last entry (see tenancy_state::audited).
        if let Some(audit) = self.state.audit() {
            audit.flush_all_refusals().await;
        }
        if let Some(m) = metrics {
            m.abort();
        }
        served
    }
}

/// The default backend: local files under `$TENANCY_HOME/data`
/// (`TENANCY_HOME` defaults to `~/.tenancy`).
pub fn default_backend() -> anyhow::Result<String> {
    let home = match std::env::var_os("TENANCY_HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".tenancy"),
            None => bail!("neither TENANCY_HOME nor HOME is set; pass --backend"),
        },
    };
    let dir = std::path::absolute(home.join("data")).context("cannot resolve TENANCY_HOME")?;
    dir.to_str()
        .map(str::to_string)
        .context("TENANCY_HOME is not valid UTF-8; pass --backend")
}

/// The bcrypt cost from `TENANCY_BCRYPT_COST` (default 10).
pub fn bcrypt_cost() -> anyhow::Result<u32> {
    match std::env::var("TENANCY_BCRYPT_COST") {
        Err(_) => Ok(DEFAULT_BCRYPT_COST),
        Ok(v) => {
            let cost: u32 = v
                .trim()
                .parse()
                .with_context(|| format!("TENANCY_BCRYPT_COST \"{v}\" is not a number"))?;
            if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
                bail!(
                    "TENANCY_BCRYPT_COST {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}"
                );
            }
            Ok(cost)
        }
    }
}

fn given_admin_token(args: &Args) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &args.admin_token_file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
        let token = raw.trim();
        if token.is_empty() {
            bail!("the admin token file {} is empty", path.display());
        }
        return Ok(Some(Secret::new(token)));
    }
    match std::env::var("TENANCY_ADMIN_TOKEN") {
        Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
        _ => Ok(None),
    }
}

/// Opens the backend, bootstraps the registry if missing, settles the admin
/// token and binds the listener.
pub async fn prepare(args: Args) -> anyhow::Result<Prepared> {
    // Bind first: a start that cannot listen must fail before it bootstraps
    // a store (and generates an admin token nobody would see).
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics_listener = match args.metrics_listen.trim() {
        "off" | "" => None,
        addr => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for metrics on {addr} (--metrics-listen; `off` disables it)")
        })?),
    };
    let url = match &args.backend {
        Some(u) => u.clone(),
        None => default_backend()?,
    };
    let backend = tenancy_state::open(&url)
        .await
        .with_context(|| format!("cannot open the backend {url}"))?;
    let cost = bcrypt_cost()?;
    let registry = Arc::new(
        StoreRegistry::new(backend.clone())
            .with_bcrypt_cost(cost)
            .with_blocking(Arc::new(crate::TokioBlocking)),
    );
    let given = given_admin_token(&args)?;
    if let Some(t) = &given {
        let n = t.expose().len();
        if !tenancy_state::registry::ADMIN_PASSWORD_BYTES.contains(&n) {
            bail!(
                "the admin token is {n} bytes; it must be 8 to 72 bytes (bcrypt reads no more, so a longer one would be cut)"
            );
        }
    }

    let mut generated = None;
    if !registry
        .is_bootstrapped()
        .await
        .context("cannot read the registry")?
    {
        let token = match &given {
            Some(t) => t.clone(),
            None => generate_secret("adm").context("cannot generate an admin token")?,
        };
        // Recorded in the admin log, as the server itself.
        let audited = tenancy_state::audited::Audited::new(registry.clone(), backend.clone())
            .with_context(tenancy_state::audited::AuditContext::server(
                tenancy_core::audit::Actor::system(),
                None,
            ));
        match audited.bootstrap(&token).await {
            Ok(()) => {
                tracing::info!(backend = %url, "bootstrapped a new tenant registry");
                if audited.unrecorded() > 0 {
                    tracing::error!(
                        "the registry was bootstrapped but its audit entry could not be written"
                    );
                }
                if given.is_none() {
                    generated = Some(token);
                }
            }
            // Another replica bootstrapped it meanwhile: use its credential.
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).context("cannot bootstrap the registry"),
        }
    }

    // Long lock keys of earlier versions leave the shared place, so that no
    // tenant's lock listing reads another tenant's lock objects.
    let moved = tenancy_lock::StoreLockManager::new(backend.clone())
        .migrate_long_keys()
        .await
        .context("cannot move long lock keys to their tenants' places")?;
    if moved > 0 {
        tracing::info!(
            moved,
            "moved long-key lock objects to their tenants' places"
        );
    }

    let config = ServerConfig {
        body_limit: args.body_limit,
        request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        auth: AuthConfig {
            refresh_interval: Duration::from_secs(args.auth_refresh_secs),
            ..AuthConfig::default()
        },
        reconcile_interval: Duration::from_secs(args.reconcile_interval_secs.max(1)),
        reconcile_grace: Duration::from_secs(args.reconcile_grace_secs),
        stack_lock_ttl: Duration::from_secs(args.stack_lock_ttl_secs),
        stack_body_limit: args.stack_body_limit,
        ..ServerConfig::default()
    };
    let registry_dyn: Arc<dyn TenantRegistry> = registry.clone();
    if let (Some(token), None) = (&given, &generated) {
        match registry.verify_admin(token).await {
            Ok(()) => {}
            Err(Error::Unauthorized { .. }) => bail!(
                "the given admin token (TENANCY_ADMIN_TOKEN or --admin-token-file) does not match this store's admin credential; \
                 start without it to use the stored one, or change the stored one first \
                 (`tenancy admin passwd`, or PUT /v1/admin/credential)"
            ),
            Err(e) => return Err(e).context("cannot check the admin token"),
        }
    }
    let state = AppState::builder(registry_dyn, Arc::new(SharedStores::new(backend.clone())))
        .audit(backend)
        .config(config)
        .build()
        .context("cannot build the server state")?;
    let router = crate::app(state.clone());
    Ok(Prepared {
        listener,
        metrics_listener,
        limits: args.conn_limits(),
        router,
        state,
        generated_admin_token: generated,
        backend: url,
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or
/// JSON lines. Text has ANSI colour only when stderr is a terminal, `TERM`
/// is not `dumb` and `NO_COLOR` is unset or empty. Credentials are never
/// logged: spans carry method, route, path, request id and, once
/// authenticated, the tenant id.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(colour_allowed(
                std::io::stderr().is_terminal(),
                std::env::var_os("TERM").as_deref(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
    };
}

/// Whether text logs may use ANSI colour: on a terminal, with a `TERM`
/// other than `dumb`, and without a non-empty `NO_COLOR` (no-color.org).
fn colour_allowed(
    terminal: bool,
    term: Option<&std::ffi::OsStr>,
    no_color: Option<&std::ffi::OsStr>,
) -> bool {
    terminal && term.is_none_or(|t| t != "dumb") && no_color.is_none_or(|v| v.is_empty())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn listen_addresses_are_host_and_port() {
        for ok in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "[::1]:8080",
            "localhost:9464",
            "tenancy.internal:443",
        ] {
            assert!(check_addr("--listen", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "8080",
            "localhost",
            "127.0.0.1:",
            "127.0.0.1:99999",
            ":8080",
            "http://127.0.0.1:8080",
            "host name:80",
            "-x:80",
            "::1:8080x",
        ] {
            let Err(e) = check_addr("--listen", bad) else {
                panic!("{bad:?} was accepted");
            };
            assert!(e.starts_with("--listen ") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_or_a_dumb_term() {
        let term = Some(OsStr::new("xterm-256color"));
        assert!(colour_allowed(true, term, None));
        assert!(colour_allowed(true, None, Some(OsStr::new(""))));
        assert!(!colour_allowed(false, term, None));
        assert!(!colour_allowed(true, Some(OsStr::new("dumb")), None));
        assert!(!colour_allowed(true, term, Some(OsStr::new("1"))));
    }
}
