-- Issue 5, TimescaleDB layout (decision 14): the same relations, columns and functions as
-- 0004_storage_layout.plain.sql, laid out as hypertables with compression and retention
-- policies, and rollups_hour as a continuous aggregate of rollups_minute. Needs TimescaleDB
-- 2.13+ (by_range) with its Community (TSL) licence: compression, continuous aggregates and
-- policies are not in the Apache-2 build. No statement here needs to run outside a
-- transaction: the continuous aggregate is created WITH NO DATA and filled by its policy.
-- This machine has no TimescaleDB: tests/unit/migrations parses this file, statement by
-- statement and PL/pgSQL body by body.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- ---------------------------------------------------------------- functions the sink calls

CREATE FUNCTION tokentide_partition_name(parent text, day date) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT parent || '_p' || to_char(day, 'YYYYMMDD') $$;

-- Hypertables create their chunks on insert: nothing to create ahead.
CREATE FUNCTION tokentide_create_partitions(parent text, first_day date, last_day date) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 0 $$;

-- Keeps the retention policies of the raw hypertables equal to `retention` (none when NULL);
-- TimescaleDB's background jobs drop the chunks. Same signature as the plain layout's.
CREATE FUNCTION tokentide_maintain(retention interval, days_ahead integer, as_of timestamptz DEFAULT now())
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
            PERFORM remove_retention_policy(parent::regclass, if_exists => true);
            IF retention IS NOT NULL THEN
                PERFORM add_retention_policy(parent::regclass, drop_after => retention);
            END IF;
            action := 'retention'; relation := parent; RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- events

ALTER TABLE events RENAME TO events_0003;
ALTER TABLE events_0003 RENAME CONSTRAINT events_pkey TO events_0003_pkey;
ALTER INDEX events_by_session_time RENAME TO events_0003_by_session_time;

CREATE TABLE events (
    tenant_id              text        NOT NULL,
    session_id             text        NOT NULL,
    event_id               text        NOT NULL,
    ts                     timestamptz NOT NULL,
    agent                  text        NOT NULL,
    name                   text        NOT NULL,
    seq                    bigint,
    user_id                text,
    model                  text,
    query_source           text,
    request_id             text,
    duration_ms            double precision,
    input_tokens           bigint,
    output_tokens          bigint,
    cache_read_tokens      bigint,
    cache_creation_tokens  bigint,
    reasoning_tokens       bigint,
    cost_usd               numeric(20, 9),
    cost_source            text,
    attributes             jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, session_id, event_id, ts)
);
SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'));
CREATE INDEX events_by_tenant_time ON events (tenant_id, ts);
INSERT INTO events SELECT * FROM events_0003;
DROP TABLE events_0003;
-- Every primary-key column is a segmentby or orderby column, so upserts into compressed
-- chunks (TimescaleDB 2.11+) stay idempotent.
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tenant_id, session_id',
    timescaledb.compress_orderby = 'ts DESC, event_id'
);
SELECT add_compression_policy('events', compress_after => INTERVAL '7 days', if_not_exists => true);

-- ---------------------------------------------------------------- metric series and points

ALTER TABLE metric_points RENAME TO metric_points_0003;
ALTER TABLE metric_points_0003 RENAME CONSTRAINT metric_points_pkey TO metric_points_0003_pkey;
ALTER INDEX metric_points_by_session_time RENAME TO metric_points_0003_by_session_time;

CREATE TABLE metric_series (
    tenant_id    text        NOT NULL,
    series_id    text        NOT NULL,
    session_id   text        NOT NULL,
    agent        text        NOT NULL,
    name         text        NOT NULL,
    unit         text        NOT NULL DEFAULT '',
    attributes   jsonb       NOT NULL DEFAULT '{}',
    first_seen   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, series_id)
);
CREATE INDEX metric_series_by_session ON metric_series (tenant_id, session_id);
CREATE INDEX metric_series_by_name ON metric_series (tenant_id, name);

CREATE TABLE metric_points (
    tenant_id        text        NOT NULL,
    series_id        text        NOT NULL,
    ts               timestamptz NOT NULL,
    start_ts         timestamptz NOT NULL,
    value            double precision NOT NULL,
    temporality      smallint    NOT NULL,
    histogram_count  bigint,
    PRIMARY KEY (tenant_id, series_id, ts, start_ts)
);
SELECT create_hypertable('metric_points', by_range('ts', INTERVAL '1 day'));

INSERT INTO metric_series (tenant_id, series_id, session_id, agent, name, unit, attributes, first_seen)
SELECT DISTINCT ON (tenant_id, series_id)
       tenant_id, series_id, session_id, agent, name, unit, attributes - 'histogram.count', ts
  FROM metric_points_0003
 ORDER BY tenant_id, series_id, ts;
INSERT INTO metric_points (tenant_id, series_id, ts, start_ts, value, temporality, histogram_count)
SELECT tenant_id, series_id, ts, start_ts, value, temporality, (attributes ->> 'histogram.count')::bigint
  FROM metric_points_0003;
DROP TABLE metric_points_0003;
-- The Promscale lesson (faust-notes.md): few hypertables keyed by a series id, segmented by it.
ALTER TABLE metric_points SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tenant_id, series_id',
    timescaledb.compress_orderby = 'ts DESC, start_ts'
);
SELECT add_compression_policy('metric_points', compress_after => INTERVAL '7 days', if_not_exists => true);

-- ---------------------------------------------------------------- rollups

-- rollups_minute stays what the stream stage writes (overwrite upserts); as a hypertable it is
-- the source of the hourly continuous aggregate. It is never compressed: recent minutes are
-- overwritten all the time, and it is small.
SELECT create_hypertable('rollups_minute', by_range('minute', INTERVAL '7 days'), migrate_data => true);

-- time_bucket('1 hour', minute) equals the plain layout's date_bin('1 hour', minute,
-- 2000-01-03); real-time aggregation (materialized_only = false) adds the minutes the policy
-- has not materialised yet, so queries see the same numbers as in the plain layout.
CREATE MATERIALIZED VIEW rollups_hour
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, session_id, model,
       time_bucket(INTERVAL '1 hour', minute) AS hour,
       max(user_id) AS user_id,
       max(agent) AS agent,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(cache_read_tokens)::bigint AS cache_read_tokens,
       sum(cache_creation_tokens)::bigint AS cache_creation_tokens,
       sum(reasoning_tokens)::bigint AS reasoning_tokens,
       sum(cost_usd) AS cost_usd,
       sum(requests)::integer AS requests,
       sum(errors)::integer AS errors
  FROM rollups_minute
 GROUP BY tenant_id, session_id, model, time_bucket(INTERVAL '1 hour', minute)
WITH NO DATA;
CREATE INDEX rollups_hour_by_time ON rollups_hour (tenant_id, hour);
-- Issue 15: this file created a refresh policy here (start_offset 30 days, end_offset 1 minute,
-- every 5 minutes). It is no longer created for new databases: 0014 replaces the aggregate
-- with a table, and the policy's first run started at once, between this migration and 0014,
-- where the drop of the aggregate under a running refresh crashed TimescaleDB 2.28.3 (signal
-- 11). Databases migrated earlier keep theirs until 0014_no_refresh_job removes it.

-- The continuous aggregate keeps rollups_hour current: nothing for the sink to do.
CREATE FUNCTION tokentide_rollup_hours() RETURNS bigint
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 0::bigint $$;
