//! The command tree: every command, flag and help text of `tenancy` (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenancy_core::{LockId, LockKey, Plan, StateKey, TenantId, TenantStatus};

/// Shown at the end of `tenancy --help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other error (backend, I/O, corrupt data)
  2  usage: bad flags, bad ids, bad input
  3  not logged in, unauthorized, session expired, credentials rotated
  4  forbidden: tenant suspended, expired or deleted; wrong session mode
  5  not found
  6  conflict or lock held
  7  quota exceeded
  8  doctor: problems remain (after --repair: the ones it cannot fix)

Environment:
  TENANCY_HOME            where sessions and the default store live (default ~/.tenancy)
  TENANCY_BACKEND         backend URL, like --backend
  TENANCY_ADMIN_PASSWORD  admin password for `init` and `admin login`
  TENANCY_NEW_ADMIN_PASSWORD  the new admin password for `admin passwd`
  TENANCY_TENANT          tenant id for `login`
  TENANCY_SECRET          tenant secret for `login`
  TENANCY_BCRYPT_COST     bcrypt cost for new hashes (default 10; 4 is fast, for tests)
  NO_COLOR                never colour the output (wins over CLICOLOR_FORCE)
  CLICOLOR_FORCE          colour even when not on a terminal (not with 0)
  CLICOLOR                0: no colour on a terminal either
  TERM                    dumb: no colour
  COLUMNS                 the terminal width tables fit (default: the terminal's own;
                          into a pipe tables are never cut)
  AWS_*                   endpoint, region and credentials for s3:// backends";

/// `tenancy`: many isolated tenants on one shared store.
#[derive(Debug, Parser)]
#[command(
    name = "tenancy",
    version,
    about = "Many isolated tenants on one shared store: an admin manages tenants, teams keep state and locks",
    after_help = EXIT_CODES_HELP,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// Backend: file:///abs/path (or a path), s3://bucket/prefix, or a
    /// tenancy-server's https://host (remote mode)
    /// [env: TENANCY_BACKEND] [default: the session's backend, else
    /// file://$TENANCY_HOME/data]
    #[arg(long, global = true, value_name = "URL")]
    pub backend: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned tables and plain lines.
    Table,
    /// JSON documents, one per command.
    Json,
}

/// Shells `completions` can write a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompletionShell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the version of tenancy.
    Version,
    /// Write a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Bootstrap the registry on the backend; refuses if one exists.
    Init(InitArgs),
    /// Admin sessions: login, logout, session.
    #[command(subcommand, arg_required_else_help = true)]
    Admin(AdminCommand),
    /// Tenants: admin commands (init, list, show, ...) and a tenant's own view
    /// (details, usage, stacks).
    #[command(subcommand, arg_required_else_help = true)]
    Tenant(TenantCommand),
    /// Admin: copy a single-tenant `stacks/` tree on the backend into a tenant.
    Migrate(MigrateArgs),
    /// Admin: report every inconsistency in the store (damaged records,
    /// crash leftovers, reservations without owners, file modes, the S3
    /// probe); exit 8 while problems remain.
    Doctor(DoctorArgs),
    /// Log in as a tenant (session lasts 7 days).
    Login(LoginArgs),
    /// Remove the tenant session.
    Logout,
    /// Show and check the tenant session.
    Session,
    /// Tenant state with history.
    #[command(subcommand, arg_required_else_help = true)]
    State(StateCommand),
    /// Tenant locks: leased, with fencing tokens.
    #[command(subcommand, arg_required_else_help = true)]
    Lock(LockCommand),
}

/// `tenancy completions SHELL`
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// `tenancy init`
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Read the new admin password from the first line of stdin
    /// (else TENANCY_ADMIN_PASSWORD, else a hidden prompt).
    #[arg(long)]
    pub admin_password_stdin: bool,
}

/// `tenancy migrate`
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The tenant to copy into.
    #[arg(long, value_name = "ID")]
    pub tenant: TenantId,
    /// The prefix of the single-tenant tree (`stacks`, or one stack:
    /// `stacks/app`; the tree below its last `stacks` segment is kept).
    /// The store's own prefixes (registry, archive, locks, tenants, ...)
    /// are refused.
    #[arg(long, value_name = "PREFIX", default_value = "stacks")]
    pub from: StateKey,
    /// Show what would be copied (and the stack count against max_stacks);
    /// write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Copy even when the new stacks take the tenant over its max_stacks.
    #[arg(long)]
    pub force: bool,
}

