//! Reports: one `Findings` value, several writers — CSV, JSON and the console (SPEC §4, §5).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::scan::{Findings, Missing, Orphan, ScanMode as Mode, Summary, Warning, Window};
use crate::error::{Error, Result};
use crate::time::rfc3339;

pub const ORPHANS_TITLE: &str = "ORPHANED FILES";
pub const MISSING_TITLE: &str = "RECORDS WITH MISSING FILES";
pub const ORPHAN_HEADER: [&str; 8] = [
    "store",
    "key",
    "resource_type",
    "size_bytes",
    "size_mb",
    "format",
    "uploaded_at",
    "url",
];
pub const MISSING_HEADER: [&str; 9] = [
    "reference",
    "record_id",
    "title",
    "owner",
    "media_type",
    "key",
    "created_at",
    "status",
    "link",
];

const MIB: f64 = 1_048_576.0;

/// Bytes as the product's "MB" (MiB), two decimals: 2411520 → "2.30".
#[allow(clippy::cast_precision_loss)]
pub fn size_mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / MIB)
}

/// Bytes as a JSON "MB" number, rounded to two decimals.
#[allow(clippy::cast_precision_loss)]
pub fn size_mb_number(bytes: u64) -> f64 {
    (bytes as f64 / MIB * 100.0).round() / 100.0
}

/// Spreadsheet formula injection: a cell that starts with one of these gets one leading `'`.
pub fn escape_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\'', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The inverse of `escape_cell`, for readers of our CSV: strips exactly one leading `'`.
pub fn unescape_cell(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

fn orphan_cells(o: &Orphan) -> [String; 8] {
    [
        o.store.clone(),
        o.key.clone(),
        o.resource_type.as_str().to_string(),
        o.size.to_string(),
        size_mb(o.size),
        o.format(),
        opt_time(o.uploaded_at),
        o.url.clone().unwrap_or_default(),
    ]
}

fn missing_cells(m: &Missing) -> [String; 9] {
    [
        m.reference.clone(),
        m.record_id.clone().unwrap_or_default(),
        m.title.clone().unwrap_or_default(),
        m.owner.clone().unwrap_or_default(),
        m.media_type.clone().unwrap_or_default(),
        m.key.clone(),
        opt_time(m.created_at),
        m.status.clone(),
        m.link.clone().unwrap_or_default(),
    ]
}

/// The two-section CSV of SPEC §5.
pub fn write_csv(f: &Findings, mut out: impl std::io::Write) -> std::io::Result<()> {
    csv_orphans_head(&mut out)?;
    csv_orphan_rows(&f.orphans, &mut out)?;
    csv_missing_head(&mut out)?;
    csv_missing_rows(&f.missing, &mut out)
}

// The CSV in pieces, in this order: orphans' head, orphan rows (in as many calls as wanted),
// missing head, missing rows. `write_csv` is made of them, and so is the API's report.csv, which
// reads the rows page by page from the state database: one writer, byte for byte.

fn csv_writer<W: std::io::Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out)
}

/// The orphans' title and header.
pub fn csv_orphans_head(out: impl std::io::Write) -> std::io::Result<()> {
    let mut w = csv_writer(out);
    w.write_record([ORPHANS_TITLE])?;
    w.write_record(ORPHAN_HEADER)?;
    w.flush()
}

pub fn csv_orphan_rows(orphans: &[Orphan], out: impl std::io::Write) -> std::io::Result<()> {
    let mut w = csv_writer(out);
    for o in orphans {
        w.write_record(orphan_cells(o).iter().map(|c| escape_cell(c).into_owned()))?;
    }
    w.flush()
}

/// The two empty lines between the sections, then the missing rows' title and header.
pub fn csv_missing_head(mut out: impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b"\n\n")?;
    let mut w = csv_writer(out);
    w.write_record([MISSING_TITLE])?;
    w.write_record(MISSING_HEADER)?;
    w.flush()
}

pub fn csv_missing_rows(missing: &[Missing], out: impl std::io::Write) -> std::io::Result<()> {
    let mut w = csv_writer(out);
    for m in missing {
        w.write_record(missing_cells(m).iter().map(|c| escape_cell(c).into_owned()))?;
    }
    w.flush()
}

