-- Issue 15, plain layout: rollups_hour is already what the TimescaleDB layout now makes it
-- (0014_rollups_hour_table.timescale.sql): a table recomputed by the sink in the transaction
-- that writes the minutes (tokentide_rollup_hours, 0004). Only the catalog's comment, the
-- same in both layouts.
COMMENT ON TABLE rollups_hour IS
    'usage per session, model and hour: the sum of its minutes in rollups_minute, recomputed by the sink in the transaction that writes them (tokentide_rollup_hours)';
