-- Issue 6, TimescaleDB layout: the same columns and index as 0007_event_kind.plain.sql. A
-- compressed hypertable accepts ADD COLUMN of a nullable column without a default (one column
-- per statement). tokentide_tenant.events (0005) was created with SELECT *, which PostgreSQL
-- expands when the view is created: it is replaced so that tenant roles see the new columns
-- too (CREATE OR REPLACE VIEW may append columns; the grants on it stay).

ALTER TABLE events ADD COLUMN kind text;
ALTER TABLE events ADD COLUMN main_context boolean;

-- One session's events in time order (the timeline). Compressed chunks are segmented by
-- (tenant_id, session_id) and ordered by ts already; this serves the uncompressed recent ones.
CREATE INDEX IF NOT EXISTS events_by_session_time ON events (tenant_id, session_id, ts);

CREATE OR REPLACE VIEW tokentide_tenant.events WITH (security_barrier) AS
    SELECT * FROM public.events WHERE tenant_id = (SELECT public.tokentide_role_tenant());
