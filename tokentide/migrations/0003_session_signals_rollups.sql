-- Issue 4: richer session state, context predictions, signals and per-minute rollups.

ALTER TABLE sessions
    ADD COLUMN attributes            jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN totals_source         text    NOT NULL DEFAULT 'events'
        CONSTRAINT sessions_totals_source CHECK (totals_source IN ('events', 'metrics')),
    ADD COLUMN retries_exhausted     integer NOT NULL DEFAULT 0,
    ADD COLUMN prompts               integer NOT NULL DEFAULT 0,
    ADD COLUMN tool_calls            integer NOT NULL DEFAULT 0,
    ADD COLUMN tool_failures         integer NOT NULL DEFAULT 0,
    ADD COLUMN lines_added           bigint  NOT NULL DEFAULT 0,
    ADD COLUMN lines_removed         bigint  NOT NULL DEFAULT 0,
    ADD COLUMN commits               integer NOT NULL DEFAULT 0,
    ADD COLUMN pull_requests         integer NOT NULL DEFAULT 0,
    ADD COLUMN active_time_s         double precision NOT NULL DEFAULT 0,
    ADD COLUMN context_growth        double precision,
    ADD COLUMN context_interval_s    double precision,
    ADD COLUMN context_requests_left double precision,
    ADD COLUMN context_minutes_left  double precision,
    ADD COLUMN compactions           integer NOT NULL DEFAULT 0;

-- One row per threshold crossing; signal_id is the natural key (re-emitted = no new row).
CREATE TABLE signals (
    tenant_id      text        NOT NULL,
    session_id     text        NOT NULL,
    signal_id      text        NOT NULL,
    kind           text        NOT NULL,
    ts             timestamptz NOT NULL,
    ratio          double precision NOT NULL,
    tokens         bigint      NOT NULL,
    context_window bigint      NOT NULL,
    requests_left  double precision,
    minutes_left   double precision,
    message        text        NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, session_id, signal_id)
);
CREATE INDEX signals_by_time ON signals (tenant_id, ts DESC);

-- Usage per session, model and minute; rows are overwritten with the full value.
CREATE TABLE rollups_minute (
    tenant_id              text        NOT NULL,
    session_id             text        NOT NULL,
    model                  text        NOT NULL,
    minute                 timestamptz NOT NULL,
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
    PRIMARY KEY (tenant_id, session_id, model, minute)
);
CREATE INDEX rollups_minute_by_time ON rollups_minute (tenant_id, minute);
