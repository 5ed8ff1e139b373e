-- The process that runs a scan or a clean run (its worker id), so that one left `running` by a
-- process that has died is recorded `failed` (scans) or `done` with a failure (clean runs) by the
-- next `serve` that starts, by a job run's end, or by a server stopping past its grace.
ALTER TABLE scans ADD COLUMN holder TEXT;
ALTER TABLE cleanups ADD COLUMN holder TEXT;
