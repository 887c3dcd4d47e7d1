//! The command tree: every command, flag and help text of `tenancy` (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenancy_core::{LockId, LockKey, Plan, StateKey, TenantId, TenantStatus};

/// The exit codes, once for `tenancy help exit-codes` and `tenancy --help`.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  ok (also: a declined confirmation, \"Cancelled; nothing changed.\")
  1  other error (backend, I/O, corrupt data)
  2  usage: bad flags, bad ids, bad input
  3  not logged in, unauthorized, session expired, credentials rotated
  4  forbidden: tenant suspended, expired or deleted; wrong session mode
  5  not found
  6  conflict or lock held
  7  quota exceeded
  8  doctor: problems remain (after --repair: the ones it cannot fix);
     audit verify: the chain is not intact (every problem is listed)"
    };
}

/// `tenancy help exit-codes`.
pub(crate) const EXIT_CODES_TOPIC: &str = exit_codes!();

/// `tenancy help environment`.
pub(crate) const ENVIRONMENT_TOPIC: &str = "\
Environment:
  TENANCY_HOME                where sessions and the default store live (default ~/.tenancy)
  TENANCY_BACKEND             backend URL, like --backend
  TENANCY_ADMIN_PASSWORD      admin password for `init` and `admin login`
  TENANCY_NEW_ADMIN_PASSWORD  the new admin password for `admin passwd`
  TENANCY_TENANT              tenant id for `login`; with TENANCY_SECRET, tenant
                              commands run without a login (CI)
  TENANCY_SECRET              tenant secret for `login` (and the above)
  TENANCY_BCRYPT_COST         bcrypt cost for new hashes (default 10; 4 is fast, for tests)
  NO_COLOR                    never colour the output (wins over CLICOLOR_FORCE)
  CLICOLOR_FORCE              colour even when not on a terminal (not with 0)
  CLICOLOR                    0: no colour on a terminal either
  TERM                        dumb: no colour
  COLUMNS                     the terminal width tables fit (default: the terminal's own;
                              into a pipe tables are never cut)
  AWS_*                       endpoint, region and credentials for s3:// backends
Secrets and passwords are trimmed of surrounding whitespace wherever they are read.";

/// The help topics `tenancy help TOPIC` prints, by name.
pub(crate) const HELP_TOPICS: &[(&str, &str)] = &[
    ("exit-codes", EXIT_CODES_TOPIC),
    ("environment", ENVIRONMENT_TOPIC),
];

/// Shown at the end of `tenancy --help`.
const ROOT_AFTER_HELP: &str = concat!(
    "Examples:
  tenancy init                                   # bootstrap a store (admin password prompted)
  tenancy admin login && tenancy tenant init     # create a tenant, prompted for its details
  tenancy login acme && tenancy state list       # a tenant team's view

",
    exit_codes!(),
    "

Help topics: `tenancy help exit-codes`, `tenancy help environment` (TENANCY_HOME,
TENANCY_BACKEND, TENANCY_SECRET, NO_COLOR, ...)."
);

/// A subcommand's `after_help`: its examples, then where exit codes and
/// environment variables are described.
macro_rules! examples {
    ($($line:literal),+ $(,)?) => {
        concat!(
            "Examples:\n",
            $("  ", $line, "\n",)+
            "\nExit codes: `tenancy help exit-codes`; environment variables: `tenancy help environment`."
        )
    };
}

