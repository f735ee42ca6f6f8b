"""Every record type survives its serializer; the few derived numbers are right."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sinks.postgres.rows import with_rows
from streams.dedup import DigestWindow
from streams.state import StoredSession
from tokentide import records
from tokentide.records import (
    ContextState,
    DecodeError,
    Event,
    EventBatch,
    EventKind,
    Point,
    PointBatch,
    Record,
    Rollup,
    RollupBatch,
    SessionSignal,
    SessionState,
    SignalBatch,
    SignalKind,
    SourceUsage,
    Tokens,
    encode,
    replace,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
NS = 1_795_485_058_104_123_456  # above 2**53: a float would not keep it exact

TOKENS = Tokens(
    input=1200, output=42, cache_read=4500, cache_creation=300, reasoning=10, cache_creation_1h=100
)
EVENT = Event(
    tenant="team-a",
    session_id="0c716b3c-889b-4332-bfef-0f80d74182cb",
    event_id="5f0c",
    agent="claude_code",
    name="api_request",
    time_ns=NS,
    sequence=7,
    user_id="dbcf3bf9",
    model="claude-opus-4-8",
    model_variant="1m",
    query_source="sdk",
    request_id="req_01",
    duration_ms=812.5,
    tokens=TOKENS,
    cost_nanos=11_175_000,
    cost_source="agent",
    attributes={"cost_usd": 0.0022349999999999996, "nested": {"list": [1, "two", 3.5, None, True]}},
)
POINT = Point(
    tenant="team-a",
    session_id="s-1",
    agent="claude_code",
    name="claude_code.cost.usage",
    series_id="a1b2",
    time_ns=NS,
    start_time_ns=NS - 1,
    value=0.0022349999999999996,
    temporality=1,
    unit="USD",
    attributes={"model": "claude-opus-4-8[1m]", "histogram.count": 3},
)
CONTEXT = ContextState(
    tokens=6000,
    window=1_000_000,
    model="claude-opus-4-8",
    growth=812.5,
    interval_s=4.2,
    requests_left=1223.4,
    minutes_left=85.6,
    compactions=1,
)
SIGNAL = SessionSignal(
    tenant="team-a",
    session_id="s-1",
    signal_id="9f",
    kind=SignalKind.CHECKPOINT_REQUESTED,
    time_ns=NS,
    ratio=0.91,
    tokens=182_000,
    window=200_000,
    requests_left=3.5,
    minutes_left=1.25,
    message="context 91% full",
)
ROLLUP = Rollup(
    tenant="team-a",
    session_id="s-1",
    user_id="u-1",
    agent="claude_code",
    model="claude-opus-4-8",
    minute_ns=NS - NS % 60_000_000_000,
    tokens=TOKENS,
    cost_nanos=11_175_000,
    requests=1,
    errors=1,
)
STATE = SessionState(
    tenant="team-a",
    session_id="s-1",
    agent="claude_code",
    service_name="claude-code",
    user_id="u-1",
    started_at_ns=NS - 10**9,
    last_seen_at_ns=NS,
    tokens=TOKENS,
    cost_nanos=24_585_000,
    cost_source="mixed",
    unpriced_requests=1,
    api_requests=3,
    api_errors=1,
    events=9,
    models=["claude-haiku-4-5-20251001", "claude-opus-4-8"],
    context=CONTEXT,
    version=12,
)
INSTANCES: list[Record] = [
    TOKENS,
    EVENT,
    Event(tenant="t", session_id="s", event_id="e", agent="unknown", name="log", time_ns=0),
    POINT,
    EventBatch(events=[EVENT, replace(EVENT, event_id="other", tokens=None)]),
    EventBatch(events=[]),
    PointBatch(points=[POINT]),
    CONTEXT,
    STATE,
    replace(STATE, attributes={"team": "payments"}, totals_source="metrics", commits=2),
    SIGNAL,
    SignalBatch(signals=[SIGNAL]),
    ROLLUP,
    RollupBatch(rollups=[ROLLUP, replace(ROLLUP, model="claude-haiku-4-5")]),
    StoredSession(
        state=STATE, recent=DigestWindow("AAECAwQFBgc="), rolled=[1, 2, 3, 4, 5, 6, 7, 8], context_time_ns=NS
    ),
    replace(ROLLUP, increment=True),
    SourceUsage(
        query_source="subagent", agent_name="Explore", skill="pdf", tokens=TOKENS, cost_nanos=5, requests=2
    ),
    replace(STATE, by_source=[SourceUsage(query_source="main", tokens=TOKENS, requests=1)]),
]


@pytest.mark.parametrize("record", INSTANCES, ids=lambda r: type(r).__name__)
def test_record_round_trips_through_bytes(record: Record) -> None:
    data = record.to_bytes()
    assert isinstance(data, bytes)
    assert type(record).from_bytes(data) == record


def test_every_record_type_is_round_tripped() -> None:
    declared = {
        obj
        for obj in vars(records).values()
        if isinstance(obj, type)
        and issubclass(obj, Record)
        and obj is not Record
        and not obj.__name__.startswith("_")
    }
    assert declared <= {type(r) for r in INSTANCES}


def _schema_1() -> list[tuple[Record, str]]:
    """What schema 1 (pydantic JSON, before the msgspec contract) wrote for each of INSTANCES:
    tests/fixtures/records/schema-1.jsonl, made by the code of commit 12dbdf6."""
    lines = (FIXTURES / "records" / "schema-1.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]
    assert [w["type"] for w in written] == [type(r).__name__ for r in INSTANCES]
    return [(INSTANCES[w["index"]], w["value"]) for w in written]


@pytest.mark.parametrize(("record", "value"), _schema_1(), ids=lambda r: type(r).__name__)
def test_values_written_by_the_previous_schema_are_read(record: Record, value: str) -> None:
    """A rolling upgrade reads the changelog and topics the previous version wrote."""
    assert value.startswith("{")
    assert type(record).from_bytes(value.encode()) == record


def test_a_batch_names_its_session_once_and_its_records_get_it_back() -> None:
    batch = EventBatch(events=[EVENT, replace(EVENT, event_id="e2"), replace(EVENT, event_id="e3")])
    data = batch.to_bytes()
    assert data.count(EVENT.session_id.encode()) == 1
    assert data.count(b"team-a") == 1
    assert msgspec.msgpack.decode(data)["schema"] == "events.2"
    decoded = EventBatch.from_bytes(data)
    assert [(e.tenant, e.session_id, e.agent) for e in decoded.events] == [
        ("team-a", EVENT.session_id, "claude_code")
    ] * 3
    # encoding left the records as they were
    assert batch.events[1].session_id == EVENT.session_id
    # a record that is not the batch's session keeps its own
    mixed = EventBatch(events=[EVENT, replace(EVENT, event_id="x", session_id="other", tenant="t2")])
    assert [(e.tenant, e.session_id) for e in EventBatch.from_bytes(mixed.to_bytes()).events] == [
        ("team-a", EVENT.session_id),
        ("t2", "other"),
    ]
    rollups = RollupBatch(rollups=[ROLLUP, replace(ROLLUP, user_id=None, minute_ns=0)])
    assert [r.user_id for r in RollupBatch.from_bytes(rollups.to_bytes()).rollups] == ["u-1", None]


def test_a_newer_producers_fields_and_kinds_are_read_not_refused() -> None:
    """What a newer version adds (a field, an event kind, a measure, a signal kind) decodes in
    this one: a rollback or a rolling upgrade never dead-letters for it."""
    newer = msgspec.msgpack.decode(EventBatch(events=[EVENT]).to_bytes())
    newer["later_field"] = {"anything": [1, 2]}
    newer["events"][0]["kind"] = "brand_new_kind"
    newer["events"][0]["later_event_field"] = 5
    decoded = EventBatch.from_bytes(msgspec.msgpack.encode(newer))
    assert decoded.events[0].kind == "brand_new_kind"
    assert decoded.events[0].event_id == EVENT.event_id
    point = msgspec.msgpack.decode(PointBatch(points=[POINT]).to_bytes())
    point["points"][0]["measure"] = "tokens.new_type"
    assert PointBatch.from_bytes(msgspec.msgpack.encode(point)).points[0].measure == "tokens.new_type"
    signal = msgspec.msgpack.decode(SignalBatch(signals=[SIGNAL]).to_bytes())
    signal["signals"][0]["kind"] = "budget_warning"
    assert SignalBatch.from_bytes(msgspec.msgpack.encode(signal)).signals[0].kind == "budget_warning"
    assert Tokens.from_bytes(b'{"input": 1, "surprise": 2}') == Tokens(input=1)


def test_known_kinds_compare_equal_to_their_enum_once_decoded() -> None:
    decoded = EventBatch.from_bytes(EventBatch(events=[replace(EVENT, kind=EventKind.USAGE)]).to_bytes())
    assert decoded.events[0].kind == EventKind.USAGE
    assert (
        SignalBatch.from_bytes(SignalBatch(signals=[SIGNAL]).to_bytes()).signals[0].kind
        == "checkpoint_requested"
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xc1",
        b"{not json",
        msgspec.msgpack.encode({"schema": "events.3", "events": []}),  # a schema this version does not know
        msgspec.msgpack.encode({"schema": "events.2", "events": [{"event_id": 1}]}),  # wrong types
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_what_is_not_a_record_is_a_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError):
        EventBatch.from_bytes(value)


def test_big_nanosecond_times_stay_exact_on_the_wire() -> None:
    assert Event.from_bytes(EVENT.to_bytes()).time_ns == NS
    assert msgspec.msgpack.decode(EVENT.to_bytes())["time_ns"] == NS


def test_tokens_context_is_everything_sent_but_not_output() -> None:
    assert TOKENS.context == 1200 + 4500 + 300  # the 1-hour writes are part of the 300


def test_tokens_add_sums_every_type() -> None:
    total = Tokens()
    total.add(TOKENS)
    total.add(Tokens(input=1, output=2, cache_read=3, cache_creation=4, reasoning=5, cache_creation_1h=4))
    assert total == Tokens(
        input=1201, output=44, cache_read=4503, cache_creation=304, reasoning=15, cache_creation_1h=104
    )


@pytest.mark.parametrize(
    ("nanos", "usd"),
    [(0, 0.0), (11_175_000, 0.011175), (2_235_000, 0.002235), (24_585_000, 0.024585), (1, 1e-9)],
)
def test_session_cost_usd(nanos: int, usd: float) -> None:
    assert replace(STATE, cost_nanos=nanos).cost_usd == usd


@pytest.mark.parametrize(
    ("tokens", "window", "ratio"), [(6000, 200_000, 0.03), (6000, 1_000_000, 0.006), (5, 0, 0.0)]
)
def test_context_ratio(tokens: int, window: int, ratio: float) -> None:
    assert ContextState(tokens=tokens, window=window).ratio == pytest.approx(ratio)


def test_context_defaults_to_the_200k_window() -> None:
    assert ContextState().window == 200_000


@pytest.mark.parametrize(("record", "value"), _schema_1(), ids=lambda r: type(r).__name__)
def test_schema_1_is_written_exactly_as_the_previous_version_wrote_it(record: Record, value: str) -> None:
    """TOKENTIDE_WIRE_SCHEMA=1: the previous version's consumers (pydantic, extra fields
    refused) read what this one writes, so an upgrade can be rolled back."""
    written = encode(record, 1)
    assert json.loads(written) == json.loads(value)
    assert type(record).from_bytes(written) == record
    assert encode(record, 2) == record.to_bytes()


class _EventBatchBefore(msgspec.Struct, kw_only=True, tag="events.2", tag_field="schema"):
    """``EventBatch`` as the version before the prepared rows declared it (no ``copy``)."""

    tenant: str = ""
    session_id: str = ""
    agent: str = ""
    events: list[Event]


def test_the_previous_version_reads_a_batch_with_prepared_rows_as_its_records() -> None:
    """Decision 44: the sink's rows are an addition to schema 2; a sink of the version before
    (a rolling upgrade with the stream stage first, a rollback of the sink) reads the records
    and ignores them."""
    batch = with_rows(EventBatch(events=[EVENT, replace(EVENT, event_id="e2")]))
    assert batch.copy is not None
    before = msgspec.msgpack.decode(batch.to_bytes(), type=_EventBatchBefore)
    assert [e.event_id for e in before.events] == [EVENT.event_id, "e2"]
    assert EventBatch.from_bytes(batch.to_bytes()) == batch


def test_a_newer_producers_additions_to_the_prepared_rows_are_ignored() -> None:
    """Rows are arrays (compact); a later version may append to them or to their batch."""
    newer = msgspec.msgpack.decode(with_rows(EventBatch(events=[EVENT])).to_bytes())
    newer["copy"]["rows"][0].append("a later field")
    newer["copy"]["later"] = {"x": 1}
    decoded = EventBatch.from_bytes(msgspec.msgpack.encode(newer))
    assert decoded.copy is not None
    assert [(r.time_ns, r.series) for r in decoded.copy.rows] == [(EVENT.time_ns, None)]
    assert decoded.events[0].event_id == EVENT.event_id
