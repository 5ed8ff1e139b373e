-- An expiry rule reads the entries of its rows (reason, rule, row_id) at every run; a policy's
-- entries are found by rule too. Without this index each read scans the whole queue.
CREATE INDEX queue_rule_row ON queue (rule, row_id, reason);
