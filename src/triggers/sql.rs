//! The SQL of `assetgc triggers`, per database: the outbox, the triggers that fill it, the
//! catalogue queries that find them again, and the outbox reads of the worker.
//!
//! Names read from the catalogue (the current schema, a trigger's table or schema) are quoted
//! exactly as they are: a schema `"App"` is not `app`. Names from `track` are plain names
//! (checked when the config is read) and mean what the app's own unquoted SQL means: on
//! PostgreSQL, which folds an unquoted name to lower case, `track.table = "Prompts"` is the
//! table `prompts` ([`config_ident`]). The reference name is the only free text, and goes in as
//! a literal (PostgreSQL: a trigger argument).

use sha1::Digest as _;

use crate::config::{DbKind, Track};

/// Every object `install` creates is named from this prefix, so `uninstall` and `status` find
/// them in the catalogue even after the config changed.
pub const PREFIX: &str = "assetgc_t_";
pub const OUTBOX: &str = "assetgc_outbox";

/// The names of one reference's objects: `assetgc_t_<slug>_<hash>` (the function on
/// PostgreSQL) and its `_u` (update) and `_d` (delete) triggers. The hash of the whole name
/// keeps two references whose names slug alike apart; 63 bytes is PostgreSQL's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub base: String,
    pub update: String,
    pub delete: String,
}

impl Names {
    pub fn of(reference: &str) -> Names {
        let slug: String = reference
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let hash = hex::encode(sha1::Sha1::digest(reference.as_bytes()));
        let base = format!("{PREFIX}{slug}_{}", &hash[..8]);
        Names {
            update: format!("{base}_u"),
            delete: format!("{base}_d"),
            base,
        }
    }
}

/// `'text'` for a SQL literal. MySQL reads a backslash as an escape unless its `sql_mode` has
/// `NO_BACKSLASH_ESCAPES`, and MariaDB keeps a trigger body with its literals rewritten
/// (`'a\\b'` becomes `'a\b'`), so install could not recognise its own trigger: text with a
/// backslash goes in as hex, which means the same bytes in every mode and is kept as written.
pub fn literal(kind: DbKind, s: &str) -> String {
    if kind == DbKind::MySql && s.contains('\\') {
        return format!("X'{}'", hex::encode(s.as_bytes()));
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// A name quoted exactly (the quote character doubled inside), for names from the catalogue.
pub fn ident(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::Postgres | DbKind::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
        DbKind::MySql => format!("`{}`", name.replace('`', "``")),
    }
}

/// A name from `track`, quoted as the app's unquoted SQL reads it: PostgreSQL folds it to lower
/// case; MySQL and SQLite do not fold (their case rules are the same quoted or not).
pub fn config_ident(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::Postgres => ident(kind, &name.to_ascii_lowercase()),
        DbKind::MySql | DbKind::Sqlite => ident(kind, name),
    }
}

/// The `n`th bind parameter (from 1).
pub fn param(kind: DbKind, n: usize) -> String {
    match kind {
        DbKind::Postgres => format!("${n}"),
        DbKind::MySql | DbKind::Sqlite => "?".into(),
    }
}

/// Where a tracked table lives: its schema (`None`: the connection's) and its name.
pub fn split_table(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

/// The tracked table as SQL text.
pub fn table(kind: DbKind, table: &str) -> String {
    match split_table(table) {
        (Some(schema), name) => format!(
            "{}.{}",
            config_ident(kind, schema),
            config_ident(kind, name)
        ),
        (None, name) => config_ident(kind, name),
    }
}

/// The outbox as SQL text, in `home` (the schema of the connection that installs it; SQLite:
/// `main`).
pub fn outbox(kind: DbKind, home: &str) -> String {
    match kind {
        DbKind::Sqlite => OUTBOX.into(),
        _ => format!("{}.{OUTBOX}", ident(kind, home)),
    }
}

/// The schema the connection creates objects in: PostgreSQL's `current_schema()`, MySQL's
/// `DATABASE()`.
pub fn home_query(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => "SELECT current_schema()::text",
        DbKind::MySql => "SELECT CAST(DATABASE() AS CHAR)",
        DbKind::Sqlite => "SELECT 'main'",
    }
}

