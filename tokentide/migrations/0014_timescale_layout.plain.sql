-- Issue 15, plain layout: already what the TimescaleDB layout now becomes
-- (0014_timescale_layout.timescale.sql): rollups_hour is a table recomputed by the sink in the
-- transaction that writes the minutes (tokentide_rollup_hours, 0004), and tokentide_maintain
-- drops expired partitions at once. Only the catalog's comment, the same in both layouts.
COMMENT ON TABLE rollups_hour IS
    'usage per session, model and hour: the sum of its minutes in rollups_minute, recomputed by the sink in the transaction that writes them (tokentide_rollup_hours)';
