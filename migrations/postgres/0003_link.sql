-- FlowLink control plane, schema 3 (PostgreSQL): enrolled devices and their link to the control plane.
-- Kept column-for-column identical to migrations/sqlite/0003_link.sql.

-- Tokens a proxy enrols with (`fle_<id>.<secret>`); only the SHA-256 of the whole text is kept.
-- A token bound to a device (`device_id`) re-keys that device instead of enrolling a new one.
CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,                  -- a note for people, may be empty
    labels        TEXT NOT NULL,                  -- JSON object; win over the device's own labels
    uses_allowed  BIGINT NOT NULL,
    uses          BIGINT NOT NULL DEFAULT 0,
    created_by    TEXT NOT NULL,                  -- user id, token id or 'flowlink-control admin'
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    device_id     TEXT,                           -- set: a re-key token for this device
    revoked_at    BIGINT
);
CREATE INDEX enrollment_tokens_org ON enrollment_tokens(org_id, id);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    labels        TEXT NOT NULL,                  -- JSON object
    signing_key   BYTEA NOT NULL,                  -- Ed25519 public key (32 bytes): signs link challenges
    box_key       BYTEA NOT NULL,                  -- X25519 public key (32 bytes): secrets are wrapped to it
    key_version   BIGINT NOT NULL,               -- 1, then +1 at each re-key
    enrolled_at   BIGINT NOT NULL,
    rekeyed_at    BIGINT,
    last_seen_at  BIGINT,                        -- last authentication or heartbeat
    health        TEXT NOT NULL DEFAULT 'offline', -- last recorded: 'online' | 'stale' | 'offline'
    revoked_at    BIGINT,
    revoked_reason TEXT                           -- what the admin gave as the reason
);
CREATE INDEX devices_org ON devices(org_id, id);

-- The health of each MCP server a device's proxies wrap, from their heartbeats.
CREATE TABLE device_servers (
    device_id           TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    service             TEXT NOT NULL,
    state               TEXT NOT NULL,            -- 'up' | 'restarting' | 'crashed' | 'stopped'
    restarts_last_hour  BIGINT NOT NULL,
    last_error          TEXT,
    crash_loop          BIGINT NOT NULL DEFAULT 0, -- 1 while restarts_last_hour >= 3 (event recorded once)
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (device_id, service)
);

-- Messages for devices that travel between control-plane replicas: the replica holding a link
-- reads the message here when told its id by NOTIFY. Purged after a few minutes.
CREATE TABLE link_messages (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    service     TEXT,                             -- only links wrapping this service, when set
    body        TEXT NOT NULL,                    -- a flowlink_proto::link::ControlMessage, JSON
    created_at  BIGINT NOT NULL
);
CREATE INDEX link_messages_time ON link_messages(created_at);
