//! `assetgc history`: past scans and their counts, newest first, from the state database.

use std::fmt::Write as _;

use crate::cli::{Global, HistoryArgs};
use crate::config::{self, StateUrl};
use crate::domain::scan::Window;
use crate::error::{Exit, Result};
use crate::state::{ScanLog as _, ScanRecord, State};

pub async fn run(g: &Global, args: &HistoryArgs) -> Result<Exit> {
    // Without a config file the state database is the default one in the current folder.
    let state_url = match config::load(g.config.as_deref())? {
        Some(cfg) => cfg.state_url,
        None => StateUrl::Sqlite(
            std::path::absolute("assetgc.db")
                .unwrap_or_else(|_| std::path::PathBuf::from("assetgc.db")),
        ),
    };
    if let StateUrl::Sqlite(path) = &state_url
        && !path.exists()
    {
        outln!(
            "No scans recorded yet: {} does not exist (run `assetgc scan`).",
            path.display()
        );
        return Ok(Exit::Ok);
    }
    let state = State::open(&state_url).await?;
    let scans = state.history(args.limit).await;
    state.close().await;
    super::print(&table(&scans?))?;
    Ok(Exit::Ok)
}

fn window(w: Window) -> String {
    match w {
        Window::Days(d) => format!("{d} days"),
        Window::Since(t) => format!("since {}", t.format("%Y-%m-%d")),
        Window::All => "all".into(),
    }
}

fn count(s: &ScanRecord, field: impl Fn(&crate::domain::scan::Summary) -> u64) -> String {
    s.summary
        .as_ref()
        .map_or_else(|| "-".into(), |v| field(v).to_string())
}

fn table(scans: &[ScanRecord]) -> String {
    if scans.is_empty() {
        return "No scans recorded yet.\n".into();
    }
    let header = [
        "ID",
        "STARTED (UTC)",
        "WINDOW",
        "MODE",
        "RESULT",
        "OBJECTS",
        "ORPHANS",
        "MISSING",
        "ACTIVE",
        "API CALLS",
        "DURATION",
        "STORES",
    ];
    let rows: Vec<[String; 12]> = scans
        .iter()
        .map(|s| {
            [
                s.id.to_string(),
                s.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                window(s.window),
                s.mode.to_string(),
                s.state.to_string(),
                count(s, |v| v.objects_scanned),
                count(s, |v| v.orphans),
                count(s, |v| v.missing),
                count(s, |v| v.missing_active),
                s.api_calls.to_string(),
                s.duration_ms.map_or_else(
                    || "-".into(),
                    |ms| format!("{}.{:02} s", ms / 1000, (ms % 1000) / 10),
                ),
                s.stores.join(", "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}
