"""The batch's Kafka bookkeeping: where it leaves each partition, and what is left of it once
the positions stored with the data are known (pure code: no Kafka, no database)."""

from __future__ import annotations

import json

import msgspec
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from sinks.base import Batch, Layouts, Rejected, SinkMetrics, WriteResult, dead_letters, decode
from sinks.postgres.rows import EVENTS_LAYOUT, POINTS_LAYOUT, event_rows, event_text, point_rows, with_rows
from tokentide.records import (
    CopyRow,
    CopyRows,
    Event,
    EventBatch,
    Point,
    PointBatch,
    Rollup,
    RollupBatch,
    SessionState,
    replace,
    to_schema_1,
)
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


# --- prepared rows (decision 44) ---------------------------------------------------------------

LAYOUTS = Layouts(events=EVENTS_LAYOUT, points=POINTS_LAYOUT)


def _point(series: str, ns: int) -> Point:
    return Point(
        tenant="default", session_id="s", agent="a", name="m", series_id=series, time_ns=ns,
        start_time_ns=0, value=1.0, temporality=1,
    )  # fmt: skip


def test_prepared_rows_of_the_writers_layout_are_taken_as_they_are() -> None:
    events = EventBatch(events=[_event("a"), _event("b")])
    points = PointBatch(points=[_point("x", 5), _point("x", 2), _point("y", 3)])
    records = [
        _record(TOPICS.events, 0, 10, with_rows(events).to_bytes()),
        _record(TOPICS.points, 0, 4, with_rows(points).to_bytes()),
    ]
    batch = decode(TOPICS, records, SinkMetrics(CollectorRegistry()), LAYOUTS)
    assert batch.events == event_rows(events.events).rows
    assert batch.points == point_rows(points.points).rows
    assert [type(r) for r in (*batch.events, *batch.points)] == [CopyRow] * 5
    origin = batch.origin_of(batch.points[1])
    assert origin is not None
    assert (origin.topic, origin.offset) == (TOPICS.points, 4)


def test_records_are_read_where_no_rows_of_the_writers_layout_came() -> None:
    events = [_event("a")]
    other_layout = replace(
        with_rows(EventBatch(events=events)), copy=CopyRows(layout=7, rows=[CopyRow(1, "x\n")])
    )
    records = [
        _record(TOPICS.events, 0, 1, EventBatch(events=events).to_bytes()),  # an older producer
        _record(TOPICS.events, 0, 2, other_layout.to_bytes()),  # a table of another layout
        _record(TOPICS.events, 0, 3, to_schema_1(EventBatch(events=events))),  # schema 1 JSON
    ]
    batch = decode(TOPICS, records, SinkMetrics(CollectorRegistry()), LAYOUTS)
    assert batch.events == events * 3
    assert not batch.undecodable
    # and a writer that takes no prepared rows reads the records of a message that has them
    prepared = _record(TOPICS.events, 0, 4, with_rows(EventBatch(events=events)).to_bytes())
    assert decode(TOPICS, [prepared], SinkMetrics(CollectorRegistry())).events == events


def test_a_message_that_is_not_a_batch_is_undecodable_with_prepared_rows_taken_too() -> None:
    bad = msgspec.msgpack.encode({"schema": "events.2", "copy": {"layout": EVENTS_LAYOUT, "rows": "no"}})
    batch = decode(TOPICS, [_record(TOPICS.events, 0, 1, bad)], SinkMetrics(CollectorRegistry()), LAYOUTS)
    assert batch.events == []
    assert [u[0].offset for u in batch.undecodable] == [1]


def test_a_refused_prepared_row_is_dead_lettered_as_its_line() -> None:
    batch = decode(
        TOPICS,
        [_record(TOPICS.events, 0, 9, with_rows(EventBatch(events=[_event("a")])).to_bytes())],
        SinkMetrics(CollectorRegistry()),
        LAYOUTS,
    )
    [row] = batch.events
    result = WriteResult(rejected=[Rejected("events", row, "out of range", "22003")])
    [letter] = dead_letters(batch, result)
    body = json.loads(letter.value)
    assert body["row"] == event_text(_event("a"))
    assert "record" not in body
    assert body["source"] == {"topic": TOPICS.events, "partition": 0, "offset": 9}
    assert (body["table"], body["sqlstate"]) == ("events", "22003")
