-- `assetgc serve` (SPEC §8): API tokens, scheduled job runs and their leases.

-- Tokens made by `assetgc token new`: only the SHA-256 of each is kept.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL UNIQUE,        -- lowercase hex
    scope       TEXT    NOT NULL,               -- read | write
    created_at  TEXT    NOT NULL
);

-- Every run of a [[jobs]] entry, by the scheduler, `POST /api/jobs/{name}/run` or `jobs run`.
CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job           TEXT    NOT NULL,
    scheduled_for TEXT,                         -- the schedule's time this run is for; NULL when asked for
    trigger       TEXT    NOT NULL,             -- schedule | catch_up | manual
    holder        TEXT    NOT NULL,             -- the process that runs it (worker id)
    command       TEXT    NOT NULL,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    status        TEXT    NOT NULL,             -- running | succeeded | failed
    exit_code     INTEGER,
    summary       TEXT,
    output        TEXT,                         -- stdout and stderr, captured (capped)
    report_path   TEXT,
    report        TEXT,                         -- the report's content, so an ephemeral disk loses nothing
    scan_id       INTEGER
);
-- One run per scheduled time of a job, whichever instance gets there first.
CREATE UNIQUE INDEX job_runs_window ON job_runs (job, scheduled_for);
CREATE INDEX job_runs_job ON job_runs (job, id);

-- The run of a job that holds it now: never two runs of one job at once, across instances.
CREATE TABLE job_leases (
    job         TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    run_id      INTEGER,
    expires_at  TEXT    NOT NULL                -- RFC 3339 UTC; renewed while the run goes on
);

-- Scans started by a job run, so that its history names the scan and its report.
ALTER TABLE scans ADD COLUMN job_run_id INTEGER;
