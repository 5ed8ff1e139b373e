-- On PostgreSQL the queue, audit and quarantine tables (SQLite's 0004) came with 0001_state.sql;
-- this version keeps the two histories numbered in step.
SELECT 1;
