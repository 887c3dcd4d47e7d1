//! tenancy-cli: the `tenancy` command-line tool for admins and tenant teams.
//!
//! [`run`] is the whole program; [`run_with`] runs it on a given argument
//! list and [`Io`] (streams, environment, prompts) and returns the exit code,
//! so tests can drive it in-process. Handlers live in [`commands`] and take
//! the registry, backend and lock manager as trait objects ([`Services`]).
//!
//! Exit codes: see [`exit`], `tenancy help exit-codes` and `tenancy --help`.

mod cli;
mod commands;
mod exit;
mod home;
mod io;
mod output;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use serde_json::json;
use tenancy_core::credentials::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};
use tenancy_core::{Clock, LockManager, SystemClock, TenantRegistry};
use tenancy_lock::StoreLockManager;
use tenancy_state::StoreRegistry;

use crate::commands::{Ctx, Services, Target};
pub use crate::io::Io;

use crate::cli::{
    AdminCommand, AuditCommand, Cli, Command, CompletionShell, KeyCommand, LockCommand,
    LockForceArgs, LockListArgs, OutputFormat, StateCommand, TenantCommand,
};
use crate::commands::{admin, key, lock, session, state, tenant};
use crate::exit::{error_code, exit_code, one_line, CliError, OK};
use crate::home::{create_private_dir, Home, SessionSlot};
use crate::io::Cancelled;
use crate::output::{paint, Out, Style};

/// Runs the CLI on the process's arguments, streams and environment; returns the exit code.
pub fn run() -> i32 {
    let mut io = Io::process();
    run_with(std::env::args_os(), &mut io)
}

/// Runs the CLI on `args` (the first is the program name) and `io`; returns
/// the exit code. The backend is opened from `--backend`, `TENANCY_BACKEND`
/// or the default under `TENANCY_HOME`.
pub fn run_with<I, T>(args: I, io: &mut Io) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_inner(args, io, None)
}

/// Like [`run_with`], but on already built `services` (for tests, e.g. on a
/// shared in-memory backend); sessions are bound to `backend_label` instead
/// of a backend URL.
#[cfg(test)]
pub(crate) fn run_with_services<I, T>(
    args: I,
    io: &mut Io,
    services: &Services,
    backend_label: &str,
) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_inner(args, io, Some((services, backend_label)))
}

fn run_inner<I, T>(args: I, io: &mut Io, preset: Option<(&Services, &str)>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(topic) = help_topic(&args) {
        return print_topic(io, topic);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => normalize(cli),
        Err(e) => {
            let code = e.exit_code();
            if let Some(help) = missing_subcommand_help(&e) {
                // A bare `tenancy`, `tenancy tenant`, ...: that command's
                // help, formatted.
                let rendered = if io.stderr_color() {
                    help.ansi().to_string()
                } else {
                    help.to_string()
                };
                let _ = write!(io.stderr, "{rendered}");
                return exit::USAGE;
            }
            if e.use_stderr() {
                let color = io.stderr_color();
                let _ = writeln!(io.stderr, "{}", clap_one_line(&e, color));
            } else {
                // --help and --version: print as clap renders them.
                let rendered = if io.stdout_color() {
                    e.render().ansi().to_string()
                } else {
                    e.render().to_string()
                };
                let _ = write!(io.stdout, "{rendered}");
            }
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(io.stderr, "error: cannot start the async runtime: {e}");
            return exit::OTHER;
        }
    };
    let json_errors = cli.output == OutputFormat::Json;
    let result = runtime.block_on(dispatch(cli, io, preset));
    let flushed = io.stdout.flush();
    match result.and_then(|()| flushed.map_err(anyhow::Error::from)) {
        Ok(()) => OK,
        // The reader stopped reading (`| head`): quiet, like ripgrep.
        Err(e) if is_broken_pipe(&e) => OK,
        // A declined confirmation: nothing went wrong.
        Err(e) if e.chain().any(|c| c.is::<Cancelled>()) => {
            let _ = writeln!(io.stderr, "Cancelled; nothing changed.");
            OK
        }
        Err(e) => {
            let e = explain_missing_s3_credentials(e, io);
            let code = exit_code(&e);
            if json_errors {
                // Scripts read one JSON document on stderr.
                let body = json!({ "error": {
                    "code": error_code(&e),
                    "message": one_line(&e),
                    "exit_code": code,
                }});
                let _ = writeln!(io.stderr, "{body}");
            } else {
                let color = io.stderr_color();
                let _ = writeln!(
                    io.stderr,
                    "{} {}",
                    paint(color, Style::Red, "error:"),
                    one_line(&e)
                );
            }
            code
        }
    }
}

