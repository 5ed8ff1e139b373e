-- Store fingerprints (SPEC §6): kind, normalised location and quarantine prefix of each store a
-- scan listed, and of the store an entry was queued for. NULL on rows written before: unknown,
-- accepted.
ALTER TABLE scans ADD COLUMN fingerprints TEXT;            -- JSON: store name -> fingerprint
-- The mass-deletion guard's baseline (SPEC §6 invariant 7): the stores whose orphan level this
-- scan set, by a purge without a refusal or one that --allow-mass-delete accepted.
ALTER TABLE scans ADD COLUMN guard_accepted TEXT;          -- JSON array of store names
ALTER TABLE queue ADD COLUMN fingerprint TEXT;