/// `tenancy`: many isolated tenants on one shared store.
#[derive(Debug, Parser)]
#[command(
    name = "tenancy",
    version,
    about = "Many isolated tenants on one shared store: an admin manages tenants, teams keep state and locks",
    after_help = ROOT_AFTER_HELP,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// Backend: file:///abs/path (or a path), s3://bucket/prefix, or a
    /// tenancy-server's https://host (remote mode)
    /// [env: TENANCY_BACKEND] [default: the session's backend, else
    /// file://$TENANCY_HOME/data]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub backend: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table, help_heading = "Global options")]
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
    #[command(after_help = examples!("tenancy version", "tenancy -o json version"))]
    Version,
    /// Write a shell completion script to stdout.
    #[command(after_help = COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),
    /// Bootstrap the registry on the backend; refuses if one exists.
    #[command(after_help = examples!(
        "tenancy init                                  # admin password prompted, twice",
        "printf '%s\\n' \"$PW\" | tenancy init --admin-password-stdin",
        "tenancy --backend s3://bucket/tenancy init",
    ))]
    Init(InitArgs),
    /// Admin sessions: login, logout, session, passwd.
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "tenancy admin login",
        "tenancy admin session",
        "tenancy admin passwd",
    ))]
    Admin(AdminCommand),
    /// Tenants: admin commands (init, list, show, ...) and a tenant's own view
    /// (details, usage, stacks).
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "tenancy tenant init                      # prompted for id, name, e-mail, plan, prefix",
        "tenancy tenant list --status active",
        "tenancy tenant details                   # as a tenant: your own profile",
    ))]
    Tenant(TenantCommand),
    /// Admin: copy a single-tenant `stacks/` tree on the backend into a tenant.
    #[command(after_help = examples!(
        "tenancy migrate acme --dry-run",
        "tenancy migrate acme --from stacks/app",
    ))]
    Migrate(MigrateCli),
    /// Admin: report every inconsistency in the store (damaged records,
    /// crash leftovers, reservations without owners, file modes, the S3
    /// probe); exit 8 while problems remain.
    #[command(after_help = examples!(
        "tenancy doctor",
        "tenancy doctor --repair",
        "tenancy -o json doctor | jq .findings",
    ))]
    Doctor(DoctorArgs),
    /// Log in as a tenant (session lasts 7 days).
    #[command(after_help = examples!(
        "tenancy login acme                       # secret prompted (three tries)",
        "printf '%s\\n' \"$SECRET\" | tenancy login acme --secret-stdin",
        "tenancy --backend https://tenancy.example.com login acme",
    ))]
    Login(LoginArgs),
    /// Remove the tenant session.
    #[command(after_help = examples!("tenancy logout"))]
    Logout,
    /// Show and check the tenant session.
    #[command(after_help = examples!("tenancy session", "tenancy -o json session"))]
    Session,
    /// Tenant state with history.
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "echo '{\"replicas\": 2}' | tenancy state put --stack web --env prod",
        "tenancy state get --stack web --env prod",
        "tenancy state history --stack web --env prod",
    ))]
    State(StateCommand),
    /// Tenant locks: leased, with fencing tokens.
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "tenancy lock acquire --stack web --env prod --ttl 5m",
        "tenancy lock list",
        "tenancy lock release --stack web --env prod LOCK_ID",
    ))]
    Lock(LockCommand),
    /// Admin: the hash-chained audit trail (list, verify, head, prune).
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "tenancy audit list --tenant acme --since 24h",
        "tenancy audit verify --tenant acme --head \"$(cat acme.head)\"",
        "tenancy audit head --tenant acme > acme.head",
    ))]
    Audit(AuditCommand),
    /// Named API keys of a tenant, with roles and expiry (a tenant's owner;
    /// admin: `--tenant ID`).
    #[command(subcommand, arg_required_else_help = true, after_help = examples!(
        "tenancy key create --name ci --role viewer --expires 30d",
        "tenancy key rotate KEY_ID --grace 1h",
        "tenancy key list --tenant acme            # as the admin",
    ))]
    Key(KeyCommand),
}

/// `tenancy key ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a named key (shown once); its role limits what it may do.
    #[command(after_help = examples!(
        "tenancy key create --name ci --role viewer               # CI that only reads",
        "tenancy key create --name alice --role operator --expires 90d",
        "KEY=\"$(tenancy -o json key create --name deploy --role operator | jq -r .secret)\"",
    ))]
    Create(KeyCreateArgs),
    /// List the keys (id, name, role, the key's prefix and last four, dates).
    #[command(after_help = examples!("tenancy key list", "tenancy key list --tenant acme   # as the admin"))]
    List(KeyListArgs),
    /// Revoke a key at once (the next request with it is refused).
    #[command(after_help = examples!("tenancy key revoke KEY_ID", "tenancy key revoke KEY_ID --yes"))]
    Revoke(KeyRevokeArgs),
    /// Replace a key with a new one of the same name and role (shown once);
    /// the old one keeps working for the grace period.
    #[command(after_help = examples!(
        "tenancy key rotate KEY_ID --grace 1h     # deploy the new key within the hour",
        "tenancy key rotate KEY_ID                # the old key stops at once",
    ))]
    Rotate(KeyRotateArgs),
}