/// The help topic `args` ask for: `tenancy [global options] help TOPIC`
/// with a topic of [`cli::HELP_TOPICS`]; `None` for anything else (other
/// `help` invocations are clap's).
fn help_topic(args: &[OsString]) -> Option<&'static str> {
    let mut words = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        let a = a.to_str()?;
        match a {
            "--backend" | "--output" | "-o" => {
                rest.next();
            }
            _ if a.starts_with("--backend=") || a.starts_with("--output=") => {}
            _ if a.starts_with("-o") && a.len() > 2 => {}
            _ => words.push(a),
        }
    }
    match words.as_slice() {
        ["help", topic] => cli::HELP_TOPICS
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, text)| *text),
        _ => None,
    }
}

/// Prints a help topic on stdout (exit 0, or quiet on a closed pipe).
fn print_topic(io: &mut Io, text: &str) -> i32 {
    let _ = writeln!(io.stdout, "{text}");
    let _ = io.stdout.flush();
    OK
}

/// One value per option: an id given by position or by its old flag ends
/// up in the field the handlers read.
fn normalize(mut cli: Cli) -> Cli {
    match &mut cli.command {
        Command::Login(args) => args.tenant = args.tenant.take().or(args.id.take()),
        Command::Lock(LockCommand::List(args)) => {
            args.tenant = args.tenant.take().or(args.id.take())
        }
        Command::Tenant(TenantCommand::Init(args)) => args.id = args.id.take().or(args.name.take()),
        _ => {}
    }
    cli
}

/// The help of the command a "requires a subcommand" error is about
/// (`'tenancy tenant' requires a subcommand`), or `None` for other errors.
fn missing_subcommand_help(e: &clap::Error) -> Option<clap::builder::StyledStr> {
    use clap::error::ErrorKind;
    match e.kind() {
        // clap rendered the help already
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => return Some(e.render()),
        ErrorKind::MissingSubcommand => {}
        _ => return None,
    }
    let text = e.render().to_string();
    // The error names the command path in quotes; help is the default.
    let path = text.split('\'').nth(1).unwrap_or("tenancy");
    let mut cmd = Cli::command();
    cmd.build();
    let mut at = &mut cmd;
    for name in path.split_whitespace().skip(1) {
        at = at.find_subcommand_mut(name)?;
    }
    Some(at.render_help())
}

/// A clap usage error as one line: the complaint, then the usage of the command.
fn clap_one_line(e: &clap::Error, color: bool) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim().to_string());
        } else if !line.starts_with("For more information") {
            parts.push(line.to_string());
        }
    }
    let mut msg = parts.join(" ");
    if let Some(rest) = msg.strip_prefix("error:") {
        msg = rest.trim().to_string();
    }
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let usage = usage.map(|u| format!("; usage: {u}")).unwrap_or_default();
    format!(
        "{} {msg}{usage} (more with --help)",
        paint(color, Style::Red, "error:")
    )
}

/// S3 without credentials: the AWS client falls back to the EC2 instance
/// metadata endpoint, and its failure says nothing useful. Name the
/// variables instead.
fn explain_missing_s3_credentials(e: anyhow::Error, io: &Io) -> anyhow::Error {
    let from_metadata = e.chain().any(|c| c.to_string().contains("169.254.169.254"));
    let missing: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .into_iter()
        .filter(|v| io.var(v).is_none())
        .collect();
    if !from_metadata || missing.is_empty() {
        return e;
    }
    CliError::new(
        exit::UNAUTHORIZED,
        format!(
            "no S3 credentials: {} not set (and no EC2 instance role answered); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus AWS_REGION, and AWS_ENDPOINT for an S3-compatible server",
            missing.join(" and ")
        ),
    )
    .into()
}

/// True when stdout was closed by the reader (e.g. `tenancy ... | head`):
/// nothing more to say.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The bcrypt cost for new hashes: `TENANCY_BCRYPT_COST`, default 10.
pub(crate) fn bcrypt_cost(io: &Io) -> anyhow::Result<u32> {
    match io.var("TENANCY_BCRYPT_COST") {
        None => Ok(DEFAULT_BCRYPT_COST),
        Some(v) => match v.parse::<u32>() {
            Ok(c) if (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&c) => Ok(c),
            _ => Err(CliError::usage(format!(
                "TENANCY_BCRYPT_COST=\"{}\" must be a number from {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST}",
                v.escape_debug()
            ))
            .into()),
        },
    }
}

