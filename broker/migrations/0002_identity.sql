-- Schema version 2: identity, policies, instance tags and the audit log.
ALTER TABLE principals ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
ALTER TABLE principals ADD COLUMN principal_id TEXT NOT NULL DEFAULT '';
ALTER TABLE principals ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE principals ADD COLUMN created_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE access_keys ADD COLUMN created_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE access_keys ADD COLUMN expires_us INTEGER;
ALTER TABLE access_keys ADD COLUMN token_hash TEXT;
ALTER TABLE access_keys ADD COLUMN session_name TEXT;
ALTER TABLE activations ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
CREATE TABLE inline_policies (
    principal TEXT NOT NULL REFERENCES principals(name),
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (principal, name)
);
CREATE TABLE managed_policies (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE attachments (
    principal TEXT NOT NULL REFERENCES principals(name),
    policy TEXT NOT NULL REFERENCES managed_policies(name),
    PRIMARY KEY (principal, policy)
);
CREATE TABLE instance_tags (
    instance_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (instance_id, key)
);
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    decision TEXT NOT NULL,
    policy TEXT,
    sid TEXT,
    statement_index INTEGER,
    source_ip TEXT NOT NULL
);