impl KeyCommand {
    /// The tenant an admin names with `--tenant` (`None`: the tenant's own keys).
    pub(crate) fn tenant(&self) -> Option<&TenantId> {
        match self {
            KeyCommand::Create(a) => a.tenant.as_ref(),
            KeyCommand::List(a) => a.tenant.as_ref(),
            KeyCommand::Revoke(a) => a.tenant.as_ref(),
            KeyCommand::Rotate(a) => a.tenant.as_ref(),
        }
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    /// Reads only: state, stacks, locks, jobs, usage.
    Viewer,
    /// Also writes state, takes locks, runs jobs and workers.
    Operator,
    /// Also manages the tenant's keys.
    Owner,
}

impl From<RoleArg> for tenancy_core::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => tenancy_core::Role::Viewer,
            RoleArg::Operator => tenancy_core::Role::Operator,
            RoleArg::Owner => tenancy_core::Role::Owner,
        }
    }
}

/// `tenancy key create`
#[derive(Debug, Args)]
pub(crate) struct KeyCreateArgs {
    /// Its name: letters, digits, '.', '_', '-' or '@' (e.g. ci, alice@example.com).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What it may do.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: RoleArg,
    /// How long it works (e.g. 12h, 30d; default: until revoked).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub expires: Option<Duration>,
    /// Admin: create it for this tenant (no tenant secret needed).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy key list`
#[derive(Debug, Args)]
pub(crate) struct KeyListArgs {
    /// Admin: this tenant's keys.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy key revoke`
#[derive(Debug, Args)]
pub(crate) struct KeyRevokeArgs {
    /// The key's id (`key_...`, from `tenancy key list`).
    #[arg(value_name = "KEY_ID")]
    pub id: tenancy_core::KeyId,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Admin: a key of this tenant.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy key rotate`
#[derive(Debug, Args)]
pub(crate) struct KeyRotateArgs {
    /// The key's id (`key_...`, from `tenancy key list`).
    #[arg(value_name = "KEY_ID")]
    pub id: tenancy_core::KeyId,
    /// How long the old key keeps working (e.g. 1h; default 0s: it stops at once).
    #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Admin: a key of this tenant.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy completions --help`: examples and how to install the script.
const COMPLETIONS_AFTER_HELP: &str = concat!(
    "Install:
  bash  echo 'source <(tenancy completions bash)' >> ~/.bashrc
        (or: tenancy completions bash > ~/.local/share/bash-completion/completions/tenancy)
  zsh   tenancy completions zsh > ~/.zfunc/_tenancy
        and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit
  fish  tenancy completions fish > ~/.config/fish/completions/tenancy.fish
Open a new shell afterwards. Commands and flags complete; tenant ids and
stack names do not (clap_complete offers that only behind an unstable feature).

",
    examples!(
        "tenancy completions bash > /etc/bash_completion.d/tenancy",
        "tenancy completions zsh > ~/.zfunc/_tenancy",
        "tenancy completions fish > ~/.config/fish/completions/tenancy.fish",
    )
);

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

/// `tenancy migrate` as parsed: the tenant by position or by `--tenant`.
#[derive(Debug, Args)]
pub(crate) struct MigrateCli {
    /// The tenant to copy into.
    #[arg(value_name = "ID", required_unless_present = "tenant")]
    pub id: Option<TenantId>,
    /// The tenant to copy into (same as ID; kept for scripts).
    #[arg(long, value_name = "ID", conflicts_with = "id")]
    pub tenant: Option<TenantId>,
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

impl MigrateCli {
    /// The handler's arguments; `None` without a tenant (clap refuses that first).
    pub(crate) fn into_args(self) -> Option<MigrateArgs> {
        Some(MigrateArgs {
            tenant: self.id.or(self.tenant)?,
            from: self.from,
            dry_run: self.dry_run,
            force: self.force,
        })
    }
}

/// `tenancy migrate`
#[derive(Debug)]
pub(crate) struct MigrateArgs {
    /// The tenant to copy into.
    pub tenant: TenantId,
    /// The prefix of the single-tenant tree.
    pub from: StateKey,
    /// Write nothing.
    pub dry_run: bool,
    /// Copy even over max_stacks.
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
    #[arg(value_name = "ID")]
    pub id: Option<TenantId>,
    /// The tenant id (same as ID; kept for scripts).
    #[arg(long, value_name = "ID", conflicts_with = "id")]
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
    #[command(after_help = examples!(
        "tenancy admin login                      # password prompted (three tries)",
        "printf '%s\\n' \"$PW\" | tenancy admin login --password-stdin",
        "tenancy --backend https://tenancy.example.com admin login",
    ))]
    Login(AdminLoginArgs),
    /// Remove the admin session.
    #[command(after_help = examples!("tenancy admin logout"))]
    Logout,
    /// Show and check the admin session.
    #[command(after_help = examples!("tenancy admin session", "tenancy -o json admin session"))]
    Session,
    /// Change the admin password; every admin session and cached admin token ends.
    #[command(after_help = examples!(
        "tenancy admin passwd                     # new password prompted, twice",
        "printf '%s\\n' \"$NEW\" | tenancy admin passwd --new-password-stdin",
        "tenancy --backend file:///srv/tenancy admin passwd --reset",
    ))]
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
    /// Admin: create a tenant and show its secret once. On a terminal,
    /// without an id, asks for each detail (defaults in brackets, Enter
    /// accepts).
    #[command(after_help = examples!(
        "tenancy tenant init                      # prompted: id, display name, e-mail, plan, prefix",
        "tenancy tenant init acme --display-name \"Acme Corp\" --plan pro",
        "tenancy -o json tenant init globex | jq -r .secret",
    ))]
    Init(TenantInitArgs),
    /// Admin: list tenants.
    #[command(after_help = examples!(
        "tenancy tenant list",
        "tenancy tenant list --status suspended --plan pro",
        "tenancy -o json tenant list | jq -r '.[].id'",
    ))]
    List(TenantListArgs),
    /// Admin: show one tenant.
    #[command(after_help = examples!("tenancy tenant show acme", "tenancy -o json tenant show acme"))]
    Show(TenantArg),
    /// Admin: counts of tenants by status and plan, or with an id that
    /// tenant's usage: used, limit and available per resource.
    #[command(after_help = examples!("tenancy tenant stats", "tenancy tenant stats acme"))]
    Stats(TenantStatsArgs),
    /// Admin: change a tenant's plan, profile or limits.
    #[command(after_help = examples!(
        "tenancy tenant update acme --plan enterprise",
        "tenancy tenant update acme --max-stacks 10 --metadata team=payments",
        "tenancy tenant update acme --expires-at 2030-01-01T00:00:00Z",
    ))]
    Update(TenantUpdateArgs),
    /// Admin: issue a new secret; the old secret and its sessions stop working.
    #[command(after_help = examples!(
        "tenancy tenant rotate acme               # asks to confirm on a terminal",
        "tenancy tenant rotate acme --yes",
    ))]
    Rotate(TenantRotateArgs),
    /// Admin: suspend a tenant (login and sessions refused until activated).
    #[command(after_help = examples!("tenancy tenant suspend acme --reason \"billing review\""))]
    Suspend(TenantSuspendArgs),
    /// Admin: activate a suspended or expired tenant.
    #[command(after_help = examples!("tenancy tenant activate acme"))]
    Activate(TenantArg),
    /// Admin: soft-delete a tenant and archive its state.
    #[command(after_help = examples!(
        "tenancy tenant delete globex             # type the id to confirm",
        "tenancy tenant delete globex --yes",
    ))]
    Delete(TenantDeleteArgs),
    /// Tenant: this tenant's profile, plan and limits.
    #[command(after_help = examples!("tenancy tenant details", "tenancy -o json tenant details"))]
    Details,
    /// Tenant: usage against limits.
    #[command(after_help = examples!("tenancy tenant usage"))]
    Usage,
    /// Tenant: stacks and environments with state.
    #[command(after_help = examples!("tenancy tenant stacks"))]
    Stacks,
}