/// The accepted backend forms, for refusals.
const BACKEND_FORMS: &str = "use file:///abs/path (or an absolute or ./relative path), s3://bucket/prefix, postgres://user@host/db, or https://host of a tenancy-server";

/// The backend URL: `--backend`, else `TENANCY_BACKEND`, else the backend
/// of the session `slot` names (admin commands the admin session's, tenant
/// commands the tenant session's: a login remembers where it was made),
/// else `file://$TENANCY_HOME/data`.
///
/// Only `init` (`creating`) may name a local store that does not exist
/// yet; every other command refuses a missing directory instead of
/// creating one. Unknown schemes, bare words, `file://host/...`, URLs with
/// credentials and `memory://` (it would live for one process, so every
/// command would start on an empty store) are refused with the accepted
/// forms.
pub(crate) fn backend_url(
    flag: Option<&str>,
    io: &Io,
    home: &Home,
    slot: Option<SessionSlot>,
    creating: bool,
) -> anyhow::Result<String> {
    let given = flag
        .filter(|s| !s.is_empty())
        .or_else(|| io.var("TENANCY_BACKEND"));
    let remembered = match (given, slot) {
        (None, Some(slot)) => home.load(slot).ok().flatten().map(|f| f.backend),
        _ => None,
    };
    let raw = match given.map(str::to_string).or(remembered) {
        Some(u) => u,
        None => {
            let dir = home.data_dir();
            if creating {
                home.ensure_dir()?;
                create_private_dir(&dir)?;
            }
            file_url(&dir)?
        }
    };
    let shown = || {
        raw.chars()
            .take(200)
            .collect::<String>()
            .escape_debug()
            .to_string()
    };
    // A path means local files; a bare word is more likely a mistake.
    let raw = if raw.contains("://") {
        raw.clone()
    } else if raw.starts_with('/') || raw.starts_with("./") || raw.starts_with("../") {
        let path = std::path::Path::new(&raw);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .context("finding the current directory for a relative backend path")?
                .join(path)
        };
        file_url(&abs)?
    } else {
        return Err(CliError::usage(format!(
            "the backend \"{}\" is not a URL or a path; {BACKEND_FORMS}",
            shown()
        ))
        .into());
    };
    let parsed = url::Url::parse(&raw).map_err(|e| {
        CliError::usage(format!(
            "the backend \"{}\" is not a URL ({e}); {BACKEND_FORMS}",
            shown()
        ))
    })?;
    let postgres = matches!(parsed.scheme(), "postgres" | "postgresql");
    if parsed.password().is_some() {
        return Err(CliError::usage(if postgres {
            "the backend URL must not carry a password; set PGPASSWORD or use a password file (~/.pgpass)"
        } else {
            "the backend URL must not carry credentials; use the AWS_* environment variables for S3, or log in to a server"
        })
        .into());
    }
    if !postgres && !parsed.username().is_empty() {
        return Err(CliError::usage(
            "the backend URL must not carry credentials; use the AWS_* environment variables for S3, or log in to a server",
        )
        .into());
    }
    match parsed.scheme() {
        "file" => {
            if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(CliError::usage(format!(
                    "the backend \"{}\" names a host, not a path (file://{} is host {0:?}); use three slashes for an absolute path: file:///abs/path",
                    shown(),
                    parsed.host_str().unwrap_or_default()
                ))
                .into());
            }
            let path = parsed.to_file_path().map_err(|()| {
                CliError::usage(format!("the backend \"{}\" is not a local path; {BACKEND_FORMS}", shown()))
            })?;
            if !creating && !path.exists() {
                return Err(tenancy_core::Error::not_found(format!(
                    "no store at {raw}: {} does not exist; create one with `tenancy --backend {raw} init`, or check the path",
                    path.display()
                ))
                .into());
            }
        }
        "s3" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(CliError::usage(format!(
                    "the backend \"{}\" names no bucket; use s3://bucket/prefix",
                    shown()
                ))
                .into());
            }
        }
        "http" | "https" => {}
        // The user names the database role; the password comes from the environment.
        "postgres" | "postgresql" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(CliError::usage(format!(
                    "the backend \"{}\" names no host; use postgres://user@host[:port]/db",
                    shown()
                ))
                .into());
            }
        }
        "memory" => {
            return Err(CliError::usage(
                "memory:// lives only as long as one process, so every tenancy command would start on an empty store; use file:///abs/path or s3://bucket/prefix (memory:// is for the libraries and their tests)",
            )
            .into())
        }
        other => {
            return Err(CliError::usage(format!(
                "the backend scheme \"{}://\" is not one tenancy knows; {BACKEND_FORMS}",
                other.escape_debug()
            ))
            .into())
        }
    }
    // One spelling per location, so sessions match: no trailing '/'.
    Ok(raw.trim_end_matches('/').to_string())
}

