//! Command-line definitions only; each command runs from its own module in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "assetgc",
    version,
    about = "Finds orphaned files in storage and database rows whose files are missing, and reports them",
    after_help = "Examples:\n  assetgc demo                      build a sample app and scan it (no services needed)\n  assetgc init                      write a commented assetgc.toml\n  assetgc check                     validate the config and reach every store and database\n  assetgc scan --days 7             orphans uploaded in the last 7 days, and missing files\n  assetgc scan --all --json         everything, as JSON on stdout"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Config file (else $ASSETGC_CONFIG, else ./assetgc.toml)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only the summary line
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a sample app (DIR/assetgc.toml, DIR/app.db, DIR/media/) and scan it; no services needed
    Demo(DemoArgs),
    /// Write a commented assetgc.toml
    Init(InitArgs),
    /// Validate the config, reach every store and database, run every reference query with LIMIT 1
    Check,
    /// Detect orphaned and missing files
    Scan(ScanArgs),
    /// Past scans and their counts, newest first
    History(HistoryArgs),
    /// Delete the orphans of a recorded scan (a dry run unless --confirm)
    Purge(PurgeArgs),
    /// Run retention policies: delete what [[policies]] match once it is old enough
    Clean(CleanArgs),
    /// The durable deletion queue: add, run, stats, list, retry, drop
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Bring quarantined objects back
    Restore(RestoreArgs),
    /// Read the audit log, newest first
    Audit(AuditArgs),
    /// Database triggers that queue replaced and deleted files: install, uninstall, status
    #[command(subcommand)]
    Triggers(TriggersCommand),
    /// Run expiry rules: soft-deleted rows past their retention lose their files, then the rows
    Expire(ExpireArgs),
    /// The HTTP API, the scheduler of [[jobs]] and the queue worker, in one process
    Serve(ServeArgs),
    /// API tokens for `serve`
    #[command(subcommand)]
    Token(TokenCommand),
    /// The scheduled [[jobs]]: list them, run one now, export them for cron, systemd, k8s or Heroku
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Notifications: send a test message to every channel of [notify]
    #[command(subcommand)]
    Notify(NotifyCommand),
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to every configured channel (email, slack, discord, webhook)
    Test,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// host:port to listen on [default: [server] listen, 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Do not work the deletion queue in this process (another instance or `queue run` does)
    #[arg(long)]
    pub no_worker: bool,
    /// Do not run [[jobs]] in this process (another instance runs them)
    #[arg(long)]
    pub no_scheduler: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token: printed alone on stdout, once; only its SHA-256 is kept
    New(TokenNewArgs),
}

#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// read answers GET requests; write may do everything
    #[arg(long, value_enum, default_value_t = TokenScope::Read)]
    pub scope: TokenScope,
    /// A name for the token (audit log, metrics) [default: token-N]
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenScope {
    Read,
    Write,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job with its schedule, last run, next run and status
    List(JobsListArgs),
    /// Run a job now (never while another run of it goes on) and record it
    Run(JobsRunArgs),
    /// The jobs as crontab lines, systemd units, Kubernetes CronJobs or Heroku Scheduler entries
    Export(JobsExportArgs),
}

#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// As JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobsRunArgs {
    /// The job's name in [[jobs]]
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct JobsExportArgs {
    #[arg(long, value_enum)]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Crontab,
    Systemd,
    K8s,
    Heroku,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Only this expiry rule [default: every rule]
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Run only each rule's `select` and say what would go; nothing is queued, deleted or written
    #[arg(long)]
    pub dry_run: bool,
    /// Send notifications as configured in [notify]
    #[arg(long)]
    pub notify: bool,
    /// The run's summary as JSON on stdout, and nothing else there
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Delete for real (without it: a dry run that deletes nothing)
    #[arg(long)]
    pub confirm: bool,
    /// Override the mass-deletion guard for this run (recorded in the audit log)
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Take the orphans of this scan [default: the latest complete scan]
    #[arg(long, value_name = "ID")]
    pub scan: Option<i64>,
    /// Take the orphans listed in this CSV report (they must be orphans of a recorded complete scan)
    #[arg(long, value_name = "PATH")]
    pub from_report: Option<PathBuf>,
    /// Only orphans uploaded longer ago than this (e.g. 30d, 12h)
    #[arg(long, value_name = "DUR")]
    pub older_than: Option<String>,
    /// Only this store (repeatable)
    #[arg(long = "store", value_name = "NAME")]
    pub stores: Vec<String>,
    /// Only keys that start with this prefix
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Send notifications as configured in [notify]
    #[arg(long)]
    pub notify: bool,
    /// How many keys the dry run lists
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit_list: usize,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only this policy [default: every policy]
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Replace older_than of every selected policy with N days
    #[arg(long, value_name = "N")]
    pub retention_days: Option<u64>,
    /// Say what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Send notifications as configured in [notify]
    #[arg(long)]
    pub notify: bool,
    /// The run's summary as JSON on stdout (the fields of POST /api/cleanup/bulk's answer)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Queue keys of one store for deletion (`-` reads one key a line from stdin)
    Add(QueueAddArgs),
    /// Process due entries in batches until none is due
    Run(QueueRunArgs),
    /// Pending, failed and done counts, oldest and newest queued, counts by attempts
    Stats(QueueStatsArgs),
    /// Entries waiting (or --failed ones)
    List(QueueListArgs),
    /// Make failed entries due again, attempts reset
    Retry(QueueSelectArgs),
    /// Drop entries: they are never deleted
    Drop(QueueSelectArgs),
}