/// The JSON report of SPEC §5, exactly its fields: serialized from the findings' types.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub scan: JsonScan<'a>,
    pub summary: Summary,
    pub orphans: Vec<JsonOrphan<'a>>,
    pub missing: Vec<JsonMissing<'a>>,
}

#[derive(Serialize)]
pub struct JsonScan<'a> {
    pub id: i64,
    pub started_at: String,
    pub finished_at: String,
    pub window: Window,
    pub stores: Vec<&'a str>,
    pub complete: bool,
    pub api_calls: indexmap::IndexMap<String, u64>,
    pub warnings: &'a [Warning],
}

#[derive(Serialize)]
pub struct JsonOrphan<'a> {
    pub store: &'a str,
    pub key: &'a str,
    pub resource_type: &'static str,
    pub size_bytes: u64,
    pub size_mb: f64,
    pub format: String,
    pub uploaded_at: Option<String>,
    pub url: Option<&'a str>,
}

#[derive(Serialize)]
pub struct JsonMissing<'a> {
    pub reference: &'a str,
    /// Always a string (SPEC §5): `""` when the query has no `id` column, as in the CSV.
    pub record_id: &'a str,
    pub title: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub key: &'a str,
    pub created_at: Option<String>,
    pub status: &'a str,
    pub link: Option<&'a str>,
}

impl<'a> JsonReport<'a> {
    pub fn of(f: &'a Findings, scan_id: i64) -> JsonReport<'a> {
        JsonReport {
            scan: JsonScan {
                id: scan_id,
                started_at: rfc3339(f.started_at),
                finished_at: rfc3339(f.finished_at),
                window: f.window,
                stores: f.stores.iter().map(|s| s.name.as_str()).collect(),
                complete: f.complete,
                api_calls: f.api_calls(),
                warnings: &f.warnings,
            },
            summary: Summary::of(f),
            orphans: f
                .orphans
                .iter()
                .map(|o| JsonOrphan {
                    store: &o.store,
                    key: &o.key,
                    resource_type: o.resource_type.as_str(),
                    size_bytes: o.size,
                    size_mb: size_mb_number(o.size),
                    format: o.format(),
                    uploaded_at: o.uploaded_at.map(rfc3339),
                    url: o.url.as_deref(),
                })
                .collect(),
            missing: f
                .missing
                .iter()
                .map(|m| JsonMissing {
                    reference: &m.reference,
                    record_id: m.record_id.as_deref().unwrap_or_default(),
                    title: m.title.as_deref(),
                    owner: m.owner.as_deref(),
                    media_type: m.media_type.as_deref(),
                    key: &m.key,
                    created_at: m.created_at.map(rfc3339),
                    status: &m.status,
                    link: m.link.as_deref(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn from_path(p: &Path) -> Option<Format> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Some(Format::Csv),
            Some("json") => Some(Format::Json),
            _ => None,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// Claims `<dir>/asset_detection_YYYY-MM-DD_HHMMSS.<ext>` from the scan's UTC start, `_2`, `_3`…
/// on a collision: the name is created empty with `create_new`, so two scans started in the same
/// second (two processes or two tasks) never get the same one. [`write_file`] then replaces the
/// empty file whole; the folder is created when missing.
pub fn claim_default_path(dir: &Path, started: DateTime<Utc>, format: Format) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create report folder {}", dir.display()), e))?;
    let stem = format!("asset_detection_{}", started.format("%Y-%m-%d_%H%M%S"));
    for n in 1..=CLAIM_TRIES {
        let path = if n == 1 {
            dir.join(format!("{stem}.{}", format.ext()))
        } else {
            dir.join(format!("{stem}_{n}.{}", format.ext()))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot write report {}", path.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::io(
        format!("cannot write report {}", dir.join(&stem).display()),
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{CLAIM_TRIES} reports of that second already exist"),
        ),
    ))
}

/// How many names of one second [`claim_default_path`] tries before giving up.
const CLAIM_TRIES: u32 = 10_000;

/// Writes the report file; the folder is created when missing. Written to a temporary name and
/// renamed, so a reader never sees half a report.
pub fn write_file(f: &Findings, scan_id: i64, path: &Path, format: Format) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create report folder {}", dir.display()), e))?;
    }
    // The process id keeps two scans started in the same second off each other's file.
    let tmp = path.with_extension(format!("{}.{}.partial", format.ext(), std::process::id()));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("cannot write report {}", path.display()), e))?;
    let mut out = std::io::BufWriter::new(file);
    let written = match format {
        Format::Csv => write_csv(f, &mut out),
        Format::Json => serde_json::to_writer_pretty(&mut out, &JsonReport::of(f, scan_id))
            .map_err(std::io::Error::other),
    };
    written
        .and_then(|()| out.flush())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("cannot write report {}", path.display()), e)
        })
}

