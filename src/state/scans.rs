//! Scans and their findings, written once for both backends.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Arg, Mode, Row, ScanLog, State, context, int};
use crate::domain::ResourceType;
use crate::domain::scan::{
    Findings, Orphan, ScanMode, ScanState, StoreStats, Summary, Warning, Window,
};
use crate::error::{Error, Result};
use crate::time::rfc3339;

/// A recorded scan, typed.
#[derive(Debug, Clone)]
pub struct ScanRecord {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub state: ScanState,
    pub mode: ScanMode,
    pub window: Window,
    pub stores: Vec<String>,
    /// `None` while running, for a failed scan, or when the recorded text cannot be read.
    pub summary: Option<Summary>,
    /// Per-store counts; `None` when absent or unreadable — never zeros in their place.
    pub store_stats: Option<Vec<StoreStats>>,
    pub api_calls: u64,
    pub duration_ms: Option<i64>,
    /// Store name → fingerprint when the scan ran; `None` for scans recorded before
    /// fingerprints were (unknown: accepted).
    pub fingerprints: Option<HashMap<String, String>>,
    /// The stores whose orphan level a purge of this scan set as the guard's baseline.
    pub guard_accepted: Vec<String>,
}

impl ScanRecord {
    /// (objects scanned, orphans) of one store in this scan; `None` when the scan recorded no
    /// readable counts for it.
    pub fn store_counts(&self, store: &str) -> Option<(u64, u64)> {
        self.store_stats
            .as_ref()?
            .iter()
            .find(|s| s.name == store)
            .map(|s| (s.objects_scanned, s.orphans))
    }

    /// The comparable scan of SPEC §6 invariant 7 for `store` among `complete` (newest
    /// first): the last earlier complete scan with the same stores, the same window and orphans
    /// checked whose level of `store` a purge accepted (without a refusal, or with
    /// `--allow-mass-delete`), else the first such scan. So scanning again never lifts a
    /// refusal: the refused level never becomes the baseline until it is accepted.
    pub fn comparable<'a>(
        &self,
        complete: &'a [ScanRecord],
        store: &str,
    ) -> Option<&'a ScanRecord> {
        let mut stores = self.stores.clone();
        stores.sort();
        let mut alike = complete.iter().filter(|s| {
            let mut theirs = s.stores.clone();
            theirs.sort();
            s.id < self.id && theirs == stores && s.window == self.window
        });
        let mut first = None;
        for s in alike.by_ref() {
            if s.guard_accepted.iter().any(|n| n == store) {
                return Some(s);
            }
            first = Some(s);
        }
        first
    }

    /// The fingerprint `store` had when this scan ran (`None`: not recorded).
    pub fn fingerprint(&self, store: &str) -> Option<&str> {
        self.fingerprints.as_ref()?.get(store).map(String::as_str)
    }
}

const RECORD_COLUMNS: &str = "id, started_at, state, mode, scan_window, stores, summary, store_stats, api_calls, duration_ms, fingerprints, guard_accepted";

fn json<T: serde::de::DeserializeOwned>(text: Option<&str>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn record(mut r: Row) -> Result<ScanRecord> {
    let window_text = r.text(4)?;
    let window = serde_json::from_str(&window_text)
        .map_err(|e| Error::State(format!("scan window `{window_text}` cannot be read: {e}")))?;
    let stores = r.text(5)?;
    let summary = r.opt_text(6)?;
    let store_stats = r.opt_text(7)?;
    let api_calls = r.opt_text(8)?;
    Ok(ScanRecord {
        id: r.int(0)?,
        started_at: r.time(1)?,
        state: r.word(2, "scan state")?,
        mode: r.word(3, "scan mode")?,
        window,
        stores: json(Some(&stores)).unwrap_or_default(),
        summary: json(summary.as_deref()),
        store_stats: json(store_stats.as_deref()),
        api_calls: json::<HashMap<String, u64>>(api_calls.as_deref())
            .map_or(0, |m| m.values().sum()),
        duration_ms: r.opt_int(9)?,
        fingerprints: json(r.opt_text(10)?.as_deref()),
        guard_accepted: json(r.opt_text(11)?.as_deref()).unwrap_or_default(),
    })
}

/// Rows a multi-row `INSERT` carries: under both backends' limits on bound values.
const ROWS_PER_INSERT: usize = 100;

fn values_list(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", super::placeholders(r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::State(format!("cannot record the scan: {e}")))
}

async fn insert_findings(tx: &mut dyn super::Tx, id: i64, f: &Findings) -> Result<()> {
    for chunk in f.orphans.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO scan_orphans (scan_id, store, resource_type, key, size_bytes, uploaded_at, format, url) VALUES {} ON CONFLICT DO NOTHING",
            values_list(chunk.len(), 8)
        );
        let times: Vec<Option<String>> = chunk.iter().map(|o| o.uploaded_at.map(rfc3339)).collect();
        let formats: Vec<String> = chunk.iter().map(Orphan::format).collect();
        let mut args: Vec<Arg<'_>> = Vec::with_capacity(chunk.len() * 8);
        for (i, o) in chunk.iter().enumerate() {
            args.extend([
                id.into(),
                o.store.as_str().into(),
                o.resource_type.as_str().into(),
                o.key.as_str().into(),
                int(o.size),
                times[i].as_deref().into(),
                formats[i].as_str().into(),
                o.url.as_deref().into(),
            ]);
        }
        tx.execute(&sql, &args).await?;
    }
    for (n, chunk) in f.missing.chunks(ROWS_PER_INSERT).enumerate() {
        let sql = format!(
            "INSERT INTO scan_missing (scan_id, ord, reference, record_id, title, owner, media_type, key, created_at, status, link) VALUES {}",
            values_list(chunk.len(), 11)
        );
        let times: Vec<Option<String>> = chunk.iter().map(|m| m.created_at.map(rfc3339)).collect();
        let mut args: Vec<Arg<'_>> = Vec::with_capacity(chunk.len() * 11);
        for (i, m) in chunk.iter().enumerate() {
            args.extend([
                id.into(),
                int((n * ROWS_PER_INSERT + i) as u64),
                m.reference.as_str().into(),
                m.record_id.as_deref().into(),
                m.title.as_deref().into(),
                m.owner.as_deref().into(),
                m.media_type.as_deref().into(),
                m.key.as_str().into(),
                times[i].as_deref().into(),
                m.status.as_str().into(),
                m.link.as_deref().into(),
            ]);
        }
        tx.execute(&sql, &args).await?;
    }
    Ok(())
}

