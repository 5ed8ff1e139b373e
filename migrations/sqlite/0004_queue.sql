-- The durable deletion queue (SPEC §6): every deletion assetgc makes goes through here.
-- Times are RFC 3339 UTC to whole seconds ('2025-09-15T14:30:00Z'), which sort as text.
CREATE TABLE queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    store           TEXT    NOT NULL,
    resource_type   TEXT    NOT NULL DEFAULT '',   -- '' outside Cloudinary
    key             TEXT    NOT NULL,              -- the object to remove (a quarantine copy's own key)
    reason          TEXT    NOT NULL,              -- purge | queue add | quarantine (removal of a copy) | ...
    rule            TEXT    NOT NULL DEFAULT '',   -- expiry rule or policy that queued it
    row_id          TEXT    NOT NULL DEFAULT '',   -- the expiring row, for rules
    client_id       TEXT    NOT NULL DEFAULT '',
    scan_id         INTEGER,                       -- the scan a purge took it from
    queued_at       TEXT    NOT NULL,
    uploaded_at     TEXT,                          -- from the listing, when it came from a scan
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',  -- pending | claimed | failed | done | dropped
    actor           TEXT    NOT NULL DEFAULT '',   -- who queued it, for the audit log
    original_key    TEXT,                          -- for a quarantine copy: the key it was moved from
    quarantine_key  TEXT,                          -- where this entry's move goes, fixed at its first claim
    claimed_by      TEXT,                          -- host:pid of the worker holding the claim
    claimed_at      TEXT,
    finished_at     TEXT,
    outcome         TEXT
);
CREATE INDEX queue_due ON queue (state, next_attempt_at, id);
CREATE INDEX queue_object ON queue (store, resource_type, key);
-- One live entry per object: queueing a key that waits already adds nothing.
CREATE UNIQUE INDEX queue_live ON queue (store, resource_type, key) WHERE state IN ('pending', 'claimed');

-- Every deletion, quarantine, drop, retry and override.
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT    NOT NULL,
    actor         TEXT    NOT NULL,   -- command, token name or trigger
    store         TEXT    NOT NULL DEFAULT '',
    resource_type TEXT    NOT NULL DEFAULT '',
    key           TEXT    NOT NULL DEFAULT '',
    outcome       TEXT    NOT NULL,   -- deleted | quarantined | already_gone | referenced | too_recent | kept: shared | failed: … | dropped | retried | mass_delete_override | restored
    detail        TEXT,
    queue_id      INTEGER
);
CREATE INDEX audit_key ON audit (key);

-- Quarantine moves: `restore` reads the newest one of a key; neither lists the store.
CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    store          TEXT    NOT NULL,
    resource_type  TEXT    NOT NULL DEFAULT '',
    key            TEXT    NOT NULL,
    quarantine_key TEXT    NOT NULL,
    moved_at       TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'held',  -- held | removed | restored | kept
    queue_id       INTEGER                           -- the removal entry
);
CREATE INDEX quarantine_key ON quarantine (store, resource_type, key, moved_at);
