//! The command tree: every command, flag and help text of `tenancy` (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenancy_core::{Plan, TenantStatus};

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

Environment:
  TENANCY_HOME            where sessions and the default store live (default ~/.tenancy)
  TENANCY_BACKEND         backend URL, like --backend
  TENANCY_ADMIN_PASSWORD  admin password for `init` and `admin login`
  TENANCY_TENANT          tenant id for `login`
  TENANCY_SECRET          tenant secret for `login`
  TENANCY_BCRYPT_COST     bcrypt cost for new hashes (default 10; 4 is fast, for tests)
  NO_COLOR                never colour the output
  AWS_*                   endpoint, region and credentials for s3:// backends";

/// `tenancy`: many isolated tenants on one shared store.
#[derive(Debug, Parser)]
#[command(
    name = "tenancy",
    version,
    about = "Many isolated tenants on one shared store: an admin manages tenants, teams keep state and locks",
    after_help = EXIT_CODES_HELP
)]
pub(crate) struct Cli {
    /// Backend URL: file:///abs/path, memory:// or s3://bucket/prefix
    /// [env: TENANCY_BACKEND] [default: file://$TENANCY_HOME/data]
    #[arg(long, global = true, value_name = "URL")]
    pub backend: Option<String>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// The command.
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
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Bootstrap the registry on the backend; refuses if one exists.
    Init {
        /// Read the new admin password from the first line of stdin
        /// (else TENANCY_ADMIN_PASSWORD, else a hidden prompt).
        #[arg(long)]
        admin_password_stdin: bool,
    },
    /// Admin sessions: login, logout, session.
    Admin {
        /// The admin command.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Tenants: admin commands (init, list, show, ...) and a tenant's own view
    /// (details, usage, stacks).
    Tenant {
        /// The tenant command.
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Admin: copy a single-tenant `stacks/` tree on the backend into a tenant.
    Migrate {
        /// The tenant to copy into.
        #[arg(long, value_name = "ID")]
        tenant: String,
        /// The prefix of the single-tenant tree.
        #[arg(long, value_name = "PREFIX", default_value = "stacks")]
        from: String,
    },
    /// Log in as a tenant (session lasts 7 days).
    Login {
        /// The tenant id [env: TENANCY_TENANT] (prompted on a terminal).
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// Read the secret from the first line of stdin
        /// (else TENANCY_SECRET, else a hidden prompt).
        #[arg(long)]
        secret_stdin: bool,
    },
    /// Remove the tenant session.
    Logout,
    /// Show and check the tenant session.
    Session,
    /// Tenant state with history.
    State {
        /// The state command.
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Tenant locks: leased, with fencing tokens.
    Lock {
        /// The lock command.
        #[command(subcommand)]
        command: LockCommand,
    },
}

/// `tenancy admin ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Log in as the admin (session lasts 8 hours).
    Login {
        /// Read the admin password from the first line of stdin
        /// (else TENANCY_ADMIN_PASSWORD, else a hidden prompt).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove the admin session.
    Logout,
    /// Show and check the admin session.
    Session,
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
}

/// `tenancy tenant ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Admin: create a tenant and show its secret once.
    Init {
        /// The tenant id: lowercase letters, digits and '-', 3 to 63 characters.
        #[arg(long, value_name = "ID")]
        name: String,
        /// Human-readable name (default: the id).
        #[arg(long, value_name = "S")]
        display_name: Option<String>,
        /// Contact e-mail.
        #[arg(long, value_name = "S")]
        email: Option<String>,
        /// The plan.
        #[arg(long, value_enum, default_value_t = PlanArg::Free)]
        plan: PlanArg,
        /// The secret's prefix, 2 to 8 lowercase letters (default tnc).
        #[arg(long, value_name = "P")]
        secret_prefix: Option<String>,
        /// Limit overrides.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Admin: list tenants.
    List {
        /// Only tenants with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only tenants on this plan.
        #[arg(long, value_enum)]
        plan: Option<PlanArg>,
    },
    /// Admin: show one tenant.
    Show {
        /// The tenant id.
        id: String,
    },
    /// Admin: counts of tenants by status and plan.
    Stats,
    /// Admin: change a tenant's plan, profile or limits.
    Update {
        /// The tenant id.
        id: String,
        /// New plan.
        #[arg(long, value_enum)]
        plan: Option<PlanArg>,
        /// New display name.
        #[arg(long, value_name = "S")]
        display_name: Option<String>,
        /// New e-mail.
        #[arg(long, value_name = "S")]
        email: Option<String>,
        /// Expiry time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Metadata entry to set (repeatable).
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Limit overrides.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Admin: issue a new secret; the old secret and its sessions stop working.
    Rotate {
        /// The tenant id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Admin: suspend a tenant (login and sessions refused until activated).
    Suspend {
        /// The tenant id.
        id: String,
        /// Why (stored with the tenant).
        #[arg(long, value_name = "S")]
        reason: Option<String>,
    },
    /// Admin: activate a suspended or expired tenant.
    Activate {
        /// The tenant id.
        id: String,
    },
    /// Admin: soft-delete a tenant and archive its state.
    Delete {
        /// The tenant id.
        id: String,
        /// Confirm the deletion (else prompted on a terminal).
        #[arg(long)]
        confirm: bool,
    },
    /// Tenant: this tenant's profile, plan and limits.
    Details,
    /// Tenant: usage against limits.
    Usage,
    /// Tenant: stacks and environments with state.
    Stacks,
}

/// `tenancy state ...`
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Store a new version of a stack environment's state (JSON).
    Put {
        #[command(flatten)]
        at: StackEnv,
        /// Read the JSON document from this file (default: stdin).
        #[arg(long, value_name = "F")]
        file: Option<std::path::PathBuf>,
    },
    /// Print the current (or an older) state document.
    Get {
        #[command(flatten)]
        at: StackEnv,
        /// A version (serial) from `state history`.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// List stack environments with state.
    List,
    /// The versions of a stack environment's state.
    History {
        #[command(flatten)]
        at: StackEnv,
    },
    /// Make an older version current again (as a new version).
    Rollback {
        #[command(flatten)]
        at: StackEnv,
        /// The version (serial) to go back to.
        #[arg(long, value_name = "N")]
        to: u64,
    },
}

/// `tenancy lock ...`
#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Take the lock of a stack environment.
    Acquire {
        #[command(flatten)]
        at: StackEnv,
        /// Lease length (e.g. 30s, 5m, 1h).
        #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// How long to keep trying while the lock is held (0s: fail at once).
        #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// What the holder is doing.
        #[arg(long, value_name = "OP", default_value = "")]
        operation: String,
    },
    /// Release a lock you hold.
    Release {
        #[command(flatten)]
        at: StackEnv,
        /// The lock id from `lock acquire`.
        #[arg(long, value_name = "LOCK_ID")]
        id: String,
    },
    /// Extend the lease of a lock you hold.
    Renew {
        #[command(flatten)]
        at: StackEnv,
        /// The lock id from `lock acquire`.
        #[arg(long, value_name = "LOCK_ID")]
        id: String,
        /// New lease length from now.
        #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// List this tenant's held locks.
    List,
    /// Free a lock whatever its lease, given its current lock id.
    ForceUnlock {
        #[command(flatten)]
        at: StackEnv,
        /// The current holder's lock id (see `lock list`).
        #[arg(long, value_name = "LOCK_ID")]
        id: String,
    },
}

/// A plan on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanArg {
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
pub enum StatusArg {
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
                "tenancy", "lock", "release", "--stack", "s", "--env", "e", "--id", "x",
            ],
            &[
                "tenancy", "lock", "renew", "--stack", "s", "--env", "e", "--id", "x", "--ttl",
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
                "x",
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
        ];
        for args in bad {
            assert!(Cli::try_parse_from(*args).is_err(), "{args:?}");
        }
    }
}

/// `--stack S --env E`: the stack-env a state or lock command works on.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StackEnv {
    /// The stack.
    #[arg(long, value_name = "S")]
    pub(crate) stack: String,
    /// The environment.
    #[arg(long, value_name = "E")]
    pub(crate) env: String,
}
