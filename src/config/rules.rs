//! `[[policies]]`, `[[expiry]]` and a reference's `track` (SPEC §2, §7): the rules that delete
//! by age or by row rather than by scan, checked with the line of each value.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Cx, DatabaseConfig, DbKind, Ignore, RawKeyFormat, ReferenceConfig, StoreConfig, Text};
use crate::error::Result;
use crate::key::KeyFormat;

/// `track = { … delay }` when not given (SPEC §7).
pub const DEFAULT_TRACK_DELAY: Duration = Duration::from_mins(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    name: Option<Text>,
    store: Option<Text>,
    prefix: Option<Text>,
    #[serde(default)]
    exclude: Vec<Text>,
    older_than: Option<Text>,
    keep_referenced: Option<Spanned<bool>>,
    releases: Option<Spanned<Vec<Text>>>,
    keep_query: Option<Spanned<RawKeepQuery>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeepQuery {
    database: Option<Text>,
    sql: Option<Text>,
    // Beyond SPEC's `{ database, sql }`: how the keep query's values read, as a reference's do.
    key_format: Option<Spanned<RawKeyFormat>>,
    key_prefix: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpiry {
    name: Option<Text>,
    database: Option<Text>,
    store: Option<Text>,
    select: Option<Text>,
    delete: Option<Text>,
    releases: Option<Spanned<Vec<Text>>>,
    key_format: Option<Spanned<RawKeyFormat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrack {
    table: Option<Text>,
    column: Option<Text>,
    pk: Option<Text>,
    delay: Option<Text>,
}

/// A retention policy: the objects under `prefix` older than `older_than` go, except those a
/// reference protects (unless released) and those `keep_query` returns.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub name: String,
    pub store: usize,
    /// Only keys under it are the policy's (empty: the whole store).
    pub prefix: String,
    /// Keys relative to the store root that are never the policy's (not even counted).
    pub exclude: Ignore,
    pub older_than: Duration,
    pub keep_referenced: bool,
    /// With `keep_referenced = false`: the references (indices) that do not protect.
    pub releases: Vec<usize>,
    pub keep_query: Option<KeepQuery>,
}

/// `keep_query = { database, sql }`: keys that stay; `sql` may bind the cutoff time once.
#[derive(Debug, Clone)]
pub struct KeepQuery {
    pub database: usize,
    pub sql: String,
    /// Whether `sql` takes the cutoff as its one parameter.
    pub takes_cutoff: bool,
    /// How its values read (default: the store's format, as a reference's).
    pub key_format: KeyFormat,
    pub key_prefix: String,
}

/// An expiry rule: the rows `select` returns lose their files, then `delete` removes each row.
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    pub name: String,
    pub database: usize,
    pub store: usize,
    pub select: String,
    pub delete: String,
    /// References (indices) whose rows being expired do not protect their files.
    pub releases: Vec<usize>,
    pub key_format: KeyFormat,
}

/// `track = { table, column, pk, delay }`: what `assetgc triggers` watches for a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The table, optionally schema-qualified (`app.prompts`).
    pub table: String,
    pub column: String,
    pub pk: String,
    /// How long an outbox row waits (on the database's clock) before it is queued.
    pub delay: Duration,
}

/// How many bind parameters a statement takes, in the database's own syntax: `$n` on
/// PostgreSQL, `?` on MySQL/MariaDB, and `?`, `?n` or `$n` on SQLite. Quoted literals,
/// quoted identifiers and comments are skipped. (No crate parses all three dialects' SQL for
/// this one question, so a small scanner does.)
pub fn bind_parameters(sql: &str, kind: DbKind) -> usize {
    let b = sql.as_bytes();
    let (mut bare, mut numbered) = (0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && kind == DbKind::MySql {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            c @ (b'?' | b'$') => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                let n: usize = sql[start..end].parse().unwrap_or(0);
                match (c, kind, n) {
                    (b'?', DbKind::MySql, _) | (b'?', DbKind::Sqlite, 0) => bare += 1,
                    (b'?', DbKind::Sqlite, n) | (b'$', DbKind::Postgres | DbKind::Sqlite, n) => {
                        numbered = numbered.max(n);
                    }
                    _ => {}
                }
                i = end.max(i + 1) - 1;
            }
            _ => {}
        }
        i += 1;
    }
    bare + numbered
}