/// `tenancy doctor`
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Fix what is safe to fix: delete orphan index entries, roll back
    /// half-created tenants, finish incomplete ones, release reservations
    /// nobody owns, remove old temp files, make files private, run the probe.
    #[arg(long)]
    pub repair: bool,
}

/// `tenancy login`
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The tenant id [env: TENANCY_TENANT] (prompted on a terminal).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
    /// Read the secret from the first line of stdin
    /// (else TENANCY_SECRET, else a hidden prompt).
    #[arg(long)]
    pub secret_stdin: bool,
}

/// `tenancy admin ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Log in as the admin (session lasts 8 hours).
    Login(AdminLoginArgs),
    /// Remove the admin session.
    Logout,
    /// Show and check the admin session.
    Session,
    /// Change the admin password; every admin session and cached admin token ends.
    Passwd(AdminPasswdArgs),
}

/// `tenancy admin passwd`
#[derive(Debug, Args)]
pub(crate) struct AdminPasswdArgs {
    /// Read the new password from the first line of stdin
    /// (else TENANCY_NEW_ADMIN_PASSWORD, else a hidden prompt, twice).
    #[arg(long)]
    pub new_password_stdin: bool,
    /// Without an admin session: for whoever holds the store's own
    /// credentials and lost the admin password.
    #[arg(long)]
    pub reset: bool,
}

/// `tenancy admin login`
#[derive(Debug, Args)]
pub(crate) struct AdminLoginArgs {
    /// Read the admin password from the first line of stdin
    /// (else TENANCY_ADMIN_PASSWORD, else a hidden prompt).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Limit overrides settable on `tenant init` and `tenant update`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct LimitArgs {
    /// Max stacks with state.
    #[arg(long, value_name = "N")]
    pub max_stacks: Option<u64>,
    /// Max services.
    #[arg(long, value_name = "N")]
    pub max_services: Option<u64>,
    /// Monthly cost limit, in whole currency units.
    #[arg(long, value_name = "N")]
    pub monthly_cost_limit: Option<u64>,
    /// Max concurrent jobs.
    #[arg(long, value_name = "N")]
    pub max_concurrent_jobs: Option<u64>,
    /// Max workers.
    #[arg(long, value_name = "N")]
    pub max_workers: Option<u64>,
    /// Max jobs per hour.
    #[arg(long, value_name = "N")]
    pub max_jobs_per_hour: Option<u64>,
    /// Max CPU cores.
    #[arg(long, value_name = "N")]
    pub max_cpu_cores: Option<u64>,
    /// Max GPUs.
    #[arg(long, value_name = "N")]
    pub max_gpus: Option<u64>,
    /// API requests per second.
    #[arg(long, value_name = "N")]
    pub requests_per_second: Option<u64>,
    /// API request burst.
    #[arg(long, value_name = "N")]
    pub burst: Option<u64>,
    /// Max bytes stored through the server's state API.
    #[arg(long, value_name = "BYTES")]
    pub max_state_bytes: Option<u64>,
    /// Max objects stored through the server's state API.
    #[arg(long, value_name = "N")]
    pub max_state_objects: Option<u64>,
    /// Max locks held at once through the server's lock APIs.
    #[arg(long, value_name = "N")]
    pub max_locks: Option<u64>,
}

/// `tenancy tenant ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Admin: create a tenant and show its secret once.
    Init(TenantInitArgs),
    /// Admin: list tenants.
    List(TenantListArgs),
    /// Admin: show one tenant.
    Show(TenantArg),
    /// Admin: counts of tenants by status and plan.
    Stats,
    /// Admin: change a tenant's plan, profile or limits.
    Update(TenantUpdateArgs),
    /// Admin: issue a new secret; the old secret and its sessions stop working.
    Rotate(TenantRotateArgs),
    /// Admin: suspend a tenant (login and sessions refused until activated).
    Suspend(TenantSuspendArgs),
    /// Admin: activate a suspended or expired tenant.
    Activate(TenantArg),
    /// Admin: soft-delete a tenant and archive its state.
    Delete(TenantDeleteArgs),
    /// Tenant: this tenant's profile, plan and limits.
    Details,
    /// Tenant: usage against limits.
    Usage,
    /// Tenant: stacks and environments with state.
    Stacks,
}

