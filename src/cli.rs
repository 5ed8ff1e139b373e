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
