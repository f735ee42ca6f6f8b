-- Issue 8, notifications: per-tenant webhooks for context signals, and their delivery log.
-- Both are regular tables in either layout (no hypertable), so one file serves both.
--
-- webhooks holds each endpoint's signing secret in clear: the notifier needs it to compute
-- the HMAC of every delivery (a hash of it would be useless). Tenant roles (migration 0005)
-- therefore get no grant on it, and row-level security with no policy for them denies every
-- row even if a grant is made by mistake; the pipeline's role owns the table and sees all.
CREATE TABLE webhooks (
    tenant_id    text        NOT NULL REFERENCES tenants (tenant_id),
    webhook_id   text        PRIMARY KEY,
    url          text        NOT NULL,
    secret       text        NOT NULL,
    -- Signal kinds delivered (SignalKind values); NULL: every kind.
    kinds        text[],
    enabled      boolean     NOT NULL DEFAULT true,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id);
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;

-- One row per (webhook, signal): the natural key makes a redelivered signal a no-op, so a
-- webhook is sent each signal once. The payload is kept so that retries (and a restarted
-- notifier) send the same body. status: pending (recorded, not attempted yet), failed (an
-- attempt failed, another is due at next_attempt_at), delivered (2xx), dead (attempts
-- exhausted or refused for good).
CREATE TABLE webhook_deliveries (
    tenant_id        text        NOT NULL,
    webhook_id       text        NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    signal_id        text        NOT NULL,
    session_id       text        NOT NULL,
    kind             text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'failed', 'delivered', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_http_status integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    PRIMARY KEY (webhook_id, signal_id)
);
-- The dashboard's log, newest first per tenant; the notifier's queue of due attempts.
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (tenant_id, created_at DESC);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed');

-- The delivery log is tenant-readable, like signals (0005): a tenant role reads its own rows
-- only. It is granted to PUBLIC instead of through tokentide_bind_tenant_role so that this
-- migration does not redefine that function (layout-specific): the policy is what keeps
-- tenants apart, and a role bound to no tenant sees no rows (tokentide_role_tenant() is NULL).
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
GRANT SELECT ON webhook_deliveries TO PUBLIC;
