-- Schema version 8: console sign-in. A user's console password (argon2id PHC string) and
-- virtual MFA devices, whose TOTP seed is sealed under the master key.
CREATE TABLE login_profiles (
    user_name TEXT PRIMARY KEY REFERENCES principals(name),
    password_hash TEXT NOT NULL,
    password_reset_required INTEGER NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE mfa_devices (
    serial_number TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    seed_sealed TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    -- Set while the device is enabled for a user.
    user_name TEXT REFERENCES principals(name),
    enabled_us INTEGER,
    -- The newest time step whose code was accepted: older and equal ones are replays.
    last_step INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mfa_devices_user ON mfa_devices (user_name);