/// Terminal styling, off when not a TTY or when `NO_COLOR` is set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn warn(self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn bad(self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn good(self, s: &str) -> String {
        self.paint("32", s)
    }
}

/// Thousands separators for counts: 1234567 → "1,234,567".
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub struct ConsoleInput<'a> {
    pub app_name: &'a str,
    pub findings: &'a Findings,
    pub report_path: Option<&'a Path>,
    pub limit_list: usize,
    pub style: Style,
}

/// The full console report (SPEC §4), section by section.
pub fn console(input: &ConsoleInput<'_>) -> String {
    let mut out = String::new();
    console_head(&mut out, input);
    console_stores(&mut out, input);
    console_references(&mut out, input);
    console_missing(&mut out, input);
    console_orphans(&mut out, input);
    console_warnings(&mut out, input);
    console_summary(&mut out, input);
    console_calls(&mut out, input);
    console_tail(&mut out, input);
    out
}

/// The title and the window.
fn console_head(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let _ = writeln!(
        out,
        "{}",
        st.bold(&format!("assetgc scan — {}", input.app_name))
    );
    let _ = writeln!(
        out,
        "Window: {}{}",
        f.window.describe(),
        match f.mode {
            Mode::Both => "",
            Mode::OrphansOnly => " (orphans only)",
            Mode::MissingOnly => " (missing files only)",
        }
    );
}

/// Each store: how it was listed, in how long, at what cost.
fn console_stores(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", st.bold("Stores"));
    for store in &f.stores {
        if !store.reachable {
            let _ = writeln!(out, "  {:<16} {}", store.name, st.bad("unreachable"));
            continue;
        }
        let how = listing_line(store, f.mode);
        let _ = writeln!(
            out,
            "  {:<16} {how} in {}, {} API calls — {}",
            store.name,
            secs(store.list_time),
            count(store.api_calls),
            store.location
        );
    }
}

/// How a store was read (SPEC §4: the console says whether look-ups or a listing was used).
fn listing_line(store: &crate::domain::scan::StoreStats, mode: Mode) -> String {
    let mut how = if mode == Mode::MissingOnly {
        String::new()
    } else {
        format!("{} objects listed", count(store.listed))
    };
    let mut then = |part: String| {
        if !how.is_empty() {
            how.push_str(", ");
        }
        how.push_str(&part);
    };
    if let Some(n) = store.lookups {
        then(if store.listed == 0 && mode == Mode::MissingOnly {
            format!("{} point look-ups (no listing)", count(n))
        } else {
            format!("{} point look-ups", count(n))
        });
    }
    if store.listed_instead {
        then(format!(
            "{} objects listed to confirm referenced keys (a listing: look-ups would cost more calls)",
            count(store.confirm_listed)
        ));
    }
    if how.is_empty() {
        how = "nothing to confirm (no listing, no look-ups)".to_string();
    }
    let mut extra = Vec::new();
    if store.unrepresentable > 0 {
        extra.push(format!("{} unusable names", count(store.unrepresentable)));
    }
    if store.skipped > 0 {
        extra.push(format!("{} entries skipped", count(store.skipped)));
    }
    if !extra.is_empty() {
        let _ = write!(how, " (+ {})", extra.join(", "));
    }
    how
}