#[derive(Debug, Args)]
pub struct QueueAddArgs {
    /// The store the keys belong to
    #[arg(long, value_name = "S")]
    pub store: String,
    /// Cloudinary: image, video or raw (else taken from keys like image/upload/v1/id.jpg)
    #[arg(long, value_name = "T")]
    pub resource_type: Option<String>,
    /// Your own id for these entries, kept with them
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Keys to delete, or `-` to read them from stdin
    #[arg(value_name = "KEY", required = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct QueueRunArgs {
    /// Entries a batch claims (1 to 1000) [default: [queue] batch_size, 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: Option<u64>,
    /// Attempts before an entry is left `failed` [default: [queue] max_attempts, 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Process at most N entries
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Send notifications as configured in [notify]
    #[arg(long)]
    pub notify: bool,
}

#[derive(Debug, Args)]
pub struct QueueStatsArgs {
    /// As JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueueListArgs {
    /// The failed entries instead of the waiting ones
    #[arg(long)]
    pub failed: bool,
    /// How many entries to show
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// As JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all_failed"])))]
pub struct QueueSelectArgs {
    /// Entry ids (see `assetgc queue list`)
    #[arg(value_name = "ID")]
    pub ids: Vec<i64>,
    /// Every failed entry
    #[arg(long, conflicts_with = "ids")]
    pub all_failed: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Original keys of quarantined objects
    #[arg(value_name = "KEY", required = true)]
    pub keys: Vec<String>,
    /// The store (may be left out when there is one)
    #[arg(long, value_name = "S")]
    pub store: Option<String>,
    /// Cloudinary: image, video or raw
    #[arg(long, value_name = "T")]
    pub resource_type: Option<String>,
    /// Replace an object that exists at KEY
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Create the outbox and the triggers of every reference with `track` (again: harmless)
    Install(TriggersArgs),
    /// Remove what install created; pending outbox rows are queued first
    Uninstall(TriggersUninstallArgs),
    /// Per reference: installed or not, outbox rows pending and due
    Status(TriggersArgs),
}

#[derive(Debug, Args)]
pub struct TriggersArgs {
    /// Only this reference (it must have `track`)
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct TriggersUninstallArgs {
    /// Drop pending outbox rows instead of queueing them (their files are never deleted)
    #[arg(long)]
    pub discard_pending: bool,
    /// Only this reference's triggers and outbox rows (the outbox itself stays)
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many rows to show
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Only rows of this key
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// As JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many scans to show
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to build the sample app
    #[arg(long, value_name = "DIR", default_value = "assetgc-demo")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
    /// Where to write the config
    #[arg(long, value_name = "PATH", default_value = "assetgc.toml")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Objects uploaded (and rows created) in the last N days [default: 30]
    #[arg(long, value_name = "N", conflicts_with_all = ["all", "since"])]
    pub days: Option<u32>,
    /// No window: every object and every row
    #[arg(long, conflicts_with = "since")]
    pub all: bool,
    /// Objects uploaded and rows created since DATE (2025-09-01 or RFC 3339)
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only look for orphaned files
    #[arg(long, conflicts_with = "missing_only")]
    pub orphans_only: bool,
    /// Only look for rows whose files are missing
    #[arg(long)]
    pub missing_only: bool,
    /// Scan only this store (repeatable)
    #[arg(long = "store", value_name = "NAME")]
    pub stores: Vec<String>,
    /// Report file (.csv or .json) [default: <reports dir>/asset_detection_<time>.csv]
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Report format, when the --output extension does not say
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// Print the JSON report on stdout, and nothing else there
    #[arg(long)]
    pub json: bool,
    /// Send notifications as configured in [notify]
    #[arg(long)]
    pub notify: bool,
    /// Exit with 3 when the scan is complete and found anything
    #[arg(long)]
    pub fail_on_findings: bool,
    /// How many findings the console lists
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit_list: usize,
}