/// `path` as a `file://` URL.
fn file_url(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(url::Url::from_file_path(path)
        .map_err(|()| CliError::usage(format!("cannot make a file:// URL of {}", path.display())))?
        .to_string())
}

impl Services {
    /// The registry and lock manager stored on `backend`, on the system clock.
    #[cfg(test)]
    pub(crate) fn on_backend(
        backend: Arc<dyn tenancy_core::StateBackend>,
        bcrypt_cost: u32,
    ) -> Self {
        Self::on_store(tenancy_state::Store::Other(backend), bcrypt_cost)
    }

    /// Like [`Services::on_backend`], keeping the concrete backend for `doctor`.
    pub(crate) fn on_store(store: tenancy_state::Store, bcrypt_cost: u32) -> Self {
        let backend = store.backend();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let plain: Arc<dyn TenantRegistry> = Arc::new(
            StoreRegistry::new(backend.clone())
                .with_clock(clock.clone())
                .with_bcrypt_cost(bcrypt_cost),
        );
        let (audit, audit_failures) =
            commands::audit::audited(plain, backend.clone(), clock.clone());
        let registry: Arc<dyn TenantRegistry> = Arc::new(audit.clone());
        let locks: Arc<dyn LockManager> =
            Arc::new(StoreLockManager::new(backend.clone()).with_clock(clock.clone()));
        Services {
            registry,
            backend,
            locks,
            clock,
            store,
            audit,
            audit_failures,
        }
    }

    /// Opens the backend at `url` and builds the services on it.
    pub(crate) async fn open(
        url: &str,
        bcrypt_cost: u32,
        probe: tenancy_state::Probe,
    ) -> anyhow::Result<Self> {
        let store = match tenancy_state::open_store(url, tenancy_state::OpenOptions { probe }).await
        {
            Ok(store) => store,
            // The probe's first write cannot be "not found" unless the bucket is.
            Err(e) if e.is_not_found() && url.starts_with("s3://") => {
                let bucket = url
                    .trim_start_matches("s3://")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                return Err(tenancy_core::Error::not_found(format!(
                    "bucket {bucket} does not exist (or these credentials cannot see it); create it first, then run `tenancy --backend {url} init` again"
                ))
                .into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("opening the backend {url}")))
            }
        };
        Ok(Self::on_store(store, bcrypt_cost))
    }
}

fn version(io: &mut Io, format: OutputFormat) -> anyhow::Result<()> {
    let mut backends = vec!["memory", "file"];
    if cfg!(feature = "s3") {
        backends.push("s3");
    }
    backends.extend(["http", "https"]);
    let mut out = Out::stdout(io, format);
    if out.is_json() {
        out.json(&json!({
            "name": "tenancy",
            "version": tenancy_core::TOOL_VERSION,
            "backends": backends,
        }))
    } else {
        out.line(&format!(
            "tenancy {} (backends: {})",
            tenancy_core::TOOL_VERSION,
            backends.join(", ")
        ))
    }
}

fn completions(io: &mut Io, shell: CompletionShell) -> anyhow::Result<()> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a failed write (a
    // closed pipe); the write below reports it like any other output.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tenancy", &mut script);
    io.stdout.write_all(&script)?;
    Ok(())
}

/// True for the commands that make a bcrypt hash (new admin passwords and
/// tenant secrets) on a store.
fn hashes(command: &Command) -> bool {
    matches!(
        command,
        Command::Init(_)
            | Command::Admin(AdminCommand::Passwd(_))
            | Command::Tenant(TenantCommand::Init(_) | TenantCommand::Rotate(_))
    )
}

