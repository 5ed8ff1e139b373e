//! Scans: the window and mode asked for, the findings a scan produces, the per-store counts that
//! are recorded and read back (the mass-deletion guard stands on them), the summary of SPEC §5 and
//! the warnings a scan gives.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ResourceType, Spelling, spelled};
use crate::domain::budget::Usage;
use crate::time::{parse_rfc3339, rfc3339};

/// Which objects are orphan candidates, and which rows are checked for missing files. JSON (and
/// the state database): `{"days": N}`, `{"all": true}` or `{"since": RFC 3339}` (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Days(u32),
    All,
    Since(DateTime<Utc>),
}

impl Window {
    pub fn cutoff(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Window::Days(d) => Some(
                now.checked_sub_signed(chrono::TimeDelta::days(i64::from(d)))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            ),
            Window::All => None,
            Window::Since(t) => Some(t),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Window::Days(1) => "last day".into(),
            Window::Days(d) => format!("last {d} days"),
            Window::All => "all objects".into(),
            Window::Since(t) => format!("since {}", rfc3339(t)),
        }
    }

    /// The same window as recorded: `since` to whole seconds, as the state database keeps it.
    #[must_use]
    pub fn recorded(self) -> Window {
        match self {
            Window::Since(t) => parse_rfc3339(&rfc3339(t)).map_or(self, Window::Since),
            other => other,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (days, all, since) = match *self {
            Window::Days(d) => (Some(d), None, None),
            Window::All => (None, Some(true), None),
            Window::Since(t) => (None, None, Some(rfc3339(t))),
        };
        WindowJson { days, all, since }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match WindowJson::deserialize(d)? {
            WindowJson {
                days: Some(n),
                all: None,
                since: None,
            } => Ok(Window::Days(n)),
            WindowJson {
                days: None,
                all: Some(true),
                since: None,
            } => Ok(Window::All),
            WindowJson {
                days: None,
                all: None,
                since: Some(t),
            } => parse_rfc3339(&t)
                .map(Window::Since)
                .ok_or_else(|| D::Error::custom(format!("`{t}` is not an RFC 3339 time"))),
            _ => Err(D::Error::custom(
                "a window is {\"days\": N}, {\"all\": true} or {\"since\": TIME}",
            )),
        }
    }
}

/// What a scan looks for. SQL and JSON: `both`, `orphans`, `missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanMode {
    Both,
    OrphansOnly,
    MissingOnly,
}

impl Spelling for ScanMode {
    const ALL: &'static [Self] = &[Self::Both, Self::OrphansOnly, Self::MissingOnly];
    fn as_str(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::OrphansOnly => "orphans",
            Self::MissingOnly => "missing",
        }
    }
}
spelled!(ScanMode, "scan mode (both, orphans, missing)");

impl ScanMode {
    pub fn orphans(self) -> bool {
        self != ScanMode::MissingOnly
    }
    pub fn missing(self) -> bool {
        self != ScanMode::OrphansOnly
    }
}

/// A recorded scan's state. SQL and JSON: `running`, `complete`, `incomplete`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanState {
    Running,
    Complete,
    Incomplete,
    Failed,
}

impl Spelling for ScanState {
    const ALL: &'static [Self] = &[
        Self::Running,
        Self::Complete,
        Self::Incomplete,
        Self::Failed,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
        }
    }
}
spelled!(
    ScanState,
    "scan state (running, complete, incomplete, failed)"
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub store: String,
    pub key: String,
    pub resource_type: ResourceType,
    pub size: u64,
    pub uploaded_at: Option<DateTime<Utc>>,
    pub url: Option<String>,
    /// The format the store reports (Cloudinary); else the key's extension is used.
    pub format: Option<String>,
}

