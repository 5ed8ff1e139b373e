-- Every scan is recorded: history, trends, spike alerts and purge read from here.
CREATE TABLE scans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    scan_window TEXT    NOT NULL,           -- JSON: {"days": N} | {"all": true} | {"since": "..."}
    mode        TEXT    NOT NULL,           -- both | orphans | missing
    stores      TEXT    NOT NULL,           -- JSON array of store names
    state       TEXT    NOT NULL,           -- running | complete | incomplete | failed
    summary     TEXT,                       -- JSON summary of the report
    store_stats TEXT,                       -- JSON: per-store counts
    api_calls   TEXT,                       -- JSON: store name -> calls
    warnings    TEXT,                       -- JSON array
    report_path TEXT,
    duration_ms INTEGER
);
CREATE INDEX scans_started_at ON scans (started_at);
