-- Issue 17: what a session works on. One row per session, written by the dashboard's hook
-- route (`tokentide hook`, Claude Code's UserPromptSubmit and PostToolUse): the working
-- directory, the git repository and branch, and the project the hook derived from them.
-- The project of a session (dashboard/projects.py) is this row's project, else the session's
-- `project` or `service.namespace` resource attribute, else none. A plain table in both layouts.
CREATE TABLE session_context (
    tenant_id       text        NOT NULL,
    session_id      text        NOT NULL,
    cwd             text,
    git_repository  text,
    git_branch      text,
    project         text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX session_context_by_project ON session_context (tenant_id, project);

-- Tenant-readable like webhook_deliveries (0009): the policy keeps tenants apart.
ALTER TABLE session_context ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON session_context FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
GRANT SELECT ON session_context TO PUBLIC;