impl Orphan {
    /// The report's `format` column: the store's word (Cloudinary), else the key's extension,
    /// lower-case.
    pub fn format(&self) -> String {
        if let Some(f) = &self.format {
            return f.clone();
        }
        let name = self.key.rsplit('/').next().unwrap_or(&self.key);
        match name.rfind('.') {
            Some(i) if i > 0 && i + 1 < name.len() => name[i + 1..].to_ascii_lowercase(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub reference: String,
    pub reference_index: usize,
    pub record_id: Option<String>,
    pub title: Option<String>,
    pub owner: Option<String>,
    pub media_type: Option<String>,
    pub key: String,
    pub created_at: Option<DateTime<Utc>>,
    pub status: String,
    pub link: Option<String>,
}

impl Missing {
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }
}

/// One store's figures in a scan. The serialized fields are what the state database records
/// (`scans.store_stats`) and reads back typed: a field that is missing or renamed there makes the
/// scan's counts unreadable, and the mass-deletion guard then refuses (it never reads a zero).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    #[serde(rename = "store")]
    pub name: String,
    pub reachable: bool,
    pub complete: bool,
    /// Objects the listing returned, in the window or not (not the unusable names and skipped
    /// entries: they are counted apart, so this agrees with the summary).
    pub listed: u64,
    pub objects_scanned: u64,
    pub valid: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub too_recent: u64,
    pub ignored: u64,
    pub api_calls: u64,
    /// Calls the full listings of this run cost (metered stores), for next time's choice
    /// between look-ups and a listing.
    pub full_list_calls: Option<u64>,
    #[serde(skip)]
    pub location: String,
    #[serde(skip)]
    pub unrepresentable: u64,
    #[serde(skip)]
    pub list_time: Duration,
    /// `Some(n)`: n referenced keys were confirmed with point look-ups instead of a listing.
    #[serde(skip)]
    pub lookups: Option<u64>,
    /// Referenced keys were confirmed with a full listing because look-ups would cost more.
    #[serde(skip)]
    pub listed_instead: bool,
    /// Objects that confirming listing returned.
    #[serde(skip)]
    pub confirm_listed: u64,
    /// Entries the listing skipped (symbolic links): no objects.
    #[serde(skip)]
    pub skipped: u64,
    /// Objects no read row names while the reference set was partial: not called orphans.
    #[serde(skip)]
    pub undecided: u64,
    /// A reference of this store failed: its reference set is partial.
    #[serde(skip)]
    pub references_partial: bool,
    /// (reference, rows) whose unusable value names a listed key: not unparsed.
    #[serde(skip)]
    pub unparsed_named: Vec<(String, u64)>,
    /// Unusable listed names that a reference names.
    #[serde(skip)]
    pub unusable_named: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReferenceStats {
    pub name: String,
    pub store: String,
    pub rows: u64,
    pub values: u64,
    pub unparsed: u64,
    pub query_time: Duration,
    pub error: Option<String>,
    pub warnings: Vec<Warning>,
}

/// What a scan found, with how it went.
#[derive(Debug, Clone)]
pub struct Findings {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub window: Window,
    pub mode: ScanMode,
    pub stores: Vec<StoreStats>,
    pub references: Vec<ReferenceStats>,
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    pub warnings: Vec<Warning>,
    pub complete: bool,
    /// Usage of the API budgets this run drew on.
    pub budgets: Vec<Usage>,
}

impl Findings {
    pub fn has_findings(&self) -> bool {
        !self.orphans.is_empty() || !self.missing.is_empty()
    }

    pub fn duration(&self) -> Duration {
        (self.finished_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }

    pub fn state(&self) -> ScanState {
        if self.complete {
            ScanState::Complete
        } else {
            ScanState::Incomplete
        }
    }

    /// Calls each store made, by name.
    pub fn api_calls(&self) -> indexmap::IndexMap<String, u64> {
        self.stores
            .iter()
            .map(|s| (s.name.clone(), s.api_calls))
            .collect()
    }
}

/// The summary figures of SPEC §5, computed once from the findings; its JSON is the report's
/// `summary` and what the state database records for history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub objects_scanned: u64,
    pub valid: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub too_recent: u64,
    pub ignored: u64,
    pub unparsed: u64,
    pub references: u64,
    pub missing: u64,
    pub missing_active: u64,
    pub orphans_by_folder: Vec<Folder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folder {
    pub folder: String,
    pub count: u64,
    pub bytes: u64,
}

impl Summary {
    pub fn of(f: &Findings) -> Summary {
        let mut s = Summary::default();
        for st in &f.stores {
            s.objects_scanned += st.objects_scanned;
            s.valid += st.valid;
            s.orphans += st.orphans;
            s.orphan_bytes += st.orphan_bytes;
            s.too_recent += st.too_recent;
            s.ignored += st.ignored;
        }
        for r in &f.references {
            s.unparsed += r.unparsed;
            s.references += r.values - r.unparsed;
        }
        s.missing = f.missing.len() as u64;
        s.missing_active = f.missing.iter().filter(|m| m.is_active()).count() as u64;
        let mut folders: std::collections::HashMap<String, (u64, u64)> =
            std::collections::HashMap::new();
        for o in &f.orphans {
            let folder = match o.key.split_once('/') {
                Some((top, _)) => format!("{top}/"),
                None => "/".to_string(),
            };
            let e = folders.entry(folder).or_default();
            e.0 += 1;
            e.1 += o.size;
        }
        let mut folders: Vec<Folder> = folders
            .into_iter()
            .map(|(folder, (count, bytes))| Folder {
                folder,
                count,
                bytes,
            })
            .collect();
        folders.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.bytes.cmp(&a.bytes))
                .then(a.folder.cmp(&b.folder))
        });
        s.orphans_by_folder = folders;
        s
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn percent(part: u64, whole: u64) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    }
}

