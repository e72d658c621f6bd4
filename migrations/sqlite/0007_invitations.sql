-- Invitations to join an organisation: an admin invites an e-mail address with a role; the
-- link carries a random token of which only the SHA-256 is stored. Single use, expiring,
-- revocable. Kept column-for-column identical to migrations/postgres/0007_invitations.sql.

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,                    -- lower-cased
    role         TEXT NOT NULL,                    -- owner | admin | approver | auditor | viewer
    token_hash   TEXT NOT NULL UNIQUE,             -- SHA-256 of the token in the link
    invited_by   TEXT NOT NULL,                    -- user id of the inviter
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER,
    accepted_by  TEXT,                             -- user id of the person who joined
    revoked_at   INTEGER
);
CREATE INDEX invitations_org ON invitations(org_id, id);
