//! `assetgc purge`: delete the orphans of a recorded complete scan (SPEC §6). A dry run unless
//! `--confirm`; with it, the orphans are queued (held until `min_age` from their upload time)
//! and the queue runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use super::Ui;
use crate::cli::{Global, PurgeArgs};
use crate::config::{Config, parse_duration};
use crate::error::{Error, Exit, Result};
use crate::key::ResourceType;
use crate::queue::{self, NewEntry};
use crate::report::{self, size_mb};
use crate::state::{OrphanRow, ScanDetail, State};
use crate::worker::RunOptions;

/// One orphan to purge, with the scan it came from.
struct Candidate {
    scan: i64,
    row: OrphanRow,
}

pub async fn run(g: &Global, args: &PurgeArgs, ui: Ui) -> Result<Exit> {
    let cfg = super::require_config(g)?;
    for s in &args.stores {
        super::queue::store_named(&cfg, s)?;
    }
    let older_than = args
        .older_than
        .as_deref()
        .map(|d| parse_duration(d).map_err(|e| Error::Usage(format!("--older-than `{d}`: {e}"))))
        .transpose()?;
    if let crate::config::StateUrl::Sqlite(db) = &cfg.state_url
        && !db.exists()
    {
        return Err(Error::Refused(format!(
            "no scans recorded yet ({} does not exist): run `assetgc scan` first",
            db.display()
        )));
    }
    let state = State::open(&cfg.state_url).await?;
    let result = purge(&cfg, &state, args, older_than, ui).await;
    state.close().await;
    result
}

async fn purge(
    cfg: &Config,
    state: &State,
    args: &PurgeArgs,
    older_than: Option<std::time::Duration>,
    ui: Ui,
) -> Result<Exit> {
    let now = Utc::now();
    let given = match args.scan {
        Some(id) => {
            let s = state.scan_detail(id).await?.ok_or_else(|| {
                Error::Refused(format!(
                    "scan {id} is not recorded; `assetgc history` lists the scans"
                ))
            })?;
            if s.state != "complete" {
                return Err(Error::Refused(format!(
                    "scan {id} is {}: the findings of a scan that did not complete never feed a deletion; run a new scan",
                    s.state
                )));
            }
            if s.mode == "missing" {
                return Err(Error::Refused(format!(
                    "scan {id} looked only for missing files (--missing-only): it has no orphans to purge"
                )));
            }
            Some(s)
        }
        None => None,
    };
    let complete = state.complete_scans().await?;
    let wanted = |store: &str| args.stores.is_empty() || args.stores.iter().any(|s| s == store);

    let (mut candidates, skipped, source) = match &args.from_report {
        Some(path) => {
            let rows = read_report(path)?;
            from_report(state, &rows, given.as_ref(), &complete, cfg).await?
        }
        None => {
            let scan = match &given {
                Some(s) => s.clone(),
                None => complete
                    .iter()
                    .find(|s| args.stores.iter().all(|w| s.stores.contains(w)))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Refused(if args.stores.is_empty() {
                            "no complete scan is recorded: run `assetgc scan` first (purge deletes only what a complete scan found)".to_string()
                        } else {
                            format!(
                                "no complete scan of store {} is recorded: run `assetgc scan --store {}` first",
                                args.stores.join(", "),
                                args.stores.join(" --store ")
                            )
                        })
                    })?,
            };
            let rows = state.scan_orphans(scan.id).await?;
            let source = format!("scan {} ({})", scan.id, scan.started_at);
            (
                rows.into_iter()
                    .map(|row| Candidate { scan: scan.id, row })
                    .collect::<Vec<_>>(),
                0,
                source,
            )
        }
    };
    candidates.retain(|c| {
        wanted(&c.row.store)
            && args
                .prefix
                .as_deref()
                .is_none_or(|p| c.row.key.starts_with(p))
            && older_than.is_none_or(|d| {
                c.row
                    .uploaded_at
                    .is_some_and(|t| now - t > TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
            })
            && cfg.stores.iter().any(|s| s.name == c.row.store)
    });

    // Invariant 7, per store, against the scan each store's orphans came from.
    let mut scans_by_id: HashMap<i64, ScanDetail> = HashMap::new();
    for c in &candidates {
        if let std::collections::hash_map::Entry::Vacant(slot) = scans_by_id.entry(c.scan) {
            let s = state
                .scan_detail(c.scan)
                .await?
                .ok_or_else(|| Error::State(format!("scan {} vanished", c.scan)))?;
            slot.insert(s);
        }
    }
    let mut per_store: BTreeMap<String, (i64, u64, u64)> = BTreeMap::new();
    for c in &candidates {
        let e = per_store
            .entry(c.row.store.clone())
            .or_insert((c.scan, 0, 0));
        e.1 += 1;
        e.2 += c.row.size;
    }
    let mut refusals = Vec::new();
    for (store, (scan_id, _, _)) in &per_store {
        let scan = &scans_by_id[scan_id];
        if let Some(why) = guard(cfg, state, scan, store).await? {
            refusals.push((store.clone(), why));
        }
    }
    if !refusals.is_empty() && !args.allow_mass_delete {
        let (store, why) = &refusals[0];
        return Err(Error::Refused(format!(
            "purge refused for store {store}: {why}. A wrong key_format, key_prefix or prefix makes every object look orphaned; check the references, or pass --allow-mass-delete if this is really meant"
        )));
    }

    let total: u64 = per_store.values().map(|v| v.1).sum();
    let bytes: u64 = per_store.values().map(|v| v.2).sum();
    if !args.confirm {
        println!("Dry run: nothing is deleted. Orphans of {source}:");
        for (store, (_, n, b)) in &per_store {
            println!(
                "  {store}: {n} object{} ({} MB)",
                if *n == 1 { "" } else { "s" },
                size_mb(*b)
            );
        }
        println!(
            "Would delete {total} object{} ({} MB).",
            if total == 1 { "" } else { "s" },
            size_mb(bytes)
        );
        if skipped > 0 {
            println!("{skipped} report row(s) skipped: not in a complete scan.");
        }
        for c in candidates.iter().take(args.limit_list) {
            println!(
                "  {}  {}{}  {} bytes",
                c.row.store,
                if c.row.resource_type.is_empty() {
                    String::new()
                } else {
                    format!("{}/", c.row.resource_type)
                },
                c.row.key,
                c.row.size
            );
        }
        if candidates.len() > args.limit_list {
            println!("  … and {} more", candidates.len() - args.limit_list);
        }
        for (store, why) in &refusals {
            println!("Mass-deletion guard for {store} (overridden by --allow-mass-delete): {why}");
        }
        if total > 0 {
            println!(
                "Run again with --confirm to delete them (through the queue, quarantined first where quarantine is on)."
            );
        }
        return Ok(Exit::Ok);
    }

    for (store, why) in &refusals {
        state
            .audit_one(
                "purge",
                (store, "", ""),
                "mass_delete_override",
                Some(&format!("--allow-mass-delete: {why}")),
            )
            .await?;
    }
    let mut held = 0;
    let entries: Vec<NewEntry> = candidates
        .iter()
        .map(|c| {
            let store = cfg
                .stores
                .iter()
                .find(|s| s.name == c.row.store)
                .expect("filtered to configured stores");
            // Invariant 2: held until min_age after the upload time from the listing.
            let min_age = TimeDelta::from_std(store.min_age).unwrap_or(TimeDelta::MAX);
            let ready: DateTime<Utc> = c.row.uploaded_at.unwrap_or(now) + min_age;
            if ready > now {
                held += 1;
            }
            NewEntry {
                store: c.row.store.clone(),
                resource_type: ResourceType::parse_cloudinary(&c.row.resource_type)
                    .unwrap_or(ResourceType::Plain),
                key: c.row.key.clone(),
                reason: queue::REASON_PURGE,
                client_id: String::new(),
                scan_id: Some(c.scan),
                uploaded_at: c.row.uploaded_at,
                next_attempt_at: ready.max(now),
                original_key: None,
            }
        })
        .collect();
    let (added, already) = state.enqueue("purge", &entries).await?;
    println!(
        "Queued {added} of {total} orphan{} of {source} ({} MB){}{}.",
        if total == 1 { "" } else { "s" },
        size_mb(bytes),
        if already > 0 {
            format!(", {already} already queued")
        } else {
            String::new()
        },
        if held > 0 {
            format!(", {held} held until they are older than min_age")
        } else {
            String::new()
        }
    );
    if skipped > 0 {
        println!("{skipped} report row(s) skipped: not in a complete scan.");
    }
    if args.notify {
        tracing::warn!(
            "--notify: notifications are not supported yet by this version; nothing was sent"
        );
    }
    let opts = RunOptions::from_config(cfg, "purge");
    let totals = super::queue::drain(cfg, state, &opts, ui).await?;
    super::queue::print_totals(&totals, state, ui.quiet).await
}