/// A scan's warnings. The text is its `Display`, the form the console, the report's
/// `scan.warnings` and the state database carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A database of the references could not be reached (its error, already one line).
    DatabaseUnreachable(String),
    /// A store could not be reached, or refused the credentials.
    StoreUnreachable {
        store: String,
        error: String,
    },
    /// A call of a reachable store failed part way (`what`: "listing incomplete", "look-up failed").
    StoreCall {
        store: String,
        what: String,
        error: String,
    },
    NoReferences {
        store: String,
    },
    /// A `warn_at` or `stop_at` line of an API budget.
    Budget(String),
    Unparsed {
        reference: String,
        row_id: String,
        value: String,
        reason: String,
    },
    MoreUnparsed {
        reference: String,
        count: u64,
    },
    ReferenceFailed {
        reference: String,
        error: String,
    },
    TooManyUnparsed {
        reference: String,
        unparsed: u64,
        values: u64,
    },
    Unconfirmed {
        store: String,
        count: usize,
    },
    UnicodeMatch {
        store: String,
        reference_key: String,
        listed: String,
    },
    MoreUnicodeMatches {
        store: String,
        count: usize,
    },
    /// Unusable listed names (`a//b.jpg`, `/x.jpg`) that reference values name.
    UnusableNamed {
        store: String,
        count: usize,
        names: String,
    },
    /// Missing rows written with a leading `/` or `./`, confirmed by look-ups, which never see
    /// an object whose name itself starts so.
    LookupsCannotSee {
        store: String,
        count: usize,
    },
    /// The store's reference set is partial: objects no read row names are not orphans.
    OrphansUndecided {
        store: String,
        count: u64,
        why: String,
    },
    Unrepresentable {
        store: String,
        count: usize,
        names: String,
    },
    Skipped {
        store: String,
        count: usize,
        names: String,
    },
    /// The scan failed as a whole (recorded with its `failed` state).
    Failed(String),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::DatabaseUnreachable(e) | Warning::Budget(e) | Warning::Failed(e) => {
                f.write_str(e)
            }
            Warning::StoreUnreachable { store, error } => write!(f, "store {store}: {error}"),
            Warning::StoreCall { store, what, error } => {
                write!(f, "store {store}: {what}: {error}")
            }
            Warning::NoReferences { store } => write!(
                f,
                "store {store} has no [[references]]: every object in it is reported as an orphan"
            ),
            Warning::Unparsed {
                reference,
                row_id,
                value,
                reason,
            } => write!(
                f,
                "reference `{reference}`: row id {row_id}: cannot read `{value}`: {reason}"
            ),
            Warning::MoreUnparsed { reference, count } => write!(
                f,
                "reference `{reference}`: {count} more values could not be read"
            ),
            Warning::ReferenceFailed { reference, error } => {
                write!(f, "reference `{reference}` failed: {error}")
            }
            Warning::TooManyUnparsed {
                reference,
                unparsed,
                values,
            } => write!(
                f,
                "reference `{reference}`: {unparsed} of {values} values could not be read (more than 1 %): check its key_format"
            ),
            Warning::Unconfirmed { store, count } => write!(
                f,
                "store {store}: {count} reference(s) could not be confirmed and are not reported missing: the store's listing or look-ups did not finish"
            ),
            Warning::UnicodeMatch {
                store,
                reference_key,
                listed,
            } => write!(
                f,
                "store {store}: reference key `{reference_key}` matches `{listed}` only after Unicode normalisation: neither orphan nor missing"
            ),
            Warning::MoreUnicodeMatches { store, count } => write!(
                f,
                "store {store}: {count} more reference key(s) match a listed key only after Unicode normalisation: neither orphan nor missing"
            ),
            Warning::UnusableNamed {
                store,
                count,
                names,
            } => write!(
                f,
                "store {store}: {count} listed name(s) that are not usable keys are named by references (neither orphan nor missing, never deleted; rename them to usable keys): {names}"
            ),
            Warning::LookupsCannotSee { store, count } => write!(
                f,
                "store {store}: {count} missing row(s) write their key with a leading `/` or `./` and were confirmed by look-ups, which cannot see an object whose name itself starts so; a scan that lists the store (without --missing-only) decides them"
            ),
            Warning::OrphansUndecided { store, count, why } => write!(
                f,
                "store {store}: {count} object(s) no read reference row names were left undecided, not reported as orphans, because its references are incomplete: {why}"
            ),
            Warning::Unrepresentable {
                store,
                count,
                names,
            } => write!(
                f,
                "store {store}: {count} name(s) that are not usable keys were skipped (never orphans): {names}"
            ),
            Warning::Skipped {
                store,
                count,
                names,
            } => write!(
                f,
                "store {store}: {count} entr{} skipped: {names}",
                if *count == 1 { "y" } else { "ies" }
            ),
        }
    }
}

