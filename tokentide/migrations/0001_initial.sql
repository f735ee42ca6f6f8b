-- The walking skeleton's schema: plain PostgreSQL tables. Every row carries tenant_id.
-- Later migrations add partitioning / TimescaleDB hypertables, rollups and row-level security.

CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (tenant_id) VALUES ('default');

-- Current state of each session, overwritten from the compacted session.state topic.
-- state_version only grows: an older state never overwrites a newer one.
CREATE TABLE sessions (
    tenant_id              text        NOT NULL,
    session_id             text        NOT NULL,
    agent                  text        NOT NULL,
    service_name           text,
    user_id                text,
    started_at             timestamptz NOT NULL,
    last_seen_at           timestamptz NOT NULL,
    input_tokens           bigint      NOT NULL DEFAULT 0,
    output_tokens          bigint      NOT NULL DEFAULT 0,
    cache_read_tokens      bigint      NOT NULL DEFAULT 0,
    cache_creation_tokens  bigint      NOT NULL DEFAULT 0,
    reasoning_tokens       bigint      NOT NULL DEFAULT 0,
    cost_usd               numeric(20, 9) NOT NULL DEFAULT 0,
    api_requests           integer     NOT NULL DEFAULT 0,
    api_errors             integer     NOT NULL DEFAULT 0,
    events                 integer     NOT NULL DEFAULT 0,
    models                 text[]      NOT NULL DEFAULT '{}',
    context_tokens         bigint      NOT NULL DEFAULT 0,
    context_window         bigint      NOT NULL,
    context_model          text,
    state_version          bigint      NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX sessions_by_last_seen ON sessions (tenant_id, last_seen_at DESC);

-- Agent events; typed columns for model API requests, JSONB for everything else.
-- event_id is the natural key: re-delivered events change nothing.
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
    PRIMARY KEY (tenant_id, session_id, event_id)
);
CREATE INDEX events_by_session_time ON events (tenant_id, session_id, ts);

-- Metric data points as sent (delta or cumulative), one narrow row per point.
CREATE TABLE metric_points (
    tenant_id    text        NOT NULL,
    session_id   text        NOT NULL,
    series_id    text        NOT NULL,
    ts           timestamptz NOT NULL,
    start_ts     timestamptz NOT NULL,
    agent        text        NOT NULL,
    name         text        NOT NULL,
    value        double precision NOT NULL,
    temporality  smallint    NOT NULL,
    unit         text        NOT NULL DEFAULT '',
    attributes   jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, series_id, ts, start_ts)
);
CREATE INDEX metric_points_by_session_time ON metric_points (tenant_id, session_id, ts);
