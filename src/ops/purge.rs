//! `purge` as two steps (rustic's prune plan is the model): [`plan`] gathers the orphans of a
//! recorded complete scan (or the rows of our CSV report matched to one), applies the filters,
//! the mass-deletion guard of each store (SPEC §6 invariant 7) and the `min_age` holds, and
//! changes nothing; [`enqueue`] queues a plan — refusing one the guard refused unless the override
//! was asked for, and auditing that override.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::config::Config;
use crate::domain::event::{Event, Guard};
use crate::domain::queue::{NewEntry, Reason};
use crate::domain::scan::{Orphan, ScanMode, ScanState};
use crate::domain::{ObjectId, ResourceType};
use crate::error::{Error, Result};
use crate::report;
use crate::state::{AuditLog as _, QueueStore as _, ScanLog as _, ScanRecord};
use crate::time::{after, delta};

/// Where a purge takes its orphans from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The latest complete scan (of the named stores, when some are named).
    Latest,
    Scan(i64),
    /// Our CSV report, each row matched to an orphan of a recorded complete scan (of `scan`'s
    /// when given).
    Report {
        path: PathBuf,
        scan: Option<i64>,
    },
}

#[derive(Debug, Clone)]
pub struct PurgeRequest {
    pub source: Source,
    pub older_than: Option<Duration>,
    pub stores: Vec<String>,
    pub prefix: Option<String>,
}

/// One orphan to purge, with the scan it came from and when it may go (invariant 2).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub scan: i64,
    pub orphan: Orphan,
    /// `min_age` after its upload time: the queue holds it until then.
    pub ready_at: DateTime<Utc>,
}

/// Why the guard refuses a store.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub store: String,
    pub scan: i64,
    pub guard: Guard,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreTotal {
    pub count: u64,
    pub bytes: u64,
}

/// What a purge would do; nothing is changed by making it.
#[derive(Debug, Clone)]
pub struct PurgePlan {
    /// The source in words (`scan 3 (2025-09-15T14:30:00Z)`, `the report, matched to scan 3`).
    pub source: String,
    pub candidates: Vec<Candidate>,
    /// Report rows that match no orphan of a complete scan.
    pub skipped: usize,
    pub per_store: BTreeMap<String, StoreTotal>,
    pub refusals: Vec<Refusal>,
    pub planned_at: DateTime<Utc>,
}

impl PurgePlan {
    pub fn total(&self) -> StoreTotal {
        self.per_store
            .values()
            .fold(StoreTotal::default(), |a, t| StoreTotal {
                count: a.count + t.count,
                bytes: a.bytes + t.bytes,
            })
    }

    /// Candidates the queue will hold until they are older than `min_age`.
    pub fn held(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.ready_at > self.planned_at)
    }

    /// The refusal error of the first refused store.
    pub fn refusal(&self) -> Option<Error> {
        self.refusals.first().map(|r| {
            Error::Refused(format!(
                "purge refused for store {}: {}. A wrong key_format, key_prefix or prefix makes every object look orphaned; check the references, or pass --allow-mass-delete if this is really meant",
                r.store, r.reason
            ))
        })
    }
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub added: u64,
    pub already_queued: u64,
    pub held: u64,
}