/// Each reference: rows and keys, or its failure.
fn console_references(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    if !f.references.is_empty() {
        let _ = writeln!(out, "{}", st.bold("References"));
        for r in &f.references {
            let state = match &r.error {
                Some(e) => st.bad(&format!("FAILED: {e}")),
                None => format!(
                    "{} rows, {} keys in {}",
                    count(r.rows),
                    count(r.values - r.unparsed),
                    secs(r.query_time)
                ),
            };
            let unparsed = if r.unparsed > 0 {
                format!(", {} unreadable", count(r.unparsed))
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {:<16} → {:<12} {state}{unparsed}", r.name, r.store);
        }
    }
}

/// The first missing files.
fn console_missing(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let s = Summary::of(f);
    if f.mode != Mode::OrphansOnly {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.bold(&format!("Missing files ({})", count(s.missing)))
        );
        for m in f.missing.iter().take(input.limit_list) {
            let status = if m.is_active() {
                st.bad(&m.status)
            } else {
                m.status.clone()
            };
            let title = m
                .title
                .as_deref()
                .map(|t| format!(" \"{t}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {status:<7} {} #{}{title}: {}",
                m.reference,
                m.record_id.as_deref().unwrap_or("?"),
                m.key
            );
        }
        if f.missing.len() > input.limit_list {
            let _ = writeln!(
                out,
                "  … and {} more in the report",
                count((f.missing.len() - input.limit_list) as u64)
            );
        }
    }
}

/// The first orphans.
fn console_orphans(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let s = Summary::of(f);
    if f.mode != Mode::MissingOnly {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.bold(&format!("Orphaned files ({})", count(s.orphans)))
        );
        for x in f.orphans.iter().take(input.limit_list) {
            let kind = if x.resource_type.as_str().is_empty() {
                String::new()
            } else {
                format!(" [{}]", x.resource_type.as_str())
            };
            let _ = writeln!(
                out,
                "  {}{kind}  {}  {} MB  {}",
                x.key,
                opt_time(x.uploaded_at),
                size_mb(x.size),
                x.format()
            );
        }
        if f.orphans.len() > input.limit_list {
            let _ = writeln!(
                out,
                "  … and {} more in the report",
                count((f.orphans.len() - input.limit_list) as u64)
            );
        }
    }
}

/// Every warning of the scan.
fn console_warnings(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    if !f.warnings.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.warn(&format!("Warnings ({})", f.warnings.len()))
        );
        for w in &f.warnings {
            let _ = writeln!(out, "  {}", st.warn(&w.to_string()));
        }
    }
}

/// The summary figures.
fn console_summary(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let s = Summary::of(f);
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", st.bold("Summary"));
    if f.mode != Mode::MissingOnly {
        let _ = writeln!(out, "  Objects scanned:  {}", count(s.objects_scanned));
        let _ = writeln!(
            out,
            "  Valid files:      {} ({:.1}%)",
            count(s.valid),
            Summary::percent(s.valid, s.objects_scanned)
        );
        let _ = writeln!(
            out,
            "  Orphaned files:   {} ({:.1}%), {} MB",
            count(s.orphans),
            Summary::percent(s.orphans, s.objects_scanned),
            size_mb(s.orphan_bytes)
        );
        let _ = writeln!(out, "  Too recent:       {}", count(s.too_recent));
        let _ = writeln!(out, "  Ignored:          {}", count(s.ignored));
        if !s.orphans_by_folder.is_empty() {
            let top: Vec<String> = s
                .orphans_by_folder
                .iter()
                .take(5)
                .map(|f| format!("{} {} ({} MB)", f.folder, count(f.count), size_mb(f.bytes)))
                .collect();
            let _ = writeln!(out, "  Orphans by folder: {}", top.join(", "));
        }
    }
    if f.mode != Mode::OrphansOnly {
        let _ = writeln!(
            out,
            "  Missing files:    {} ({} ACTIVE, {} other)",
            count(s.missing),
            count(s.missing_active),
            count(s.missing - s.missing_active)
        );
    }
    if s.unparsed > 0 {
        let _ = writeln!(out, "  Unreadable keys:  {}", count(s.unparsed));
    }
}

