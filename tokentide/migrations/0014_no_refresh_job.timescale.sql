-- Issue 15, TimescaleDB layout, step 1 of 2: the continuous aggregate rollups_hour gets no more
-- refreshes, in a transaction of its own, before 0014_timescale_layout drops the aggregate.
--
-- Why apart: TimescaleDB's scheduler sees a job until the transaction deleting it commits, so
-- deleting the refresh policy and dropping the aggregate together let a refresh start on an
-- aggregate being dropped (observed: "tuple concurrently deleted" in the migration, and the
-- refresh worker killed by signal 11, which restarts the whole server). Removing the policy
-- here stops the schedule for good and cancels (SIGINT) a refresh in progress; step 2 waits for
-- that worker to be gone. New databases never had the policy (0004 no longer creates it).
SELECT remove_continuous_aggregate_policy('rollups_hour', if_exists => true);
