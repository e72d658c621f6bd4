-- The approval queue: tool calls held by a proxy until people decide (or the clock does).
-- Kept column-for-column identical to migrations/sqlite/0004_approvals.sql.

CREATE TABLE approval_requests (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    device_id        TEXT NOT NULL,
    call_ref         TEXT NOT NULL,                -- the proxy's id for the held call
    service          TEXT NOT NULL,
    agent            TEXT NOT NULL,
    requester        TEXT NOT NULL,                -- the user the proxy runs for
    tool             TEXT NOT NULL,
    arguments        TEXT NOT NULL,                -- JSON, secrets redacted by the proxy
    args_digest      TEXT NOT NULL,                -- SHA-256 of the canonical real arguments
    rule_id          TEXT,
    message          TEXT,
    reason           TEXT NOT NULL,
    risk             BIGINT NOT NULL,
    findings         TEXT NOT NULL,                -- JSON array
    policy           TEXT,                         -- bundle id the decision was made with
    approvers        TEXT NOT NULL,                -- JSON array of e-mails / role:<role>
    approvals_needed BIGINT NOT NULL,
    status           TEXT NOT NULL,                -- pending | approved | denied | timed_out | cancelled
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT,
    scope_kind       TEXT,                         -- this_call | same_call_for (approved only)
    scope_minutes    BIGINT,
    grant_until      BIGINT,                      -- same_call_for: identical calls pass until then
    comment          TEXT,
    UNIQUE (device_id, call_ref)
);
CREATE INDEX approval_requests_queue ON approval_requests(org_id, status, created_at, id);
CREATE INDEX approval_requests_due ON approval_requests(status, expires_at);
CREATE INDEX approval_requests_grants ON approval_requests(device_id, args_digest, status, grant_until);

CREATE TABLE approval_votes (
    request_id  TEXT NOT NULL REFERENCES approval_requests(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    email       TEXT NOT NULL,
    vote        TEXT NOT NULL,                     -- approve | deny
    comment     TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (request_id, user_id)
);
