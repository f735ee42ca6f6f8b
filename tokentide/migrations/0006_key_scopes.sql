-- API keys get a scope (issue 6): `ingest` keys let agents export telemetry, `read` keys let
-- people and tools read their tenant's data from the dashboard API. A key is one or the other,
-- so a key on a developer's laptop cannot read the whole team's sessions. Existing keys were
-- ingest keys.
ALTER TABLE api_keys
    ADD COLUMN scope text NOT NULL DEFAULT 'ingest'
        CONSTRAINT api_keys_scope CHECK (scope IN ('ingest', 'read'));
