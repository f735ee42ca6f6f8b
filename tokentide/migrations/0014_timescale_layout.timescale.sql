-- Issue 15, TimescaleDB layout: the same numbers and the same maintenance as the plain layout.
--
-- 1. rollups_hour stops being a continuous aggregate and becomes the plain layout's table,
-- recomputed by the sink in the transaction that writes the minutes (tokentide_rollup_hours),
-- so both layouts give the same numbers at every commit (issue 15, docs/decisions.md, decision 37).
--
-- Why: since decision 19 the sink adds rollup increments to minutes of any age, so late data
-- lands in hours the aggregate had materialised. Real-time aggregation reads the raw minutes
-- only above the materialisation watermark: such an hour kept its old sum until the policy's
-- next refresh (every 5 minutes, and never for hours older than its 30-day start_offset).
-- refresh_continuous_aggregate cannot run in the sink's transaction (nor in any transaction
-- block), and a refresh after each commit would leave a window with the old sum, a crash
-- between commit and refresh stale until the policy, and a refresh per batch. The sink already
-- knows which hours each batch touched; recomputing them in its transaction is exact, bounded
-- (the batch's hours only) and the code path the plain layout has run since 0004.
--
-- The table is regular, not a hypertable: it is small (one row per session, model and hour),
-- rewritten at any age, never compressed nor dropped by retention; a regular table also keeps
-- row-level security. Tenant roles still read it through tokentide_tenant.rollups_hour (0005),
-- which depended on the aggregate: it is created again, and granted again to every bound role
-- (tokentide_bind_tenant_role granted ALL TABLES IN SCHEMA tokentide_tenant when it ran).
--
-- 2. tokentide_maintain applies the retention at once, as the plain layout's drops partitions:
-- the chunks of events and metric_points entirely older than as_of - retention are dropped when
-- the sink's maintenance runs (drop_chunks), and the retention policy stays, so TimescaleDB's
-- job drops them too when no sink runs. Both layouts then hold the same raw rows at the same
-- moments, and the function does what its contract (and the plain one) says: as_of counts.

-- A refresh cancelled by 0014_no_refresh_job may still be ending: wait for its worker to exit
-- (at most 60 s; its locks would make the DROP below wait anyway, but it must not start anew
-- against a dropped aggregate).
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + INTERVAL '60 seconds';
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (
            SELECT FROM pg_stat_activity
             WHERE datname = current_database()
               AND application_name LIKE 'Refresh Continuous Aggregate Policy%');
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'a refresh of rollups_hour is still running after 60 s: run migrate again';
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

-- Sinks keep running during the migration: their minutes must be either in the fill below or
-- recomputed by the new tokentide_rollup_hours. SHARE waits for the transactions writing minutes
-- to end and holds new ones back until this one commits; each then recomputes its hours with
-- the new function (a statement sees the functions committed before it starts).
LOCK TABLE rollups_minute IN SHARE MODE;

DROP VIEW tokentide_tenant.rollups_hour;
-- Its materialisation hypertable goes with it (its refresh job went in 0014_no_refresh_job).
DROP MATERIALIZED VIEW rollups_hour;

CREATE TABLE rollups_hour (
    tenant_id              text        NOT NULL,
    session_id             text        NOT NULL,
    model                  text        NOT NULL,
    hour                   timestamptz NOT NULL,
    user_id                text,
    agent                  text        NOT NULL,
    input_tokens           bigint      NOT NULL,
    output_tokens          bigint      NOT NULL,
    cache_read_tokens      bigint      NOT NULL,
    cache_creation_tokens  bigint      NOT NULL,
    reasoning_tokens       bigint      NOT NULL,
    cost_usd               numeric(20, 9) NOT NULL,
    requests               integer     NOT NULL,
    errors                 integer     NOT NULL,
    PRIMARY KEY (tenant_id, session_id, model, hour)
);
CREATE INDEX rollups_hour_by_time ON rollups_hour (tenant_id, hour);
COMMENT ON TABLE rollups_hour IS
    'usage per session, model and hour: the sum of its minutes in rollups_minute, recomputed by the sink in the transaction that writes them (tokentide_rollup_hours)';

INSERT INTO rollups_hour
SELECT tenant_id, session_id, model,
       date_bin(INTERVAL '1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
       max(user_id), max(agent), sum(input_tokens)::bigint, sum(output_tokens)::bigint,
       sum(cache_read_tokens)::bigint, sum(cache_creation_tokens)::bigint, sum(reasoning_tokens)::bigint,
       sum(cost_usd), sum(requests)::integer, sum(errors)::integer
  FROM rollups_minute
 GROUP BY 1, 2, 3, 4;

-- The plain layout's function (0004_storage_layout.plain.sql), word for word: recompute the
-- hours touched by the rows of the sink's staging table staging_rollups_minute (a temporary
-- table of the calling session) from rollups_minute; overwrite semantics, so running it twice
-- changes nothing.
CREATE OR REPLACE FUNCTION tokentide_rollup_hours() RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    written bigint;
BEGIN
    WITH touched AS (
        SELECT DISTINCT tenant_id, session_id, model,
               date_bin(INTERVAL '1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour
          FROM staging_rollups_minute
    )
    INSERT INTO rollups_hour AS h (
        tenant_id, session_id, model, hour, user_id, agent, input_tokens, output_tokens,
        cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors)
    SELECT t.tenant_id, t.session_id, t.model, t.hour, max(m.user_id), max(m.agent),
           sum(m.input_tokens)::bigint, sum(m.output_tokens)::bigint, sum(m.cache_read_tokens)::bigint,
           sum(m.cache_creation_tokens)::bigint, sum(m.reasoning_tokens)::bigint, sum(m.cost_usd),
           sum(m.requests)::integer, sum(m.errors)::integer
      FROM touched t
      JOIN rollups_minute m
        ON m.tenant_id = t.tenant_id AND m.session_id = t.session_id AND m.model = t.model
       AND m.minute >= t.hour AND m.minute < t.hour + INTERVAL '1 hour'
     GROUP BY t.tenant_id, t.session_id, t.model, t.hour
    ON CONFLICT (tenant_id, session_id, model, hour) DO UPDATE SET
        user_id = EXCLUDED.user_id, agent = EXCLUDED.agent, input_tokens = EXCLUDED.input_tokens,
        output_tokens = EXCLUDED.output_tokens, cache_read_tokens = EXCLUDED.cache_read_tokens,
        cache_creation_tokens = EXCLUDED.cache_creation_tokens,
        reasoning_tokens = EXCLUDED.reasoning_tokens, cost_usd = EXCLUDED.cost_usd,
        requests = EXCLUDED.requests, errors = EXCLUDED.errors;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

-- A regular table keeps policies: the same as every regular table of 0005, although tenant roles
-- get no grant on it (they read the view below).
ALTER TABLE rollups_hour ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rollups_hour FOR SELECT USING (tenant_id = (SELECT tokentide_role_tenant()));

CREATE VIEW tokentide_tenant.rollups_hour WITH (security_barrier) AS
    SELECT * FROM public.rollups_hour WHERE tenant_id = (SELECT public.tokentide_role_tenant());

DO $$
DECLARE
    bound name;
BEGIN
    FOR bound IN SELECT role_name FROM tenant_roles LOOP
        EXECUTE format('GRANT SELECT ON tokentide_tenant.rollups_hour TO %I', bound);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- retention, at once

CREATE OR REPLACE FUNCTION tokentide_maintain(retention interval, days_ahead integer, as_of timestamptz DEFAULT now())
    RETURNS TABLE (action text, relation text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    parent text;
    current_drop_after interval;
BEGIN
    FOREACH parent IN ARRAY ARRAY['events', 'metric_points'] LOOP
        SELECT (j.config ->> 'drop_after')::interval INTO current_drop_after
          FROM timescaledb_information.jobs j
         WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = parent;
        IF current_drop_after IS DISTINCT FROM retention THEN
            IF current_drop_after IS NOT NULL THEN
                PERFORM remove_retention_policy(parent::regclass);
            END IF;
            IF retention IS NOT NULL THEN
                PERFORM add_retention_policy(parent::regclass, drop_after => retention);
            END IF;
            action := 'retention'; relation := parent; RETURN NEXT;
        END IF;
        -- Chunks are whole UTC days (by_range 1 day), like the plain layout's partitions.
        IF retention IS NOT NULL THEN
            FOR relation IN SELECT drop_chunks(parent::regclass, older_than => as_of - retention) LOOP
                action := 'dropped'; RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
END
$$;
