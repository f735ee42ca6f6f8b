-- Issue 17: a session's execution plan (the todo list Claude Code keeps), as the hook reports
-- it (`tokentide hook`, PostToolUse on TodoWrite and UserPromptSubmit), one row per version:
-- a version is written only when the plan differs from the session's latest one (`digest`,
-- SHA-256 of the stored items), so the history says how the plan changed over time. `items`
-- holds what the tenant's privacy mode lets through (decision 38): under `hash` each text is a
-- keyed hash, under `drop` no text at all; counts and statuses are always kept. A plain table
-- in both layouts.
CREATE TABLE session_plans (
    tenant_id    text        NOT NULL,
    session_id   text        NOT NULL,
    version      integer     NOT NULL CONSTRAINT session_plans_version_positive CHECK (version > 0),
    at           timestamptz NOT NULL DEFAULT now(),
    digest       bytea       NOT NULL CONSTRAINT session_plans_digest_length CHECK (octet_length(digest) = 32),
    -- [{"content": text|null, "active_form": text|null, "status": pending|in_progress|completed}]
    items        jsonb       NOT NULL,
    -- what the privacy mode left of the texts: kept (off), hashed (hash), dropped (drop)
    text_mode    text        NOT NULL CONSTRAINT session_plans_text_mode CHECK (text_mode IN ('kept', 'hashed', 'dropped')),
    total        integer     NOT NULL CONSTRAINT session_plans_total CHECK (total >= 0),
    done         integer     NOT NULL CONSTRAINT session_plans_done CHECK (done >= 0 AND done <= total),
    in_progress  integer     NOT NULL CONSTRAINT session_plans_in_progress CHECK (in_progress >= 0 AND in_progress <= total),
    PRIMARY KEY (tenant_id, session_id, version)
);

-- Tenant-readable like session_context (0017): the policy keeps tenants apart.
ALTER TABLE session_plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON session_plans FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
GRANT SELECT ON session_plans TO PUBLIC;
