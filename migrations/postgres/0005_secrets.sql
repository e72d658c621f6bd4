-- FlowLink control plane, schema 5 (PostgreSQL): zero-trust secrets.
-- Kept column-for-column identical to migrations/sqlite/0005_secrets.sql.
--
-- The control plane holds public keys and ciphertext only: secret values sealed to the
-- organisation's X25519 public key on an admin's machine, and the organisation's private key
-- wrapped (sealed) to each recipient's own X25519 key. It never holds a private key that opens
-- any of them.

-- The organisation's key pair, by version (1, 2, …): the public key only.
CREATE TABLE org_secret_keys (
    org_id            TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    version           BIGINT NOT NULL,
    public_key        BYTEA NOT NULL,                -- X25519 public key (32 bytes)
    state             TEXT NOT NULL,                -- 'active' | 'retiring' | 'retired'
    rotation_required TEXT,                         -- why the key must be rotated (a revocation), if it must
    created_by        TEXT NOT NULL,                -- user id
    created_at        BIGINT NOT NULL,
    retired_at        BIGINT,
    PRIMARY KEY (org_id, version)
);
-- At most one active key per organisation.
CREATE UNIQUE INDEX org_secret_keys_active ON org_secret_keys(org_id) WHERE state = 'active';

-- The organisation's private key of one version, sealed to one recipient's X25519 key.
CREATE TABLE org_key_wraps (
    org_id        TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    recipient     TEXT NOT NULL,                    -- 'device:<device id>' | 'custodian:<custodian id>'
    wrapped       TEXT NOT NULL,                    -- flowlink_proto::sealed::SealedBox, JSON
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,                          -- the device proved it holds this version
    PRIMARY KEY (org_id, key_version, recipient),
    FOREIGN KEY (org_id, key_version) REFERENCES org_secret_keys(org_id, version) ON DELETE CASCADE
);
CREATE INDEX org_key_wraps_recipient ON org_key_wraps(org_id, recipient);

-- People's own X25519 keys (kept by the CLI in a passphrase-encrypted file) that may hold the
-- organisation's private key: to grant it to devices, rotate it and re-seal secrets.
CREATE TABLE secret_custodians (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    name          TEXT NOT NULL,
    public_key    BYTEA NOT NULL,                    -- X25519 public key (32 bytes)
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX secret_custodians_org ON secret_custodians(org_id, id);

-- Secrets: the value sealed to the organisation's key of `key_version`, bound to
-- (org, name, version, key_version); scope and metadata in the clear.
CREATE TABLE secrets (
    org_id            TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,                -- ^[A-Z_][A-Z0-9_]{0,127}$
    version           BIGINT NOT NULL,             -- 1, then +1 at each new value
    key_version       BIGINT NOT NULL,
    sealed            TEXT NOT NULL,                -- flowlink_proto::sealed::SealedBox, JSON
    services          TEXT NOT NULL,                -- JSON array; empty: every service
    labels            TEXT NOT NULL,                -- JSON object; a device must carry all of them
    description       TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_by        TEXT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_used_at      BIGINT,
    last_used_device  TEXT,
    PRIMARY KEY (org_id, name)
);

-- Key-possession challenges: a random value sealed to the organisation's public key; the
-- device answers with SHA-256 of it. `proof_hash` is SHA-256 of that expected answer, so the
-- database alone cannot answer a challenge.
CREATE TABLE key_challenges (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    verification_id  TEXT,                          -- set: part of a verification run
    device_id        TEXT NOT NULL,
    key_version      BIGINT NOT NULL,
    proof_hash       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    answered_at      BIGINT,
    outcome          TEXT,                          -- 'proved' | 'failed' | 'offline'
    error            TEXT                           -- why it failed, as the device said
);
CREATE INDEX key_challenges_verification ON key_challenges(verification_id);
CREATE INDEX key_challenges_device ON key_challenges(device_id, key_version);