/// Makes the plan. Errors are refusals (exit 2, HTTP 409): no such scan, an incomplete one, a
/// report that is not ours or matches nothing.
pub async fn plan(app: &App, req: &PurgeRequest) -> Result<PurgePlan> {
    for s in &req.stores {
        app.store_config(s)?;
    }
    let cfg = &app.cfg;
    let planned_at = Utc::now();
    let given = match &req.source {
        Source::Scan(id) | Source::Report { scan: Some(id), .. } => {
            Some(given_scan(app, *id).await?)
        }
        _ => None,
    };
    let complete = app.state.complete_scans().await?;
    let (mut candidates, skipped, source) = match &req.source {
        Source::Report { path, .. } => {
            let rows = read_report(path)?;
            from_report(app, &rows, given.as_ref(), &complete).await?
        }
        Source::Latest | Source::Scan(_) => {
            let scan = match given {
                Some(s) => s,
                None => latest(&complete, &req.stores)?,
            };
            let orphans = app.state.scan_orphans(scan.id).await?;
            let source = format!(
                "scan {} ({})",
                scan.id,
                crate::time::rfc3339(scan.started_at)
            );
            (
                orphans
                    .into_iter()
                    .map(|o| (scan.id, o))
                    .collect::<Vec<_>>(),
                0,
                source,
            )
        }
    };
    // Every store's trash and its overlapping stores', once per store (they ask the filesystem
    // about folder roots): nothing there is a candidate.
    let trash: Vec<Vec<String>> = (0..cfg.stores.len())
        .map(|s| crate::overlap::trash_prefixes(cfg, s))
        .collect();
    candidates.retain(|(_, o)| wanted(cfg, &trash, req, o, planned_at));
    let mut per_store: BTreeMap<String, StoreTotal> = BTreeMap::new();
    let mut scan_of: BTreeMap<String, i64> = BTreeMap::new();
    for (scan, o) in &candidates {
        let t = per_store.entry(o.store.clone()).or_default();
        t.count += 1;
        t.bytes += o.size;
        scan_of.entry(o.store.clone()).or_insert(*scan);
    }
    let refusals = guard_all(app, &scan_of, &complete).await?;
    // The largest min_age of the stores that overlap each store (invariant 1), once per store:
    // the rules ask the filesystem about folder roots.
    let min_ages: Vec<Duration> = (0..cfg.stores.len())
        .map(|s| crate::overlap::rules(cfg, s).min_age)
        .collect();
    let candidates = candidates
        .into_iter()
        .map(|(scan, orphan)| {
            // Invariant 2: held until min_age after the upload time from the listing; an
            // unknown upload time counts from now.
            let min_age =
                crate::overlap::index(cfg, &orphan.store).map_or(Duration::ZERO, |s| min_ages[s]);
            let ready_at = after(orphan.uploaded_at.unwrap_or(planned_at), min_age);
            Candidate {
                scan,
                orphan,
                ready_at,
            }
        })
        .collect();
    Ok(PurgePlan {
        source,
        candidates,
        skipped,
        per_store,
        refusals,
        planned_at,
    })
}

fn wanted(
    cfg: &Config,
    trash: &[Vec<String>],
    req: &PurgeRequest,
    o: &Orphan,
    now: DateTime<Utc>,
) -> bool {
    (req.stores.is_empty() || req.stores.contains(&o.store))
        && req.prefix.as_deref().is_none_or(|p| o.key.starts_with(p))
        && req
            .older_than
            .is_none_or(|d| o.uploaded_at.is_some_and(|t| now - t > delta(d)))
        && crate::overlap::index(cfg, &o.store)
            .is_some_and(|s| !trash[s].iter().any(|p| o.key.starts_with(p.as_str())))
}

async fn given_scan(app: &App, id: i64) -> Result<ScanRecord> {
    let s = app.state.scan(id).await?.ok_or_else(|| {
        Error::Refused(format!(
            "scan {id} is not recorded; `assetgc history` lists the scans"
        ))
    })?;
    if s.state != ScanState::Complete {
        return Err(Error::Refused(format!(
            "scan {id} is {}: the findings of a scan that did not complete never feed a deletion; run a new scan",
            s.state
        )));
    }
    if s.mode == ScanMode::MissingOnly {
        return Err(Error::Refused(format!(
            "scan {id} looked only for missing files (--missing-only): it has no orphans to purge"
        )));
    }
    Ok(s)
}

fn latest(complete: &[ScanRecord], stores: &[String]) -> Result<ScanRecord> {
    complete
        .iter()
        .find(|s| stores.iter().all(|w| s.stores.contains(w)))
        .cloned()
        .ok_or_else(|| {
            Error::Refused(if stores.is_empty() {
                "no complete scan is recorded: run `assetgc scan` first (purge deletes only what a complete scan found)".to_string()
            } else {
                format!(
                    "no complete scan of store {} is recorded: run `assetgc scan --store {}` first",
                    stores.join(", "),
                    stores.join(" --store ")
                )
            })
        })
}

/// Invariant 7, per store, against the scan each store's orphans came from.
async fn guard_all(
    app: &App,
    scan_of: &BTreeMap<String, i64>,
    complete: &[ScanRecord],
) -> Result<Vec<Refusal>> {
    let mut scans: HashMap<i64, ScanRecord> = HashMap::new();
    let mut refusals = Vec::new();
    for (store, &id) in scan_of {
        if let std::collections::hash_map::Entry::Vacant(slot) = scans.entry(id) {
            let s = app
                .state
                .scan(id)
                .await?
                .ok_or_else(|| Error::State(format!("scan {id} vanished")))?;
            slot.insert(s);
        }
        refuse_repointed(&app.cfg, &scans[&id], store)?;
        if let Some((guard, reason)) = guard(&app.cfg, &scans[&id], store, complete) {
            refusals.push(Refusal {
                store: store.clone(),
                scan: id,
                guard,
                reason,
            });
        }
    }
    Ok(refusals)
}

