-- Every notification a run sent or failed to send, per channel: a failed one never changes the
-- run's exit code, so this is where it stays on record (with the job run's output when a job ran it).
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id BIGINT,
    job_run_id BIGINT,
    channel TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX notifications_run ON notifications (kind, run_id);
