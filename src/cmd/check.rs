//! `assetgc check`: validate the config, reach every store and database, run every reference
//! query with `LIMIT 1`. Exit 2 for config errors, 1 when anything is unreachable, 4 when a
//! query fails (SPEC §3).

use std::fmt::Write as _;

use super::Ui;
use crate::cli::Global;
use crate::error::{Exit, Result, sanitize};
use crate::ops::check::{self, CheckReport, ReferenceCheck, RuleCheck};
use crate::report::Style;

pub async fn run(g: &Global, ui: Ui) -> Result<Exit> {
    let cfg = super::config_or_env(g)?;
    // A config file without a store is a config error, for `check` as for `scan` (SPEC §3),
    // said before the state database is opened. (Without a file, DATABASE_URL alone is checked.)
    if cfg.stores.is_empty() && cfg.path.is_some() {
        return Err(crate::error::Error::Usage(
            "the config has no [stores.*] section, so there is nothing to check: add one, e.g. [stores.media] url = \"./media\", and [[references]] that point into it".into(),
        ));
    }
    let origin = cfg.path.as_ref().map_or_else(
        || "(no file: DATABASE_URL / CLOUDINARY_URL / CLOUDCUBE_URL)".into(),
        |p| p.display().to_string(),
    );
    let head = format!(
        "config {origin}: {} store(s), {} database(s), {} reference(s)\n",
        cfg.stores.len(),
        cfg.databases.len(),
        cfg.references.len()
    );
    super::with_app(cfg, |app| async move {
        let report = check::check(&app).await;
        super::print(&head)?;
        super::print(&render(&report, Style { color: ui.color }))?;
        Ok(report.exit())
    })
    .await
}

fn render(r: &CheckReport, st: Style) -> String {
    let ok = st.good("ok");
    let mut out = String::new();
    for s in &r.stores {
        let _ = match &s.result {
            Ok(()) => writeln!(out, "store {} ({}): {ok}", s.name, s.location),
            Err(e) => writeln!(
                out,
                "store {}: {}",
                s.name,
                st.bad(&format!("UNREACHABLE: {}", sanitize(e)))
            ),
        };
    }
    for d in &r.databases {
        let _ = match &d.result {
            Ok(()) => writeln!(out, "database {} ({}): {ok}", d.name, d.location),
            Err(e) => writeln!(
                out,
                "database {}: {}",
                d.name,
                st.bad(&format!("UNREACHABLE: {}", sanitize(e)))
            ),
        };
    }
    for (name, c) in &r.references {
        let _ = match c {
            ReferenceCheck::Ok { store, columns } => writeln!(
                out,
                "reference {name} → store {store}: {ok} (columns: {})",
                columns.join(", ")
            ),
            ReferenceCheck::Unwrapped { store, columns, .. } => writeln!(
                out,
                "reference {name} → store {store}: {} (columns: {})",
                st.warn("prepared, not run: it cannot be wrapped in LIMIT 1 (see the warning)"),
                columns.join(", ")
            ),
            ReferenceCheck::NoKey { columns } => writeln!(
                out,
                "reference {name}: {}",
                st.bad(&format!(
                    "FAILED: the query returns no `key` column (it returns: {}); alias the column, e.g. `SELECT image AS key …`",
                    columns.join(", ")
                ))
            ),
            ReferenceCheck::Failed(e) => {
                writeln!(out, "reference {name}: {}", st.bad(&format!("FAILED: {}", sanitize(e))))
            }
            ReferenceCheck::Skipped { database } => writeln!(
                out,
                "reference {name}: skipped (database {database} unreachable)"
            ),
        };
    }
    for (name, c) in &r.rules {
        let _ = match c {
            RuleCheck::Ok(what) => writeln!(out, "{name}: {ok} ({what})"),
            RuleCheck::Failed(e) | RuleCheck::Invalid(e) => {
                writeln!(
                    out,
                    "{name}: {}",
                    st.bad(&format!("FAILED: {}", sanitize(e)))
                )
            }
            RuleCheck::Skipped { database } => {
                writeln!(out, "{name}: skipped (database {database} unreachable)")
            }
        };
    }
    for w in &r.warnings {
        let _ = writeln!(out, "{}", st.warn(&format!("warning: {}", sanitize(w))));
    }
    if r.exit() == Exit::Ok {
        let _ = match r.warnings.len() {
            0 => writeln!(out, "{}", st.good("everything answered")),
            1 => writeln!(out, "{}", st.warn("everything answered, with 1 warning")),
            n => writeln!(
                out,
                "{}",
                st.warn(&format!("everything answered, with {n} warnings"))
            ),
        };
    }
    out
}
