"""Every record type survives its serializer; the few derived numbers are right."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.dedup import DigestWindow
from streams.state import StoredSession
from tokentide import records
from tokentide.records import (
    ContextState,
    Event,
    EventBatch,
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
)

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
    EventBatch(events=[EVENT, EVENT.model_copy(update={"event_id": "other", "tokens": None})]),
    EventBatch(events=[]),
    PointBatch(points=[POINT]),
    CONTEXT,
    STATE,
    STATE.model_copy(update={"attributes": {"team": "payments"}, "totals_source": "metrics", "commits": 2}),
    SIGNAL,
    SignalBatch(signals=[SIGNAL]),
    ROLLUP,
    RollupBatch(rollups=[ROLLUP, ROLLUP.model_copy(update={"model": "claude-haiku-4-5"})]),
    StoredSession(
        state=STATE, recent=DigestWindow("AAECAwQFBgc="), rolled=[1, 2, 3, 4, 5, 6, 7, 8], context_time_ns=NS
    ),
    ROLLUP.model_copy(update={"increment": True}),
    SourceUsage(
        query_source="subagent", agent_name="Explore", skill="pdf", tokens=TOKENS, cost_nanos=5, requests=2
    ),
    STATE.model_copy(update={"by_source": [SourceUsage(query_source="main", tokens=TOKENS, requests=1)]}),
]


@pytest.mark.parametrize("record", INSTANCES, ids=lambda r: type(r).__name__)
def test_record_round_trips_through_bytes(record: Record) -> None:
    data = record.to_bytes()
    assert isinstance(data, bytes)
    assert type(record).from_bytes(data) == record
    assert type(record).from_bytes(data.decode()) == record


def test_every_record_type_is_round_tripped() -> None:
    declared = {
        obj
        for obj in vars(records).values()
        if isinstance(obj, type) and issubclass(obj, Record) and obj is not Record
    }
    assert declared <= {type(r) for r in INSTANCES}


def test_big_nanosecond_times_stay_exact_on_the_wire() -> None:
    assert Event.from_bytes(EVENT.to_bytes()).time_ns == NS
    assert str(NS).encode() in EVENT.to_bytes()


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Tokens.from_bytes(b'{"input": 1, "surprise": 2}')


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
    assert STATE.model_copy(update={"cost_nanos": nanos}).cost_usd == usd


@pytest.mark.parametrize(
    ("tokens", "window", "ratio"), [(6000, 200_000, 0.03), (6000, 1_000_000, 0.006), (5, 0, 0.0)]
)
def test_context_ratio(tokens: int, window: int, ratio: float) -> None:
    assert ContextState(tokens=tokens, window=window).ratio == pytest.approx(ratio)


def test_context_defaults_to_the_200k_window() -> None:
    assert ContextState().window == 200_000
