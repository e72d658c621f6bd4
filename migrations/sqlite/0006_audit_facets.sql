-- FlowLink control plane, schema 6 (SQLite): the audit trail's facets. The facts people filter
-- on (who, which agent, service, tool, decision, risk, the command) are copied out of the JSON
-- `detail` into columns of their own, each with an index that also carries the page order
-- (occurred_at, id), so a filtered page is an index range scan however many million events the
-- organisation has. Kept column-for-column identical to migrations/postgres/0006_audit_facets.sql.

ALTER TABLE audit_events ADD COLUMN user_name TEXT;   -- person's e-mail, or the device's `user` label (OS account)
ALTER TABLE audit_events ADD COLUMN agent     TEXT;   -- the MCP client (`agent`, or `client_name` of a session)
ALTER TABLE audit_events ADD COLUMN service   TEXT;
ALTER TABLE audit_events ADD COLUMN tool      TEXT;
ALTER TABLE audit_events ADD COLUMN decision  TEXT;   -- the proxy's verdict (`allow`, `block`, …)
ALTER TABLE audit_events ADD COLUMN risk      INTEGER; -- the shield's 0–100
ALTER TABLE audit_events ADD COLUMN command   TEXT;   -- a tool call's `arguments.command`, else its arguments as JSON (first 4096 characters)

-- Facts recorded by the proxies (and by people's actions that name a service or tool).
UPDATE audit_events SET
    agent    = CASE
                 WHEN json_type(detail, '$.agent') = 'text' THEN json_extract(detail, '$.agent')
                 WHEN json_type(detail, '$.client_name') = 'text' THEN json_extract(detail, '$.client_name')
               END,
    service  = CASE WHEN json_type(detail, '$.service') = 'text' THEN json_extract(detail, '$.service') END,
    tool     = CASE WHEN json_type(detail, '$.tool') = 'text' THEN json_extract(detail, '$.tool') END,
    decision = CASE
                 WHEN json_type(detail, '$.verdict') = 'text' THEN json_extract(detail, '$.verdict')
                 WHEN json_type(detail, '$.decision') = 'text' THEN json_extract(detail, '$.decision')
               END,
    risk     = CASE WHEN json_type(detail, '$.risk') IN ('integer', 'real') THEN CAST(json_extract(detail, '$.risk') AS INTEGER) END,
    command  = CASE
                 WHEN kind <> 'tool_call' THEN NULL
                 WHEN json_type(detail, '$.arguments.command') = 'text' THEN substr(json_extract(detail, '$.arguments.command'), 1, 4096)
                 WHEN json_type(detail, '$.arguments') <> 'null' THEN substr(json_extract(detail, '$.arguments'), 1, 4096)
               END
WHERE json_valid(detail);

-- Who: a person by e-mail (a token by its owner's), a failed sign-in by the e-mail tried, a
-- proxy's event by the record's `user` or else the device's `user` label.
UPDATE audit_events SET user_name = (SELECT email FROM users WHERE users.id = audit_events.actor_id)
WHERE actor_kind = 'user';
UPDATE audit_events SET user_name = (
    SELECT u.email FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = audit_events.actor_id)
WHERE actor_kind = 'token';
UPDATE audit_events SET user_name = actor_id WHERE actor_kind = 'anonymous';
UPDATE audit_events SET user_name = COALESCE(
    CASE WHEN json_valid(detail) AND json_type(detail, '$.user') = 'text' THEN json_extract(detail, '$.user') END,
    (SELECT CASE WHEN json_valid(d.labels) AND json_type(d.labels, '$.user') = 'text' THEN json_extract(d.labels, '$.user') END
       FROM devices d WHERE d.id = audit_events.actor_id))
WHERE actor_kind = 'device';

-- One index per filter, each ending in the page order.
CREATE INDEX audit_events_org_actor      ON audit_events(org_id, actor_id, occurred_at, id);
-- The two families (people's events, agents' events) as partial indexes: a filter `actor_kind <>
-- 'device'` could not use an index on actor_kind for the page order.
CREATE INDEX audit_events_org_people     ON audit_events(org_id, occurred_at, id) WHERE actor_kind <> 'device';
CREATE INDEX audit_events_org_agents     ON audit_events(org_id, occurred_at, id) WHERE actor_kind = 'device';
CREATE INDEX audit_events_org_kind       ON audit_events(org_id, kind, occurred_at, id);
CREATE INDEX audit_events_org_user       ON audit_events(org_id, user_name, occurred_at, id);
CREATE INDEX audit_events_org_agent      ON audit_events(org_id, agent, occurred_at, id);
CREATE INDEX audit_events_org_service    ON audit_events(org_id, service, occurred_at, id);
CREATE INDEX audit_events_org_tool       ON audit_events(org_id, tool, occurred_at, id);
CREATE INDEX audit_events_org_decision   ON audit_events(org_id, decision, occurred_at, id);
CREATE INDEX audit_events_org_risk       ON audit_events(org_id, risk, occurred_at, id);
