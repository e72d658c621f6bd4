-- The version of flowlink-proxy that last reported each wrapped server (from the link's hello),
-- so admins see which devices still run an old proxy. NULL: not reported since this schema, or
-- not plain text. Kept column-for-column identical to migrations/sqlite/0008_proxy_versions.sql.

ALTER TABLE device_servers ADD COLUMN proxy_version TEXT;
