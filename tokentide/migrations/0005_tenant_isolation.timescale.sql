-- Issue 5: tenants kept apart inside the database, TimescaleDB layout (decision 14). Same
-- contract as 0005_tenant_isolation.plain.sql: a tenant role (tenant_roles) reads its tenant's
-- rows only, under the same relation names. TimescaleDB refuses row-level security on
-- compressed hypertables and under continuous aggregates, and does not carry policies to
-- chunks (timescale/timescaledb#6827, #6832, #7830). So: regular tables get the same policies
-- as in the plain layout; events, metric_points, rollups_minute and rollups_hour are read by
-- tenant roles through security-barrier views of the same names in schema tokentide_tenant,
-- which comes first in their search_path. Tenant roles get no grant on those hypertables (nor,
-- therefore, on their chunks).

CREATE TABLE tenant_roles (
    role_name   name        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION tokentide_role_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT tenant_id FROM tenant_roles WHERE role_name = current_user $$;

ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_roles FOR SELECT USING (role_name = current_user);
-- Any role may look up its own mapping (and only its own), so that the policies below deny a
-- role bound to no tenant by showing it no rows rather than by an error.
GRANT SELECT ON tenant_roles TO PUBLIC;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'sessions', 'metric_series', 'signals'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR SELECT USING (tenant_id = (SELECT tokentide_role_tenant()))',
            t);
    END LOOP;
END
$$;

CREATE SCHEMA tokentide_tenant;
CREATE VIEW tokentide_tenant.events WITH (security_barrier) AS
    SELECT * FROM public.events WHERE tenant_id = (SELECT public.tokentide_role_tenant());
CREATE VIEW tokentide_tenant.metric_points WITH (security_barrier) AS
    SELECT * FROM public.metric_points WHERE tenant_id = (SELECT public.tokentide_role_tenant());
CREATE VIEW tokentide_tenant.rollups_minute WITH (security_barrier) AS
    SELECT * FROM public.rollups_minute WHERE tenant_id = (SELECT public.tokentide_role_tenant());
CREATE VIEW tokentide_tenant.rollups_hour WITH (security_barrier) AS
    SELECT * FROM public.rollups_hour WHERE tenant_id = (SELECT public.tokentide_role_tenant());

CREATE FUNCTION tokentide_bind_tenant_role(role name, tenant text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO tenant_roles (role_name, tenant_id) VALUES (role, tenant)
        ON CONFLICT (role_name) DO UPDATE SET tenant_id = EXCLUDED.tenant_id;
    EXECUTE format('GRANT USAGE ON SCHEMA public, tokentide_tenant TO %I', role);
    EXECUTE format('GRANT SELECT ON tenants, tenant_roles, sessions, metric_series, signals TO %I', role);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA tokentide_tenant TO %I', role);
    EXECUTE format('ALTER ROLE %I SET search_path = tokentide_tenant, public', role);
END
$$;

CREATE FUNCTION tokentide_unbind_tenant_role(role name) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('REVOKE SELECT ON tenants, tenant_roles, sessions, metric_series, signals FROM %I', role);
    EXECUTE format('REVOKE SELECT ON ALL TABLES IN SCHEMA tokentide_tenant FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SCHEMA public, tokentide_tenant FROM %I', role);
    EXECUTE format('ALTER ROLE %I RESET search_path', role);
    DELETE FROM tenant_roles WHERE role_name = role;
END
$$;