/// `changed_at` is the database's own time (`TIMESTAMP` on MySQL/MariaDB, whose `DATETIME` has
/// no time zone; microseconds so that a short `delay` is not rounded to whole seconds). SQLite
/// has no time type: UTC text to the millisecond, which `julianday` reads.
pub fn create_outbox(kind: DbKind, home: &str) -> String {
    let t = outbox(kind, home);
    match kind {
        DbKind::Postgres => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, reference TEXT NOT NULL, pk TEXT, old_value TEXT NOT NULL, changed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        ),
        DbKind::MySql => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, reference VARCHAR(255) NOT NULL, pk VARCHAR(255) NULL, old_value MEDIUMTEXT NOT NULL, changed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ),
        // No AUTOINCREMENT: it would leave `sqlite_sequence` behind after `uninstall`.
        DbKind::Sqlite => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, reference TEXT NOT NULL, pk TEXT, old_value TEXT NOT NULL, changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))"
        ),
    }
}

/// A query that fails unless the table and both columns exist: a trigger naming a missing
/// column would make the app's own writes fail when it fires.
pub fn probe_columns(kind: DbKind, t: &Track) -> String {
    match kind {
        // SQLite reads an unknown "quoted" name as a string literal, so it is asked by name.
        DbKind::Sqlite => format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM pragma_table_info({}) WHERE lower(name) IN ({}, {})",
            literal(kind, split_table(&t.table).1),
            literal(kind, &t.column.to_ascii_lowercase()),
            literal(kind, &t.pk.to_ascii_lowercase()),
        ),
        _ => format!(
            "SELECT {}, {} FROM {} WHERE 1 = 0",
            config_ident(kind, &t.pk),
            config_ident(kind, &t.column),
            table(kind, &t.table)
        ),
    }
}

/// The statements that (re)create one reference's triggers, in order. Each fires only when the
/// old value is a non-empty key that the row no longer holds.
pub fn create_triggers(kind: DbKind, home: &str, reference: &str, t: &Track) -> Vec<String> {
    let n = Names::of(reference);
    let (col, pk, tbl, ob) = (
        config_ident(kind, &t.column),
        config_ident(kind, &t.pk),
        table(kind, &t.table),
        outbox(kind, home),
    );
    match kind {
        DbKind::Postgres => {
            let func = format!("{}.{}", ident(kind, home), ident(kind, &n.base));
            let arg = literal(kind, reference);
            // SECURITY DEFINER: the app's role fires it without any privilege on the outbox;
            // the pinned search_path (pg_temp last) keeps objects of that role from standing
            // in for ours.
            vec![
                format!(
                    "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {home_id}, pg_temp AS $assetgc$ BEGIN INSERT INTO {ob} (reference, pk, old_value) VALUES (TG_ARGV[0], OLD.{pk}::text, OLD.{col}::text); RETURN NULL; END $assetgc$",
                    home_id = ident(kind, home)
                ),
                format!("REVOKE ALL ON FUNCTION {func}() FROM PUBLIC"),
                format!("DROP TRIGGER IF EXISTS {} ON {tbl}", ident(kind, &n.update)),
                format!(
                    "CREATE TRIGGER {} AFTER UPDATE ON {tbl} FOR EACH ROW WHEN (OLD.{col} IS DISTINCT FROM NEW.{col} AND OLD.{col} IS NOT NULL AND OLD.{col}::text <> '') EXECUTE FUNCTION {func}({arg})",
                    ident(kind, &n.update)
                ),
                format!("DROP TRIGGER IF EXISTS {} ON {tbl}", ident(kind, &n.delete)),
                format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {tbl} FOR EACH ROW WHEN (OLD.{col} IS NOT NULL AND OLD.{col}::text <> '') EXECUTE FUNCTION {func}({arg})",
                    ident(kind, &n.delete)
                ),
            ]
        }
        DbKind::MySql => {
            let (update, delete) = mysql_bodies(reference, t, home);
            vec![
                format!(
                    "CREATE TRIGGER {} AFTER UPDATE ON {tbl} FOR EACH ROW {update}",
                    mysql_trigger(t, &n.update)
                ),
                format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {tbl} FOR EACH ROW {delete}",
                    mysql_trigger(t, &n.delete)
                ),
            ]
        }
        DbKind::Sqlite => {
            let value = format!(
                "VALUES ({}, CAST(OLD.{pk} AS TEXT), CAST(OLD.{col} AS TEXT))",
                literal(kind, reference)
            );
            vec![
                format!("DROP TRIGGER IF EXISTS {}", ident(kind, &n.update)),
                format!(
                    "CREATE TRIGGER {} AFTER UPDATE ON {tbl} FOR EACH ROW WHEN OLD.{col} IS NOT NEW.{col} AND OLD.{col} IS NOT NULL AND CAST(OLD.{col} AS TEXT) <> '' BEGIN INSERT INTO {ob} (reference, pk, old_value) {value}; END",
                    ident(kind, &n.update)
                ),
                format!("DROP TRIGGER IF EXISTS {}", ident(kind, &n.delete)),
                format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {tbl} FOR EACH ROW WHEN OLD.{col} IS NOT NULL AND CAST(OLD.{col} AS TEXT) <> '' BEGIN INSERT INTO {ob} (reference, pk, old_value) {value}; END",
                    ident(kind, &n.delete)
                ),
            ]
        }
    }
}

