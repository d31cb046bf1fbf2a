-- Schema version 1: principals, keys, activations, instances, sessions.
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE
);
CREATE TABLE access_keys (
    access_key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(name),
    secret TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE activations (
    activation_id TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    iam_role TEXT NOT NULL,
    description TEXT NOT NULL,
    default_instance_name TEXT NOT NULL,
    registration_limit INTEGER NOT NULL,
    registrations INTEGER NOT NULL DEFAULT 0,
    expires_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY,
    activation_id TEXT NOT NULL,
    iam_role TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    registered_us INTEGER NOT NULL,
    last_ping_us INTEGER,
    agent_version TEXT NOT NULL DEFAULT '',
    platform_type TEXT NOT NULL DEFAULT '',
    platform_name TEXT NOT NULL DEFAULT '',
    platform_version TEXT NOT NULL DEFAULT '',
    computer_name TEXT NOT NULL DEFAULT '',
    ip_address TEXT NOT NULL DEFAULT ''
);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    document TEXT NOT NULL,
    owner_arn TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    details TEXT NOT NULL DEFAULT '',
    exit_code INTEGER
);
CREATE INDEX sessions_by_start ON sessions(start_us);
