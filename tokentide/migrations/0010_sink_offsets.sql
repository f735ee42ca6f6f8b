-- Issue 12: the sink applies every Kafka message exactly once. Per derived-topic partition, the
-- offset of the next message to apply: every message below it is in the database. The sink
-- locks a batch's rows here (FOR UPDATE) at the start of the batch's transaction, leaves out the
-- messages below them (a redelivery, or a second sink racing for the partition in a rebalance),
-- and moves them in the same transaction as the rows, so rows and positions commit together.
-- Rollup increments rely on it: added twice, they would count twice.
--
-- Keyed by topic and partition, not by consumer group: what is applied is a property of this
-- database, whichever group (a renamed one, a second deployment) reads the topics. Topic names
-- carry the deployment's prefix. A regular table in either layout, so one file serves both.
--
-- The pipeline's role only: it owns the table; tenant roles get no grant, and row-level
-- security with no policy denies them every row even if one is granted by mistake (as 0009).
CREATE TABLE sink_offsets (
    topic        text        NOT NULL,
    partition    integer     NOT NULL CHECK (partition >= 0),
    next_offset  bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
ALTER TABLE sink_offsets ENABLE ROW LEVEL SECURITY;