/// `tenancy tenant init`
#[derive(Debug, Args)]
pub(crate) struct TenantInitArgs {
    /// The tenant id: lowercase letters, digits and '-', 3 to 63
    /// characters (prompted on a terminal when missing).
    #[arg(value_name = "ID")]
    pub id: Option<TenantId>,
    /// The tenant id (same as ID; kept for scripts).
    #[arg(long, value_name = "ID", conflicts_with = "id")]
    pub name: Option<TenantId>,
    /// Human-readable name (default: the id).
    #[arg(long, value_name = "S")]
    pub display_name: Option<String>,
    /// Contact e-mail.
    #[arg(long, value_name = "S")]
    pub email: Option<String>,
    /// The plan (default free).
    #[arg(long, value_enum)]
    pub plan: Option<PlanArg>,
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
    /// Deleted tenants too (hidden unless `--all` or `--status deleted`).
    #[arg(long)]
    pub all: bool,
}

/// `tenancy tenant stats [ID]`
#[derive(Debug, Args)]
pub(crate) struct TenantStatsArgs {
    /// One tenant's usage instead of the counts of all.
    pub id: Option<TenantId>,
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
    #[arg(long, short = 'y')]
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
    /// Do not ask for confirmation.
    // `--confirm`, the old spelling, is a hidden alias so scripts keep working.
    #[arg(long = "yes", short = 'y', alias = "confirm")]
    pub confirm: bool,
}

