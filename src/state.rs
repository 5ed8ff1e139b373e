//! The embedded state database: every scan is recorded here (SPEC §5), and later the queue, the
//! audit log and job runs. SQLite by default, created when missing; migrations in `migrations/`.

use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::config::StateUrl;
use crate::error::{Error, Result};
use crate::reconcile::{Findings, Mode, Window};
use crate::report::{self, Summary};

pub struct State {
    pool: SqlitePool,
}

fn state_err(e: impl std::fmt::Display) -> Error {
    Error::State(e.to_string())
}

impl State {
    pub async fn open(url: &StateUrl) -> Result<State> {
        let StateUrl::Sqlite(path) = url;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::State(format!(
                    "cannot create folder {} for {}: {e}",
                    dir.display(),
                    path.display()
                ))
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| Error::State(format!("cannot open {}: {e}", path.display())))?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| Error::State(format!("cannot migrate {}: {e}", path.display())))?;
        Ok(State { pool })
    }

    /// Records the start of a scan and returns its id.
    pub async fn begin_scan(
        &self,
        started_at: chrono::DateTime<chrono::Utc>,
        window: Window,
        mode: Mode,
        stores: &[String],
    ) -> Result<i64> {
        let mode = match mode {
            Mode::Both => "both",
            Mode::OrphansOnly => "orphans",
            Mode::MissingOnly => "missing",
        };
        let row = sqlx::query(
            "INSERT INTO scans (started_at, scan_window, mode, stores, state) VALUES (?, ?, ?, ?, 'running') RETURNING id",
        )
        .bind(report::rfc3339(started_at))
        .bind(window.to_json().to_string())
        .bind(mode)
        .bind(json!(stores).to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(state_err)?;
        row.try_get::<i64, _>(0).map_err(state_err)
    }

    pub async fn finish_scan(
        &self,
        id: i64,
        f: &Findings,
        report_path: Option<&std::path::Path>,
    ) -> Result<()> {
        let summary = report::summary_json(&Summary::of(f));
        let stores: Vec<serde_json::Value> = f
            .stores
            .iter()
            .map(|s| {
                json!({
                    "store": s.name, "reachable": s.reachable, "complete": s.complete,
                    "listed": s.listed, "objects_scanned": s.objects_scanned, "valid": s.valid,
                    "orphans": s.orphans, "orphan_bytes": s.orphan_bytes,
                    "too_recent": s.too_recent, "ignored": s.ignored,
                })
            })
            .collect();
        let api_calls: serde_json::Map<String, serde_json::Value> = f
            .stores
            .iter()
            .map(|s| (s.name.clone(), json!(s.api_calls)))
            .collect();
        sqlx::query(
            "UPDATE scans SET finished_at = ?, state = ?, summary = ?, store_stats = ?, api_calls = ?, warnings = ?, report_path = ?, duration_ms = ? WHERE id = ?",
        )
        .bind(report::rfc3339(f.finished_at))
        .bind(if f.complete { "complete" } else { "incomplete" })
        .bind(summary.to_string())
        .bind(json!(stores).to_string())
        .bind(serde_json::Value::Object(api_calls).to_string())
        .bind(json!(f.warnings).to_string())
        .bind(report_path.map(|p| p.display().to_string()))
        .bind(i64::try_from(f.duration().as_millis()).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(state_err)?;
        Ok(())
    }

    pub async fn fail_scan(&self, id: i64, why: &str) -> Result<()> {
        sqlx::query(
            "UPDATE scans SET state = 'failed', finished_at = ?, warnings = ? WHERE id = ?",
        )
        .bind(report::rfc3339(chrono::Utc::now()))
        .bind(json!([why]).to_string())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(state_err)?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
