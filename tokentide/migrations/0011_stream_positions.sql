-- Issue 12: every signal and every session update gets a position in the order the database
-- took them in, so that the event stream (GET /api/v1/stream, dashboard/live.py) pages by it
-- instead of by the agent's event time and never skips a row, however far behind the pipeline
-- runs. signals and sessions are regular tables in both layouts (no hypertable, 0004/0005), so
-- one file serves both.
--
-- A row's position is (stream_xid, stream_pos): the id of the transaction that wrote it
-- (pg_current_xact_id(): the top-level one, also inside the sink's per-row savepoints) and a
-- number from one sequence shared by both tables, which orders the rows of one transaction as
-- they were written. Triggers set both on every insert into signals and every insert or update
-- of sessions, whatever the writer supplies, so the sink needs no change; an upsert that does
-- not change a session (an older or replayed state) does not move it.
--
-- Why not a sequence alone: a number is taken at insert time, but transactions commit in
-- another order, so a reader paging "seq > cursor" passes a row whose transaction commits
-- later. A reader of these positions reads only below the horizon
-- pg_snapshot_xmin(pg_current_snapshot()): every transaction with a lower id has ended (committed
-- or not), and ids are never handed out below it again, so no row can ever appear behind a
-- position the reader has passed. A session row updated again moves to the newer transaction's
-- position: the reader sees its latest state, and never loses it. Writers take no lock; the
-- price is on the reader: a long write transaction anywhere on the server holds the horizon
-- back, and the stream waits for it (it delays, never skips).
--
-- The columns are nullable with a CHECK rather than NOT NULL: the sink's staging tables are
-- created LIKE these tables INCLUDING DEFAULTS, which copies NOT NULL (and staging rows carry
-- no position) but not CHECK constraints.

CREATE SEQUENCE tokentide_stream_pos AS bigint;

CREATE FUNCTION tokentide_stream_position() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.stream_xid := pg_current_xact_id();
    NEW.stream_pos := nextval('tokentide_stream_pos');
    RETURN NEW;
END
$$;

ALTER TABLE signals ADD COLUMN stream_xid xid8;
ALTER TABLE signals ADD COLUMN stream_pos bigint;
ALTER TABLE sessions ADD COLUMN stream_xid xid8;
ALTER TABLE sessions ADD COLUMN stream_pos bigint;

-- Existing rows: before every transaction (xid8 0 is below any real transaction id), in the
-- order of their time, so that no reader ever receives them as new.
UPDATE signals AS s
   SET stream_xid = '0', stream_pos = o.pos
  FROM (SELECT tenant_id, session_id, signal_id,
               row_number() OVER (ORDER BY ts, tenant_id, session_id, signal_id) AS pos
          FROM signals) AS o
 WHERE s.tenant_id = o.tenant_id AND s.session_id = o.session_id AND s.signal_id = o.signal_id;
UPDATE sessions AS s
   SET stream_xid = '0', stream_pos = o.pos
  FROM (SELECT tenant_id, session_id,
               (SELECT count(*) FROM signals)
                   + row_number() OVER (ORDER BY updated_at, tenant_id, session_id) AS pos
          FROM sessions) AS o
 WHERE s.tenant_id = o.tenant_id AND s.session_id = o.session_id;
SELECT setval('tokentide_stream_pos',
              (SELECT count(*) FROM signals) + (SELECT count(*) FROM sessions) + 1, false);

ALTER TABLE signals ADD CONSTRAINT signals_stream_position
    CHECK (stream_xid IS NOT NULL AND stream_pos IS NOT NULL);
ALTER TABLE sessions ADD CONSTRAINT sessions_stream_position
    CHECK (stream_xid IS NOT NULL AND stream_pos IS NOT NULL);

CREATE TRIGGER signals_stream_position BEFORE INSERT ON signals
    FOR EACH ROW EXECUTE FUNCTION tokentide_stream_position();
CREATE TRIGGER sessions_stream_position BEFORE INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION tokentide_stream_position();

-- What the event stream reads: one tenant's rows after a position, in position order.
CREATE INDEX signals_by_stream_position ON signals (tenant_id, stream_xid, stream_pos);
CREATE INDEX sessions_by_stream_position ON sessions (tenant_id, stream_xid, stream_pos);
