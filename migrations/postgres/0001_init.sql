-- FlowLink control plane, schema 1 (PostgreSQL). Times are Unix microseconds (BIGINT); ids are text
-- (UUIDv7 unless noted); flags are 0/1 integers. Kept column-for-column identical to
-- migrations/sqlite/0001_init.sql so one set of queries serves both engines.

CREATE TABLE orgs (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    require_2fa  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,          -- lower-cased
    display_name   TEXT NOT NULL,
    password_hash  TEXT,                          -- argon2id PHC string; NULL = OAuth-only
    totp_secret    TEXT,                          -- base32; NULL = no TOTP
    totp_enabled   BIGINT NOT NULL DEFAULT 0,
    totp_last_step BIGINT NOT NULL DEFAULT 0,    -- last accepted time step (replay guard)
    failed_logins  BIGINT NOT NULL DEFAULT 0,
    locked_until   BIGINT NOT NULL DEFAULT 0,
    disabled       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);

CREATE TABLE memberships (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,               -- public id (for listing and revoking)
    token_hash    TEXT NOT NULL UNIQUE,           -- SHA-256 of the cookie value
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    stage         TEXT NOT NULL,                  -- 'complete' | 'totp' (password done, TOTP due)
    auth_method   TEXT NOT NULL,                  -- 'password' | 'oauth:<provider>'
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,               -- absolute timeout
    ip            TEXT NOT NULL,
    user_agent    TEXT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,           -- SHA-256 of the secret part
    scopes        TEXT NOT NULL,                  -- space-separated permission names
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_tokens_org ON api_tokens(org_id);

CREATE TABLE oauth_identities (
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);

CREATE TABLE oauth_states (
    state_hash     TEXT PRIMARY KEY,              -- SHA-256 of `state`; the row is consumed once
    provider       TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    browser_hash   TEXT NOT NULL,                 -- SHA-256 of the binding cookie
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);

CREATE TABLE setup_tokens (
    token_hash  TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,                -- UUIDv7, also the dedup key for shipped events
    org_id       TEXT,                            -- NULL for events before any org (failed sign-in)
    occurred_at  BIGINT NOT NULL,
    kind         TEXT NOT NULL,                   -- e.g. 'auth.login', 'policy.version', 'tool_call'
    actor_kind   TEXT NOT NULL,                   -- 'user' | 'token' | 'system' | 'device' | 'anonymous'
    actor_id     TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,                   -- 'success' | 'failure' | 'denied' ...
    ip           TEXT NOT NULL,
    detail       TEXT NOT NULL                    -- JSON object
);
CREATE INDEX audit_events_org_time ON audit_events(org_id, occurred_at, id);

CREATE TABLE org_signing_keys (
    key_id       TEXT PRIMARY KEY,                -- hex SHA-256 of the public key, first 16 bytes
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    public_key   BYTEA NOT NULL,
    secret_key   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);
CREATE INDEX org_signing_keys_org ON org_signing_keys(org_id);

CREATE TABLE policy_versions (
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,                   -- 'org' | 'group:<label=value>' | 'service:<name>'
    version      BIGINT NOT NULL,
    body         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    author_id    TEXT NOT NULL,
    comment      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    restored_from BIGINT,                        -- set when this version is a rollback
    PRIMARY KEY (org_id, scope, version)
);