/// True for a tenancy-server's URL (remote mode).
fn is_server_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The session whose backend a command uses when none is given.
fn session_of(command: &Command) -> Option<SessionSlot> {
    match command {
        Command::Version | Command::Completions(_) | Command::Init(_) => None,
        Command::Admin(_) | Command::Migrate(_) | Command::Doctor(_) | Command::Audit(_) => {
            Some(SessionSlot::Admin)
        }
        Command::Tenant(t) => Some(match t {
            TenantCommand::Details | TenantCommand::Usage | TenantCommand::Stacks => {
                SessionSlot::Tenant
            }
            _ => SessionSlot::Admin,
        }),
        // The admin's view of a tenant's locks.
        Command::Lock(LockCommand::List(LockListArgs {
            tenant: Some(_), ..
        }))
        | Command::Lock(LockCommand::ForceUnlock(LockForceArgs {
            tenant: Some(_), ..
        })) => Some(SessionSlot::Admin),
        Command::Key(k) => Some(if k.tenant().is_some() {
            SessionSlot::Admin
        } else {
            SessionSlot::Tenant
        }),
        Command::Logout
        | Command::Login(_)
        | Command::Session
        | Command::State(_)
        | Command::Lock(_) => Some(SessionSlot::Tenant),
    }
}

/// `logout` and `admin logout`: removes the session file; a remote
/// session is ended on its server first (when the server cannot be
/// reached, the file is removed anyway and a warning says the session
/// lives on there until it expires).
async fn logout(
    io: &mut Io,
    home: &Home,
    format: OutputFormat,
    slot: SessionSlot,
) -> anyhow::Result<()> {
    let file = home.load(slot).ok().flatten();
    let mut unended = None;
    if let Some((url, token)) = file
        .and_then(|f| f.token.map(|t| (f.backend, t)))
        .filter(|(url, _)| is_server_url(url))
    {
        let token = tenancy_core::Secret::new(token);
        let ended = match tenancy_server::client::Client::new(&url) {
            Ok(client) => match slot {
                SessionSlot::Admin => client.logout_admin(&token).await,
                SessionSlot::Tenant => {
                    client
                        .tenant(tenancy_server::client::TenantCredential::Session(token))
                        .logout()
                        .await
                }
            },
            Err(e) => Err(e),
        };
        match ended {
            // Already ended (expired, revoked, rotated): nothing left on the server.
            Ok(())
            | Err(tenancy_core::Error::Unauthorized { .. })
            | Err(tenancy_core::Error::SessionExpired { .. })
            | Err(tenancy_core::Error::CredentialsRotated { .. })
            | Err(tenancy_core::Error::Forbidden { .. })
            | Err(tenancy_core::Error::NotFound { .. }) => {}
            Err(e) => unended = Some((url, e)),
        }
    }
    let removed = home.remove(slot)?;
    let which = match slot {
        SessionSlot::Admin => "admin",
        SessionSlot::Tenant => "tenant",
    };
    if let Some((url, e)) = &unended {
        let color = io.stderr_color();
        let _ = writeln!(
            io.stderr,
            "{} could not end the session on {url} ({}); it works there until it expires unless the admin revokes it",
            paint(color, Style::Yellow, "warning:"),
            one_line(&anyhow::anyhow!(e.to_string()))
        );
    }
    let mut out = Out::stdout(io, format);
    if out.is_json() {
        out.json(&json!({ "session": which, "logged_out": removed }))
    } else if removed {
        out.line(&format!("Logged out of the {which} session."))
    } else {
        out.line(&format!("There was no {which} session."))
    }
}

async fn dispatch(cli: Cli, io: &mut Io, preset: Option<(&Services, &str)>) -> anyhow::Result<()> {
    match &cli.command {
        Command::Version => return version(io, cli.output),
        Command::Completions(args) => return completions(io, args.shell),
        _ => {}
    }
    let home = Home::from_env(io)?;
    match &cli.command {
        Command::Logout => return logout(io, &home, cli.output, SessionSlot::Tenant).await,
        Command::Admin(AdminCommand::Logout) => {
            return logout(io, &home, cli.output, SessionSlot::Admin).await
        }
        _ => {}
    }
    let opened;
    let (target, url, clock) = match preset {
        Some((services, label)) => (
            Target::Store(services),
            label.to_string(),
            services.clock.clone(),
        ),
        None => {
            let creating = matches!(cli.command, Command::Init(_));
            let url = backend_url(
                cli.backend.as_deref(),
                io,
                &home,
                session_of(&cli.command),
                creating,
            )?;
            if is_server_url(&url) {
                let client = tenancy_server::client::Client::new(&url)?;
                let clock: Arc<dyn Clock> = Arc::new(SystemClock);
                (Target::Server(client), url, clock)
            } else {
                // `init` probes the store's conditional writes and records the
                // result there; every other command works on the registry that
                // only a probed store holds, so it trusts the store without a
                // request (read-only commands write nothing).
                let probe = match &cli.command {
                    Command::Init(_) => tenancy_state::Probe::Now,
                    _ => tenancy_state::Probe::Assume,
                };
                // A bad TENANCY_BCRYPT_COST fails only the commands that hash.
                let cost = match bcrypt_cost(io) {
                    Ok(c) => c,
                    Err(e) if hashes(&cli.command) => return Err(e),
                    Err(_) => DEFAULT_BCRYPT_COST,
                };
                opened = Services::open(&url, cost, probe).await?;
                let clock = opened.clock.clone();
                (Target::Store(&opened), url, clock)
            }
        }
    };
    let mut ctx = Ctx {
        target,
        io,
        format: cli.output,
        home,
        backend_url: url,
        clock,
    };
    let ctx = &mut ctx;
    let done = run_command(ctx, cli.command).await;
    commands::audit::finish(ctx).await;
    done
}

