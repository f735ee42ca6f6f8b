"""Canonical records -> PostgreSQL rows: exact times and money, text PostgreSQL accepts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.postgres.rows import (
    EVENT_COLUMNS,
    POINT_COLUMNS,
    ROLLUP_COLUMNS,
    ROLLUP_STAGING_COLUMNS,
    SERIES_COLUMNS,
    SESSION_COLUMNS,
    days,
    event_row,
    first_points,
    jsonb,
    latest_states,
    merge_rollups,
    point_row,
    rollup_row,
    series_row,
    session_row,
    text,
    timestamp,
    usd,
)
from tokentide.records import ContextState, Event, EventKind, Point, Rollup, SessionState, Tokens, replace

NS = 1_795_485_058_104_123_456

EVENT = Event(
    tenant="default",
    session_id="s-1",
    event_id="e-1",
    agent="claude_code",
    name="api_request",
    kind=EventKind.USAGE,
    time_ns=NS,
    sequence=3,
    user_id="u-1",
    model="claude-opus-4-8",
    query_source="sdk",
    main_context=True,
    request_id="req_1",
    duration_ms=812.0,
    tokens=Tokens(input=1200, output=42, cache_read=4500, cache_creation=300),
    cost_nanos=11_175_000,
    cost_source="agent",
    attributes={"tool_parameters": '{"cmd": "printf \\x00"}', "k\x00ey": "v\x00al"},
)
POINT = Point(
    tenant="default",
    session_id="s-1",
    agent="claude_code",
    name="claude_code.token.usage",
    series_id="series-1",
    time_ns=NS,
    start_time_ns=NS - 50_000_000,
    value=4500.0,
    temporality=1,
    unit="tokens",
    attributes={"type": "cacheRead", "model": "claude-opus-4-8[1m]"},
)


def _state(session_id: str = "s-1", version: int = 1, tenant: str = "default") -> SessionState:
    return SessionState(
        tenant=tenant,
        session_id=session_id,
        agent="claude_code",
        service_name="claude-code",
        user_id="u-1",
        started_at_ns=NS - 10**9,
        last_seen_at_ns=NS,
        tokens=Tokens(input=3600, output=126, cache_read=13_500, cache_creation=900),
        cost_nanos=24_585_000,
        api_requests=3,
        api_errors=0,
        events=9,
        models=["claude-haiku-4-5-20251001", "claude-opus-4-8"],
        context=ContextState(tokens=6000, window=1_000_000, model="claude-opus-4-8"),
        version=version,
    )


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "expected"),
    [
        (NS, datetime(2026, 11, 24, 1, 50, 58, 104_123, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1_795_485_058_999_999_999, datetime(2026, 11, 24, 1, 50, 58, 999_999, tzinfo=UTC)),
    ],
)
def test_timestamp_is_exact_to_the_microsecond(ns: int, expected: datetime) -> None:
    # Independent reading: whole seconds, then the microseconds of the remainder.
    assert expected == datetime.fromtimestamp(ns // 10**9, UTC) + timedelta(microseconds=ns % 10**9 // 1000)
    result = timestamp(ns)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("nanos", "expected"),
    [
        (11_175_000, Decimal("0.011175")),
        (2_235_000, Decimal("0.002235")),
        (1, Decimal("0.000000001")),
        (0, Decimal(0)),
        (123_456_789_012, Decimal("123.456789012")),
        (None, None),
    ],
)
def test_usd_is_an_exact_decimal(nanos: int | None, expected: Decimal | None) -> None:
    assert usd(nanos) == expected


def test_usd_sums_exactly() -> None:
    parts = [11_175_000, 2_235_000, 11_175_000]
    assert sum(Decimal(usd(n) or 0) for n in parts) == usd(sum(parts)) == Decimal("0.024585")


@pytest.mark.parametrize(
    ("value", "expected"), [("a\x00b\x00", "ab"), ("\x00", ""), ("plain", "plain"), (None, None)]
)
def test_text_drops_nul(value: str | None, expected: str | None) -> None:
    assert text(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"a": "x\x00y", "n\x00": ["\x00", {"deep": "\x00z"}]},
        {"path": "C:\\Users\\u0000"},  # a literal backslash-u-0000 in text (Windows path)
        {"source": 'print("\\u0000")'},  # source code in tool parameters, not a NUL
        {"mixed": "a\\\x00b"},  # a backslash right before a real NUL
        {"unicode": "héllo ✓", "float": 0.0022349999999999996, "int": 2**63 - 1, "none": None},
    ],
    ids=["nul-everywhere", "windows-path", "source-code", "backslash-then-nul", "plain"],
)
def test_jsonb_is_valid_json_without_nul(value: dict[str, Any]) -> None:
    encoded = jsonb(value)
    decoded = json.loads(encoded)  # PostgreSQL refuses invalid JSON: the whole batch would fail
    assert decoded == _without_nul(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


# --- rows -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "columns"),
    [
        (event_row(EVENT), EVENT_COLUMNS),
        (event_row(replace(EVENT, tokens=None, cost_nanos=None)), EVENT_COLUMNS),
        (point_row(POINT), POINT_COLUMNS),
        (session_row(_state()), SESSION_COLUMNS),
    ],
    ids=["event", "event-without-usage", "point", "session"],
)
def test_rows_match_their_columns(row: tuple[Any, ...], columns: tuple[str, ...]) -> None:
    assert len(row) == len(columns)
    assert len(set(columns)) == len(columns)


def test_event_row_puts_each_value_in_its_column() -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(EVENT), strict=True))
    assert row["tenant_id"] == "default"
    assert row["event_id"] == "e-1"
    assert row["ts"] == datetime(2026, 11, 24, 1, 50, 58, 104_123, tzinfo=UTC)
    assert row["seq"] == 3
    assert (row["input_tokens"], row["output_tokens"]) == (1200, 42)
    assert (row["cache_read_tokens"], row["cache_creation_tokens"], row["reasoning_tokens"]) == (4500, 300, 0)
    assert row["cost_usd"] == Decimal("0.011175")
    assert row["cost_source"] == "agent"
    attributes = json.loads(row["attributes"])
    assert attributes == {"tool_parameters": '{"cmd": "printf \\x00"}', "key": "val"}
    assert (row["kind"], row["main_context"]) == ("usage", True)


@pytest.mark.parametrize("kind", list(EventKind))
def test_event_row_carries_the_canonical_kind_as_text(kind: EventKind) -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(replace(EVENT, kind=kind)), strict=True))
    assert row["kind"] == kind.value
    assert type(row["kind"]) is str  # COPY text, not the enum's repr


def test_event_row_keeps_an_unknown_main_context_unknown() -> None:
    event = replace(EVENT, kind=EventKind.TOOL_RESULT, main_context=None, tokens=None)
    row = dict(zip(EVENT_COLUMNS, event_row(event), strict=True))
    assert (row["kind"], row["main_context"]) == ("tool_result", None)


def test_event_row_without_usage_has_null_usage_columns() -> None:
    row = dict(
        zip(
            EVENT_COLUMNS,
            event_row(replace(EVENT, tokens=None, cost_nanos=None)),
            strict=True,
        )
    )
    usage = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd"]
    assert [row[c] for c in usage] == [None] * len(usage)


def test_no_nul_reaches_any_text_column() -> None:
    dirty = replace(EVENT, model="claude\x00", name="api\x00_request", request_id="\x00r")
    assert not any(isinstance(v, str) and "\x00" in v for v in event_row(dirty))


def test_point_row_puts_each_value_in_its_column() -> None:
    row = dict(zip(POINT_COLUMNS, point_row(POINT), strict=True))
    assert (row["tenant_id"], row["series_id"], row["value"], row["temporality"]) == (
        "default",
        "series-1",
        4500.0,
        1,
    )
    assert row["ts"] - row["start_ts"] == timedelta(milliseconds=50)
    assert row["histogram_count"] is None


def test_series_row_holds_what_the_points_of_a_series_share() -> None:
    row = dict(zip(SERIES_COLUMNS, series_row(POINT), strict=True))
    assert (row["series_id"], row["session_id"], row["name"], row["unit"]) == (
        "series-1",
        "s-1",
        "claude_code.token.usage",
        "tokens",
    )
    assert json.loads(row["attributes"]) == POINT.attributes
    assert row["first_seen"] == timestamp(NS)


def test_a_histogram_count_stays_with_its_point_not_its_series() -> None:
    histogram = replace(POINT, attributes={**POINT.attributes, "histogram.count": 3})
    assert dict(zip(POINT_COLUMNS, point_row(histogram), strict=True))["histogram_count"] == 3
    assert json.loads(dict(zip(SERIES_COLUMNS, series_row(histogram), strict=True))["attributes"]) == (
        POINT.attributes
    )


def test_first_points_gives_each_series_once_with_its_earliest_point() -> None:
    later = replace(POINT, time_ns=NS + 10)
    other = replace(POINT, series_id="series-2")
    other_tenant = replace(POINT, tenant="acme")
    firsts = first_points([later, POINT, other, other_tenant])
    assert sorted((p.tenant, p.series_id, p.time_ns) for p in firsts) == [
        ("acme", "series-1", NS),
        ("default", "series-1", NS),
        ("default", "series-2", NS),
    ]


def test_days_are_utc_days() -> None:
    midnight = int(datetime(2026, 11, 24, tzinfo=UTC).timestamp()) * 10**9
    assert days([midnight - 1, midnight, midnight + 86_399 * 10**9]) == {
        date(2026, 11, 23),
        date(2026, 11, 24),
    }


def test_session_row_puts_each_value_in_its_column() -> None:
    row = dict(zip(SESSION_COLUMNS, session_row(_state(version=7)), strict=True))
    assert row["cost_usd"] == Decimal("0.024585")
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_creation_tokens"]) == (
        3600,
        13_500,
        900,
    )
    assert (row["context_tokens"], row["context_window"], row["context_model"]) == (
        6000,
        1_000_000,
        "claude-opus-4-8",
    )
    assert row["models"] == ["claude-haiku-4-5-20251001", "claude-opus-4-8"]
    assert row["state_version"] == 7
    assert row["last_seen_at"] - row["started_at"] == timedelta(seconds=1)
    assert (row["cost_source"], row["unpriced_requests"], row["cache_creation_1h_tokens"]) == (None, 0, 0)


def test_session_row_says_where_the_cost_comes_from() -> None:
    state = _state()
    state.cost_source, state.unpriced_requests = "mixed", 2
    state.tokens.cache_creation_1h = 400
    row = dict(zip(SESSION_COLUMNS, session_row(state), strict=True))
    assert (row["cost_source"], row["unpriced_requests"], row["cache_creation_1h_tokens"]) == (
        "mixed",
        2,
        400,
    )
    assert row["cache_creation_tokens"] == 900  # the 1-hour part is inside it


# --- latest state per session -----------------------------------------------------------------


@pytest.mark.parametrize("order", [[3, 1, 5, 2], [5, 3, 2, 1], [1, 2, 3, 5]])
def test_latest_states_keeps_the_highest_version(order: list[int]) -> None:
    states = [_state("a", v) for v in order] + [_state("b", 1), _state("a", 4, tenant="other")]
    latest = {(s.tenant, s.session_id): s.version for s in latest_states(states)}
    assert latest == {("default", "a"): 5, ("default", "b"): 1, ("other", "a"): 4}


def test_latest_states_of_nothing() -> None:
    assert latest_states([]) == []


# --- rollups: increments merged by minute, full values overwrite ------------------------------

MINUTE = NS - NS % 60_000_000_000


def _rollup(
    n: int,
    *,
    increment: bool = True,
    session_id: str = "s-1",
    model: str = "claude-opus-4-8",
    minute_ns: int = MINUTE,
    user_id: str | None = "u-1",
) -> Rollup:
    return Rollup(
        tenant="default",
        session_id=session_id,
        user_id=user_id,
        agent="claude_code",
        model=model,
        minute_ns=minute_ns,
        tokens=Tokens(input=n, output=2 * n, cache_read=3 * n, cache_creation=4 * n, reasoning=n // 2),
        cost_nanos=1000 * n,
        requests=n,
        errors=n % 2,
        increment=increment,
    )


def _values(r: Rollup) -> tuple[int, ...]:
    t = r.tokens
    return (
        t.input,
        t.output,
        t.cache_read,
        t.cache_creation,
        t.reasoning,
        r.cost_nanos,
        r.requests,
        r.errors,
    )


def _stored_after(stored: tuple[int, ...] | None, rollups: list[Rollup]) -> tuple[int, ...] | None:
    """What the database's upserts make of a minute holding ``stored``: a full value
    overwrites, an increment adds (to nothing: is the minute)."""
    for r in rollups:
        if r.increment and stored is not None:
            stored = tuple(a + b for a, b in zip(stored, _values(r), strict=True))
        else:
            stored = _values(r)
    return stored


def test_rollup_row_carries_whether_it_is_an_increment() -> None:
    assert (*ROLLUP_COLUMNS, "increment") == ROLLUP_STAGING_COLUMNS
    for increment in (True, False):
        row = dict(zip(ROLLUP_STAGING_COLUMNS, rollup_row(_rollup(3, increment=increment)), strict=True))
        assert row["increment"] is increment
        assert row["minute"] == timestamp(MINUTE)
        assert (row["input_tokens"], row["cost_usd"], row["requests"]) == (3, Decimal("0.000003"), 3)


def test_increments_of_one_minute_are_summed() -> None:
    first, second, third = _rollup(1), _rollup(10), _rollup(100, user_id=None)
    (merged,) = merge_rollups([first, second, third])
    assert merged.increment
    assert _values(merged) == (111, 222, 333, 444, 0 + 5 + 50, 111_000, 111, 1 + 0 + 0)
    assert merged.user_id == "u-1"  # a rollup without a user does not erase the one known
    # The inputs are left as they were.
    assert (_values(first), _values(second), _values(third)) == (
        _values(_rollup(1)),
        _values(_rollup(10)),
        _values(_rollup(100)),
    )


def test_increments_of_other_minutes_sessions_and_models_stay_apart() -> None:
    rollups = [
        _rollup(1),
        _rollup(2, minute_ns=MINUTE + 60_000_000_000),
        _rollup(4, session_id="s-2"),
        _rollup(8, model="claude-haiku-4-5"),
        _rollup(16),
    ]
    merged = {(r.session_id, r.model, r.minute_ns): r.requests for r in merge_rollups(rollups)}
    assert merged == {
        ("s-1", "claude-opus-4-8", MINUTE): 17,
        ("s-1", "claude-opus-4-8", MINUTE + 60_000_000_000): 2,
        ("s-2", "claude-opus-4-8", MINUTE): 4,
        ("s-1", "claude-haiku-4-5", MINUTE): 8,
    }


def test_legacy_full_values_overwrite_the_last_one_wins() -> None:
    # increment=False: each carries the minute's full value so far (rollups written before
    # increments existed); the last one is the minute.
    rollups = [_rollup(5, increment=False), _rollup(9, increment=False), _rollup(7, increment=False)]
    (merged,) = merge_rollups(rollups)
    assert merged is rollups[-1]
    assert not merged.increment


def test_increments_after_a_full_value_add_to_it_and_before_it_are_overwritten() -> None:
    (merged,) = merge_rollups([_rollup(1), _rollup(50, increment=False), _rollup(2), _rollup(3)])
    assert not merged.increment  # it overwrites what the minute held
    assert merged.requests == 55


def test_a_lone_rollup_is_returned_as_it_is() -> None:
    rollup = _rollup(3)
    assert merge_rollups([rollup]) == [rollup]
    assert merge_rollups([rollup])[0] is rollup  # its origin (for dead letters) stays known
    assert merge_rollups([]) == []


_ROLLUPS = st.lists(
    st.builds(
        _rollup,
        st.integers(min_value=0, max_value=10**6),
        increment=st.booleans(),
        session_id=st.sampled_from(["s-1", "s-2"]),
        minute_ns=st.sampled_from([MINUTE, MINUTE + 60_000_000_000]),
    ),
    max_size=12,
)


@given(stored=st.none() | st.tuples(*[st.integers(0, 10**6)] * 8), rollups=_ROLLUPS)
def test_merging_first_stores_what_applying_one_by_one_would(
    stored: tuple[int, ...] | None, rollups: list[Rollup]
) -> None:
    """One upsert of the merged rollup per minute == one upsert per rollup, in order."""
    merged = {(r.session_id, r.minute_ns): r for r in merge_rollups(rollups)}
    assert len(merged) == len(merge_rollups(rollups))
    for key in {(r.session_id, r.minute_ns) for r in rollups}:
        of_key = [r for r in rollups if (r.session_id, r.minute_ns) == key]
        assert _stored_after(stored, [merged[key]]) == _stored_after(stored, of_key)
