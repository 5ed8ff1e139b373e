-- Retention policy runs (`clean`, SPEC §2): what each run planned and what became of it; the
-- id is the run's job id.
CREATE TABLE cleanups (
    id          BIGSERIAL PRIMARY KEY,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    state       TEXT    NOT NULL DEFAULT 'running',   -- running | done
    dry_run     INTEGER NOT NULL,
    policies    TEXT    NOT NULL,                      -- JSON array of policy names
    summary     TEXT                                   -- JSON: the run's figures
);