/// A scan's findings never apply to a store re-pointed since (SPEC §6): its fingerprint then and
/// now must agree. A scan recorded before fingerprints were has none: accepted.
fn refuse_repointed(cfg: &Config, scan: &ScanRecord, store: &str) -> Result<()> {
    let (Some(then), Some(s)) = (scan.fingerprint(store), crate::overlap::index(cfg, store)) else {
        return Ok(());
    };
    let now = crate::overlap::fingerprint(&cfg.stores[s]);
    if then == now {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "store {store} changed since scan {} (then {then}, now {now}): its findings do not apply to the new location; run a new scan",
        scan.id
    )))
}

/// Invariant 7 for one store of `scan`: which guard refuses and why, or `None`.
pub fn guard(
    cfg: &Config,
    scan: &ScanRecord,
    store: &str,
    complete: &[ScanRecord],
) -> Option<(Guard, String)> {
    let Some((scanned, orphans)) = scan.store_counts(store) else {
        return Some((
            Guard::NoCounts,
            format!(
                "scan {} recorded no counts for it, so the guard cannot be applied",
                scan.id
            ),
        ));
    };
    let share = cfg.safety.max_orphan_share;
    if scanned >= 100 && orphans as f64 > share * scanned as f64 {
        return Some((
            Guard::OrphanShare,
            format!(
                "{orphans} of its {scanned} objects scanned ({:.0}%) are orphans in scan {}, more than max_orphan_share {:.0}%",
                orphans as f64 * 100.0 / scanned as f64,
                scan.id,
                share * 100.0
            ),
        ));
    }
    if let Some(prev) = scan.comparable(complete, store)
        && let Some((_, before)) = prev.store_counts(store)
        && before >= 10
        && orphans as f64 > cfg.safety.max_orphan_jump * before as f64
    {
        return Some((
            Guard::OrphanJump,
            format!(
                "its orphans went from {before} in scan {} to {orphans} in scan {}, more than max_orphan_jump ×{}",
                prev.id, scan.id, cfg.safety.max_orphan_jump
            ),
        ));
    }
    None
}

/// Refuses a plan the guard refused, unless `allow_mass_delete`; announces each refusal.
pub fn check_guard(app: &App, plan: &PurgePlan, allow_mass_delete: bool) -> Result<()> {
    if plan.refusals.is_empty() || allow_mass_delete {
        return Ok(());
    }
    for r in &plan.refusals {
        app.publish(Event::PurgeRefused {
            store: r.store.clone(),
            scan_id: r.scan,
            guard: r.guard,
            reason: r.reason.clone(),
        });
    }
    Err(plan
        .refusal()
        .unwrap_or_else(|| Error::Refused("purge refused".into())))
}

/// Queues a plan's candidates, held until `min_age` after their upload time. A refused plan
/// is refused here too unless `allow_mass_delete`, whose use is audited per store.
pub async fn enqueue(
    app: &App,
    plan: &PurgePlan,
    allow_mass_delete: bool,
    actor: &str,
) -> Result<Enqueued> {
    check_guard(app, plan, allow_mass_delete)?;
    for r in &plan.refusals {
        app.state
            .audit_one(
                actor,
                &ObjectId::new(r.store.clone(), ResourceType::Plain, ""),
                "mass_delete_override",
                Some(&format!("--allow-mass-delete: {}", r.reason)),
            )
            .await?;
        app.publish(Event::PurgeOverridden {
            store: r.store.clone(),
            scan_id: r.scan,
            guard: r.guard,
            reason: r.reason.clone(),
        });
    }
    let now = Utc::now();
    let entries: Vec<NewEntry> = plan
        .candidates
        .iter()
        .map(|c| NewEntry {
            object: ObjectId::new(
                c.orphan.store.clone(),
                c.orphan.resource_type,
                c.orphan.key.clone(),
            ),
            reason: Reason::Purge,
            rule: String::new(),
            row_id: String::new(),
            client_id: String::new(),
            scan_id: Some(c.scan),
            uploaded_at: c.orphan.uploaded_at,
            next_attempt_at: c.ready_at.max(now),
            original_key: None,
        })
        .collect();
    let (added, already_queued) = app.state.enqueue(actor, &entries).await?;
    for (store, scan) in plan_scans(plan) {
        if let Some(s) = crate::overlap::index(&app.cfg, &store) {
            app.state
                .stamp_fingerprint(&store, &crate::overlap::fingerprint(&app.cfg.stores[s]))
                .await?;
        }
        // This purge went through (with the override where the guard refused): its level is
        // the baseline later comparable scans are measured against.
        app.state.accept_guard_level(scan, &store).await?;
    }
    let done = Enqueued {
        added,
        already_queued,
        held: plan.candidates.iter().filter(|c| c.ready_at > now).count() as u64,
    };
    app.publish(queued_event(plan, Some(&done)));
    Ok(done)
}