/// A MySQL trigger lives in its table's schema.
pub fn mysql_trigger(t: &Track, name: &str) -> String {
    match split_table(&t.table).0 {
        Some(schema) => format!(
            "{}.{}",
            config_ident(DbKind::MySql, schema),
            ident(DbKind::MySql, name)
        ),
        None => ident(DbKind::MySql, name),
    }
}

/// The action statements of the update and delete triggers on MySQL/MariaDB, as the catalogue
/// keeps them (`information_schema.TRIGGERS.ACTION_STATEMENT`): an unchanged trigger is left in
/// place, so installing again leaves no moment without it. Values compare as bytes: a
/// case-insensitive collation would take `A.jpg` → `a.jpg` for no change.
pub fn mysql_bodies(reference: &str, t: &Track, home: &str) -> (String, String) {
    let k = DbKind::MySql;
    let (col, pk, ob, name) = (
        config_ident(k, &t.column),
        config_ident(k, &t.pk),
        outbox(k, home),
        literal(k, reference),
    );
    let insert = format!(
        "INSERT INTO {ob} (reference, pk, old_value) SELECT {name}, OLD.{pk}, OLD.{col} FROM DUAL WHERE OLD.{col} IS NOT NULL AND OLD.{col} <> ''"
    );
    (
        format!("{insert} AND NOT (CAST(OLD.{col} AS BINARY) <=> CAST(NEW.{col} AS BINARY))"),
        insert,
    )
}

/// Our triggers in the database, `(name, table as SQL text or name)`; PostgreSQL and MySQL give
/// the table's schema too. On PostgreSQL only those that call a function of the current schema
/// (where this install put its outbox and functions): another install in another schema of the
/// same database, with its own outbox, is not ours to list or remove.
pub fn list_triggers(kind: DbKind) -> String {
    match kind {
        DbKind::Postgres => format!(
            "SELECT t.tgname::text, t.tgrelid::regclass::text, t.tgenabled::text FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace WHERE NOT t.tgisinternal AND t.tgname LIKE '{}%' AND n.nspname = current_schema() ORDER BY 1",
            PREFIX.replace('_', "\\_")
        ),
        DbKind::MySql => format!(
            "SELECT CAST(TRIGGER_NAME AS CHAR), CAST(CONCAT(EVENT_OBJECT_SCHEMA, '.', EVENT_OBJECT_TABLE) AS CHAR), CAST(ACTION_STATEMENT AS CHAR), CAST(TRIGGER_SCHEMA AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE '{}%' ORDER BY 1",
            PREFIX.replace('_', "\\\\_")
        ),
        DbKind::Sqlite => format!(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '{}%' ESCAPE '\\' ORDER BY 1",
            PREFIX.replace('_', "\\_")
        ),
    }
}

/// PostgreSQL: our trigger functions in the current schema (the outbox's), with what `status`
/// checks: SECURITY DEFINER, the pinned search_path and the owner.
pub fn pg_list_functions() -> String {
    format!(
        "SELECT p.oid::regprocedure::text, p.proname::text, p.prosecdef::text, COALESCE(array_to_string(p.proconfig, ';'), ''), pg_get_userbyid(p.proowner)::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname LIKE '{}%' AND n.nspname = current_schema() ORDER BY 2",
        PREFIX.replace('_', "\\_")
    )
}

/// Whether the outbox exists in `home`.
pub fn outbox_exists(kind: DbKind, home: &str) -> String {
    match kind {
        DbKind::Postgres => format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = '{OUTBOX}' AND c.relkind = 'r' AND n.nspname = {}",
            literal(kind, home)
        ),
        DbKind::MySql => format!(
            "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.TABLES WHERE TABLE_NAME = '{OUTBOX}' AND TABLE_SCHEMA = {}",
            literal(kind, home)
        ),
        DbKind::Sqlite => {
            format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM sqlite_master WHERE type = 'table' AND name = '{OUTBOX}'"
            )
        }
    }
}

/// The age of a row on the database's clock, in microseconds, as text.
fn age_us(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => {
            "CAST(CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - changed_at)) * 1000000 AS BIGINT) AS TEXT)"
        }
        DbKind::MySql => {
            "CAST(TIMESTAMPDIFF(MICROSECOND, changed_at, CURRENT_TIMESTAMP(6)) AS CHAR)"
        }
        DbKind::Sqlite => {
            "CAST(CAST((julianday('now') - julianday(changed_at)) * 86400000000.0 AS INTEGER) AS TEXT)"
        }
    }
}