/// `tenancy tenant init`
#[derive(Debug, Args)]
pub(crate) struct TenantInitArgs {
    /// The tenant id: lowercase letters, digits and '-', 3 to 63 characters.
    #[arg(long, value_name = "ID")]
    pub name: TenantId,
    /// Human-readable name (default: the id).
    #[arg(long, value_name = "S")]
    pub display_name: Option<String>,
    /// Contact e-mail.
    #[arg(long, value_name = "S")]
    pub email: Option<String>,
    /// The plan.
    #[arg(long, value_enum, default_value_t = PlanArg::Free)]
    pub plan: PlanArg,
    /// The secret's prefix, 2 to 8 lowercase letters (default tnc).
    #[arg(long, value_name = "P")]
    pub secret_prefix: Option<String>,
    #[command(flatten)]
    pub limits: Box<LimitArgs>,
}

/// `tenancy tenant list`
#[derive(Debug, Args)]
pub(crate) struct TenantListArgs {
    /// Only tenants with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only tenants on this plan.
    #[arg(long, value_enum)]
    pub plan: Option<PlanArg>,
}

/// The one tenant a command acts on.
#[derive(Debug, Args)]
pub(crate) struct TenantArg {
    /// The tenant id.
    pub id: TenantId,
}

/// `tenancy tenant update`
#[derive(Debug, Args)]
pub(crate) struct TenantUpdateArgs {
    /// The tenant id.
    pub id: TenantId,
    /// New plan.
    #[arg(long, value_enum)]
    pub plan: Option<PlanArg>,
    /// New display name.
    #[arg(long, value_name = "S")]
    pub display_name: Option<String>,
    /// New e-mail.
    #[arg(long, value_name = "S")]
    pub email: Option<String>,
    /// Expiry time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// Metadata entry to set (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    #[command(flatten)]
    pub limits: Box<LimitArgs>,
}

/// `tenancy tenant rotate`
#[derive(Debug, Args)]
pub(crate) struct TenantRotateArgs {
    /// The tenant id.
    pub id: TenantId,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `tenancy tenant suspend`
#[derive(Debug, Args)]
pub(crate) struct TenantSuspendArgs {
    /// The tenant id.
    pub id: TenantId,
    /// Why (stored with the tenant).
    #[arg(long, value_name = "S")]
    pub reason: Option<String>,
}

/// `tenancy tenant delete`
#[derive(Debug, Args)]
pub(crate) struct TenantDeleteArgs {
    /// The tenant id.
    pub id: TenantId,
    /// Confirm the deletion (else prompted on a terminal).
    #[arg(long)]
    pub confirm: bool,
}

/// `tenancy state ...`
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Store a new version of a stack environment's state (JSON).
    Put(StatePutArgs),
    /// Print the current (or an older) state document.
    Get(StateGetArgs),
    /// List stack environments with state.
    List,
    /// The versions of a stack environment's state.
    History(StackEnv),
    /// Make an older version current again (as a new version).
    Rollback(StateRollbackArgs),
    /// Delete a stack environment's state (its history is kept until
    /// pruned, and a rollback restores it); gives the stack back to the
    /// stack limit when it was its last environment. Asks to confirm on a
    /// terminal; elsewhere needs --yes.
    Delete(StateDeleteArgs),
}

/// `tenancy state delete`
#[derive(Debug, Args)]
pub(crate) struct StateDeleteArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// Delete under this lock of the stack environment (see `state put`).
    #[arg(long, value_name = "ID")]
    pub lock_id: Option<tenancy_core::LockId>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `tenancy state put`
#[derive(Debug, Args)]
pub(crate) struct StatePutArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// Read the JSON document from this file (default: stdin).
    #[arg(long, value_name = "F")]
    pub file: Option<std::path::PathBuf>,
    /// Save under this lock of the stack environment (from `tenancy lock
    /// acquire`): required while it is locked; the save records the lock's
    /// fencing token and is refused if a newer holder saved since.
    #[arg(long, value_name = "ID")]
    pub lock_id: Option<tenancy_core::LockId>,
}