/// `tenancy state ...`
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Store a new version of a stack environment's state (JSON).
    #[command(after_help = examples!(
        "echo '{\"replicas\": 2}' | tenancy state put --stack web --env prod",
        "tenancy state put --stack web --env prod --file state.json",
        "tenancy state put --stack web --env prod --file state.json --lock-id \"$LOCK_ID\"",
    ))]
    Put(StatePutArgs),
    /// Print the current (or an older) state document.
    #[command(after_help = examples!(
        "tenancy state get --stack web --env prod",
        "tenancy state get --stack web --env prod --version 2 | jq .",
    ))]
    Get(StateGetArgs),
    /// List stack environments with state.
    #[command(after_help = examples!("tenancy state list", "tenancy -o json state list"))]
    List,
    /// The versions of a stack environment's state.
    #[command(after_help = examples!("tenancy state history --stack web --env prod"))]
    History(StackEnv),
    /// Make an older version current again (as a new version).
    #[command(after_help = examples!(
        "tenancy state rollback --stack web --env prod --to 1",
        "tenancy state rollback --stack web --env prod --to 1 --lock-id \"$LOCK_ID\"",
    ))]
    Rollback(StateRollbackArgs),
    /// Delete a stack environment's state (its history is kept until
    /// pruned, and a rollback restores it); gives the stack back to the
    /// stack limit when it was its last environment. Asks to confirm on a
    /// terminal; elsewhere needs --yes.
    #[command(after_help = examples!(
        "tenancy state delete --stack scratch --env dev      # asks to confirm on a terminal",
        "tenancy state delete --stack scratch --env dev -y",
    ))]
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
    #[command(after_help = examples!(
        "tenancy lock acquire --stack web --env prod --ttl 5m --operation deploy",
        "tenancy lock acquire --stack web --env prod --wait 2m",
        "LOCK_ID=\"$(tenancy -o json lock acquire --stack web --env prod | jq -r .lock_id)\"",
    ))]
    Acquire(LockAcquireArgs),
    /// Release a lock you hold.
    #[command(after_help = examples!(
        "tenancy lock release --stack web --env prod \"$LOCK_ID\"",
        "tenancy lock release --stack web --env prod --id \"$LOCK_ID\"",
    ))]
    Release(LockHeldArgs),
    /// Extend the lease of a lock you hold.
    #[command(after_help = examples!("tenancy lock renew --stack web --env prod \"$LOCK_ID\" --ttl 10m"))]
    Renew(LockRenewArgs),
    /// List this tenant's held locks (admin: a tenant id, any tenant's).
    #[command(after_help = examples!(
        "tenancy lock list                        # as a tenant",
        "tenancy lock list acme                   # as the admin, no tenant secret needed",
    ))]
    List(LockListArgs),
    /// Free a lock whatever its lease, given its current lock id
    /// (the holder's id from `lock list`); admin: `--tenant ID`.
    #[command(after_help = examples!(
        "tenancy lock force-unlock --stack web --env prod LOCK_ID",
        "tenancy lock force-unlock --stack web --env prod LOCK_ID --tenant acme   # as the admin",
    ))]
    ForceUnlock(LockForceArgs),
}

