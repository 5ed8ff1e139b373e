-- Claims are fenced (SPEC §6, invariant 5): every claim of an entry takes the next token, and the
-- worker's writes name it, so a worker whose claim was taken over writes nothing. `in_flight`
-- says a store call for the entry started and its outcome was never recorded: whoever claims it
-- next looks before it concludes anything (a delete by a stopped worker, a move left unrecorded).
ALTER TABLE queue ADD COLUMN claim_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