impl Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_their_json_forms() {
        let since = parse_rfc3339("2025-09-01T00:00:00Z").expect("time");
        for (w, json) in [
            (Window::Days(7), serde_json::json!({"days": 7})),
            (Window::All, serde_json::json!({"all": true})),
            (
                Window::Since(since),
                serde_json::json!({"since": "2025-09-01T00:00:00Z"}),
            ),
        ] {
            assert_eq!(serde_json::to_value(w).expect("json"), json);
            assert_eq!(serde_json::from_value::<Window>(json).expect("back"), w);
        }
        assert!(serde_json::from_value::<Window>(serde_json::json!({"all": false})).is_err());
        assert!(serde_json::from_value::<Window>(serde_json::json!({"weeks": 2})).is_err());
    }

    #[test]
    fn states_and_modes_are_spelled_as_in_sql() {
        assert_eq!(ScanMode::parse("orphans"), Some(ScanMode::OrphansOnly));
        assert_eq!(ScanMode::MissingOnly.as_str(), "missing");
        assert_eq!(ScanState::parse("incomplete"), Some(ScanState::Incomplete));
        assert_eq!(ScanState::parse("done"), None);
        assert_eq!(
            serde_json::to_value(ScanState::Complete).expect("json"),
            serde_json::json!("complete")
        );
    }

    #[test]
    fn store_stats_read_back_only_with_every_field() {
        let s = StoreStats {
            name: "media".into(),
            reachable: true,
            complete: true,
            objects_scanned: 200,
            orphans: 150,
            ..StoreStats::default()
        };
        let text = serde_json::to_string(&s).expect("json");
        let back: StoreStats = serde_json::from_str(&text).expect("back");
        assert_eq!((back.objects_scanned, back.orphans), (200, 150));
        // A renamed field never reads as zero: the counts are unreadable instead.
        let renamed = text.replace("objects_scanned", "objects_seen");
        assert!(serde_json::from_str::<StoreStats>(&renamed).is_err());
    }

    #[test]
    fn warnings_read_as_before() {
        assert_eq!(
            Warning::Skipped {
                store: "m".into(),
                count: 1,
                names: "a".into()
            }
            .to_string(),
            "store m: 1 entry skipped: a"
        );
        assert_eq!(
            serde_json::to_value(Warning::NoReferences { store: "m".into() }).expect("json"),
            serde_json::json!(
                "store m has no [[references]]: every object in it is reported as an orphan"
            )
        );
    }
}
