-- On PostgreSQL the findings tables (SQLite's 0003) came with 0001_state.sql; this version keeps
-- the two histories numbered in step.
SELECT 1;
