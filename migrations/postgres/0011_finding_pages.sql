-- Pages of a scan's orphans for the API (SPEC §8), read by keyset in the report's order
-- (store, key, resource_type; the primary key is in another order) and by size and upload
-- time, each with the report's order as the tie-break. Text compares byte-wise (COLLATE "C"),
-- as the report orders it; NULL upload times sort as ''.
CREATE INDEX scan_orphans_report ON scan_orphans (scan_id, store COLLATE "C", key COLLATE "C", resource_type COLLATE "C");
CREATE INDEX scan_orphans_size ON scan_orphans (scan_id, size_bytes, store COLLATE "C", key COLLATE "C", resource_type COLLATE "C");
CREATE INDEX scan_orphans_uploaded ON scan_orphans (scan_id, (COALESCE(uploaded_at, '') COLLATE "C"), store COLLATE "C", key COLLATE "C", resource_type COLLATE "C");
