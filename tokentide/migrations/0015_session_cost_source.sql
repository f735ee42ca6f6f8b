-- Issue 14: a session's cost is known, partly known or unknown, never a silent zero.
-- cost_source: where its requests' costs came from (agent, price_table, mixed, unknown), NULL
-- before its first request and in rows written before this migration; unpriced_requests: the
-- requests whose cost is unknown (cost_usd is the sum of the known ones);
-- cache_creation_1h_tokens: the part of cache_creation_tokens written with a one-hour
-- lifetime (priced at its own rate). sessions is a plain table in both layouts (0004).
ALTER TABLE sessions
    ADD COLUMN cost_source              text
        CONSTRAINT sessions_cost_source CHECK (cost_source IN ('agent', 'price_table', 'mixed', 'unknown')),
    ADD COLUMN unpriced_requests        integer NOT NULL DEFAULT 0
        CONSTRAINT sessions_unpriced_requests CHECK (unpriced_requests >= 0),
    ADD COLUMN cache_creation_1h_tokens bigint  NOT NULL DEFAULT 0;
