-- Checkpoints (issue 8): a session's summary saved before its context is compacted (Claude
-- Code's PreCompact hook, `tokentide hook`), to be printed back when the session starts again.
-- The transcript snapshot is optional, gzip-compressed, capped, and never stored for a tenant
-- whose privacy mode is not `off`. Read by the dashboard API as the pipeline's role; tenant
-- roles are not granted it (transcripts are the developers' own), the policy denies them anyway.
CREATE TABLE checkpoints (
    tenant_id             text        NOT NULL,
    session_id            text        NOT NULL,
    checkpoint_id         text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- what asked for it: pre_compact_auto, pre_compact_manual, api, ...
    trigger               text        NOT NULL,
    summary               jsonb       NOT NULL,
    transcript_gzip       bytea,
    transcript_bytes      integer,
    transcript_truncated  boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, session_id, checkpoint_id)
);
CREATE INDEX checkpoints_latest ON checkpoints (tenant_id, session_id, created_at DESC);
ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON checkpoints FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
