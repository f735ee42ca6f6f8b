-- Issue 6: each event's canonical kind (tokentide.records.EventKind: usage, api_error,
-- retries_exhausted, prompt, tool_result, tool_decision, compaction, other) and, for usage,
-- whether the request belongs to the session's own conversation (Event.main_context): what a
-- session's timeline and its context-over-time chart need, whatever the agent calls its events.
-- Rows written before this migration keep NULL in both (the timeline falls back on the name).
-- Same contract as 0007_event_kind.timescale.sql.

ALTER TABLE events ADD COLUMN kind text;
ALTER TABLE events ADD COLUMN main_context boolean;

-- One session's events in time order (the timeline, newest first with a limit): the primary
-- key (tenant_id, session_id, event_id, ts) does not give that order. 0001 had this index;
-- 0004 dropped it with the table it rebuilt.
CREATE INDEX IF NOT EXISTS events_by_session_time ON events (tenant_id, session_id, ts);
