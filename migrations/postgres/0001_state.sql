-- The state database on PostgreSQL (schema `assetgc`): the same tables as the SQLite
-- migrations 0001-0004, for several instances sharing one state. Times are RFC 3339 UTC text to
-- whole seconds, as on SQLite, so both compare and sort alike.

CREATE TABLE scans (
    id          BIGSERIAL PRIMARY KEY,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    scan_window TEXT    NOT NULL,
    mode        TEXT    NOT NULL,
    stores      TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    summary     TEXT,
    store_stats TEXT,
    api_calls   TEXT,
    warnings    TEXT,
    report_path TEXT,
    duration_ms BIGINT
);
CREATE INDEX scans_started_at ON scans (started_at);

CREATE TABLE api_budget_calls (
    account TEXT   NOT NULL,
    minute  BIGINT NOT NULL,
    calls   BIGINT NOT NULL,
    PRIMARY KEY (account, minute)
);

CREATE TABLE api_budget_provider (
    account    TEXT   PRIMARY KEY,
    rate_limit BIGINT NOT NULL,
    remaining  BIGINT NOT NULL,
    reset_at   TEXT   NOT NULL,
    seen_at    TEXT   NOT NULL
);

CREATE TABLE scan_orphans (
    scan_id       BIGINT NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    store         TEXT   NOT NULL,
    resource_type TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    size_bytes    BIGINT NOT NULL,
    uploaded_at   TEXT,
    format        TEXT   NOT NULL,
    url           TEXT,
    PRIMARY KEY (scan_id, store, resource_type, key)
);

CREATE TABLE scan_missing (
    scan_id    BIGINT NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    ord        BIGINT NOT NULL,
    reference  TEXT   NOT NULL,
    record_id  TEXT,
    title      TEXT,
    owner      TEXT,
    media_type TEXT,
    key        TEXT   NOT NULL,
    created_at TEXT,
    status     TEXT   NOT NULL,
    link       TEXT,
    PRIMARY KEY (scan_id, ord)
);

CREATE TABLE queue (
    id              BIGSERIAL PRIMARY KEY,
    store           TEXT   NOT NULL,
    resource_type   TEXT   NOT NULL DEFAULT '',
    key             TEXT   NOT NULL,
    reason          TEXT   NOT NULL,
    rule            TEXT   NOT NULL DEFAULT '',
    row_id          TEXT   NOT NULL DEFAULT '',
    client_id       TEXT   NOT NULL DEFAULT '',
    scan_id         BIGINT,
    queued_at       TEXT   NOT NULL,
    uploaded_at     TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT   NOT NULL,
    state           TEXT   NOT NULL DEFAULT 'pending',
    actor           TEXT   NOT NULL DEFAULT '',
    original_key    TEXT,
    quarantine_key  TEXT,
    claimed_by      TEXT,
    claimed_at      TEXT,
    finished_at     TEXT,
    outcome         TEXT
);
CREATE INDEX queue_due ON queue (state, next_attempt_at, id);
CREATE INDEX queue_object ON queue (store, resource_type, key);
CREATE INDEX queue_original ON queue (original_key);
CREATE UNIQUE INDEX queue_live ON queue (store, resource_type, key) WHERE state IN ('pending', 'claimed');

CREATE TABLE audit (
    id            BIGSERIAL PRIMARY KEY,
    at            TEXT   NOT NULL,
    actor         TEXT   NOT NULL,
    store         TEXT   NOT NULL DEFAULT '',
    resource_type TEXT   NOT NULL DEFAULT '',
    key           TEXT   NOT NULL DEFAULT '',
    outcome       TEXT   NOT NULL,
    detail        TEXT,
    queue_id      BIGINT
);
CREATE INDEX audit_key ON audit (key);

CREATE TABLE quarantine (
    id             BIGSERIAL PRIMARY KEY,
    store          TEXT   NOT NULL,
    resource_type  TEXT   NOT NULL DEFAULT '',
    key            TEXT   NOT NULL,
    quarantine_key TEXT   NOT NULL,
    moved_at       TEXT   NOT NULL,
    state          TEXT   NOT NULL DEFAULT 'held',
    queue_id       BIGINT
);
CREATE INDEX quarantine_key ON quarantine (store, resource_type, key, moved_at);
CREATE INDEX quarantine_queue ON quarantine (queue_id);