#[async_trait]
impl ScanLog for State {
    async fn begin_scan(
        &self,
        started_at: DateTime<Utc>,
        window: Window,
        mode: ScanMode,
        stores: &[String],
    ) -> Result<i64> {
        let window = to_text(&window)?;
        let stores = to_text(stores)?;
        let started = rfc3339(started_at);
        let mut tx = self.begin(Mode::Write).await?;
        let rows = tx
            .query(
                "INSERT INTO scans (started_at, scan_window, mode, stores, state, holder) VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id",
                &[started.as_str().into(), window.as_str().into(), crate::domain::Spelling::as_str(mode).into(), stores.as_str().into(), crate::queue::worker::worker_id().as_str().into()],
            )
            .await
            .map_err(context("cannot record the scan"))?;
        tx.commit().await?;
        rows.first()
            .ok_or_else(|| Error::State("cannot record the scan: no id came back".into()))?
            .int(0)
    }

    async fn finish_scan(&self, id: i64, f: &Findings, report_path: Option<&Path>) -> Result<()> {
        let summary = to_text(&Summary::of(f))?;
        let stats = to_text(&f.stores)?;
        let calls = to_text(&f.api_calls())?;
        let warnings = to_text(&f.warnings)?;
        let finished = rfc3339(f.finished_at);
        let scan_state = crate::domain::Spelling::as_str(f.state());
        let report = report_path.map(|p| p.display().to_string());
        let duration = i64::try_from(f.duration().as_millis()).unwrap_or(i64::MAX);
        let e = context("cannot record the scan's findings");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        tx.execute(
            "UPDATE scans SET finished_at = $1, state = $2, summary = $3, store_stats = $4, api_calls = $5, warnings = $6, report_path = $7, duration_ms = $8 WHERE id = $9",
            &[
                finished.as_str().into(),
                scan_state.into(),
                summary.as_str().into(),
                stats.as_str().into(),
                calls.as_str().into(),
                warnings.as_str().into(),
                report.as_deref().into(),
                duration.into(),
                id.into(),
            ],
        )
        .await
        .map_err(&e)?;
        insert_findings(tx.as_mut(), id, f).await.map_err(&e)?;
        tx.commit().await.map_err(&e)
    }

    async fn fail_scan(&self, id: i64, why: &str) -> Result<()> {
        let warnings = to_text(&[Warning::Failed(why.to_string())])?;
        let now = rfc3339(Utc::now());
        let mut tx = self.begin(Mode::Write).await?;
        tx.execute(
            "UPDATE scans SET state = 'failed', finished_at = $1, warnings = $2 WHERE id = $3",
            &[now.as_str().into(), warnings.as_str().into(), id.into()],
        )
        .await
        .map_err(context("cannot record the scan"))?;
        tx.commit().await
    }

    async fn history(&self, limit: u32) -> Result<Vec<ScanRecord>> {
        self.read(
            &format!("SELECT {RECORD_COLUMNS} FROM scans ORDER BY id DESC LIMIT $1"),
            &[i64::from(limit).into()],
        )
        .await
        .map_err(context("cannot read the scan history"))?
        .into_iter()
        .map(record)
        .collect()
    }

    async fn scan(&self, id: i64) -> Result<Option<ScanRecord>> {
        self.read(
            &format!("SELECT {RECORD_COLUMNS} FROM scans WHERE id = $1"),
            &[id.into()],
        )
        .await
        .map_err(context("cannot read a scan"))?
        .into_iter()
        .next()
        .map(record)
        .transpose()
    }