/// Invariant 7 for one store of `scan`: why a purge must refuse, or `None`.
async fn guard(
    cfg: &Config,
    state: &State,
    scan: &ScanDetail,
    store: &str,
) -> Result<Option<String>> {
    let Some((scanned, orphans)) = scan.store_counts(store) else {
        return Ok(Some(format!(
            "scan {} recorded no counts for it, so the guard cannot be applied",
            scan.id
        )));
    };
    let share = cfg.safety.max_orphan_share;
    if scanned >= 100 && orphans as f64 > share * scanned as f64 {
        return Ok(Some(format!(
            "{orphans} of its {scanned} objects scanned ({:.0}%) are orphans in scan {}, more than max_orphan_share {:.0}%",
            orphans as f64 * 100.0 / scanned as f64,
            scan.id,
            share * 100.0
        )));
    }
    if let Some(prev) = state.comparable_scan(scan).await?
        && let Some((_, before)) = prev.store_counts(store)
        && before >= 10
        && orphans as f64 > cfg.safety.max_orphan_jump * before as f64
    {
        return Ok(Some(format!(
            "its orphans went from {before} in scan {} to {orphans} in scan {}, more than max_orphan_jump ×{}",
            prev.id, scan.id, cfg.safety.max_orphan_jump
        )));
    }
    Ok(None)
}

/// One orphan row of a CSV report: (store, resource_type, key).
type ReportRow = (String, String, String);

/// Reads the orphan section of our CSV report back, `'`-escaped cells included. Anything that
/// is not our CSV is a usage error.
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
    state: &State,
    rows: &[ReportRow],
    given: Option<&ScanDetail>,
    complete: &[ScanDetail],
    cfg: &Config,
) -> Result<(Vec<Candidate>, usize, String)> {
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
        let Some(scan) = scan.filter(|_| cfg.stores.iter().any(|s| s.name == store)) else {
            skipped += rows.len();
            continue;
        };
        let orphans: HashMap<(String, String), OrphanRow> = state
            .scan_orphans(scan.id)
            .await?
            .into_iter()
            .filter(|o| o.store == store)
            .map(|o| ((o.resource_type.clone(), o.key.clone()), o))
            .collect();
        let mut seen = HashSet::new();
        for r in rows {
            match orphans.get(&(r.1.clone(), r.2.clone())) {
                Some(o) if seen.insert((r.1.clone(), r.2.clone())) => out.push(Candidate {
                    scan: scan.id,
                    row: o.clone(),
                }),
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
