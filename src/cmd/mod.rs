//! One module per command; each returns the exit outcome or an error that carries its own.

use std::io::IsTerminal;
use std::sync::Arc;

use crate::app::App;
use crate::cli::{Color, Global};
use crate::config::{self, Config};
use crate::error::{Error, Exit, Result};

/// `println!` for command output: a reader that went away (`assetgc audit | head`) ends the
/// output quietly instead of a panic.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

pub mod audit;
pub mod check;
pub mod clean;
pub mod demo;
pub mod expire;
pub mod history;
pub mod init;
pub mod jobs;
pub mod notify;
pub mod purge;
pub mod queue;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod token;
pub mod triggers;

/// How output should look, decided once from the flags and the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    /// Colour on stdout.
    pub color: bool,
    /// Progress bars on stderr.
    pub bars: bool,
}

impl Ui {
    pub fn new(g: &Global) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match g.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => !no_color && std::io::stdout().is_terminal(),
        };
        let bars =
            !g.quiet && !no_color && g.color != Color::Never && std::io::stderr().is_terminal();
        Ui {
            quiet: g.quiet,
            color,
            bars,
        }
    }
}

/// The configuration a command needs; a clear error when there is none.
pub fn require_config(g: &Global) -> Result<Config> {
    config::load(g.config.as_deref())?.ok_or_else(no_config)
}

/// A config file, or for commands that need no references, what the environment gives.
pub fn config_or_env(g: &Global) -> Result<Config> {
    if let Some(cfg) = config::load(g.config.as_deref())? {
        return Ok(cfg);
    }
    config::from_env(&|name| std::env::var(name).ok())?.ok_or_else(no_config)
}

fn no_config() -> Error {
    Error::Usage(
        "no config file: ./assetgc.toml does not exist; pass --config PATH, set ASSETGC_CONFIG, or run `assetgc init` to write one"
            .into(),
    )
}

/// Runs `f` on the application, then closes it (its last API calls counted, the state database
/// closed) whatever `f` returned.
pub async fn with_app<F, Fut>(cfg: Config, f: F) -> Result<Exit>
where
    F: FnOnce(Arc<App>) -> Fut,
    Fut: std::future::Future<Output = Result<Exit>>,
{
    let app = App::open(cfg).await?;
    let result = f(Arc::clone(&app)).await;
    app.close().await;
    result
}

/// Writes to stdout; a closed pipe (`| head`) is not an error of the command.
pub fn print(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}