/// Runs one command's handler.
async fn run_command(ctx: &mut Ctx<'_>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Version | Command::Completions(_) | Command::Logout => Ok(()),
        Command::Init(args) => admin::init(ctx, args).await,
        Command::Admin(command) => match command {
            AdminCommand::Login(args) => admin::login(ctx, args).await,
            AdminCommand::Logout => Ok(()),
            AdminCommand::Session => admin::session(ctx).await,
            AdminCommand::Passwd(args) => admin::passwd(ctx, args).await,
        },
        Command::Tenant(command) => match command {
            TenantCommand::Init(args) => tenant::init(ctx, args).await,
            TenantCommand::List(args) => tenant::list(ctx, args).await,
            TenantCommand::Show(args) => tenant::show(ctx, args).await,
            TenantCommand::Stats(args) => tenant::stats(ctx, args).await,
            TenantCommand::Update(args) => tenant::update(ctx, args).await,
            TenantCommand::Rotate(args) => tenant::rotate(ctx, args).await,
            TenantCommand::Suspend(args) => tenant::suspend(ctx, args).await,
            TenantCommand::Activate(args) => tenant::activate(ctx, args).await,
            TenantCommand::Delete(args) => tenant::delete(ctx, args).await,
            TenantCommand::Details => tenant::details(ctx).await,
            TenantCommand::Usage => tenant::usage(ctx).await,
            TenantCommand::Stacks => state::stacks(ctx).await,
        },
        Command::Migrate(args) => match args.into_args() {
            Some(args) => admin::migrate(ctx, args).await,
            None => Err(CliError::usage("no tenant: pass it as `tenancy migrate ID`").into()),
        },
        Command::Doctor(args) => admin::doctor(ctx, args).await,
        Command::Login(args) => session::login(ctx, args).await,
        Command::Session => session::session(ctx).await,
        Command::State(command) => match command {
            StateCommand::Put(args) => state::put(ctx, args).await,
            StateCommand::Get(args) => state::get(ctx, args).await,
            StateCommand::List => state::list(ctx).await,
            StateCommand::History(at) => state::history(ctx, at).await,
            StateCommand::Rollback(args) => state::rollback(ctx, args).await,
            StateCommand::Delete(args) => state::delete(ctx, args).await,
        },
        Command::Lock(command) => match command {
            LockCommand::Acquire(args) => lock::acquire(ctx, args).await,
            LockCommand::Release(args) => lock::release(ctx, args).await,
            LockCommand::Renew(args) => lock::renew(ctx, args).await,
            LockCommand::List(args) => lock::list(ctx, args).await,
            LockCommand::ForceUnlock(args) => lock::force_unlock(ctx, args).await,
        },
        Command::Key(command) => match command {
            KeyCommand::Create(args) => key::create(ctx, args).await,
            KeyCommand::List(args) => key::list(ctx, args).await,
            KeyCommand::Revoke(args) => key::revoke(ctx, args).await,
            KeyCommand::Rotate(args) => key::rotate(ctx, args).await,
        },
        Command::Audit(command) => match command {
            AuditCommand::List(args) => commands::audit::list(ctx, args).await,
            AuditCommand::Verify(args) => commands::audit::verify(ctx, args).await,
            AuditCommand::Head(args) => commands::audit::head(ctx, args).await,
            AuditCommand::Prune(args) => commands::audit::prune(ctx, args).await,
        },
    }
}
