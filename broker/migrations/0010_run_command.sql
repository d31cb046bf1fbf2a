-- Run Command: one row per command (its targets resolved and recorded when it was sent) and
-- one per invocation (a command on one instance).
CREATE TABLE commands (
    command_id TEXT PRIMARY KEY NOT NULL,
    document_name TEXT NOT NULL,
    document_version TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    parameters TEXT NOT NULL,
    script TEXT NOT NULL,
    working_directory TEXT NOT NULL DEFAULT '',
    execution_timeout_s INTEGER NOT NULL,
    instance_ids TEXT NOT NULL,
    targets TEXT NOT NULL,
    requested_us INTEGER NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    max_concurrency TEXT NOT NULL,
    max_errors TEXT NOT NULL,
    status TEXT NOT NULL,
    status_details TEXT NOT NULL,
    owner_arn TEXT NOT NULL
);
CREATE INDEX commands_requested ON commands (requested_us);

CREATE TABLE command_invocations (
    command_id TEXT NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_details TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    started_us INTEGER,
    ended_us INTEGER,
    exit_code INTEGER,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    stdout_sha256 TEXT NOT NULL DEFAULT '',
    stderr_sha256 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (command_id, instance_id)
);
CREATE INDEX command_invocations_instance ON command_invocations (instance_id);