/// `tenancy state get`
#[derive(Debug, Args)]
pub(crate) struct StateGetArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// A version (serial) from `state history`.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
}

/// `tenancy state rollback`
#[derive(Debug, Args)]
pub(crate) struct StateRollbackArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// The version (serial) to go back to.
    #[arg(long, value_name = "N")]
    pub to: u64,
    /// Roll back under this lock of the stack environment (see `state put`).
    #[arg(long, value_name = "ID")]
    pub lock_id: Option<tenancy_core::LockId>,
}

/// `tenancy lock ...`
#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Take the lock of a stack environment.
    Acquire(LockAcquireArgs),
    /// Release a lock you hold.
    Release(LockHeldArgs),
    /// Extend the lease of a lock you hold.
    Renew(LockRenewArgs),
    /// List this tenant's held locks (admin: `--tenant ID`, any tenant's).
    List(LockListArgs),
    /// Free a lock whatever its lease, given its current lock id
    /// (the holder's id from `lock list`); admin: `--tenant ID`.
    ForceUnlock(LockForceArgs),
}

/// `tenancy lock list`
#[derive(Debug, Args)]
pub(crate) struct LockListArgs {
    /// Admin: the locks of this tenant (no tenant secret needed).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy lock force-unlock`
#[derive(Debug, Args)]
pub(crate) struct LockForceArgs {
    #[command(flatten)]
    pub held: LockHeldArgs,
    /// Admin: unlock this tenant's lock (no tenant secret needed).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy lock acquire`
#[derive(Debug, Args)]
pub(crate) struct LockAcquireArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// Lease length (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to keep trying while the lock is held (0s: fail at once).
    #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// What the holder is doing.
    #[arg(long, value_name = "OP", default_value = "")]
    pub operation: String,
}

/// A held lock: its stack-env and lock id.
#[derive(Debug, Args)]
pub(crate) struct LockHeldArgs {
    #[command(flatten)]
    pub at: StackEnv,
    /// The lock id from `lock acquire` (or `lock list`).
    #[arg(long, value_name = "LOCK_ID")]
    pub id: LockId,
}

/// `tenancy lock renew`
#[derive(Debug, Args)]
pub(crate) struct LockRenewArgs {
    #[command(flatten)]
    pub held: LockHeldArgs,
    /// New lease length from now.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// A plan on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanArg {
    /// Free.
    Free,
    /// Basic.
    Basic,
    /// Pro.
    Pro,
    /// Enterprise.
    Enterprise,
}

impl From<PlanArg> for Plan {
    fn from(p: PlanArg) -> Plan {
        match p {
            PlanArg::Free => Plan::Free,
            PlanArg::Basic => Plan::Basic,
            PlanArg::Pro => Plan::Pro,
            PlanArg::Enterprise => Plan::Enterprise,
        }
    }
}

/// A tenant status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusArg {
    /// Active.
    Active,
    /// Suspended.
    Suspended,
    /// Expired.
    Expired,
    /// Deleted.
    Deleted,
}