    async fn complete_scans(&self) -> Result<Vec<ScanRecord>> {
        self.read(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM scans WHERE state = 'complete' AND mode <> 'missing' ORDER BY id DESC LIMIT 1000"
            ),
            &[],
        )
        .await
        .map_err(context("cannot read the scan history"))?
        .into_iter()
        .map(record)
        .collect()
    }

    async fn scan_orphans(&self, id: i64) -> Result<Vec<Orphan>> {
        let rows = self
            .read(
                "SELECT store, resource_type, key, size_bytes, uploaded_at, format, url FROM scan_orphans WHERE scan_id = $1 ORDER BY store, key, resource_type",
                &[id.into()],
            )
            .await
            .map_err(context("cannot read a scan's orphans"))?;
        rows.into_iter()
            .map(|mut r| {
                let rt = r.text(1)?;
                Ok(Orphan {
                    store: r.text(0)?,
                    resource_type: ResourceType::parse_cloudinary(&rt)
                        .unwrap_or(ResourceType::Plain),
                    key: r.text(2)?,
                    size: r.count(3)?,
                    uploaded_at: r.opt_time(4)?,
                    format: Some(r.text(5)?),
                    url: r.opt_text(6)?,
                })
            })
            .collect()
    }

    async fn list_costs(&self, stores: &[String]) -> Result<HashMap<String, u64>> {
        let rows = self
            .read(
                "SELECT store_stats FROM scans WHERE store_stats IS NOT NULL ORDER BY id DESC LIMIT 100",
                &[],
            )
            .await
            .map_err(context("cannot read the scan history"))?;
        let mut out = HashMap::new();
        for mut r in rows {
            let Some(stats) = json::<Vec<StoreStats>>(r.opt_text(0)?.as_deref()) else {
                continue;
            };
            for s in stats {
                if !stores.contains(&s.name) || out.contains_key(&s.name) {
                    continue;
                }
                if let (Some(calls), true) = (s.full_list_calls, s.complete) {
                    out.insert(s.name, calls);
                }
            }
        }
        Ok(out)
    }
}

/// Store fingerprints and the guard's baseline (SPEC §6): kept beside the scans and entries they
/// belong to.
impl State {
    /// Records the fingerprint of each store a scan lists.
    pub async fn record_fingerprints(
        &self,
        id: i64,
        fingerprints: &HashMap<String, String>,
    ) -> Result<()> {
        let text = to_text(fingerprints)?;
        let mut tx = self.begin(Mode::Write).await?;
        tx.execute(
            "UPDATE scans SET fingerprints = $1 WHERE id = $2",
            &[text.as_str().into(), id.into()],
        )
        .await
        .map_err(context("cannot record the scan"))?;
        tx.commit().await
    }

    /// A purge of scan `id` accepted the orphan level of `store`: later comparable scans are
    /// measured against it.
    pub async fn accept_guard_level(&self, id: i64, store: &str) -> Result<()> {
        let e = context("cannot record the purge in the scan history");
        let mut tx = self.begin(Mode::Write).await.map_err(&e)?;
        let rows = tx
            .query(
                "SELECT guard_accepted FROM scans WHERE id = $1",
                &[id.into()],
            )
            .await
            .map_err(&e)?;
        let mut stores: Vec<String> = match rows.into_iter().next() {
            Some(mut r) => json(r.opt_text(0)?.as_deref()).unwrap_or_default(),
            None => return Ok(()),
        };
        if !stores.iter().any(|s| s == store) {
            stores.push(store.to_string());
            let text = to_text(&stores)?;
            tx.execute(
                "UPDATE scans SET guard_accepted = $1 WHERE id = $2",
                &[text.as_str().into(), id.into()],
            )
            .await
            .map_err(&e)?;
        }
        tx.commit().await
    }

    /// Gives the live entries of `store` queued without a fingerprint this one (called right
    /// after queueing them).
    pub async fn stamp_fingerprint(&self, store: &str, fingerprint: &str) -> Result<()> {
        let mut tx = self.begin(Mode::Write).await?;
        tx.execute(
            "UPDATE queue SET fingerprint = $1 WHERE store = $2 AND fingerprint IS NULL AND state IN ('pending', 'claimed')",
            &[fingerprint.into(), store.into()],
        )
        .await
        .map_err(context("cannot record the entries' store fingerprint"))?;
        tx.commit().await
    }

    /// The recorded fingerprints of these entries (those without one are left out).
    pub async fn entry_fingerprints(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT id, fingerprint FROM queue WHERE fingerprint IS NOT NULL AND id IN ({})",
                super::placeholders(1, chunk.len())
            );
            let args: Vec<Arg<'_>> = chunk.iter().map(|&i| i.into()).collect();
            let rows = self
                .read(&sql, &args)
                .await
                .map_err(context("cannot read the entries' store fingerprint"))?;
            for mut r in rows {
                out.insert(r.int(0)?, r.text(1)?);
            }
        }
        Ok(out)
    }
}
