-- Choosing a quarantine key asks whether it is taken, by a recorded copy or by an entry's move:
-- one index look-up each instead of a scan of both tables per entry moved. On the key alone, so
-- that a planner without statistics yet never picks these for a look-up by (store, type, key).
CREATE INDEX quarantine_spot ON quarantine (quarantine_key);
CREATE INDEX queue_spot ON queue (quarantine_key);
