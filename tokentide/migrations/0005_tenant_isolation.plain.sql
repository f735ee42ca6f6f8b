-- Issue 5: tenants kept apart inside the database (decision 14). A tenant role is a database
-- role mapped to one tenant in tenant_roles (used by Grafana, or a tenant's own read-only
-- access); row-level security policies let it read its tenant's rows only. The pipeline's own
-- role owns the tables, so it is not subject to the policies (ENABLE, not FORCE) and sees every
-- tenant. Tenant roles get SELECT only: with no INSERT/UPDATE/DELETE grant and no policy for
-- them, they cannot write.
--
--   CREATE ROLE grafana_acme LOGIN PASSWORD '...';          -- the operator (CREATEROLE)
--   SELECT tokentide_bind_tenant_role('grafana_acme', 'acme');  -- the pipeline's role

CREATE TABLE tenant_roles (
    role_name   name        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The tenant of the role running the query; NULL (no rows visible) for any other role.
CREATE FUNCTION tokentide_role_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT tenant_id FROM tenant_roles WHERE role_name = current_user $$;

-- Policies compare with (SELECT tokentide_role_tenant()): an init plan evaluated once per
-- query, so tenant_id = <constant> can use the tables' (tenant_id, ...) indexes.
ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_roles FOR SELECT USING (role_name = current_user);
-- Any role may look up its own mapping (and only its own), so that the policies below deny a
-- role bound to no tenant by showing it no rows rather than by an error.
GRANT SELECT ON tenant_roles TO PUBLIC;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'tenants', 'api_keys', 'sessions', 'events', 'metric_series', 'metric_points',
        'signals', 'rollups_minute', 'rollups_hour'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR SELECT USING (tenant_id = (SELECT tokentide_role_tenant()))',
            t);
    END LOOP;
END
$$;

-- Map `role` to `tenant` (again: moves it) and let it read the tenant-visible relations.
-- api_keys is never granted: key hashes are the pipeline's business.
CREATE FUNCTION tokentide_bind_tenant_role(role name, tenant text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO tenant_roles (role_name, tenant_id) VALUES (role, tenant)
        ON CONFLICT (role_name) DO UPDATE SET tenant_id = EXCLUDED.tenant_id;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), role);
    EXECUTE format(
        'GRANT SELECT ON tenants, tenant_roles, sessions, events, metric_series, metric_points, '
        'signals, rollups_minute, rollups_hour TO %I', role);
END
$$;

CREATE FUNCTION tokentide_unbind_tenant_role(role name) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format(
        'REVOKE SELECT ON tenants, tenant_roles, sessions, events, metric_series, metric_points, '
        'signals, rollups_minute, rollups_hour FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM %I', current_schema(), role);
    DELETE FROM tenant_roles WHERE role_name = role;
END
$$;
