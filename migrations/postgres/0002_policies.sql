-- FlowLink control plane, schema 2 (PostgreSQL): at most one live signing key per organisation, so
-- two requests creating an organisation's first key at once cannot both succeed (the loser reads
-- the winner's key). Kept identical to migrations/sqlite/0002_policies.sql.

CREATE UNIQUE INDEX org_signing_keys_one_live ON org_signing_keys(org_id) WHERE retired_at IS NULL;