impl From<StatusArg> for TenantStatus {
    fn from(s: StatusArg) -> TenantStatus {
        match s {
            StatusArg::Active => TenantStatus::Active,
            StatusArg::Suspended => TenantStatus::Suspended,
            StatusArg::Expired => TenantStatus::Expired,
            StatusArg::Deleted => TenantStatus::Deleted,
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` or a plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration; use e.g. 500ms, 30s, 5m, 2h or 1d"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" in \"{s}\"; use ms, s, m, h or d"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{s}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "3 weeks",
            "10y",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_names_and_flags_parse() {
        let ok: &[&[&str]] = &[
            &["tenancy", "version"],
            &["tenancy", "completions", "zsh"],
            &["tenancy", "init", "--admin-password-stdin"],
            &["tenancy", "admin", "login", "--password-stdin"],
            &["tenancy", "admin", "logout"],
            &["tenancy", "admin", "session"],
            &[
                "tenancy",
                "tenant",
                "init",
                "--name",
                "acme",
                "--display-name",
                "A",
                "--email",
                "a@b.c",
                "--plan",
                "pro",
                "--secret-prefix",
                "acme",
            ],
            &["tenancy", "tenant", "list", "--status", "active"],
            &["tenancy", "tenant", "show", "acme"],
            &["tenancy", "tenant", "stats"],
            &[
                "tenancy",
                "tenant",
                "update",
                "acme",
                "--plan",
                "basic",
                "--max-stacks",
                "3",
                "--max-services",
                "4",
                "--monthly-cost-limit",
                "5",
            ],
            &["tenancy", "tenant", "rotate", "acme", "--yes"],
            &["tenancy", "tenant", "suspend", "acme"],
            &["tenancy", "tenant", "activate", "acme"],
            &["tenancy", "tenant", "delete", "acme", "--confirm"],
            &["tenancy", "migrate", "--tenant", "acme", "--from", "stacks"],
            &[
                "tenancy",
                "migrate",
                "--tenant",
                "acme",
                "--from",
                "stacks/app",
                "--dry-run",
                "--force",
            ],
            &["tenancy", "doctor"],
            &["tenancy", "doctor", "--repair", "--output", "json"],
            &["tenancy", "login", "--tenant", "acme", "--secret-stdin"],
            &["tenancy", "logout"],
            &["tenancy", "session"],
            &["tenancy", "tenant", "details"],
            &["tenancy", "tenant", "usage"],
            &["tenancy", "tenant", "stacks"],
            &[
                "tenancy", "state", "put", "--stack", "s", "--env", "e", "--file", "f.json",
            ],
            &[
                "tenancy",
                "state",
                "get",
                "--stack",
                "s",
                "--env",
                "e",
                "--version",
                "2",
            ],
            &["tenancy", "state", "list"],
            &["tenancy", "state", "history", "--stack", "s", "--env", "e"],
            &[
                "tenancy", "state", "rollback", "--stack", "s", "--env", "e", "--to", "1",
            ],
            &[
                "tenancy",
                "lock",
                "acquire",
                "--stack",
                "s",
                "--env",
                "e",
                "--ttl",
                "30s",
                "--wait",
                "0s",
                "--operation",
                "deploy",
            ],
            &[
                "tenancy",
                "lock",
                "release",
                "--stack",
                "s",
                "--env",
                "e",
                "--id",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
            ],
            &[
                "tenancy",
                "lock",
                "renew",
                "--stack",
                "s",
                "--env",
                "e",
                "--id",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
                "--ttl",
                "1m",
            ],
            &["tenancy", "lock", "list"],
            &[
                "tenancy",
                "lock",
                "force-unlock",
                "--stack",
                "s",
                "--env",
                "e",
                "--id",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
            ],
            &[
                "tenancy",
                "--output",
                "json",
                "--backend",
                "memory://",
                "tenant",
                "list",
            ],
            &["tenancy", "tenant", "list", "--output", "json"],
        ];
        for args in ok {
            if let Err(e) = Cli::try_parse_from(*args) {
                panic!("{args:?}: {e}");
            }
        }
        let bad: &[&[&str]] = &[
            &["tenancy", "completions", "powershell"],
            &["tenancy", "--output", "yaml", "version"],
            &["tenancy", "tenant", "init"],
            &[
                "tenancy", "lock", "acquire", "--stack", "s", "--env", "e", "--ttl", "soon",
            ],
            &[
                "tenancy", "state", "rollback", "--stack", "s", "--env", "e", "--to", "-1",
            ],
            &["tenancy", "tenant", "show", "Not_An_Id"],
            &[
                "tenancy", "lock", "release", "--stack", "s", "--env", "e", "--id", "x",
            ],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(*args).is_err(), "{args:?}");
        }
    }
}

/// `--stack S --env E`: the stack-env a state or lock command works on,
/// each one key segment (checked while parsing, so a bad name is exit 2).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StackEnv {
    /// The stack.
    #[arg(long, value_name = "S", value_parser = segment)]
    pub(crate) stack: String,
    /// The environment.
    #[arg(long, value_name = "E", value_parser = segment)]
    pub(crate) env: String,
}

impl StackEnv {
    /// The lock key of this stack-env.
    pub(crate) fn lock_key(&self) -> Result<LockKey, tenancy_core::Error> {
        LockKey::stack_env(&self.stack, &self.env)
    }
}

/// A single state-key segment: no `/`, no `..`, no control characters.
fn segment(s: &str) -> Result<String, tenancy_core::Error> {
    StateKey::segment(s).map(|_| s.to_string())
}
