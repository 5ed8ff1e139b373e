-- The findings of every scan, so that `purge` and `history` work from the state database
-- rather than from report files.

-- Orphans by object identity (store, resource_type, key); resource_type is '' outside Cloudinary.
CREATE TABLE scan_orphans (
    scan_id       INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    store         TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    uploaded_at   TEXT,                     -- RFC 3339 UTC
    format        TEXT    NOT NULL,
    url           TEXT,
    PRIMARY KEY (scan_id, store, resource_type, key)
) WITHOUT ROWID;

-- Missing rows in report order (`ord`).
CREATE TABLE scan_missing (
    scan_id    INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    ord        INTEGER NOT NULL,
    reference  TEXT    NOT NULL,
    record_id  TEXT,
    title      TEXT,
    owner      TEXT,
    media_type TEXT,
    key        TEXT    NOT NULL,
    created_at TEXT,                        -- RFC 3339 UTC
    status     TEXT    NOT NULL,
    link       TEXT,
    PRIMARY KEY (scan_id, ord)
) WITHOUT ROWID;
