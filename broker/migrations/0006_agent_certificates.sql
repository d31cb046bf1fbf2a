-- Schema version 6: agents can be revoked and their certificates expire.
-- A deregistered instance keeps its row (sessions and audit events name it) but is no
-- longer listed, reachable or allowed to connect.
ALTER TABLE instances ADD COLUMN deregistered_us INTEGER;
-- Every certificate the CA issued to an agent that is still accepted. An agent connects
-- only with a certificate listed here, before its expiry, for an instance not deregistered.
CREATE TABLE agent_certificates (
    fingerprint TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances(instance_id),
    not_after_us INTEGER NOT NULL,
    issued_us INTEGER NOT NULL
);
CREATE INDEX agent_certificates_by_instance ON agent_certificates(instance_id);
-- Certificates issued before this version are valid until 2046-01-01T00:00:00Z; their agents
-- renew them to the configured lifetime at their next start.
INSERT INTO agent_certificates (fingerprint, instance_id, not_after_us, issued_us)
    SELECT fingerprint, instance_id, 2398377600000000, registered_us FROM instances;
