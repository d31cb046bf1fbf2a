-- Schema version 3: the audit log's hash chain. Rows written before it keep NULL hashes
-- and are reported as unchained legacy rows.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
