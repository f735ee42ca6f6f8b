-- Issue 14: where a session's context window comes from, where its agent compacts by itself,
-- and its usage by source. context_window_source: agent (the agent reported it), long_context
-- (a [1m] variant was seen), model_table or default; context_auto_compact_at: the context of
-- the session's last automatic compaction (predictions aim there); by_source: tokens, cost and
-- requests of the main conversation, each subagent type and the auxiliary requests, by skill
-- and MCP server where the agent says (SessionState.by_source). Rows written before this
-- migration keep NULL / []. sessions is a plain table in both layouts (0004).
ALTER TABLE sessions
    ADD COLUMN context_window_source text
        CONSTRAINT sessions_context_window_source
        CHECK (context_window_source IN ('agent', 'long_context', 'model_table', 'default')),
    ADD COLUMN context_auto_compact_at bigint
        CONSTRAINT sessions_context_auto_compact_at CHECK (context_auto_compact_at > 0),
    ADD COLUMN by_source jsonb NOT NULL DEFAULT '[]';