/// The placeholder a database's own syntax writes for its first parameter.
fn placeholder(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => "$1",
        DbKind::MySql | DbKind::Sqlite => "?",
    }
}

fn identifier(s: &str, qualified: bool) -> bool {
    let part = |p: &str| {
        let mut c = p.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    };
    match s.split_once('.') {
        Some((schema, table)) if qualified => part(schema) && part(table),
        _ => part(s),
    }
}

impl Cx<'_> {
    pub(super) fn required<T>(
        &self,
        v: Option<&Text>,
        at: &Spanned<T>,
        msg: &str,
    ) -> Result<String> {
        match v {
            Some(t) => {
                let s = self.expand(t)?;
                if s.trim().is_empty() {
                    return Err(self.err_at(t, msg.to_string()));
                }
                Ok(s)
            }
            None => Err(self.err_at(at, msg.to_string())),
        }
    }

    fn sql(&self, t: &Text, owner: &str, what: &str) -> Result<String> {
        let q = self.expand(t)?;
        let q = q.trim().trim_end_matches(';').trim_end().to_string();
        if q.is_empty() {
            return Err(self.err_at(t, format!("{owner}: `{what}` is empty")));
        }
        Ok(q)
    }

    fn release_list(
        &self,
        owner: &str,
        list: &Spanned<Vec<Text>>,
        references: &[ReferenceConfig],
    ) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for t in list.get_ref() {
            let name = self.expand(t)?;
            let Some(i) = references.iter().position(|r| r.name == name) else {
                return Err(self.err_at(
                    t,
                    format!(
                        "{owner}: releases names `{name}`, which is not a reference; known references: {}",
                        super::list_names(references.iter().map(|r| r.name.as_str()))
                    ),
                ));
            };
            if !out.contains(&i) {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn rule_name<T>(
        &self,
        section: &str,
        n: usize,
        name: Option<&Text>,
        at: &Spanned<T>,
        taken: &[&str],
    ) -> Result<String> {
        let name = self.required(
            name,
            at,
            &format!("[[{section}]] #{n} has no `name`; give it one, e.g. name = \"trash\""),
        )?;
        if !super::valid_name(&name) {
            return Err(self.err_at(
                at,
                format!("[[{section}]] name `{name}`: use letters, digits, `-`, `_` and `.`"),
            ));
        }
        if taken.contains(&name.as_str()) {
            return Err(self.err_at(
                at,
                format!("two [[{section}]] are named `{name}`; give each its own name"),
            ));
        }
        Ok(name)
    }

    /// A policy's `keep_query = { database, sql, key_format, key_prefix }`.
    fn keep_query(
        &self,
        owner: &str,
        kq: &Spanned<RawKeepQuery>,
        store: &StoreConfig,
        databases: &[DatabaseConfig],
        db_names: &[&str],
    ) -> Result<KeepQuery> {
        let raw_kq = kq.get_ref();
        let database = self.pick(owner, "database", raw_kq.database.as_ref(), db_names, kq)?;
        let Some(sql_text) = &raw_kq.sql else {
            return Err(self.err_at(
                kq,
                format!("{owner}: keep_query has no `sql`; give the SELECT that returns the `key` column of the objects to keep"),
            ));
        };
        let sql = self.sql(sql_text, owner, "keep_query.sql")?;
        let kind = databases[database].kind;
        let params = bind_parameters(&sql, kind);
        if params > 1 {
            return Err(self.err_at(
                sql_text,
                format!("{owner}: keep_query takes at most one parameter, the cutoff time ({}); it has {params}", placeholder(kind)),
            ));
        }
        let key_format = match &raw_kq.key_format {
            Some(kf) => self.key_format(&format!("{owner}: keep_query"), Some(kf), kq, store)?,
            None if store.location.cloudinary().is_some() => KeyFormat::Cloudinary,
            None => KeyFormat::Path,
        };
        let key_prefix = match &raw_kq.key_prefix {
            Some(t) => self.expand(t)?,
            None => String::new(),
        };
        Ok(KeepQuery {
            database,
            sql,
            takes_cutoff: params == 1,
            key_format,
            key_prefix,
        })
    }

    /// A policy's `prefix`: keys of the store, relative to its root.
    fn policy_prefix(&self, t: &Text, owner: &str) -> Result<String> {
        let s = self.expand(t)?;
        let s = s
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        // `..` or `.` segments (or control characters) name no key, and a policy over them
        // would match nothing.
        if s.split('/').any(|seg| seg == ".." || seg == ".") || s.chars().any(char::is_control) {
            return Err(self.err_at(
                t,
                format!("{owner}: prefix `{s}` is not a key prefix inside the store (no `.` or `..` segments); write it relative to the store root, e.g. prefix = \"clips/\""),
            ));
        }
        Ok(s)
    }

    pub(super) fn policies(
        &self,
        raw: &[Spanned<RawPolicy>],
        stores: &[StoreConfig],
        databases: &[DatabaseConfig],
        references: &[ReferenceConfig],
    ) -> Result<Vec<PolicyConfig>> {
        let store_names: Vec<&str> = stores.iter().map(|s| s.name.as_str()).collect();
        let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let mut out: Vec<PolicyConfig> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let p = spanned.get_ref();
            let taken: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
            let name = self.rule_name("policies", i + 1, p.name.as_ref(), spanned, &taken)?;
            let owner = format!("policy `{name}`");
            let store = self.pick(&owner, "store", p.store.as_ref(), &store_names, spanned)?;
            let older_than = match &p.older_than {
                Some(t) => self.duration(t, &format!("{owner}: older_than"))?,
                None => {
                    return Err(self.err_at(
                        spanned,
                        format!("{owner} has no `older_than`; say how old its objects must be, e.g. older_than = \"5d\" (\"0s\" allowed)"),
                    ));
                }
            };
            let prefix = match &p.prefix {
                Some(t) => self.policy_prefix(t, &owner)?,
                None => String::new(),
            };
            let mut patterns = Vec::new();
            for g in &p.exclude {
                let pat = self.expand(g)?;
                Ignore::new(std::slice::from_ref(&pat))
                    .map_err(|m| self.err_at(g, format!("{owner}: exclude: {m}")))?;
                patterns.push(pat);
            }
            let exclude = Ignore::new(&patterns).map_err(|m| self.err(None, m))?;
            let keep_referenced = p.keep_referenced.as_ref().is_none_or(|b| *b.get_ref());
            let releases = match (&p.releases, keep_referenced) {
                (Some(list), false) if !list.get_ref().is_empty() => {
                    self.release_list(&owner, list, references)?
                }
                (_, false) => {
                    let at = p
                        .keep_referenced
                        .as_ref()
                        .map_or(spanned.span(), Spanned::span);
                    return Err(self.err(
                        Some(self.line_of(at.start)),
                        format!("{owner}: keep_referenced = false needs `releases`, the references that do not protect this policy's objects, e.g. releases = [\"clip rows\"]; every other reference still protects them"),
                    ));
                }
                (Some(list), true) => {
                    return Err(self.err_at(
                        list,
                        format!("{owner}: releases has an effect only with keep_referenced = false; remove it, or set keep_referenced = false"),
                    ));
                }
                (None, true) => Vec::new(),
            };
            let keep_query = match &p.keep_query {
                None => None,
                Some(kq) => {
                    Some(self.keep_query(&owner, kq, &stores[store], databases, &db_names)?)
                }
            };
            out.push(PolicyConfig {
                name,
                store,
                prefix,
                exclude,
                older_than,
                keep_referenced,
                releases,
                keep_query,
            });
        }
        Ok(out)
    }

    pub(super) fn expiries(
        &self,
        raw: &[Spanned<RawExpiry>],
        stores: &[StoreConfig],
        databases: &[DatabaseConfig],
        references: &[ReferenceConfig],
    ) -> Result<Vec<ExpiryConfig>> {
        let store_names: Vec<&str> = stores.iter().map(|s| s.name.as_str()).collect();
        let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let mut out: Vec<ExpiryConfig> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let x = spanned.get_ref();
            let taken: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
            let name = self.rule_name("expiry", i + 1, x.name.as_ref(), spanned, &taken)?;
            let owner = format!("expiry rule `{name}`");
            let database =
                self.pick(&owner, "database", x.database.as_ref(), &db_names, spanned)?;
            let store = self.pick(&owner, "store", x.store.as_ref(), &store_names, spanned)?;
            let select = match &x.select {
                Some(t) => self.sql(t, &owner, "select")?,
                None => {
                    return Err(self.err_at(
                        spanned,
                        format!("{owner} has no `select`; give the SELECT that returns `id` and the key columns (`key`, `key_*`) of the rows to expire"),
                    ));
                }
            };
            let kind = databases[database].kind;
            let delete = match &x.delete {
                Some(t) => {
                    let sql = self.sql(t, &owner, "delete")?;
                    let n = bind_parameters(&sql, kind);
                    if n != 1 {
                        return Err(self.err_at(
                            t,
                            format!(
                                "{owner}: `delete` must take exactly one parameter, the row's id, written {} on {} (it has {n}), e.g. delete = \"DELETE FROM prompts WHERE id = {}\"",
                                placeholder(kind),
                                kind.name(),
                                placeholder(kind)
                            ),
                        ));
                    }
                    sql
                }
                None => {
                    return Err(self.err_at(
                        spanned,
                        format!("{owner} has no `delete`; give the statement that removes one row, e.g. delete = \"DELETE FROM prompts WHERE id = {}\"", placeholder(kind)),
                    ));
                }
            };
            let releases = match &x.releases {
                Some(list) => self.release_list(&owner, list, references)?,
                None => {
                    return Err(self.err_at(
                        spanned,
                        format!("{owner} has no `releases`: name the references whose rows this rule expires, e.g. releases = [\"prompt images\"] (releases = [] when none)"),
                    ));
                }
            };
            let key_format = match &x.key_format {
                None => {
                    if stores[store].location.cloudinary().is_some() {
                        KeyFormat::Cloudinary
                    } else {
                        KeyFormat::Path
                    }
                }
                Some(kf) => self.key_format(&owner, Some(kf), spanned, &stores[store])?,
            };
            out.push(ExpiryConfig {
                name,
                database,
                store,
                select,
                delete,
                releases,
                key_format,
            });
        }
        Ok(out)
    }

    pub(super) fn track(&self, reference: &str, spanned: &Spanned<RawTrack>) -> Result<Track> {
        let t = spanned.get_ref();
        let owner = format!("reference `{reference}`: track");
        let field = |v: Option<&Text>, what: &str, qualified: bool| -> Result<String> {
            let s = self.required(
                v,
                spanned,
                &format!("{owner} has no `{what}`; track = {{ table = \"prompts\", column = \"featured_image\", pk = \"id\" }}"),
            )?;
            if !identifier(&s, qualified) {
                let at = v.map_or(spanned.span(), Spanned::span).start;
                return Err(self.err(
                    Some(self.line_of(at)),
                    format!(
                        "{owner}: {what} `{s}` is not a plain SQL name (letters, digits and `_`{})",
                        if qualified {
                            ", optionally schema.table"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            Ok(s)
        };
        let table = field(t.table.as_ref(), "table", true)?;
        let column = field(t.column.as_ref(), "column", false)?;
        let pk = field(t.pk.as_ref(), "pk", false)?;
        let delay = match &t.delay {
            Some(d) => self.duration(d, &format!("{owner}: delay"))?,
            None => DEFAULT_TRACK_DELAY,
        };
        Ok(Track {
            table,
            column,
            pk,
            delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_parameters_read_each_dialect() {
        assert_eq!(
            bind_parameters("DELETE FROM p WHERE id = $1", DbKind::Postgres),
            1
        );
        assert_eq!(
            bind_parameters("DELETE FROM p WHERE id = ?", DbKind::MySql),
            1
        );
        assert_eq!(
            bind_parameters("DELETE FROM p WHERE id = ?", DbKind::Sqlite),
            1
        );
        assert_eq!(
            bind_parameters("DELETE FROM p WHERE id = ?1", DbKind::Sqlite),
            1
        );
        assert_eq!(
            bind_parameters("DELETE FROM p WHERE id = 3", DbKind::Postgres),
            0
        );
        // Literals, identifiers and comments hold no parameters.
        assert_eq!(
            bind_parameters(
                "DELETE FROM p WHERE t = '?' AND \"$1\" = 1 -- ?\n AND id = ?",
                DbKind::MySql
            ),
            1
        );
        assert_eq!(
            bind_parameters(
                "SELECT a FROM t WHERE x = $1 AND y = $2 /* $3 */",
                DbKind::Postgres
            ),
            2
        );
        assert_eq!(bind_parameters("SELECT '?' AS key", DbKind::Sqlite), 0);
    }

    #[test]
    fn identifiers_are_plain_names() {
        assert!(identifier("prompts", false));
        assert!(identifier("app.prompts", true));
        assert!(!identifier("app.prompts", false));
        assert!(!identifier("p; DROP TABLE x", true));
        assert!(!identifier("1abc", false));
    }
}