/// `tenancy lock list`
#[derive(Debug, Args)]
pub(crate) struct LockListArgs {
    /// Admin: the locks of this tenant (no tenant secret needed).
    #[arg(value_name = "ID")]
    pub id: Option<TenantId>,
    /// Admin: the locks of this tenant (same as ID; kept for scripts).
    #[arg(long, value_name = "ID", conflicts_with = "id")]
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

/// A held lock: its stack-env and lock id (`LOCK_ID`, or `--id LOCK_ID`
/// as before). Parsed by hand (below) so handlers get one `LockId`.
#[derive(Debug)]
pub(crate) struct LockHeldArgs {
    /// The stack environment.
    pub at: StackEnv,
    /// The lock id.
    pub id: LockId,
}

impl clap::FromArgMatches for LockHeldArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let at = <StackEnv as clap::FromArgMatches>::from_arg_matches(m)?;
        let id = m
            .get_one::<LockId>("lock_id")
            .or_else(|| m.get_one::<LockId>("id"))
            .cloned()
            .ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "a lock id is required: LOCK_ID (or --id LOCK_ID), from `tenancy lock acquire` or `tenancy lock list`\n",
                )
            })?;
        Ok(LockHeldArgs { at, id })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = <Self as clap::FromArgMatches>::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for LockHeldArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        <StackEnv as clap::Args>::augment_args(cmd)
            .arg(
                clap::Arg::new("lock_id")
                    .value_name("LOCK_ID")
                    .value_parser(clap::value_parser!(LockId))
                    .required_unless_present("id")
                    .help("The lock id from `lock acquire` (or `lock list`)"),
            )
            .arg(
                clap::Arg::new("id")
                    .long("id")
                    .value_name("LOCK_ID")
                    .value_parser(clap::value_parser!(LockId))
                    .conflicts_with("lock_id")
                    .help("The lock id (same as LOCK_ID; kept for scripts)"),
            )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        <Self as clap::Args>::augment_args(cmd)
    }
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

/// `tenancy audit ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List entries of the admin log, or of a tenant's (`--tenant`), oldest first.
    #[command(after_help = examples!(
        "tenancy audit list                                  # the admin log",
        "tenancy audit list --tenant acme --action key.      # acme's key changes",
        "tenancy -o json audit list --tenant acme --since 2026-01-01T00:00:00Z",
    ))]
    List(AuditListArgs),
    /// Check a log's hash chain: names every modified, missing or reordered
    /// entry; exit 8 when it is not intact.
    #[command(after_help = examples!(
        "tenancy audit verify --tenant acme",
        "tenancy audit verify --tenant acme --head 42:9f86d081884c7d65...   # a head kept elsewhere",
        "tenancy -o json audit verify | jq .problems",
    ))]
    Verify(AuditVerifyArgs),
    /// Print a log's head (`<seq>:<sha256 hex>`), to keep outside the store.
    #[command(after_help = examples!(
        "tenancy audit head",
        "tenancy audit head --tenant acme >> heads.txt",
    ))]
    Head(AuditScopeArgs),
    /// Remove entries older than a time, keeping the chain verifiable (the
    /// cut is recorded); on a store only.
    #[command(after_help = examples!(
        "tenancy audit prune --before 90d --tenant acme",
        "tenancy audit prune --before 2026-01-01T00:00:00Z --yes",
    ))]
    Prune(AuditPruneArgs),
}

/// A time given on the command line: RFC 3339, or a duration ago (`24h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeArg {
    /// This time.
    At(chrono::DateTime<chrono::Utc>),
    /// This long before now.
    Ago(Duration),
}

impl TimeArg {
    /// The time it names at `now`.
    pub(crate) fn at(self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        match self {
            TimeArg::At(t) => t,
            TimeArg::Ago(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        }
    }
}

/// Parses an RFC 3339 time or a duration ago (`30m`, `24h`, `7d`).
pub(crate) fn parse_time(s: &str) -> Result<TimeArg, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(TimeArg::At(t.with_timezone(&chrono::Utc)));
    }
    parse_duration(s).map(TimeArg::Ago).map_err(|_| {
        format!("\"{s}\" is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration ago (30m, 24h, 7d)")
    })
}

/// Which log: the admin log, or a tenant's.
#[derive(Debug, Args)]
pub(crate) struct AuditScopeArgs {
    /// A tenant's log instead of the admin log.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
}

