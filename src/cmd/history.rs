//! `assetgc history`: past scans and their counts, newest first, from the state database.

use std::fmt::Write as _;

use crate::cli::{Global, HistoryArgs};
use crate::config::{self, StateUrl};
use crate::error::{Exit, Result};
use crate::state::{ScanRecord, State};

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
        println!(
            "No scans recorded yet: {} does not exist (run `assetgc scan`).",
            path.display()
        );
        return Ok(Exit::Ok);
    }
    let state = State::open(&state_url).await?;
    let scans = state.history(args.limit).await;
    state.close().await;
    print!("{}", table(&scans?));
    Ok(Exit::Ok)
}

fn window(w: &serde_json::Value) -> String {
    if let Some(d) = w["days"].as_u64() {
        format!("{d} days")
    } else if let Some(t) = w["since"].as_str() {
        format!("since {}", t.get(..10).unwrap_or(t))
    } else if w["all"].as_bool() == Some(true) {
        "all".into()
    } else {
        "?".into()
    }
}

fn count(s: &ScanRecord, field: &str) -> String {
    s.summary
        .as_ref()
        .and_then(|v| v[field].as_u64())
        .map_or_else(|| "-".into(), |n| n.to_string())
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
                s.started_at
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string(),
                window(&s.window),
                s.mode.clone(),
                s.state.clone(),
                count(s, "objects_scanned"),
                count(s, "orphans"),
                count(s, "missing"),
                count(s, "missing_active"),
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
