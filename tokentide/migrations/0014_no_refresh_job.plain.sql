-- Issue 15, plain layout: nothing to do. The TimescaleDB layout removes the refresh job of its
-- continuous aggregate here (0014_no_refresh_job.timescale.sql), before
-- 0014_timescale_layout makes rollups_hour the table it has always been in this layout.
SELECT 1;
