//! `assetgc serve`: the HTTP API, the scheduler and the queue worker (SPEC §8).

use crate::cli::{Global, ServeArgs};
use crate::config::check_listen;
use crate::error::{Error, Exit, Result};
use crate::server::{self, ServeOptions};

pub async fn run(g: &Global, a: &ServeArgs) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    let listen = match &a.listen {
        Some(l) => {
            check_listen(l).map_err(Error::Usage)?;
            l.clone()
        }
        None => cfg.server.listen.clone(),
    };
    let app = crate::app::App::open(cfg).await?;
    let opts = ServeOptions {
        worker: !a.no_worker,
        scheduler: !a.no_scheduler,
        json_logs: g.log_format == crate::cli::LogFormat::Json,
        ..ServeOptions::default()
    };
    server::serve(app, &listen, opts).await?;
    Ok(Exit::Ok)
}