/// Announces a dry run's plan (what `--notify` sends when `on = "always"`).
pub fn announce_dry_run(app: &App, plan: &PurgePlan) {
    app.publish(queued_event(plan, None));
}

/// The event a purge announces once its plan is queued (`done`), or for a dry run (`None`).
fn queued_event(plan: &PurgePlan, done: Option<&Enqueued>) -> Event {
    let total = plan.total();
    Event::PurgeQueued {
        source: plan.source.clone(),
        dry_run: done.is_none(),
        candidates: total.count,
        bytes: total.bytes,
        added: done.map_or(0, |d| d.added),
        already_queued: done.map_or(0, |d| d.already_queued),
        held: done.map_or(0, |d| d.held),
        first_keys: plan
            .candidates
            .iter()
            .take(crate::domain::event::FIRST_ITEMS)
            .map(|c| {
                let rt = c.orphan.resource_type.as_str();
                if rt.is_empty() {
                    format!("{}/{}", c.orphan.store, c.orphan.key)
                } else {
                    format!("{}/{rt}/{}", c.orphan.store, c.orphan.key)
                }
            })
            .collect(),
    }
}

/// Each store of a plan with the scan its orphans came from.
fn plan_scans(plan: &PurgePlan) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for c in &plan.candidates {
        out.entry(c.orphan.store.clone()).or_insert(c.scan);
    }
    out
}

/// One orphan row of a CSV report: (store, resource_type, key).
type ReportRow = (String, String, String);

