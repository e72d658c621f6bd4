-- FlowLink control plane, schema 6 (PostgreSQL): the audit trail's facets. The facts people
-- filter on (who, which agent, service, tool, decision, risk, the command) are copied out of the
-- JSON `detail` into columns of their own, each with an index that also carries the page order
-- (occurred_at, id), so a filtered page is an index range scan however many million events the
-- organisation has. Kept column-for-column identical to migrations/sqlite/0006_audit_facets.sql.

ALTER TABLE audit_events ADD COLUMN user_name TEXT;   -- person's e-mail, or the device's `user` label (OS account)
ALTER TABLE audit_events ADD COLUMN agent     TEXT;   -- the MCP client (`agent`, or `client_name` of a session)
ALTER TABLE audit_events ADD COLUMN service   TEXT;
ALTER TABLE audit_events ADD COLUMN tool      TEXT;
ALTER TABLE audit_events ADD COLUMN decision  TEXT;   -- the proxy's verdict (`allow`, `block`, …)
ALTER TABLE audit_events ADD COLUMN risk      BIGINT; -- the shield's 0–100
ALTER TABLE audit_events ADD COLUMN command   TEXT;   -- a tool call's `arguments.command`, else its arguments as JSON (first 4096 characters)

-- Facts recorded by the proxies (and by people's actions that name a service or tool). `detail`
-- is always a JSON object written by the server.
UPDATE audit_events SET
    agent    = CASE
                 WHEN jsonb_typeof(detail::jsonb -> 'agent') = 'string' THEN detail::jsonb ->> 'agent'
                 WHEN jsonb_typeof(detail::jsonb -> 'client_name') = 'string' THEN detail::jsonb ->> 'client_name'
               END,
    service  = CASE WHEN jsonb_typeof(detail::jsonb -> 'service') = 'string' THEN detail::jsonb ->> 'service' END,
    tool     = CASE WHEN jsonb_typeof(detail::jsonb -> 'tool') = 'string' THEN detail::jsonb ->> 'tool' END,
    decision = CASE
                 WHEN jsonb_typeof(detail::jsonb -> 'verdict') = 'string' THEN detail::jsonb ->> 'verdict'
                 WHEN jsonb_typeof(detail::jsonb -> 'decision') = 'string' THEN detail::jsonb ->> 'decision'
               END,
    risk     = CASE WHEN jsonb_typeof(detail::jsonb -> 'risk') = 'number' THEN trunc((detail::jsonb ->> 'risk')::numeric)::bigint END,
    command  = CASE
                 WHEN kind <> 'tool_call' THEN NULL
                 WHEN jsonb_typeof(detail::jsonb -> 'arguments' -> 'command') = 'string' THEN substr(detail::jsonb -> 'arguments' ->> 'command', 1, 4096)
                 WHEN jsonb_typeof(detail::jsonb -> 'arguments') <> 'null' THEN substr((detail::jsonb -> 'arguments')::text, 1, 4096)
               END
WHERE jsonb_typeof(detail::jsonb) = 'object';

-- Who: a person by e-mail (a token by its owner's), a failed sign-in by the e-mail tried, a
-- proxy's event by the record's `user` or else the device's `user` label.
UPDATE audit_events SET user_name = (SELECT email FROM users WHERE users.id = audit_events.actor_id)
WHERE actor_kind = 'user';
UPDATE audit_events SET user_name = (
    SELECT u.email FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = audit_events.actor_id)
WHERE actor_kind = 'token';
UPDATE audit_events SET user_name = actor_id WHERE actor_kind = 'anonymous';
UPDATE audit_events SET user_name = COALESCE(
    CASE WHEN jsonb_typeof(detail::jsonb -> 'user') = 'string' THEN detail::jsonb ->> 'user' END,
    (SELECT CASE WHEN jsonb_typeof(d.labels::jsonb -> 'user') = 'string' THEN d.labels::jsonb ->> 'user' END
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
