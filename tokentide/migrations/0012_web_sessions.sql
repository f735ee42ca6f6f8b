-- Issue 13: who may act, bound to what the caller can prove. Regular tables in either layout
-- (no hypertable), so one file serves both.
--
-- web_sessions: the web UI's sign-in (POST /api/v1/login with a tenant's read key). The
-- browser holds a random session id in an HttpOnly cookie; only its SHA-256 is stored, like
-- api_keys' secrets (256 random bits: a fast hash is enough). A session ends when it is
-- revoked (sign out), when it has been idle for TOKENTIDE_WEB_SESSION_IDLE_S, at expires_at
-- (TOKENTIDE_WEB_SESSION_MAX_S after sign-in), or as soon as its read key is revoked or its
-- tenant disabled (the dashboard joins api_keys and tenants on every request).
CREATE TABLE web_sessions (
    session_sha256  bytea       PRIMARY KEY
        CONSTRAINT web_sessions_sha256_length CHECK (octet_length(session_sha256) = 32),
    tenant_id       text        NOT NULL REFERENCES tenants (tenant_id),
    key_id          text        NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX web_sessions_by_key ON web_sessions (key_id);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);

-- agent_session_bindings: which agent may write and read a session's checkpoints through the
-- hook routes (/api/v1/hook/...). `tokentide hook` sends, with the tenant's ingest key,
-- X-Tokentide-Session-Proof = HMAC-SHA256(<its own secret>, session id); the first hook call
-- of a session binds the session to that proof's SHA-256, and later calls must prove the same.
-- The secret lives on the developer's machine (~/.config/tokentide/session-secret, or
-- TOKENTIDE_HOOK_SECRET) and never reaches the server, so the fleet-wide ingest key alone
-- cannot write into, or read from, another developer's session. No foreign key to tenants:
-- open mode's tenant `default` need not have a row, and checkpoints (0008) have none either.
CREATE TABLE agent_session_bindings (
    tenant_id     text        NOT NULL,
    session_id    text        NOT NULL,
    proof_sha256  bytea       NOT NULL
        CONSTRAINT agent_session_bindings_sha256_length CHECK (octet_length(proof_sha256) = 32),
    bound_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id)
);

-- Row-level security as 0005 sets it up: the pipeline's role owns both tables and sees every
-- row; a tenant role would see its own tenant's rows only. Neither table is granted to tenant
-- roles (like api_keys: hashes of credentials are the pipeline's business), so the policy is
-- the second line of defence should a grant be made by mistake.
ALTER TABLE web_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON web_sessions FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
ALTER TABLE agent_session_bindings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_session_bindings FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
