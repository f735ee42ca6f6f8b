"""The batch's Kafka bookkeeping: where it leaves each partition, and what is left of it once
the positions stored with the data are known (pure code: no Kafka, no database)."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from sinks.base import Batch, Rejected, SinkMetrics, WriteResult, dead_letters, decode
from tokentide.records import Event, EventBatch, Rollup, RollupBatch, SessionState
from tokentide.topics import Topics

TOPICS = Topics("t.")


def _event(event_id: str) -> Event:
    return Event(tenant="default", session_id="s", event_id=event_id, agent="a", name="n", time_ns=1)


def _rollup(n: int) -> Rollup:
    return Rollup(
        tenant="default", session_id="s", agent="a", model="m", minute_ns=0, requests=n, increment=True
    )


def _record(topic: str, partition: int, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"default/s",
        value=value,
        checksum=None,
        serialized_key_size=9,
        serialized_value_size=len(value),
        headers=[],
    )


def _batch() -> Batch:
    """events p0 @ 10, 11 (undecodable), 12; rollups p1 @ 5, 7; a state p0 @ 3."""
    records = [
        _record(TOPICS.events, 0, 10, EventBatch(events=[_event("a"), _event("b")]).to_bytes()),
        _record(TOPICS.events, 0, 11, b"not json"),
        _record(TOPICS.events, 0, 12, EventBatch(events=[_event("c")]).to_bytes()),
        _record(TOPICS.rollups, 1, 5, RollupBatch(rollups=[_rollup(1)]).to_bytes()),
        _record(TOPICS.rollups, 1, 7, RollupBatch(rollups=[_rollup(2)]).to_bytes()),
        _record(
            TOPICS.session_state,
            0,
            3,
            SessionState(
                tenant="default", session_id="s", agent="a", started_at_ns=1, last_seen_at_ns=1
            ).to_bytes(),
        ),
    ]
    return decode(TOPICS, records, SinkMetrics(CollectorRegistry()))


def test_a_batch_leaves_each_partition_after_its_last_message() -> None:
    batch = _batch()
    assert batch.positions == {(TOPICS.events, 0): 13, (TOPICS.rollups, 1): 8, (TOPICS.session_state, 0): 4}
    assert len(batch.messages) == 6


def test_the_consumers_position_moves_it_past_markers_but_never_back() -> None:
    batch = _batch()
    batch.advance((TOPICS.rollups, 1), 9)  # a commit marker at 8
    batch.advance((TOPICS.events, 0), 5)  # behind what the batch holds: ignored
    batch.advance((TOPICS.points, 2), 40)  # only markers or aborted records were read
    assert batch.positions[TOPICS.rollups, 1] == 9
    assert batch.positions[TOPICS.events, 0] == 13
    assert batch.positions[TOPICS.points, 2] == 40


def test_nothing_stored_leaves_the_whole_batch() -> None:
    batch = _batch()
    rest, skipped = batch.unapplied({})
    assert skipped == {}
    assert rest is not batch
    assert [e.event_id for e in rest.events] == ["a", "b", "c"]
    assert [r.requests for r in rest.rollups] == [1, 2]
    assert len(rest.undecodable) == 1
    assert rest.positions == batch.positions


def test_messages_below_the_stored_positions_are_left_out_and_counted() -> None:
    batch = _batch()
    stored = {(TOPICS.events, 0): 12, (TOPICS.rollups, 1): 6, (TOPICS.session_state, 0): 4}
    rest, skipped = batch.unapplied(stored)
    assert skipped == {TOPICS.events: 2, TOPICS.rollups: 1, TOPICS.session_state: 1}
    assert [e.event_id for e in rest.events] == ["c"]
    assert [r.requests for r in rest.rollups] == [2]
    assert rest.states == []
    assert rest.undecodable == []  # offset 11: dead-lettered with the write that applied it
    assert [m.offset for m in rest.messages] == [12, 7]
    # The records are the batch's own, so their origins are known; the batch is unchanged.
    assert rest.events[0] is batch.events[2]
    assert rest.origin_of(rest.rollups[0]) == batch.origin_of(batch.rollups[1])
    assert len(batch.events) == 3
    assert len(batch.undecodable) == 1


def test_a_position_of_another_partition_or_topic_leaves_nothing_out() -> None:
    rest, skipped = _batch().unapplied({(TOPICS.events, 1): 100, (TOPICS.points, 0): 100})
    assert skipped == {}
    assert len(rest.events) == 3


def test_records_without_a_kafka_origin_are_always_written() -> None:
    batch = Batch(events=[_event("tool")])
    rest, skipped = batch.unapplied({(TOPICS.events, 0): 10**9})
    assert [e.event_id for e in rest.events] == ["tool"]
    assert skipped == {}


def test_dead_letters_are_those_of_the_part_not_applied_before() -> None:
    batch = _batch()
    rest, _ = batch.unapplied({(TOPICS.events, 0): 12})
    refused = rest.events[0]
    letters = dead_letters(rest, WriteResult(rejected=[Rejected("events", refused, "out of range", "22003")]))
    assert [(letter.table, letter.reason) for letter in letters] == [("events", "22003")]
    assert letters[0].key == b"default/s"
    whole = dead_letters(batch, WriteResult())
    assert [(letter.table, letter.reason) for letter in whole] == [(TOPICS.events, "undecodable")]
