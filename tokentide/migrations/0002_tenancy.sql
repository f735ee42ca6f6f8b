-- Multi-tenancy: per-tenant policy and API keys (`tokentide admin ...`, ingest's KeyStore).

-- Policy columns: NULL means "the service's configured default" (IngestSettings).
ALTER TABLE tenants
    ADD COLUMN requests_per_s  double precision CONSTRAINT tenants_requests_per_s_positive CHECK (requests_per_s > 0),
    ADD COLUMN bytes_per_s     double precision CONSTRAINT tenants_bytes_per_s_positive CHECK (bytes_per_s > 0),
    ADD COLUMN max_body_bytes  bigint CONSTRAINT tenants_max_body_bytes_positive CHECK (max_body_bytes > 0),
    ADD COLUMN redaction       text CONSTRAINT tenants_redaction_mode CHECK (redaction IN ('hash', 'drop', 'off')),
    -- A disabled tenant's keys are refused (403) by ingest; its data stays.
    ADD COLUMN disabled_at     timestamptz,
    -- tokentide.tenancy.TENANT_NAME_PATTERN: names go into Kafka keys (tenant/session).
    ADD CONSTRAINT tenants_name_format CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_.-]{0,62}$');

-- An API key is `tt_<key_id>_<secret>`; only sha256(secret) is stored, the key is shown once.
-- Keys are revoked, never deleted, so that `key list` keeps their history.
CREATE TABLE api_keys (
    key_id         text        PRIMARY KEY CONSTRAINT api_keys_key_id_format CHECK (key_id ~ '^[0-9a-f]{12}$'),
    tenant_id      text        NOT NULL REFERENCES tenants (tenant_id),
    secret_sha256  bytea       NOT NULL CONSTRAINT api_keys_secret_sha256_length CHECK (octet_length(secret_sha256) = 32),
    description    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