/// Reads the orphan section of our CSV report back, `'`-escaped cells included. Anything that
/// is not our CSV is refused.
fn read_report(path: &Path) -> Result<Vec<ReportRow>> {
    let not_ours = |why: &str| {
        Error::Refused(format!(
            "--from-report {}: {why}; give a CSV report written by `assetgc scan`",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| {
        Error::Usage(format!(
            "--from-report {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut records = rdr.records();
    let mut next = || -> Result<Option<csv::StringRecord>> {
        records
            .next()
            .transpose()
            .map_err(|e| not_ours(&format!("not a CSV file ({e})")))
    };
    match next()? {
        Some(r) if r.len() == 1 && r[0].trim_start_matches('\u{feff}') == report::ORPHANS_TITLE => {
        }
        _ => {
            return Err(not_ours(&format!(
                "it does not start with `{}`",
                report::ORPHANS_TITLE
            )));
        }
    }
    match next()? {
        Some(r) if r.iter().eq(report::ORPHAN_HEADER.iter().copied()) => {}
        Some(r) => {
            return Err(not_ours(&format!(
                "its header is `{}`, not `{}`",
                r.iter().collect::<Vec<_>>().join(","),
                report::ORPHAN_HEADER.join(",")
            )));
        }
        None => return Err(not_ours("it has no header")),
    }
    let mut rows = Vec::new();
    while let Some(r) = next()? {
        if r.iter().all(str::is_empty) {
            break;
        }
        if r.len() != report::ORPHAN_HEADER.len() {
            if r.len() == 1 && &r[0] == report::MISSING_TITLE {
                break;
            }
            return Err(not_ours(&format!(
                "line {} has {} cells, not {}",
                r.position().map_or(0, csv::Position::line),
                r.len(),
                report::ORPHAN_HEADER.len()
            )));
        }
        rows.push((
            report::unescape_cell(&r[0]).to_string(),
            report::unescape_cell(&r[2]).to_string(),
            report::unescape_cell(&r[1]).to_string(),
        ));
    }
    Ok(rows)
}

/// Matches report rows to the orphans of the latest complete scan of their store (or of
/// `given`); rows that match nothing are skipped and counted.
async fn from_report(
    app: &App,
    rows: &[ReportRow],
    given: Option<&ScanRecord>,
    complete: &[ScanRecord],
) -> Result<(Vec<(i64, Orphan)>, usize, String)> {
    let mut by_store: BTreeMap<&str, Vec<&ReportRow>> = BTreeMap::new();
    for r in rows {
        by_store.entry(r.0.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut scans = Vec::new();
    for (store, rows) in by_store {
        let scan = match given {
            Some(s) if s.stores.iter().any(|n| n == store) => Some(s),
            Some(_) => None,
            None => complete
                .iter()
                .find(|s| s.stores.iter().any(|n| n == store)),
        };
        let Some(scan) = scan.filter(|_| app.cfg.stores.iter().any(|s| s.name == store)) else {
            skipped += rows.len();
            continue;
        };
        let orphans: HashMap<(String, String), Orphan> = app
            .state
            .scan_orphans(scan.id)
            .await?
            .into_iter()
            .filter(|o| o.store == store)
            .map(|o| ((o.resource_type.as_str().to_string(), o.key.clone()), o))
            .collect();
        let mut seen = HashSet::new();
        for r in rows {
            let id = (r.1.clone(), r.2.clone());
            match orphans.get(&id) {
                Some(o) if seen.insert(id) => out.push((scan.id, o.clone())),
                Some(_) => {}
                None => skipped += 1,
            }
        }
        if !scans.contains(&scan.id) {
            scans.push(scan.id);
        }
    }
    if out.is_empty() {
        return Err(Error::Refused(format!(
            "no row of the report matches an orphan of a recorded complete scan ({skipped} row{} checked); run `assetgc scan` and purge from its report",
            if skipped == 1 { "" } else { "s" }
        )));
    }
    let source = format!(
        "the report, matched to scan{} {}",
        if scans.len() == 1 { "" } else { "s" },
        scans
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((out, skipped, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scan::{StoreStats, Window};

    fn config() -> Config {
        crate::config::parse(
            "[stores.media]\nurl = \"./media\"\n",
            "test.toml",
            std::path::Path::new("/tmp"),
            &|_| None,
        )
        .expect("config")
    }

    fn scan(id: i64, stats: Option<Vec<StoreStats>>) -> ScanRecord {
        ScanRecord {
            id,
            started_at: Utc::now(),
            state: ScanState::Complete,
            mode: ScanMode::Both,
            window: Window::All,
            stores: vec!["media".into()],
            summary: None,
            store_stats: stats,
            api_calls: 0,
            duration_ms: None,
            fingerprints: None,
            guard_accepted: Vec::new(),
        }
    }

    fn counts(scanned: u64, orphans: u64) -> Vec<StoreStats> {
        vec![StoreStats {
            name: "media".into(),
            objects_scanned: scanned,
            orphans,
            ..StoreStats::default()
        }]
    }

    #[test]
    fn unreadable_counts_refuse_instead_of_reading_zero() {
        let cfg = config();
        let refused = guard(&cfg, &scan(1, None), "media", &[]);
        assert!(matches!(refused, Some((Guard::NoCounts, _))), "{refused:?}");
        // Counts of another store do not stand in for this one's.
        let mut other = counts(1000, 0);
        other[0].name = "elsewhere".into();
        assert!(matches!(
            guard(&cfg, &scan(1, Some(other)), "media", &[]),
            Some((Guard::NoCounts, _))
        ));
    }

    #[test]
    fn share_and_jump_refuse_per_store() {
        let cfg = config();
        assert!(guard(&cfg, &scan(2, Some(counts(200, 50))), "media", &[]).is_none());
        assert!(matches!(
            guard(&cfg, &scan(2, Some(counts(200, 150))), "media", &[]),
            Some((Guard::OrphanShare, _))
        ));
        // 12 orphans before, 130 now (of 1000 scanned): more than ×10.
        let before = [scan(1, Some(counts(1000, 12)))];
        assert!(matches!(
            guard(&cfg, &scan(2, Some(counts(1000, 130))), "media", &before),
            Some((Guard::OrphanJump, _))
        ));
        assert!(guard(&cfg, &scan(2, Some(counts(1000, 110))), "media", &before).is_none());
    }
}