/// Due on the database's clock: `changed_at <= CURRENT_TIMESTAMP - delay`, the delay bound in
/// microseconds as parameter `n`.
fn due(kind: DbKind, n: usize) -> String {
    let p = param(kind, n);
    match kind {
        DbKind::Postgres => {
            format!("changed_at <= CURRENT_TIMESTAMP - ({p} * INTERVAL '1 microsecond')")
        }
        DbKind::MySql => format!("changed_at <= CURRENT_TIMESTAMP(6) - INTERVAL {p} MICROSECOND"),
        DbKind::Sqlite => {
            format!("julianday(changed_at) <= julianday('now') - ({p} / 86400000000.0)")
        }
    }
}

/// The next rows of one reference after id `$2` (by id), due ones only when `only_due` (the
/// delay is `$3`): `id, pk, old_value, age in µs`, all as text. The output columns have names of
/// their own: PostgreSQL names `CAST(id AS TEXT)` `id`, and `ORDER BY id` would then sort text.
pub fn read_rows(kind: DbKind, home: &str, only_due: bool, limit: usize) -> String {
    let text = if kind == DbKind::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    let due = if only_due {
        format!(" AND {}", due(kind, 3))
    } else {
        String::new()
    };
    format!(
        "SELECT CAST(id AS {text}) AS row_id, CAST(pk AS {text}) AS row_pk, CAST(old_value AS {text}) AS row_value, {age} AS row_age FROM {ob} WHERE reference = {p1} AND id > {p2}{due} ORDER BY id LIMIT {limit}",
        age = age_us(kind),
        ob = outbox(kind, home),
        p1 = param(kind, 1),
        p2 = param(kind, 2),
    )
}

/// One reference's rows (`$2`), and how many of them are due after the delay `$1` (bound in
/// this order: `?` parameters go by their place in the text): `total, due` as text.
pub fn count_rows(kind: DbKind, home: &str) -> String {
    let text = if kind == DbKind::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    format!(
        "SELECT CAST(COUNT(*) AS {text}), CAST(COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS {text}) FROM {} WHERE reference = {}",
        due(kind, 1),
        outbox(kind, home),
        param(kind, 2)
    )
}

/// Rows by reference name: `reference, count`.
pub fn rows_by_reference(kind: DbKind, home: &str) -> String {
    let text = if kind == DbKind::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    format!(
        "SELECT CAST(reference AS {text}), CAST(COUNT(*) AS {text}) FROM {} GROUP BY reference ORDER BY 1",
        outbox(kind, home)
    )
}

/// Deletes the outbox rows `ids` (as many parameters as ids).
pub fn delete_rows(kind: DbKind, home: &str, ids: usize) -> String {
    let marks: Vec<String> = (1..=ids).map(|i| param(kind, i)).collect();
    format!(
        "DELETE FROM {} WHERE id IN ({})",
        outbox(kind, home),
        marks.join(", ")
    )
}

/// MySQL/MariaDB: foreign keys whose parent's delete cascades into the tracked table (the
/// child): `constraint, parent`. Such deletes fire no trigger.
pub fn mysql_cascades() -> &'static str {
    "SELECT CAST(CONSTRAINT_NAME AS CHAR), CAST(REFERENCED_TABLE_NAME AS CHAR) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND DELETE_RULE = 'CASCADE' ORDER BY 1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_distinct_and_plain() {
        let a = Names::of("profile pictures");
        let b = Names::of("profile-pictures");
        assert_ne!(a.base, b.base);
        assert!(a.base.starts_with("assetgc_t_profile_pictures_"));
        let long = Names::of(&"x".repeat(300));
        assert!(long.update.len() <= 63, "{}", long.update);
        assert!(
            a.update
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
    }

    #[test]
    fn literals_are_escaped_per_database() {
        assert_eq!(literal(DbKind::Postgres, "it's"), "'it''s'");
        assert_eq!(literal(DbKind::MySql, "it's"), "'it''s'");
        assert_eq!(literal(DbKind::MySql, "a\\'b"), "X'615c2762'");
        assert_eq!(config_ident(DbKind::Postgres, "Prompts"), "\"prompts\"");
        assert_eq!(ident(DbKind::Postgres, "A\"pp"), "\"A\"\"pp\"");
        assert_eq!(ident(DbKind::MySql, "a`b"), "`a``b`");
        assert_eq!(table(DbKind::MySql, "app.prompts"), "`app`.`prompts`");
    }
}