/// `tenancy audit list`
#[derive(Debug, Args)]
pub(crate) struct AuditListArgs {
    /// A tenant's log instead of the admin log.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
    /// Only entries at or after this time (RFC 3339, or a duration ago: 24h, 7d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<TimeArg>,
    /// Only this action (tenant.create), or actions below a prefix ending in `.` (key.).
    #[arg(long, value_name = "A")]
    pub action: Option<String>,
}

/// `tenancy audit verify`
#[derive(Debug, Args)]
pub(crate) struct AuditVerifyArgs {
    /// A tenant's log instead of the admin log.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
    /// A head printed earlier by `tenancy audit head` and kept outside the
    /// store: detects even a rewrite of the whole chain.
    #[arg(long, value_name = "H")]
    pub head: Option<String>,
}

/// `tenancy audit prune`
#[derive(Debug, Args)]
pub(crate) struct AuditPruneArgs {
    /// Remove entries older than this (RFC 3339, or a duration ago: 90d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub before: TimeArg,
    /// A tenant's log instead of the admin log.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command's help has 1 to 3 examples that start with `tenancy`
    /// (or a pipe into it) and the pointer to the exit codes and
    /// environment; global options are listed apart.
    #[test]
    fn every_command_has_examples_and_the_pointer() {
        fn walk(cmd: &clap::Command, path: &str, seen: &mut usize) {
            for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                let after = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let examples: Vec<&str> = after
                    .split("Examples:\n")
                    .nth(1)
                    .unwrap_or("")
                    .lines()
                    .take_while(|l| l.starts_with("  "))
                    .collect();
                assert!(
                    (1..=3).contains(&examples.len()),
                    "{path}: {} examples in {after:?}",
                    examples.len()
                );
                for e in &examples {
                    assert!(e.contains("tenancy "), "{path}: {e}");
                }
                assert!(
                    after.contains("`tenancy help exit-codes`")
                        && after.contains("`tenancy help environment`"),
                    "{path}: {after:?}"
                );
                *seen += 1;
                walk(sub, &path, seen);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut seen = 0;
        walk(&cmd, "tenancy", &mut seen);
        assert!(seen > 30, "{seen}");
        let help = cmd
            .find_subcommand_mut("tenant")
            .and_then(|t| t.find_subcommand_mut("init"))
            .map(|c| c.render_help().to_string())
            .unwrap_or_default();
        let global = help
            .find("Global options:")
            .expect("a Global options heading");
        assert!(help[global..].contains("--backend"), "{help}");
        assert!(help[global..].contains("--output"), "{help}");
        assert!(!help[..global].contains("--backend"), "{help}");
        assert!(help[..global].contains("--display-name"), "{help}");
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
            // ids by position; the old flags stay
            &["tenancy", "tenant", "init"],
            &["tenancy", "tenant", "init", "acme", "--plan", "pro"],
            &["tenancy", "login", "acme", "--secret-stdin"],
            &["tenancy", "migrate", "acme", "--dry-run"],
            &["tenancy", "lock", "list", "acme"],
            &[
                "tenancy",
                "lock",
                "release",
                "--stack",
                "s",
                "--env",
                "e",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
            ],
            &["tenancy", "tenant", "rotate", "acme", "-y"],
            &["tenancy", "tenant", "delete", "acme", "--yes"],
            &["tenancy", "tenant", "delete", "acme", "-y"],
            &[
                "tenancy", "state", "delete", "--stack", "s", "--env", "e", "-y",
            ],
        ];
        for args in ok {
            if let Err(e) = Cli::try_parse_from(*args) {
                panic!("{args:?}: {e}");
            }
        }
        let bad: &[&[&str]] = &[
            &["tenancy", "completions", "powershell"],
            &["tenancy", "--output", "yaml", "version"],
            &["tenancy", "migrate"],
            &["tenancy", "migrate", "acme", "--tenant", "acme"],
            &["tenancy", "login", "acme", "--tenant", "acme"],
            &["tenancy", "tenant", "init", "acme", "--name", "acme"],
            &["tenancy", "lock", "release", "--stack", "s", "--env", "e"],
            &[
                "tenancy",
                "lock",
                "release",
                "--stack",
                "s",
                "--env",
                "e",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
                "--id",
                "9b2f4c7e-1d3a-4e5b-8c6d-0a1b2c3d4e5f",
            ],
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
