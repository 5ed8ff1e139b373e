//! Parses arguments, builds the runtime, runs the command and maps the outcome to an exit code.

use std::process::ExitCode;

use assetgc::Exit;
use assetgc::cli::{Cli, Color, Command, LogFormat};
use assetgc::cmd::{self, Ui};
use assetgc::error::{one_line, sanitize};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            // One line: clap's first paragraph (a list of missing arguments joined to it),
            // without its usage block.
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = match first.split_first() {
                Some((head, rest)) if !rest.is_empty() => format!("{head} {}", rest.join(", ")),
                Some((head, _)) => (*head).to_string(),
                None => "invalid arguments".to_string(),
            };
            let first = first.trim_start_matches("error: ");
            eprintln!("error: {} (see `assetgc --help`)", sanitize(first));
            return ExitCode::from(Exit::Usage.code());
        }
    };
    init_logging(&cli);
    let ui = Ui::new(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Unreachable.code());
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Demo(a) => cmd::demo::run(&cli.global, a, ui).await,
            Command::Init(a) => cmd::init::run(a),
            Command::Check => cmd::check::run(&cli.global, ui).await,
            Command::Scan(a) => cmd::scan::run(&cli.global, a, ui).await,
            Command::History(a) => cmd::history::run(&cli.global, a).await,
            Command::Purge(a) => cmd::purge::run(&cli.global, a, ui).await,
            Command::Clean(a) => cmd::clean::run(&cli.global, a, ui).await,
            Command::Queue(c) => cmd::queue::run(&cli.global, c, ui).await,
            Command::Restore(a) => cmd::restore::run(&cli.global, a).await,
            Command::Audit(a) => cmd::audit::run(&cli.global, a).await,
            Command::Expire(a) => cmd::expire::run(&cli.global, a, ui).await,
            Command::Triggers(c) => cmd::triggers::run(&cli.global, c).await,
            Command::Serve(a) => cmd::serve::run(&cli.global, a).await,
            Command::Token(c) => cmd::token::run(&cli.global, c).await,
            Command::Jobs(c) => cmd::jobs::run(&cli.global, c).await,
            Command::Notify(c) => cmd::notify::run(&cli.global, c).await,
        }
    });
    // Tasks still blocked on a file walk must not hold the process open.
    runtime.shutdown_background();
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(e.exit().code())
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = if cli.global.verbose {
        "assetgc=debug,info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ASSETGC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_color(cli.global.color))
        .with_target(false);
    match cli.global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().init(),
    }
}

/// Colour codes on stderr: `--color always`, or `auto` on a terminal without `NO_COLOR`.
fn stderr_color(color: Color) -> bool {
    use std::io::IsTerminal as _;
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}
