-- Issue 5, plain PostgreSQL layout (decision 14): raw events and metric points range-partitioned
-- by day (UTC) with partitions created ahead and dropped by retention, a metric series catalog
-- with narrow points, hourly rollups next to the per-minute ones, and the functions the sink
-- calls. The TimescaleDB variant of this migration (0004_storage_layout.timescale.sql) creates
-- the same relations, columns and functions.

-- ---------------------------------------------------------------- partition management

-- The partition of `parent` holding `day` (UTC): events_p20261124.
CREATE FUNCTION tokentide_partition_name(parent text, day date) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT parent || '_p' || to_char(day, 'YYYYMMDD') $$;

-- Create the daily partitions of `parent` from first_day to last_day (UTC, inclusive) that do
-- not exist yet; returns how many were created. Serialised per parent, so that sinks and
-- maintenance running at once do not race on the same name.
CREATE FUNCTION tokentide_create_partitions(parent text, first_day date, last_day date) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    schema_name text;
    day date;
    part text;
    created integer := 0;
BEGIN
    SELECT n.nspname INTO STRICT schema_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = parent::regclass;
    PERFORM pg_advisory_xact_lock(hashtext('tokentide.partitions.' || parent));
    FOR day IN SELECT d::date FROM generate_series(first_day, last_day, INTERVAL '1 day') AS d LOOP
        part := tokentide_partition_name(parent, day);
        IF to_regclass(format('%I.%I', schema_name, part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                schema_name, part, schema_name, parent,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions of `parent` whose every row is older than `older_than`; returns
-- their names.
CREATE FUNCTION tokentide_drop_partitions(parent text, older_than timestamptz) RETURNS SETOF text
    LANGUAGE plpgsql
    AS $$
DECLARE
    part record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('tokentide.partitions.' || parent));
    FOR part IN
        SELECT c.oid::regclass AS rel, c.relname::text AS relname
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent::regclass
           AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
           AND (to_date(right(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= older_than
         ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %s', part.rel);
        RETURN NEXT part.relname;
    END LOOP;
END
$$;

-- What the sink runs at start-up and then periodically: partitions for today and `days_ahead`
-- days after it; with a retention, raw partitions entirely older than it dropped. Rollups,
-- sessions and signals are never touched. Returns what it did.
CREATE FUNCTION tokentide_maintain(retention interval, days_ahead integer, as_of timestamptz DEFAULT now())
    RETURNS TABLE (action text, relation text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    parent text;
    today date := (as_of AT TIME ZONE 'UTC')::date;
BEGIN
    FOREACH parent IN ARRAY ARRAY['events', 'metric_points'] LOOP
        IF tokentide_create_partitions(parent, today, today + days_ahead) > 0 THEN
            action := 'created'; relation := parent; RETURN NEXT;
        END IF;
        IF retention IS NOT NULL THEN
            FOR relation IN SELECT tokentide_drop_partitions(parent, as_of - retention) LOOP
                action := 'dropped'; RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- events

ALTER TABLE events RENAME TO events_0003;
ALTER TABLE events_0003 RENAME CONSTRAINT events_pkey TO events_0003_pkey;
ALTER INDEX events_by_session_time RENAME TO events_0003_by_session_time;

-- Agent events; typed columns for model API requests, JSONB for everything else. event_id is
-- the natural key and is derived from the event's time, so adding ts (the partition key, which
-- a primary key must include) keeps one row per event.
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
) PARTITION BY RANGE (ts);
-- A session's timeline uses the primary key (tenant_id, session_id, ...); a tenant's recent
-- activity uses this one.
CREATE INDEX events_by_tenant_time ON events (tenant_id, ts);

-- ---------------------------------------------------------------- metric series and points

ALTER TABLE metric_points RENAME TO metric_points_0003;
ALTER TABLE metric_points_0003 RENAME CONSTRAINT metric_points_pkey TO metric_points_0003_pkey;
ALTER INDEX metric_points_by_session_time RENAME TO metric_points_0003_by_session_time;

-- One row per series (metric name + data point attributes + service; series_id is its stable
-- hash from the stream stage): what a point is about is stored once, not with every point.
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

-- Narrow points (as sent: delta or cumulative); histogram_count is a histogram's count (its
-- sum is the value), NULL for sums and gauges.
CREATE TABLE metric_points (
    tenant_id        text        NOT NULL,
    series_id        text        NOT NULL,
    ts               timestamptz NOT NULL,
    start_ts         timestamptz NOT NULL,
    value            double precision NOT NULL,
    temporality      smallint    NOT NULL,
    histogram_count  bigint,
    PRIMARY KEY (tenant_id, series_id, ts, start_ts)
) PARTITION BY RANGE (ts);

-- ---------------------------------------------------------------- existing rows

SELECT tokentide_create_partitions(
           'events', (min(ts) AT TIME ZONE 'UTC')::date, (max(ts) AT TIME ZONE 'UTC')::date)
  FROM events_0003 HAVING count(*) > 0;
SELECT tokentide_create_partitions(
           'metric_points', (min(ts) AT TIME ZONE 'UTC')::date, (max(ts) AT TIME ZONE 'UTC')::date)
  FROM metric_points_0003 HAVING count(*) > 0;
SELECT tokentide_create_partitions(parent, (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7)
  FROM unnest(ARRAY['events', 'metric_points']) AS parent;

INSERT INTO events SELECT * FROM events_0003;
INSERT INTO metric_series (tenant_id, series_id, session_id, agent, name, unit, attributes, first_seen)
SELECT DISTINCT ON (tenant_id, series_id)
       tenant_id, series_id, session_id, agent, name, unit, attributes - 'histogram.count', ts
  FROM metric_points_0003
 ORDER BY tenant_id, series_id, ts;
INSERT INTO metric_points (tenant_id, series_id, ts, start_ts, value, temporality, histogram_count)
SELECT tenant_id, series_id, ts, start_ts, value, temporality, (attributes ->> 'histogram.count')::bigint
  FROM metric_points_0003;
DROP TABLE events_0003;
DROP TABLE metric_points_0003;

-- ---------------------------------------------------------------- hourly rollups

-- Usage per session, model and hour: the sum of that hour's rows of rollups_minute, recomputed
-- by the sink in the transaction that writes them (tokentide_rollup_hours).
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

-- Recompute the hours touched by the rows in the sink's staging table staging_rollups_minute
-- (a temporary table of the calling session) from rollups_minute; overwrite semantics, so
-- running it twice changes nothing. Hours are date_bin('1 hour', minute, 2000-01-03), which
-- equals TimescaleDB's time_bucket('1 hour', minute).
CREATE FUNCTION tokentide_rollup_hours() RETURNS bigint
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

INSERT INTO rollups_hour
SELECT tenant_id, session_id, model,
       date_bin(INTERVAL '1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
       max(user_id), max(agent), sum(input_tokens)::bigint, sum(output_tokens)::bigint,
       sum(cache_read_tokens)::bigint, sum(cache_creation_tokens)::bigint, sum(reasoning_tokens)::bigint,
       sum(cost_usd), sum(requests)::integer, sum(errors)::integer
  FROM rollups_minute
 GROUP BY 1, 2, 3, 4;
