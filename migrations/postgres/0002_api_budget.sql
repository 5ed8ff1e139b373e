-- On PostgreSQL the API budget tables (SQLite's 0002) came with 0001_state.sql; this version keeps
-- the two histories numbered in step.
SELECT 1;
