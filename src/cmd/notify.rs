//! `assetgc notify test`: one test message to every channel of `[notify]`, whatever `on` says,
//! each channel's result on its own line. Exit 0 when every channel took it, 4 when one did
//! not, 2 when none is configured.

use std::fmt::Write as _;

use crate::cli::{Global, NotifyCommand};
use crate::error::{Error, Exit, Result};
use crate::notify::{self, Kind, Sent};

pub async fn run(g: &Global, c: &NotifyCommand) -> Result<Exit> {
    let NotifyCommand::Test = c;
    let cfg = super::require_config(g)?;
    let channels = cfg.notify.channels();
    if channels.is_empty() {
        return Err(Error::Usage(
            "[notify] configures no channel: add email, slack, discord or webhook (see the README's Notifications section)".into(),
        ));
    }
    super::with_app(cfg, |app| async move {
        let notice = notify::build::test_notice(app.cfg.app_name.clone(), &channels);
        debug_assert_eq!(notice.kind, Kind::Test);
        let Sent::Delivered(deliveries) = notify::deliver(&app, &notice).await else {
            return Ok(Exit::Incomplete);
        };
        let mut out = String::new();
        for d in &deliveries {
            match &d.error {
                None => {
                    let _ = writeln!(out, "{}: sent", d.channel);
                }
                Some(e) => {
                    let _ = writeln!(
                        out,
                        "{}: FAILED after {} attempt{}: {e}",
                        d.channel,
                        d.attempts,
                        if d.attempts == 1 { "" } else { "s" }
                    );
                }
            }
        }
        super::print(&out)?;
        Ok(if deliveries.iter().all(|d| d.error.is_none()) {
            Exit::Ok
        } else {
            Exit::Incomplete
        })
    })
    .await
}