/// API calls: the budgets' usage in the seed's wording, then this run's calls.
fn console_calls(out: &mut String, input: &ConsoleInput<'_>) {
    for line in api_usage(input.findings) {
        let _ = writeln!(out, "  {line}");
    }
}

/// The API usage lines of the console's summary (notifications carry them too): each budget's
/// usage in the seed's wording, then this run's calls.
pub fn api_usage(f: &Findings) -> Vec<String> {
    let mut out = Vec::new();
    let calls: u64 = f.stores.iter().map(|s| s.api_calls).sum();
    for b in &f.budgets {
        // The seed's wording, figures without separators: `API calls: 5/500 used (1%) — Rate
        // limit remaining: 495/500 (99%)`.
        let account = if f.budgets.len() > 1 {
            format!(" ({})", b.cloud)
        } else {
            String::new()
        };
        let mut line = format!(
            "API calls: {}/{} used ({:.0}%)",
            b.used,
            b.limit,
            b.percent()
        );
        if let Some(p) = b.provider {
            let _ = write!(
                line,
                " — Rate limit remaining: {}/{} ({:.0}%)",
                p.remaining,
                p.limit,
                Summary::percent(p.remaining, p.limit)
            );
        }
        out.push(format!("{line}{account}"));
    }
    if calls == 0 {
        out.push("API calls:        0 (no API-metered stores in this scan)".to_string());
    } else {
        let per_store: Vec<String> = f
            .stores
            .iter()
            .filter(|s| s.api_calls > 0)
            .map(|s| format!("{} {}", s.name, count(s.api_calls)))
            .collect();
        let label = if f.budgets.is_empty() {
            "API calls:       "
        } else {
            "Calls this run:  "
        };
        out.push(format!(
            "{label} {} ({})",
            count(calls),
            per_store.join(", ")
        ));
    }
    out
}

/// Execution time, report path, and whether the scan can feed a deletion.
fn console_tail(out: &mut String, input: &ConsoleInput<'_>) {
    let (f, st) = (input.findings, input.style);
    let _ = writeln!(out, "  Execution time:   {}", secs(f.duration()));
    if let Some(p) = input.report_path {
        let _ = writeln!(out, "  Report:           {}", p.display());
    }
    if !f.complete {
        let _ = writeln!(out, "  {}", st.bad("INCOMPLETE: some stores, databases or queries failed (see warnings); this scan can never feed a deletion"));
    }
}

/// `-q`: the summary on one line.
pub fn quiet_line(f: &Findings, report_path: Option<&Path>) -> String {
    let s = Summary::of(f);
    let mut parts = Vec::new();
    if f.mode != Mode::MissingOnly {
        parts.push(format!(
            "{} orphans ({} MB) of {} objects",
            count(s.orphans),
            size_mb(s.orphan_bytes),
            count(s.objects_scanned)
        ));
    }
    if f.mode != Mode::OrphansOnly {
        parts.push(format!(
            "{} missing ({} ACTIVE)",
            count(s.missing),
            count(s.missing_active)
        ));
    }
    let mut line = format!(
        "{}{}",
        if f.complete { "" } else { "INCOMPLETE: " },
        parts.join(", ")
    );
    if let Some(p) = report_path {
        let _ = write!(line, " — report {}", p.display());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mb_matches_the_seed() {
        assert_eq!(size_mb(2_411_520), "2.30");
        assert_eq!(size_mb(0), "0.00");
        assert!((size_mb_number(2_411_520) - 2.3).abs() < 1e-9);
    }

    #[test]
    fn formula_cells_get_one_quote_and_lose_exactly_one() {
        for s in ["=SUM(A1)", "+1", "-x", "@a", "'q", "\tt", "\rr"] {
            let e = escape_cell(s);
            assert_eq!(e, format!("'{s}"));
            assert_eq!(unescape_cell(&e), s);
        }
        assert_eq!(escape_cell("a=b"), "a=b");
        assert_eq!(unescape_cell("''plain"), "'plain");
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
